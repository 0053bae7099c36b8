//! Tests of the VTEP: framing parsed back with the `wire` views, responders, malformed input.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType, EthernetAddress};
use crate::wire::ipv4::{self, IpProtocol};
use crate::wire::vxlan::{Vni, DEFAULT_PORT};
use crate::wire::{ipv6, udp};

const POD_A: EthernetAddress = EthernetAddress([0x02, 0xaa, 0, 0, 0, 1]);
const POD_B: EthernetAddress = EthernetAddress([0x02, 0xbb, 0, 0, 0, 2]);
const V4_LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
const V4_REMOTE: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2));
const V6_LOCAL: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
const V6_REMOTE: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

fn vni(v: u32) -> Vni {
    Vni::new(v).unwrap()
}

/// An Ethernet + IPv4 + UDP frame between two pods with the given ports and payload.
fn inner_udp_frame(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let src = Ipv4Addr::new(10, 1, 0, 1);
    let dst = Ipv4Addr::new(10, 1, 0, 2);
    let mut f = vec![0u8; 14 + 20 + 8 + payload.len()];
    ethernet::Repr { src: POD_A, dst: POD_B, ethertype: EtherType::IPV4 }
        .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]))
        .unwrap();
    let ip = ipv4::Repr {
        src,
        dst,
        protocol: IpProtocol::UDP,
        payload_len: 8 + payload.len(),
        ttl: 64,
        dont_frag: false,
        dscp_ecn: 0,
        ident: 1,
    };
    ip.emit(&mut ipv4::Packet::new_unchecked(&mut f[14..])).unwrap();
    let mut d = udp::Packet::new_unchecked(&mut f[34..]);
    udp::Repr { src_port: sport, dst_port: dport, payload_len: payload.len() }.emit(&mut d).unwrap();
    d.payload_mut().copy_from_slice(payload);
    d.fill_checksum(src.into(), dst.into()).unwrap();
    f
}

/// `frame` placed after `headroom` octets of junk, as a caller would lay out its buffer.
fn with_headroom(frame: &[u8], headroom: usize) -> Vec<u8> {
    let mut buf = vec![0xa5u8; headroom];
    buf.extend_from_slice(frame);
    buf
}

/// Parses an outer packet with the wire views, checking every header and checksum, and returns
/// (UDP source port, VNI, inner frame).
fn parse_outer(packet: &[u8], local: IpAddr, remote: IpAddr) -> (u16, Vni, Vec<u8>) {
    let (udp_bytes, src, dst) = match (local, remote) {
        (IpAddr::V4(_), _) => {
            let ip = ipv4::Packet::new_checked(packet).unwrap();
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            let repr = ipv4::Repr::parse(&ip).unwrap();
            assert_eq!((repr.ttl, repr.dont_frag, repr.protocol), (64, true, IpProtocol::UDP));
            assert_eq!(repr.buffer_len(), packet.len());
            (ip.payload(), IpAddr::V4(repr.src), IpAddr::V4(repr.dst))
        }
        (IpAddr::V6(_), _) => {
            let ip = ipv6::Packet::new_checked(packet).unwrap();
            let repr = ipv6::Repr::parse(&ip).unwrap();
            assert_eq!((repr.hop_limit, repr.next_header), (64, IpProtocol::UDP));
            assert_eq!(repr.buffer_len(), packet.len());
            (ip.payload(), IpAddr::V6(repr.src), IpAddr::V6(repr.dst))
        }
    };
    assert_eq!((src, dst), (local, remote));
    let datagram = udp::Packet::new_checked(udp_bytes).unwrap();
    if src.is_ipv4() {
        assert_eq!(datagram.checksum(), 0, "none over IPv4 (RFC 7348: SHOULD be zero)");
    } else {
        assert_ne!(datagram.checksum(), 0, "computed over IPv6");
        assert!(datagram.verify_checksum(src, dst));
    }
    let repr = udp::Repr::parse(&datagram, src, dst).unwrap();
    assert_eq!(repr.dst_port, DEFAULT_PORT);
    assert!(SOURCE_PORT_RANGE.contains(&repr.src_port));
    let vx = crate::wire::vxlan::Packet::new_checked(datagram.payload()).unwrap();
    assert_eq!(vx.as_ref()[0], 0x08, "only the I flag");
    (repr.src_port, vx.vni(), vx.payload().to_vec())
}

#[test]
fn round_trip_over_v4_and_v6() {
    let frame = inner_udp_frame(1234, 53, b"hello, vtep");
    for (local, remote, headroom) in [(V4_LOCAL, V4_REMOTE, HEADROOM_V4), (V6_LOCAL, V6_REMOTE, HEADROOM_V6)] {
        for extra in [0, 3] {
            let mut buf = with_headroom(&frame, headroom + extra);
            buf.extend_from_slice(&[0xee; 5]); // tailroom is left alone
            let range =
                encapsulate(&mut buf, headroom + extra, frame.len(), vni(42), local, remote, DEFAULT_PORT).unwrap();
            assert_eq!(range, extra..headroom + extra + frame.len());
            assert!(buf[..extra].iter().all(|&b| b == 0xa5), "nothing written before the packet");
            assert_eq!(&buf[range.end..], &[0xee; 5]);
            let packet = &buf[range];
            let (sport, got_vni, inner) = parse_outer(packet, local, remote);
            assert_eq!(got_vni, vni(42));
            assert_eq!(inner, frame);
            assert_eq!(sport, source_port(flow_hash(&frame)));

            let d = decapsulate(packet, DEFAULT_PORT).unwrap();
            assert_eq!(d.vni, vni(42));
            assert_eq!(d.outer_src, local);
            assert_eq!(d.outer_src_port, sport);
            assert_eq!(&packet[d.inner], &frame[..]);
        }
    }
}

#[test]
fn v6_flow_label_comes_from_the_flow_hash() {
    let frame = inner_udp_frame(1, 2, b"x");
    let mut buf = with_headroom(&frame, HEADROOM_V6);
    let r = encapsulate(&mut buf, HEADROOM_V6, frame.len(), vni(1), V6_LOCAL, V6_REMOTE, DEFAULT_PORT).unwrap();
    let ip = ipv6::Packet::new_checked(&buf[r]).unwrap();
    assert_eq!(ip.flow_label(), flow_hash(&frame) & ipv6::MAX_FLOW_LABEL);
}

#[test]
fn vxlan_only_layer_round_trips() {
    let frame = inner_udp_frame(1, 2, b"abc");
    let mut buf = with_headroom(&frame, 8);
    let r = encapsulate_vxlan(&mut buf, 8, frame.len(), vni(0x00ab_cdef)).unwrap();
    assert_eq!(r, 0..8 + frame.len());
    assert_eq!(&buf[..8], &[0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
    let (v, inner) = decapsulate_vxlan(&buf).unwrap();
    assert_eq!(v, vni(0x00ab_cdef));
    assert_eq!(&buf[inner], &frame[..]);
    assert_eq!(encapsulate_vxlan(&mut buf, 7, frame.len(), vni(1)), Err(Error::Headroom { needed: 8, actual: 7 }));
}

#[test]
fn source_port_is_stable_per_flow_and_spreads_flows() {
    let port = |sport: u16, payload: &[u8]| source_port(flow_hash(&inner_udp_frame(sport, 80, payload)));
    // The same flow gets the same port whatever the payload.
    assert_eq!(port(40000, b"a"), port(40000, b"a different and longer payload"));
    // Different flows (here: only the inner source port differs) get different ports.
    let ports: std::collections::HashSet<u16> = (0..256).map(|i| port(40000 + i, b"a")).collect();
    assert!(ports.len() > 240, "only {} distinct ports for 256 flows", ports.len());
    assert!(ports.iter().all(|p| SOURCE_PORT_RANGE.contains(p)));
    // The mapping covers the whole range.
    assert_eq!(source_port(0), 49152);
    assert!((0..=u32::MAX).step_by(65_537).map(source_port).all(|p| p >= 49152));
    let max = (0..u32::MAX).step_by(4093).map(source_port).max().unwrap();
    assert!(max > 65_500, "max {max}");
}

#[test]
fn encapsulate_rejects_misuse_and_leaves_the_buffer_alone() {
    let frame = inner_udp_frame(1, 2, b"abc");
    let mut buf = with_headroom(&frame, HEADROOM_V4);
    let orig = buf.clone();
    let n = frame.len();
    let h = HEADROOM_V4;
    let p = DEFAULT_PORT;
    assert_eq!(encapsulate(&mut buf, h, n, vni(1), V4_LOCAL, V6_REMOTE, p), Err(Error::MixedFamilies));
    assert_eq!(encapsulate(&mut buf, h, n + 1, vni(1), V4_LOCAL, V4_REMOTE, p), Err(Error::FrameOutOfBounds));
    assert_eq!(encapsulate(&mut buf, usize::MAX, 2, vni(1), V4_LOCAL, V4_REMOTE, p), Err(Error::FrameOutOfBounds));
    assert_eq!(
        encapsulate(&mut buf, h, n, vni(1), V6_LOCAL, V6_REMOTE, p),
        Err(Error::Headroom { needed: HEADROOM_V6, actual: h })
    );
    assert_eq!(
        encapsulate(&mut buf, h, 13, vni(1), V4_LOCAL, V4_REMOTE, p),
        Err(Error::Wire(crate::wire::Error::Truncated { needed: 14, actual: 13 }))
    );
    assert_eq!(buf, orig);
    // The largest frames that fit, and one octet more.
    let mut big = vec![0u8; HEADROOM_V6 + 65_536];
    let max_v4 = 65_535 - HEADROOM_V4;
    assert!(encapsulate(&mut big, HEADROOM_V4, max_v4, vni(1), V4_LOCAL, V4_REMOTE, p).is_ok());
    assert_eq!(encapsulate(&mut big, HEADROOM_V4, max_v4 + 1, vni(1), V4_LOCAL, V4_REMOTE, p), Err(Error::TooLarge));
    let max_v6 = 65_535 - 16;
    let r = encapsulate(&mut big, HEADROOM_V6, max_v6, vni(1), V6_LOCAL, V6_REMOTE, p).unwrap();
    assert_eq!(decapsulate(&big[r], p).map(|d| d.inner.len()), Ok(max_v6));
    assert_eq!(encapsulate(&mut big, HEADROOM_V6, max_v6 + 1, vni(1), V6_LOCAL, V6_REMOTE, p), Err(Error::TooLarge));
}

fn encapsulated(local: IpAddr, remote: IpAddr) -> Vec<u8> {
    let frame = inner_udp_frame(7, 8, b"payload");
    let h = if local.is_ipv4() { HEADROOM_V4 } else { HEADROOM_V6 };
    let mut buf = with_headroom(&frame, h);
    encapsulate(&mut buf, h, frame.len(), vni(9), local, remote, DEFAULT_PORT).unwrap();
    buf
}

#[test]
fn decapsulate_validates_every_layer() {
    use crate::wire::Error as W;
    let mut v4 = encapsulated(V4_LOCAL, V4_REMOTE);
    // vxwg sends none over IPv4, but a peer may (Linux with `udpcsum`): it must be checked.
    udp::Packet::new_unchecked(&mut v4[20..]).fill_checksum(V4_LOCAL, V4_REMOTE).unwrap();
    let v6 = encapsulated(V6_LOCAL, V6_REMOTE);
    assert_eq!(decapsulate(&v4, 4789), Err(Error::WrongPort(DEFAULT_PORT)));
    assert_eq!(decapsulate(&v6, 4789), Err(Error::WrongPort(DEFAULT_PORT)));
    assert_eq!(decapsulate(&[], DEFAULT_PORT), Err(Error::Wire(W::Truncated { needed: 1, actual: 0 })));
    assert_eq!(decapsulate(&[0x50], DEFAULT_PORT), Err(Error::Wire(W::Malformed { field: "version" })));

    // IPv4 header checksum.
    let mut b = v4.clone();
    b[8] = 63;
    assert_eq!(decapsulate(&b, DEFAULT_PORT), Err(Error::Wire(W::Checksum)));
    // Not UDP.
    let mut b = v4.clone();
    b[9] = 6;
    ipv4::Packet::new_unchecked(&mut b[..]).fill_checksum();
    assert_eq!(decapsulate(&b, DEFAULT_PORT), Err(Error::NotUdp));
    let mut b = v6.clone();
    b[6] = 0; // hop-by-hop extension header: not followed
    assert_eq!(decapsulate(&b, DEFAULT_PORT), Err(Error::NotUdp));
    // UDP checksum, over both families; a zero checksum is "none" over IPv4 only.
    for (packet, ip_len) in [(&v4, 20), (&v6, 40)] {
        let mut b = packet.clone();
        let last = b.len() - 1;
        b[last] ^= 1;
        assert_eq!(decapsulate(&b, DEFAULT_PORT), Err(Error::Wire(W::Checksum)));
        let mut b = packet.clone();
        b[ip_len + 6..ip_len + 8].fill(0);
        assert_eq!(decapsulate(&b, DEFAULT_PORT).is_ok(), ip_len == 20);
    }
    // VXLAN I flag (checksum refilled so that the VXLAN layer is what fails).
    for (packet, local, remote, ip_len) in [(&v4, V4_LOCAL, V4_REMOTE, 20), (&v6, V6_LOCAL, V6_REMOTE, 40)] {
        let mut b = packet.clone();
        b[ip_len + 8] = 0;
        udp::Packet::new_unchecked(&mut b[ip_len..]).fill_checksum(local, remote).unwrap();
        assert_eq!(decapsulate(&b, DEFAULT_PORT), Err(Error::Wire(W::Malformed { field: "flags" })));
    }
    // Octets past IPv4 Total Length (Ethernet padding) are not part of the inner frame.
    let mut b = v4.clone();
    b.extend_from_slice(&[0; 4]);
    assert_eq!(decapsulate(&b, DEFAULT_PORT).unwrap().inner.end, v4.len());
    // Truncation at every length.
    for packet in [&v4, &v6] {
        for len in 0..packet.len() {
            assert!(decapsulate(&packet[..len], DEFAULT_PORT).is_err(), "len {len}");
        }
    }
}

#[test]
fn decapsulate_vxlan_requires_an_ethernet_header() {
    let mut b = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    b.extend_from_slice(&[0; 13]);
    assert!(decapsulate_vxlan(&b).is_err());
    b.push(0);
    assert_eq!(decapsulate_vxlan(&b), Ok((vni(42), 8..22)));
}

// ---- ARP ----

fn arp_request(sender_ip: Ipv4Addr, target_ip: Ipv4Addr, op: arp::Operation) -> Vec<u8> {
    let mut f = vec![0u8; 42];
    ethernet::Repr { src: POD_A, dst: EthernetAddress::BROADCAST, ethertype: EtherType::ARP }
        .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]))
        .unwrap();
    arp::Repr { operation: op, sender_hw: POD_A, sender_ip, target_hw: EthernetAddress([0; 6]), target_ip }
        .emit(&mut f[14..])
        .unwrap();
    f
}

fn fdb_with_neighbours() -> Fdb {
    let mut fdb = Fdb::new();
    fdb.insert_neighbour(vni(42), "10.1.0.2".parse().unwrap(), POD_B);
    fdb.insert_neighbour(vni(42), "fd00::2".parse().unwrap(), POD_B);
    fdb
}

#[test]
fn arp_request_for_a_known_neighbour_is_answered() {
    let fdb = fdb_with_neighbours();
    let (a, b) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2));
    let req = arp_request(a, b, arp::Operation::REQUEST);
    let mut out = [0u8; 64];
    let n = answer_arp(&req, &fdb, vni(42), &mut out).unwrap();
    assert_eq!(n, responder::ARP_REPLY_LEN);
    let eth = ethernet::Frame::new_checked(&out[..n]).unwrap();
    assert_eq!(
        ethernet::Repr::parse(&eth).unwrap(),
        ethernet::Repr { src: POD_B, dst: POD_A, ethertype: EtherType::ARP }
    );
    let reply = arp::Repr::parse(&arp::Packet::new_checked(eth.payload()).unwrap()).unwrap();
    assert_eq!(
        reply,
        arp::Repr { operation: arp::Operation::REPLY, sender_hw: POD_B, sender_ip: b, target_hw: POD_A, target_ip: a }
    );
}

#[test]
fn arp_is_not_answered_for_unknown_targets_or_non_requests() {
    let fdb = fdb_with_neighbours();
    let (a, b) = (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 2));
    let mut out = [0u8; 64];
    let unknown = arp_request(a, Ipv4Addr::new(10, 1, 0, 3), arp::Operation::REQUEST);
    assert_eq!(answer_arp(&unknown, &fdb, vni(42), &mut out), None);
    let req = arp_request(a, b, arp::Operation::REQUEST);
    assert_eq!(answer_arp(&req, &fdb, vni(43), &mut out), None, "other VNI");
    assert_eq!(answer_arp(&req, &fdb, vni(42), &mut out[..41]), None, "out too small");
    assert_eq!(answer_arp(&arp_request(a, b, arp::Operation::REPLY), &fdb, vni(42), &mut out), None);
    assert_eq!(answer_arp(&arp_request(b, b, arp::Operation::REQUEST), &fdb, vni(42), &mut out), None, "gratuitous");
    let mut not_arp = req.clone();
    not_arp[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(answer_arp(&not_arp, &fdb, vni(42), &mut out), None);
    assert_eq!(answer_arp(&req[..41], &fdb, vni(42), &mut out), None);
    assert_eq!(out, [0u8; 64], "nothing written without an answer");
}

// ---- NDP ----

fn icmpv6_valid(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> bool {
    let pseudo = checksum::pseudo_header_v6(src, dst, 58, icmp.len() as u32);
    checksum::finish(checksum::combine(&[pseudo, checksum::sum(icmp)])) == 0
}

/// A Neighbor Solicitation for `target` from `src` (with a source link-layer address option
/// unless `src` is unspecified), to the solicited-node multicast address.
fn neighbor_solicitation(src: Ipv6Addr, target: Ipv6Addr, options: &[u8]) -> Vec<u8> {
    let t = target.octets();
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(t[13]), u16::from_be_bytes([t[14], t[15]]));
    let icmp_len = 24 + options.len();
    let mut f = vec![0u8; 14 + 40 + icmp_len];
    ethernet::Repr {
        src: POD_A,
        dst: EthernetAddress([0x33, 0x33, 0xff, t[13], t[14], t[15]]),
        ethertype: EtherType::IPV6,
    }
    .emit(&mut ethernet::Frame::new_unchecked(&mut f[..]))
    .unwrap();
    ipv6::Repr {
        src,
        dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: icmp_len,
        hop_limit: 255,
        traffic_class: 0,
        flow_label: 0,
    }
    .emit(&mut ipv6::Packet::new_unchecked(&mut f[14..]))
    .unwrap();
    let icmp = &mut f[54..];
    icmp[0] = 135;
    icmp[8..24].copy_from_slice(&t);
    icmp[24..].copy_from_slice(options);
    let pseudo = checksum::pseudo_header_v6(src, dst, 58, icmp_len as u32);
    let sum = checksum::finish(checksum::combine(&[pseudo, checksum::sum(icmp)]));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    f
}

const SLLA: [u8; 8] = [1, 1, 0x02, 0xaa, 0, 0, 0, 1];

/// Parses an advertisement: (eth dst, IPv6 dst, flags octet), checking everything else.
fn parse_na(frame: &[u8], target: Ipv6Addr) -> (EthernetAddress, Ipv6Addr, u8) {
    let eth = ethernet::Frame::new_checked(frame).unwrap();
    assert_eq!((eth.src_addr(), eth.ethertype()), (POD_B, EtherType::IPV6));
    let ip = ipv6::Packet::new_checked(eth.payload()).unwrap();
    let repr = ipv6::Repr::parse(&ip).unwrap();
    assert_eq!((repr.hop_limit, repr.next_header, repr.src), (255, IpProtocol::ICMPV6, target));
    let icmp = ip.payload();
    assert_eq!(icmp.len(), 32);
    assert!(icmpv6_valid(repr.src, repr.dst, icmp), "ICMPv6 checksum");
    assert_eq!((icmp[0], icmp[1]), (136, 0));
    assert_eq!(&icmp[5..8], &[0, 0, 0]);
    assert_eq!(&icmp[8..24], &target.octets());
    assert_eq!(&icmp[24..26], &[2, 1], "target link-layer address option");
    assert_eq!(&icmp[26..32], &POD_B.0);
    (eth.dst_addr(), repr.dst, icmp[4])
}

#[test]
fn neighbor_solicitation_for_a_known_target_is_answered() {
    let fdb = fdb_with_neighbours();
    let src: Ipv6Addr = "fd00::1".parse().unwrap();
    let target: Ipv6Addr = "fd00::2".parse().unwrap();
    let mut out = [0u8; 128];
    // With a source link-layer address option: unicast to it, Solicited and Override.
    let ns = neighbor_solicitation(src, target, &SLLA);
    let n = answer_ndp(&ns, &fdb, vni(42), &mut out).unwrap();
    assert_eq!(n, responder::NA_FRAME_LEN);
    assert_eq!(parse_na(&out[..n], target), (POD_A, src, 0x60));
    // Without one (allowed for unicast NS): to the frame's source MAC; unknown options skipped.
    let ns = neighbor_solicitation(src, target, &[14, 1, 0, 0, 0, 0, 0, 0]);
    let n = answer_ndp(&ns, &fdb, vni(42), &mut out).unwrap();
    assert_eq!(parse_na(&out[..n], target), (POD_A, src, 0x60));
    // Duplicate address detection: to all-nodes, not Solicited.
    let ns = neighbor_solicitation(Ipv6Addr::UNSPECIFIED, target, &[]);
    let n = answer_ndp(&ns, &fdb, vni(42), &mut out).unwrap();
    let all_nodes: Ipv6Addr = "ff02::1".parse().unwrap();
    assert_eq!(parse_na(&out[..n], target), (EthernetAddress([0x33, 0x33, 0, 0, 0, 1]), all_nodes, 0x20));
}

#[test]
fn invalid_or_unknown_solicitations_get_no_answer() {
    let fdb = fdb_with_neighbours();
    let src: Ipv6Addr = "fd00::1".parse().unwrap();
    let target: Ipv6Addr = "fd00::2".parse().unwrap();
    let mut out = [0u8; 128];
    let good = neighbor_solicitation(src, target, &SLLA);
    assert!(answer_ndp(&good, &fdb, vni(42), &mut out).is_some());
    let none = |frame: &[u8], why: &str| {
        let mut out = [0u8; 128];
        assert_eq!(answer_ndp(frame, &fdb, vni(42), &mut out), None, "{why}");
        assert_eq!(out, [0u8; 128], "{why}: nothing written");
    };
    none(&neighbor_solicitation(src, "fd00::3".parse().unwrap(), &SLLA), "unknown target");
    none(&neighbor_solicitation(src, "ff02::2".parse().unwrap(), &SLLA), "multicast target");
    none(&neighbor_solicitation(Ipv6Addr::UNSPECIFIED, target, &SLLA), "DAD with SLLA");
    none(&neighbor_solicitation(src, target, &[1, 0, 0, 0, 0, 0, 0, 0]), "zero-length option");
    none(&neighbor_solicitation(src, target, &[1, 2, 0, 0, 0, 0, 0, 0]), "option past the end");
    let mut b = good.clone();
    b[54 + 2] ^= 1;
    none(&b, "bad checksum");
    let mut b = good.clone();
    b[14 + 7] = 254;
    none(&b, "hop limit below 255");
    let mut b = good.clone();
    b[54 + 1] = 1;
    none(&b, "code 1");
    let mut b = good.clone();
    b[54] = 136;
    none(&b, "an advertisement");
    for len in 0..good.len() {
        none(&good[..len], "truncated");
    }
    assert_eq!(answer_ndp(&good, &fdb, vni(7), &mut out), None, "other VNI");
    assert_eq!(answer_ndp(&good, &fdb, vni(42), &mut out[..85]), None, "out too small");
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), port in any::<u16>()) {
            let fdb = fdb_with_neighbours();
            let mut out = [0u8; 128];
            let _ = decapsulate(&data, port);
            let _ = decapsulate_vxlan(&data);
            let _ = answer_arp(&data, &fdb, vni(42), &mut out);
            let _ = answer_ndp(&data, &fdb, vni(42), &mut out);
            let _ = flow_hash(&data);
            let _ = arp::Packet::new_checked(&data[..]).map(|p| arp::Repr::parse(&p));
        }

        #[test]
        fn mutated_packets_never_panic(flip in any::<(usize, u8)>(), v6 in any::<bool>()) {
            let mut b = if v6 { encapsulated(V6_LOCAL, V6_REMOTE) } else { encapsulated(V4_LOCAL, V4_REMOTE) };
            let i = flip.0 % b.len();
            b[i] ^= flip.1;
            if let Ok(d) = decapsulate(&b, DEFAULT_PORT) {
                prop_assert!(d.inner.end <= b.len());
            }
        }

        #[test]
        fn encapsulate_never_panics(len in 0usize..120, start in 0usize..120, frame_len in 0usize..120, v6 in any::<bool>()) {
            let mut buf = vec![0u8; len];
            let (l, r) = if v6 { (V6_LOCAL, V6_REMOTE) } else { (V4_LOCAL, V4_REMOTE) };
            if let Ok(range) = encapsulate(&mut buf, start, frame_len, vni(5), l, r, DEFAULT_PORT) {
                let d = decapsulate(&buf[range.clone()], DEFAULT_PORT).unwrap();
                prop_assert_eq!(d.inner.len(), frame_len);
            }
        }

        #[test]
        fn round_trip_any_frame(frame in proptest::collection::vec(any::<u8>(), 14..300), v in 0u32..(1 << 24),
                                v6 in any::<bool>(), port in any::<u16>()) {
            let (l, r, h) = if v6 { (V6_LOCAL, V6_REMOTE, HEADROOM_V6) } else { (V4_LOCAL, V4_REMOTE, HEADROOM_V4) };
            let mut buf = with_headroom(&frame, h);
            let range = encapsulate(&mut buf, h, frame.len(), vni(v), l, r, port).unwrap();
            let d = decapsulate(&buf[range.clone()], port).unwrap();
            prop_assert_eq!(d.vni, vni(v));
            prop_assert_eq!(&buf[range][d.inner], &frame[..]);
        }
    }
}
