//! VXLAN framing in one buffer (RFC 7348).
//!
//! Transmit: the caller places the inner Ethernet frame at `buf[frame_start..]`, leaving at least
//! [`HEADROOM_V4`] (or [`HEADROOM_V6`]) octets in front of it, and [`encapsulate`] writes the
//! outer IP, UDP and VXLAN headers into that headroom: no copy of the frame, no allocation. The
//! result is the range of the complete outer packet, ready for WireGuard encryption or a raw
//! socket. [`encapsulate_vxlan`] writes only the VXLAN header, for a kernel UDP socket that adds IP
//! and UDP itself.
//!
//! Receive: [`decapsulate`] validates an outer IPv4/IPv6 + UDP + VXLAN packet and returns the
//! inner frame as a range of the same buffer; [`decapsulate_vxlan`] does the same for a UDP
//! payload.
//!
//! # Outer headers
//! * IPv4: 20 octets, DF set, TTL 64, DSCP/ECN 0, Identification 0 (RFC 6864: the field has no
//!   meaning for an atomic datagram), header checksum filled.
//! * IPv6: hop limit 64, traffic class 0, flow label from the inner flow hash (RFC 6438).
//! * UDP: destination port as given (vxwg default [`DEFAULT_PORT`](crate::wire::vxlan::DEFAULT_PORT),
//!   8472); source port from [`source_port`]`(`[`flow_hash`]`(frame))`; checksum always computed
//!   (required over IPv6, and over IPv4 too so that every outer checksum is valid).
//!
//! # Source port
//! RFC 7348 section 5 recommends a source port derived from a hash of the inner frame, in the
//! dynamic range 49152–65535, so that ECMP and RSS spread tunnels by inner flow. vxwg maps the
//! hash into [`SOURCE_PORT_RANGE`] = 49152..=65535 with Linux's multiply-shift
//! (`udp_flow_src_port`). Note that Linux's own vxlan driver, unless `srcport MIN MAX` is given,
//! uses `net.ipv4.ip_local_port_range` (32768..60999 by default) instead; receivers accept any
//! source port, so the two interoperate.

use core::ops::{Range, RangeInclusive};
use std::net::IpAddr;

use super::Error;
use crate::wire::ethernet::{self, EtherType};
use crate::wire::ipv4::{self, IpProtocol};
use crate::wire::vxlan::{self, Vni};
use crate::wire::{ipv6, udp};

/// Headroom [`encapsulate`] needs in front of the frame over IPv4: IPv4 + UDP + VXLAN headers.
pub const HEADROOM_V4: usize = 20 + 8 + 8;
/// Headroom [`encapsulate`] needs in front of the frame over IPv6: IPv6 + UDP + VXLAN headers.
pub const HEADROOM_V6: usize = 40 + 8 + 8;

/// The outer UDP source ports [`source_port`] picks from (RFC 7348's recommended range).
pub const SOURCE_PORT_RANGE: RangeInclusive<u16> = 49152..=65535;

const TTL: u8 = 64;

/// FNV-1a, 32 bits: deterministic, dependency-free and good enough to spread flows.
struct Fnv(u32);

impl Fnv {
    fn new() -> Self {
        Self(0x811c_9dc5)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u32::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

/// A hash of the inner flow of an Ethernet frame: MAC addresses and EtherType, and for IPv4 and
/// IPv6 the addresses and protocol, plus the ports of TCP, UDP and SCTP (unfragmented IPv4, or
/// IPv6 without extension headers). Frames of one flow hash alike; the result is stable across
/// runs and builds. Never panics: short or malformed frames hash whatever part parses.
pub fn flow_hash(frame: &[u8]) -> u32 {
    let mut h = Fnv::new();
    let Some(eth) = frame.get(..ethernet::HEADER_LEN) else {
        h.write(frame);
        return h.0;
    };
    h.write(eth);
    let payload = &frame[ethernet::HEADER_LEN..];
    let ethertype = EtherType(u16::from_be_bytes([eth[12], eth[13]]));
    let l4 = if ethertype == EtherType::IPV4 {
        match ipv4::Packet::new_checked(payload) {
            Ok(ip) => {
                h.write(&ip.src_addr().octets());
                h.write(&ip.dst_addr().octets());
                h.write(&[ip.protocol().0]);
                (!ip.is_fragment()).then(|| (ip.protocol(), ip.payload()))
            }
            Err(_) => None,
        }
    } else if ethertype == EtherType::IPV6 {
        match ipv6::Packet::new_checked(payload) {
            Ok(ip) => {
                h.write(&ip.src_addr().octets());
                h.write(&ip.dst_addr().octets());
                h.write(&[ip.next_header().0]);
                Some((ip.next_header(), ip.payload()))
            }
            Err(_) => None,
        }
    } else {
        None
    };
    if let Some((proto, l4)) = l4 {
        const SCTP: IpProtocol = IpProtocol(132);
        if proto == IpProtocol::TCP || proto == IpProtocol::UDP || proto == SCTP {
            if let Some(ports) = l4.get(..4) {
                h.write(ports);
            }
        }
    }
    h.0
}

/// The outer UDP source port for a flow hash: `hash` mapped into [`SOURCE_PORT_RANGE`] by
/// multiply-shift after folding the high half into the low, as Linux's `udp_flow_src_port` does.
pub fn source_port(hash: u32) -> u16 {
    let hash = hash ^ (hash << 16);
    let (min, max) = (*SOURCE_PORT_RANGE.start(), *SOURCE_PORT_RANGE.end());
    let span = u64::from(max - min) + 1;
    // (hash * span) >> 32 < span, so the sum is at most `max`.
    min + ((u64::from(hash) * span) >> 32) as u16
}

/// Checks `frame_start..frame_start + frame_len` lies in `buf` with `headroom` octets in front of
/// it and holds at least an Ethernet header.
fn frame_bounds(buf: &[u8], frame_start: usize, frame_len: usize, headroom: usize) -> Result<Range<usize>, Error> {
    let end = frame_start.checked_add(frame_len).ok_or(Error::FrameOutOfBounds)?;
    if end > buf.len() {
        return Err(Error::FrameOutOfBounds);
    }
    if frame_len < ethernet::HEADER_LEN {
        return Err(crate::wire::Error::Truncated { needed: ethernet::HEADER_LEN, actual: frame_len }.into());
    }
    if frame_start < headroom {
        return Err(Error::Headroom { needed: headroom, actual: frame_start });
    }
    Ok(frame_start - headroom..end)
}

/// Writes the VXLAN header (I flag, `vni`) into the 8 octets in front of the inner Ethernet frame
/// at `buf[frame_start..frame_start + frame_len]` and returns the range of the VXLAN packet (the
/// UDP payload), for sending through a kernel UDP socket.
///
/// Fails with [`Error::FrameOutOfBounds`] if the frame is not inside `buf`, a truncation error if
/// it is shorter than an Ethernet header, and [`Error::Headroom`] if `frame_start < 8`; `buf` is
/// unchanged on error.
pub fn encapsulate_vxlan(
    buf: &mut [u8],
    frame_start: usize,
    frame_len: usize,
    vni: Vni,
) -> Result<Range<usize>, Error> {
    let range = frame_bounds(buf, frame_start, frame_len, vxlan::HEADER_LEN)?;
    vxlan::Repr { vni }.emit(&mut vxlan::Packet::new_unchecked(&mut buf[range.clone()]))?;
    Ok(range)
}

/// Writes outer IP + UDP + VXLAN headers in front of the inner Ethernet frame at
/// `buf[frame_start..frame_start + frame_len]` (see the module docs for the header values) and
/// returns the range of the complete outer packet, which starts [`HEADROOM_V4`] or
/// [`HEADROOM_V6`] octets before `frame_start`.
///
/// Fails, leaving `buf` unchanged, with [`Error::MixedFamilies`] if the VTEP addresses differ in
/// family, [`Error::FrameOutOfBounds`] if the frame is not inside `buf`, a truncation error if it
/// is shorter than an Ethernet header, [`Error::Headroom`] if there is too little room in front of
/// it, and [`Error::TooLarge`] if the outer packet would exceed 65535 octets.
pub fn encapsulate(
    buf: &mut [u8],
    frame_start: usize,
    frame_len: usize,
    vni: Vni,
    local_vtep: IpAddr,
    remote_vtep: IpAddr,
    dst_port: u16,
) -> Result<Range<usize>, Error> {
    let ip_len = match (local_vtep, remote_vtep) {
        (IpAddr::V4(_), IpAddr::V4(_)) => ipv4::HEADER_LEN,
        (IpAddr::V6(_), IpAddr::V6(_)) => ipv6::HEADER_LEN,
        _ => return Err(Error::MixedFamilies),
    };
    let headroom = ip_len + udp::HEADER_LEN + vxlan::HEADER_LEN;
    let range = frame_bounds(buf, frame_start, frame_len, headroom)?;
    let udp_len = udp::HEADER_LEN + vxlan::HEADER_LEN + frame_len;
    // IPv4's Total Length covers the header too; IPv6's Payload Length does not.
    let limit = if ip_len == ipv4::HEADER_LEN { usize::from(u16::MAX) - ip_len } else { usize::from(u16::MAX) };
    if udp_len > limit {
        return Err(Error::TooLarge);
    }
    let packet = &mut buf[range.clone()];
    let hash = flow_hash(&packet[headroom..]);

    let datagram_buf = &mut packet[ip_len..];
    vxlan::Repr { vni }.emit(&mut vxlan::Packet::new_unchecked(&mut datagram_buf[udp::HEADER_LEN..]))?;
    let mut datagram = udp::Packet::new_unchecked(datagram_buf);
    let udp_repr = udp::Repr { src_port: source_port(hash), dst_port, payload_len: udp_len - udp::HEADER_LEN };
    udp_repr.emit(&mut datagram)?;
    datagram.fill_checksum(local_vtep, remote_vtep)?;

    match (local_vtep, remote_vtep) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => ipv4::Repr {
            src,
            dst,
            protocol: IpProtocol::UDP,
            payload_len: udp_len,
            ttl: TTL,
            dont_frag: true,
            dscp_ecn: 0,
            ident: 0,
        }
        .emit(&mut ipv4::Packet::new_unchecked(packet))?,
        (IpAddr::V6(src), IpAddr::V6(dst)) => ipv6::Repr {
            src,
            dst,
            next_header: IpProtocol::UDP,
            payload_len: udp_len,
            hop_limit: TTL,
            traffic_class: 0,
            flow_label: hash & ipv6::MAX_FLOW_LABEL,
        }
        .emit(&mut ipv6::Packet::new_unchecked(packet))?,
        _ => return Err(Error::MixedFamilies),
    }
    Ok(range)
}

/// What [`decapsulate`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated {
    /// The VNI of the VXLAN header.
    pub vni: Vni,
    /// The inner Ethernet frame, as a range of the packet given to [`decapsulate`].
    pub inner: Range<usize>,
    /// The outer source address: the remote VTEP.
    pub outer_src: IpAddr,
    /// The outer UDP source port.
    pub outer_src_port: u16,
}

/// Validates a VXLAN packet (a UDP payload) and returns its VNI and the range of the inner
/// Ethernet frame, which must hold at least an Ethernet header. Reserved bits are ignored
/// (RFC 7348); the I flag is required.
pub fn decapsulate_vxlan(payload: &[u8]) -> Result<(Vni, Range<usize>), Error> {
    let packet = vxlan::Packet::new_checked(payload)?;
    let inner = packet.payload();
    ethernet::Frame::new_checked(inner)?;
    Ok((packet.vni(), vxlan::HEADER_LEN..payload.len()))
}

/// Validates an outer IPv4 or IPv6 + UDP + VXLAN packet and returns the VNI, the range of the
/// inner Ethernet frame within `packet`, and the outer source.
///
/// Checks, failing with the first error: the IP header (IPv4: header checksum, no fragments,
/// octets past Total Length ignored; IPv6: Payload Length; extension headers are not followed and
/// give [`Error::NotUdp`]), protocol UDP, the UDP length and checksum (a zero checksum is accepted
/// over IPv4 only), destination port `dst_port` (else [`Error::WrongPort`]), then as
/// [`decapsulate_vxlan`].
pub fn decapsulate(packet: &[u8], dst_port: u16) -> Result<Decapsulated, Error> {
    let (src, dst, proto, l4_start, l4) = match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let ip = ipv4::Packet::new_checked(packet)?;
            let repr = ipv4::Repr::parse(&ip)?;
            let start = ip.header_len();
            let end = usize::from(ip.total_len());
            (IpAddr::V4(repr.src), IpAddr::V4(repr.dst), repr.protocol, start, &packet[start..end])
        }
        Some(6) => {
            let ip = ipv6::Packet::new_checked(packet)?;
            let end = ip.total_len();
            (
                IpAddr::V6(ip.src_addr()),
                IpAddr::V6(ip.dst_addr()),
                ip.next_header(),
                ipv6::HEADER_LEN,
                &packet[ipv6::HEADER_LEN..end],
            )
        }
        Some(_) => return Err(crate::wire::Error::Malformed { field: "version" }.into()),
        None => return Err(crate::wire::Error::Truncated { needed: 1, actual: 0 }.into()),
    };
    if proto != IpProtocol::UDP {
        return Err(Error::NotUdp);
    }
    let datagram = udp::Packet::new_checked(l4)?;
    let repr = udp::Repr::parse(&datagram, src, dst)?;
    if repr.dst_port != dst_port {
        return Err(Error::WrongPort(repr.dst_port));
    }
    let payload_start = l4_start + udp::HEADER_LEN;
    let (vni, inner) = decapsulate_vxlan(datagram.payload())?;
    Ok(Decapsulated {
        vni,
        inner: payload_start + inner.start..payload_start + inner.end,
        outer_src: src,
        outer_src_port: repr.src_port,
    })
}
