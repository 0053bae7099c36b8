//! vxwg's packet engine.
//!
//! * [`wire`]: checked zero-copy views of the formats on the wire (WireGuard, IPv4/6, UDP,
//!   Ethernet, VXLAN).
//! * [`wireguard`]: the WireGuard protocol, sans-IO: handshake, cookies, sessions, replay window,
//!   timers, and the [`wireguard::Device`] that composes them.
//! * [`engine`]: the batch pipeline composing wire, WireGuard and routing.
//! * [`route`]: cryptokey routing (AllowedIPs longest-prefix match).
//! * [`vxlan`]: the VTEP, sans-IO: VXLAN framing in one buffer, the forwarding database, local
//!   ARP/NDP answers.
//! * [`mtu`]: pod and tunnel MTU arithmetic, ICMP too-big answers, inner IPv4 fragmentation, MSS
//!   clamping.
//! * [`io`] (Linux): the thin syscall layer — TUN device, batched UDP sockets.
//! * [`assist`]: one batch's decryption shared between threads (idle workers help the one that
//!   receives a peer's traffic).
//!
//! Protocol code never touches sockets, threads or clocks; IO drivers live apart and stay thin.
// Protocol modules forbid unsafe code; only `io` (the syscall layer) and `assist` (helpers
// writing into the owner's buffers) may use it.
#![deny(unsafe_code)]

pub mod assist;
pub mod engine;
#[cfg(target_os = "linux")]
pub mod io;
pub mod mtu;
pub mod offload;
pub mod route;
pub mod vxlan;
pub mod wire;
pub mod wireguard;

#[doc(hidden)]
pub mod fuzzing;
