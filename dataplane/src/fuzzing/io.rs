//! Fuzz entry points for what the IO drivers read from the kernel as text.

use std::time::Duration;

use crate::io::cpu::{parse_schedstat, SchedstatError};

/// A `schedstat` line (any bytes, as lossy UTF-8): never a panic, and what parses prints back
/// to the same figures.
pub fn schedstat(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    match parse_schedstat(&line) {
        Ok(t) => {
            let again = format!("{} {}", t.running.as_nanos(), t.waiting.as_nanos());
            assert_eq!(parse_schedstat(&again), Ok(t), "{again:?} from {line:?}");
            assert!(t.running <= Duration::from_nanos(u64::MAX));
        }
        Err(SchedstatError::MissingField(_)) => assert!(line.split_ascii_whitespace().count() < 2),
        Err(SchedstatError::NotANumber { value, .. }) => assert!(value.chars().count() <= 32),
    }
}
