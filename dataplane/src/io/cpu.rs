//! CPU affinity for worker threads: which CPUs the process may use, and pinning a thread to one,
//! so each worker keeps its caches and its queues' interrupts stay near it.

use std::io;
use std::time::Duration;

/// CPUs this process may run on (its affinity mask, as `sched_getaffinity` reports it; a cgroup
/// cpuset or `taskset` narrows it), ascending. Only the first `CPU_SETSIZE` (1024) are seen.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: all-zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into a live set.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads the bit of `cpu` in `set`; every cpu below CPU_SETSIZE has one.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect())
}

/// Pins the calling thread to `cpu` (`sched_setaffinity` on the thread itself). Fails with
/// `InvalidInput` beyond `CPU_SETSIZE`, and as the kernel says (EINVAL) for a CPU this process
/// may not use.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond the {} an affinity mask holds", libc::CPU_SETSIZE),
        ));
    }
    // SAFETY: all-zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only sets the bit of `cpu` in `set`; checked above to be within it.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from a live set; pid 0 is
    // the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("pinning this thread to CPU {cpu}: {e}")));
    }
    Ok(())
}

/// A thread's time on a CPU and time spent runnable but waiting for one, as the scheduler
/// accounts them (`/proc/.../schedstat`). Waiting is what a node agent loses to its neighbours
/// on a busy machine: a worker that waits often drops packets it would have had time for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    pub running: Duration,
    pub waiting: Duration,
}

impl std::ops::Add for CpuTime {
    type Output = CpuTime;
    fn add(self, other: CpuTime) -> CpuTime {
        CpuTime { running: self.running + other.running, waiting: self.waiting + other.waiting }
    }
}

/// What is wrong with a `schedstat` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedstatError {
    /// The line has fewer than the two fields read (nanoseconds running, nanoseconds waiting).
    MissingField(&'static str),
    /// A field is not a count of nanoseconds.
    NotANumber { field: &'static str, value: String },
}

impl std::fmt::Display for SchedstatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchedstatError::MissingField(field) => write!(f, "schedstat: no {field} field"),
            SchedstatError::NotANumber { field, value } => {
                write!(f, "schedstat: {field} is {value:?}, not a count of nanoseconds")
            }
        }
    }
}

impl std::error::Error for SchedstatError {}

/// Parses a `schedstat` line: nanoseconds on a CPU, nanoseconds waiting for one, timeslices.
pub fn parse_schedstat(line: &str) -> Result<CpuTime, SchedstatError> {
    let mut fields = line.split_ascii_whitespace();
    let mut next = |field: &'static str| -> Result<Duration, SchedstatError> {
        let value = fields.next().ok_or(SchedstatError::MissingField(field))?;
        value
            .parse::<u64>()
            .map(Duration::from_nanos)
            .map_err(|_| SchedstatError::NotANumber { field, value: value.chars().take(32).collect() })
    };
    Ok(CpuTime { running: next("running")?, waiting: next("waiting")? })
}

/// The calling thread's id (`gettid`), which names it under `/proc/self/task`.
pub fn current_thread_id() -> i32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// The CPU time of thread `tid` of this process. `NotFound` once the thread has ended, or where
/// the kernel keeps no scheduler statistics (built without CONFIG_SCHED_INFO).
pub fn thread_cpu_time(tid: i32) -> io::Result<CpuTime> {
    let line = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))?;
    parse_schedstat(&line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedstat_line_reads_as_running_and_waiting() {
        let t = parse_schedstat("1203884566 48211 977\n").unwrap();
        assert_eq!(t, CpuTime { running: Duration::from_nanos(1_203_884_566), waiting: Duration::from_nanos(48_211) });
        // Older kernels print the same three fields; only the first two are read.
        assert_eq!(parse_schedstat("5 6").unwrap().waiting, Duration::from_nanos(6));
    }

    #[test]
    fn a_bad_schedstat_line_says_which_field() {
        assert_eq!(parse_schedstat(""), Err(SchedstatError::MissingField("running")));
        assert_eq!(parse_schedstat("12\n"), Err(SchedstatError::MissingField("waiting")));
        let e = parse_schedstat("12 -4 1").unwrap_err();
        assert_eq!(e, SchedstatError::NotANumber { field: "waiting", value: "-4".into() });
        assert_eq!(e.to_string(), "schedstat: waiting is \"-4\", not a count of nanoseconds");
        assert!(matches!(parse_schedstat("x1 2"), Err(SchedstatError::NotANumber { field: "running", .. })));
    }

    /// The thread's own CPU clock, which the kernel keeps from the same runtime sum.
    fn thread_clock() -> Duration {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes one timespec into a live one.
        assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }

    #[test]
    fn a_threads_cpu_time_grows_as_it_computes() {
        let tid = current_thread_id();
        let Ok(before) = thread_cpu_time(tid) else {
            eprintln!("skipped: no scheduler statistics in /proc (kernel without CONFIG_SCHED_INFO)");
            return;
        };
        let clock_before = thread_clock();
        // About 30 ms of CPU, whatever else the machine runs.
        let mut x = 0u64;
        while thread_clock() - clock_before < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = thread_cpu_time(tid).unwrap();
        let (ran, clocked) = (after.running - before.running, thread_clock() - clock_before);
        // schedstat lags the running thread by at most the part of a tick not yet accounted.
        assert!(ran <= clocked + Duration::from_millis(1), "{ran:?} on the CPU in {clocked:?} of thread time");
        assert!(ran + Duration::from_millis(15) >= clocked, "{ran:?} on the CPU in {clocked:?} of thread time");
        assert!(after.waiting >= before.waiting);
        let ended = std::thread::spawn(current_thread_id).join().unwrap();
        assert_eq!(thread_cpu_time(ended).unwrap_err().kind(), io::ErrorKind::NotFound, "an ended thread");
    }
}
