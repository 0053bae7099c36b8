use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::wire::checksum;
use crate::wire::ipv4::IpProtocol;

const V4_SRC: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 7);
const V4_DST: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 9);
const V4_GW: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

/// An IPv4 packet with `options` (a multiple of 4 long) and `payload`, checksum filled.
fn v4_packet(protocol: IpProtocol, dont_frag: bool, options: &[u8], payload: &[u8]) -> Vec<u8> {
    let header_len = 20 + options.len();
    let mut buf = vec![0u8; header_len + payload.len()];
    let repr = ipv4::Repr {
        src: V4_SRC,
        dst: V4_DST,
        protocol,
        payload_len: payload.len(),
        ttl: 61,
        dont_frag,
        dscp_ecn: 0x28,
        ident: 0xbeef,
    };
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut buf[..])).unwrap();
    // Move the header's tail behind the options.
    buf[header_len..].copy_from_slice(payload);
    buf[20..header_len].copy_from_slice(options);
    let mut p = ipv4::Packet::new_unchecked(&mut buf[..]);
    p.set_header_len(header_len);
    p.set_total_len((header_len + payload.len()) as u16);
    p.fill_checksum();
    buf
}

fn v6_packet(next_header: IpProtocol, src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; 40 + payload.len()];
    let repr = ipv6::Repr {
        src,
        dst,
        next_header,
        payload_len: payload.len(),
        hop_limit: 63,
        traffic_class: 0,
        flow_label: 0x12345,
    };
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut buf[..])).unwrap();
    buf[40..].copy_from_slice(payload);
    buf
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

// ---------------------------------------------------------------------------------------------
// Arithmetic

#[test]
fn overheads() {
    assert_eq!(wireguard_overhead(Family::V4), 60);
    assert_eq!(wireguard_overhead(Family::V6), 80);
    assert_eq!(vxlan_overhead(Family::V4), 50);
    assert_eq!(vxlan_overhead(Family::V6), 70);
}

/// The table of docs/mtu.md: (underlay MTU, underlay, VTEP, pod MTU).
const POD_TABLE: &[(u32, Family, Family, u32)] = &[
    (1280, Family::V4, Family::V4, 1170),
    (1280, Family::V4, Family::V6, 1150),
    (1280, Family::V6, Family::V4, 1150),
    (1280, Family::V6, Family::V6, 1130),
    (1420, Family::V4, Family::V4, 1310),
    (1420, Family::V4, Family::V6, 1290),
    (1420, Family::V6, Family::V4, 1290),
    (1420, Family::V6, Family::V6, 1270),
    (1500, Family::V4, Family::V4, 1390),
    (1500, Family::V4, Family::V6, 1370),
    (1500, Family::V6, Family::V4, 1370),
    (1500, Family::V6, Family::V6, 1350),
    (9000, Family::V4, Family::V4, 8890),
    (9000, Family::V4, Family::V6, 8870),
    (9000, Family::V6, Family::V4, 8870),
    (9000, Family::V6, Family::V6, 8850),
];

#[test]
fn pod_mtu_table() {
    for &(underlay_mtu, underlay, vtep, expected) in POD_TABLE {
        assert_eq!(pod_mtu(underlay_mtu, underlay, vtep), Ok(expected), "{underlay_mtu} {underlay} {vtep}");
        let v6_ok = expected >= 1280;
        assert_eq!(ensure_min(expected, Family::V6).is_ok(), v6_ok);
    }
}

#[test]
fn tunnel_mtu_table() {
    for (underlay_mtu, v4, v6) in [(1280, 1220, 1200), (1420, 1360, 1340), (1500, 1440, 1420), (9000, 8940, 8920)] {
        assert_eq!(tunnel_mtu(underlay_mtu, Family::V4), Ok(v4));
        assert_eq!(tunnel_mtu(underlay_mtu, Family::V6), Ok(v6));
    }
}

#[test]
fn floors() {
    assert_eq!(pod_mtu(0, Family::V6, Family::V6), Err(BelowMinimum { mtu: 0, family: Family::V4, minimum: 68 }));
    assert_eq!(pod_mtu(100, Family::V4, Family::V4), Err(BelowMinimum { mtu: 0, family: Family::V4, minimum: 68 }));
    assert_eq!(pod_mtu(177, Family::V4, Family::V4), Err(BelowMinimum { mtu: 67, family: Family::V4, minimum: 68 }));
    assert_eq!(pod_mtu(178, Family::V4, Family::V4), Ok(68));
    assert_eq!(tunnel_mtu(u32::MAX, Family::V6), Ok(u32::MAX - 80));
    assert_eq!(ensure_min(1279, Family::V6), Err(BelowMinimum { mtu: 1279, family: Family::V6, minimum: 1280 }));
    assert_eq!(ensure_min(1280, Family::V6), Ok(1280));
    assert_eq!(min_mtu(Family::V4), 68);
    assert_eq!(max_mss(1390, Family::V4), 1350);
    assert_eq!(max_mss(1350, Family::V6), 1290);
    assert_eq!(max_mss(30, Family::V6), 0);
    assert_eq!(max_mss(u32::MAX, Family::V4), u16::MAX);
    assert_eq!(Family::of(IpAddr::V6(Ipv6Addr::LOCALHOST)), Family::V6);
    assert_eq!(Family::V6.to_string(), "IPv6");
}

#[test]
fn padding_never_exceeds_the_underlay() {
    // A full-size plaintext (tunnel MTU) plus WireGuard overhead is exactly the underlay MTU, and
    // padding never grows a plaintext past the tunnel MTU.
    for underlay in [Family::V4, Family::V6] {
        let tunnel = tunnel_mtu(1500, underlay).unwrap() as usize;
        for len in tunnel - 40..=tunnel {
            let padded = crate::wireguard::session::padded_len(len, tunnel);
            assert!(padded + wireguard_overhead(underlay) <= 1500);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// check_size

#[test]
fn size_verdicts() {
    let small = v4_packet(IpProtocol::UDP, true, &[], &pattern(100));
    assert_eq!(check_size(&small, 120), SizeVerdict::Fits);
    assert_eq!(check_size(&small, 119), SizeVerdict::TooBig);
    let no_df = v4_packet(IpProtocol::UDP, false, &[], &pattern(100));
    assert_eq!(check_size(&no_df, 119), SizeVerdict::FragmentV4);
    let mut padded = small.clone();
    padded.extend_from_slice(&[0; 30]);
    assert_eq!(check_size(&padded, 120), SizeVerdict::Fits, "link padding does not count");
    let six = v6_packet(IpProtocol::UDP, v6("fd00::1"), v6("fd00::2"), &pattern(100));
    assert_eq!(check_size(&six, 140), SizeVerdict::Fits);
    assert_eq!(check_size(&six, 139), SizeVerdict::TooBig);
    assert_eq!(check_size(&six[..139], 1500), SizeVerdict::Malformed);
    assert_eq!(check_size(&[], 1500), SizeVerdict::Malformed);
    assert_eq!(check_size(&[0x55; 40], 1500), SizeVerdict::Malformed);
}

// ---------------------------------------------------------------------------------------------
// ICMP

/// Parses an ICMPv4 message back, checking both checksums; returns (header view data, ICMP).
fn parse_icmpv4(msg: &[u8]) -> (ipv4::Repr, Vec<u8>) {
    let p = ipv4::Packet::new_checked(msg).unwrap();
    assert_eq!(usize::from(p.total_len()), msg.len());
    let repr = ipv4::Repr::parse(&p).expect("header checksum verifies");
    let icmp = p.payload();
    assert_eq!(checksum::finish(checksum::sum(icmp)), 0, "ICMP checksum verifies");
    (repr, icmp.to_vec())
}

fn parse_icmpv6(msg: &[u8]) -> (ipv6::Repr, Vec<u8>) {
    let p = ipv6::Packet::new_checked(msg).unwrap();
    assert_eq!(p.total_len(), msg.len());
    let repr = ipv6::Repr::parse(&p).unwrap();
    let icmp = p.payload();
    let pseudo = checksum::pseudo_header_v6(repr.src, repr.dst, 58, icmp.len() as u32);
    assert_eq!(checksum::finish(checksum::combine(&[pseudo, checksum::sum(icmp)])), 0, "ICMPv6 checksum");
    (repr, icmp.to_vec())
}

#[test]
fn frag_needed_v4() {
    let options = [0x94, 0x04, 0x00, 0x00]; // Router Alert
    let packet = v4_packet(IpProtocol::TCP, true, &options, &pattern(1400));
    let mut out = [0u8; 200];
    let n = icmp_too_big(&packet, 1390, IpAddr::V4(V4_GW), &mut out).unwrap();
    assert_eq!(n, 20 + 8 + 24 + 8);
    let (repr, icmp) = parse_icmpv4(&out[..n]);
    assert_eq!((repr.src, repr.dst, repr.protocol, repr.ttl), (V4_GW, V4_SRC, IpProtocol::ICMP, 64));
    assert!(repr.dont_frag);
    assert_eq!(&icmp[..2], &[3, 4]);
    assert_eq!(&icmp[4..6], &[0, 0], "unused");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1390, "next-hop MTU");
    assert_eq!(&icmp[8..], &packet[..24 + 8], "quotes the header with options and 8 octets");

    // A tiny packet is quoted only up to its own length, not its link padding.
    let mut tiny = v4_packet(IpProtocol::UDP, true, &[], &[1, 2, 3]);
    tiny.extend_from_slice(&[0xee; 20]);
    let n = icmp_too_big(&tiny, 576, IpAddr::V4(V4_GW), &mut out).unwrap();
    let (_, icmp) = parse_icmpv4(&out[..n]);
    assert_eq!(&icmp[8..], &tiny[..23]);
}

#[test]
fn packet_too_big_v6() {
    let src = v6("fd00:10:244:1::7");
    let gw = v6("fd00:10:244:1::1");
    let packet = v6_packet(IpProtocol::TCP, src, v6("fd00:10:244:2::9"), &pattern(1460));
    let mut out = [0u8; 1500];
    let n = icmp_too_big(&packet, 1350, IpAddr::V6(gw), &mut out).unwrap();
    assert_eq!(n, 1280, "as much as fits in the minimum MTU");
    let (repr, icmp) = parse_icmpv6(&out[..n]);
    assert_eq!((repr.src, repr.dst, repr.next_header, repr.hop_limit), (gw, src, IpProtocol::ICMPV6, 64));
    assert_eq!(&icmp[..2], &[2, 0]);
    assert_eq!(u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]), 1350);
    assert_eq!(&icmp[8..], &packet[..1232]);

    // A shorter packet is quoted whole; the buffer check is exact.
    let short = v6_packet(IpProtocol::UDP, src, v6("ff02::1"), &pattern(300));
    let needed = 40 + 8 + short.len();
    assert_eq!(
        icmp_too_big(&short, 1280, IpAddr::V6(gw), &mut out[..needed - 1]),
        Err(Error::BufferTooSmall { needed, actual: needed - 1 })
    );
    let n = icmp_too_big(&short, 1280, IpAddr::V6(gw), &mut out[..needed]).unwrap();
    assert_eq!(n, needed, "PTB may answer a multicast destination");
    let (_, icmp) = parse_icmpv6(&out[..n]);
    assert_eq!(&icmp[8..], &short[..]);
}

#[test]
fn icmp_refusals() {
    let mut out = [0u8; 1500];
    let gw4 = IpAddr::V4(V4_GW);
    let gw6 = IpAddr::V6(v6("fd00::1"));

    // ICMP errors are never answered; queries are.
    let unreachable = v4_packet(IpProtocol::ICMP, true, &[], &[3, 1, 0, 0, 0, 0, 0, 0]);
    assert_eq!(icmp_too_big(&unreachable, 576, gw4, &mut out), Err(Error::IcmpError));
    let unknown = v4_packet(IpProtocol::ICMP, true, &[], &[77, 0, 0, 0]);
    assert_eq!(icmp_too_big(&unknown, 576, gw4, &mut out), Err(Error::IcmpError));
    let empty_icmp = v4_packet(IpProtocol::ICMP, true, &[], &[]);
    assert_eq!(icmp_too_big(&empty_icmp, 576, gw4, &mut out), Err(Error::IcmpError));
    let echo = v4_packet(IpProtocol::ICMP, true, &[], &[8, 0, 0, 0, 0, 1, 0, 1]);
    assert!(icmp_too_big(&echo, 576, gw4, &mut out).is_ok());

    // Non-first fragments are not answered; a first fragment is.
    let mut frag = v4_packet(IpProtocol::UDP, false, &[], &pattern(64));
    let mut p = ipv4::Packet::new_unchecked(&mut frag[..]);
    p.set_frag_offset(1480);
    p.fill_checksum();
    assert_eq!(icmp_too_big(&frag, 576, gw4, &mut out), Err(Error::NonFirstFragment));
    let mut p = ipv4::Packet::new_unchecked(&mut frag[..]);
    p.set_frag_offset(0);
    p.set_more_frags(true);
    p.fill_checksum();
    assert!(icmp_too_big(&frag, 576, gw4, &mut out).is_ok());

    // Non-unicast sources and IPv4 destinations.
    for (src, dst) in [
        (Ipv4Addr::UNSPECIFIED, V4_DST),
        (Ipv4Addr::BROADCAST, V4_DST),
        (Ipv4Addr::new(224, 0, 0, 5), V4_DST),
        (V4_SRC, Ipv4Addr::new(239, 1, 1, 1)),
        (V4_SRC, Ipv4Addr::BROADCAST),
    ] {
        let mut packet = v4_packet(IpProtocol::UDP, true, &[], &pattern(64));
        let mut p = ipv4::Packet::new_unchecked(&mut packet[..]);
        p.set_src_addr(src);
        p.set_dst_addr(dst);
        p.fill_checksum();
        assert_eq!(icmp_too_big(&packet, 576, gw4, &mut out), Err(Error::NotUnicast), "{src} -> {dst}");
    }
    for src in [Ipv6Addr::UNSPECIFIED, v6("ff02::1")] {
        let packet = v6_packet(IpProtocol::UDP, src, v6("fd00::2"), &pattern(64));
        assert_eq!(icmp_too_big(&packet, 1280, gw6, &mut out), Err(Error::NotUnicast));
    }

    // ICMPv6: errors (< 128) refused, informational answered, also behind extension headers.
    let (a, b) = (v6("fd00::7"), v6("fd00::9"));
    let error = v6_packet(IpProtocol::ICMPV6, a, b, &[1, 4, 0, 0, 0, 0, 0, 0]);
    assert_eq!(icmp_too_big(&error, 1280, gw6, &mut out), Err(Error::IcmpError));
    let echo = v6_packet(IpProtocol::ICMPV6, a, b, &[128, 0, 0, 0, 0, 1, 0, 1]);
    assert!(icmp_too_big(&echo, 1280, gw6, &mut out).is_ok());
    // Hop-by-Hop (8 octets) then Destination Options (16 octets) then an ICMPv6 error.
    let mut chained = vec![60, 0, 1, 4, 0, 0, 0, 0, 58, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    chained.extend_from_slice(&[2, 0, 0, 0, 0, 0, 5, 0]);
    let behind = v6_packet(IpProtocol::HOP_BY_HOP, a, b, &chained);
    assert_eq!(icmp_too_big(&behind, 1280, gw6, &mut out), Err(Error::IcmpError));
    *chained.last_mut().unwrap() = 0;
    chained[24] = 129; // echo reply
    let behind = v6_packet(IpProtocol::HOP_BY_HOP, a, b, &chained);
    assert!(icmp_too_big(&behind, 1280, gw6, &mut out).is_ok());
    // A chain running off the end is malformed.
    let cut = v6_packet(IpProtocol::HOP_BY_HOP, a, b, &chained[..12]);
    assert!(matches!(icmp_too_big(&cut, 1280, gw6, &mut out), Err(Error::Malformed(_))));
    // A non-first fragment of ICMPv6 cannot be classified: refused; of UDP: answered.
    let frag = |next: u8| v6_packet(IpProtocol::IPV6_FRAGMENT, a, b, &[next, 0, 0x05, 0xa8, 0, 0, 0, 1, 9, 9]);
    assert_eq!(icmp_too_big(&frag(58), 1280, gw6, &mut out), Err(Error::IcmpError));
    assert!(icmp_too_big(&frag(17), 1280, gw6, &mut out).is_ok());

    // Misuse.
    let udp4 = v4_packet(IpProtocol::UDP, true, &[], &pattern(64));
    let udp6 = v6_packet(IpProtocol::UDP, a, b, &pattern(64));
    assert_eq!(icmp_too_big(&udp4, 576, gw6, &mut out), Err(Error::FamilyMismatch));
    assert_eq!(icmp_too_big(&udp6, 1280, gw4, &mut out), Err(Error::FamilyMismatch));
    assert_eq!(icmp_too_big(&udp6, 1279, gw6, &mut out), Err(Error::MtuTooSmall { mtu: 1279, minimum: 1280 }));
    assert!(matches!(icmp_too_big(&udp4[..30], 576, gw4, &mut out), Err(Error::Malformed(_))));
    assert!(matches!(icmp_too_big(&[], 576, gw6, &mut out), Err(Error::Malformed(_))));
    assert_eq!(icmp_too_big(&udp4, 576, gw4, &mut out[..55]), Err(Error::BufferTooSmall { needed: 56, actual: 55 }));
}

// ---------------------------------------------------------------------------------------------
// Fragmentation

/// A test-only reassembler: checks that the fragments agree on the header fields, cover the
/// payload without gaps or overlap, and returns (first fragment's header, payload).
fn reassemble(fragments: &[Vec<u8>], mtu: usize) -> (Vec<u8>, Vec<u8>) {
    let mut payload = Vec::new();
    let mut first_header = Vec::new();
    let base = ipv4::Packet::new_checked(&fragments[0][..]).unwrap().frag_offset();
    for (i, frag) in fragments.iter().enumerate() {
        assert!(frag.len() <= mtu, "fragment {i} is {} > {mtu}", frag.len());
        let p = ipv4::Packet::new_checked(&frag[..]).unwrap();
        assert!(p.verify_checksum(), "fragment {i} header checksum");
        assert!(!p.dont_frag());
        assert_eq!(usize::from(p.total_len()), frag.len());
        assert_eq!(usize::from(p.frag_offset() - base), payload.len(), "fragment {i} offset");
        let last = i == fragments.len() - 1;
        if !last {
            assert!(p.more_frags(), "MF on fragment {i}");
            assert_eq!(p.payload().len() % 8, 0);
        }
        if i == 0 {
            first_header = frag[..p.header_len()].to_vec();
        } else {
            let first = ipv4::Packet::new_checked(&fragments[0][..]).unwrap();
            assert_eq!(
                (p.ident(), p.ttl(), p.protocol(), p.src_addr(), p.dst_addr(), p.dscp_ecn()),
                (first.ident(), first.ttl(), first.protocol(), first.src_addr(), first.dst_addr(), first.dscp_ecn())
            );
        }
        payload.extend_from_slice(p.payload());
    }
    (first_header, payload)
}

fn split(packet: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, Error> {
    let mut fragments = Vec::new();
    let mut scratch = vec![0u8; mtu.min(packet.len())];
    let n = fragment_v4(packet, mtu, &mut scratch, &mut |f: &[u8]| fragments.push(f.to_vec()))?;
    assert_eq!(n, fragments.len());
    Ok(fragments)
}

#[test]
fn fragments_reassemble() {
    let payload = pattern(3000);
    let packet = v4_packet(IpProtocol::UDP, false, &[], &payload);
    for mtu in [68, 69, 576, 1000, 1390, 1500, 2999, 3019, 3020, 9000] {
        let fragments = split(&packet, mtu).unwrap();
        let (header, reassembled) = reassemble(&fragments, mtu);
        assert_eq!(reassembled, payload, "mtu {mtu}");
        // Version/IHL, DSCP, Identification, TTL, Protocol and addresses are the original's.
        assert_eq!((&header[..2], &header[4..6], &header[8..10]), (&packet[..2], &packet[4..6], &packet[8..10]));
        assert_eq!(&header[12..20], &packet[12..20]);
        let last = ipv4::Packet::new_checked(&fragments[fragments.len() - 1][..]).unwrap();
        assert!(!last.more_frags());
        if mtu >= packet.len() {
            assert_eq!(fragments, vec![packet.clone()], "a packet that fits is passed whole");
        } else {
            let expected = payload.len().div_ceil((mtu - 20) & !7);
            assert_eq!(fragments.len(), expected, "mtu {mtu}");
        }
    }
}

#[test]
fn fragments_copy_only_copied_options() {
    // Router Alert (0x94, copied), NOP, Timestamp-like option 0x44 (not copied), EOL padding.
    let options = [0x94, 0x04, 0x00, 0x00, 0x01, 0x44, 0x06, 0x05, 0x00, 0x00, 0x00, 0x00];
    let payload = pattern(1000);
    let packet = v4_packet(IpProtocol::UDP, false, &options, &payload);
    let fragments = split(&packet, 300).unwrap();
    let (header, reassembled) = reassemble(&fragments, 300);
    assert_eq!(reassembled, payload);
    assert_eq!(&header[20..], &options, "the first fragment keeps every option");
    for frag in &fragments[1..] {
        let p = ipv4::Packet::new_checked(&frag[..]).unwrap();
        assert_eq!(p.options(), &[0x94, 0x04, 0x00, 0x00]);
    }
}

#[test]
fn refragmenting_a_fragment() {
    // The first half of a larger datagram (MF set, offset 0), and its second half (offset 1480):
    // split again, both keep their place and the MF of the whole.
    let payload = pattern(2000);
    let whole = v4_packet(IpProtocol::UDP, false, &[], &payload);
    let halves = split(&whole, 1500).unwrap();
    assert_eq!(halves.len(), 2);
    let mut all = Vec::new();
    for half in &halves {
        all.extend(split(half, 600).unwrap());
    }
    let (_, reassembled) = reassemble(&all, 600);
    assert_eq!(reassembled, payload);
    assert!(!ipv4::Packet::new_checked(&all[all.len() - 1][..]).unwrap().more_frags());
}

#[test]
fn fragmenter_refusals_and_resumption() {
    let df = v4_packet(IpProtocol::UDP, true, &[], &pattern(100));
    assert_eq!(Fragmenter::new(&df, 100).unwrap_err(), Error::DontFragment);
    assert_eq!(split(&df, 120).unwrap(), vec![df.clone()], "a DF packet that fits is passed whole");
    let packet = v4_packet(IpProtocol::UDP, false, &[], &pattern(100));
    assert_eq!(Fragmenter::new(&packet, 27).unwrap_err(), Error::MtuTooSmall { mtu: 27, minimum: 28 });
    assert!(matches!(Fragmenter::new(&packet[..50], 60), Err(Error::Malformed(_))));
    let bad_options = v4_packet(IpProtocol::UDP, false, &[0x94, 0x09, 0, 0], &pattern(100));
    assert!(matches!(Fragmenter::new(&bad_options, 60), Err(Error::Malformed(_))));
    let mut called = false;
    assert_eq!(
        fragment_v4(&packet, 60, &mut [0u8; 59], &mut |_: &[u8]| called = true),
        Err(Error::BufferTooSmall { needed: 60, actual: 59 })
    );
    assert!(!called);

    let mut f = Fragmenter::new(&packet, 60).unwrap();
    assert!(!f.fits());
    let mut small = [0u8; 10];
    assert_eq!(f.next_into(&mut small), Err(Error::BufferTooSmall { needed: 60, actual: 10 }));
    let mut buf = [0u8; 60];
    let mut fragments = Vec::new();
    while let Some(n) = f.next_into(&mut buf).unwrap() {
        fragments.push(buf[..n].to_vec());
    }
    assert_eq!(f.next_into(&mut buf), Ok(None));
    assert_eq!(reassemble(&fragments, 60).1, pattern(100));

    // An empty payload is produced once.
    let empty = v4_packet(IpProtocol::UDP, false, &[], &[]);
    assert_eq!(split(&empty, 68).unwrap(), vec![empty.clone()]);
}

// ---------------------------------------------------------------------------------------------
// MSS clamping

/// A TCP segment: ports, seq, ack, data offset, `flags`, window, checksum 0, `options`, `data`.
fn tcp_segment(flags: u8, options: &[u8], data: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut seg = vec![0x9c, 0x40, 0x01, 0xbb, 1, 2, 3, 4, 0, 0, 0, 0];
    seg.push((((20 + options.len()) / 4) as u8) << 4);
    seg.push(flags);
    seg.extend_from_slice(&[0xfa, 0xf0, 0, 0, 0, 0]);
    seg.extend_from_slice(options);
    seg.extend_from_slice(data);
    seg
}

fn tcp_checksum_ok(packet: &[u8]) -> bool {
    let (pseudo, tcp) = if packet[0] >> 4 == 4 {
        let p = ipv4::Packet::new_checked(packet).unwrap();
        let tcp = p.payload();
        (checksum::pseudo_header_v4(p.src_addr(), p.dst_addr(), 6, tcp.len() as u32), tcp)
    } else {
        let p = ipv6::Packet::new_checked(packet).unwrap();
        let tcp = p.payload();
        (checksum::pseudo_header_v6(p.src_addr(), p.dst_addr(), 6, tcp.len() as u32), tcp)
    };
    checksum::finish(checksum::combine(&[pseudo, checksum::sum(tcp)])) == 0
}

/// Fills the TCP checksum by full computation.
fn fill_tcp_checksum(packet: &mut [u8]) {
    let off = if packet[0] >> 4 == 4 { usize::from(packet[0] & 0x0f) * 4 } else { 40 };
    packet[off + 16..off + 18].fill(0);
    let sum = {
        let (pseudo, tcp) = if packet[0] >> 4 == 4 {
            let p = ipv4::Packet::new_checked(&*packet).unwrap();
            (checksum::pseudo_header_v4(p.src_addr(), p.dst_addr(), 6, p.payload().len() as u32), p.payload())
        } else {
            let p = ipv6::Packet::new_checked(&*packet).unwrap();
            (checksum::pseudo_header_v6(p.src_addr(), p.dst_addr(), 6, p.payload().len() as u32), p.payload())
        };
        checksum::finish(checksum::combine(&[pseudo, checksum::sum(tcp)]))
    };
    packet[off + 16..off + 18].copy_from_slice(&sum.to_be_bytes());
}

fn mss_of(packet: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([packet[at], packet[at + 1]])
}

#[test]
fn mss_clamp_v4_and_v6() {
    // MSS first (aligned), then NOP NOP SACK-permitted... and with the MSS at an odd offset.
    let aligned = [2, 4, 0x05, 0xb4, 1, 1, 4, 2];
    let odd = [1, 2, 4, 0x23, 0x28, 1, 4, 2]; // NOP, MSS 9000 at option offset 1
    for (options, mss_at) in [(&aligned, 22), (&odd, 23)] {
        let seg = tcp_segment(0x02, options, &[]);
        let mut v4 = v4_packet(IpProtocol::TCP, true, &[], &seg);
        fill_tcp_checksum(&mut v4);
        let mut v6p = v6_packet(IpProtocol::TCP, v6("fd00::7"), v6("fd00::9"), &seg);
        fill_tcp_checksum(&mut v6p);
        for (packet, ip_len) in [(&mut v4, 20), (&mut v6p, 40)] {
            assert!(tcp_checksum_ok(packet));
            let before = mss_of(packet, ip_len + mss_at);
            assert!(!clamp_tcp_mss(packet, before), "equal: unchanged");
            assert!(!clamp_tcp_mss(packet, before + 1), "smaller: unchanged");
            assert!(clamp_tcp_mss(packet, 1310));
            assert_eq!(mss_of(packet, ip_len + mss_at), 1310);
            assert!(tcp_checksum_ok(packet), "checksum after clamp (by full recomputation)");
            assert!(!clamp_tcp_mss(packet, 1310));
        }
    }
}

#[test]
fn mss_clamp_leaves_others_alone() {
    let options = [2, 4, 0x05, 0xb4];
    let ack = tcp_segment(0x10, &options, b"data");
    let mut packet = v4_packet(IpProtocol::TCP, true, &[], &ack);
    fill_tcp_checksum(&mut packet);
    let copy = packet.clone();
    assert!(!clamp_tcp_mss(&mut packet, 536), "not a SYN");
    assert_eq!(packet, copy);
    let mut udp = v4_packet(IpProtocol::UDP, true, &[], &tcp_segment(0x02, &options, &[]));
    assert!(!clamp_tcp_mss(&mut udp, 536), "not TCP");
    // A non-first fragment is not touched.
    let mut frag = v4_packet(IpProtocol::TCP, false, &[], &tcp_segment(0x02, &options, &[]));
    let mut p = ipv4::Packet::new_unchecked(&mut frag[..]);
    p.set_frag_offset(8);
    p.fill_checksum();
    assert!(!clamp_tcp_mss(&mut frag, 536));
    // Malformed options: a zero length, a length past the header, a truncated kind.
    for bad in [[2, 0, 5, 0xb4], [1, 1, 2, 9], [1, 1, 1, 2]] {
        let mut packet = v4_packet(IpProtocol::TCP, true, &[], &tcp_segment(0x02, &bad, &[]));
        let copy = packet.clone();
        assert!(!clamp_tcp_mss(&mut packet, 536));
        assert_eq!(packet, copy);
    }
    // A data offset beyond the segment.
    let mut seg = tcp_segment(0x02, &options, &[]);
    seg[12] = 0xf0;
    let mut packet = v4_packet(IpProtocol::TCP, true, &[], &seg);
    assert!(!clamp_tcp_mss(&mut packet, 536));
}

// ---------------------------------------------------------------------------------------------
// Robustness

/// Makes random bytes look like an IPv4 or IPv6 header whose lengths match the buffer, to get past
/// the first checks.
fn plausible(mut data: Vec<u8>, six: bool) -> Vec<u8> {
    if six {
        if data.len() >= 40 {
            data[0] = 0x60 | (data[0] & 0x0f);
            let len = (data.len() - 40) as u16;
            data[4..6].copy_from_slice(&len.to_be_bytes());
        }
    } else if data.len() >= 20 {
        let ihl = (usize::from(data[0] & 0x0f).max(5) * 4).min(data.len()) / 4;
        data[0] = 0x40 | ihl as u8;
        let len = data.len() as u16;
        data[2..4].copy_from_slice(&len.to_be_bytes());
    }
    data
}

fn exercise(data: &[u8], mtu: usize) {
    let _ = check_size(data, mtu);
    let mut out = [0u8; 1500];
    for src in [IpAddr::V4(V4_GW), IpAddr::V6(v6("fd00::1"))] {
        if let Ok(n) = icmp_too_big(data, mtu as u16, src, &mut out) {
            assert!(n <= 1280);
        }
    }
    let mut scratch = vec![0u8; mtu.min(data.len())];
    let mut total = 0;
    if fragment_v4(data, mtu, &mut scratch, &mut |f: &[u8]| {
        assert!(f.len() <= mtu.max(data.len().min(mtu)));
        total += 1;
    })
    .is_ok()
    {
        assert!(total >= 1);
    }
    let mut copy = data.to_vec();
    let _ = clamp_tcp_mss(&mut copy, (mtu as u16).wrapping_sub(40));
}

proptest! {
    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), mtu in 0usize..300) {
        exercise(&data, mtu);
    }

    #[test]
    fn plausible_headers_never_panic(
        data in proptest::collection::vec(any::<u8>(), 0..400),
        six in any::<bool>(),
        mtu in 0usize..500,
    ) {
        exercise(&plausible(data, six), mtu);
    }

    #[test]
    fn arithmetic_is_total(underlay_mtu in any::<u32>(), u6 in any::<bool>(), t6 in any::<bool>()) {
        let fam = |six| if six { Family::V6 } else { Family::V4 };
        let (underlay, vtep) = (fam(u6), fam(t6));
        let exact = i64::from(underlay_mtu) - wireguard_overhead(underlay) as i64 - vxlan_overhead(vtep) as i64;
        match pod_mtu(underlay_mtu, underlay, vtep) {
            Ok(mtu) => prop_assert_eq!(i64::from(mtu), exact),
            Err(e) => prop_assert!(exact < 68 && i64::from(e.mtu) == exact.max(0)),
        }
        let _ = (tunnel_mtu(underlay_mtu, underlay), max_mss(underlay_mtu, vtep), ensure_min(underlay_mtu, vtep));
    }

    #[test]
    fn random_fragmentation_reassembles(len in 0usize..2000, mtu in 68usize..1600, opts in 0usize..3) {
        let options: &[u8] = match opts { 0 => &[], 1 => &[0x94, 4, 0, 0], _ => &[0x07, 7, 4, 0, 0, 0, 0, 0] };
        let payload = pattern(len);
        let packet = v4_packet(IpProtocol::UDP, false, options, &payload);
        let fragments = split(&packet, mtu).unwrap();
        prop_assert_eq!(reassemble(&fragments, mtu).1, payload);
    }

    #[test]
    fn random_mss_clamp_keeps_checksum(
        data in proptest::collection::vec(any::<u8>(), 0..64),
        mss in any::<u16>(),
        max in any::<u16>(),
        nops in 0usize..4,
        six in any::<bool>(),
    ) {
        let mut options = vec![1u8; nops];
        options.extend_from_slice(&[2, 4]);
        options.extend_from_slice(&mss.to_be_bytes());
        options.resize(options.len().next_multiple_of(4), 0);
        let seg = tcp_segment(0x12, &options, &data);
        let mut packet = if six {
            v6_packet(IpProtocol::TCP, v6("2001:db8::7"), v6("2001:db8::9"), &seg)
        } else {
            v4_packet(IpProtocol::TCP, true, &[], &seg)
        };
        fill_tcp_checksum(&mut packet);
        let changed = clamp_tcp_mss(&mut packet, max);
        prop_assert_eq!(changed, mss > max);
        let ip_len = if six { 40 } else { 20 };
        prop_assert_eq!(mss_of(&packet, ip_len + 22 + nops), mss.min(max));
        prop_assert!(tcp_checksum_ok(&packet));
    }
}
