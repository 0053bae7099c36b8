//! Anti-replay sliding window for transport counters (RFC 6479's bitmap ring, as Linux uses it).
//!
//! The window is split into a cheap pre-check ([`ReplayWindow::check`], before decryption, so
//! garbage never costs an AEAD) and the commit ([`ReplayWindow::update`], after the tag verifies,
//! so forged packets can never move the window).

use super::constants::REJECT_AFTER_MESSAGES;

const WORD_BITS: u64 = 64;
/// Ring size in 64-bit words; a power of two so an index is a mask.
const RING_WORDS: usize = 256;
/// Counters this far behind the greatest one seen are still accepted once: 16320 packets, twice
/// the 8192 the Linux implementation keeps, because batched multi-core receive reorders more.
pub const WINDOW_SIZE: u64 = (RING_WORDS as u64 - 1) * WORD_BITS;

/// Which counters of one receiving key have been seen.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One past the greatest counter accepted so far (0: nothing accepted yet).
    next: u64,
    ring: Box<[u64; RING_WORDS]>,
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self { next: 0, ring: Box::new([0; RING_WORDS]) }
    }
}

impl core::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ReplayWindow").field("next", &self.next).finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// True if `counter` may be new: within the window, under the message limit, and not yet seen.
    #[inline]
    pub fn check(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter >= self.next {
            return true;
        }
        if self.next - 1 - counter > WINDOW_SIZE {
            return false;
        }
        let (word, bit) = Self::position(counter);
        self.ring[word] & bit == 0
    }

    /// Marks `counter` seen. Returns false (and changes nothing) if it is a replay or too old.
    #[inline]
    pub fn update(&mut self, counter: u64) -> bool {
        if !self.check(counter) {
            return false;
        }
        if counter >= self.next {
            // Advance: clear the words between the old head and the new one.
            let old_word = self.next.wrapping_sub(1) / WORD_BITS;
            let new_word = counter / WORD_BITS;
            let advance = if self.next == 0 { RING_WORDS as u64 } else { new_word - old_word };
            for i in 1..=advance.min(RING_WORDS as u64) {
                self.ring[((old_word.wrapping_add(i)) as usize) & (RING_WORDS - 1)] = 0;
            }
            self.next = counter + 1;
        }
        let (word, bit) = Self::position(counter);
        self.ring[word] |= bit;
        true
    }

    /// Greatest counter accepted so far, if any.
    pub fn greatest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    #[inline]
    fn position(counter: u64) -> (usize, u64) {
        (((counter / WORD_BITS) as usize) & (RING_WORDS - 1), 1u64 << (counter % WORD_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    /// The specification, written the obvious way.
    #[derive(Default)]
    struct Model {
        seen: BTreeSet<u64>,
        greatest: Option<u64>,
    }

    impl Model {
        fn update(&mut self, c: u64) -> bool {
            if c >= REJECT_AFTER_MESSAGES || self.seen.contains(&c) {
                return false;
            }
            if let Some(g) = self.greatest {
                if c < g && g - c > WINDOW_SIZE {
                    return false;
                }
            }
            self.seen.insert(c);
            self.greatest = Some(self.greatest.map_or(c, |g| g.max(c)));
            true
        }
    }

    #[test]
    fn window_is_at_least_8192() {
        const { assert!(WINDOW_SIZE >= 8192) };
        let mut w = ReplayWindow::default();
        assert!(w.update(20_000));
        assert!(w.update(20_000 - 8192));
        assert!(!w.update(20_000 - 8192));
        assert!(w.update(20_000 - WINDOW_SIZE));
        assert!(!w.update(20_000 - WINDOW_SIZE - 1));
    }

    #[test]
    fn basic_sequence() {
        let mut w = ReplayWindow::default();
        assert!(w.update(0));
        assert!(!w.update(0));
        assert!(w.update(2));
        assert!(w.update(1));
        assert!(!w.update(1));
        assert!(w.update(1_000_000));
        assert!(!w.check(2));
        assert!(!w.update(REJECT_AFTER_MESSAGES));
        assert!(w.update(REJECT_AFTER_MESSAGES - 1));
        assert_eq!(w.greatest(), Some(REJECT_AFTER_MESSAGES - 1));
    }

    #[test]
    fn check_does_not_mutate() {
        let mut w = ReplayWindow::default();
        assert!(w.check(5));
        assert!(w.check(5));
        assert!(w.update(5));
        assert!(!w.check(5));
    }

    fn counters() -> impl Strategy<Value = Vec<u64>> {
        // Mix of near-sequential traffic, reordering within and beyond the window, and jumps.
        let step = prop_oneof![
            8 => (0u64..4).prop_map(|d| d as i64),
            3 => -(WINDOW_SIZE as i64) - 200..200i64,
            1 => (0u64..100_000).prop_map(|d| d as i64),
        ];
        proptest::collection::vec(step, 1..400).prop_map(|steps| {
            let mut c: i64 = 0;
            steps
                .into_iter()
                .map(|s| {
                    c = (c + s).max(0);
                    c as u64
                })
                .collect()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn matches_model(seq in counters()) {
            let mut w = ReplayWindow::default();
            let mut m = Model::default();
            for c in seq {
                prop_assert_eq!(w.check(c), m.clone_check(c), "check({})", c);
                prop_assert_eq!(w.update(c), m.update(c), "update({})", c);
            }
        }

        #[test]
        fn matches_model_near_the_limit(seq in counters()) {
            let base = REJECT_AFTER_MESSAGES - 50_000;
            let mut w = ReplayWindow::default();
            let mut m = Model::default();
            for c in seq {
                let c = base.saturating_add(c);
                prop_assert_eq!(w.update(c), m.update(c), "update({})", c);
            }
        }
    }

    impl Model {
        fn clone_check(&self, c: u64) -> bool {
            let mut copy = Model { seen: self.seen.clone(), greatest: self.greatest };
            copy.update(c)
        }
    }
}
