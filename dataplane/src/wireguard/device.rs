//! [`Device`]: our static identity, the peer table (by public key and by receiver index), and the
//! three entry points an IO driver calls — [`Device::encapsulate`] for a packet to send,
//! [`Device::decapsulate`] for a datagram received, [`Device::handle_timeout`] when the deadline
//! from [`Device::poll_timeout`] passes — plus [`Device::poll_transmit`] to drain what the
//! protocol itself wants to send (handshakes, cookie replies, keepalives, staged packets).
//!
//! The data path also comes split, for callers that share one device between worker threads
//! behind a lock and want the AEAD outside it: [`Device::plan_send`] reserves send counters for
//! a run and returns a [`SendPlan`] whose [`SendBlock`] seals on any thread; receive is
//! [`Device::plan_decapsulate`] (keypair lookup, replay pre-check) → [`OpenTicket::open`] (any
//! thread) → [`Device::commit_decapsulate`] (replay commit after authentication, bookkeeping).
//! [`Device::encapsulate`], [`Device::encapsulate_batch`] and [`Device::decapsulate`] are those
//! phases back to back. A batch planned ahead of its commits stops before any handshake message
//! ([`is_handshake_message`]), which would otherwise change sessions under packets planned
//! before it.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rand_core::{CryptoRng, RngCore};

use super::aead::DefaultAead;
use super::constants::*;
use super::cookie::{CookieChecker, CookieReplyError, CookieState, MacVerdict, RateLimiter};
use super::error::{DropReason, PeerError, RecvError, SendError};
use super::handshake::{
    consume_initiation, consume_response, create_initiation, create_response, decrypt_initiator_static, tai64n,
    PeerKeys, StaticIdentity,
};
use super::peer::{HandshakeSlot, Peer, PeerConfig, PeerId, PeerStats, Slot};
use super::session::{open_payload, padded_len, Keypair, OpenFailure, SendBlock};
use super::timers::TimerKind;
use super::{PublicKey, StaticSecret};
use crate::wire::wireguard::{
    CookieReply, Initiation, MessageType, Response, TransportData, COOKIE_REPLY_LEN, DATA_HEADER_LEN, INITIATION_LEN,
    RESPONSE_LEN, TAG_LEN,
};

/// Device-wide settings.
#[derive(Clone)]
pub struct DeviceConfig {
    /// Our static private key.
    pub private_key: [u8; 32],
    /// MTU of the tunnel interface: plaintexts are padded up to a multiple of 16 but never past it.
    pub mtu: usize,
    /// Handshake messages per second above which we answer with cookie replies instead of doing
    /// Diffie-Hellman (0: always demand a cookie).
    pub under_load_threshold: u32,
}

impl DeviceConfig {
    /// Defaults: MTU 1420, under load above 512 handshake messages a second (Linux's queue-based
    /// threshold, expressed as a rate).
    pub fn new(private_key: [u8; 32]) -> Self {
        Self { private_key, mtu: 1420, under_load_threshold: 512 }
    }
}

impl core::fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("mtu", &self.mtu)
            .field("under_load_threshold", &self.under_load_threshold)
            .finish_non_exhaustive()
    }
}

/// A datagram the protocol wants sent. Control traffic only (handshakes, cookie replies,
/// keepalives, packets staged during a handshake): the data path never goes through here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The peer it concerns (none for a cookie reply to an unauthenticated source).
    pub peer: Option<PeerId>,
    /// Where to send it.
    pub dst: SocketAddr,
    /// The WireGuard message.
    pub payload: Vec<u8>,
}

/// Outcome of [`Device::encapsulate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encapsulated {
    /// `buf[..len]` is a transport message to send to `dst`.
    Ready { len: usize, dst: SocketAddr },
    /// No usable session: the packet was copied aside and a handshake started; it goes out
    /// through [`Device::poll_transmit`] once the handshake completes.
    Staged,
}

/// Outcome of [`Device::decapsulate`] for a datagram that was accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Received<'a> {
    /// A decrypted inner IP packet (padding stripped), in place inside the datagram buffer.
    Packet { peer: PeerId, packet: &'a mut [u8] },
    /// An authenticated keepalive.
    Keepalive { peer: PeerId },
    /// A handshake initiation was accepted and a response queued.
    HandshakeInitiation { peer: PeerId },
    /// Our initiation was answered: a new session is in use.
    HandshakeComplete { peer: PeerId },
    /// A cookie reply to one of our handshake messages was taken.
    CookieReply { peer: PeerId },
    /// We are under load and the sender had no valid cookie: a cookie reply was queued.
    CookieReplySent,
}

/// A run of packets for one peer with its send counters reserved ([`Device::plan_send`]): seal
/// them with [`SendBlock::seal`], on any thread, and send them to `dst`.
#[derive(Debug, Clone)]
pub struct SendPlan {
    /// The reserved counters and the key, one counter per packet of the run, in order.
    pub block: SendBlock,
    /// Where the run goes.
    pub dst: SocketAddr,
    /// Packets of the run whose buffer has room to be sealed (the others are skipped).
    pub sealable: usize,
}

/// A transport-data message whose keypair and counter passed the checks before decryption
/// ([`Device::plan_decapsulate`]). Open it with [`OpenTicket::open`] on any thread, then hand the
/// outcome to [`Device::commit_decapsulate`].
#[derive(Clone)]
pub struct OpenTicket {
    /// The peer the keypair belongs to.
    pub peer: PeerId,
    /// The receiver index the message carried (names the keypair).
    pub local_index: u32,
    /// The message's counter.
    pub counter: u64,
    key: Arc<DefaultAead>,
}

impl core::fmt::Debug for OpenTicket {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("OpenTicket")
            .field("peer", &self.peer)
            .field("local_index", &self.local_index)
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl OpenTicket {
    /// Decrypts the message's payload (`datagram[16..]`: ciphertext || tag) in place; returns the
    /// plaintext length. Commits nothing.
    #[inline]
    pub fn open(&self, payload: &mut [u8]) -> Result<usize, OpenFailure> {
        open_payload(&self.key, self.counter, payload)
    }
}

/// Outcome of [`Device::plan_decapsulate`].
#[derive(Debug)]
pub enum ReceivePlan {
    /// Transport data to decrypt, then commit.
    Open(OpenTicket),
    /// A control message, handled completely.
    Done(Received<'static>),
}

/// True if `datagram` is a well-formed handshake message (initiation, response or cookie reply):
/// one that [`Device::plan_decapsulate`] handles completely, possibly changing sessions, instead
/// of turning it into an [`OpenTicket`]. Looks at the type and length only: cheap enough to ask
/// for every datagram of a batch.
#[inline]
pub fn is_handshake_message(datagram: &[u8]) -> bool {
    matches!(MessageType::classify(datagram), Ok(t) if t != MessageType::TransportData)
}

/// Hasher for the receiver-index table. Indices are random values *we* chose, so a remote sender
/// can pick which key to look up but cannot make us insert colliding ones: a multiplicative hash
/// is as safe here as SipHash and several times cheaper on the per-packet path.
#[derive(Default, Clone, Copy)]
struct IndexHash(u64);

impl std::hash::Hasher for IndexHash {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IndexHasher = std::hash::BuildHasherDefault<IndexHash>;

/// Everything peers share: identity, index table, RNG, transmit queue.
struct Shared {
    identity: StaticIdentity,
    by_index: HashMap<u32, PeerId, IndexHasher>,
    rng: Box<dyn RngCore + Send>,
    transmits: VecDeque<Transmit>,
    mtu: usize,
    clock_base: (Instant, SystemTime),
}

impl Shared {
    fn wall(&self, now: Instant) -> SystemTime {
        self.clock_base.1 + now.saturating_duration_since(self.clock_base.0)
    }

    fn allocate_index(&mut self, peer: PeerId) -> u32 {
        loop {
            let index = self.rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(e) = self.by_index.entry(index) {
                e.insert(peer);
                return index;
            }
        }
    }

    fn jitter(&mut self) -> Duration {
        Duration::from_nanos(u64::from(self.rng.next_u32()) % REKEY_TIMEOUT_JITTER_MAX.as_nanos() as u64)
    }
}

/// A WireGuard interface's protocol state. See the module documentation for the call protocol.
pub struct Device {
    shared: Shared,
    peers: Vec<Option<Peer>>,
    free_slots: Vec<u32>,
    by_key: HashMap<[u8; 32], PeerId>,
    checker: CookieChecker,
    rate_limiter: RateLimiter,
    under_load_threshold: u32,
    load_window: (Instant, u32),
    under_load_until: Option<Instant>,
    drops: [u64; DropReason::ALL.len()],
}

impl Device {
    /// A device with no peers. `rng` supplies every random value the protocol uses (ephemeral
    /// keys, indices, cookie secrets, jitter); `now` and `wall` pair the monotonic clock the caller
    /// will pass in with wall-clock time, once, for TAI64N timestamps and handshake times.
    pub fn new<R>(config: DeviceConfig, rng: R, now: Instant, wall: SystemTime) -> Self
    where
        R: RngCore + CryptoRng + Send + 'static,
    {
        let identity = StaticIdentity::new(StaticSecret::from(config.private_key));
        let checker = CookieChecker::new(identity.public().as_bytes());
        Self {
            shared: Shared {
                identity,
                by_index: HashMap::default(),
                rng: Box::new(rng),
                transmits: VecDeque::new(),
                mtu: config.mtu,
                clock_base: (now, wall),
            },
            peers: Vec::new(),
            free_slots: Vec::new(),
            by_key: HashMap::new(),
            checker,
            rate_limiter: RateLimiter::default(),
            under_load_threshold: config.under_load_threshold,
            load_window: (now, 0),
            under_load_until: None,
            drops: [0; DropReason::ALL.len()],
        }
    }

    /// Our static public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.shared.identity.public().to_bytes()
    }

    /// The tunnel MTU used for padding.
    pub fn mtu(&self) -> usize {
        self.shared.mtu
    }

    /// Changes the tunnel MTU used for padding.
    pub fn set_mtu(&mut self, mtu: usize) {
        self.shared.mtu = mtu;
    }

    /// Caps padding for one peer at `mtu` (the tunnel MTU its underlay path allows, when that is
    /// below the device's), so a full-size packet to it still fits the path; `None` lifts the cap.
    pub fn set_peer_path_mtu(&mut self, id: PeerId, mtu: Option<usize>) {
        if let Some(peer) = self.peers.get_mut(id.index()).and_then(Option::as_mut) {
            peer.path_mtu = mtu;
        }
    }

    /// The tunnel MTU of a peer's path, if one was set ([`Device::set_peer_path_mtu`]).
    pub fn peer_path_mtu(&self, id: PeerId) -> Option<usize> {
        self.peers.get(id.index()).and_then(Option::as_ref).and_then(|p| p.path_mtu)
    }

    /// Adds a peer.
    pub fn add_peer(&mut self, config: PeerConfig) -> Result<PeerId, PeerError> {
        if self.by_key.contains_key(&config.public_key) {
            return Err(PeerError::Duplicate);
        }
        if config.public_key == self.public_key() {
            return Err(PeerError::OwnKey);
        }
        let keys = PeerKeys::new(&self.shared.identity, PublicKey::from(config.public_key), config.preshared_key)
            .map_err(|_| PeerError::LowOrderKey)?;
        let mut peer = Peer::new(keys, CookieState::new(&config.public_key), &config);
        if peer.persistent_keepalive.is_some() {
            // As Linux does when the interval is set: a keepalive (hence a handshake) right away,
            // so a peer behind NAT becomes reachable without waiting for traffic.
            peer.timers.set(TimerKind::PersistentKeepalive, self.shared.clock_base.0);
        }
        let id = match self.free_slots.pop() {
            Some(slot) => {
                self.peers[slot as usize] = Some(peer);
                PeerId(slot)
            }
            None => {
                self.peers.push(Some(peer));
                PeerId(self.peers.len() as u32 - 1)
            }
        };
        self.by_key.insert(config.public_key, id);
        Ok(id)
    }

    /// Removes a peer and every session, index and queued transmit it had.
    pub fn remove_peer(&mut self, id: PeerId) -> bool {
        let Some(peer) = self.peers.get_mut(id.index()).and_then(Option::take) else {
            return false;
        };
        for index in peer.local_indices() {
            self.shared.by_index.remove(&index);
        }
        self.by_key.remove(peer.keys.public.as_bytes());
        self.shared.transmits.retain(|t| t.peer != Some(id));
        self.free_slots.push(id.0);
        true
    }

    /// The peer with this public key.
    pub fn peer_by_key(&self, public_key: &[u8; 32]) -> Option<PeerId> {
        self.by_key.get(public_key).copied()
    }

    /// All peers.
    pub fn peer_ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.iter().enumerate().filter(|(_, p)| p.is_some()).map(|(i, _)| PeerId(i as u32))
    }

    fn peer(&self, id: PeerId) -> Option<&Peer> {
        self.peers.get(id.index()).and_then(Option::as_ref)
    }

    /// A peer's public key.
    pub fn peer_public_key(&self, id: PeerId) -> Option<[u8; 32]> {
        self.peer(id).map(|p| p.keys.public.to_bytes())
    }

    /// A peer's current endpoint (configured, or learned from its last authenticated packet).
    pub fn peer_endpoint(&self, id: PeerId) -> Option<SocketAddr> {
        self.peer(id).and_then(|p| p.endpoint)
    }

    /// Sets a peer's endpoint.
    pub fn set_peer_endpoint(&mut self, id: PeerId, endpoint: Option<SocketAddr>) {
        if let Some(p) = self.peers.get_mut(id.index()).and_then(Option::as_mut) {
            p.endpoint = endpoint;
        }
    }

    /// A peer's preshared key, if one is set.
    pub fn peer_preshared_key(&self, id: PeerId) -> Option<[u8; 32]> {
        self.peer(id).map(|p| p.keys.preshared).filter(|k| *k != [0; 32])
    }

    /// A peer's persistent-keepalive interval.
    pub fn peer_persistent_keepalive(&self, id: PeerId) -> Option<Duration> {
        self.peer(id).and_then(|p| p.persistent_keepalive)
    }

    /// Sets (or clears) a peer's preshared key; takes effect from the next handshake.
    pub fn set_peer_preshared_key(&mut self, id: PeerId, preshared_key: Option<[u8; 32]>) {
        if let Some(p) = self.peers.get_mut(id.index()).and_then(Option::as_mut) {
            if let Ok(keys) = PeerKeys::new(&self.shared.identity, p.keys.public, preshared_key) {
                p.keys = keys;
            }
        }
    }

    /// Sets (or clears) a peer's persistent keepalive; a new interval sends one at once, as Linux.
    pub fn set_peer_persistent_keepalive(&mut self, id: PeerId, interval: Option<Duration>, now: Instant) {
        if let Some(p) = self.peers.get_mut(id.index()).and_then(Option::as_mut) {
            p.persistent_keepalive = interval.filter(|d| !d.is_zero());
            match p.persistent_keepalive {
                Some(_) => p.timers.set(TimerKind::PersistentKeepalive, now),
                None => p.timers.cancel(TimerKind::PersistentKeepalive),
            }
        }
    }

    /// Replaces our static key. Every session and handshake in flight is dropped (they were
    /// keyed by the old identity); a peer whose public key equals the new one is removed, as
    /// Linux does. Returns the peers removed that way.
    pub fn set_private_key(&mut self, private_key: [u8; 32]) -> Vec<PeerId> {
        let identity = StaticIdentity::new(StaticSecret::from(private_key));
        if identity.public().as_bytes() == self.shared.identity.public().as_bytes() {
            return Vec::new();
        }
        self.checker = CookieChecker::new(identity.public().as_bytes());
        self.shared.identity = identity;
        let own = self.public_key();
        let mut removed = Vec::new();
        for slot in 0..self.peers.len() {
            let id = PeerId(slot as u32);
            let Some(peer) = self.peers[slot].as_mut() else { continue };
            if peer.keys.public.as_bytes() == &own {
                removed.push(id);
                continue;
            }
            for index in peer.local_indices().collect::<Vec<_>>() {
                self.shared.by_index.remove(&index);
            }
            peer.handshake = HandshakeSlot::None;
            peer.previous = None;
            peer.current = None;
            peer.next = None;
            let preshared = Some(peer.keys.preshared).filter(|k| *k != [0; 32]);
            match PeerKeys::new(&self.shared.identity, peer.keys.public, preshared) {
                Ok(keys) => peer.keys = keys,
                Err(_) => removed.push(id),
            }
        }
        for id in &removed {
            self.remove_peer(*id);
        }
        removed
    }

    /// A peer's counters.
    pub fn peer_stats(&self, id: PeerId) -> Option<PeerStats> {
        self.peer(id).map(|p| p.stats)
    }

    /// Whether the peer has a session we can send on now.
    pub fn has_session(&self, id: PeerId, now: Instant) -> bool {
        self.peer(id).and_then(|p| p.current.as_ref()).is_some_and(|k| k.can_send(now))
    }

    /// Datagrams dropped, by reason.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.drops[r as usize]))
    }

    /// Datagrams dropped for one reason.
    pub fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Starts a handshake with a peer now (as `wg`'s first packet would), unless one was sent
    /// less than REKEY_TIMEOUT ago.
    pub fn initiate_handshake(&mut self, id: PeerId, now: Instant) {
        if let Some(peer) = self.peers.get_mut(id.index()).and_then(Option::as_mut) {
            send_initiation(peer, id, &mut self.shared, now, false);
        }
    }

    /// Encrypts one packet for `peer` in place.
    ///
    /// `buf[HEADROOM..HEADROOM + payload_len]` holds the plaintext IP packet, and `buf` extends at
    /// least [`super::TAILROOM`] bytes past it. On [`Encapsulated::Ready`], `buf[..len]` is the
    /// transport message. No allocation happens unless the packet must be staged.
    #[inline]
    pub fn encapsulate(
        &mut self,
        id: PeerId,
        buf: &mut [u8],
        payload_len: usize,
        now: Instant,
    ) -> Result<Encapsulated, SendError> {
        let Some(plan) = self.plan_send_one(id, buf, payload_len, now)? else {
            return Ok(Encapsulated::Staged);
        };
        let needed = plan.block.message_len(payload_len);
        let len =
            plan.block.seal(0, buf, payload_len).ok_or(SendError::BufferTooSmall { needed, actual: buf.len() })?;
        Ok(Encapsulated::Ready { len, dst: plan.dst })
    }

    /// [`Device::plan_send`] for one packet laid out as for [`Device::encapsulate`]; a buffer
    /// without room for the sealed message is refused before anything else (even staging).
    pub fn plan_send_one(
        &mut self,
        id: PeerId,
        buf: &[u8],
        payload_len: usize,
        now: Instant,
    ) -> Result<Option<SendPlan>, SendError> {
        let peer = self.peer(id).ok_or(SendError::UnknownPeer)?;
        let needed = DATA_HEADER_LEN + padded_len(payload_len, peer.padding_mtu(self.shared.mtu)) + TAG_LEN;
        if buf.len() < needed {
            return Err(SendError::BufferTooSmall { needed, actual: buf.len() });
        }
        self.plan_send(id, &[buf], &[payload_len], now)
    }

    /// Encrypts a run of packets for one peer in place, with the per-peer work (session checks,
    /// timers, statistics, rekey) done once for the run rather than once per packet:
    /// [`Device::plan_send`], then [`SendBlock::seal`] for each packet.
    ///
    /// Each `bufs[i]` is laid out as for [`Device::encapsulate`], with `lens[i]` bytes of
    /// plaintext. On success, `(slot, len)` of every transport message ready to send is appended to
    /// `out`, and the destination is returned; `None` means the packets were staged behind a
    /// handshake. A buffer too small for its packet is skipped (and reported if it was the only one).
    pub fn encapsulate_batch<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        id: PeerId,
        bufs: &mut [B],
        lens: &[usize],
        now: Instant,
        out: &mut Vec<(usize, usize)>,
    ) -> Result<Option<SocketAddr>, SendError> {
        let Some(plan) = self.plan_send(id, bufs, lens, now)? else {
            return Ok(None);
        };
        for (slot, (buf, &len)) in bufs.iter_mut().zip(lens).enumerate() {
            if let Some(total) = plan.block.seal(slot as u64, buf.as_mut(), len) {
                out.push((slot, total));
            }
        }
        Ok(Some(plan.dst))
    }

    /// The part of sending a run of packets to one peer that needs the device: checks the session
    /// can carry the whole run, reserves one send counter per packet, and does the per-peer
    /// bookkeeping (statistics, timers, rekey) once. Sealing is left to the caller
    /// ([`SendBlock::seal`], on any thread). Packets are `bufs[i][HEADROOM..HEADROOM + lens[i]]`.
    ///
    /// `Ok(None)`: no usable session; the packets were copied aside and a handshake started.
    /// A buffer without room for its padding and tag is not counted; if no buffer has room, the
    /// error says so and nothing is reserved.
    pub fn plan_send<B: AsRef<[u8]>>(
        &mut self,
        id: PeerId,
        bufs: &[B],
        lens: &[usize],
        now: Instant,
    ) -> Result<Option<SendPlan>, SendError> {
        let peer = self.peers.get_mut(id.index()).and_then(Option::as_mut).ok_or(SendError::UnknownPeer)?;
        let n = bufs.len().min(lens.len());
        let usable = peer
            .current
            .as_ref()
            .is_some_and(|k| k.can_send(now) && k.send_counter().saturating_add(n as u64) <= REJECT_AFTER_MESSAGES);
        if !usable {
            for (buf, &len) in bufs.iter().zip(lens) {
                if let Some(p) = buf.as_ref().get(DATA_HEADER_LEN..DATA_HEADER_LEN + len) {
                    stage(peer, p);
                }
            }
            send_initiation(peer, id, &mut self.shared, now, false);
            return Ok(None);
        }
        let dst = peer.endpoint.ok_or(SendError::NoEndpoint)?;
        let mtu = peer.padding_mtu(self.shared.mtu);
        let (mut bytes, mut sealable, mut any_data, mut too_small) = (0u64, 0usize, false, None);
        for (buf, &len) in bufs.iter().zip(lens) {
            let total = DATA_HEADER_LEN + padded_len(len, mtu) + TAG_LEN;
            let actual = buf.as_ref().len();
            if actual < total {
                too_small = Some(SendError::BufferTooSmall { needed: total, actual });
                continue;
            }
            bytes += total as u64;
            sealable += 1;
            any_data |= len > 0;
        }
        if sealable == 0 {
            if let Some(e) = too_small {
                return Err(e);
            }
        }
        let keypair = peer.current.as_deref_mut().expect("checked above");
        let block = keypair.reserve(n as u64, mtu);
        let rekey = keypair.needs_rekey(now);
        peer.stats.tx_bytes += bytes;
        packet_sent(peer, now);
        if any_data && !peer.timers.is_armed(TimerKind::NewHandshake) {
            peer.timers.set(TimerKind::NewHandshake, now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
        }
        if rekey {
            send_initiation(peer, id, &mut self.shared, now, false);
        }
        Ok(Some(SendPlan { block, dst, sealable }))
    }

    /// Processes one received datagram from `src`. Decryption happens in place in `datagram`.
    /// The three receive phases in a row: [`Device::plan_decapsulate`], [`OpenTicket::open`],
    /// [`Device::commit_decapsulate`].
    pub fn decapsulate<'a>(
        &mut self,
        src: SocketAddr,
        datagram: &'a mut [u8],
        now: Instant,
    ) -> Result<Received<'a>, RecvError> {
        match self.plan_decapsulate(src, datagram, now)? {
            ReceivePlan::Done(received) => Ok(received),
            ReceivePlan::Open(ticket) => {
                let opened = ticket.open(&mut datagram[DATA_HEADER_LEN..]);
                self.commit_decapsulate(src, &ticket, opened, datagram, now)
            }
        }
    }

    /// Receive, phase 1 (needs the device): a transport-data message with a known receiver
    /// index, an unexpired keypair and a counter the replay window would accept becomes an
    /// [`OpenTicket`]; nothing is committed. Every other message (handshakes, cookie replies) is
    /// handled completely here. Drops are counted.
    ///
    /// A handshake message handled here can replace or drop keypairs that tickets planned earlier
    /// still name, so a caller planning a batch stops before one ([`is_handshake_message`]) and
    /// commits what it planned first: datagrams then take effect in arrival order.
    pub fn plan_decapsulate(
        &mut self,
        src: SocketAddr,
        datagram: &mut [u8],
        now: Instant,
    ) -> Result<ReceivePlan, RecvError> {
        let result = self.plan_inner(src, datagram, now);
        if let Err(e) = &result {
            self.drops[e.reason() as usize] += 1;
        }
        result
    }

    /// Receive, phase 3 (needs the device): takes the outcome of [`OpenTicket::open`] on
    /// `datagram`, re-finds the keypair by its index (it may have rotated or gone since phase 1),
    /// commits the counter to its replay window (a duplicate that was opened concurrently loses
    /// here), then does the per-packet bookkeeping: roaming, session confirmation, statistics,
    /// keepalive timers. Drops (failed authentication included) are counted.
    pub fn commit_decapsulate<'a>(
        &mut self,
        src: SocketAddr,
        ticket: &OpenTicket,
        opened: Result<usize, OpenFailure>,
        datagram: &'a mut [u8],
        now: Instant,
    ) -> Result<Received<'a>, RecvError> {
        let result = self.commit_data(src, ticket, opened, datagram, now);
        if let Err(e) = &result {
            self.drops[e.reason() as usize] += 1;
        }
        result
    }

    fn plan_inner(&mut self, src: SocketAddr, datagram: &mut [u8], now: Instant) -> Result<ReceivePlan, RecvError> {
        let done = match MessageType::classify(datagram)? {
            MessageType::TransportData => return self.plan_data(datagram, now).map(ReceivePlan::Open),
            MessageType::HandshakeInitiation | MessageType::HandshakeResponse => {
                let under_load = self.note_handshake_load(now);
                match self.checker.verify(datagram, src, under_load, now, &mut *self.shared.rng) {
                    MacVerdict::InvalidMac1 => return Err(RecvError::InvalidMac1),
                    MacVerdict::Mac1Only if under_load => {
                        // Same offset in both messages.
                        let sender = u32::from_le_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
                        let mut reply = [0u8; COOKIE_REPLY_LEN];
                        self.checker.make_reply(datagram, sender, src, now, &mut *self.shared.rng, &mut reply);
                        self.shared.transmits.push_back(Transmit { peer: None, dst: src, payload: reply.to_vec() });
                        return Ok(ReceivePlan::Done(Received::CookieReplySent));
                    }
                    MacVerdict::Mac2Valid if !self.rate_limiter.allow(src.ip(), now) => {
                        return Err(RecvError::RateLimited);
                    }
                    _ => {}
                }
                if datagram.len() == INITIATION_LEN {
                    self.recv_initiation(src, datagram, now)?
                } else {
                    self.recv_response(src, datagram, now)?
                }
            }
            MessageType::CookieReply => {
                let reply = CookieReply::new_unchecked(&*datagram);
                let id = *self.shared.by_index.get(&reply.receiver_index()).ok_or(RecvError::UnknownIndex)?;
                let peer = self.peers[id.index()].as_mut().ok_or(RecvError::UnknownIndex)?;
                peer.cookie.consume_reply(&reply, now).map_err(|e| match e {
                    CookieReplyError::Unexpected => RecvError::UnexpectedCookieReply,
                    CookieReplyError::Invalid => RecvError::InvalidCookieReply,
                })?;
                Received::CookieReply { peer: id }
            }
        };
        Ok(ReceivePlan::Done(done))
    }

    /// Counts a handshake message toward the load estimate; true while under load.
    fn note_handshake_load(&mut self, now: Instant) -> bool {
        let (start, count) = &mut self.load_window;
        if now.saturating_duration_since(*start) >= Duration::from_secs(1) {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > self.under_load_threshold {
            self.under_load_until = Some(now + UNDER_LOAD_HOLD);
        }
        self.under_load_until.is_some_and(|until| now < until)
    }

    fn recv_initiation(&mut self, src: SocketAddr, msg: &[u8], now: Instant) -> Result<Received<'static>, RecvError> {
        let view = Initiation::new_unchecked(msg);
        let partial = decrypt_initiator_static(&self.shared.identity, &view)?;
        let id = *self.by_key.get(partial.initiator_static.as_bytes()).ok_or(RecvError::UnknownPeer)?;
        let peer = self.peers[id.index()].as_mut().ok_or(RecvError::UnknownPeer)?;
        let consumed = consume_initiation(partial, &peer.keys, &view)?;
        if consumed.timestamp <= peer.greatest_timestamp {
            return Err(RecvError::StaleTimestamp);
        }
        let min_gap = Duration::from_secs(1) / INITIATIONS_PER_SECOND;
        if peer.last_initiation_consumed.is_some_and(|t| now.saturating_duration_since(t) < min_gap) {
            return Err(RecvError::InitiationFlood);
        }
        peer.greatest_timestamp = consumed.timestamp;
        peer.last_initiation_consumed = Some(now);

        // Simultaneous initiations: theirs wins, ours is abandoned.
        if let HandshakeSlot::InitiationSent { local_index, .. } =
            std::mem::replace(&mut peer.handshake, HandshakeSlot::None)
        {
            self.shared.by_index.remove(&local_index);
        }
        let sh = &mut self.shared;
        let index = sh.allocate_index(id);
        let mut response = [0u8; RESPONSE_LEN];
        let keys = match create_response(
            consumed,
            &peer.keys,
            index,
            view.sender_index(),
            &mut *sh.rng,
            &mut Response::new_unchecked(&mut response[..]),
        ) {
            Ok(keys) => keys,
            Err(e) => {
                sh.by_index.remove(&index);
                return Err(e.into());
            }
        };
        peer.cookie.add_macs(&mut response, now);
        let keypair = Keypair::new(&keys, index, view.sender_index(), false, now);
        // The responder may not send on this session until the initiator proves it has it.
        drop_keypair(sh, peer.next.replace(Box::new(keypair)));
        drop_keypair(sh, peer.previous.take());

        peer.endpoint = Some(src);
        peer.stats.rx_bytes += msg.len() as u64;
        authenticated_received(peer, now);
        session_derived(peer, now);
        sh.transmits.push_back(Transmit { peer: Some(id), dst: src, payload: response.to_vec() });
        // A response counts as a handshake sent: no initiation of ours for REKEY_TIMEOUT while the
        // initiator confirms (Linux sets last_sent_handshake here too).
        peer.last_initiation_sent = Some(now);
        peer.stats.tx_bytes += RESPONSE_LEN as u64;
        packet_sent(peer, now);
        Ok(Received::HandshakeInitiation { peer: id })
    }

    fn recv_response(&mut self, src: SocketAddr, msg: &[u8], now: Instant) -> Result<Received<'static>, RecvError> {
        let view = Response::new_unchecked(msg);
        let receiver = view.receiver_index();
        let id = *self.shared.by_index.get(&receiver).ok_or(RecvError::UnknownIndex)?;
        let peer = self.peers[id.index()].as_mut().ok_or(RecvError::UnknownIndex)?;
        let HandshakeSlot::InitiationSent { local_index, state } = &peer.handshake else {
            return Err(RecvError::UnexpectedResponse);
        };
        if *local_index != receiver {
            return Err(RecvError::UnexpectedResponse);
        }
        let keys = consume_response(state, &self.shared.identity, &peer.keys, &view)?;
        // The handshake's index now names the session.
        peer.handshake = HandshakeSlot::None;
        let keypair = Keypair::new(&keys, receiver, view.sender_index(), true, now);
        let sh = &mut self.shared;
        match peer.next.take() {
            // An unconfirmed responder session becomes the fallback; the old current goes.
            Some(next) => {
                drop_keypair(sh, peer.previous.replace(next));
                drop_keypair(sh, peer.current.take());
            }
            None => drop_keypair(sh, std::mem::replace(&mut peer.previous, peer.current.take())),
        }
        peer.current = Some(Box::new(keypair));

        peer.endpoint = Some(src);
        peer.stats.rx_bytes += msg.len() as u64;
        authenticated_received(peer, now);
        handshake_complete(peer, sh, now);
        session_derived(peer, now);
        // Confirm the session to the responder: staged packets, or else a keepalive.
        if peer.staged.is_empty() {
            peer.staged.push_back(Vec::new());
        }
        send_staged(peer, id, sh, now);
        Ok(Received::HandshakeComplete { peer: id })
    }

    #[inline]
    fn plan_data(&mut self, datagram: &[u8], now: Instant) -> Result<OpenTicket, RecvError> {
        let header = TransportData::new_unchecked(datagram);
        let (index, counter) = (header.receiver_index(), header.counter());
        let id = *self.shared.by_index.get(&index).ok_or(RecvError::UnknownIndex)?;
        let peer = self.peers[id.index()].as_mut().ok_or(RecvError::UnknownIndex)?;
        let (keypair, _) = peer.keypair_mut(index).ok_or(RecvError::UnknownIndex)?;
        keypair.precheck(counter, now).map_err(open_error)?;
        Ok(OpenTicket { peer: id, local_index: index, counter, key: Arc::clone(keypair.recv_key()) })
    }

    #[inline]
    fn commit_data<'a>(
        &mut self,
        src: SocketAddr,
        ticket: &OpenTicket,
        opened: Result<usize, OpenFailure>,
        datagram: &'a mut [u8],
        now: Instant,
    ) -> Result<Received<'a>, RecvError> {
        let plain_len = opened.map_err(open_error)?;
        let id = ticket.peer;
        // The keypair may have been dropped since phase 1, and its index or even its peer slot
        // reused: only the very key the message was opened with may take the counter (each
        // keypair's key is its own allocation).
        let peer = self.peers.get_mut(id.index()).and_then(Option::as_mut).ok_or(RecvError::UnknownIndex)?;
        let (keypair, slot) = peer.keypair_mut(ticket.local_index).ok_or(RecvError::UnknownIndex)?;
        if !Arc::ptr_eq(keypair.recv_key(), &ticket.key) {
            return Err(RecvError::UnknownIndex);
        }
        // Only now, after authentication: forgeries cannot move the window.
        if !keypair.commit(ticket.counter) {
            return Err(RecvError::Replay);
        }
        let total = datagram.len();
        let sh = &mut self.shared;
        // Roam first: anything released below must go where the peer is now.
        peer.endpoint = Some(src);
        if slot == Slot::Next {
            // First packet on the session we answered: the initiator has it, so switch to it.
            drop_keypair(sh, peer.previous.take());
            peer.previous = peer.current.take();
            peer.current = peer.next.take();
            handshake_complete(peer, sh, now);
            send_staged(peer, id, sh, now);
        }
        peer.stats.rx_bytes += total as u64;
        authenticated_received(peer, now);
        keep_key_fresh_on_receive(peer, id, sh, now);
        if plain_len == 0 {
            return Ok(Received::Keepalive { peer: id });
        }
        if peer.timers.is_armed(TimerKind::SendKeepalive) {
            peer.need_another_keepalive = true;
        } else {
            peer.timers.set(TimerKind::SendKeepalive, now + KEEPALIVE_TIMEOUT);
        }
        let plaintext = datagram.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + plain_len).ok_or(RecvError::Decrypt)?;
        let len = inner_packet_len(plaintext).ok_or(RecvError::InvalidInnerPacket)?;
        Ok(Received::Packet { peer: id, packet: &mut plaintext[..len] })
    }

    /// Next control datagram to send, if any. Call after every other entry point until `None`.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.shared.transmits.pop_front()
    }

    /// When [`Device::handle_timeout`] must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.iter().flatten().filter_map(|p| p.timers.next_deadline()).min()
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for slot in 0..self.peers.len() {
            let id = PeerId(slot as u32);
            let Some(peer) = self.peers[slot].as_mut() else {
                continue;
            };
            for kind in peer.timers.take_expired(now) {
                on_timer(peer, id, &mut self.shared, kind, now);
            }
        }
    }

    /// Test and fuzzing hook: the current sending keypair of a peer.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn current_keypair_mut(&mut self, id: PeerId) -> Option<&mut Keypair> {
        self.peers.get_mut(id.index())?.as_mut()?.current.as_deref_mut()
    }
}

fn open_error(e: OpenFailure) -> RecvError {
    match e {
        OpenFailure::Expired => RecvError::Expired,
        OpenFailure::Replay => RecvError::Replay,
        OpenFailure::Auth => RecvError::Decrypt,
    }
}

/// Length of the IP packet at the start of a decrypted payload (the rest is padding).
fn inner_packet_len(p: &[u8]) -> Option<usize> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => {
            let total = usize::from(u16::from_be_bytes([p[2], p[3]]));
            (20..=p.len()).contains(&total).then_some(total)
        }
        6 if p.len() >= 40 => {
            let total = 40 + usize::from(u16::from_be_bytes([p[4], p[5]]));
            (total <= p.len()).then_some(total)
        }
        _ => None,
    }
}

fn drop_keypair(sh: &mut Shared, keypair: Option<Box<Keypair>>) {
    if let Some(k) = keypair {
        sh.by_index.remove(&k.local_index);
    }
}

fn stage(peer: &mut Peer, packet: &[u8]) {
    if peer.staged.len() >= MAX_STAGED_PACKETS {
        peer.staged.pop_front();
    }
    peer.staged.push_back(packet.to_vec());
}

/// Sends what was staged, on the current session if there is one, else starts a handshake.
/// Control path: each packet is sealed into a copy, as the data path would seal it in place.
fn send_staged(peer: &mut Peer, id: PeerId, sh: &mut Shared, now: Instant) {
    if peer.staged.is_empty() {
        return;
    }
    let usable = peer.current.as_ref().is_some_and(|k| k.can_send(now));
    let Some(dst) = peer.endpoint.filter(|_| usable) else {
        send_initiation(peer, id, sh, now, false);
        return;
    };
    let mtu = peer.padding_mtu(sh.mtu);
    while let Some(packet) = peer.staged.pop_front() {
        let Some(keypair) = peer.current.as_deref_mut() else { break };
        let block = keypair.reserve(1, mtu);
        let rekey = keypair.needs_rekey(now);
        let mut buf = vec![0u8; block.message_len(packet.len())];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + packet.len()].copy_from_slice(&packet);
        let sealed = block.seal(0, &mut buf, packet.len());
        packet_sent(peer, now);
        if !packet.is_empty() && !peer.timers.is_armed(TimerKind::NewHandshake) {
            peer.timers.set(TimerKind::NewHandshake, now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
        }
        if rekey {
            send_initiation(peer, id, sh, now, false);
        }
        if let Some(len) = sealed {
            buf.truncate(len);
            peer.stats.tx_bytes += len as u64;
            sh.transmits.push_back(Transmit { peer: Some(id), dst, payload: buf });
        }
        if !peer.current.as_ref().is_some_and(|k| k.can_send(now)) {
            break;
        }
    }
}

fn send_keepalive(peer: &mut Peer, id: PeerId, sh: &mut Shared, now: Instant) {
    if peer.staged.is_empty() {
        peer.staged.push_back(Vec::new());
    }
    send_staged(peer, id, sh, now);
}

fn send_initiation(peer: &mut Peer, id: PeerId, sh: &mut Shared, now: Instant, is_retry: bool) {
    if !is_retry {
        peer.handshake_attempts = 0;
    }
    if peer.last_initiation_sent.is_some_and(|t| now.saturating_duration_since(t) < REKEY_TIMEOUT) {
        return;
    }
    peer.last_initiation_sent = Some(now);
    if let HandshakeSlot::InitiationSent { local_index, .. } =
        std::mem::replace(&mut peer.handshake, HandshakeSlot::None)
    {
        sh.by_index.remove(&local_index);
    }
    let index = sh.allocate_index(id);
    let mut msg = [0u8; INITIATION_LEN];
    let timestamp = tai64n(sh.wall(now));
    match create_initiation(
        &sh.identity,
        &peer.keys,
        index,
        timestamp,
        &mut *sh.rng,
        &mut Initiation::new_unchecked(&mut msg[..]),
    ) {
        Ok(state) => peer.handshake = HandshakeSlot::InitiationSent { local_index: index, state },
        Err(_) => {
            // Unreachable for a peer key that passed `add_peer`; nothing to send.
            sh.by_index.remove(&index);
            return;
        }
    }
    peer.cookie.add_macs(&mut msg, now);
    let retransmit_at = now + REKEY_TIMEOUT + sh.jitter();
    peer.timers.set(TimerKind::RetransmitHandshake, retransmit_at);
    packet_sent(peer, now);
    if let Some(dst) = peer.endpoint {
        peer.stats.tx_bytes += INITIATION_LEN as u64;
        sh.transmits.push_back(Transmit { peer: Some(id), dst, payload: msg.to_vec() });
    }
}

/// Timer bookkeeping for any authenticated packet sent (data, keepalive or handshake).
#[inline]
fn packet_sent(peer: &mut Peer, now: Instant) {
    peer.timers.cancel(TimerKind::SendKeepalive);
    if let Some(interval) = peer.persistent_keepalive {
        peer.timers.set(TimerKind::PersistentKeepalive, now + interval);
    }
}

/// Timer bookkeeping for any authenticated packet received.
#[inline]
fn authenticated_received(peer: &mut Peer, now: Instant) {
    peer.timers.cancel(TimerKind::NewHandshake);
    if let Some(interval) = peer.persistent_keepalive {
        peer.timers.set(TimerKind::PersistentKeepalive, now + interval);
    }
}

fn handshake_complete(peer: &mut Peer, sh: &Shared, now: Instant) {
    peer.timers.cancel(TimerKind::RetransmitHandshake);
    peer.handshake_attempts = 0;
    peer.sent_lastminute_handshake = false;
    peer.stats.last_handshake = Some(sh.wall(now));
    peer.stats.handshakes += 1;
}

fn session_derived(peer: &mut Peer, now: Instant) {
    peer.timers.set(TimerKind::ZeroKeyMaterial, now + REJECT_AFTER_TIME * 3);
}

/// The initiator renews a session that is about to expire while traffic still arrives, so the
/// responder never runs into REJECT_AFTER_TIME mid-stream.
fn keep_key_fresh_on_receive(peer: &mut Peer, id: PeerId, sh: &mut Shared, now: Instant) {
    let Some(k) = peer.current.as_deref() else { return };
    if !peer.sent_lastminute_handshake && k.needs_lastminute_rekey(now) {
        peer.sent_lastminute_handshake = true;
        send_initiation(peer, id, sh, now, false);
    }
}

fn on_timer(peer: &mut Peer, id: PeerId, sh: &mut Shared, kind: TimerKind, now: Instant) {
    match kind {
        TimerKind::RetransmitHandshake => {
            if peer.handshake_attempts > MAX_TIMER_HANDSHAKES {
                // Give up until new traffic asks again; drop what waited for this handshake.
                peer.timers.cancel(TimerKind::SendKeepalive);
                peer.staged.clear();
                if let HandshakeSlot::InitiationSent { local_index, .. } =
                    std::mem::replace(&mut peer.handshake, HandshakeSlot::None)
                {
                    sh.by_index.remove(&local_index);
                }
                peer.timers.set_if_unarmed(TimerKind::ZeroKeyMaterial, now + REJECT_AFTER_TIME * 3);
            } else {
                peer.handshake_attempts += 1;
                send_initiation(peer, id, sh, now, true);
            }
        }
        TimerKind::SendKeepalive => {
            send_keepalive(peer, id, sh, now);
            if peer.need_another_keepalive {
                peer.need_another_keepalive = false;
                peer.timers.set(TimerKind::SendKeepalive, now + KEEPALIVE_TIMEOUT);
            }
        }
        TimerKind::NewHandshake => send_initiation(peer, id, sh, now, false),
        TimerKind::ZeroKeyMaterial => {
            for k in [peer.previous.take(), peer.current.take(), peer.next.take()] {
                drop_keypair(sh, k);
            }
            if let HandshakeSlot::InitiationSent { local_index, .. } =
                std::mem::replace(&mut peer.handshake, HandshakeSlot::None)
            {
                sh.by_index.remove(&local_index);
            }
        }
        TimerKind::PersistentKeepalive => send_keepalive(peer, id, sh, now),
    }
}

impl core::fmt::Debug for Device {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Device")
            .field("public_key", &self.public_key())
            .field("peers", &self.by_key.len())
            .field("mtu", &self.shared.mtu)
            .finish_non_exhaustive()
    }
}
