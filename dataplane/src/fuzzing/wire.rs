//! Fuzz entry points for the wire formats in [`crate::wire`].
//!
//! Each function parses arbitrary bytes with `new_checked` and `Repr::parse`; when that succeeds
//! it emits the `Repr` (and the payload) into a fresh buffer, parses that again and asserts that
//! the same `Repr` and payload come back. The assertions are the invariants under test; nothing
//! else may panic. Layers are chained where the outer header says what the inner one is, so that
//! one input exercises several parsers: Ethernet → IPv4/IPv6, IPv4/IPv6 → UDP, VXLAN → Ethernet.

use core::net::{IpAddr, Ipv4Addr};

use crate::wire;
use crate::wire::ipv4::IpProtocol;

/// Addresses for a bare UDP datagram (an input that is not an IP packet carrying UDP).
const BARE_UDP_SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const BARE_UDP_DST: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));

/// An Ethernet II frame; an IPv4 or IPv6 payload goes on to [`ipv4`] or [`ipv6`].
pub fn ethernet(data: &[u8]) {
    let Ok(frame) = wire::ethernet::Frame::new_checked(data) else {
        return;
    };
    let repr = wire::ethernet::Repr::parse(&frame).expect("parse fails on a checked frame");
    let payload = frame.payload();

    let mut buf = vec![0u8; repr.header_len() + payload.len()];
    let mut out = wire::ethernet::Frame::new_unchecked(&mut buf[..]);
    repr.emit(&mut out).expect("emit into a buffer of the right size");
    out.payload_mut().copy_from_slice(payload);
    let back = wire::ethernet::Frame::new_checked(&buf[..]).expect("emitted frame does not check");
    assert_eq!(wire::ethernet::Repr::parse(&back), Ok(repr));
    assert_eq!(back.payload(), payload);
    assert_eq!(&buf[..], data, "Ethernet re-emit is not byte-identical");

    match repr.ethertype {
        wire::ethernet::EtherType::IPV4 => ipv4(payload),
        wire::ethernet::EtherType::IPV6 => ipv6(payload),
        _ => {}
    }
}

/// An IPv4 packet. The checksum is checked for consistency but not required, so that the fuzzer
/// reaches the rest of the parser; the re-emitted header must verify.
pub fn ipv4(data: &[u8]) {
    let Ok(packet) = wire::ipv4::Packet::new_checked(data) else {
        return;
    };
    let _ = packet.options();
    let verified = packet.verify_checksum();
    let checked = wire::ipv4::Repr::parse(&packet);
    let repr = match wire::ipv4::Repr::parse_ignoring_checksum(&packet) {
        Ok(repr) => repr,
        Err(err) => {
            assert!(packet.is_fragment(), "checked packet rejected: {err:?}");
            assert!(checked.is_err());
            return;
        }
    };
    assert_eq!(checked.is_ok(), verified, "parse disagrees with verify_checksum");
    let payload = packet.payload();
    assert_eq!(repr.payload_len, payload.len());

    let mut buf = vec![0u8; repr.buffer_len()];
    let mut out = wire::ipv4::Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut out).expect("emit of a parsed repr");
    out.payload_mut().copy_from_slice(payload);
    let back = wire::ipv4::Packet::new_checked(&buf[..]).expect("emitted packet does not check");
    assert_eq!(wire::ipv4::Repr::parse(&back), Ok(repr));
    assert_eq!(back.payload(), payload);
}

/// An IPv6 packet (fixed header only).
pub fn ipv6(data: &[u8]) {
    let Ok(packet) = wire::ipv6::Packet::new_checked(data) else {
        return;
    };
    let repr = wire::ipv6::Repr::parse(&packet).expect("parse fails on a checked packet");
    let payload = packet.payload();
    assert_eq!(repr.payload_len, payload.len());

    let mut buf = vec![0u8; repr.buffer_len()];
    let mut out = wire::ipv6::Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut out).expect("emit of a parsed repr");
    out.payload_mut().copy_from_slice(payload);
    let back = wire::ipv6::Packet::new_checked(&buf[..]).expect("emitted packet does not check");
    assert_eq!(wire::ipv6::Repr::parse(&back), Ok(repr));
    assert_eq!(back.payload(), payload);
    assert_eq!(&buf[..], &data[..repr.buffer_len()], "IPv6 re-emit is not byte-identical");
}

/// A UDP datagram. If `data` is an unfragmented IPv4 or IPv6 packet whose protocol is UDP, the
/// datagram is its payload and the pseudo-header uses its addresses (the IPv4 header checksum is
/// not required); otherwise all of `data` is the datagram, sent from 192.0.2.1 to 198.51.100.1.
/// The checksum is checked for consistency but not required; the re-emitted one must verify.
pub fn udp(data: &[u8]) {
    let (src, dst, datagram) = udp_in_ip(data).unwrap_or((BARE_UDP_SRC, BARE_UDP_DST, data));
    let Ok(packet) = wire::udp::Packet::new_checked(datagram) else {
        return;
    };
    let verified = packet.verify_checksum(src, dst);
    let checked = wire::udp::Repr::parse(&packet, src, dst);
    let repr = wire::udp::Repr::parse_ignoring_checksum(&packet).expect("parse fails on a checked packet");
    assert_eq!(checked.is_ok(), verified, "parse disagrees with verify_checksum");
    if verified {
        assert_eq!(checked, Ok(repr));
    }
    let payload = packet.payload();
    assert_eq!(repr.payload_len, payload.len());

    let mut buf = vec![0u8; repr.buffer_len()];
    let mut out = wire::udp::Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut out).expect("emit of a parsed repr");
    out.payload_mut().copy_from_slice(payload);
    out.fill_checksum(src, dst).expect("same-family addresses");
    assert_ne!(out.checksum(), 0, "a filled checksum must never be zero");
    let back = wire::udp::Packet::new_checked(&buf[..]).expect("emitted datagram does not check");
    assert_eq!(wire::udp::Repr::parse(&back, src, dst), Ok(repr));
    assert_eq!(back.payload(), payload);
    if verified && packet.checksum() != 0 {
        // A verified non-zero checksum is the one we compute (0 and 0xffff aside, one's-complement
        // sums are unique), so the re-emitted datagram is byte-identical.
        assert_eq!(&buf[..], &datagram[..repr.buffer_len()]);
    }
}

/// The addresses and UDP payload of an unfragmented IP packet carrying UDP.
fn udp_in_ip(data: &[u8]) -> Option<(IpAddr, IpAddr, &[u8])> {
    match data.first()? >> 4 {
        4 => {
            let packet = wire::ipv4::Packet::new_checked(data).ok()?;
            let repr = wire::ipv4::Repr::parse_ignoring_checksum(&packet).ok()?;
            (repr.protocol == IpProtocol::UDP).then(|| (repr.src.into(), repr.dst.into(), packet.payload()))
        }
        6 => {
            let packet = wire::ipv6::Packet::new_checked(data).ok()?;
            (packet.next_header() == IpProtocol::UDP)
                .then(|| (packet.src_addr().into(), packet.dst_addr().into(), packet.payload()))
        }
        _ => None,
    }
}

/// A VXLAN header and inner frame (a UDP payload); the inner frame goes on to [`ethernet`].
pub fn vxlan(data: &[u8]) {
    let Ok(packet) = wire::vxlan::Packet::new_checked(data) else {
        return;
    };
    let repr = wire::vxlan::Repr::parse(&packet).expect("parse fails on a checked packet");
    let payload = packet.payload();

    let mut buf = vec![0u8; repr.header_len() + payload.len()];
    let mut out = wire::vxlan::Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut out).expect("emit into a buffer of the right size");
    out.payload_mut().copy_from_slice(payload);
    let back = wire::vxlan::Packet::new_checked(&buf[..]).expect("emitted packet does not check");
    assert_eq!(wire::vxlan::Repr::parse(&back), Ok(repr));
    assert_eq!(back.payload(), payload);
    assert_eq!(back.flags(), 0x08, "reserved flag bits not zeroed");
    assert_eq!(&buf[1..4], &[0, 0, 0], "reserved field not zeroed");
    assert_eq!(buf[7], 0, "reserved octet not zeroed");

    ethernet(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_empty_inputs() {
        for f in [ethernet, ipv4, ipv6, udp, vxlan] {
            for len in 0..64 {
                f(&vec![0u8; len]);
                f(&vec![0xffu8; len]);
                f(&(0..len as u8).collect::<Vec<_>>());
            }
        }
    }
}
