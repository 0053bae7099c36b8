//! Per-peer timers as a closed set of reasons with a deadline table (whitepaper section 6).
//!
//! The protocol never sleeps: each peer records when each timer fires, the device reports the
//! earliest deadline through `poll_timeout`, and `handle_timeout(now)` runs whatever is due.

use std::time::Instant;

/// Why a peer wants to be woken up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerKind {
    /// An initiation went unanswered for REKEY_TIMEOUT (+ jitter): send it again, or give up.
    RetransmitHandshake,
    /// Data arrived and nothing was sent back for KEEPALIVE_TIMEOUT: send a keepalive.
    SendKeepalive,
    /// Data was sent and nothing came back for KEEPALIVE + REKEY_TIMEOUT: start a new handshake.
    NewHandshake,
    /// No new session for 3 * REJECT_AFTER_TIME: erase all key material.
    ZeroKeyMaterial,
    /// The configured persistent-keepalive interval passed without any packet sent.
    PersistentKeepalive,
}

impl TimerKind {
    /// Every timer, in table order.
    pub const ALL: [TimerKind; 5] = [
        TimerKind::RetransmitHandshake,
        TimerKind::SendKeepalive,
        TimerKind::NewHandshake,
        TimerKind::ZeroKeyMaterial,
        TimerKind::PersistentKeepalive,
    ];
}

/// Deadlines of one peer's timers.
#[derive(Debug, Clone, Default)]
pub struct Timers {
    deadlines: [Option<Instant>; 5],
}

impl Timers {
    /// Arms (or re-arms) a timer.
    pub fn set(&mut self, kind: TimerKind, at: Instant) {
        self.deadlines[kind as usize] = Some(at);
    }

    /// Arms a timer only if it is not already armed.
    pub fn set_if_unarmed(&mut self, kind: TimerKind, at: Instant) {
        let slot = &mut self.deadlines[kind as usize];
        if slot.is_none() {
            *slot = Some(at);
        }
    }

    /// Disarms a timer.
    pub fn cancel(&mut self, kind: TimerKind) {
        self.deadlines[kind as usize] = None;
    }

    /// Whether a timer is armed.
    pub fn is_armed(&self, kind: TimerKind) -> bool {
        self.deadlines[kind as usize].is_some()
    }

    /// Disarms everything.
    pub fn cancel_all(&mut self) {
        self.deadlines = [None; 5];
    }

    /// The earliest deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// Disarms and returns the timers that are due at `now`, in table order.
    pub fn take_expired(&mut self, now: Instant) -> impl Iterator<Item = TimerKind> {
        let mut due = [false; 5];
        for (i, d) in self.deadlines.iter_mut().enumerate() {
            if d.is_some_and(|at| at <= now) {
                *d = None;
                due[i] = true;
            }
        }
        TimerKind::ALL.into_iter().filter(move |k| due[*k as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn deadlines_fire_once_in_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.set(TimerKind::SendKeepalive, t0 + Duration::from_secs(10));
        t.set(TimerKind::RetransmitHandshake, t0 + Duration::from_secs(5));
        t.set_if_unarmed(TimerKind::RetransmitHandshake, t0 + Duration::from_secs(50));
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(t.take_expired(t0 + Duration::from_secs(4)).count(), 0);
        let due: Vec<_> = t.take_expired(t0 + Duration::from_secs(10)).collect();
        assert_eq!(due, vec![TimerKind::RetransmitHandshake, TimerKind::SendKeepalive]);
        assert_eq!(t.next_deadline(), None);
    }
}
