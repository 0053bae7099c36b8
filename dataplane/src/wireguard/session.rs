//! Transport sessions: one keypair per completed handshake, with its send counter and receive
//! replay window (whitepaper section 5.4.6). Encryption and decryption happen in place.
//!
//! The AEAD keys are immutable once the handshake is done and shared by `Arc`, so the data path
//! can split in three: under the caller's lock, [`Keypair::reserve`] hands out a block of send
//! counters (a [`SendBlock`]) or [`Keypair::precheck`] vets a received counter; without it, the
//! block seals ([`SendBlock::seal`], the only way anything is sealed) or [`open_payload`]
//! decrypts; then, for receive only,
//! [`Keypair::commit`] records the counter after authentication, so a duplicate that raced
//! through another worker loses there and a forgery never moves the window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::aead::{Aead, DefaultAead};
use super::constants::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES, REKEY_AFTER_TIME, REKEY_TIMEOUT,
};
use super::handshake::SessionKeys;
use super::replay::ReplayWindow;
use crate::wire::wireguard::{TransportData, DATA_HEADER_LEN, TAG_LEN};

/// Why a transport message could not be opened with a keypair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFailure {
    /// The keypair is past REJECT_AFTER_TIME.
    Expired,
    /// The counter was seen before, is too far behind, or is past the message limit.
    Replay,
    /// The tag does not verify.
    Auth,
}

/// The keys of one session, both directions.
pub struct Keypair {
    /// Our index: the receiver index the peer puts on messages for this session.
    pub local_index: u32,
    /// The peer's index, which we put on messages we send.
    pub remote_index: u32,
    /// Whether we initiated the handshake that made this session (only the initiator rekeys on age).
    pub is_initiator: bool,
    /// When the handshake completed.
    pub created: Instant,
    /// `created + REJECT_AFTER_TIME`: precomputed so the per-packet check is one comparison.
    reject_at: Instant,
    /// `created + REKEY_AFTER_TIME` for the initiator (only the initiator rekeys on age).
    rekey_at: Option<Instant>,
    /// Initiator only: past this, traffic we *receive* triggers one last-minute rekey, so the
    /// session is renewed before REJECT_AFTER_TIME even if we send nothing.
    lastminute_at: Option<Instant>,
    send_key: Arc<DefaultAead>,
    /// The next send counter. Shared with every [`SendBlock`] reserved from it, so a block can
    /// tell how far the keypair has moved on since, and take fresh counters without the lock.
    send_counter: Arc<AtomicU64>,
    recv_key: Arc<DefaultAead>,
    replay: ReplayWindow,
}

impl core::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("is_initiator", &self.is_initiator)
            .field("send_counter", &self.send_counter())
            .finish_non_exhaustive()
    }
}

impl Keypair {
    /// A fresh session from handshake output.
    pub fn new(keys: &SessionKeys, local_index: u32, remote_index: u32, is_initiator: bool, now: Instant) -> Self {
        Self {
            local_index,
            remote_index,
            is_initiator,
            created: now,
            reject_at: now + REJECT_AFTER_TIME,
            rekey_at: is_initiator.then(|| now + REKEY_AFTER_TIME),
            lastminute_at: is_initiator.then(|| now + (REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT)),
            send_key: Arc::new(DefaultAead::new(&keys.send)),
            send_counter: Arc::new(AtomicU64::new(0)),
            recv_key: Arc::new(DefaultAead::new(&keys.recv)),
            replay: ReplayWindow::default(),
        }
    }

    /// True if we may still send with this keypair.
    #[inline]
    pub fn can_send(&self, now: Instant) -> bool {
        self.send_counter() < REJECT_AFTER_MESSAGES && now < self.reject_at
    }

    /// True once this session should be replaced: too many messages, or (initiator) too old.
    #[inline]
    pub fn needs_rekey(&self, now: Instant) -> bool {
        self.send_counter() > REKEY_AFTER_MESSAGES || self.rekey_at.is_some_and(|at| now > at)
    }

    /// True once received traffic should trigger the initiator's last-minute rekey.
    #[inline]
    pub fn needs_lastminute_rekey(&self, now: Instant) -> bool {
        self.lastminute_at.is_some_and(|at| now > at)
    }

    /// Messages sent so far (the next counter).
    pub fn send_counter(&self) -> u64 {
        self.send_counter.load(Ordering::Relaxed)
    }

    /// Reserves the next `count` send counters for a run sealed later, maybe on another thread.
    /// The caller has checked that the whole block stays below REJECT_AFTER_MESSAGES. Counters
    /// of a block that is never sealed are simply skipped, which receivers tolerate.
    #[inline]
    pub fn reserve(&mut self, count: u64, padding_mtu: usize) -> SendBlock {
        // An atomic add even under the lock: a block renewed on a worker takes counters without it.
        let first_counter = self.send_counter.fetch_add(count, Ordering::Relaxed);
        // A renewal between the caller's check and this add can push the block past the limit:
        // what lies beyond is left out (those packets are not sealed; the keypair is spent).
        let count = count.min(REJECT_AFTER_MESSAGES.saturating_sub(first_counter));
        SendBlock {
            key: Arc::clone(&self.send_key),
            remote_index: self.remote_index,
            first_counter,
            count,
            padding_mtu,
            next_counter: Arc::clone(&self.send_counter),
        }
    }

    /// The receive-side check before decryption: the keypair is not expired and the counter may
    /// be new. Changes nothing.
    #[inline]
    pub fn precheck(&self, counter: u64, now: Instant) -> Result<(), OpenFailure> {
        if now >= self.reject_at {
            return Err(OpenFailure::Expired);
        }
        if !self.replay.check(counter) {
            return Err(OpenFailure::Replay);
        }
        Ok(())
    }

    /// The key that opens messages to this keypair.
    pub fn recv_key(&self) -> &Arc<DefaultAead> {
        &self.recv_key
    }

    /// Records an authenticated counter; false (window unchanged) if it was seen meanwhile.
    #[inline]
    pub fn commit(&mut self, counter: u64) -> bool {
        self.replay.update(counter)
    }

    /// Decrypts the payload of a transport message in place (`payload` = ciphertext || tag) and
    /// records the counter: the three receive phases in a row. Returns the plaintext length.
    #[inline]
    pub fn open(&mut self, counter: u64, payload: &mut [u8], now: Instant) -> Result<usize, OpenFailure> {
        self.precheck(counter, now)?;
        let len = open_payload(&self.recv_key, counter, payload)?;
        // Commit only after authentication, so forgeries cannot move the window.
        if !self.commit(counter) {
            return Err(OpenFailure::Replay);
        }
        Ok(len)
    }

    /// Test hook: pretend this keypair has already sent `n` messages.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn force_send_counter(&mut self, n: u64) {
        self.send_counter.store(n, Ordering::Relaxed);
    }
}

/// How far behind its keypair's next counter a sealed block may be when it goes out; past this
/// it is resealed on fresh counters ([`SendBlock::renew`]). Workers seal and send in parallel,
/// so a worker descheduled between reserving a block and sending it can fall behind another
/// that sends to the same peer; a receiver drops what is further behind its newest counter than
/// its replay window. Half the smallest window among the peers vxwg meets: boringtun keeps
/// 1,024 counters (Linux and wireguard-go about 8,000, vxwg 16,320).
pub const RESEAL_BEHIND: u64 = 512;

/// A block of send counters reserved by [`Keypair::reserve`], with what sealing needs: usable on
/// any thread, without the device.
#[derive(Clone)]
pub struct SendBlock {
    key: Arc<DefaultAead>,
    remote_index: u32,
    first_counter: u64,
    count: u64,
    padding_mtu: usize,
    /// The keypair's next send counter.
    next_counter: Arc<AtomicU64>,
}

impl core::fmt::Debug for SendBlock {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SendBlock")
            .field("remote_index", &self.remote_index)
            .field("first_counter", &self.first_counter)
            .field("count", &self.count)
            .field("padding_mtu", &self.padding_mtu)
            .finish_non_exhaustive()
    }
}

impl SendBlock {
    /// The first counter of the block.
    pub fn first_counter(&self) -> u64 {
        self.first_counter
    }

    /// How many counters the block holds.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// How many counters the keypair has handed out from this block's first on (this block's
    /// own included): at worst, how far behind the newest counter a receiver has seen this
    /// block's first message arrives.
    pub fn counters_behind(&self) -> u64 {
        self.next_counter.load(Ordering::Relaxed).saturating_sub(self.first_counter)
    }

    /// True if the block fell more than [`RESEAL_BEHIND`] counters behind: check just before
    /// sending, and [`renew`](Self::renew) it if so. Never while the block is still the head
    /// (nothing reserved since), however large: fresh counters would be no better.
    pub fn is_stale(&self) -> bool {
        let next = self.next_counter.load(Ordering::Relaxed);
        next > self.first_counter + self.count && next - self.first_counter > RESEAL_BEHIND
    }

    /// Moves the block onto fresh counters at the keypair's head, without the lock, and returns
    /// it as it was, to [`reseal`](Self::reseal) what it sealed. `None` (the block unchanged,
    /// no counter taken) if the fresh counters would pass REJECT_AFTER_MESSAGES.
    pub fn renew(&mut self) -> Option<SendBlock> {
        // Taken only if they fit, so renewals never push the counter past the limit (nor,
        // however many race, wrap it round onto counters already used).
        let first = self
            .next_counter
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
                next.checked_add(self.count).filter(|&end| end <= REJECT_AFTER_MESSAGES)
            })
            .ok()?;
        let old = self.clone();
        self.first_counter = first;
        Some(old)
    }

    /// Re-encrypts in place `message`, the transport message `old` sealed on its `i`-th counter,
    /// on this block's `i`-th counter. False if it is not that message: `i` outside the blocks,
    /// another index or counter (the message left as it was), or a tag that does not verify
    /// under `old`'s key (the bytes are then meaningless, and a receiver drops them).
    pub fn reseal(&self, old: &SendBlock, i: u64, message: &mut [u8]) -> bool {
        if i >= self.count || i >= old.count || message.len() < DATA_HEADER_LEN + TAG_LEN {
            return false;
        }
        let Ok(view) = TransportData::new_checked(&*message) else { return false };
        if view.receiver_index() != old.remote_index || view.counter() != old.first_counter + i {
            return false;
        }
        let padded = message.len() - DATA_HEADER_LEN - TAG_LEN;
        match open_payload(&old.key, old.first_counter + i, &mut message[DATA_HEADER_LEN..]) {
            Ok(_) => {
                seal_message(&self.key, self.remote_index, self.first_counter + i, message, padded);
                true
            }
            Err(_) => false,
        }
    }

    /// Length of the transport message a `payload_len`-byte plaintext becomes.
    #[inline]
    pub fn message_len(&self, payload_len: usize) -> usize {
        DATA_HEADER_LEN + padded_len(payload_len, self.padding_mtu) + TAG_LEN
    }

    /// Pads and encrypts, on the block's `i`-th counter, the plaintext at
    /// `buf[DATA_HEADER_LEN..DATA_HEADER_LEN + payload_len]` into a transport message at the
    /// start of `buf`; returns its length. `None` (nothing written) if `buf` has no room for the
    /// padding and tag or `i` is outside the block.
    #[inline]
    pub fn seal(&self, i: u64, buf: &mut [u8], payload_len: usize) -> Option<usize> {
        if i >= self.count {
            return None;
        }
        let padded = padded_len(payload_len, self.padding_mtu);
        let total = DATA_HEADER_LEN + padded + TAG_LEN;
        if buf.len() < total {
            return None;
        }
        if padded > payload_len {
            buf[DATA_HEADER_LEN + payload_len..DATA_HEADER_LEN + padded].fill(0);
        }
        seal_message(&self.key, self.remote_index, self.first_counter + i, buf, padded);
        Some(total)
    }
}

/// Writes the transport header and encrypts `padded_len` bytes of plaintext after it in place,
/// the tag behind them.
#[inline]
fn seal_message(key: &DefaultAead, remote_index: u32, counter: u64, buf: &mut [u8], padded_len: usize) {
    TransportData::new_unchecked(&mut *buf).set_header(remote_index, counter);
    let (body, tag) = buf[DATA_HEADER_LEN..DATA_HEADER_LEN + padded_len + TAG_LEN].split_at_mut(padded_len);
    tag.copy_from_slice(&key.seal_in_place(counter, &[], body));
}

/// Decrypts `payload` (ciphertext || tag) in place with `key`; returns the plaintext length.
/// Commits nothing: see [`Keypair::commit`].
#[inline]
pub fn open_payload(key: &DefaultAead, counter: u64, payload: &mut [u8]) -> Result<usize, OpenFailure> {
    key.open_in_place(counter, &[], payload).map_err(|_| OpenFailure::Auth)
}

/// Plaintext length after WireGuard's padding: up to a multiple of 16, never beyond the MTU.
#[inline]
pub fn padded_len(len: usize, mtu: usize) -> usize {
    if len >= mtu {
        return len;
    }
    len.next_multiple_of(16).min(mtu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_rules() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(1, 1420), 16);
        assert_eq!(padded_len(16, 1420), 16);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1410, 1420), 1420, "never padded past the MTU");
        assert_eq!(padded_len(1420, 1420), 1420);
        assert_eq!(padded_len(1500, 1420), 1500);
    }

    #[test]
    fn seal_open_round_trip_and_replay() {
        let now = Instant::now();
        let keys = SessionKeys { send: [1; 32], recv: [2; 32] };
        let mirrored = SessionKeys { send: [2; 32], recv: [1; 32] };
        let mut a = Keypair::new(&keys, 10, 20, true, now);
        let mut b = Keypair::new(&mirrored, 20, 10, false, now);
        let mut buf = [0u8; 16 + 32 + 16];
        buf[16..16 + 32].fill(0xab);
        let block = a.reserve(1, 1420);
        assert_eq!(block.seal(0, &mut buf, 32), Some(buf.len()));
        let c = block.first_counter();
        assert_eq!(c, 0);
        let sealed = buf;
        let view = TransportData::new_checked(&buf[..]).unwrap();
        assert_eq!(view.receiver_index(), 20);
        assert_eq!(b.open(c, &mut buf[16..], now), Ok(32));
        assert!(buf[16..48].iter().all(|&x| x == 0xab));
        let mut again = sealed;
        assert_eq!(b.open(c, &mut again[16..], now), Err(OpenFailure::Replay));
        let mut forged = sealed;
        forged[20] ^= 1;
        assert_eq!(b.open(1, &mut forged[16..], now), Err(OpenFailure::Auth));
        let mut late = sealed;
        assert_eq!(b.open(c, &mut late[16..], now + REJECT_AFTER_TIME), Err(OpenFailure::Expired));
    }

    #[test]
    fn reserved_blocks_seal_on_their_own_counters() {
        let now = Instant::now();
        let keys = SessionKeys { send: [1; 32], recv: [2; 32] };
        let mut a = Keypair::new(&keys, 10, 20, true, now);
        let mut b = Keypair::new(&SessionKeys { send: [2; 32], recv: [1; 32] }, 20, 10, false, now);
        let first = a.reserve(3, 1420);
        let second = a.reserve(2, 1420);
        assert_eq!((first.first_counter(), second.first_counter(), a.send_counter()), (0, 3, 5));
        let mut buf = [0u8; 16 + 16 + 16];
        assert_eq!(second.seal(1, &mut buf, 5), Some(48));
        assert_eq!(TransportData::new_checked(&buf[..]).unwrap().counter(), 4);
        assert_eq!(second.seal(2, &mut buf, 5), None, "outside the block");
        assert_eq!(second.seal(0, &mut buf[..40], 5), None, "no room for the tag");
        // Receive in three phases: a forgery does not commit, the genuine message does once.
        assert_eq!(b.precheck(4, now), Ok(()));
        let mut forged = buf;
        forged[20] ^= 1;
        assert_eq!(open_payload(b.recv_key(), 4, &mut forged[16..]), Err(OpenFailure::Auth));
        assert_eq!(b.precheck(4, now), Ok(()), "the forgery moved nothing");
        assert_eq!(open_payload(b.recv_key(), 4, &mut buf[16..]), Ok(16));
        assert!(b.commit(4));
        assert!(!b.commit(4), "a second commit of the same counter loses");
        assert_eq!(b.precheck(4, now), Err(OpenFailure::Replay));
    }

    #[test]
    fn a_block_left_behind_is_stale_and_reseals_onto_the_head_for_the_receiver() {
        let now = Instant::now();
        let mut a = Keypair::new(&SessionKeys { send: [1; 32], recv: [2; 32] }, 10, 20, true, now);
        let mut b = Keypair::new(&SessionKeys { send: [2; 32], recv: [1; 32] }, 20, 10, false, now);
        let mut late = a.reserve(2, 1420);
        let mut msgs = [[0u8; 16 + 32 + 16]; 2];
        for (i, m) in msgs.iter_mut().enumerate() {
            m[16..48].fill(0x30 + i as u8);
            assert_eq!(late.seal(i as u64, m, 32), Some(64));
        }
        assert_eq!(late.counters_behind(), 2, "only its own counters so far");

        // Another worker's blocks go out first: exactly at the limit the block is not stale yet.
        a.reserve(RESEAL_BEHIND - 2, 1420);
        assert!(!late.is_stale());
        a.reserve(1, 1420);
        assert!(late.is_stale(), "{} behind", late.counters_behind());
        let head = a.send_counter();
        let old = late.renew().expect("far from the message limit");
        assert_eq!((old.first_counter(), late.first_counter(), a.send_counter()), (0, head, head + 2));
        assert!(!late.is_stale());
        // Messages that are not the old block's are refused and left alone.
        let mut other = msgs[1];
        assert!(!late.reseal(&old, 0, &mut other), "message 1 is not counter 0");
        assert_eq!(other, msgs[1]);
        assert!(!late.reseal(&old, 2, &mut other), "outside the block");
        for (i, m) in msgs.iter_mut().enumerate() {
            assert!(late.reseal(&old, i as u64, m));
            let counter = TransportData::new_checked(&m[..]).unwrap().counter();
            assert_eq!(counter, head + i as u64);
            assert_eq!(b.open(counter, &mut m[16..], now), Ok(32));
            assert!(m[16..48].iter().all(|&x| x == 0x30 + i as u8), "the plaintext survived");
        }
    }

    #[test]
    fn a_block_at_the_head_is_never_stale_however_large() {
        let now = Instant::now();
        let mut kp = Keypair::new(&SessionKeys { send: [1; 32], recv: [2; 32] }, 1, 2, true, now);
        let large = kp.reserve(RESEAL_BEHIND + 100, 1420);
        assert!(!large.is_stale(), "nothing reserved since: fresh counters would be no better");
        kp.reserve(1, 1420);
        assert!(large.is_stale(), "one reservation after it, and its first is far behind");
    }

    #[test]
    fn a_block_is_not_renewed_past_the_message_limit() {
        let now = Instant::now();
        let mut kp = Keypair::new(&SessionKeys { send: [1; 32], recv: [2; 32] }, 1, 2, true, now);
        kp.force_send_counter(REJECT_AFTER_MESSAGES - 3);
        let mut block = kp.reserve(2, 1420);
        kp.reserve(1, 1420);
        assert!(block.renew().is_none(), "fresh counters would pass the limit");
        assert_eq!(block.first_counter(), REJECT_AFTER_MESSAGES - 3, "the block unchanged");
        assert_eq!(kp.send_counter(), REJECT_AFTER_MESSAGES, "a refused renewal takes no counters");
        assert!(!kp.can_send(now), "the keypair is spent: it stops");
    }

    /// `plan_send` checks under the lock that a run fits below the limit, then reserves; a
    /// renewal on a worker, outside the lock, can take counters in between.
    #[test]
    fn a_renewal_between_the_limit_check_and_the_reserve_does_not_push_the_block_past_the_limit() {
        let now = Instant::now();
        let mut kp = Keypair::new(&SessionKeys { send: [1; 32], recv: [2; 32] }, 1, 2, true, now);
        kp.force_send_counter(REJECT_AFTER_MESSAGES - 6);
        let mut held = kp.reserve(2, 1420);
        kp.reserve(1, 1420);
        assert!(kp.send_counter() + 3 <= REJECT_AFTER_MESSAGES, "the check passes for a run of 3");
        held.renew().expect("2 still fit");
        let block = kp.reserve(3, 1420);
        assert_eq!(block.first_counter(), REJECT_AFTER_MESSAGES - 1);
        assert_eq!(block.count(), 1, "only the counter below the limit");
        let mut buf = [0u8; 16 + 32 + 16];
        assert_eq!(block.seal(1, &mut buf, 32), None, "the limit itself is never sealed on");
        assert!(!kp.can_send(now));
    }

    /// Workers reserve under the lock and renew outside it, at once: no counter is handed out
    /// twice.
    #[test]
    fn reserves_and_renewals_racing_on_threads_never_share_a_counter() {
        use std::sync::Mutex;
        let now = Instant::now();
        let kp = Mutex::new(Keypair::new(&SessionKeys { send: [1; 32], recv: [2; 32] }, 1, 2, true, now));
        let handed_out: Vec<(u64, u64)> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut ranges = Vec::new();
                        for _ in 0..2000 {
                            let mut block = kp.lock().unwrap().reserve(3, 1420);
                            ranges.push((block.first_counter(), block.count()));
                            block.renew().expect("far from the limit");
                            ranges.push((block.first_counter(), block.count()));
                        }
                        ranges
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap()).collect()
        });
        let mut counters: Vec<u64> = handed_out.iter().flat_map(|&(first, n)| first..first + n).collect();
        counters.sort_unstable();
        let total = counters.len();
        counters.dedup();
        assert_eq!(counters.len(), total, "a counter handed out twice");
        assert_eq!(kp.lock().unwrap().send_counter(), total as u64, "and none lost");
    }

    #[test]
    fn nonce_limit_is_enforced() {
        let now = Instant::now();
        let mut kp = Keypair::new(&SessionKeys { send: [1; 32], recv: [2; 32] }, 1, 2, true, now);
        kp.force_send_counter(REJECT_AFTER_MESSAGES - 1);
        assert!(kp.can_send(now));
        kp.reserve(1, 1420);
        assert!(!kp.can_send(now), "the last permitted nonce has been used");
    }
}
