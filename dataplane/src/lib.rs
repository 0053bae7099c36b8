//! vxwg's packet engine.
//!
//! * [`wire`]: checked zero-copy views of the formats on the wire (WireGuard, IPv4/6, UDP,
//!   Ethernet, VXLAN).
//! * [`wireguard`]: the WireGuard protocol, sans-IO: handshake, cookies, sessions, replay window,
//!   timers, and the [`wireguard::Device`] that composes them.
//! * [`route`]: cryptokey routing (AllowedIPs longest-prefix match).
//!
//! Protocol code never touches sockets, threads or clocks; IO drivers live apart and stay thin.
#![forbid(unsafe_code)]

pub mod route;
pub mod wire;
pub mod wireguard;

#[doc(hidden)]
pub mod fuzzing;
