//! ICMPv4 "fragmentation needed" and ICMPv6 "Packet Too Big".

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Error;
use crate::wire::ipv4::{self, IpProtocol};
use crate::wire::{checksum, ipv6};

/// Octets of the original datagram's data quoted after its header in an ICMPv4 error (RFC 792).
pub const ICMPV4_QUOTE_DATA_LEN: usize = 8;
/// Largest ICMPv6 error message, IPv6 header included (RFC 4443 2.4 (c)): the minimum IPv6 MTU.
pub const ICMPV6_MAX_LEN: usize = 1280;

/// ICMP header: type, code, checksum, and four octets (unused + Next-Hop MTU, or the MTU).
const ICMP_HEADER_LEN: usize = 8;
const ICMPV4_DEST_UNREACHABLE: u8 = 3;
const ICMPV4_FRAG_NEEDED: u8 = 4;
const ICMPV6_PACKET_TOO_BIG: u8 = 2;
/// TTL / Hop Limit of the messages built here.
const HOP_LIMIT: u8 = 64;
/// DSCP/ECN octet of ICMPv4 errors: precedence 6, "internetwork control", as Linux sends them.
const ICMPV4_TOS: u8 = 0xc0;

/// Builds the answer to an inner packet too big for the path MTU `mtu`: an ICMPv4 Destination
/// Unreachable, code 4 "fragmentation needed and DF set" with the Next-Hop MTU field (RFC 792,
/// RFC 1191) for IPv4, or an ICMPv6 Packet Too Big (RFC 4443 3.2) for IPv6. It is written into
/// `out` as a complete IP packet from `src_for_icmp` (the node's overlay or gateway address) to
/// the packet's source, TTL / Hop Limit 64, with correct IPv4 header and ICMP checksums (ICMPv6
/// over the pseudo-header). Returns its length.
///
/// The quote: for IPv4 the original header (with options) and the first
/// [`ICMPV4_QUOTE_DATA_LEN`] octets of its data (RFC 792); for IPv6 as much of the original as
/// keeps the message within [`ICMPV6_MAX_LEN`] octets. Never beyond the packet's own length (link
/// padding is not quoted). The IPv4 message is at most 20 + 8 + 60 + 8 = 96 octets; the IPv6 one at
/// most 1280.
///
/// Fails, writing nothing, when no message may be sent:
/// * [`Error::Malformed`] for a packet that does not parse (or whose IPv6 extension headers run
///   off its end);
/// * [`Error::IcmpError`] for an ICMP/ICMPv6 error message, an ICMPv4 message of a type not known
///   to be a query, or an ICMPv6 message in a non-first fragment (its type cannot be seen);
/// * [`Error::NonFirstFragment`] for an IPv4 fragment with a non-zero offset;
/// * [`Error::NotUnicast`] for a source that is unspecified, multicast or (IPv4) broadcast, or an
///   IPv4 destination that is multicast or broadcast (an IPv6 Packet Too Big may answer a
///   multicast destination, RFC 4443 2.4 (e.2));
/// * [`Error::FamilyMismatch`] when `src_for_icmp` is of the other family;
/// * [`Error::MtuTooSmall`] for IPv6 when `mtu` is below 1280 (IPv6 must not be run over such a
///   path; see [`super::ensure_min`]);
/// * [`Error::BufferTooSmall`] when `out` cannot hold the message.
///
/// The original's IPv4 header checksum is not verified (see the module documentation).
pub fn icmp_too_big(packet: &[u8], mtu: u16, src_for_icmp: IpAddr, out: &mut [u8]) -> Result<usize, Error> {
    match packet.first().map(|b| b >> 4) {
        Some(6) => {
            let IpAddr::V6(src) = src_for_icmp else {
                return Err(Error::FamilyMismatch);
            };
            packet_too_big_v6(packet, mtu, src, out)
        }
        _ => {
            let IpAddr::V4(src) = src_for_icmp else {
                // Parse first so that garbage reports Malformed whatever the address.
                ipv4::Packet::new_checked(packet)?;
                return Err(Error::FamilyMismatch);
            };
            frag_needed_v4(packet, mtu, src, out)
        }
    }
}

/// Whether an ICMPv4 type is a query (informational) message, which may be answered. Anything
/// else, errors and unknown types alike, is treated as an error.
const fn is_icmpv4_query(ty: u8) -> bool {
    // Echo Reply/Request, Router Advertisement/Solicitation, Timestamp, Information,
    // Address Mask Request/Reply, Extended Echo Request/Reply (RFC 8335).
    matches!(ty, 0 | 8 | 9 | 10 | 13 | 14 | 15 | 16 | 17 | 18 | 42 | 43)
}

fn is_unicast_v4(addr: Ipv4Addr) -> bool {
    !(addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast())
}

fn frag_needed_v4(packet: &[u8], mtu: u16, src: Ipv4Addr, out: &mut [u8]) -> Result<usize, Error> {
    let p = ipv4::Packet::new_checked(packet)?;
    if p.frag_offset() != 0 {
        return Err(Error::NonFirstFragment);
    }
    if p.protocol() == IpProtocol::ICMP {
        match p.payload().first() {
            Some(&ty) if is_icmpv4_query(ty) => {}
            _ => return Err(Error::IcmpError),
        }
    }
    let dst = p.src_addr();
    if !is_unicast_v4(dst) || !is_unicast_v4(p.dst_addr()) {
        return Err(Error::NotUnicast);
    }
    let quote_len = (p.header_len() + ICMPV4_QUOTE_DATA_LEN).min(usize::from(p.total_len()));
    let icmp_len = ICMP_HEADER_LEN + quote_len;
    let needed = ipv4::HEADER_LEN + icmp_len;
    if out.len() < needed {
        return Err(Error::BufferTooSmall { needed, actual: out.len() });
    }
    let out = &mut out[..needed];
    let repr = ipv4::Repr {
        src,
        dst,
        protocol: IpProtocol::ICMP,
        payload_len: icmp_len,
        ttl: HOP_LIMIT,
        dont_frag: true,
        dscp_ecn: ICMPV4_TOS,
        ident: 0,
    };
    {
        let icmp = &mut out[ipv4::HEADER_LEN..];
        icmp[0] = ICMPV4_DEST_UNREACHABLE;
        icmp[1] = ICMPV4_FRAG_NEEDED;
        icmp[2..6].fill(0); // checksum, then the unused field
        icmp[6..8].copy_from_slice(&mtu.to_be_bytes());
        icmp[ICMP_HEADER_LEN..].copy_from_slice(&packet[..quote_len]);
        let sum = checksum::finish(checksum::sum(icmp));
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    repr.emit(&mut ipv4::Packet::new_unchecked(&mut *out))?;
    Ok(needed)
}

/// The upper-layer protocol of an IPv6 packet, after its extension headers, and whether it sits
/// in a non-first fragment (so that its header is not in this packet). `Ok(None)` when the chain
/// ends in No Next Header or ESP (opaque).
fn upper_layer_v6(p: &ipv6::Packet<&[u8]>) -> Result<Option<(IpProtocol, usize, bool)>, Error> {
    const TRUNCATED: crate::wire::Error = crate::wire::Error::Malformed { field: "extension header" };
    let payload = p.payload();
    let mut next = p.next_header();
    let mut at = 0usize;
    let mut non_first_fragment = false;
    loop {
        match next.0 {
            // Hop-by-Hop, Routing, Destination Options: (Hdr Ext Len + 1) * 8 octets.
            0 | 43 | 60 => {
                let hdr = payload.get(at..at + 2).ok_or(TRUNCATED)?;
                next = IpProtocol(hdr[0]);
                at += (usize::from(hdr[1]) + 1) * 8;
            }
            // Fragment: 8 octets; offset in the upper 13 bits of octets 2..4.
            44 => {
                let hdr = payload.get(at..at + 8).ok_or(TRUNCATED)?;
                next = IpProtocol(hdr[0]);
                if u16::from_be_bytes([hdr[2], hdr[3]]) >> 3 != 0 {
                    non_first_fragment = true;
                }
                at += 8;
            }
            // Authentication Header: (Payload Len + 2) * 4 octets.
            51 => {
                let hdr = payload.get(at..at + 2).ok_or(TRUNCATED)?;
                next = IpProtocol(hdr[0]);
                at += (usize::from(hdr[1]) + 2) * 4;
            }
            // ESP hides what follows; No Next Header ends the packet.
            50 | 59 => return Ok(None),
            _ => return Ok(Some((next, at, non_first_fragment))),
        }
        if non_first_fragment {
            // Whatever follows the Fragment header is not in this packet.
            return Ok(Some((next, at, true)));
        }
        if at > payload.len() {
            return Err(TRUNCATED.into());
        }
    }
}

fn packet_too_big_v6(packet: &[u8], mtu: u16, src: Ipv6Addr, out: &mut [u8]) -> Result<usize, Error> {
    let p = ipv6::Packet::new_checked(packet)?;
    if let Some((proto, at, non_first_fragment)) = upper_layer_v6(&p)? {
        if proto == IpProtocol::ICMPV6 {
            if non_first_fragment {
                return Err(Error::IcmpError);
            }
            // ICMPv6 types 0..=127 are errors (RFC 4443 2.1).
            match p.payload().get(at) {
                Some(&ty) if ty >= 128 => {}
                _ => return Err(Error::IcmpError),
            }
        }
    }
    let dst = p.src_addr();
    if dst.is_unspecified() || dst.is_multicast() {
        return Err(Error::NotUnicast);
    }
    if u32::from(mtu) < super::IPV6_MIN_MTU {
        return Err(Error::MtuTooSmall { mtu: usize::from(mtu), minimum: super::IPV6_MIN_MTU as usize });
    }
    let quote_len = p.total_len().min(ICMPV6_MAX_LEN - ipv6::HEADER_LEN - ICMP_HEADER_LEN);
    let icmp_len = ICMP_HEADER_LEN + quote_len;
    let needed = ipv6::HEADER_LEN + icmp_len;
    if out.len() < needed {
        return Err(Error::BufferTooSmall { needed, actual: out.len() });
    }
    let out = &mut out[..needed];
    let repr = ipv6::Repr {
        src,
        dst,
        next_header: IpProtocol::ICMPV6,
        payload_len: icmp_len,
        hop_limit: HOP_LIMIT,
        traffic_class: 0,
        flow_label: 0,
    };
    repr.emit(&mut ipv6::Packet::new_unchecked(&mut *out))?;
    let icmp = &mut out[ipv6::HEADER_LEN..];
    icmp[0] = ICMPV6_PACKET_TOO_BIG;
    icmp[1] = 0;
    icmp[2..4].fill(0);
    icmp[4..8].copy_from_slice(&u32::from(mtu).to_be_bytes());
    icmp[ICMP_HEADER_LEN..].copy_from_slice(&packet[..quote_len]);
    // icmp_len <= 1240: the cast cannot truncate.
    let pseudo = checksum::pseudo_header_v6(src, dst, IpProtocol::ICMPV6.0, icmp_len as u32);
    let sum = checksum::finish(checksum::combine(&[pseudo, checksum::sum(icmp)]));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    Ok(needed)
}
