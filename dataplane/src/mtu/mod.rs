//! MTU arithmetic and what to do with an inner packet too big for the tunnel, sans-IO.
//!
//! * **Arithmetic** — [`wireguard_overhead`], [`vxlan_overhead`], [`tunnel_mtu`] (plain L3
//!   WireGuard) and [`pod_mtu`] (VXLAN inside WireGuard), with the floors of [`min_mtu`]. The table
//!   and its derivation are in `docs/mtu.md`.
//! * **Too big** — [`check_size`] classifies an inner IP packet against the path MTU (the largest
//!   inner packet the tunnel carries). The outer packet is never fragmented (it is sent with DF),
//!   so an oversize inner packet is either answered with [`icmp_too_big`] (IPv4 with DF, IPv6) or
//!   fragmented at the inner layer with [`Fragmenter`] / [`fragment_v4`] (IPv4 without DF).
//! * **MSS clamping** — [`clamp_tcp_mss`] lowers the MSS option of TCP SYNs in place.
//!
//! # No-panic contract
//! Every function here takes packets from the network and returns [`Error`] (or a verdict, or
//! `false`) for short, truncated or malformed input; none panics on any input. Nothing allocates:
//! output goes into caller-provided buffers.
//!
//! # Checksums of the inner packet
//! Nothing here verifies the inner packet's IPv4 header checksum or its TCP checksum: the packets
//! come from the local TUN device (the kernel built them) or were authenticated by WireGuard.
//! [`clamp_tcp_mss`] updates the TCP checksum incrementally, so a packet with a correct checksum
//! keeps a correct one; it must not be given packets whose checksum is left to offload.
#![forbid(unsafe_code)]

mod fragment;
mod icmp;
mod mss;

use core::fmt;
use core::net::IpAddr;

pub use fragment::{fragment_v4, Fragmenter};
pub use icmp::{icmp_too_big, ICMPV4_QUOTE_DATA_LEN, ICMPV6_MAX_LEN};
pub use mss::clamp_tcp_mss;

use crate::wire::{ipv4, ipv6};

/// An IP address family: of the underlay, of the VXLAN VTEPs, or of an inner packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of `addr`.
    pub const fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// Length of the IP header this family puts on an outer packet (no options, no extension
    /// headers): 20 or 40 octets.
    pub const fn ip_header_len(self) -> usize {
        match self {
            Self::V4 => ipv4::HEADER_LEN,
            Self::V6 => ipv6::HEADER_LEN,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

/// UDP header length.
const UDP_HEADER_LEN: usize = 8;
/// WireGuard transport data: 16-octet header (type, receiver index, counter) and the 16-octet
/// Poly1305 tag.
const WIREGUARD_DATA_OVERHEAD: usize = 16 + 16;
/// VXLAN header length.
const VXLAN_HEADER_LEN: usize = 8;
/// The inner Ethernet header VXLAN carries (no 802.1Q tag).
const INNER_ETHERNET_LEN: usize = 14;

/// Smallest MTU of a link that carries IPv4 (RFC 791: every module must be able to forward a
/// 68-octet datagram without fragmenting it).
pub const IPV4_MIN_MTU: u32 = 68;
/// Smallest MTU of a link that carries IPv6 (RFC 8200 section 5).
pub const IPV6_MIN_MTU: u32 = 1280;

/// The smallest link MTU `inner` traffic may be given: [`IPV4_MIN_MTU`] or [`IPV6_MIN_MTU`].
///
/// IPv4's 576 is not a link MTU but the datagram size every host must accept after reassembly
/// (RFC 791, RFC 1122), so it is not the floor here: a pod link with an MTU of 576 or less still
/// works, with fragmentation or PMTUD.
pub const fn min_mtu(inner: Family) -> u32 {
    match inner {
        Family::V4 => IPV4_MIN_MTU,
        Family::V6 => IPV6_MIN_MTU,
    }
}

/// Bytes WireGuard adds to a plaintext IP packet over an `outer` underlay: outer IP header, UDP,
/// and 32 of WireGuard (header and tag). 60 for IPv4, 80 for IPv6.
///
/// WireGuard also pads the plaintext to a multiple of 16, but never beyond the tunnel MTU
/// ([`crate::wireguard::session::padded_len`]), so a packet of at most [`tunnel_mtu`] octets still
/// fits the underlay after padding and the padding is not overhead.
pub const fn wireguard_overhead(outer: Family) -> usize {
    outer.ip_header_len() + UDP_HEADER_LEN + WIREGUARD_DATA_OVERHEAD
}

/// Bytes VXLAN adds to an inner IP packet between VTEPs of `vtep_family`: the inner Ethernet
/// header, VXLAN, UDP and the VTEP IP header. 50 for IPv4 VTEPs, 70 for IPv6 (no 802.1Q tag on
/// the inner frame; a tagged inner frame needs 4 more).
pub const fn vxlan_overhead(vtep_family: Family) -> usize {
    INNER_ETHERNET_LEN + VXLAN_HEADER_LEN + UDP_HEADER_LEN + vtep_family.ip_header_len()
}

/// An MTU below the floor of [`min_mtu`] (or an underlay too small for the overhead at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("MTU {mtu} is below the {family} minimum of {minimum}")]
pub struct BelowMinimum {
    /// The computed MTU (0 when the overhead exceeds the underlay MTU).
    pub mtu: u32,
    /// The family whose floor it misses.
    pub family: Family,
    /// That floor.
    pub minimum: u32,
}

/// Checks `mtu` against the floor for `inner` traffic, returning it unchanged when it is at least
/// [`min_mtu`]`(inner)`.
///
/// [`tunnel_mtu`] and [`pod_mtu`] check only the IPv4 floor (68); a link that also carries IPv6
/// (dual-stack pods) must pass `ensure_min(mtu, Family::V6)` as well: below 1280, Linux disables
/// IPv6 on the link.
pub const fn ensure_min(mtu: u32, inner: Family) -> Result<u32, BelowMinimum> {
    let minimum = min_mtu(inner);
    if mtu < minimum {
        Err(BelowMinimum { mtu, family: inner, minimum })
    } else {
        Ok(mtu)
    }
}

const fn sub_overhead(mtu: u32, overhead: usize) -> u32 {
    // The overheads are constants below 200; the cast cannot truncate.
    mtu.saturating_sub(overhead as u32)
}

/// MTU of a plain (L3) WireGuard tunnel over an underlay of `underlay_mtu`: the underlay MTU minus
/// [`wireguard_overhead`]. 1500 gives 1440 over IPv4 and 1420 over IPv6.
///
/// Saturating; fails when the result is below [`IPV4_MIN_MTU`]. For IPv6 inside the tunnel, also
/// check the result with [`ensure_min`].
pub const fn tunnel_mtu(underlay_mtu: u32, underlay: Family) -> Result<u32, BelowMinimum> {
    ensure_min(sub_overhead(underlay_mtu, wireguard_overhead(underlay)), Family::V4)
}

/// MTU of the pod (overlay) interfaces when VXLAN between VTEPs of family `vtep` runs inside
/// WireGuard over an underlay of `underlay_mtu`: underlay − [`wireguard_overhead`]`(underlay)` −
/// [`vxlan_overhead`]`(vtep)`. 1500 gives 1390 (IPv4 underlay, IPv4 VTEPs), 1370 (one of the two
/// IPv6) and 1350 (both IPv6).
///
/// Saturating; fails when the result is below [`IPV4_MIN_MTU`]. For pods that carry IPv6, also
/// check the result with [`ensure_min`] (1280).
pub const fn pod_mtu(underlay_mtu: u32, underlay: Family, vtep: Family) -> Result<u32, BelowMinimum> {
    let tunnel = sub_overhead(underlay_mtu, wireguard_overhead(underlay));
    ensure_min(sub_overhead(tunnel, vxlan_overhead(vtep)), Family::V4)
}

/// The MSS to clamp TCP SYNs to on a path of `mtu` octets for `family` packets, for
/// [`clamp_tcp_mss`]: the MTU minus the IP header (20 or 40) and the 20-octet TCP header without
/// options. Saturating at 0 and at 65535.
pub const fn max_mss(mtu: u32, family: Family) -> u16 {
    let mss = mtu.saturating_sub((family.ip_header_len() + 20) as u32);
    if mss > u16::MAX as u32 {
        u16::MAX
    } else {
        mss as u16
    }
}

/// What to do with an inner IP packet before encapsulating it, given the path MTU. See
/// [`check_size`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeVerdict {
    /// At most `mtu` octets: encapsulate as is.
    Fits,
    /// IPv4 without DF and larger than `mtu`: split it with [`Fragmenter`] or [`fragment_v4`].
    FragmentV4,
    /// IPv4 with DF, or IPv6, and larger than `mtu`: drop it and answer with [`icmp_too_big`].
    TooBig,
    /// Not an IPv4 or IPv6 packet whose lengths are consistent with the buffer: drop it.
    Malformed,
}

/// Classifies an inner IP packet against the path MTU `mtu` (the largest inner packet the tunnel
/// carries, e.g. [`pod_mtu`]). The size compared is the packet's own length (IPv4 Total Length,
/// IPv6 40 + Payload Length), not the buffer's, so link padding does not count.
///
/// An IPv4 packet gets [`SizeVerdict::FragmentV4`] even when `mtu` is too small for
/// [`Fragmenter::new`] to split it (below its header plus 8 octets); `Fragmenter::new` then fails.
pub fn check_size(packet: &[u8], mtu: usize) -> SizeVerdict {
    match packet.first().map(|b| b >> 4) {
        Some(4) => {
            let Ok(p) = ipv4::Packet::new_checked(packet) else {
                return SizeVerdict::Malformed;
            };
            if usize::from(p.total_len()) <= mtu {
                SizeVerdict::Fits
            } else if p.dont_frag() {
                SizeVerdict::TooBig
            } else {
                SizeVerdict::FragmentV4
            }
        }
        Some(6) => {
            let Ok(p) = ipv6::Packet::new_checked(packet) else {
                return SizeVerdict::Malformed;
            };
            if p.total_len() <= mtu {
                SizeVerdict::Fits
            } else {
                SizeVerdict::TooBig
            }
        }
        _ => SizeVerdict::Malformed,
    }
}

/// Why [`icmp_too_big`], [`Fragmenter`] or [`fragment_v4`] produced nothing. Cheap to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The packet is not a well-formed IPv4 or IPv6 packet (or its IPv4 options or IPv6 extension
    /// headers are malformed).
    #[error("malformed packet: {0}")]
    Malformed(#[from] crate::wire::Error),
    /// The packet is an ICMP or ICMPv6 error message (or an ICMP message whose type cannot be
    /// seen): ICMP errors are never answered with ICMP errors (RFC 1122 3.2.2, RFC 4443 2.4).
    #[error("no ICMP error about an ICMP error")]
    IcmpError,
    /// The packet is an IPv4 fragment other than the first: no ICMP error about it (RFC 1122
    /// 3.2.2).
    #[error("no ICMP error about a non-first fragment")]
    NonFirstFragment,
    /// The packet's source does not name a single host (unspecified, multicast, broadcast) or,
    /// for IPv4, its destination is multicast or broadcast: no ICMP error (RFC 1122 3.2.2, RFC
    /// 4443 2.4 (e) and (f)).
    #[error("no ICMP error for a packet from or (IPv4) to a non-unicast address")]
    NotUnicast,
    /// `src_for_icmp` is not of the packet's family.
    #[error("ICMP source address of the wrong family")]
    FamilyMismatch,
    /// An IPv6 Packet Too Big would carry an MTU below 1280 (or the MTU is otherwise unusable).
    #[error("MTU {mtu} is below the minimum of {minimum}")]
    MtuTooSmall {
        /// The MTU given.
        mtu: usize,
        /// The smallest this operation accepts.
        minimum: usize,
    },
    /// The packet has DF set: it must not be fragmented.
    #[error("don't fragment")]
    DontFragment,
    /// The output buffer is too small.
    #[error("buffer too small: need {needed} bytes, have {actual}")]
    BufferTooSmall {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        actual: usize,
    },
}

#[cfg(test)]
mod tests;
