//! `diff` touches only what changed, and applying it always gives the new intent.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use vxwg_control::keys::Key;
use vxwg_control::netmap::{apply_changes, diff, Change, Intent, PeerIntent};
use vxwg_dataplane::route::IpNet;

fn peer(i: u32) -> PeerIntent {
    let [_, b, c, d] = i.to_be_bytes();
    let mut key = [0u8; 32];
    key[..4].copy_from_slice(&i.to_be_bytes());
    PeerIntent {
        name: format!("node-{i}"),
        public_key: Key(key),
        endpoint: Some(SocketAddr::from(([192, 0, 2, d], 51820))),
        allowed_ips: vec![
            IpNet::host(IpAddr::from([100, b, c, d])),
            IpNet::new(IpAddr::from([10, b, c, 0]), 24).unwrap(),
        ],
        vtep_mac: Some([2, 0, 0, b, c, d]),
        vtep_ip: Some(IpAddr::from([100, b, c, d])),
        routes: vec![IpNet::new(IpAddr::from([10, b, c, 0]), 24).unwrap()],
    }
}

fn fleet(n: u32) -> Intent {
    Intent { peers: (0..n).map(peer).map(|p| (p.public_key, p)).collect() }
}

#[test]
fn one_endpoint_changed_among_a_thousand_peers_is_one_change() {
    let old = fleet(1000);
    let mut new = old.clone();
    let key = *new.peers.keys().nth(500).unwrap();
    let moved = SocketAddr::from(([198, 51, 100, 7], 4500));
    new.peers.get_mut(&key).unwrap().endpoint = Some(moved);
    let changes = diff(&old, &new);
    assert_eq!(
        changes,
        vec![Change::UpdatePeer {
            key,
            name: None,
            endpoint: Some(Some(moved)),
            allowed_ips: None,
            vtep_mac: None,
            vtep_ip: None,
            routes: None,
        }]
    );
    assert!(diff(&old, &old).is_empty());
}

#[test]
fn removals_come_first_so_a_moving_prefix_is_released_before_it_is_claimed() {
    let old = fleet(3);
    let mut new = old.clone();
    let keys: Vec<Key> = old.peers.keys().copied().collect();
    let prefix = old.peers[&keys[0]].routes[0];
    new.peers.remove(&keys[0]);
    let p = new.peers.get_mut(&keys[1]).unwrap();
    p.routes.push(prefix);
    p.allowed_ips.push(prefix);
    let changes = diff(&old, &new);
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0], Change::RemovePeer(keys[0]));
    assert!(
        matches!(&changes[1], Change::UpdatePeer { key, allowed_ips: Some(_), routes: Some(_), endpoint: None, .. } if *key == keys[1])
    );
}

fn arb_peer() -> impl Strategy<Value = PeerIntent> {
    (0u8..12, any::<bool>(), 0u8..4, any::<bool>(), 0u8..3, 0u8..3).prop_map(
        |(id, has_ep, port, has_mac, n_routes, name)| {
            let routes: Vec<IpNet> =
                (0..n_routes).map(|r| IpNet::new(IpAddr::from([10, id, r, 0]), 24).unwrap()).collect();
            let mut allowed_ips = vec![IpNet::host(IpAddr::from([100, 64, 0, id]))];
            allowed_ips.extend(routes.iter().copied());
            PeerIntent {
                name: format!("n{id}-{name}"),
                public_key: Key([id; 32]),
                endpoint: has_ep.then(|| SocketAddr::from(([192, 0, 2, id], 51820 + u16::from(port)))),
                allowed_ips,
                vtep_mac: has_mac.then_some([2, 0, 0, 0, port, id]),
                vtep_ip: (port > 0).then(|| IpAddr::from([100, 64, 0, id])),
                routes,
            }
        },
    )
}

fn arb_intent() -> impl Strategy<Value = Intent> {
    proptest::collection::vec(arb_peer(), 0..10)
        .prop_map(|peers| Intent { peers: peers.into_iter().map(|p| (p.public_key, p)).collect::<BTreeMap<_, _>>() })
}

proptest! {
    #[test]
    fn applying_the_diff_gives_the_new_intent(old in arb_intent(), new in arb_intent()) {
        let changes = diff(&old, &new);
        let mut applied = old.clone();
        apply_changes(&mut applied, &changes);
        prop_assert_eq!(&applied, &new);
        // Unchanged peers get no change at all.
        for (key, peer) in &new.peers {
            if old.peers.get(key) == Some(peer) {
                let touched = changes.iter().any(|c| match c {
                    Change::AddPeer(p) => p.public_key == *key,
                    Change::RemovePeer(k) | Change::UpdatePeer { key: k, .. } => k == key,
                });
                prop_assert!(!touched);
            }
        }
    }
}
