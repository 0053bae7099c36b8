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
//!   8472); source port from [`source_port`]`(`[`flow_hash`]`(frame))`; checksum zero over IPv4
//!   (RFC 7348 section 5: it SHOULD be transmitted as zero; Linux's vxlan device does the same
//!   unless `udpcsum` is set; inside WireGuard the AEAD covers every byte anyway), computed over
//!   IPv6 (where zero needs RFC 6935's opt-in on the receiver).
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
use crate::wire::checksum;
use crate::wire::ethernet::{self, EtherType, EthernetAddress};
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
#[derive(Clone, Copy)]
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
    if frame.len() < ethernet::HEADER_LEN {
        h.write(frame);
        return h.0;
    }
    h.write(&frame[..MACS_LEN]);
    hash_after_macs(h, frame)
}

/// The two MAC addresses at the start of an Ethernet frame.
const MACS_LEN: usize = 12;

/// Finishes [`flow_hash`] of `frame` (at least an Ethernet header) from `h`, the state after its
/// two MAC addresses.
fn hash_after_macs(mut h: Fnv, frame: &[u8]) -> u32 {
    let (eth, payload) = frame.split_at(ethernet::HEADER_LEN);
    h.write(&eth[MACS_LEN..]);
    hash_payload(h, EtherType(u16::from_be_bytes([eth[12], eth[13]])), payload)
}

/// Finishes [`flow_hash`] from `h`, the state after the whole Ethernet header (EtherType
/// `ethertype`), with the frame's `payload`.
fn hash_payload(mut h: Fnv, ethertype: EtherType, payload: &[u8]) -> u32 {
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
///
/// For many frames between the same VTEPs, [`OuterHeaders`] does the same with the constant part
/// prepared once.
pub fn encapsulate(
    buf: &mut [u8],
    frame_start: usize,
    frame_len: usize,
    vni: Vni,
    local_vtep: IpAddr,
    remote_vtep: IpAddr,
    dst_port: u16,
) -> Result<Range<usize>, Error> {
    OuterHeaders::new(vni, local_vtep, remote_vtep, dst_port)?.encapsulate(buf, frame_start, frame_len)
}

/// The outer IP, UDP and VXLAN headers from one VTEP to another, prepared once for many frames:
/// the constant fields are laid out in a template and their share of both checksums summed
/// ahead, so that [`OuterHeaders::encapsulate`] copies the template, fills in the lengths, the
/// source port (and IPv6 flow label) and finishes the checksums. It writes exactly what
/// [`encapsulate`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OuterHeaders {
    /// IP + UDP + VXLAN headers with every per-frame field zero (lengths, checksums, source
    /// port, flow label); the first `headroom` octets are used.
    template: [u8; HEADROOM_V6],
    /// [`HEADROOM_V4`] or [`HEADROOM_V6`].
    headroom: usize,
    /// Partial sum of the template's IPv4 header (unused over IPv6, which has no header checksum).
    ip_sum: u32,
    /// Partial sum of the UDP pseudo-header without its length.
    pseudo_sum: u32,
}

impl OuterHeaders {
    /// Headers from `local_vtep` to `remote_vtep`, UDP port `dst_port`, VNI `vni`; fails with
    /// [`Error::MixedFamilies`] if the addresses differ in family.
    pub fn new(vni: Vni, local_vtep: IpAddr, remote_vtep: IpAddr, dst_port: u16) -> Result<Self, Error> {
        let mut template = [0u8; HEADROOM_V6];
        let (ip_len, pseudo_sum) = match (local_vtep, remote_vtep) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let ip = ipv4::Repr {
                    src,
                    dst,
                    protocol: IpProtocol::UDP,
                    payload_len: 0,
                    ttl: TTL,
                    dont_frag: true,
                    dscp_ecn: 0,
                    ident: 0,
                };
                ip.emit(&mut ipv4::Packet::new_unchecked(&mut template[..ipv4::HEADER_LEN]))?;
                // Total Length and the header checksum are per frame.
                template[2..4].fill(0);
                template[10..12].fill(0);
                (ipv4::HEADER_LEN, checksum::pseudo_header_v4(src, dst, IpProtocol::UDP.0, 0))
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let ip = ipv6::Repr {
                    src,
                    dst,
                    next_header: IpProtocol::UDP,
                    payload_len: 0,
                    hop_limit: TTL,
                    traffic_class: 0,
                    flow_label: 0,
                };
                ip.emit(&mut ipv6::Packet::new_unchecked(&mut template[..ipv6::HEADER_LEN]))?;
                (ipv6::HEADER_LEN, checksum::pseudo_header_v6(src, dst, IpProtocol::UDP.0, 0))
            }
            _ => return Err(Error::MixedFamilies),
        };
        let headroom = ip_len + udp::HEADER_LEN + vxlan::HEADER_LEN;
        let (udp_header, vxlan_header) = template[ip_len..headroom].split_at_mut(udp::HEADER_LEN);
        vxlan::Repr { vni }.emit(&mut vxlan::Packet::new_unchecked(vxlan_header))?;
        udp_header[2..4].copy_from_slice(&dst_port.to_be_bytes());
        let ip_sum = checksum::sum(&template[..ip_len]);
        Ok(Self { template, headroom, ip_sum, pseudo_sum })
    }

    /// These headers around frames from MAC `src` to MAC `dst` (one VTEP's frames to another),
    /// for callers that hold an IP packet and want the whole frame built around it.
    pub fn with_macs(self, dst: EthernetAddress, src: EthernetAddress) -> FrameHeaders {
        let mut macs = [0u8; MACS_LEN];
        macs[..6].copy_from_slice(&dst.0);
        macs[6..].copy_from_slice(&src.0);
        let mut h = Fnv::new();
        h.write(&macs);
        let ip_len = self.ip_len();
        // UDP and VXLAN headers (per-frame fields zero) and the MACs: 28 octets, so the
        // EtherType and the IP packet after them start on 16-bit word boundaries of the datagram.
        let mut constant = [0u8; udp::HEADER_LEN + vxlan::HEADER_LEN + MACS_LEN];
        constant[..udp::HEADER_LEN + vxlan::HEADER_LEN].copy_from_slice(&self.template[ip_len..self.headroom]);
        constant[udp::HEADER_LEN + vxlan::HEADER_LEN..].copy_from_slice(&macs);
        FrameHeaders { outer: self, macs, macs_hash: h.0, datagram_sum: checksum::sum(&constant) }
    }

    /// Length of the outer IP header.
    fn ip_len(&self) -> usize {
        self.headroom - udp::HEADER_LEN - vxlan::HEADER_LEN
    }

    /// Writes the IP header's per-frame fields for a UDP datagram of `udp_len` octets whose flow
    /// hashed to `hash` (`udp_len` was checked against the IP length limit).
    fn fill_ip(&self, packet: &mut [u8], udp_len: usize, hash: u32) {
        let udp_len16 = udp_len as u16;
        if self.ip_len() == ipv4::HEADER_LEN {
            let total = (ipv4::HEADER_LEN + udp_len) as u16;
            packet[2..4].copy_from_slice(&total.to_be_bytes());
            let sum = checksum::finish(checksum::combine(&[self.ip_sum, u32::from(total)]));
            packet[10..12].copy_from_slice(&sum.to_be_bytes());
        } else {
            // Version 6 and traffic class 0 are in the template's first octet; the 20-bit flow
            // label takes the rest of the first word.
            let label = (hash & ipv6::MAX_FLOW_LABEL).to_be_bytes();
            packet[1..4].copy_from_slice(&label[1..]);
            packet[4..6].copy_from_slice(&udp_len16.to_be_bytes());
        }
    }

    /// Checks the frame's place in `buf` and the outer packet's size; returns the outer
    /// packet's range and the UDP length.
    fn bounds(&self, buf: &[u8], frame_start: usize, frame_len: usize) -> Result<(Range<usize>, usize), Error> {
        let range = frame_bounds(buf, frame_start, frame_len, self.headroom)?;
        let udp_len = udp::HEADER_LEN + vxlan::HEADER_LEN + frame_len;
        // IPv4's Total Length covers the header too; IPv6's Payload Length does not.
        let ip_len = self.ip_len();
        let limit = if ip_len == ipv4::HEADER_LEN { usize::from(u16::MAX) - ip_len } else { usize::from(u16::MAX) };
        if udp_len > limit {
            return Err(Error::TooLarge);
        }
        Ok((range, udp_len))
    }

    /// Octets written in front of the frame: [`HEADROOM_V4`] or [`HEADROOM_V6`].
    pub fn headroom(&self) -> usize {
        self.headroom
    }

    /// As [`encapsulate`] with this pair of VTEPs (same result, same errors but
    /// [`Error::MixedFamilies`], which [`OuterHeaders::new`] took care of).
    pub fn encapsulate(&self, buf: &mut [u8], frame_start: usize, frame_len: usize) -> Result<Range<usize>, Error> {
        let (range, udp_len) = self.bounds(buf, frame_start, frame_len)?;
        let (headroom, ip_len) = (self.headroom, self.ip_len());
        let packet = &mut buf[range.clone()];
        let hash = flow_hash(&packet[headroom..]);
        packet[..headroom].copy_from_slice(&self.template[..headroom]);
        self.fill_ip(packet, udp_len, hash);
        let datagram = &mut packet[ip_len..];
        datagram[0..2].copy_from_slice(&source_port(hash).to_be_bytes());
        datagram[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        if ip_len == ipv6::HEADER_LEN {
            let sum = checksum::finish(checksum::combine(&[
                self.pseudo_sum,
                udp_len as u32,
                checksum::sum(&datagram[..udp_len]),
            ]));
            // A computed zero is sent as all ones (zero means "no checksum").
            datagram[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
        }
        Ok(range)
    }
}

/// The inner Ethernet header and the outer headers of frames from one VTEP to another
/// ([`OuterHeaders::with_macs`]), for an IP packet already in place: everything in front of it
/// written at once from what was prepared. The flow hash starts from the MACs' state, and the
/// UDP checksum sums only the IP packet, the rest being known: nothing just written is read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeaders {
    outer: OuterHeaders,
    /// Destination then source MAC.
    macs: [u8; MACS_LEN],
    /// Flow hash state after the MACs.
    macs_hash: u32,
    /// Partial sum of the UDP and VXLAN headers' constant fields and the MACs.
    datagram_sum: u32,
}

impl FrameHeaders {
    /// Octets written in front of the IP packet: the outer headers and the Ethernet header.
    pub fn headroom(&self) -> usize {
        self.outer.headroom + ethernet::HEADER_LEN
    }

    /// Writes the Ethernet header (`ethertype`) in front of the IP packet at
    /// `buf[packet_start..packet_start + packet_len]` and the outer headers in front of that:
    /// the same octets as writing the Ethernet header, then [`encapsulate`] on the frame, with
    /// the same errors (a missing Ethernet header's room counts as headroom). Returns the range
    /// of the complete outer packet.
    pub fn encapsulate(
        &self,
        buf: &mut [u8],
        packet_start: usize,
        packet_len: usize,
        ethertype: EtherType,
    ) -> Result<Range<usize>, Error> {
        let frame_start = packet_start
            .checked_sub(ethernet::HEADER_LEN)
            .ok_or(Error::Headroom { needed: self.headroom(), actual: packet_start })?;
        let frame_len = packet_len.checked_add(ethernet::HEADER_LEN).ok_or(Error::FrameOutOfBounds)?;
        let outer = &self.outer;
        let (range, udp_len) = outer.bounds(buf, frame_start, frame_len)?;
        let (headroom, ip_len) = (outer.headroom, outer.ip_len());
        let packet = &mut buf[range.clone()];
        let (headers, ip_packet) = packet.split_at_mut(headroom + ethernet::HEADER_LEN);
        let mut h = Fnv(self.macs_hash);
        h.write(&ethertype.0.to_be_bytes());
        let hash = hash_payload(h, ethertype, ip_packet);
        let src_port = source_port(hash);
        let (outer_headers, eth) = headers.split_at_mut(headroom);
        outer_headers.copy_from_slice(&outer.template[..headroom]);
        eth[..MACS_LEN].copy_from_slice(&self.macs);
        eth[MACS_LEN..].copy_from_slice(&ethertype.0.to_be_bytes());
        outer.fill_ip(outer_headers, udp_len, hash);
        let udp_header = &mut outer_headers[ip_len..ip_len + udp::HEADER_LEN];
        udp_header[0..2].copy_from_slice(&src_port.to_be_bytes());
        udp_header[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        if ip_len == ipv6::HEADER_LEN {
            // The Length field counts twice: in the pseudo-header and in the UDP header.
            let sum = checksum::finish(checksum::combine(&[
                outer.pseudo_sum,
                2 * udp_len as u32,
                self.datagram_sum,
                u32::from(src_port),
                u32::from(ethertype.0),
                checksum::sum(ip_packet),
            ]));
            udp_header[6..8].copy_from_slice(&(if sum == 0 { 0xffff } else { sum }).to_be_bytes());
        }
        Ok(range)
    }
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

#[cfg(test)]
mod outer_headers_tests {
    use super::*;

    /// The headers written field by field through the wire views, as [`encapsulate`] did before
    /// [`OuterHeaders`]: what the template must reproduce octet for octet.
    fn reference(buf: &mut [u8], frame_start: usize, frame_len: usize, local: IpAddr, remote: IpAddr) {
        let (vni, port) = (Vni::new(0x123456).unwrap(), 8472);
        let ip_len = if local.is_ipv4() { ipv4::HEADER_LEN } else { ipv6::HEADER_LEN };
        let headroom = ip_len + udp::HEADER_LEN + vxlan::HEADER_LEN;
        let packet = &mut buf[frame_start - headroom..frame_start + frame_len];
        let udp_len = udp::HEADER_LEN + vxlan::HEADER_LEN + frame_len;
        let hash = flow_hash(&packet[headroom..]);
        let datagram_buf = &mut packet[ip_len..];
        vxlan::Repr { vni }.emit(&mut vxlan::Packet::new_unchecked(&mut datagram_buf[udp::HEADER_LEN..])).unwrap();
        let mut datagram = udp::Packet::new_unchecked(datagram_buf);
        udp::Repr { src_port: source_port(hash), dst_port: port, payload_len: udp_len - udp::HEADER_LEN }
            .emit(&mut datagram)
            .unwrap();
        // Zero (none) over IPv4, as RFC 7348 recommends; computed over IPv6.
        if local.is_ipv6() {
            datagram.fill_checksum(local, remote).unwrap();
        }
        match (local, remote) {
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
            .emit(&mut ipv4::Packet::new_unchecked(packet))
            .unwrap(),
            (IpAddr::V6(src), IpAddr::V6(dst)) => ipv6::Repr {
                src,
                dst,
                next_header: IpProtocol::UDP,
                payload_len: udp_len,
                hop_limit: TTL,
                traffic_class: 0,
                flow_label: hash & ipv6::MAX_FLOW_LABEL,
            }
            .emit(&mut ipv6::Packet::new_unchecked(packet))
            .unwrap(),
            _ => unreachable!(),
        }
    }

    /// Frames of many shapes: IPv4/IPv6 UDP and TCP, fragments, other EtherTypes, bare headers,
    /// odd lengths; each starting with `macs` or not.
    fn frames(macs: [u8; 12]) -> Vec<Vec<u8>> {
        let mut seed = 0x9e37_79b9u32;
        let mut byte = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed as u8
        };
        let mut frames = Vec::new();
        for (i, len) in [14usize, 15, 34, 54, 61, 100, 333, 1021, 1464].into_iter().enumerate() {
            for kind in 0..5 {
                let mut f: Vec<u8> = (0..len).map(|_| byte()).collect();
                if kind != 4 {
                    f[..12].copy_from_slice(&macs);
                }
                let body = len - ethernet::HEADER_LEN;
                match kind {
                    0 if body >= 20 => {
                        f[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
                        f[14] = 0x45;
                        f[16..18].copy_from_slice(&(body as u16).to_be_bytes());
                        f[20] = if i % 2 == 0 { 0x40 } else { 0x20 }; // DF, or more fragments
                        f[23] = if i % 3 == 0 { 6 } else { 17 };
                    }
                    1 if body >= 40 => {
                        f[12..14].copy_from_slice(&EtherType::IPV6.0.to_be_bytes());
                        f[14] = 0x60;
                        f[18..20].copy_from_slice(&((body - 40) as u16).to_be_bytes());
                        f[20] = 17;
                    }
                    _ => {}
                }
                frames.push(f);
            }
        }
        frames
    }

    #[test]
    fn framing_refuses_what_encapsulate_refuses_and_leaves_the_buffer_unchanged() {
        let local: IpAddr = "10.0.0.1".parse().unwrap();
        let remote: IpAddr = "10.0.0.2".parse().unwrap();
        let mac = EthernetAddress([2, 0, 0, 0, 0, 1]);
        let framing = OuterHeaders::new(Vni::new(1).unwrap(), local, remote, 8472).unwrap().with_macs(mac, mac);
        assert_eq!(framing.headroom(), HEADROOM_V4 + ethernet::HEADER_LEN);
        let mut buf = vec![0x5a; 200];
        let before = buf.clone();
        let ip = EtherType::IPV4;
        assert!(matches!(framing.encapsulate(&mut buf, 13, 20, ip), Err(Error::Headroom { .. })));
        assert!(matches!(framing.encapsulate(&mut buf, 49, 20, ip), Err(Error::Headroom { .. })));
        assert!(matches!(framing.encapsulate(&mut buf, 50, 151, ip), Err(Error::FrameOutOfBounds)));
        assert!(matches!(framing.encapsulate(&mut buf, 50, usize::MAX, ip), Err(Error::FrameOutOfBounds)));
        assert_eq!(buf, before);
        let mut big = vec![0u8; 70_000];
        assert!(matches!(framing.encapsulate(&mut big, 50, 65_535 - 50 + 1, ip), Err(Error::TooLarge)));
        assert_eq!(framing.encapsulate(&mut big, 50, 65_535 - 50, ip), Ok(0..65_535));
        assert_eq!(framing.encapsulate(&mut buf, 50, 150, ip), Ok(0..200));
        assert!(OuterHeaders::new(Vni::new(1).unwrap(), local, "fd00::2".parse().unwrap(), 8472).is_err());
    }

    #[test]
    fn the_template_writes_what_the_field_by_field_headers_do() {
        let (dst, src) = (EthernetAddress([2, 0, 0, 0, 0, 0xb]), EthernetAddress([2, 0, 0, 0, 0, 0xa]));
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&dst.0);
        macs[6..].copy_from_slice(&src.0);
        let pairs: [(IpAddr, IpAddr); 2] = [
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()),
            ("fd00::1".parse().unwrap(), "fd00::2".parse().unwrap()),
        ];
        let vni = Vni::new(0x123456).unwrap();
        let mut checked = 0;
        for (local, remote) in pairs {
            let outer = OuterHeaders::new(vni, local, remote, 8472).unwrap();
            let framing = outer.with_macs(dst, src);
            for frame in frames(macs) {
                let start = HEADROOM_V6 + 3;
                let mut want = vec![0xeeu8; start + frame.len() + 5];
                want[start..start + frame.len()].copy_from_slice(&frame);
                let mut got = want.clone();
                reference(&mut want, start, frame.len(), local, remote);
                let whole = start - outer.headroom()..start + frame.len();

                let range = outer.encapsulate(&mut got, start, frame.len()).unwrap();
                assert_eq!(range, whole);
                assert_eq!(got, want, "{local} -> {remote}, frame {frame:02x?}");
                checked += 1;

                let mut free = got.clone();
                free[..start].fill(0xee);
                encapsulate(&mut free, start, frame.len(), vni, local, remote, 8472).unwrap();
                assert_eq!(free, want, "the one-call function");

                // The Ethernet header too, from the MACs given once and the packet's EtherType.
                if frame[..12] == macs {
                    got[..start + ethernet::HEADER_LEN].fill(0xee);
                    let ethertype = EtherType(u16::from_be_bytes([frame[12], frame[13]]));
                    let packet_start = start + ethernet::HEADER_LEN;
                    let range = framing.encapsulate(&mut got, packet_start, frame.len() - 14, ethertype).unwrap();
                    assert_eq!(range, whole);
                    assert_eq!(packet_start - framing.headroom(), whole.start);
                    assert_eq!(got, want, "{local} -> {remote}, IP packet {:02x?}", &frame[14..]);
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 2 * 9 * (5 + 4));
    }
}
