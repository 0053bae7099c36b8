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

/// CPU time so far, in clock ticks, summed over some CPUs' lines of `/proc/stat`: how much of it
/// was idle, and how many CPUs it is summed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTicks {
    /// user + nice + system + idle + iowait + irq + softirq + steal (guest time is already in
    /// user and nice).
    pub total: u64,
    /// idle + iowait: time no task wanted the CPU.
    pub idle: u64,
    /// The CPUs summed.
    pub cpus: u32,
}

impl CpuTicks {
    /// CPUs' worth of idle time from `earlier` to `self` (0.5: half a CPU was idle throughout);
    /// `None` if no time passed or the counters went back.
    pub fn idle_cpus_since(&self, earlier: &CpuTicks) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total).filter(|&t| t > 0)?;
        let idle = self.idle.checked_sub(earlier.idle)?.min(total);
        Some(idle as f64 / total as f64 * f64::from(self.cpus.max(1)))
    }
}

/// What is wrong with a `/proc/stat` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcStatError {
    /// The first line is not the aggregate `cpu` line.
    NoCpuLine,
    /// A CPU's line has fewer than the eight fields read (user to steal).
    MissingField(&'static str),
    /// A field is not a count of ticks.
    NotANumber { field: &'static str, value: String },
    /// The fields add up past what a u64 holds.
    Overflow,
}

impl std::fmt::Display for ProcStatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcStatError::NoCpuLine => write!(f, "/proc/stat: the first line is not the `cpu` line"),
            ProcStatError::MissingField(field) => write!(f, "/proc/stat: no {field} field on a CPU's line"),
            ProcStatError::NotANumber { field, value } => {
                write!(f, "/proc/stat: {field} is {value:?}, not a count of ticks")
            }
            ProcStatError::Overflow => write!(f, "/proc/stat: the CPUs' ticks add up past 2^64"),
        }
    }
}

impl std::error::Error for ProcStatError {}

/// Parses `/proc/stat` (its aggregate `cpu` line first, then a `cpuN  user nice system idle
/// iowait irq softirq steal ...` line per CPU) over the CPUs in `allowed` only: a process
/// confined to some CPUs of a large machine cares about those. `cpus` is how many of them
/// `/proc/stat` lists.
pub fn parse_proc_stat(text: &str, allowed: &[usize]) -> Result<CpuTicks, ProcStatError> {
    let mut lines = text.lines();
    if lines.next().is_none_or(|l| l.split_ascii_whitespace().next() != Some("cpu")) {
        return Err(ProcStatError::NoCpuLine);
    }
    let mut sum = CpuTicks { total: 0, idle: 0, cpus: 0 };
    let mut last: Option<usize> = None;
    for line in lines.take_while(|l| l.starts_with("cpu")) {
        let Some(n) = cpu_number(line) else { continue };
        // The kernel lists each CPU once, ascending: a line that repeats or goes back is not
        // counted again.
        if last.is_some_and(|l| n <= l) {
            continue;
        }
        last = Some(n);
        if !allowed.contains(&n) {
            continue;
        }
        let (total, idle) = cpu_fields(line.split_ascii_whitespace().skip(1))?;
        sum.total = sum.total.checked_add(total).ok_or(ProcStatError::Overflow)?;
        sum.idle = sum.idle.checked_add(idle).ok_or(ProcStatError::Overflow)?;
        sum.cpus = sum.cpus.saturating_add(1);
    }
    Ok(sum)
}

/// N of a `cpuN ...` line.
fn cpu_number(line: &str) -> Option<usize> {
    line.split_ascii_whitespace().next()?.strip_prefix("cpu")?.parse().ok()
}

/// Total and idle ticks of a `cpu` line's fields (after its name).
fn cpu_fields<'a>(mut fields: impl Iterator<Item = &'a str>) -> Result<(u64, u64), ProcStatError> {
    const FIELDS: [&str; 8] = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"];
    let mut ticks = [0u64; 8];
    for (tick, field) in ticks.iter_mut().zip(FIELDS) {
        let value = fields.next().ok_or(ProcStatError::MissingField(field))?;
        *tick =
            value.parse().map_err(|_| ProcStatError::NotANumber { field, value: value.chars().take(32).collect() })?;
    }
    let total = ticks.iter().try_fold(0u64, |sum, &t| sum.checked_add(t)).ok_or(ProcStatError::Overflow)?;
    // idle + iowait <= total, which did not overflow.
    Ok((total, ticks[3] + ticks[4]))
}

/// The CPU time so far of the CPUs in `allowed` (`/proc/stat`), read into `text` (kept for the
/// next reading, so that a reader polling it does not allocate).
pub fn read_cpu_ticks(text: &mut String, allowed: &[usize]) -> io::Result<CpuTicks> {
    use std::io::Read;
    text.clear();
    std::fs::File::open("/proc/stat")?.read_to_string(text)?;
    parse_proc_stat(text, allowed).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
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
    fn proc_stat_reads_as_total_idle_and_cpus() {
        let text = "cpu  100 5 50 800 20 3 7 15 9 1\ncpu0 50 2 25 400 10 1 3 8 4 0\n\
                    cpu1 50 3 25 400 10 2 4 7 5 1\nintr 12345 0 0\nctxt 999\n";
        let earlier = parse_proc_stat(text, &[0, 1]).unwrap();
        assert_eq!(earlier, CpuTicks { total: 1000, idle: 820, cpus: 2 });
        let later = CpuTicks { total: 1200, idle: 870, cpus: 2 };
        // 50 of 200 ticks idle, over 2 CPUs: half a CPU.
        assert_eq!(later.idle_cpus_since(&earlier), Some(0.5));
        assert_eq!(earlier.idle_cpus_since(&earlier), None, "no time passed");
        assert_eq!(earlier.idle_cpus_since(&later), None, "counters went back");
        // Only the CPUs a process may use: cpu1 alone, then one that is not listed.
        assert_eq!(parse_proc_stat(text, &[1]), Ok(CpuTicks { total: 501, idle: 410, cpus: 1 }));
        assert_eq!(parse_proc_stat(text, &[7]), Ok(CpuTicks { total: 0, idle: 0, cpus: 0 }));
        assert_eq!(parse_proc_stat("intr 1\ncpu0 1 2 3 4 5 6 7 8\n", &[0]), Err(ProcStatError::NoCpuLine));
        assert_eq!(parse_proc_stat("cpu  1\ncpu0 1 2\n", &[0]), Err(ProcStatError::MissingField("system")));
        assert!(matches!(
            parse_proc_stat("cpu  1\ncpu0 1 2 x 4 5 6 7 8", &[0]),
            Err(ProcStatError::NotANumber { field: "system", .. })
        ));
        let max = u64::MAX;
        assert_eq!(parse_proc_stat(&format!("cpu  1\ncpu0 {max} 1 0 0 0 0 0 0"), &[0]), Err(ProcStatError::Overflow));
        // A CPU listed twice (or out of order) counts once (found by the fuzzer).
        let twice = "cpu  0\ncpu0 1 0 0 1 0 0 0 0\ncpu1 2 0 0 2 0 0 0 0\ncpu1 9 0 0 9 0 0 0 0\ncpu0 9 0 0 9 0 0 0 0\n";
        assert_eq!(parse_proc_stat(twice, &[0, 1]), Ok(CpuTicks { total: 6, idle: 3, cpus: 2 }));
    }

    #[test]
    fn this_machines_proc_stat_parses_and_moves_forward() {
        let (mut text, allowed) = (String::new(), allowed_cpus().unwrap());
        let Ok(first) = read_cpu_ticks(&mut text, &allowed) else {
            eprintln!("skipped: no /proc/stat");
            return;
        };
        assert!(first.cpus as usize == allowed.len() && first.idle <= first.total, "{first:?} for {allowed:?}");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let second = read_cpu_ticks(&mut text, &allowed).unwrap();
        assert!(second.total >= first.total && second.idle >= first.idle, "{first:?} then {second:?}");
    }

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
