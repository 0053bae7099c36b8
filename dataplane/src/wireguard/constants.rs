//! Protocol constants (whitepaper section 6.1 and Linux `messages.h`).

use core::time::Duration;

/// Initiate a new handshake after this many messages on one key.
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Never use a key for more messages than this (nonce exhaustion margin of 2^13).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// The initiator starts a new handshake when its key is this old.
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// A key older than this is never used, in either direction.
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// Give up on handshakes after this long.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// Retransmit an unanswered initiation after this long (plus jitter).
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the random jitter added to [`REKEY_TIMEOUT`].
pub const REKEY_TIMEOUT_JITTER_MAX: Duration = Duration::from_millis(334);
/// Send a keepalive if data was received but nothing was sent back for this long.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshake attempts before giving up (REKEY_ATTEMPT_TIME / REKEY_TIMEOUT).
pub const MAX_TIMER_HANDSHAKES: u32 = (REKEY_ATTEMPT_TIME.as_secs() / REKEY_TIMEOUT.as_secs()) as u32;
/// A cookie secret, and a cookie received, is good for this long.
pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// Margin for network latency when deciding whether a received cookie is still good.
pub const COOKIE_SECRET_LATENCY: Duration = Duration::from_secs(5);
/// At most this many initiations per second are accepted from one peer (flood protection).
pub const INITIATIONS_PER_SECOND: u32 = 50;
/// Packets staged per peer while a handshake is in flight; the oldest is dropped beyond this.
pub const MAX_STAGED_PACKETS: usize = 128;
/// Once under load, the responder keeps demanding cookies for at least this long.
pub const UNDER_LOAD_HOLD: Duration = Duration::from_secs(1);
