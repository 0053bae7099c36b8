//! MAC1/MAC2, cookie replies and the per-source handshake rate limiter (whitepaper section 5.4.7).
//!
//! The responder side ([`CookieChecker`], one per device) verifies MAC1 on every handshake message
//! and, when under load, MAC2 keyed by a cookie that binds the sender's IP address *and UDP port*.
//! The initiator side ([`CookieState`], one per peer) adds both MACs to what it sends and takes
//! the cookie out of a cookie reply.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand_core::RngCore;
use subtle::ConstantTimeEq;

use super::constants::{COOKIE_SECRET_LATENCY, COOKIE_SECRET_MAX_AGE};
use super::crypto::{hash, mac, xaead_open, xaead_seal, LABEL_COOKIE, LABEL_MAC1};
use crate::wire::wireguard::{CookieReply, COOKIE_REPLY_LEN};

/// Offsets of the two MACs at the end of a handshake message of length `len`.
#[inline]
fn mac_offsets(len: usize) -> (usize, usize) {
    (len - 32, len - 16)
}

/// What a handshake message's MACs say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacVerdict {
    /// MAC1 is wrong: not for us (or corrupted). Drop without a word.
    InvalidMac1,
    /// MAC1 is right, MAC2 absent or stale.
    Mac1Only,
    /// Both MACs check out: the sender proved it receives at its source address and port.
    Mac2Valid,
}

/// Responder-side MAC checks and cookie replies.
pub struct CookieChecker {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    secret: [u8; 32],
    secret_born: Option<Instant>,
}

impl CookieChecker {
    /// Keys derived from our own static public key.
    pub fn new(our_public: &[u8; 32]) -> Self {
        Self {
            mac1_key: hash(&[LABEL_MAC1, our_public]),
            cookie_key: hash(&[LABEL_COOKIE, our_public]),
            secret: [0; 32],
            secret_born: None,
        }
    }

    /// Checks MAC1 and, if asked, MAC2 of a complete handshake message.
    pub fn verify(
        &mut self,
        msg: &[u8],
        src: SocketAddr,
        check_mac2: bool,
        now: Instant,
        rng: &mut dyn RngCore,
    ) -> MacVerdict {
        let (m1, m2) = mac_offsets(msg.len());
        let expected = mac(&self.mac1_key, &msg[..m1]);
        if !bool::from(expected.ct_eq(&msg[m1..m2])) {
            return MacVerdict::InvalidMac1;
        }
        if !check_mac2 {
            return MacVerdict::Mac1Only;
        }
        let cookie = self.cookie_for(src, now, rng);
        if bool::from(mac(&cookie, &msg[..m2]).ct_eq(&msg[m2..])) {
            MacVerdict::Mac2Valid
        } else {
            MacVerdict::Mac1Only
        }
    }

    /// Writes a cookie reply to handshake message `msg` (whose sender index is `sender_index`).
    pub fn make_reply(
        &mut self,
        msg: &[u8],
        sender_index: u32,
        src: SocketAddr,
        now: Instant,
        rng: &mut dyn RngCore,
        out: &mut [u8; COOKIE_REPLY_LEN],
    ) {
        let (m1, m2) = mac_offsets(msg.len());
        let cookie = self.cookie_for(src, now, rng);
        let mut reply = CookieReply::new_unchecked(&mut out[..]);
        reply.set_message_type();
        reply.set_receiver_index(sender_index);
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        *reply.nonce_mut() = nonce;
        let mut sealed = [0u8; 32];
        xaead_seal(&self.cookie_key, &nonce, &cookie, &msg[m1..m2], &mut sealed);
        *reply.encrypted_cookie_mut() = sealed;
    }

    /// τ = MAC(R_m, A_m), where A_m is the source IP address and port, and R_m a secret that
    /// changes every two minutes.
    fn cookie_for(&mut self, src: SocketAddr, now: Instant, rng: &mut dyn RngCore) -> [u8; 16] {
        if self.secret_born.is_none_or(|born| now.saturating_duration_since(born) >= COOKIE_SECRET_MAX_AGE) {
            rng.fill_bytes(&mut self.secret);
            self.secret_born = Some(now);
        }
        let mut a = [0u8; 18];
        let n = match src.ip() {
            IpAddr::V4(ip) => {
                a[..4].copy_from_slice(&ip.octets());
                4
            }
            IpAddr::V6(ip) => {
                a[..16].copy_from_slice(&ip.octets());
                16
            }
        };
        a[n..n + 2].copy_from_slice(&src.port().to_be_bytes());
        mac(&self.secret, &a[..n + 2])
    }
}

/// Why a cookie reply was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieReplyError {
    /// We have no outstanding handshake message it could answer (or already took one for it).
    Unexpected,
    /// It does not decrypt under our peer's key with our last MAC1 as associated data.
    Invalid,
}

/// Initiator-side cookie state for one peer.
pub struct CookieState {
    mac1_key: [u8; 32],
    cookie_key: [u8; 32],
    cookie: Option<([u8; 16], Instant)>,
    last_mac1: Option<[u8; 16]>,
}

impl CookieState {
    /// Keys derived from the peer's static public key.
    pub fn new(peer_public: &[u8; 32]) -> Self {
        Self {
            mac1_key: hash(&[LABEL_MAC1, peer_public]),
            cookie_key: hash(&[LABEL_COOKIE, peer_public]),
            cookie: None,
            last_mac1: None,
        }
    }

    /// Fills in MAC1 and MAC2 (zero unless we hold a fresh cookie) of an outgoing message.
    pub fn add_macs(&mut self, msg: &mut [u8], now: Instant) {
        let (m1, m2) = mac_offsets(msg.len());
        let mac1 = mac(&self.mac1_key, &msg[..m1]);
        msg[m1..m2].copy_from_slice(&mac1);
        self.last_mac1 = Some(mac1);
        let fresh = self
            .cookie
            .filter(|(_, at)| now.saturating_duration_since(*at) < COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY);
        match fresh {
            Some((cookie, _)) => {
                let mac2 = mac(&cookie, &msg[..m2]);
                msg[m2..].copy_from_slice(&mac2);
            }
            None => msg[m2..].fill(0),
        }
    }

    /// Takes the cookie out of a reply to the last message we sent.
    pub fn consume_reply(&mut self, reply: &CookieReply<&[u8]>, now: Instant) -> Result<(), CookieReplyError> {
        let last_mac1 = self.last_mac1.ok_or(CookieReplyError::Unexpected)?;
        let cookie = xaead_open(&self.cookie_key, reply.nonce(), reply.encrypted_cookie(), &last_mac1)
            .ok_or(CookieReplyError::Invalid)?;
        self.cookie = Some((cookie, now));
        // One reply per message sent.
        self.last_mac1 = None;
        Ok(())
    }
}

/// Per-source token bucket for handshake messages under load: 20 per second, bursts of 5, keyed
/// by IPv4 address or IPv6 /64 (Linux `ratelimiter.c`). The table is bounded; when full, new
/// sources are refused until old entries age out.
#[derive(Default)]
pub struct RateLimiter {
    buckets: HashMap<u128, Bucket>,
    last_gc: Option<Instant>,
}

#[derive(Clone, Copy)]
struct Bucket {
    last: Instant,
    tokens: u64,
}

const PACKETS_PER_SECOND: u64 = 20;
const PACKETS_BURSTABLE: u64 = 5;
const PACKET_COST_NS: u64 = 1_000_000_000 / PACKETS_PER_SECOND;
const BUCKET_MAX_NS: u64 = PACKET_COST_NS * PACKETS_BURSTABLE;
const MAX_BUCKETS: usize = 1 << 16;

impl RateLimiter {
    /// True if a handshake message from `ip` may be processed now.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.gc(now);
        let key = match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            // /64: the low 64 bits of an IPv6 address are the host's to choose.
            IpAddr::V6(v6) => (u128::from(v6) >> 64) | (1 << 127),
        };
        if let Some(b) = self.buckets.get_mut(&key) {
            let elapsed = now.saturating_duration_since(b.last).as_nanos().min(u128::from(BUCKET_MAX_NS)) as u64;
            b.tokens = (b.tokens + elapsed).min(BUCKET_MAX_NS);
            b.last = now;
            if b.tokens >= PACKET_COST_NS {
                b.tokens -= PACKET_COST_NS;
                return true;
            }
            return false;
        }
        if self.buckets.len() >= MAX_BUCKETS {
            return false;
        }
        self.buckets.insert(key, Bucket { last: now, tokens: BUCKET_MAX_NS - PACKET_COST_NS });
        true
    }

    fn gc(&mut self, now: Instant) {
        if self.last_gc.is_some_and(|t| now.saturating_duration_since(t) < Duration::from_secs(1)) {
            return;
        }
        self.last_gc = Some(now);
        self.buckets.retain(|_, b| now.saturating_duration_since(b.last) < Duration::from_secs(1));
    }

    /// Sources currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::wireguard::INITIATION_LEN;
    use rand_core::OsRng;

    #[test]
    fn mac2_binds_address_and_port() {
        let responder = [9u8; 32];
        let mut checker = CookieChecker::new(&responder);
        let mut state = CookieState::new(&responder);
        let t0 = Instant::now();
        let src: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let mut msg = [0x55u8; INITIATION_LEN];
        msg[..4].copy_from_slice(&[1, 0, 0, 0]);
        state.add_macs(&mut msg, t0);
        assert_eq!(checker.verify(&msg, src, true, t0, &mut OsRng), MacVerdict::Mac1Only);

        let mut reply = [0u8; COOKIE_REPLY_LEN];
        checker.make_reply(&msg, 7, src, t0, &mut OsRng, &mut reply);
        state.consume_reply(&CookieReply::new_checked(&reply[..]).unwrap(), t0).unwrap();
        // A second reply for the same message is refused.
        assert_eq!(
            state.consume_reply(&CookieReply::new_checked(&reply[..]).unwrap(), t0),
            Err(CookieReplyError::Unexpected)
        );

        state.add_macs(&mut msg, t0);
        assert_eq!(checker.verify(&msg, src, true, t0, &mut OsRng), MacVerdict::Mac2Valid);
        let other_port: SocketAddr = "127.0.0.1:1001".parse().unwrap();
        assert_eq!(checker.verify(&msg, other_port, true, t0, &mut OsRng), MacVerdict::Mac1Only);
        let other_ip: SocketAddr = "127.0.0.2:1000".parse().unwrap();
        assert_eq!(checker.verify(&msg, other_ip, true, t0, &mut OsRng), MacVerdict::Mac1Only);

        msg[20] ^= 1;
        assert_eq!(checker.verify(&msg, src, true, t0, &mut OsRng), MacVerdict::InvalidMac1);
    }

    #[test]
    fn cookie_expires_with_its_secret() {
        let responder = [9u8; 32];
        let mut checker = CookieChecker::new(&responder);
        let mut state = CookieState::new(&responder);
        let t0 = Instant::now();
        let src: SocketAddr = "[::1]:5".parse().unwrap();
        let mut msg = [0u8; INITIATION_LEN];
        state.add_macs(&mut msg, t0);
        let mut reply = [0u8; COOKIE_REPLY_LEN];
        checker.make_reply(&msg, 1, src, t0, &mut OsRng, &mut reply);
        state.consume_reply(&CookieReply::new_checked(&reply[..]).unwrap(), t0).unwrap();
        let later = t0 + COOKIE_SECRET_MAX_AGE;
        state.add_macs(&mut msg, later);
        assert!(msg[INITIATION_LEN - 16..].iter().all(|&b| b == 0), "stale cookie must not be used");
        assert_eq!(checker.verify(&msg, src, true, later, &mut OsRng), MacVerdict::Mac1Only);
    }

    #[test]
    fn rate_limiter_bursts_then_refills() {
        let mut rl = RateLimiter::default();
        let t0 = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..10).filter(|_| rl.allow(ip, t0)).count();
        assert_eq!(allowed as u64, PACKETS_BURSTABLE);
        assert!(rl.allow("192.0.2.2".parse().unwrap(), t0), "buckets are per source");
        assert!(rl.allow(ip, t0 + Duration::from_millis(50)));
        assert!(!rl.allow(ip, t0 + Duration::from_millis(60)));
        // IPv6 hosts in one /64 share a bucket.
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!((0..5).filter(|_| rl.allow(a, t0)).count(), 5);
        assert!(!rl.allow(b, t0));
        rl.allow(ip, t0 + Duration::from_secs(5));
        assert_eq!(rl.tracked(), 1, "idle sources are collected");
    }
}
