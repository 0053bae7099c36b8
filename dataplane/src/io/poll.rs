//! Waiting for readiness on a few descriptors (poll(2)).

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

/// What a descriptor is ready for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    /// POLLERR, POLLHUP or POLLNVAL: the descriptor is broken (e.g. its interface was deleted).
    pub failed: bool,
}

/// Waits until one of `fds` is readable or `timeout` passes (None: forever). Returns readiness
/// per descriptor, in order. `EINTR` counts as a timeout. Unless a signal cuts it short, a
/// timeout waits at least as long as given (rounded up to whole milliseconds).
pub fn wait_readable<const N: usize>(fds: [RawFd; N], timeout: Option<Duration>) -> io::Result<[Readiness; N]> {
    let mut pfds = fds.map(|fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 });
    // Rounded up: poll(2) counts whole milliseconds, and a sub-millisecond timeout rounded down
    // to 0 would return at once, so a caller waiting for a deadline would spin until it.
    let ms = timeout.map_or(-1, |t| t.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as libc::c_int);
    // SAFETY: `pfds` is a live array of N pollfd structs for the duration of the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), N as libc::nfds_t, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok([Readiness::default(); N]);
        }
        return Err(e);
    }
    Ok(pfds.map(|p| Readiness {
        readable: p.revents & libc::POLLIN != 0,
        failed: p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_timeout_under_a_millisecond_is_waited_not_skipped() {
        // A negative descriptor is ignored by poll(2): only the timeout can end the wait.
        let start = Instant::now();
        let ready = wait_readable([-1], Some(Duration::from_micros(900))).unwrap();
        assert_eq!(ready, [Readiness::default()]);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_micros(900), "returned after {waited:?} of a 900 us timeout");
    }
}
