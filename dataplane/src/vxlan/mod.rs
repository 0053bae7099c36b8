//! The VTEP: VXLAN framing, the forwarding database and the local ARP/NDP responder, sans-IO.
//!
//! * [`fdb`]: per-VNI MAC → remote VTEP table, IP → MAC neighbour table, flood list and
//!   [`FloodPolicy`]. Entries are static (configuration, later the control plane); there is no
//!   learning and nothing floods across the WAN unless the VNI's policy says so.
//! * [`responder`]: answers ARP requests and IPv6 Neighbor Solicitations for known neighbours
//!   locally, so address resolution never leaves the node.
//! * [`encap`]: writes outer IP/UDP/VXLAN headers in front of an inner Ethernet frame that already
//!   sits in the caller's buffer (headroom reserved up front, [`HEADROOM_V4`] / [`HEADROOM_V6`]),
//!   and the mirror image on receive, returning the inner frame as a range of the same buffer.
//!   Both the full outer layer ([`encapsulate`] / [`decapsulate`]) and the VXLAN-only layer
//!   ([`encapsulate_vxlan`] / [`decapsulate_vxlan`], for a kernel UDP socket that builds and strips
//!   IP/UDP itself) are public.
//! * [`arp`]: a checked view of ARP for Ethernet/IPv4 (RFC 826).
//!
//! # No-panic, no-allocation contract
//! Nothing here panics on any input reachable from the network: parsers return [`Error`] or
//! `None`. The per-packet paths (framing, FDB lookups, responders) never allocate; only FDB
//! inserts (configuration) do.
#![forbid(unsafe_code)]

pub mod arp;
pub mod encap;
pub mod fdb;
pub mod responder;

pub use encap::{
    decapsulate, decapsulate_vxlan, encapsulate, encapsulate_vxlan, flow_hash, source_port, Decapsulated, HEADROOM_V4,
    HEADROOM_V6, SOURCE_PORT_RANGE,
};
pub use fdb::{Fdb, FloodPolicy, Forward};
pub use responder::{answer_arp, answer_ndp};

use crate::wire;

/// Why framing or deframing failed. Cheap to copy, for the hot path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A header (outer IP, UDP, VXLAN or the inner Ethernet header) is malformed or truncated, or
    /// a checksum does not verify.
    #[error(transparent)]
    Wire(#[from] wire::Error),
    /// The caller left too little room in front of the frame for the outer headers.
    #[error("headroom too small: need {needed} bytes before the frame, have {actual}")]
    Headroom { needed: usize, actual: usize },
    /// `frame_start..frame_start + frame_len` is not inside the buffer (caller misuse).
    #[error("frame range outside the buffer")]
    FrameOutOfBounds,
    /// The local and remote VTEP addresses are of different families (caller misuse).
    #[error("local and remote VTEP addresses are of different families")]
    MixedFamilies,
    /// The outer packet would exceed 65535 octets.
    #[error("outer packet too large")]
    TooLarge,
    /// The outer packet is not UDP (IPv6 extension headers are not followed).
    #[error("outer packet is not UDP")]
    NotUdp,
    /// The outer UDP destination port is not the VXLAN port.
    #[error("UDP destination port {0} is not the VXLAN port")]
    WrongPort(u16),
}

#[cfg(test)]
mod tests;
