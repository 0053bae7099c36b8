//! IP prefixes (`10.42.0.0/16`, `fd00::/64`) as WireGuard's AllowedIPs and routes use them.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

/// An IP prefix with its host bits cleared (as Linux stores AllowedIPs: `10.0.0.7/8` is `10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    #[error("invalid IP address {0:?}")]
    Address(String),
    #[error("invalid prefix length {0:?}")]
    PrefixLength(String),
    #[error("prefix length {len} is longer than {max} for this address family")]
    PrefixTooLong { len: u8, max: u8 },
}

impl IpNet {
    /// A prefix; host bits are cleared. Fails if `prefix_len` exceeds the family's width.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, IpNetError> {
        let max = max_len(addr);
        if prefix_len > max {
            return Err(IpNetError::PrefixTooLong { len: prefix_len, max });
        }
        Ok(Self { addr: mask(addr, prefix_len), prefix_len })
    }

    /// A single-address prefix (/32 or /128).
    pub fn host(addr: IpAddr) -> Self {
        Self { addr, prefix_len: max_len(addr) }
    }

    /// The network address (host bits zero).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// True for IPv4 prefixes.
    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix_len) == self.addr
    }
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// Splits `addr/len` (or a bare `addr`, meaning a single host) into its parts. Shared by every
/// prefix-shaped type (this one, and interface addresses, which keep their host bits).
pub(crate) fn parse_prefix(s: &str) -> Result<(IpAddr, u8), IpNetError> {
    let s = s.trim();
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| IpNetError::Address(a.to_string()))?;
    let len = match len {
        None => max_len(addr),
        Some(l) => l.parse().map_err(|_| IpNetError::PrefixLength(l.to_string()))?,
    };
    Ok((addr, len))
}

impl FromStr for IpNet {
    type Err = IpNetError;

    /// `addr/len`, or a bare address meaning a single host.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = parse_prefix(s)?;
        Self::new(addr, len)
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_masks_and_displays() {
        let n: IpNet = "10.42.7.9/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.42.0.0/16");
        assert!(n.contains("10.42.255.1".parse().unwrap()));
        assert!(!n.contains("10.43.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        assert_eq!("fd00::1".parse::<IpNet>().unwrap().to_string(), "fd00::1/128");
        assert_eq!("0.0.0.0/0".parse::<IpNet>().unwrap().prefix_len(), 0);
        assert!("::/0".parse::<IpNet>().unwrap().contains("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn errors_name_the_problem() {
        assert_eq!("10.0.0.0/33".parse::<IpNet>(), Err(IpNetError::PrefixTooLong { len: 33, max: 32 }));
        assert_eq!("10.0.0/8".parse::<IpNet>(), Err(IpNetError::Address("10.0.0".into())));
        assert_eq!("10.0.0.0/x".parse::<IpNet>(), Err(IpNetError::PrefixLength("x".into())));
        assert!("fd00::/129".parse::<IpNet>().is_err());
    }
}
