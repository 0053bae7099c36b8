//! Applying control-plane intents to a running engine, difference only (sans-IO: no sockets, no
//! clock; `now` is passed in).
//!
//! [`EngineSync`] remembers the [`Intent`] it last applied. Given a new one it takes
//! [`diff`](crate::control::netmap::diff) of the two and touches only the peers that changed: a
//! peer added or removed, its endpoint or its AllowedIPs; every other peer keeps its sessions,
//! counters and timers. It also says which kernel routes the applied set needs
//! ([`EngineSync::kernel_routes`]) and which peers went stale ([`EngineSync::stale_peers`]).
//!
//! How an approved route is carried:
//! - plain L3 (no `[vxlan]`): the route joins the peer's AllowedIPs and is routed into the
//!   WireGuard TUN;
//! - with the pod path, for a peer whose record names a VTEP MAC (and whose first overlay address,
//!   its VTEP, is of the local VTEP's family): the peer's AllowedIPs hold only its overlay
//!   addresses, and the route becomes a pod route to that VTEP (VXLAN inside WireGuard, routed
//!   into the pod TUN) — exactly what `[[peer]] pod_cidrs` does in a static config;
//! - with the pod path, for a peer without a VTEP MAC: plain L3, as above.
//!
//! A prefix this node advertises itself is never routed to a peer (another node's advertisement
//! of the same prefix must not capture traffic this node delivers locally).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use crate::control::keys::Key;
use crate::control::netmap::{diff, Change, Intent, PeerIntent};
use crate::dataplane::engine::pod::{PodEngine, RemoteVtep};
use crate::dataplane::engine::Engine;
use crate::dataplane::route::IpNet;
use crate::dataplane::wire::ethernet::EthernetAddress;
use crate::dataplane::wireguard::PeerConfig;

/// Which of vxwg's links a kernel route goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Via {
    /// The WireGuard TUN (plain L3: the peer's AllowedIPs cover the prefix).
    Tunnel,
    /// The pod TUN (a pod route to a remote VTEP, carried as VXLAN).
    Pods,
}

/// The engine an intent is applied to: plain L3, or the pod path around it.
pub enum Target<'a> {
    L3(&'a mut Engine),
    Pod(&'a mut PodEngine),
}

impl Target<'_> {
    fn engine(&mut self) -> &mut Engine {
        match self {
            Target::L3(e) => e,
            Target::Pod(p) => p.engine_mut(),
        }
    }

    fn local_vtep(&self) -> Option<IpAddr> {
        match self {
            Target::L3(_) => None,
            Target::Pod(p) => Some(p.config().local_vtep_ip),
        }
    }
}

/// What one [`EngineSync::apply`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub updated: Vec<String>,
    /// Pod routes inserted or removed.
    pub pod_routes_changed: usize,
    /// What could not be applied (named peer and reason); the rest was.
    pub errors: Vec<String>,
}

impl ApplyReport {
    /// Whether nothing changed and nothing failed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.updated.is_empty()
            && self.pod_routes_changed == 0
            && self.errors.is_empty()
    }
}

/// How one peer's intent is laid out in the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Layout {
    /// The engine's AllowedIPs for the peer.
    allowed_ips: Vec<IpNet>,
    /// Pod routes to the peer's VTEP (pod path only).
    pod_routes: Vec<(IpNet, RemoteVtep)>,
}

fn layout(p: &PeerIntent, local_vtep: Option<IpAddr>) -> Layout {
    let vtep = match (local_vtep, p.vtep_ip, p.vtep_mac) {
        (Some(local), Some(ip), Some(mac)) if local.is_ipv4() == ip.is_ipv4() => {
            Some(RemoteVtep { vtep_ip: ip, vtep_mac: EthernetAddress(mac) })
        }
        _ => None,
    };
    match vtep {
        Some(remote) => Layout {
            allowed_ips: p.allowed_ips.iter().filter(|n| !p.routes.contains(n)).copied().collect(),
            pod_routes: p.routes.iter().map(|n| (*n, remote)).collect(),
        },
        None => Layout { allowed_ips: p.allowed_ips.clone(), pod_routes: Vec::new() },
    }
}

/// The engine side of the control plane: the intent last applied and when each peer appeared.
#[derive(Debug)]
pub struct EngineSync {
    current: Intent,
    /// Prefixes this node advertises (never routed to a peer).
    own_routes: Vec<IpNet>,
    keepalive: Option<Duration>,
    /// When each applied peer was added (the start of its stale clock if it never handshakes).
    known_since: BTreeMap<Key, SystemTime>,
}

impl EngineSync {
    /// Nothing applied yet. `own_routes`: what this node advertises; `keepalive`: persistent
    /// keepalive set on every netmap peer.
    pub fn new(own_routes: Vec<IpNet>, keepalive: Option<Duration>) -> Self {
        Self { current: Intent::default(), own_routes, keepalive, known_since: BTreeMap::new() }
    }

    /// The intent last applied (after this node's own prefixes were taken out).
    pub fn current(&self) -> &Intent {
        &self.current
    }

    /// `intent` without the prefixes this node advertises itself.
    pub fn localize(&self, mut intent: Intent) -> Intent {
        for p in intent.peers.values_mut() {
            p.routes.retain(|n| !self.own_routes.contains(n));
            p.allowed_ips.retain(|n| !self.own_routes.contains(n));
        }
        intent
    }

    /// Makes the engine hold `intent`: only the peers [`diff`] names are touched. `wall` is the
    /// wall-clock time of the change (a new peer's stale clock starts there).
    pub fn apply(&mut self, intent: Intent, mut target: Target<'_>, wall: SystemTime) -> ApplyReport {
        let new = self.localize(intent);
        let changes = diff(&self.current, &new);
        let local_vtep = target.local_vtep();
        let mut report = ApplyReport::default();
        // `diff` puts removals first, so an AllowedIP moving between peers is released before it
        // is claimed.
        for change in &changes {
            let engine = target.engine();
            match change {
                Change::RemovePeer(key) => {
                    if let Some(id) = engine.device().peer_by_key(&key.0) {
                        engine.remove_peer(id);
                    }
                    self.known_since.remove(key);
                    let name = self.current.peers.get(key).map_or_else(|| key.to_base64(), |p| p.name.clone());
                    report.removed.push(name);
                }
                Change::AddPeer(p) => {
                    if self.add(engine, p, local_vtep, wall, &mut report) {
                        report.added.push(p.name.clone());
                    }
                }
                Change::UpdatePeer { key, .. } => {
                    let (Some(was), Some(peer)) = (self.current.peers.get(key), new.peers.get(key)) else { continue };
                    let Some(id) = engine.device().peer_by_key(&key.0) else {
                        // Removed behind our back (`wg set ... remove`): the netmap still wants it.
                        if self.add(engine, peer, local_vtep, wall, &mut report) {
                            report.added.push(peer.name.clone());
                        }
                        continue;
                    };
                    // A peer that roamed keeps its roamed address until its record changes.
                    if was.endpoint != peer.endpoint {
                        if let Some(ep) = peer.endpoint {
                            engine.device_mut().set_peer_endpoint(id, Some(ep));
                        }
                    }
                    let (old, new_layout) = (layout(was, local_vtep), layout(peer, local_vtep));
                    if old.allowed_ips != new_layout.allowed_ips {
                        engine.set_allowed_ips(id, true, &new_layout.allowed_ips);
                    }
                    report.updated.push(peer.name.clone());
                }
            }
        }
        if let Target::Pod(pod) = &mut target {
            report.pod_routes_changed = sync_pod_routes(pod, &new, local_vtep);
        }
        self.current = new;
        report
    }

    /// Adds peer `p` to the engine; false (with the reason in `report`) if the engine refuses it.
    fn add(
        &mut self,
        engine: &mut Engine,
        p: &PeerIntent,
        local_vtep: Option<IpAddr>,
        wall: SystemTime,
        report: &mut ApplyReport,
    ) -> bool {
        let config = PeerConfig {
            endpoint: p.endpoint,
            persistent_keepalive: self.keepalive,
            ..PeerConfig::new(p.public_key.0)
        };
        match engine.add_peer(config, &layout(p, local_vtep).allowed_ips) {
            Ok(_) => {
                self.known_since.insert(p.public_key, wall);
                true
            }
            Err(e) => {
                report.errors.push(format!("peer {}: {e}", p.name));
                false
            }
        }
    }

    /// The kernel routes the applied intent needs, and the link each goes through.
    pub fn kernel_routes(&self, local_vtep: Option<IpAddr>) -> BTreeMap<IpNet, Via> {
        let mut out = BTreeMap::new();
        for p in self.current.peers.values() {
            let l = layout(p, local_vtep);
            out.extend(l.allowed_ips.iter().map(|n| (*n, Via::Tunnel)));
            out.extend(l.pod_routes.iter().map(|(n, _)| (*n, Via::Pods)));
        }
        out
    }

    /// The applied peers whose last handshake — or, if they never completed one, the moment they
    /// were added — is older than `after`.
    pub fn stale_peers(&self, engine: &Engine, wall: SystemTime, after: Duration) -> BTreeSet<Key> {
        let mut out = BTreeSet::new();
        for key in self.current.peers.keys() {
            let since = self.known_since.get(key).copied().unwrap_or(wall);
            let handshake = engine
                .device()
                .peer_by_key(&key.0)
                .and_then(|id| engine.device().peer_stats(id))
                .and_then(|s| s.last_handshake);
            let last = handshake.map_or(since, |h| h.max(since));
            if wall.duration_since(last).is_ok_and(|d| d > after) {
                out.insert(*key);
            }
        }
        out
    }
}

/// Makes the pod table hold exactly the pod routes of `intent`; returns how many entries changed.
fn sync_pod_routes(pod: &mut PodEngine, intent: &Intent, local_vtep: Option<IpAddr>) -> usize {
    let want: BTreeMap<IpNet, RemoteVtep> =
        intent.peers.values().flat_map(|p| layout(p, local_vtep).pod_routes).collect();
    let have: BTreeMap<IpNet, RemoteVtep> = pod.routes().iter().collect();
    let mut changed = 0;
    for (net, remote) in &have {
        if want.get(net) != Some(remote) {
            pod.remove_route(*net);
            changed += 1;
        }
    }
    for (net, remote) in &want {
        if have.get(net) != Some(remote) && pod.insert_route(*net, *remote).is_ok() {
            changed += 1;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::wireguard::{Device, DeviceConfig};
    use rand_core::OsRng;
    use std::time::Instant;

    fn engine() -> Engine {
        let key = Key::generate_private(&mut OsRng);
        Engine::new(Device::new(DeviceConfig::new(key.0), OsRng, Instant::now(), SystemTime::now()))
    }

    fn peer(name: &str, n: u8, routes: &[&str]) -> PeerIntent {
        let public_key = Key::generate_private(&mut OsRng).public();
        let overlay: IpNet = format!("100.64.0.{n}/32").parse().unwrap();
        let routes: Vec<IpNet> = routes.iter().map(|r| r.parse().unwrap()).collect();
        let mut allowed_ips = vec![overlay];
        allowed_ips.extend(&routes);
        allowed_ips.sort();
        PeerIntent {
            name: name.into(),
            public_key,
            endpoint: Some(format!("192.0.2.{n}:41641").parse().unwrap()),
            allowed_ips,
            vtep_mac: Some([2, 0, 0, 0, 0, n]),
            vtep_ip: Some(format!("100.64.0.{n}").parse().unwrap()),
            routes,
        }
    }

    fn intent(peers: &[PeerIntent]) -> Intent {
        Intent { peers: peers.iter().map(|p| (p.public_key, p.clone())).collect() }
    }

    #[test]
    fn only_changed_peers_are_touched_and_routes_follow() {
        let mut e = engine();
        let mut sync = EngineSync::new(vec!["10.99.0.0/16".parse().unwrap()], Some(Duration::from_secs(25)));
        let (a, b) = (peer("a", 2, &["10.42.0.0/16"]), peer("b", 3, &["10.99.0.0/16"]));
        let r = sync.apply(intent(&[a.clone(), b.clone()]), Target::L3(&mut e), SystemTime::now());
        assert_eq!((r.added.len(), r.errors.len()), (2, 0), "{r:?}");
        let ida = e.device().peer_by_key(&a.public_key.0).unwrap();
        let idb = e.device().peer_by_key(&b.public_key.0).unwrap();
        assert_eq!(e.route("10.42.1.1".parse().unwrap()), Some(ida));
        // Our own prefix is never routed to a peer.
        assert_eq!(e.route("10.99.1.1".parse().unwrap()), None);
        assert_eq!(e.device().peer_persistent_keepalive(ida), Some(Duration::from_secs(25)));
        let routes = sync.kernel_routes(None);
        assert_eq!(routes.len(), 3, "{routes:?}");
        assert!(routes.values().all(|v| *v == Via::Tunnel));

        // The route moves from a to b: a and b updated in place, ids kept.
        let mut a2 = a.clone();
        a2.routes.clear();
        a2.allowed_ips.retain(|n| n.prefix_len() == 32);
        let mut b2 = b.clone();
        b2.routes.push("10.42.0.0/16".parse().unwrap());
        b2.allowed_ips.push("10.42.0.0/16".parse().unwrap());
        let r = sync.apply(intent(&[a2, b2]), Target::L3(&mut e), SystemTime::now());
        assert_eq!(r.updated.len(), 2, "{r:?}");
        assert_eq!(e.device().peer_by_key(&a.public_key.0), Some(ida));
        assert_eq!(e.route("10.42.1.1".parse().unwrap()), Some(idb));
        assert_eq!(e.route("100.64.0.2".parse().unwrap()), Some(ida));

        // A peer removed behind our back (`wg set ... remove`) is added again at its next change.
        e.remove_peer(ida);
        let mut a3 = sync.current().peers[&a.public_key].clone();
        a3.endpoint = Some("192.0.2.99:41641".parse().unwrap());
        let mut both = sync.current().clone();
        both.peers.insert(a.public_key, a3);
        let r = sync.apply(both, Target::L3(&mut e), SystemTime::now());
        assert_eq!(r.added, vec!["a".to_string()], "{r:?}");
        let ida = e.device().peer_by_key(&a.public_key.0).unwrap();
        assert_eq!(e.device().peer_endpoint(ida), Some("192.0.2.99:41641".parse().unwrap()));
        assert_eq!(e.route("100.64.0.2".parse().unwrap()), Some(ida));

        // Nothing changed: nothing done.
        let again = sync.current().clone();
        assert!(sync.apply(again, Target::L3(&mut e), SystemTime::now()).is_empty());

        // b removed: its AllowedIPs go with it, a stays.
        let r =
            sync.apply(intent(&[sync.current().peers[&a.public_key].clone()]), Target::L3(&mut e), SystemTime::now());
        assert_eq!(r.removed, vec!["b".to_string()]);
        assert_eq!(e.route("10.42.1.1".parse().unwrap()), None);
        assert_eq!(e.device().peer_ids().count(), 1);
    }

    #[test]
    fn stale_after_silence_counts_from_when_the_peer_was_added() {
        let mut e = engine();
        let mut sync = EngineSync::new(Vec::new(), None);
        let a = peer("a", 2, &[]);
        let t0 = SystemTime::now();
        sync.apply(intent(std::slice::from_ref(&a)), Target::L3(&mut e), t0);
        let after = Duration::from_secs(210);
        assert!(sync.stale_peers(&e, t0 + Duration::from_secs(200), after).is_empty());
        assert_eq!(sync.stale_peers(&e, t0 + Duration::from_secs(211), after), BTreeSet::from([a.public_key]));
    }

    #[test]
    fn with_the_pod_path_routes_become_pod_routes_to_the_vtep() {
        use crate::dataplane::engine::pod::PodConfig;
        use crate::dataplane::wire::vxlan::Vni;
        let config = PodConfig {
            vni: Vni::new(1).unwrap(),
            local_vtep_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            local_vtep_ip: "100.64.0.1".parse().unwrap(),
            dst_port: 8472,
            pod_mtu: 1370,
            clamp_mss: true,
        };
        let mut pod = PodEngine::new(engine(), config).unwrap();
        let mut sync = EngineSync::new(Vec::new(), None);
        let a = peer("a", 2, &["10.42.2.0/24"]);
        let mut plain = peer("b", 3, &["10.42.3.0/24"]);
        plain.vtep_mac = None;
        let r = sync.apply(intent(&[a.clone(), plain.clone()]), Target::Pod(&mut pod), SystemTime::now());
        assert_eq!((r.added.len(), r.pod_routes_changed), (2, 1), "{r:?}");
        let ida = pod.engine().device().peer_by_key(&a.public_key.0).unwrap();
        let idb = pod.engine().device().peer_by_key(&plain.public_key.0).unwrap();
        // a: its route is a pod route to its VTEP; its AllowedIPs hold its overlay address only.
        let (net, remote) = pod.routes().lookup("10.42.2.9".parse().unwrap()).unwrap();
        assert_eq!(net, "10.42.2.0/24".parse().unwrap());
        assert_eq!(
            remote,
            RemoteVtep { vtep_ip: "100.64.0.2".parse().unwrap(), vtep_mac: EthernetAddress([2, 0, 0, 0, 0, 2]) }
        );
        assert_eq!(pod.engine().allowed_ips(ida), vec!["100.64.0.2/32".parse().unwrap()]);
        // b has no VTEP MAC: plain L3, its route in its AllowedIPs.
        assert_eq!(pod.engine().route("10.42.3.9".parse().unwrap()), Some(idb));
        assert!(pod.routes().lookup("10.42.3.9".parse().unwrap()).is_none());
        let routes = sync.kernel_routes(Some("100.64.0.1".parse().unwrap()));
        assert_eq!(routes.get(&"10.42.2.0/24".parse().unwrap()), Some(&Via::Pods));
        assert_eq!(routes.get(&"10.42.3.0/24".parse().unwrap()), Some(&Via::Tunnel));
        assert_eq!(routes.get(&"100.64.0.2/32".parse().unwrap()), Some(&Via::Tunnel));

        // a's route moves to a new prefix: the old pod route goes, the new one comes.
        let mut a2 = a.clone();
        a2.routes = vec!["10.42.4.0/24".parse().unwrap()];
        a2.allowed_ips = vec!["10.42.4.0/24".parse().unwrap(), "100.64.0.2/32".parse().unwrap()];
        let r = sync.apply(intent(&[a2, plain]), Target::Pod(&mut pod), SystemTime::now());
        assert_eq!((r.updated.len(), r.pod_routes_changed), (1, 2), "{r:?}");
        assert!(pod.routes().lookup("10.42.2.9".parse().unwrap()).is_none());
        assert!(pod.routes().lookup("10.42.4.9".parse().unwrap()).is_some());
        assert_eq!(pod.engine().device().peer_by_key(&a.public_key.0), Some(ida), "same peer, updated in place");
        // a gone: its pod route too.
        sync.apply(Intent::default(), Target::Pod(&mut pod), SystemTime::now());
        assert!(pod.routes().is_empty());
        assert_eq!(pod.engine().device().peer_ids().count(), 0);
    }
}
