//! The cross-platform WireGuard configuration protocol ("UAPI") that `wg(8)` speaks to userspace
//! implementations over `/var/run/wireguard/IFNAME.sock`, sans-IO: bytes in, a typed request or a
//! response string out. No sockets, threads or clocks here; the daemon owns the socket.
//!
//! ```text
//! request_len(buf) -> Option<usize>     where the first complete request in `buf` ends
//! parse_request(bytes) -> Request       Get, or Set(DeviceUpdate), validated in full
//!                      -> UapiError     names the line and key; .errno() is EINVAL or EPROTO
//! render_get(&DeviceSnapshot)           the whole get response, ending "errno=0\n\n"
//! render_errno(errno)                   the set response ("errno=0\n\n" on success)
//! UapiModel                             in-memory device with WireGuard's set semantics
//! ```
//!
//! A set request is parsed completely before anything is applied, so a request with a bad line
//! anywhere changes nothing; the caller applies the resulting [`DeviceUpdate`] as one step.
//!
//! wireguard-go's `device/uapi.go` is the reference; [`UapiModel`] and the `wg` oracle test
//! (`control/tests/uapi_wg.rs`) pin the behaviour down. Deliberate differences from it:
//! - A set request with a bad line (say in its third peer) changes nothing. wireguard-go applies
//!   the lines before it (peers 1-2 stay added) and answers the errno; the kernel applies a netlink
//!   request peer by peer too. `wg setconf` / `wg set` parse the whole file or command line before
//!   sending, so their users never send such a request and see no difference.
//! - An error answers `errno=-N` as wireguard-go does, but an unknown operation line also gets an
//!   answer (`EPROTO`) where wireguard-go just closes the connection.
//! - Within one peer, `replace_allowed_ips=true` discards the `allowed_ip` lines before it, and
//!   `remove` / `update_only` apply to the whole peer section wherever they appear. wireguard-go
//!   applies lines one by one, so an `allowed_ip` that precedes them can still take the prefix away
//!   from another peer. `wg` never sends that order.
//! - An IPv6 endpoint with a named scope (`[fe80::1%eth0]:51820`) is refused with `EINVAL`: the
//!   name can only be resolved by a syscall. `wg` names the scope even when given a number.
//! - Lines end in `\n` only; wireguard-go also strips a `\r`.
#![forbid(unsafe_code)]

use core::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use vxwg_dataplane::route::{IpNet, IpNetError};

use crate::keys::{Key, KeyError};

/// `EINVAL` on Linux: a key or value the implementation does not accept.
pub const EINVAL: i32 = 22;
/// `EPROTO` on Linux: the request is not in the protocol's shape (no `=`, no terminating line).
pub const EPROTO: i32 = 71;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `get=1`: answer with [`render_get`].
    Get,
    /// `set=1`: apply the update as one step, then answer with [`render_errno`].
    Set(DeviceUpdate),
}

/// What a set request changes. `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceUpdate {
    /// `Some(None)`: remove the private key (sent as all zeros).
    pub private_key: Option<Option<Key>>,
    /// 0 asks for any free port.
    pub listen_port: Option<u16>,
    /// `Some(None)`: remove the fwmark (sent as 0).
    pub fwmark: Option<Option<u32>>,
    /// Remove every peer before applying `peers`.
    pub replace_peers: bool,
    /// Applied in order; the same public key may appear more than once.
    pub peers: Vec<PeerUpdate>,
}

/// One peer section of a set request (everything from its `public_key` line to the next).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    pub public_key: Key,
    /// Remove the peer; every other field is then ignored.
    pub remove: bool,
    /// Change the peer only if it exists; never create it.
    pub update_only: bool,
    /// `Some(None)`: remove the preshared key (sent as all zeros).
    pub preshared_key: Option<Option<Key>>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; 0 turns persistent keepalive off.
    pub persistent_keepalive: Option<u16>,
    /// Remove the peer's allowed IPs before adding `allowed_ips`.
    pub replace_allowed_ips: bool,
    /// Added to the peer, taking each prefix away from whichever peer had it.
    pub allowed_ips: Vec<IpNet>,
    /// Only 1 is accepted; `None` means 1.
    pub protocol_version: Option<u32>,
}

impl PeerUpdate {
    /// A section that names the peer and changes nothing (it creates the peer if it is new).
    pub fn new(public_key: Key) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
            protocol_version: None,
        }
    }
}

/// What a get request reports about the device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceSnapshot {
    pub private_key: Option<Key>,
    /// 0 (not bound) is left out of the response.
    pub listen_port: u16,
    pub fwmark: Option<u32>,
    /// In the order they are reported.
    pub peers: Vec<PeerSnapshot>,
}

impl DeviceSnapshot {
    /// This configuration as the update `wg setconf` sends: everything replaced.
    pub fn to_setconf(&self) -> DeviceUpdate {
        DeviceUpdate {
            private_key: Some(self.private_key),
            listen_port: Some(self.listen_port),
            fwmark: Some(self.fwmark),
            replace_peers: true,
            peers: self
                .peers
                .iter()
                .map(|p| PeerUpdate {
                    preshared_key: Some(p.preshared_key),
                    endpoint: p.endpoint,
                    persistent_keepalive: Some(p.persistent_keepalive),
                    replace_allowed_ips: true,
                    allowed_ips: p.allowed_ips.clone(),
                    ..PeerUpdate::new(p.public_key)
                })
                .collect(),
        }
    }
}

/// What a get request reports about one peer (always with `protocol_version=1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSnapshot {
    pub public_key: Key,
    pub preshared_key: Option<Key>,
    pub endpoint: Option<SocketAddr>,
    /// Reported as `last_handshake_time_sec`/`_nsec` since the Unix epoch, 0/0 if never.
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Seconds; 0 is off.
    pub persistent_keepalive: u16,
    /// In the order they were added.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerSnapshot {
    /// A peer with nothing configured and no traffic.
    pub fn new(public_key: Key) -> Self {
        Self {
            public_key,
            preshared_key: None,
            endpoint: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: 0,
            allowed_ips: Vec::new(),
        }
    }
}

/// Why a request was refused. Lines are numbered from 1 (the `get=1`/`set=1` line); values that
/// may be secrets (keys) are never echoed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UapiError {
    #[error("line 1: expected \"get=1\" or \"set=1\", got {found:?}")]
    UnknownOperation { found: String },
    #[error("the request is cut short after {line} complete lines (no terminating empty line)")]
    Unterminated { line: usize },
    #[error("line {line}: data after the empty line that ends the request")]
    TrailingData { line: usize },
    #[error("line {line}: not valid UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: expected key=value, found no '='")]
    NotKeyValue { line: usize },
    #[error("line {line}: a get request takes no keys")]
    GetWithKeys { line: usize },
    #[error("line {line}: unknown interface key {key:?}")]
    UnknownDeviceKey { line: usize, key: String },
    #[error("line {line}: unknown peer key {key:?}")]
    UnknownPeerKey { line: usize, key: String },
    #[error("line {line}: peer key {key} before any public_key line")]
    PeerKeyWithoutPeer { line: usize, key: &'static str },
    #[error("line {line}: interface key {key} after a public_key line (interface keys come first)")]
    DeviceKeyInPeer { line: usize, key: &'static str },
    #[error("line {line}: {key} is only reported by get; it cannot be set")]
    ReadOnlyKey { line: usize, key: &'static str },
    #[error("line {line}: invalid {key}: {reason}")]
    InvalidValue { line: usize, key: &'static str, reason: ValueError },
    #[error("line {line}: protocol_version {value:?} is not supported (only 1 is)")]
    UnsupportedProtocolVersion { line: usize, value: String },
}

/// What is wrong with a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{value:?} is not a decimal number")]
    NotDecimal { value: String },
    #[error("{value} is out of range (at most {max})")]
    OutOfRange { value: String, max: u64 },
    #[error("expected \"true\", got {value:?}")]
    NotTrue { value: String },
    #[error("{value:?} is not IPv4:port or [IPv6]:port")]
    Endpoint { value: String },
    #[error("{value:?} names IPv6 scope {scope:?}; only numeric scope ids are supported")]
    NamedScope { value: String, scope: String },
    #[error("{value:?} has no /prefix-length")]
    MissingPrefixLength { value: String },
    #[error("{0}")]
    Prefix(IpNetError),
}

impl UapiError {
    /// The positive `errno.h` value to answer with (through [`render_errno`]): [`EPROTO`] when the
    /// request is not in the protocol's shape, [`EINVAL`] for a key or value it does not accept.
    pub fn errno(&self) -> i32 {
        match self {
            Self::UnknownOperation { .. }
            | Self::Unterminated { .. }
            | Self::TrailingData { .. }
            | Self::NotUtf8 { .. }
            | Self::NotKeyValue { .. } => EPROTO,
            _ => EINVAL,
        }
    }

    /// The line the error is about (1 is the operation line).
    pub fn line(&self) -> usize {
        match self {
            Self::UnknownOperation { .. } => 1,
            Self::Unterminated { line }
            | Self::TrailingData { line }
            | Self::NotUtf8 { line }
            | Self::NotKeyValue { line }
            | Self::GetWithKeys { line }
            | Self::UnknownDeviceKey { line, .. }
            | Self::UnknownPeerKey { line, .. }
            | Self::PeerKeyWithoutPeer { line, .. }
            | Self::DeviceKeyInPeer { line, .. }
            | Self::ReadOnlyKey { line, .. }
            | Self::InvalidValue { line, .. }
            | Self::UnsupportedProtocolVersion { line, .. } => *line,
        }
    }

    /// The key of the offending line, if the line got as far as having one.
    pub fn key(&self) -> Option<&str> {
        match self {
            Self::UnknownDeviceKey { key, .. } | Self::UnknownPeerKey { key, .. } => Some(key),
            Self::PeerKeyWithoutPeer { key, .. }
            | Self::DeviceKeyInPeer { key, .. }
            | Self::ReadOnlyKey { key, .. }
            | Self::InvalidValue { key, .. } => Some(key),
            Self::UnsupportedProtocolVersion { .. } => Some("protocol_version"),
            _ => None,
        }
    }
}

/// The length of the first complete request in `buf` (through its terminating empty line), or
/// `None` if more bytes are needed. A driver reads until this is `Some`, passes that prefix to
/// [`parse_request`] and keeps the rest for the next request on the same connection. It should cap
/// how much it buffers while this is `None`.
pub fn request_len(buf: &[u8]) -> Option<usize> {
    if buf.first() == Some(&b'\n') {
        return Some(1); // an empty operation line: a request of its own, refused by parse_request
    }
    buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2)
}

/// Parses one complete request: the operation line, `key=value` lines, and the empty line that
/// ends it, with nothing after it. Every line is validated before this returns, so an `Ok` is
/// safe to apply and an `Err` means nothing should change.
pub fn parse_request(input: impl AsRef<[u8]>) -> Result<Request, UapiError> {
    let mut lines = Lines::new(input.as_ref());
    let (_, op) = lines.next_line()?;
    let op = match op {
        Some(op) => op,
        None => return Err(UapiError::UnknownOperation { found: String::new() }),
    };
    match op {
        b"get=1" => match lines.next_line()? {
            (_, None) => lines.finish().map(|()| Request::Get),
            (line, Some(_)) => Err(UapiError::GetWithKeys { line }),
        },
        b"set=1" => parse_set(&mut lines).map(Request::Set),
        other => Err(UapiError::UnknownOperation { found: shown(&String::from_utf8_lossy(other)) }),
    }
}

/// Splits a request into `\n`-terminated lines, numbered from 1.
struct Lines<'a> {
    rest: &'a [u8],
    line: usize,
}

impl<'a> Lines<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self { rest: input, line: 0 }
    }

    /// The next line's number and content, `None` content for the terminating empty line.
    fn next_line(&mut self) -> Result<(usize, Option<&'a [u8]>), UapiError> {
        let Some(end) = self.rest.iter().position(|&b| b == b'\n') else {
            return Err(UapiError::Unterminated { line: self.line });
        };
        self.line += 1;
        let line = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Ok((self.line, (!line.is_empty()).then_some(line)))
    }

    /// After the terminating empty line: nothing may follow.
    fn finish(&self) -> Result<(), UapiError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(UapiError::TrailingData { line: self.line + 1 })
        }
    }
}

const DEVICE_KEYS: [&str; 4] = ["private_key", "listen_port", "fwmark", "replace_peers"];
const PEER_KEYS: [&str; 8] = [
    "remove",
    "update_only",
    "preshared_key",
    "endpoint",
    "persistent_keepalive_interval",
    "replace_allowed_ips",
    "allowed_ip",
    "protocol_version",
];
const READ_ONLY_KEYS: [&str; 5] =
    ["last_handshake_time_sec", "last_handshake_time_nsec", "rx_bytes", "tx_bytes", "errno"];

fn known(list: &[&'static str], key: &str) -> Option<&'static str> {
    list.iter().copied().find(|k| *k == key)
}

fn parse_set(lines: &mut Lines<'_>) -> Result<DeviceUpdate, UapiError> {
    let mut update = DeviceUpdate::default();
    let mut peer: Option<PeerUpdate> = None;
    while let (line, Some(text)) = lines.next_line()? {
        let text = core::str::from_utf8(text).map_err(|_| UapiError::NotUtf8 { line })?;
        let (key, value) = text.split_once('=').ok_or(UapiError::NotKeyValue { line })?;
        let invalid = |key: &'static str| move |reason: ValueError| UapiError::InvalidValue { line, key, reason };

        if key == "public_key" {
            let public_key = parse_key(value).map_err(invalid("public_key"))?;
            update.peers.extend(peer.replace(PeerUpdate::new(public_key)));
            continue;
        }
        let Some(p) = peer.as_mut() else {
            match key {
                "private_key" => {
                    update.private_key = Some(parse_maybe_zero_key(value).map_err(invalid("private_key"))?);
                }
                "listen_port" => {
                    update.listen_port = Some(parse_decimal(value, u16::MAX).map_err(invalid("listen_port"))?);
                }
                "fwmark" => {
                    let mark = parse_decimal(value, u32::MAX).map_err(invalid("fwmark"))?;
                    update.fwmark = Some((mark != 0).then_some(mark));
                }
                "replace_peers" => update.replace_peers = parse_true(value).map_err(invalid("replace_peers"))?,
                _ => return Err(misplaced_or_unknown(line, key, false)),
            }
            continue;
        };
        match key {
            "remove" => p.remove = parse_true(value).map_err(invalid("remove"))?,
            "update_only" => p.update_only = parse_true(value).map_err(invalid("update_only"))?,
            "preshared_key" => p.preshared_key = Some(parse_maybe_zero_key(value).map_err(invalid("preshared_key"))?),
            "endpoint" => p.endpoint = Some(parse_endpoint(value).map_err(invalid("endpoint"))?),
            "persistent_keepalive_interval" => {
                let secs = parse_decimal(value, u16::MAX).map_err(invalid("persistent_keepalive_interval"))?;
                p.persistent_keepalive = Some(secs);
            }
            "replace_allowed_ips" => {
                // Replacing drops what this section added so far, as applying the lines in order would.
                p.replace_allowed_ips = parse_true(value).map_err(invalid("replace_allowed_ips"))?;
                p.allowed_ips.clear();
            }
            "allowed_ip" => p.allowed_ips.push(parse_prefix(value).map_err(invalid("allowed_ip"))?),
            "protocol_version" => {
                if value != "1" {
                    return Err(UapiError::UnsupportedProtocolVersion { line, value: shown(value) });
                }
                p.protocol_version = Some(1);
            }
            _ => return Err(misplaced_or_unknown(line, key, true)),
        }
    }
    update.peers.extend(peer);
    lines.finish()?;
    Ok(update)
}

/// The error for a key that is not valid where it stands.
fn misplaced_or_unknown(line: usize, key: &str, in_peer: bool) -> UapiError {
    if let Some(key) = known(&READ_ONLY_KEYS, key) {
        UapiError::ReadOnlyKey { line, key }
    } else if let (false, Some(key)) = (in_peer, known(&PEER_KEYS, key)) {
        UapiError::PeerKeyWithoutPeer { line, key }
    } else if let (true, Some(key)) = (in_peer, known(&DEVICE_KEYS, key)) {
        UapiError::DeviceKeyInPeer { line, key }
    } else if in_peer {
        UapiError::UnknownPeerKey { line, key: shown(key) }
    } else {
        UapiError::UnknownDeviceKey { line, key: shown(key) }
    }
}

/// A value quoted in an error, cut short so a hostile line cannot flood the log.
fn shown(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

fn parse_key(value: &str) -> Result<Key, ValueError> {
    Ok(Key::from_hex(value)?)
}

/// A key where all zeros means "remove".
fn parse_maybe_zero_key(value: &str) -> Result<Option<Key>, ValueError> {
    let key = parse_key(value)?;
    Ok((key.0 != [0; 32]).then_some(key))
}

/// Unsigned decimal digits only (no sign, no spaces), at most `max`.
fn parse_decimal<T: TryFrom<u64>>(value: &str, max: T) -> Result<T, ValueError>
where
    u64: From<T>,
{
    let max = u64::from(max);
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::NotDecimal { value: shown(value) });
    }
    let out_of_range = || ValueError::OutOfRange { value: shown(value), max };
    let n: u64 = value.parse().map_err(|_| out_of_range())?;
    if n > max {
        return Err(out_of_range());
    }
    T::try_from(n).map_err(|_| out_of_range())
}

/// Flags take exactly `true`.
fn parse_true(value: &str) -> Result<bool, ValueError> {
    if value == "true" {
        Ok(true)
    } else {
        Err(ValueError::NotTrue { value: shown(value) })
    }
}

/// `1.2.3.4:51820` or `[2001:db8::1]:51820`, optionally `[fe80::1%2]:51820` (numeric scope).
fn parse_endpoint(value: &str) -> Result<SocketAddr, ValueError> {
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let named_scope = value
        .strip_prefix('[')
        .and_then(|v| v.split_once(']'))
        .and_then(|(host, _)| host.split_once('%'))
        .filter(|(_, scope)| !scope.is_empty() && !scope.bytes().all(|b| b.is_ascii_digit()));
    match named_scope {
        Some((_, scope)) => Err(ValueError::NamedScope { value: shown(value), scope: shown(scope) }),
        None => Err(ValueError::Endpoint { value: shown(value) }),
    }
}

/// `addr/len` with a decimal length; host bits are cleared as WireGuard does.
fn parse_prefix(value: &str) -> Result<IpNet, ValueError> {
    if value.bytes().any(|b| b.is_ascii_whitespace()) {
        return Err(ValueError::Prefix(IpNetError::Address(shown(value))));
    }
    let Some((_, len)) = value.split_once('/') else {
        return Err(ValueError::MissingPrefixLength { value: shown(value) });
    };
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ValueError::Prefix(IpNetError::PrefixLength(shown(len))));
    }
    // IpNet's errors quote the whole address or length; quote them only in part, like every value here.
    value.parse().map_err(|e| {
        ValueError::Prefix(match e {
            IpNetError::Address(a) => IpNetError::Address(shown(&a)),
            IpNetError::PrefixLength(l) => IpNetError::PrefixLength(shown(&l)),
            other => other,
        })
    })
}

/// The complete answer to a get request, in wireguard-go's order, ending with `errno=0` and the
/// empty line: interface keys (private key, listen port and fwmark only when set), then per peer
/// `public_key`, `preshared_key` (zeros if none), `protocol_version`, `endpoint` (when known),
/// `last_handshake_time_sec`/`_nsec`, `tx_bytes`, `rx_bytes`, `persistent_keepalive_interval`
/// and one `allowed_ip` per prefix.
pub fn render_get(device: &DeviceSnapshot) -> String {
    let mut out = String::with_capacity(128 + device.peers.len() * 512);
    let mut kv = |key: &str, value: &dyn core::fmt::Display| {
        let _ = writeln!(out, "{key}={value}");
    };
    if let Some(k) = device.private_key.filter(|k| k.0 != [0; 32]) {
        kv("private_key", &k.to_hex());
    }
    if device.listen_port != 0 {
        kv("listen_port", &device.listen_port);
    }
    if let Some(mark) = device.fwmark.filter(|&m| m != 0) {
        kv("fwmark", &mark);
    }
    for peer in &device.peers {
        kv("public_key", &peer.public_key.to_hex());
        kv("preshared_key", &peer.preshared_key.unwrap_or(Key([0; 32])).to_hex());
        kv("protocol_version", &1);
        if let Some(endpoint) = peer.endpoint {
            kv("endpoint", &endpoint);
        }
        let since_epoch = peer.last_handshake.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).unwrap_or_default();
        kv("last_handshake_time_sec", &since_epoch.as_secs());
        kv("last_handshake_time_nsec", &since_epoch.subsec_nanos());
        kv("tx_bytes", &peer.tx_bytes);
        kv("rx_bytes", &peer.rx_bytes);
        kv("persistent_keepalive_interval", &peer.persistent_keepalive);
        for net in &peer.allowed_ips {
            kv("allowed_ip", net);
        }
    }
    out.push_str("errno=0\n\n");
    out
}

/// The answer to a set request (or to a refused request): `errno=0` on success, otherwise the
/// negated `errno.h` value as wireguard-go sends it, which is what `wg` turns back into a message
/// ("Unable to modify interface: Invalid argument"). `errno` is the positive value (`EINVAL`,
/// [`UapiError::errno`]); a negative one is taken as already negated.
pub fn render_errno(errno: i32) -> String {
    match errno.unsigned_abs() {
        0 => "errno=0\n\n".to_string(),
        n => format!("errno=-{n}\n\n"),
    }
}

impl DeviceUpdate {
    /// This update as a set request, keys in the order `wg` sends them, so that
    /// `parse_request(update.to_request())` gives the update back. For driving another UAPI
    /// implementation (wireguard-go, boringtun) or our own socket.
    pub fn to_request(&self) -> String {
        let mut out = String::from("set=1\n");
        let mut kv = |key: &str, value: &dyn core::fmt::Display| {
            let _ = writeln!(out, "{key}={value}");
        };
        let hex_or_zero = |k: &Option<Key>| k.unwrap_or(Key([0; 32])).to_hex();
        if let Some(k) = &self.private_key {
            kv("private_key", &hex_or_zero(k));
        }
        if let Some(port) = self.listen_port {
            kv("listen_port", &port);
        }
        if let Some(mark) = self.fwmark {
            kv("fwmark", &mark.unwrap_or(0));
        }
        if self.replace_peers {
            kv("replace_peers", &true);
        }
        for p in &self.peers {
            kv("public_key", &p.public_key.to_hex());
            // Before anything that would create or change the peer, as wireguard-go applies lines in order.
            if p.update_only {
                kv("update_only", &true);
            }
            if p.remove {
                kv("remove", &true);
            }
            if let Some(v) = p.protocol_version {
                kv("protocol_version", &v);
            }
            if let Some(k) = &p.preshared_key {
                kv("preshared_key", &hex_or_zero(k));
            }
            if let Some(endpoint) = p.endpoint {
                kv("endpoint", &endpoint);
            }
            if let Some(secs) = p.persistent_keepalive {
                kv("persistent_keepalive_interval", &secs);
            }
            if p.replace_allowed_ips {
                kv("replace_allowed_ips", &true);
            }
            for net in &p.allowed_ips {
                kv("allowed_ip", net);
            }
        }
        out.push('\n');
        out
    }
}

/// An in-memory WireGuard device with the configuration semantics of Linux and wireguard-go: the
/// reference the engine's own `apply` must match, and a stand-in server for testing against `wg`.
///
/// - a new private key removes the peer whose public key it matches; a peer section naming the
///   device's own public key is ignored;
/// - `replace_peers` removes every peer first;
/// - `remove` removes the peer (if any) and ignores the rest of its section;
/// - `update_only` skips a peer that does not exist;
/// - `replace_allowed_ips` clears the peer's prefixes; each added prefix moves from whichever peer
///   had it (prefixes keep the order they were added in, as `wg show` lists them);
/// - a new peer goes to the end of the list, with no traffic and no handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UapiModel {
    device: DeviceSnapshot,
}

impl UapiModel {
    /// An empty device: no key, no port, no peers.
    pub fn new() -> Self {
        Self::default()
    }

    /// A device in the given state (for example with traffic counters to report).
    pub fn from_snapshot(device: DeviceSnapshot) -> Self {
        Self { device }
    }

    /// The state a get request reports.
    pub fn snapshot(&self) -> &DeviceSnapshot {
        &self.device
    }

    /// The state, to simulate what the engine changes by itself (traffic, handshakes, roaming).
    pub fn snapshot_mut(&mut self) -> &mut DeviceSnapshot {
        &mut self.device
    }

    /// Answers one complete request (see [`request_len`]): the get response, or the set response
    /// after applying the update. A refused request changes nothing.
    pub fn handle(&mut self, request: &[u8]) -> String {
        match parse_request(request) {
            Ok(Request::Get) => render_get(&self.device),
            Ok(Request::Set(update)) => {
                self.apply(&update);
                render_errno(0)
            }
            Err(e) => render_errno(e.errno()),
        }
    }

    /// Applies a validated update. It cannot fail: everything that could was checked by
    /// [`parse_request`].
    pub fn apply(&mut self, update: &DeviceUpdate) {
        let device = &mut self.device;
        if let Some(key) = update.private_key {
            device.private_key = key;
            if let Some(key) = key {
                let public = key.public();
                device.peers.retain(|p| p.public_key != public);
            }
        }
        if let Some(port) = update.listen_port {
            device.listen_port = port;
        }
        if let Some(mark) = update.fwmark {
            device.fwmark = mark;
        }
        if update.replace_peers {
            device.peers.clear();
        }
        let own = device.private_key.map(|k| k.public());
        for p in update.peers.iter().filter(|p| Some(p.public_key) != own) {
            Self::apply_peer(&mut device.peers, p);
        }
    }

    fn apply_peer(peers: &mut Vec<PeerSnapshot>, p: &PeerUpdate) {
        let existing = peers.iter().position(|q| q.public_key == p.public_key);
        if p.remove {
            if let Some(i) = existing {
                peers.remove(i);
            }
            return;
        }
        let i = match existing {
            Some(i) => i,
            None if p.update_only => return,
            None => {
                peers.push(PeerSnapshot::new(p.public_key));
                peers.len() - 1
            }
        };
        let peer = &mut peers[i];
        if let Some(psk) = p.preshared_key {
            peer.preshared_key = psk;
        }
        if let Some(endpoint) = p.endpoint {
            peer.endpoint = Some(endpoint);
        }
        if let Some(secs) = p.persistent_keepalive {
            peer.persistent_keepalive = secs;
        }
        if p.replace_allowed_ips {
            peer.allowed_ips.clear();
        }
        for net in &p.allowed_ips {
            for (j, other) in peers.iter_mut().enumerate() {
                if j != i {
                    other.allowed_ips.retain(|n| n != net);
                }
            }
            if !peers[i].allowed_ips.contains(net) {
                peers[i].allowed_ips.push(*net);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn key(byte: u8) -> Key {
        Key([byte; 32])
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn set(body: &str) -> DeviceUpdate {
        match parse_request(format!("set=1\n{body}\n")) {
            Ok(Request::Set(u)) => u,
            other => panic!("{body:?} -> {other:?}"),
        }
    }

    fn set_err(body: &str) -> UapiError {
        parse_request(format!("set=1\n{body}\n")).expect_err(body)
    }

    /// The set example from https://www.wireguard.com/xplatform/.
    const XPLATFORM_SET: &str = "set=1
private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a
fwmark=0
listen_port=12912
replace_peers=true
public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33
preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52
replace_allowed_ips=true
allowed_ip=192.168.4.4/32
endpoint=[abcd:23::33%2]:51820
public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376
replace_allowed_ips=true
allowed_ip=192.168.4.6/32
persistent_keepalive_interval=111
endpoint=182.122.22.19:3233
public_key=662e14fd594556f522604703340351258903b64f35553763f19426ab2a515c58
endpoint=5.152.198.39:51820
replace_allowed_ips=true
allowed_ip=192.168.4.10/32
allowed_ip=192.168.4.11/32
public_key=e818b58db5274087fcc1be5dc728cf53d3b5726b4cef6b9bab8f8f8c2452c25c
remove=true

";

    fn hex(s: &str) -> Key {
        Key::from_hex(s).unwrap()
    }

    #[test]
    fn parses_the_xplatform_example() {
        let Ok(Request::Set(u)) = parse_request(XPLATFORM_SET) else { panic!() };
        assert_eq!(u.private_key, Some(Some(hex("e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a"))));
        assert_eq!(u.fwmark, Some(None), "fwmark=0 removes the mark");
        assert_eq!(u.listen_port, Some(12912));
        assert!(u.replace_peers);
        assert_eq!(u.peers.len(), 4);

        let p = &u.peers[0];
        assert_eq!(p.public_key, hex("b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33"));
        assert_eq!(
            p.preshared_key,
            Some(Some(hex("188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52")))
        );
        assert!(p.replace_allowed_ips);
        assert_eq!(p.allowed_ips, [net("192.168.4.4/32")]);
        let SocketAddr::V6(v6) = p.endpoint.unwrap() else { panic!() };
        assert_eq!((v6.ip().to_string().as_str(), v6.scope_id(), v6.port()), ("abcd:23::33", 2, 51820));
        assert_eq!(p.endpoint.unwrap().to_string(), "[abcd:23::33%2]:51820");

        let p = &u.peers[1];
        assert_eq!(p.persistent_keepalive, Some(111));
        assert_eq!(p.endpoint, Some("182.122.22.19:3233".parse().unwrap()));
        assert_eq!(p.allowed_ips, [net("192.168.4.6/32")]);

        let p = &u.peers[2];
        assert_eq!(p.allowed_ips, [net("192.168.4.10/32"), net("192.168.4.11/32")]);
        assert_eq!((p.preshared_key, p.persistent_keepalive, p.remove), (None, None, false));

        let p = &u.peers[3];
        assert!(p.remove);
        assert_eq!(p.public_key, hex("e818b58db5274087fcc1be5dc728cf53d3b5726b4cef6b9bab8f8f8c2452c25c"));
    }

    #[test]
    fn parses_get_and_every_set_key() {
        assert_eq!(parse_request("get=1\n\n"), Ok(Request::Get));
        assert_eq!(parse_request(b"get=1\n\n"), Ok(Request::Get));
        assert_eq!(parse_request("set=1\n\n"), Ok(Request::Set(DeviceUpdate::default())));

        let zero = "0".repeat(64);
        let u = set(&format!(
            "private_key={zero}\nlisten_port=0\nfwmark=4294967295\npublic_key={a}\nupdate_only=true\n\
             protocol_version=1\npreshared_key={zero}\nendpoint=[::1]:51820\npersistent_keepalive_interval=0\n\
             allowed_ip=10.1.2.3/8\nallowed_ip=fd00::1/64\n",
            a = key(1).to_hex()
        ));
        assert_eq!(u.private_key, Some(None), "an all-zero private key removes it");
        assert_eq!((u.listen_port, u.fwmark, u.replace_peers), (Some(0), Some(Some(u32::MAX)), false));
        let p = &u.peers[0];
        assert!(p.update_only && !p.remove && !p.replace_allowed_ips);
        assert_eq!(p.protocol_version, Some(1));
        assert_eq!(p.preshared_key, Some(None));
        assert_eq!(p.endpoint, Some("[::1]:51820".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(0));
        assert_eq!(p.allowed_ips, [net("10.0.0.0/8"), net("fd00::/64")], "host bits cleared");

        // Uppercase hex is accepted (wireguard-go decodes it too); leading zeros in numbers as well.
        let u = set(&format!("listen_port=00051820\npublic_key={}\n", key(0xab).to_hex().to_uppercase()));
        assert_eq!((u.listen_port, u.peers[0].public_key), (Some(51820), key(0xab)));
    }

    #[test]
    fn peer_sections_keep_their_order_and_repeats() {
        let (a, b) = (key(1).to_hex(), key(2).to_hex());
        let u = set(&format!("public_key={a}\npublic_key={b}\nremove=true\npublic_key={a}\nallowed_ip=10.0.0.0/8\n"));
        let keys: Vec<_> = u.peers.iter().map(|p| p.public_key).collect();
        assert_eq!(keys, [key(1), key(2), key(1)]);
        assert!(u.peers[1].remove && u.peers[2].allowed_ips.len() == 1 && u.peers[0] == PeerUpdate::new(key(1)));

        // replace_allowed_ips drops what the section added before it, as in-order application would.
        let u =
            set(&format!("public_key={a}\nallowed_ip=10.0.0.0/8\nreplace_allowed_ips=true\nallowed_ip=10.9.0.0/16\n"));
        assert_eq!(u.peers[0].allowed_ips, [net("10.9.0.0/16")]);
        // Later interface keys win, as they would applied in order.
        assert_eq!(set("listen_port=1\nlisten_port=2\n").listen_port, Some(2));
    }

    #[test]
    fn every_error_names_its_line_key_and_errno() {
        let a = key(7).to_hex();
        // (request body after "set=1\n", line, key, errno, words the message must contain)
        let cases: Vec<(String, usize, Option<&str>, i32, &str)> = vec![
            ("listen_port".into(), 2, None, EPROTO, "no '='"),
            ("bogus=1\n".into(), 2, Some("bogus"), EINVAL, "unknown interface key"),
            (format!("public_key={a}\nbogus=1\n"), 3, Some("bogus"), EINVAL, "unknown peer key"),
            ("endpoint=1.2.3.4:5\n".into(), 2, Some("endpoint"), EINVAL, "before any public_key"),
            ("allowed_ip=10.0.0.0/8\n".into(), 2, Some("allowed_ip"), EINVAL, "before any public_key"),
            (format!("public_key={a}\nlisten_port=1\n"), 3, Some("listen_port"), EINVAL, "after a public_key"),
            (format!("public_key={a}\nrx_bytes=1\n"), 3, Some("rx_bytes"), EINVAL, "only reported by get"),
            ("errno=0\n".into(), 2, Some("errno"), EINVAL, "only reported by get"),
            (format!("public_key={a}\nprotocol_version=2\n"), 3, Some("protocol_version"), EINVAL, "only 1"),
            ("private_key=abc\n".into(), 2, Some("private_key"), EINVAL, "64 hex digits"),
            (format!("private_key={}zz\n", "0".repeat(62)), 2, Some("private_key"), EINVAL, "position 62"),
            ("public_key=\n".into(), 2, Some("public_key"), EINVAL, "64 hex digits"),
            (format!("public_key={a}\npreshared_key=x\n"), 3, Some("preshared_key"), EINVAL, "hex"),
            ("listen_port=65536\n".into(), 2, Some("listen_port"), EINVAL, "at most 65535"),
            ("listen_port=+1\n".into(), 2, Some("listen_port"), EINVAL, "not a decimal"),
            ("listen_port=\n".into(), 2, Some("listen_port"), EINVAL, "not a decimal"),
            ("listen_port= 1\n".into(), 2, Some("listen_port"), EINVAL, "not a decimal"),
            ("listen_port=99999999999999999999999\n".into(), 2, Some("listen_port"), EINVAL, "out of range"),
            ("fwmark=4294967296\n".into(), 2, Some("fwmark"), EINVAL, "at most 4294967295"),
            ("fwmark=-1\n".into(), 2, Some("fwmark"), EINVAL, "not a decimal"),
            ("replace_peers=false\n".into(), 2, Some("replace_peers"), EINVAL, "expected \"true\""),
            (format!("public_key={a}\nremove=1\n"), 3, Some("remove"), EINVAL, "expected \"true\""),
            (format!("public_key={a}\nupdate_only=yes\n"), 3, Some("update_only"), EINVAL, "expected \"true\""),
            (format!("public_key={a}\nreplace_allowed_ips=\n"), 3, Some("replace_allowed_ips"), EINVAL, "true"),
            (
                format!("public_key={a}\npersistent_keepalive_interval=65536\n"),
                3,
                Some("persistent_keepalive_interval"),
                EINVAL,
                "at most 65535",
            ),
            (format!("public_key={a}\nendpoint=bad\n"), 3, Some("endpoint"), EINVAL, "IPv4:port or [IPv6]:port"),
            (format!("public_key={a}\nendpoint=::1:51820\n"), 3, Some("endpoint"), EINVAL, "[IPv6]:port"),
            (format!("public_key={a}\nendpoint=1.2.3.4:65536\n"), 3, Some("endpoint"), EINVAL, "IPv4:port"),
            (format!("public_key={a}\nendpoint=1.2.3.4\n"), 3, Some("endpoint"), EINVAL, "IPv4:port"),
            (format!("public_key={a}\nendpoint=[fe80::1%eth0]:51820\n"), 3, Some("endpoint"), EINVAL, "scope \"eth0\""),
            (format!("public_key={a}\nallowed_ip=10.0.0.1\n"), 3, Some("allowed_ip"), EINVAL, "no /prefix-length"),
            (format!("public_key={a}\nallowed_ip=10.0.0.0/33\n"), 3, Some("allowed_ip"), EINVAL, "longer than 32"),
            (format!("public_key={a}\nallowed_ip=fd00::/129\n"), 3, Some("allowed_ip"), EINVAL, "longer than 128"),
            (format!("public_key={a}\nallowed_ip=10.0.0/8\n"), 3, Some("allowed_ip"), EINVAL, "invalid IP address"),
            (format!("public_key={a}\nallowed_ip=10.0.0.0/+8\n"), 3, Some("allowed_ip"), EINVAL, "prefix length"),
            (format!("public_key={a}\nallowed_ip=10.0.0.0/8 \n"), 3, Some("allowed_ip"), EINVAL, "invalid IP address"),
        ];
        for (body, line, key, errno, words) in cases {
            let e = set_err(&body);
            let msg = e.to_string();
            assert_eq!((e.line(), e.key(), e.errno()), (line, key, errno), "{body:?}: {msg}");
            assert!(msg.starts_with(&format!("line {line}")), "{body:?}: {msg}");
            assert!(msg.contains(words), "{body:?}: {msg:?} lacks {words:?}");
            if let Some(key) = key {
                assert!(msg.contains(key), "{body:?}: {msg:?} does not name {key}");
            }
        }
    }

    #[test]
    fn framing_errors_are_protocol_errors() {
        let cases: [(&[u8], UapiError); 9] = [
            (b"", UapiError::Unterminated { line: 0 }),
            (b"\n", UapiError::UnknownOperation { found: String::new() }),
            (b"get=2\n\n", UapiError::UnknownOperation { found: "get=2".into() }),
            (b"set=1\nlisten_port=1\n", UapiError::Unterminated { line: 2 }),
            (b"set=1\nlisten_port=1", UapiError::Unterminated { line: 1 }),
            (b"get=1\n", UapiError::Unterminated { line: 1 }),
            (b"set=1\n\nget=1\n\n", UapiError::TrailingData { line: 3 }),
            (b"set=1\nlisten_port=\xff\n\n", UapiError::NotUtf8 { line: 2 }),
            (b"set=1\r\n\n", UapiError::UnknownOperation { found: "set=1\r".into() }),
        ];
        for (input, expected) in cases {
            let e = parse_request(input).unwrap_err();
            assert_eq!(e, expected, "{:?}", String::from_utf8_lossy(input));
            assert_eq!(e.errno(), EPROTO, "{e}");
        }
        let e = parse_request("get=1\nlisten_port=1\n\n").unwrap_err();
        assert_eq!((e.clone(), e.errno()), (UapiError::GetWithKeys { line: 2 }, EINVAL));
        // A hostile operation line is quoted only in part.
        let e = parse_request(format!("{}\n\n", "x".repeat(10_000))).unwrap_err();
        assert!(e.to_string().len() < 200);
    }

    #[test]
    fn secrets_are_never_echoed() {
        let secret = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba5202zz";
        for body in
            [format!("private_key={secret}\n"), format!("public_key={}\npreshared_key={secret}\n", key(1).to_hex())]
        {
            let msg = set_err(&body).to_string();
            assert!(!msg.contains("e84b5a6d"), "{msg}");
        }
        let msg = set_err("e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a\n").to_string();
        assert!(!msg.contains("e84b5a6d"), "{msg}");
    }

    #[test]
    fn request_len_finds_the_terminating_empty_line() {
        assert_eq!(request_len(b""), None);
        assert_eq!(request_len(b"get=1\n"), None);
        assert_eq!(request_len(b"get=1\n\n"), Some(7));
        assert_eq!(request_len(b"get=1\n\nset=1\n\n"), Some(7));
        assert_eq!(request_len(b"set=1\nlisten_port=1\n\nrest"), Some(21));
        assert_eq!(request_len(b"\nget=1\n\n"), Some(1));
    }

    fn sample_snapshot() -> DeviceSnapshot {
        let mut a = PeerSnapshot::new(key(0xa1));
        a.preshared_key = Some(key(0x55));
        a.endpoint = Some("[2001:db8::1]:51820".parse().unwrap());
        a.last_handshake = Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789));
        (a.rx_bytes, a.tx_bytes, a.persistent_keepalive) = (1234, 5678, 25);
        a.allowed_ips = vec![net("10.0.0.0/24"), net("fd00::/64")];
        DeviceSnapshot {
            private_key: Some(key(0x11)),
            listen_port: 51820,
            fwmark: Some(42),
            peers: vec![a, PeerSnapshot::new(key(0xb2))],
        }
    }

    #[test]
    fn get_is_rendered_in_wireguard_go_order() {
        let (k11, ka1, k55, kb2, zero) =
            (key(0x11).to_hex(), key(0xa1).to_hex(), key(0x55).to_hex(), key(0xb2).to_hex(), "0".repeat(64));
        let expected = format!(
            "private_key={k11}\nlisten_port=51820\nfwmark=42\n\
             public_key={ka1}\npreshared_key={k55}\nprotocol_version=1\nendpoint=[2001:db8::1]:51820\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\ntx_bytes=5678\nrx_bytes=1234\n\
             persistent_keepalive_interval=25\nallowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\n\
             public_key={kb2}\npreshared_key={zero}\nprotocol_version=1\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
             persistent_keepalive_interval=0\n\
             errno=0\n\n"
        );
        assert_eq!(render_get(&sample_snapshot()), expected);
        // An empty device reports nothing but the status; unset port and fwmark are left out.
        assert_eq!(render_get(&DeviceSnapshot::default()), "errno=0\n\n");
        let before_epoch = DeviceSnapshot {
            peers: vec![PeerSnapshot {
                last_handshake: Some(UNIX_EPOCH - Duration::from_secs(1)),
                ..PeerSnapshot::new(key(1))
            }],
            ..Default::default()
        };
        assert!(render_get(&before_epoch).contains("last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"));
    }

    #[test]
    fn errno_responses() {
        assert_eq!(render_errno(0), "errno=0\n\n");
        assert_eq!(render_errno(EINVAL), "errno=-22\n\n");
        assert_eq!(render_errno(-EPROTO), "errno=-71\n\n");
        assert_eq!(render_errno(i32::MIN), "errno=-2147483648\n\n");
    }

    #[test]
    fn updates_round_trip_through_the_wire_form() {
        let Ok(Request::Set(u)) = parse_request(XPLATFORM_SET) else { panic!() };
        assert_eq!(parse_request(u.to_request()), Ok(Request::Set(u.clone())));

        let mut p = PeerUpdate::new(key(3));
        (p.update_only, p.protocol_version, p.preshared_key) = (true, Some(1), Some(None));
        (p.endpoint, p.persistent_keepalive) = (Some("[fe80::1%7]:1".parse().unwrap()), Some(0));
        p.allowed_ips = vec![net("0.0.0.0/0"), net("::/0")];
        let u = DeviceUpdate {
            private_key: Some(None),
            listen_port: Some(0),
            fwmark: Some(Some(7)),
            replace_peers: true,
            peers: vec![p, PeerUpdate { remove: true, ..PeerUpdate::new(key(4)) }, PeerUpdate::new(key(5))],
        };
        assert_eq!(parse_request(u.to_request()), Ok(Request::Set(u.clone())));
        assert_eq!(DeviceUpdate::default().to_request(), "set=1\n\n");
    }

    #[test]
    fn model_round_trips_a_configuration_over_the_wire() {
        let mut original = sample_snapshot();
        for p in &mut original.peers {
            (p.rx_bytes, p.tx_bytes, p.last_handshake) = (0, 0, None);
        }
        let mut model = UapiModel::new();
        assert_eq!(model.handle(original.to_setconf().to_request().as_bytes()), "errno=0\n\n");
        assert_eq!(model.snapshot(), &original);
        assert_eq!(model.handle(b"get=1\n\n"), render_get(&original));
    }

    fn model_with(body: &str) -> UapiModel {
        let mut m = UapiModel::new();
        m.apply(&set(body));
        m
    }

    fn ips(m: &UapiModel, k: Key) -> Vec<String> {
        let p = m.snapshot().peers.iter().find(|p| p.public_key == k).expect("peer");
        p.allowed_ips.iter().map(ToString::to_string).collect()
    }

    fn keys(m: &UapiModel) -> Vec<Key> {
        m.snapshot().peers.iter().map(|p| p.public_key).collect()
    }

    #[test]
    fn model_set_semantics() {
        let (a, b, c) = (key(1).to_hex(), key(2).to_hex(), key(3).to_hex());
        let mut m = model_with(&format!(
            "listen_port=51820\nfwmark=9\npublic_key={a}\nallowed_ip=10.1.0.0/16\nallowed_ip=10.2.0.0/16\n\
             persistent_keepalive_interval=25\npublic_key={b}\nallowed_ip=10.3.0.0/16\n"
        ));
        assert_eq!(keys(&m), [key(1), key(2)]);

        // An allowed IP moves from a to b; b's other prefixes stay (no replace).
        m.apply(&set(&format!("public_key={b}\nallowed_ip=10.2.0.0/16\n")));
        assert_eq!(
            (ips(&m, key(1)), ips(&m, key(2))),
            (vec!["10.1.0.0/16".into()], vec!["10.3.0.0/16".into(), "10.2.0.0/16".into()])
        );

        // Re-adding a prefix a peer already has keeps its place; replace_allowed_ips clears first.
        m.apply(&set(&format!("public_key={b}\nallowed_ip=10.3.0.0/16\n")));
        assert_eq!(ips(&m, key(2)), ["10.3.0.0/16", "10.2.0.0/16"]);
        m.apply(&set(&format!("public_key={b}\nreplace_allowed_ips=true\nallowed_ip=10.9.0.0/16\n")));
        assert_eq!(ips(&m, key(2)), ["10.9.0.0/16"]);

        // update_only changes an existing peer and never creates one.
        m.apply(&set(&format!(
            "public_key={a}\nupdate_only=true\npersistent_keepalive_interval=0\npublic_key={c}\nupdate_only=true\nallowed_ip=10.1.0.0/16\n"
        )));
        assert_eq!(keys(&m), [key(1), key(2)]);
        assert_eq!(m.snapshot().peers[0].persistent_keepalive, 0);
        assert_eq!(ips(&m, key(1)), ["10.1.0.0/16"], "the skipped peer took nothing");

        // remove ignores the rest of its section; removing a missing peer is fine.
        m.apply(&set(&format!("public_key={a}\nremove=true\nallowed_ip=10.9.0.0/16\npublic_key={c}\nremove=true\n")));
        assert_eq!(keys(&m), [key(2)]);
        assert_eq!(ips(&m, key(2)), ["10.9.0.0/16"]);

        // replace_peers starts over; fwmark=0 removes the mark; listen_port stays.
        m.apply(&set(&format!("fwmark=0\nreplace_peers=true\npublic_key={c}\n")));
        assert_eq!(keys(&m), [key(3)]);
        assert_eq!((m.snapshot().fwmark, m.snapshot().listen_port), (None, 51820));
        m.apply(&set("replace_peers=true\n"));
        assert!(m.snapshot().peers.is_empty());
    }

    #[test]
    fn model_keys_and_own_public_key() {
        let private = Key::from_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a").unwrap();
        let own = private.public();
        let (zero, psk) = ("0".repeat(64), key(9).to_hex());
        let mut m =
            model_with(&format!("public_key={}\npreshared_key={psk}\npublic_key={}\n", own.to_hex(), key(1).to_hex()));
        assert_eq!(keys(&m), [own, key(1)]);
        assert_eq!(m.snapshot().peers[0].preshared_key, Some(key(9)));

        // Taking a private key removes the peer with the matching public key...
        m.apply(&set(&format!("private_key={}\n", private.to_hex())));
        assert_eq!((m.snapshot().private_key, keys(&m)), (Some(private), vec![key(1)]));
        // ...and a section naming our own public key is ignored, even when it comes with the key.
        m.apply(&set(&format!(
            "private_key={}\npublic_key={}\nallowed_ip=10.0.0.0/8\n",
            private.to_hex(),
            own.to_hex()
        )));
        assert_eq!(keys(&m), [key(1)]);

        // All-zero keys remove.
        m.apply(&set(&format!("public_key={}\npreshared_key={psk}\n", key(1).to_hex())));
        assert_eq!(m.snapshot().peers[0].preshared_key, Some(key(9)));
        m.apply(&set(&format!("private_key={zero}\npublic_key={}\npreshared_key={zero}\n", key(1).to_hex())));
        assert_eq!((m.snapshot().private_key, m.snapshot().peers[0].preshared_key), (None, None));
        // With no private key, a peer with the old public key is accepted again.
        m.apply(&set(&format!("public_key={}\n", own.to_hex())));
        assert_eq!(keys(&m), [key(1), own]);
    }

    #[test]
    fn refused_requests_change_nothing() {
        let a = key(1).to_hex();
        let mut m = model_with(&format!("listen_port=51820\npublic_key={a}\nallowed_ip=10.0.0.0/8\n"));
        let before = m.clone();
        for (request, response) in [
            (
                format!("set=1\nlisten_port=1\nreplace_peers=true\npublic_key={a}\nprotocol_version=2\n\n"),
                "errno=-22\n\n",
            ),
            (format!("set=1\nprivate_key={a}\npublic_key={a}\nendpoint=bad\n\n"), "errno=-22\n\n"),
            ("set=1\nreplace_peers=true\nlisten_port\n\n".to_string(), "errno=-71\n\n"),
            ("set=1\nreplace_peers=true\n".to_string(), "errno=-71\n\n"),
            ("bogus=1\n\n".to_string(), "errno=-71\n\n"),
        ] {
            assert_eq!(m.handle(request.as_bytes()), response, "{request:?}");
            assert_eq!(m, before, "{request:?} changed the model");
        }
    }
}
