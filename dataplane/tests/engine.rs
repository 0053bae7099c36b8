//! The engine's cryptokey routing, two engines back to back in memory.

use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use rand_core::OsRng;
use vxwg_dataplane::engine::{Engine, Incoming, Outgoing, HEADROOM, TAILROOM};
use vxwg_dataplane::route::IpNet;
use vxwg_dataplane::wireguard::{Device, DeviceConfig, PeerConfig, PeerId};

const A: &str = "127.0.0.1:1";
const B: &str = "127.0.0.1:2";

fn ipv4(src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p
}

/// Packets laid out as the engine takes them: headroom, plaintext, tailroom; and their lengths.
fn batch_of(packets: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<usize>) {
    let bufs = packets
        .iter()
        .map(|p| {
            let mut b = vec![0u8; HEADROOM + p.len() + TAILROOM];
            b[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
            b
        })
        .collect();
    (bufs, packets.iter().map(Vec::len).collect())
}

struct Two {
    a: Engine,
    b: Engine,
    b_at_a: PeerId,
    now: Instant,
}

fn two() -> Two {
    let now = Instant::now();
    let mut a = Engine::new(Device::new(DeviceConfig::new([1; 32]), OsRng, now, SystemTime::now()));
    let mut b = Engine::new(Device::new(DeviceConfig::new([2; 32]), OsRng, now, SystemTime::now()));
    let (pa, pb) = (a.device().public_key(), b.device().public_key());
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    let b_at_a = a
        .add_peer(
            PeerConfig { endpoint: Some(B.parse().unwrap()), ..PeerConfig::new(pb) },
            &[net("10.0.0.2/32"), net("10.9.0.0/16")],
        )
        .unwrap();
    b.add_peer(PeerConfig { endpoint: Some(A.parse().unwrap()), ..PeerConfig::new(pa) }, &[net("10.0.0.1/32")])
        .unwrap();
    Two { a, b, b_at_a, now }
}

/// Runs packets from `from` through the wire to `to`; returns the packets `to` delivers.
fn send(from: &mut Engine, to: &mut Engine, from_addr: &str, packets: &[Vec<u8>], now: Instant) -> Vec<Vec<u8>> {
    let to_addr = if from_addr == A { B } else { A };
    send_to(from, to, from_addr, to_addr, packets, now)
}

/// As `send`, with the receiver's address explicit (for more than two nodes).
fn send_to(
    from: &mut Engine,
    to: &mut Engine,
    from_addr: &str,
    to_addr: &str,
    packets: &[Vec<u8>],
    now: Instant,
) -> Vec<Vec<u8>> {
    let (mut bufs, lens) = batch_of(packets);
    let mut out: Vec<Outgoing> = Vec::new();
    from.encapsulate_batch(&mut bufs, &lens, now, &mut out);
    let mut wire: Vec<Vec<u8>> = out.iter().map(|o| bufs[o.slot][..o.len].to_vec()).collect();
    let mut delivered = Vec::new();
    // Control traffic (handshakes, staged packets) both ways until quiet.
    for _ in 0..4 {
        while let Some(t) = from.poll_transmit() {
            wire.push(t.payload);
        }
        let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
        let srcs = vec![from_addr.parse::<SocketAddr>().unwrap(); wire.len()];
        let mut inc: Vec<Incoming> = Vec::new();
        to.decapsulate_batch(&mut wire, &lens, &srcs, now, &mut inc);
        delivered.extend(inc.iter().map(|i| wire[i.slot][i.range.clone()].to_vec()));
        wire.clear();
        let back_addr: SocketAddr = to_addr.parse().unwrap();
        while let Some(mut t) = to.poll_transmit() {
            let _ = from.decapsulate(back_addr, &mut t.payload, now);
        }
    }
    delivered
}

#[test]
fn packets_go_to_the_peer_that_owns_the_destination() {
    let mut t = two();
    let p1 = ipv4([10, 0, 0, 1], [10, 0, 0, 2], 100);
    let p2 = ipv4([10, 0, 0, 1], [10, 9, 3, 4], 300);
    let got = send(&mut t.a, &mut t.b, A, &[p1.clone(), p2.clone()], t.now);
    // 10.9.3.4 is routed to B by A, but B only accepts packets *from* 10.0.0.1: both arrive,
    // because what B checks is the inner source.
    assert_eq!(got, vec![p1.clone(), p2.clone()], "staged behind the handshake, then delivered");
    assert_eq!(t.a.stats().packets_out, 0, "nothing could go out directly before the handshake");
    assert_eq!(send(&mut t.a, &mut t.b, A, &[p1.clone(), p2.clone()], t.now), vec![p1, p2]);
    assert_eq!(t.a.stats().packets_out, 2, "with a session, both go out of the batch directly");
    assert_eq!(t.a.route("10.9.200.1".parse().unwrap()), Some(t.b_at_a));
}

#[test]
fn no_route_is_counted_and_nothing_is_sent() {
    let mut t = two();
    let got = send(&mut t.a, &mut t.b, A, &[ipv4([10, 0, 0, 1], [192, 0, 2, 1], 64), vec![0x00; 40]], t.now);
    assert!(got.is_empty());
    assert_eq!(t.a.stats().no_route, 1);
    assert_eq!(t.a.stats().not_ip, 1);
    assert!(t.a.poll_transmit().is_none(), "no handshake for an unroutable packet");
}

#[test]
fn decrypted_packet_with_a_source_outside_allowed_ips_is_dropped() {
    let mut t = two();
    // Establish the session with a legitimate packet first.
    assert_eq!(send(&mut t.a, &mut t.b, A, &[ipv4([10, 0, 0, 1], [10, 0, 0, 2], 60)], t.now).len(), 1);
    // A (authenticated) sends a packet claiming to come from 10.0.0.99: B must drop it.
    let spoofed = ipv4([10, 0, 0, 99], [10, 0, 0, 2], 60);
    let got = send(&mut t.a, &mut t.b, A, &[spoofed], t.now);
    assert!(got.is_empty());
    assert_eq!(t.b.stats().source_not_allowed, 1);
    // Back the other way, B's packets from 10.0.0.2 are accepted by A.
    let back = ipv4([10, 0, 0, 2], [10, 0, 0, 1], 80);
    assert_eq!(send(&mut t.b, &mut t.a, B, std::slice::from_ref(&back), t.now), vec![back]);
}

#[test]
fn removing_a_peer_removes_its_routes() {
    let mut t = two();
    assert!(t.a.remove_peer(t.b_at_a));
    assert_eq!(t.a.route("10.0.0.2".parse().unwrap()), None);
    assert!(t.a.allowed_ips(t.b_at_a).is_empty());
}

#[test]
fn a_batch_interleaving_two_peers_reaches_each_one() {
    let now = Instant::now();
    let mk = |k: u8| Engine::new(Device::new(DeviceConfig::new([k; 32]), OsRng, now, SystemTime::now()));
    let (mut a, mut b, mut c) = (mk(1), mk(2), mk(3));
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    let (pa, pb, pc) = (a.device().public_key(), b.device().public_key(), c.device().public_key());
    a.add_peer(PeerConfig { endpoint: Some(B.parse().unwrap()), ..PeerConfig::new(pb) }, &[net("10.0.0.2/32")])
        .unwrap();
    a.add_peer(
        PeerConfig { endpoint: Some("127.0.0.1:3".parse().unwrap()), ..PeerConfig::new(pc) },
        &[net("10.0.0.3/32")],
    )
    .unwrap();
    b.add_peer(PeerConfig { endpoint: Some(A.parse().unwrap()), ..PeerConfig::new(pa) }, &[net("10.0.0.1/32")])
        .unwrap();
    c.add_peer(PeerConfig { endpoint: Some(A.parse().unwrap()), ..PeerConfig::new(pa) }, &[net("10.0.0.1/32")])
        .unwrap();
    // Handshakes with both.
    send(&mut a, &mut b, A, &[ipv4([10, 0, 0, 1], [10, 0, 0, 2], 40)], now);
    send_to(&mut a, &mut c, A, "127.0.0.1:3", &[ipv4([10, 0, 0, 1], [10, 0, 0, 3], 40)], now);

    let to = |d: u8, len: usize| ipv4([10, 0, 0, 1], [10, 0, 0, d], len);
    let batch = [to(2, 100), to(3, 101), to(2, 102), to(2, 103), to(3, 104), to(9, 105), to(3, 106)];
    let (mut bufs, lens) = batch_of(&batch);
    let mut out = Vec::new();
    a.encapsulate_batch(&mut bufs, &lens, now, &mut out);
    assert_eq!(out.len(), 6, "all but the unroutable one");
    assert_eq!(a.stats().no_route, 1);
    let slots: Vec<usize> = out.iter().map(|o| o.slot).collect();
    assert_eq!(slots, [0, 1, 2, 3, 4, 6], "batch order kept");
    let (mut to_b, mut to_c) = (Vec::new(), Vec::new());
    for o in &out {
        let d = bufs[o.slot][..o.len].to_vec();
        if o.dst == B.parse().unwrap() {
            to_b.push(d)
        } else {
            to_c.push(d)
        }
    }
    let deliver = |e: &mut Engine, wire: &mut Vec<Vec<u8>>| -> Vec<usize> {
        let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
        let srcs = vec![A.parse::<SocketAddr>().unwrap(); wire.len()];
        let mut inc = Vec::new();
        e.decapsulate_batch(wire, &lens, &srcs, now, &mut inc);
        inc.iter().map(|i| i.range.len()).collect()
    };
    assert_eq!(deliver(&mut b, &mut to_b), [100, 102, 103], "B gets exactly its packets, in order");
    assert_eq!(deliver(&mut c, &mut to_c), [101, 104, 106], "C gets exactly its packets, in order");
}

#[test]
fn a_batch_that_would_cross_the_nonce_limit_is_staged_behind_a_handshake() {
    use vxwg_dataplane::wireguard::constants::REJECT_AFTER_MESSAGES;
    let mut t = two();
    send(&mut t.a, &mut t.b, A, &[ipv4([10, 0, 0, 1], [10, 0, 0, 2], 60)], t.now);
    // Two nonces left on the current key, three packets in the batch.
    t.a.device_mut().current_keypair_mut(t.b_at_a).unwrap().force_send_counter(REJECT_AFTER_MESSAGES - 2);
    let packets: Vec<Vec<u8>> = (0..3).map(|i| ipv4([10, 0, 0, 1], [10, 0, 0, 2], 60 + i)).collect();
    let (mut bufs, lens) = batch_of(&packets);
    let mut out = Vec::new();
    // Past REKEY_TIMEOUT, so the handshake this forces is not rate-limited away.
    t.a.encapsulate_batch(&mut bufs, &lens, t.now + std::time::Duration::from_secs(6), &mut out);
    assert!(out.is_empty(), "nothing sealed with a key that cannot cover the batch");
    let init = t.a.poll_transmit().expect("a handshake starts");
    assert_eq!(init.payload.len(), 148);
}
