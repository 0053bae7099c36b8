//! Linux IO drivers: the only code in this crate that makes syscalls, and the only code allowed
//! `unsafe` (each block says why it is sound). Deliberately thin: they move bytes between the
//! kernel and caller-owned buffers in batches, and know nothing of WireGuard.
#![allow(unsafe_code)]

pub mod cpu;
pub mod netlink;
pub mod netns;
pub mod poll;
pub mod steering;
pub mod tun;
pub mod udp;

pub use tun::{Offload, Tun};
pub use udp::{RecvMeta, UdpSocket, BATCH};
