//! Transport sessions: one keypair per completed handshake, with its send counter and receive
//! replay window (whitepaper section 5.4.6). Encryption and decryption happen in place.

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
    send_key: DefaultAead,
    send_counter: u64,
    recv_key: DefaultAead,
    replay: ReplayWindow,
}

impl core::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("is_initiator", &self.is_initiator)
            .field("send_counter", &self.send_counter)
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
            send_key: DefaultAead::new(&keys.send),
            send_counter: 0,
            recv_key: DefaultAead::new(&keys.recv),
            replay: ReplayWindow::default(),
        }
    }

    /// True if we may still send with this keypair.
    #[inline]
    pub fn can_send(&self, now: Instant) -> bool {
        self.send_counter < REJECT_AFTER_MESSAGES && now < self.reject_at
    }

    /// True once this session should be replaced: too many messages, or (initiator) too old.
    #[inline]
    pub fn needs_rekey(&self, now: Instant) -> bool {
        self.send_counter > REKEY_AFTER_MESSAGES || self.rekey_at.is_some_and(|at| now > at)
    }

    /// True once received traffic should trigger the initiator's last-minute rekey.
    #[inline]
    pub fn needs_lastminute_rekey(&self, now: Instant) -> bool {
        self.lastminute_at.is_some_and(|at| now > at)
    }

    /// Messages sent so far (the next counter).
    pub fn send_counter(&self) -> u64 {
        self.send_counter
    }

    /// Encrypts one transport message in place. `buf` is the whole message: 16-byte header space,
    /// `padded_len` bytes of (already padded) plaintext, then 16 bytes for the tag. The caller has
    /// checked [`Keypair::can_send`]. Returns the counter used.
    #[inline]
    pub fn seal(&mut self, buf: &mut [u8], padded_len: usize) -> u64 {
        let counter = self.send_counter;
        self.send_counter += 1;
        TransportData::new_unchecked(&mut *buf).set_header(self.remote_index, counter);
        let (body, tag) = buf[DATA_HEADER_LEN..DATA_HEADER_LEN + padded_len + TAG_LEN].split_at_mut(padded_len);
        tag.copy_from_slice(&self.send_key.seal_in_place(counter, &[], body));
        counter
    }

    /// Decrypts the payload of a transport message in place (`payload` = ciphertext || tag) and
    /// records the counter. Returns the plaintext length.
    #[inline]
    pub fn open(&mut self, counter: u64, payload: &mut [u8], now: Instant) -> Result<usize, OpenFailure> {
        if now >= self.reject_at {
            return Err(OpenFailure::Expired);
        }
        if !self.replay.check(counter) {
            return Err(OpenFailure::Replay);
        }
        let len = self.recv_key.open_in_place(counter, &[], payload).map_err(|_| OpenFailure::Auth)?;
        // Commit only after authentication, so forgeries cannot move the window.
        if !self.replay.update(counter) {
            return Err(OpenFailure::Replay);
        }
        Ok(len)
    }

    /// Test hook: pretend this keypair has already sent `n` messages.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn force_send_counter(&mut self, n: u64) {
        self.send_counter = n;
    }
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
        let c = a.seal(&mut buf, 32);
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
    fn nonce_limit_is_enforced() {
        let now = Instant::now();
        let mut kp = Keypair::new(&SessionKeys { send: [1; 32], recv: [2; 32] }, 1, 2, true, now);
        kp.force_send_counter(REJECT_AFTER_MESSAGES - 1);
        assert!(kp.can_send(now));
        let mut buf = [0u8; 32];
        kp.seal(&mut buf, 0);
        assert!(!kp.can_send(now), "the last permitted nonce has been used");
    }
}
