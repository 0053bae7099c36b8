//! Fuzz entry points for what the IO drivers read from the kernel as text.

use std::time::Duration;

use crate::io::cpu::{parse_proc_stat, parse_schedstat, ProcStatError, SchedstatError};

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

/// A `/proc/stat` text (any bytes, as lossy UTF-8), read over some CPUs: never a panic; what
/// parses has its idle time within its total and no more CPUs than asked for, and printed back
/// as one CPU's line reads as the same total and idle.
pub fn proc_stat(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let allowed = [0, 1, 3];
    match parse_proc_stat(&text, &allowed) {
        Ok(t) => {
            assert!(t.idle <= t.total && t.cpus as usize <= allowed.len(), "{t:?} from {text:?}");
            let again = format!("cpu  0\ncpu0 {} 0 0 {} 0 0 0 0\n", t.total - t.idle, t.idle);
            let parsed = parse_proc_stat(&again, &[0]).expect("a CPU line printed back parses");
            assert_eq!((parsed.total, parsed.idle, parsed.cpus), (t.total, t.idle, 1));
        }
        Err(ProcStatError::NotANumber { value, .. }) => assert!(value.chars().count() <= 32),
        Err(ProcStatError::NoCpuLine | ProcStatError::MissingField(_) | ProcStatError::Overflow) => {}
    }
}
