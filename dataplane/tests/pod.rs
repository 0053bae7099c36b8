//! The pod path (VXLAN inside WireGuard, one buffer), two nodes back to back in memory.
//!
//! Node A: overlay 10.0.0.1 (fd00::1 with IPv6 VTEPs), pods 10.42.1.0/24 and fd42:1::/64.
//! Node B: overlay 10.0.0.2 (fd00::2), pods 10.42.2.0/24 and fd42:2::/64.
//! Each is the other's WireGuard peer with AllowedIPs = the other's overlay /32 (/128).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Instant, SystemTime};

use rand_core::OsRng;
use vxwg_dataplane::engine::pod::{
    seal_pod_jobs, Delivery, PodConfig, PodDrop, PodEngine, PodIcmp, PodIncoming, PodOutgoing, RemoteVtep,
    POD_HEADROOM, POD_TAILROOM,
};
use vxwg_dataplane::engine::{Engine, Outgoing, HEADROOM, TAILROOM};
use vxwg_dataplane::mtu::{self, Family};
use vxwg_dataplane::route::IpNet;
use vxwg_dataplane::wire::checksum;
use vxwg_dataplane::wire::ethernet::{self, EtherType, EthernetAddress};
use vxwg_dataplane::wire::ipv4::{self, IpProtocol};
use vxwg_dataplane::wire::vxlan::{self, Vni};
use vxwg_dataplane::wire::{ipv6, udp};
use vxwg_dataplane::wireguard::{Device, DeviceConfig, PeerConfig, PeerId, Received};

const A_ADDR: &str = "127.0.0.1:1";
const B_ADDR: &str = "127.0.0.1:2";
const MAC_A: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0a]);
const MAC_B: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x0b]);
/// Tunnel MTU 1420 (the Device default) over an IPv4 underlay of 1480 (1420 + 60).
const UNDERLAY_MTU: u32 = 1480;
const TUNNEL_MTU: usize = 1420;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct Node {
    pod: PodEngine,
    peer: PeerId,
    addr: SocketAddr,
}

struct Pair {
    a: Node,
    b: Node,
    now: Instant,
    pod_mtu: u32,
}

/// Two nodes with a completed handshake; IPv4 VTEPs unless `v6_vteps`.
fn pair(v6_vteps: bool) -> Pair {
    pair_with(v6_vteps, 1, true)
}

/// As `pair`, with B on VNI `b_vni`, and the handshake only if `handshake`.
fn pair_with(v6_vteps: bool, b_vni: u32, handshake: bool) -> Pair {
    let now = Instant::now();
    let (vtep_a, vtep_b): (IpAddr, IpAddr) = if v6_vteps {
        ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap())
    } else {
        ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap())
    };
    let vtep_family = if v6_vteps { Family::V6 } else { Family::V4 };
    let pod_mtu = mtu::pod_mtu(UNDERLAY_MTU, Family::V4, vtep_family).unwrap();
    let mut ea = Engine::new(Device::new(DeviceConfig::new([1; 32]), OsRng, now, SystemTime::now()));
    let mut eb = Engine::new(Device::new(DeviceConfig::new([2; 32]), OsRng, now, SystemTime::now()));
    assert_eq!(ea.device().mtu(), TUNNEL_MTU);
    let (pa, pb) = (ea.device().public_key(), eb.device().public_key());
    let b_at_a = ea
        .add_peer(PeerConfig { endpoint: Some(addr(B_ADDR)), ..PeerConfig::new(pb) }, &[IpNet::host(vtep_b)])
        .unwrap();
    let a_at_b = eb
        .add_peer(PeerConfig { endpoint: Some(addr(A_ADDR)), ..PeerConfig::new(pa) }, &[IpNet::host(vtep_a)])
        .unwrap();
    let config = |mac, ip, vni| PodConfig {
        vni: Vni::new(vni).unwrap(),
        local_vtep_mac: mac,
        local_vtep_ip: ip,
        dst_port: vxlan::DEFAULT_PORT,
        pod_mtu,
        clamp_mss: true,
    };
    let mut a = PodEngine::new(ea, config(MAC_A, vtep_a, 1)).unwrap();
    let mut b = PodEngine::new(eb, config(MAC_B, vtep_b, b_vni)).unwrap();
    for cidr in ["10.42.2.0/24", "fd42:2::/64"] {
        a.insert_route(net(cidr), RemoteVtep { vtep_ip: vtep_b, vtep_mac: MAC_B }).unwrap();
    }
    for cidr in ["10.42.1.0/24", "fd42:1::/64"] {
        b.insert_route(net(cidr), RemoteVtep { vtep_ip: vtep_a, vtep_mac: MAC_A }).unwrap();
    }
    let mut p = Pair {
        a: Node { pod: a, peer: b_at_a, addr: addr(A_ADDR) },
        b: Node { pod: b, peer: a_at_b, addr: addr(B_ADDR) },
        now,
        pod_mtu,
    };
    if handshake {
        p.a.pod.engine_mut().device_mut().initiate_handshake(b_at_a, now);
        shuttle(&mut p.a, &mut p.b, now);
        assert!(p.a.pod.engine().device().has_session(b_at_a, now));
        assert!(p.b.pod.engine().device().has_session(a_at_b, now));
    }
    p
}

/// Control traffic both ways until quiet; returns the pod packets delivered on the way.
fn shuttle(x: &mut Node, y: &mut Node, now: Instant) -> Vec<(Delivery, Vec<u8>)> {
    let mut got = Vec::new();
    for _ in 0..4 {
        drain(x, y, now, &mut got);
        drain(y, x, now, &mut got);
    }
    got
}

/// Everything `from` wants sent, received by `to`; what `to` delivers goes into `got`.
fn drain(from: &mut Node, to: &mut Node, now: Instant, got: &mut Vec<(Delivery, Vec<u8>)>) {
    while let Some(mut t) = from.pod.poll_transmit() {
        if let Ok(Some(i)) = to.pod.decapsulate_pod(from.addr, &mut t.payload, now) {
            got.push((i.delivery, t.payload[i.range].to_vec()));
        }
    }
}

/// Pod packets laid out as the pod path takes them: headroom, packet, tailroom.
fn batch_of(packets: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<usize>) {
    let bufs = packets
        .iter()
        .map(|p| {
            let mut b = vec![0u8; POD_HEADROOM + p.len() + POD_TAILROOM];
            b[POD_HEADROOM..POD_HEADROOM + p.len()].copy_from_slice(p);
            b
        })
        .collect();
    (bufs, packets.iter().map(Vec::len).collect())
}

struct Sent {
    out: Vec<PodOutgoing>,
    icmp: Vec<PodIcmp>,
    /// What `to` delivered, in order: in-place datagrams first, then `poll_transmit` ones.
    delivered: Vec<(Delivery, Vec<u8>)>,
}

/// Sends pod packets from `from` to `to` through the in-memory wire.
fn send(from: &mut Node, to: &mut Node, packets: &[Vec<u8>], now: Instant) -> Sent {
    let (mut bufs, lens) = batch_of(packets);
    let (mut out, mut icmp) = (Vec::new(), Vec::new());
    from.pod.encapsulate_pod_batch(&mut bufs, &lens, now, &mut out, &mut icmp);
    let mut wire: Vec<Vec<u8>> = out.iter().map(|o| bufs[o.slot][o.range.clone()].to_vec()).collect();
    let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
    let srcs = vec![from.addr; wire.len()];
    let mut inc: Vec<PodIncoming> = Vec::new();
    to.pod.decapsulate_pod_batch(&mut wire, &lens, &srcs, now, &mut inc);
    let mut delivered: Vec<(Delivery, Vec<u8>)> =
        inc.iter().map(|i| (i.delivery, wire[i.slot][i.range.clone()].to_vec())).collect();
    delivered.extend(shuttle(from, to, now));
    Sent { out, icmp, delivered }
}

fn ipv4_packet(src: [u8; 4], dst: [u8; 4], protocol: IpProtocol, payload: &[u8], df: bool) -> Vec<u8> {
    let mut p = vec![0u8; 20 + payload.len()];
    let repr = ipv4::Repr {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        protocol,
        payload_len: payload.len(),
        ttl: 64,
        dont_frag: df,
        dscp_ecn: 0,
        ident: 0x1234,
    };
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut p[..])).unwrap();
    p[20..].copy_from_slice(payload);
    p
}

fn ipv6_packet(src: &str, dst: &str, next_header: IpProtocol, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40 + payload.len()];
    let repr = ipv6::Repr {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        next_header,
        payload_len: payload.len(),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 7,
    };
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut p[..])).unwrap();
    p[40..].copy_from_slice(payload);
    p
}

/// A UDP/IPv4 packet of exactly `total` octets.
fn udp4(src: [u8; 4], dst: [u8; 4], total: usize, df: bool) -> Vec<u8> {
    let payload: Vec<u8> = (0..total - 20).map(|i| (i * 7 + 3) as u8).collect();
    ipv4_packet(src, dst, IpProtocol::UDP, &payload, df)
}

/// A UDP/IPv6 packet of exactly `total` octets.
fn udp6(src: &str, dst: &str, total: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..total - 40).map(|i| (i * 5 + 1) as u8).collect();
    ipv6_packet(src, dst, IpProtocol::UDP, &payload)
}

#[test]
fn pod_packets_arrive_byte_identical_both_ways() {
    for v6_vteps in [false, true] {
        let mut p = pair(v6_vteps);
        let to_b = vec![
            udp4([10, 42, 1, 5], [10, 42, 2, 7], 100, true),
            udp6("fd42:1::5", "fd42:2::7", 333),
            udp4([10, 42, 1, 5], [10, 42, 2, 8], 61, false),
        ];
        let s = send(&mut p.a, &mut p.b, &to_b, p.now);
        assert_eq!(s.out.len(), 3, "all three go out of the batch in place");
        let expected: Vec<(Delivery, Vec<u8>)> = to_b.iter().map(|x| (Delivery::Pod, x.clone())).collect();
        assert_eq!(s.delivered, expected, "v6 VTEPs: {v6_vteps}");

        let to_a = vec![udp6("fd42:2::7", "fd42:1::5", 1200), udp4([10, 42, 2, 7], [10, 42, 1, 5], 1000, true)];
        let s = send(&mut p.b, &mut p.a, &to_a, p.now);
        let expected: Vec<(Delivery, Vec<u8>)> = to_a.iter().map(|x| (Delivery::Pod, x.clone())).collect();
        assert_eq!(s.delivered, expected);
        assert_eq!(p.b.pod.stats().packets_in, 3);
        assert_eq!(p.a.pod.stats().packets_in, 2);
        assert_eq!(p.a.pod.stats().packets_out, 3);
    }
}

#[test]
fn plain_l3_packets_share_the_tunnel_and_go_to_the_host_side() {
    let mut p = pair(false);
    // A host packet between the overlay addresses, through the L3 engine's own batch path.
    let host = udp4([10, 0, 0, 1], [10, 0, 0, 2], 120, true);
    let mut buf = vec![0u8; HEADROOM + host.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + host.len()].copy_from_slice(&host);
    let mut out: Vec<Outgoing> = Vec::new();
    let mut bufs = [buf];
    p.a.pod.engine_mut().encapsulate_batch(&mut bufs, &[host.len()], p.now, &mut out);
    assert_eq!(out.len(), 1);
    let mut datagram = bufs[0][..out[0].len].to_vec();
    let got = p.b.pod.decapsulate_pod(p.a.addr, &mut datagram, p.now).unwrap().unwrap();
    assert_eq!(got.delivery, Delivery::Host);
    assert_eq!(datagram[got.range], host[..]);
    assert_eq!(p.b.pod.stats().l3_in, 1);
}

#[test]
fn the_decrypted_packet_is_what_a_linux_vxlan_device_expects() {
    for v6_vteps in [false, true] {
        let mut p = pair(v6_vteps);
        let pod = udp4([10, 42, 1, 5], [10, 42, 2, 7], 200, true);
        let (mut bufs, lens) = batch_of(std::slice::from_ref(&pod));
        let (mut out, mut icmp) = (Vec::new(), Vec::new());
        p.a.pod.encapsulate_pod_batch(&mut bufs, &lens, p.now, &mut out, &mut icmp);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].dst, p.b.addr);
        let mut datagram = bufs[0][out[0].range.clone()].to_vec();
        // Decrypt with the plain L3 engine: what comes out is the outer VXLAN packet.
        let Ok(Received::Packet { peer, packet }) = p.b.pod.engine_mut().decapsulate(p.a.addr, &mut datagram, p.now)
        else {
            panic!("a data packet")
        };
        assert_eq!(peer, p.b.peer);
        let (src, dst, l4): (IpAddr, IpAddr, &[u8]) = if v6_vteps {
            let ip = ipv6::Packet::new_checked(&packet[..]).unwrap();
            assert_eq!(ip.next_header(), IpProtocol::UDP);
            assert_eq!(ip.hop_limit(), 64);
            assert_eq!(ip.total_len(), packet.len());
            (ip.src_addr().into(), ip.dst_addr().into(), ip.payload())
        } else {
            let ip = ipv4::Packet::new_checked(&packet[..]).unwrap();
            assert!(ip.verify_checksum(), "outer IPv4 header checksum");
            assert!(ip.dont_frag());
            assert_eq!(ip.protocol(), IpProtocol::UDP);
            assert_eq!(usize::from(ip.total_len()), packet.len());
            (ip.src_addr().into(), ip.dst_addr().into(), ip.payload())
        };
        assert_eq!(src, p.a.pod.config().local_vtep_ip);
        assert_eq!(dst, p.b.pod.config().local_vtep_ip);
        let datagram = udp::Packet::new_checked(l4).unwrap();
        assert_eq!(datagram.dst_port(), 8472);
        assert!(datagram.src_port() >= 49152);
        if v6_vteps {
            assert_ne!(datagram.checksum(), 0);
            assert!(datagram.verify_checksum(src, dst), "outer UDP checksum");
        } else {
            assert_eq!(datagram.checksum(), 0, "none over IPv4, as RFC 7348 recommends and Linux does");
        }
        let vx = vxlan::Packet::new_checked(datagram.payload()).unwrap();
        assert_eq!(vx.flags(), 0x08, "I flag only");
        assert!(vx.vni_valid());
        assert_eq!(vx.vni(), Vni::new(1).unwrap());
        assert_eq!(vx.as_ref()[1..4], [0, 0, 0], "reserved");
        assert_eq!(vx.as_ref()[7], 0, "reserved");
        let frame = ethernet::Frame::new_checked(vx.payload()).unwrap();
        assert_eq!(frame.dst_addr(), MAC_B);
        assert_eq!(frame.src_addr(), MAC_A);
        assert_eq!(frame.ethertype(), EtherType::IPV4);
        assert_eq!(frame.payload(), &pod[..]);
        assert_eq!(packet.len(), mtu::vxlan_overhead(if v6_vteps { Family::V6 } else { Family::V4 }) + pod.len());
    }
}

#[test]
fn the_pod_packet_is_never_moved_on_the_send_path() {
    for v6_vteps in [false, true] {
        let mut p = pair(v6_vteps);
        let vxlan_overhead = mtu::vxlan_overhead(if v6_vteps { Family::V6 } else { Family::V4 });
        let start = POD_HEADROOM - vxlan_overhead - HEADROOM;
        assert_eq!(start, if v6_vteps { 0 } else { 20 });
        assert_eq!(p.a.pod.datagram_offset(), start);
        let pod = udp6("fd42:1::5", "fd42:2::7", 512);
        let (mut bufs, lens) = batch_of(std::slice::from_ref(&pod));
        let len_before = bufs[0].len();
        let ptr_before = bufs[0].as_ptr();
        let (mut out, mut icmp) = (Vec::new(), Vec::new());
        p.a.pod.encapsulate_pod_batch(&mut bufs, &lens, p.now, &mut out, &mut icmp);
        assert_eq!(bufs[0].len(), len_before, "no second buffer, no growth");
        assert_eq!(bufs[0].as_ptr(), ptr_before);
        // The datagram is exactly [start..] of the same buffer: header 16, the outer packet
        // (padded to 16), tag 16.
        let outer_len = vxlan_overhead + pod.len();
        let wg_len = HEADROOM + outer_len.next_multiple_of(16).min(1420) + 16;
        assert_eq!(out[0].range, start..start + wg_len);
        assert!(start + wg_len <= POD_HEADROOM + pod.len() + POD_TAILROOM);
        // The plaintext was encrypted where it lay: decrypting the datagram alone puts the pod
        // packet at POD_HEADROOM - start within it, i.e. at POD_HEADROOM of A's buffer.
        let mut datagram = bufs[0][out[0].range.clone()].to_vec();
        let got = p.b.pod.decapsulate_pod(p.a.addr, &mut datagram, p.now).unwrap().unwrap();
        assert_eq!(got.range, POD_HEADROOM - start..POD_HEADROOM - start + pod.len());
        assert_eq!(datagram[got.range], pod[..]);
    }
}

#[test]
fn pod_mtu_arithmetic_holds_end_to_end() {
    let mut p = pair(false);
    // Underlay 1480 (IPv4) → tunnel 1420 → pod 1370 with IPv4 VTEPs.
    assert_eq!(mtu::tunnel_mtu(UNDERLAY_MTU, Family::V4), Ok(1420));
    assert_eq!(p.pod_mtu, 1370);
    assert_eq!(p.pod_mtu, 1420 - 50);

    // Exactly pod_mtu fits: outer VXLAN packet 1370 + 50 = 1420 = tunnel MTU (no padding past
    // it), WireGuard message 16 + 1420 + 16 = 1452, underlay packet 1452 + 8 + 20 = 1480.
    let fits = udp4([10, 42, 1, 5], [10, 42, 2, 7], 1370, true);
    let s = send(&mut p.a, &mut p.b, std::slice::from_ref(&fits), p.now);
    assert_eq!(s.out.len(), 1);
    assert_eq!(s.out[0].range.len(), 1452);
    assert_eq!(s.out[0].range.len() + 8 + 20, UNDERLAY_MTU as usize);
    assert_eq!(s.delivered, vec![(Delivery::Pod, fits)]);
    assert!(s.icmp.is_empty());

    // pod_mtu + 1 with DF: frag-needed carrying 1370, from the remote pod CIDR's network address.
    let big = udp4([10, 42, 1, 5], [10, 42, 2, 7], 1371, true);
    let s = send(&mut p.a, &mut p.b, std::slice::from_ref(&big), p.now);
    assert!(s.out.is_empty() && s.delivered.is_empty());
    assert_eq!(s.icmp.len(), 1);
    assert_eq!(s.icmp[0].slot, 0);
    let ip = ipv4::Packet::new_checked(&s.icmp[0].packet[..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.protocol(), IpProtocol::ICMP);
    assert_eq!(ip.src_addr(), Ipv4Addr::new(10, 42, 2, 0));
    assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 42, 1, 5));
    let icmp = ip.payload();
    assert_eq!((icmp[0], icmp[1]), (3, 4), "destination unreachable, fragmentation needed");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1370, "next-hop MTU");
    assert_eq!(checksum::finish(checksum::sum(icmp)), 0, "ICMP checksum");
    assert_eq!(&icmp[8..28], &big[..20], "quotes the original header");
    assert_eq!(p.a.pod.stats().too_big, 1);

    // IPv6: Packet Too Big carrying 1370.
    let big6 = udp6("fd42:1::5", "fd42:2::7", 1371);
    let s = send(&mut p.a, &mut p.b, std::slice::from_ref(&big6), p.now);
    assert!(s.out.is_empty() && s.delivered.is_empty());
    let ip = ipv6::Packet::new_checked(&s.icmp[0].packet[..]).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::ICMPV6);
    assert_eq!(ip.src_addr(), "fd42:2::".parse::<Ipv6Addr>().unwrap());
    assert_eq!(ip.dst_addr(), "fd42:1::5".parse::<Ipv6Addr>().unwrap());
    let icmp = ip.payload();
    assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
    assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), 1370);
    let pseudo = checksum::pseudo_header_v6(ip.src_addr(), ip.dst_addr(), 58, icmp.len() as u32);
    assert_eq!(checksum::finish(checksum::combine(&[pseudo, checksum::sum(icmp)])), 0, "ICMPv6 checksum");
    assert_eq!(p.a.pod.stats().too_big, 2);

    // IPv4 without DF: fragments that each fit, reassembled at B.
    let frag = udp4([10, 42, 1, 5], [10, 42, 2, 7], 3000, false);
    let s = send(&mut p.a, &mut p.b, std::slice::from_ref(&frag), p.now);
    assert!(s.out.is_empty() && s.icmp.is_empty(), "fragments leave through poll_transmit");
    assert_eq!(p.a.pod.stats().fragmented, 1);
    assert_eq!(s.delivered.len(), 3);
    assert_eq!(p.a.pod.stats().fragments_out, 3);
    let mut reassembled = vec![0u8; 2980];
    let mut covered = 0;
    for (delivery, f) in &s.delivered {
        assert_eq!(*delivery, Delivery::Pod);
        assert!(f.len() <= 1370);
        let ip = ipv4::Packet::new_checked(&f[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!(ip.ident(), 0x1234);
        let off = usize::from(ip.frag_offset());
        reassembled[off..off + ip.payload().len()].copy_from_slice(ip.payload());
        covered += ip.payload().len();
    }
    assert_eq!(covered, 2980);
    assert_eq!(reassembled, frag[20..]);
}

/// A TCP SYN with one MSS option, checksum filled.
fn syn4(src: [u8; 4], dst: [u8; 4], mss: u16) -> Vec<u8> {
    let mut tcp = vec![0u8; 24];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
    tcp[12] = 6 << 4; // data offset: 6 words
    tcp[13] = 0x02; // SYN
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    tcp[20..24].copy_from_slice(&[2, 4, (mss >> 8) as u8, mss as u8]);
    let pseudo = checksum::pseudo_header_v4(src.into(), dst.into(), 6, 24);
    let c = checksum::finish(checksum::combine(&[pseudo, checksum::sum(&tcp)]));
    tcp[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_packet(src, dst, IpProtocol::TCP, &tcp, true)
}

#[test]
fn syn_mss_is_clamped_to_the_pod_mtu() {
    let mut p = pair(false);
    let syn = syn4([10, 42, 1, 5], [10, 42, 2, 7], 1460);
    let s = send(&mut p.a, &mut p.b, &[syn], p.now);
    assert_eq!(s.delivered.len(), 1);
    let got = &s.delivered[0].1;
    let tcp = &got[20..];
    let mss = u16::from_be_bytes([tcp[22], tcp[23]]);
    assert_eq!(mss, 1330);
    assert!(u32::from(mss) <= p.pod_mtu - 40);
    let pseudo = checksum::pseudo_header_v4([10, 42, 1, 5].into(), [10, 42, 2, 7].into(), 6, 24);
    assert_eq!(checksum::finish(checksum::combine(&[pseudo, checksum::sum(tcp)])), 0, "TCP checksum still valid");
    assert_eq!(p.a.pod.stats().mss_clamped, 1);
}

#[test]
fn packets_nobody_owns_are_counted_drops_and_nothing_is_sent() {
    let mut p = pair(false);
    // No pod CIDR covers it.
    let s = send(&mut p.a, &mut p.b, &[udp4([10, 42, 1, 5], [10, 42, 9, 1], 100, true)], p.now);
    assert!(s.out.is_empty() && s.icmp.is_empty() && s.delivered.is_empty());
    assert_eq!(p.a.pod.stats().drop_count(PodDrop::NoRoute), 1);
    // A pod CIDR whose VTEP no WireGuard peer owns.
    p.a.pod
        .insert_route(net("10.42.3.0/24"), RemoteVtep { vtep_ip: "10.0.0.3".parse().unwrap(), vtep_mac: MAC_B })
        .unwrap();
    let s = send(&mut p.a, &mut p.b, &[udp4([10, 42, 1, 5], [10, 42, 3, 1], 100, true)], p.now);
    assert!(s.out.is_empty() && s.delivered.is_empty());
    assert_eq!(p.a.pod.stats().drop_count(PodDrop::NoPeer), 1);
    // Not IP at all.
    let s = send(&mut p.a, &mut p.b, &[vec![0u8; 40]], p.now);
    assert!(s.out.is_empty());
    assert_eq!(p.a.pod.stats().drop_count(PodDrop::Malformed), 1);
    assert!(p.a.pod.poll_transmit().is_none(), "nothing queued, no handshake");
    assert_eq!(p.a.pod.stats().packets_out, 0);
    // A remote VTEP of the other family is refused up front.
    assert!(p
        .a
        .pod
        .insert_route(net("10.42.4.0/24"), RemoteVtep { vtep_ip: "fd00::4".parse().unwrap(), vtep_mac: MAC_B })
        .is_err());
}

#[test]
fn a_node_cannot_speak_for_pods_it_does_not_own() {
    let mut p = pair(false);
    // A sends, inside its own VXLAN, a packet claiming to come from one of B's pods.
    let spoofed = udp4([10, 42, 2, 99], [10, 42, 2, 7], 100, true);
    let s = send(&mut p.a, &mut p.b, &[spoofed], p.now);
    assert_eq!(s.out.len(), 1, "A's routes send it");
    assert!(s.delivered.is_empty(), "B refuses it");
    assert_eq!(p.b.pod.stats().drop_count(PodDrop::PodSourceNotAllowed), 1);
}

#[test]
fn packets_before_the_handshake_are_staged_then_delivered() {
    let mut p = pair_with(false, 1, false);
    let packets = vec![udp4([10, 42, 1, 5], [10, 42, 2, 7], 300, true), udp6("fd42:1::5", "fd42:2::7", 90)];
    let s = send(&mut p.a, &mut p.b, &packets, p.now);
    assert!(s.out.is_empty(), "no session yet: nothing goes out in place");
    assert_eq!(p.a.pod.stats().staged, 2);
    let expected: Vec<(Delivery, Vec<u8>)> = packets.iter().map(|x| (Delivery::Pod, x.clone())).collect();
    assert_eq!(s.delivered, expected, "delivered once the handshake completes");
}

#[test]
fn wrong_vni_and_wrong_mac_are_counted_drops() {
    let mut p = pair_with(false, 2, true);
    let s = send(&mut p.a, &mut p.b, &[udp4([10, 42, 1, 5], [10, 42, 2, 7], 100, true)], p.now);
    assert_eq!(s.out.len(), 1);
    assert!(s.delivered.is_empty());
    assert_eq!(p.b.pod.stats().drop_count(PodDrop::WrongVni), 1);

    let mut p = pair(false);
    let other_mac = EthernetAddress([0x02, 0, 0, 0, 0, 0x0c]);
    let b_vtep = p.b.pod.config().local_vtep_ip;
    p.a.pod.insert_route(net("10.42.2.0/24"), RemoteVtep { vtep_ip: b_vtep, vtep_mac: other_mac }).unwrap();
    let s = send(&mut p.a, &mut p.b, &[udp4([10, 42, 1, 5], [10, 42, 2, 7], 100, true)], p.now);
    assert_eq!(s.out.len(), 1);
    assert!(s.delivered.is_empty());
    assert_eq!(p.b.pod.stats().drop_count(PodDrop::WrongMac), 1);
}

#[test]
fn icmp_answers_are_rate_limited() {
    let mut p = pair(false);
    let big = udp4([10, 42, 1, 5], [10, 42, 2, 7], 1400, true);
    let s = send(&mut p.a, &mut p.b, &vec![big.clone(); 80], p.now);
    assert_eq!(s.icmp.len(), 50, "the burst");
    assert_eq!(p.a.pod.stats().drop_count(PodDrop::TooBigSilent), 30);
    // 100 ms later, 10 more tokens.
    let later = p.now + std::time::Duration::from_millis(100);
    let s = send(&mut p.a, &mut p.b, &vec![big; 20], later);
    assert_eq!(s.icmp.len(), 10);
    assert_eq!(s.icmp.iter().map(|i| i.slot).collect::<Vec<_>>(), (0..10).collect::<Vec<_>>());
}

#[test]
fn a_smaller_path_to_one_peer_lowers_its_pod_mtu_and_answers_with_it() {
    let mut p = pair(false);
    assert_eq!(p.pod_mtu, 1370);
    // The kernel now says the path to B carries 1400-byte datagrams: 1400 - 60 - 50 = 1290.
    assert_eq!(p.a.pod.set_path_mtu(p.a.peer, 1400, Family::V4), 1290);
    assert_eq!(p.a.pod.pod_mtu_for(p.a.peer), 1290);
    // 1290 fits, and its datagram fits the smaller path exactly.
    let s = send(&mut p.a, &mut p.b, &[udp4([10, 42, 1, 5], [10, 42, 2, 7], 1290, true)], p.now);
    assert_eq!(s.delivered.len(), 1);
    assert_eq!(s.out[0].range.len(), 1400 - 20 - 8, "WireGuard payload of a 1400-byte IPv4 datagram");
    // 1291 with DF: frag-needed carrying the path's pod MTU, not the configured one.
    let s = send(&mut p.a, &mut p.b, &[udp4([10, 42, 1, 5], [10, 42, 2, 7], 1291, true)], p.now);
    assert!(s.out.is_empty() && s.delivered.is_empty());
    let icmp = &s.icmp[0].packet[20..];
    assert_eq!((icmp[0], icmp[1]), (3, 4));
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1290, "next-hop MTU of the smaller path");
    // Without DF: fragments of at most 1290.
    let s = send(&mut p.a, &mut p.b, &[udp4([10, 42, 1, 5], [10, 42, 2, 7], 2000, false)], p.now);
    assert_eq!(s.delivered.len(), 2);
    assert!(s.delivered.iter().all(|(_, f)| f.len() <= 1290));
    // SYNs to that peer are clamped to the smaller MTU: 1290 - 40.
    let s = send(&mut p.a, &mut p.b, &[syn4([10, 42, 1, 5], [10, 42, 2, 7], 1460)], p.now);
    let tcp = &s.delivered[0].1[20..];
    assert_eq!(u16::from_be_bytes([tcp[22], tcp[23]]), 1250);
    // The path grows back (or is larger than needed): the configured pod MTU again, never more.
    assert_eq!(p.a.pod.set_path_mtu(p.a.peer, 9000, Family::V4), 1370);
    let s = send(&mut p.a, &mut p.b, &[udp4([10, 42, 1, 5], [10, 42, 2, 7], 1370, true)], p.now);
    assert_eq!(s.delivered.len(), 1);
    // The same path over IPv6 costs 20 more bytes of outer header: 1400 - 80 - 50.
    assert_eq!(p.a.pod.set_path_mtu(p.a.peer, 1400, Family::V6), 1270);
    // The path belongs to the peer: removed and added again (same slot), it starts afresh.
    let key = p.a.pod.engine().device().peer_public_key(p.a.peer).unwrap();
    let allowed = p.a.pod.engine().allowed_ips(p.a.peer);
    assert!(p.a.pod.engine_mut().remove_peer(p.a.peer));
    let again = p.a.pod.engine_mut().add_peer(PeerConfig::new(key), &allowed).unwrap();
    assert_eq!(again, p.a.peer, "the slot is reused");
    assert_eq!(p.a.pod.pod_mtu_for(again), 1370);
}

/// A batch with everything the send path can meet, to the one remote node: pods in two CIDR
/// families, two destinations, a destination nobody routes, SYNs to clamp, too big with DF (ICMP),
/// too big without (fragments), not IP.
fn mixed_batch() -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    for i in 0..150 {
        packets.push(match i % 25 {
            3 => udp4([10, 42, 1, 5], [10, 42, 9, 1], 100, true),
            7 => udp6("fd42:1::5", "fd42:2::7", 300 + i),
            8 => udp4([10, 42, 1, 5], [10, 42, 2, 8], 200 + i, true),
            11 => syn4([10, 42, 1, 5], [10, 42, 2, 7], 1460),
            13 => udp4([10, 42, 1, 5], [10, 42, 2, 7], 1400, true),
            17 => udp4([10, 42, 1, 5], [10, 42, 2, 7], 2000, false),
            19 => vec![0u8; 40],
            _ => udp4([10, 42, 1, 5], [10, 42, 2, 7], 60 + 7 * i, true),
        });
    }
    packets
}

/// Sends `packets` one call each, as a reference for what one batch must do.
fn send_one_by_one(from: &mut Node, to: &mut Node, packets: &[Vec<u8>], now: Instant) -> Sent {
    let mut all = Sent { out: Vec::new(), icmp: Vec::new(), delivered: Vec::new() };
    for (slot, packet) in packets.iter().enumerate() {
        let s = send(from, to, std::slice::from_ref(packet), now);
        all.out.extend(s.out.into_iter().map(|o| PodOutgoing { slot, ..o }));
        all.icmp.extend(s.icmp.into_iter().map(|i| PodIcmp { slot, ..i }));
        all.delivered.extend(s.delivered);
    }
    all
}

#[test]
fn a_batch_does_what_its_packets_sent_one_by_one_do() {
    let packets = mixed_batch();
    let mut batched = pair(false);
    let mut single = pair(false);
    let b = send(&mut batched.a, &mut batched.b, &packets, batched.now);
    let s = send_one_by_one(&mut single.a, &mut single.b, &packets, single.now);
    assert_eq!(batched.a.pod.stats(), single.a.pod.stats(), "sender counters");
    assert_eq!(batched.b.pod.stats(), single.b.pod.stats(), "receiver counters");
    assert_eq!(b.icmp, s.icmp, "the same ICMP answers, by slot");
    let slots = |out: &[PodOutgoing]| out.iter().map(|o| (o.slot, o.range.len())).collect::<Vec<_>>();
    assert_eq!(slots(&b.out), slots(&s.out), "the same datagrams in place, by slot and length");
    // One batch delivers its fragments after the in-place datagrams, one by one each after its
    // own packet: the same packets either way.
    let sorted = |mut d: Vec<(Delivery, Vec<u8>)>| {
        d.sort_by(|x, y| x.1.cmp(&y.1));
        d
    };
    let want = sorted(s.delivered);
    assert_eq!(sorted(b.delivered), want, "the same packets delivered");
    let stats = batched.a.pod.stats();
    assert_eq!((stats.no_route, stats.malformed), (6, 6));
    assert_eq!((stats.too_big, stats.fragmented, stats.mss_clamped), (6, 6, 6));
    assert_eq!(b.out.len(), 150 - 4 * 6);
    assert_eq!(stats.packets_out, (150 - 4 * 6) + 2 * 6, "in place, and two fragments each");
    assert_eq!(batched.b.pod.stats().packets_in, stats.packets_out);

    // Before the handshake the whole batch is staged, then delivered: the same packets again
    // (100 of them: the protocol stages at most 128 packets per peer).
    let packets = &packets[..100];
    let mut single = pair(false);
    let want = sorted(send_one_by_one(&mut single.a, &mut single.b, packets, single.now).delivered);
    let mut staged = pair_with(false, 1, false);
    let b = send(&mut staged.a, &mut staged.b, packets, staged.now);
    assert!(b.out.is_empty());
    let stats = staged.a.pod.stats();
    assert_eq!((stats.staged, stats.packets_out), (4 * (21 + 2), 0));
    assert_eq!((stats.too_big, stats.fragmented, stats.mss_clamped), (4, 4, 4));
    let got = sorted(b.delivered);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "staged packets delivered after the handshake");
}

#[test]
fn runs_to_one_peer_share_one_block_of_counters_at_most_64_packets_long() {
    let mut p = pair(false);
    // 150 packets to one node, through both inner families: runs of 64, 64 and 22.
    let packets: Vec<Vec<u8>> = (0..150)
        .map(|i| {
            if i % 2 == 0 {
                udp4([10, 42, 1, 5], [10, 42, 2, 7], 100 + i, true)
            } else {
                udp6("fd42:1::5", "fd42:2::7", 100 + i)
            }
        })
        .collect();
    let (mut bufs, lens) = batch_of(&packets);
    let (mut jobs, mut icmp) = (Vec::new(), Vec::new());
    p.a.pod.plan_encapsulate_pod(&mut bufs, &lens, p.now, &mut jobs, &mut icmp);
    let runs: Vec<_> = jobs.iter().map(|j| (j.slots(), j.first_counter())).collect();
    let first = runs[0].1;
    assert_eq!(runs, vec![(0..64, first), (64..128, first + 64), (128..150, first + 128)]);
    let mut out = Vec::new();
    seal_pod_jobs(&mut bufs, &jobs, &mut out);
    assert_eq!(out.iter().map(|o| o.slot).collect::<Vec<_>>(), (0..150).collect::<Vec<_>>());
    // Each datagram carries its own counter, the run's first plus its place in the run.
    for o in &out {
        let message = &bufs[o.slot][o.range.clone()];
        let counter = u64::from_le_bytes(message[8..16].try_into().unwrap());
        assert_eq!(counter, first + o.slot as u64);
    }
    let mut wire: Vec<Vec<u8>> = out.iter().map(|o| bufs[o.slot][o.range.clone()].to_vec()).collect();
    let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
    let mut inc = Vec::new();
    p.b.pod.decapsulate_pod_batch(&mut wire, &lens, &vec![p.a.addr; 150], p.now, &mut inc);
    let got: Vec<Vec<u8>> = inc.iter().map(|i| wire[i.slot][i.range.clone()].to_vec()).collect();
    assert_eq!(got, packets);
    assert_eq!(p.a.pod.stats().packets_out, 150);

    // A packet to nowhere in the middle splits a run; the counters stay one block per run.
    let mut packets = packets[..10].to_vec();
    packets[4] = udp4([10, 42, 1, 5], [10, 42, 9, 1], 100, true);
    let (mut bufs, lens) = batch_of(&packets);
    jobs.clear();
    p.a.pod.plan_encapsulate_pod(&mut bufs, &lens, p.now, &mut jobs, &mut icmp);
    let runs: Vec<_> = jobs.iter().map(|j| (j.slots(), j.first_counter())).collect();
    assert_eq!(runs, vec![(0..4, first + 150), (5..10, first + 154)]);
}

#[test]
fn buffers_short_of_tailroom_are_checked_exactly() {
    let mut p = pair(false);
    // 110 + 50 outer octets = 160, a multiple of 16: no padding, so the tag alone must fit.
    let packet = udp4([10, 42, 1, 5], [10, 42, 2, 7], 110, true);
    let mut bufs = vec![vec![0u8; POD_HEADROOM + 110 + POD_TAILROOM]; 4];
    bufs[1].truncate(POD_HEADROOM + 110 + 16);
    bufs[2].truncate(POD_HEADROOM + 110 + 15);
    for b in &mut bufs {
        b[POD_HEADROOM..POD_HEADROOM + 110].copy_from_slice(&packet);
    }
    let (mut out, mut icmp) = (Vec::new(), Vec::new());
    p.a.pod.encapsulate_pod_batch(&mut bufs, &[110; 4], p.now, &mut out, &mut icmp);
    assert_eq!(out.iter().map(|o| o.slot).collect::<Vec<_>>(), vec![0, 1, 3], "exactly room for the tag is enough");
    assert_eq!(p.a.pod.stats().drop_count(PodDrop::Encapsulation), 1, "one octet short is not");
    assert_eq!(p.a.pod.stats().packets_out, 3);
    let mut wire: Vec<Vec<u8>> = out.iter().map(|o| bufs[o.slot][o.range.clone()].to_vec()).collect();
    let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
    let mut inc = Vec::new();
    p.b.pod.decapsulate_pod_batch(&mut wire, &lens, &[p.a.addr; 3], p.now, &mut inc);
    assert_eq!(inc.len(), 3);
    assert!(inc.iter().all(|i| wire[i.slot][i.range.clone()] == packet[..]));
}
