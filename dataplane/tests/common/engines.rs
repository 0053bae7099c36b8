//! Engines for the in-memory tests: two that know each other, and the same two carrying the pod
//! path with an established session.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use rand_core::OsRng;
use vxwg_dataplane::engine::pod::{PodConfig, PodEngine, RemoteVtep};
use vxwg_dataplane::engine::Engine;
use vxwg_dataplane::route::IpNet;
use vxwg_dataplane::wire::ethernet::EthernetAddress;
use vxwg_dataplane::wire::vxlan::Vni;
use vxwg_dataplane::wireguard::{Device, DeviceConfig, PeerConfig, PeerId};

/// A's and B's UDP endpoints.
pub const A: &str = "127.0.0.1:1";
pub const B: &str = "127.0.0.1:2";

pub fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Two engines that know each other: A (10.0.0.1) and B (10.0.0.2), and B's id at A. No
/// session yet.
pub fn engine_pair(now: Instant) -> (Engine, Engine, PeerId) {
    let mut a = Engine::new(Device::new(DeviceConfig::new([1; 32]), OsRng, now, SystemTime::now()));
    let mut b = Engine::new(Device::new(DeviceConfig::new([2; 32]), OsRng, now, SystemTime::now()));
    let (pa, pb) = (a.device().public_key(), b.device().public_key());
    let b_at_a =
        a.add_peer(PeerConfig { endpoint: Some(addr(B)), ..PeerConfig::new(pb) }, &[net("10.0.0.2/32")]).unwrap();
    b.add_peer(PeerConfig { endpoint: Some(addr(A)), ..PeerConfig::new(pa) }, &[net("10.0.0.1/32")]).unwrap();
    (a, b, b_at_a)
}

/// An IPv4 header from A to B (10.0.0.1 -> 10.0.0.2) for a `len`-byte packet, over `p[..20]`
/// (no checksum: the engines route by address and do not check it).
pub fn ipv4_header(p: &mut [u8], len: usize) {
    p[..20].fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
}

/// Control traffic both ways until quiet (handshakes, confirmations, staged packets).
pub fn exchange(a: &mut Engine, b: &mut Engine, now: Instant) {
    for _ in 0..4 {
        while let Some(mut t) = a.poll_transmit() {
            let _ = b.decapsulate(addr(A), &mut t.payload, now);
        }
        while let Some(mut t) = b.poll_transmit() {
            let _ = a.decapsulate(addr(B), &mut t.payload, now);
        }
    }
}

/// [`engine_pair`] with a confirmed session (B has received data on it).
pub fn connected(now: Instant) -> (Engine, Engine, PeerId) {
    let (mut a, mut b, b_at_a) = engine_pair(now);
    a.device_mut().initiate_handshake(b_at_a, now);
    exchange(&mut a, &mut b, now);
    assert!(a.device().has_session(b_at_a, now));
    (a, b, b_at_a)
}

/// The pair as VTEPs (VNI 1, pod MTU 1370): pods 10.42.1.0/24 behind A, 10.42.2.0/24 behind B,
/// with the session established.
pub fn pod_pair(now: Instant) -> (PodEngine, PodEngine) {
    let (ea, eb, b_at_a) = engine_pair(now);
    let config = |mac: u8, ip: &str| PodConfig {
        vni: Vni::new(1).unwrap(),
        local_vtep_mac: EthernetAddress([2, 0, 0, 0, 0, mac]),
        local_vtep_ip: ip.parse().unwrap(),
        dst_port: 8472,
        pod_mtu: 1370,
        clamp_mss: true,
    };
    let mut a = PodEngine::new(ea, config(0xa, "10.0.0.1")).unwrap();
    let mut b = PodEngine::new(eb, config(0xb, "10.0.0.2")).unwrap();
    let vtep = |ip: &str, mac: u8| RemoteVtep {
        vtep_ip: ip.parse().unwrap(),
        vtep_mac: EthernetAddress([2, 0, 0, 0, 0, mac]),
    };
    a.insert_route(net("10.42.2.0/24"), vtep("10.0.0.2", 0xb)).unwrap();
    b.insert_route(net("10.42.1.0/24"), vtep("10.0.0.1", 0xa)).unwrap();
    a.engine_mut().device_mut().initiate_handshake(b_at_a, now);
    for _ in 0..3 {
        while let Some(mut t) = a.poll_transmit() {
            let _ = b.decapsulate_pod(addr(A), &mut t.payload, now);
        }
        while let Some(mut t) = b.poll_transmit() {
            let _ = a.decapsulate_pod(addr(B), &mut t.payload, now);
        }
    }
    assert!(a.engine().device().has_session(b_at_a, now), "the pod pair's handshake completed");
    (a, b)
}
