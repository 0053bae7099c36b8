//! Fuzz entry points for what the IO drivers read from the kernel as text.

use std::time::Duration;

use crate::io::cpu::{parse_proc_stat, parse_proc_stat_for, parse_schedstat, ProcStatError, SchedstatError};

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

/// A `/proc/stat` text (any bytes, as lossy UTF-8): never a panic; what parses has its idle time
/// within its total, and the `cpu` line printed back reads as the same total and idle.
pub fn proc_stat(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_proc_stat(&text) {
        Ok(t) => {
            assert!(t.idle <= t.total, "{t:?} from {text:?}");
            let again = format!("cpu  {} 0 0 {} 0 0 0 0\n", t.total - t.idle, t.idle);
            let parsed = parse_proc_stat(&again).expect("a cpu line printed back parses");
            assert_eq!((parsed.total, parsed.idle, parsed.cpus), (t.total, t.idle, 0));
        }
        Err(ProcStatError::NotANumber { value, .. }) => assert!(value.chars().count() <= 32),
        Err(ProcStatError::NoCpuLine | ProcStatError::MissingField(_) | ProcStatError::Overflow) => {}
    }
    // Over some CPUs only: never a panic, idle within total, no more CPUs than asked for.
    let allowed = [0, 1, 3];
    match parse_proc_stat_for(&text, &allowed) {
        Ok(t) => assert!(t.idle <= t.total && t.cpus as usize <= allowed.len(), "{t:?} from {text:?}"),
        Err(ProcStatError::NotANumber { value, .. }) => assert!(value.chars().count() <= 32),
        Err(_) => {}
    }
}
