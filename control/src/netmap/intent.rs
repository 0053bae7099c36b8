//! What this node's engine should hold ([`Intent`]), derived from a netmap, and the difference
//! between two intents ([`diff`]) so that only changed peers are touched.

use std::collections::BTreeMap;

use core::net::{IpAddr, SocketAddr};

use vxwg_dataplane::route::IpNet;

use super::build::{Netmap, RouteState};
use crate::keys::Key;

/// The peers this node's engine should have, by WireGuard public key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intent {
    pub peers: BTreeMap<Key, PeerIntent>,
}

/// One peer as the engine should hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIntent {
    pub name: String,
    pub public_key: Key,
    /// The first endpoint in the record's preference order.
    pub endpoint: Option<SocketAddr>,
    /// Overlay addresses as /32 or /128, plus the approved routes this peer is primary for; sorted.
    pub allowed_ips: Vec<IpNet>,
    pub vtep_mac: Option<[u8; 6]>,
    /// The first overlay address: where VXLAN frames for this peer go.
    pub vtep_ip: Option<IpAddr>,
    /// The approved routes this peer is primary for (kernel routes); sorted.
    pub routes: Vec<IpNet>,
}

/// One step from an old intent towards a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    AddPeer(PeerIntent),
    RemovePeer(Key),
    /// Only the fields that are `Some` changed; the session is kept.
    UpdatePeer {
        key: Key,
        name: Option<String>,
        endpoint: Option<Option<SocketAddr>>,
        allowed_ips: Option<Vec<IpNet>>,
        vtep_mac: Option<Option<[u8; 6]>>,
        vtep_ip: Option<Option<IpAddr>>,
        routes: Option<Vec<IpNet>>,
    },
}

/// The peers `netmap` says this node should have: every peer (ACL-allowed, live record) with its
/// overlay addresses and the routes it is primary for.
pub fn intent(netmap: &Netmap) -> Intent {
    let mut primaries: BTreeMap<&str, Vec<IpNet>> = BTreeMap::new();
    for route in &netmap.routes {
        if route.state == (RouteState::Approved { primary: true }) {
            primaries.entry(route.node.as_str()).or_default().push(route.prefix);
        }
    }
    let mut peers = BTreeMap::new();
    for node in netmap.nodes.iter().filter(|n| n.peer) {
        let Some(record) = &node.record else { continue };
        let mut routes = primaries.get(node.name()).cloned().unwrap_or_default();
        routes.sort();
        routes.dedup();
        let mut allowed_ips: Vec<IpNet> = node.cert.addresses.iter().map(|a| IpNet::host(*a)).collect();
        allowed_ips.extend_from_slice(&routes);
        allowed_ips.sort();
        allowed_ips.dedup();
        let peer = PeerIntent {
            name: node.name().to_owned(),
            public_key: node.cert.wireguard_key,
            endpoint: record.endpoints.first().copied(),
            allowed_ips,
            vtep_mac: record.vtep_mac,
            vtep_ip: node.cert.addresses.first().copied(),
            routes,
        };
        peers.insert(peer.public_key, peer);
    }
    Intent { peers }
}

/// The changes that turn `old` into `new`, sorted by key; peers that did not change get none.
///
/// Removals come before additions and updates, so an AllowedIP moving from one peer to another
/// is released before it is claimed.
pub fn diff(old: &Intent, new: &Intent) -> Vec<Change> {
    let mut removals = Vec::new();
    let mut others = Vec::new();
    for key in old.peers.keys().filter(|k| !new.peers.contains_key(k)) {
        removals.push(Change::RemovePeer(*key));
    }
    for (key, peer) in &new.peers {
        let Some(was) = old.peers.get(key) else {
            others.push(Change::AddPeer(peer.clone()));
            continue;
        };
        if was == peer {
            continue;
        }
        fn changed<T: PartialEq + Clone>(was: &T, now: &T) -> Option<T> {
            (was != now).then(|| now.clone())
        }
        others.push(Change::UpdatePeer {
            key: *key,
            name: changed(&was.name, &peer.name),
            endpoint: changed(&was.endpoint, &peer.endpoint),
            allowed_ips: changed(&was.allowed_ips, &peer.allowed_ips),
            vtep_mac: changed(&was.vtep_mac, &peer.vtep_mac),
            vtep_ip: changed(&was.vtep_ip, &peer.vtep_ip),
            routes: changed(&was.routes, &peer.routes),
        });
    }
    removals.extend(others);
    removals
}

/// Applies `changes` to `intent` (what an engine does with them); `apply_changes(&mut a,
/// &diff(&a, &b))` leaves `a == b`. Changes for peers that are not there are ignored.
pub fn apply_changes(intent: &mut Intent, changes: &[Change]) {
    for change in changes {
        match change {
            Change::AddPeer(peer) => {
                intent.peers.insert(peer.public_key, peer.clone());
            }
            Change::RemovePeer(key) => {
                intent.peers.remove(key);
            }
            Change::UpdatePeer { key, name, endpoint, allowed_ips, vtep_mac, vtep_ip, routes } => {
                let Some(peer) = intent.peers.get_mut(key) else { continue };
                if let Some(v) = name {
                    peer.name.clone_from(v);
                }
                if let Some(v) = endpoint {
                    peer.endpoint = *v;
                }
                if let Some(v) = allowed_ips {
                    peer.allowed_ips.clone_from(v);
                }
                if let Some(v) = vtep_mac {
                    peer.vtep_mac = *v;
                }
                if let Some(v) = vtep_ip {
                    peer.vtep_ip = *v;
                }
                if let Some(v) = routes {
                    peer.routes.clone_from(v);
                }
            }
        }
    }
}
