//! Segmentation and coalescing offloads, sans-IO.
//!
//! With `IFF_VNET_HDR` and TSO enabled on the TUN device, the kernel hands vxwg TCP super-packets
//! of up to 64 KiB, each behind a [`VirtioNetHdr`] that says how to cut it ([`split`]), and with
//! checksums left for vxwg to complete. In the other direction, decrypted TCP segments of one flow
//! are merged back into one super-packet ([`Coalescer`]) so that the kernel's TCP stack takes one
//! large packet instead of dozens: the same trade Linux's own GSO/GRO makes, done where the
//! packets cross between vxwg and the kernel.
//!
//! Checksums: [`split`] writes a complete, verifiable checksum into every segment (the peer may be
//! any WireGuard implementation). A coalesced super-packet is handed to the kernel as
//! `NEEDS_CSUM`, which it does not verify again: the segments were authenticated by the AEAD on
//! the way in, as Linux's own WireGuard trusts them (`CHECKSUM_UNNECESSARY`).
#![forbid(unsafe_code)]

mod coalesce;
mod segment;
mod vnet;

pub use coalesce::{Coalescer, TunWrite, MAX_COALESCED_SEGMENTS, MAX_WRITE_PIECES};
pub use segment::{complete_checksum, split, split_into, SplitError};
pub use vnet::{GsoType, VirtioNetHdr, VNET_HDR_LEN};

#[cfg(test)]
mod tests;
