//! Cryptokey routing: which peer a destination belongs to (outbound), and whether a decrypted
//! packet's source is one its sender may use (inbound). Longest-prefix match over AllowedIPs.
#![forbid(unsafe_code)]

mod allowed_ips;
mod ipnet;

pub use allowed_ips::AllowedIps;
pub(crate) use ipnet::parse_prefix;
pub use ipnet::{IpNet, IpNetError};
