//! One peer's protocol state: its keys, the handshake in flight, up to three sessions, timers,
//! staged packets and counters.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::cookie::CookieState;
use super::handshake::{InitiatorState, PeerKeys};
use super::session::Keypair;
use super::timers::Timers;

/// Handle of a peer inside one [`super::Device`]; stable until the peer is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub(crate) u32);

impl PeerId {
    /// The slot number (for tables indexed by peer).
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// How a peer is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// The peer's static public key.
    pub public_key: [u8; 32],
    /// Optional preshared key mixed into the handshake.
    pub preshared_key: Option<[u8; 32]>,
    /// Where to send to, until the peer roams.
    pub endpoint: Option<SocketAddr>,
    /// Send a keepalive after this much silence, to keep NAT mappings open.
    pub persistent_keepalive: Option<Duration>,
}

impl PeerConfig {
    /// A peer known only by its public key.
    pub fn new(public_key: [u8; 32]) -> Self {
        Self { public_key, preshared_key: None, endpoint: None, persistent_keepalive: None }
    }
}

/// The handshake a peer has in flight.
pub(crate) enum HandshakeSlot {
    None,
    /// We sent an initiation with this index and await the response.
    InitiationSent {
        local_index: u32,
        state: InitiatorState,
    },
}

/// Counters and times reported to operators (`wg show`, `vxwg status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Bytes of WireGuard datagrams received and authenticated.
    pub rx_bytes: u64,
    /// Bytes of WireGuard datagrams sent.
    pub tx_bytes: u64,
    /// Wall-clock time of the last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Handshakes completed.
    pub handshakes: u64,
}

pub(crate) struct Peer {
    pub keys: PeerKeys,
    pub cookie: CookieState,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<Duration>,
    pub handshake: HandshakeSlot,
    pub previous: Option<Box<Keypair>>,
    pub current: Option<Box<Keypair>>,
    pub next: Option<Box<Keypair>>,
    pub timers: Timers,
    pub staged: VecDeque<Vec<u8>>,
    /// Greatest initiation timestamp accepted from this peer (replay protection).
    pub greatest_timestamp: [u8; 12],
    pub last_initiation_consumed: Option<Instant>,
    pub last_initiation_sent: Option<Instant>,
    pub handshake_attempts: u32,
    pub sent_lastminute_handshake: bool,
    pub need_another_keepalive: bool,
    pub stats: PeerStats,
    /// The tunnel MTU of this peer's path when it is below the device's (caps padding).
    pub path_mtu: Option<usize>,
}

impl Peer {
    /// The MTU padding is capped at for this peer: the device's, or its smaller path's.
    pub fn padding_mtu(&self, device_mtu: usize) -> usize {
        self.path_mtu.map_or(device_mtu, |m| m.min(device_mtu))
    }

    pub fn new(keys: PeerKeys, cookie: CookieState, config: &PeerConfig) -> Self {
        Self {
            keys,
            cookie,
            endpoint: config.endpoint,
            persistent_keepalive: config.persistent_keepalive.filter(|d| !d.is_zero()),
            handshake: HandshakeSlot::None,
            previous: None,
            current: None,
            next: None,
            timers: Timers::default(),
            staged: VecDeque::new(),
            greatest_timestamp: [0; 12],
            last_initiation_consumed: None,
            last_initiation_sent: None,
            handshake_attempts: 0,
            sent_lastminute_handshake: false,
            need_another_keepalive: false,
            stats: PeerStats::default(),
            path_mtu: None,
        }
    }

    /// The keypair holding `index`, if any, and which slot it is in.
    #[inline]
    pub fn keypair_mut(&mut self, index: u32) -> Option<(&mut Keypair, Slot)> {
        if let Some(k) = self.current.as_deref_mut().filter(|k| k.local_index == index) {
            return Some((k, Slot::Current));
        }
        if let Some(k) = self.next.as_deref_mut().filter(|k| k.local_index == index) {
            return Some((k, Slot::Next));
        }
        if let Some(k) = self.previous.as_deref_mut().filter(|k| k.local_index == index) {
            return Some((k, Slot::Previous));
        }
        None
    }

    /// Local indices currently in use by this peer (handshake and keypairs).
    pub fn local_indices(&self) -> impl Iterator<Item = u32> + '_ {
        let hs = match &self.handshake {
            HandshakeSlot::InitiationSent { local_index, .. } => Some(*local_index),
            HandshakeSlot::None => None,
        };
        hs.into_iter().chain([&self.previous, &self.current, &self.next].into_iter().flatten().map(|k| k.local_index))
    }
}

/// Which keypair slot a keypair sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Previous,
    Current,
    Next,
}
