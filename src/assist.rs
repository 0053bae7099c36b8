//! The daemon's side of `vxwg::dataplane::assist`: idle workers help the worker that received a
//! large batch decrypt it. All of one peer's datagrams reach one worker (the kernel picks the
//! socket of the `SO_REUSEPORT` group by the peer's address), so without this a node that
//! receives mostly from one other node decrypts on one core, however many it has.
//!
//! A worker about to open a batch of at least `MIN_SHARED` datagrams puts it on its board and
//! wakes the workers that are waiting in `poll` (a byte on a socket each polls); they take chunks
//! of it until none is left, the owner takes the rest. The batch is then committed and delivered
//! by its owner, in order, as before.
//!
//! `auto` (the default) shares only while the daemon's CPUs have time to spare: at least half a
//! CPU idle over the last 200 ms or so (`/proc/stat`, the CPUs of the daemon's affinity mask,
//! read by the control thread), and never with more workers than those CPUs. Where every core is busy (the two shared cores of the
//! tunnel bench, or a node whose pods use all of it), waking a helper only moves the same work to
//! another thread and costs the wakeup.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vxwg::dataplane::assist::Board;
use vxwg::dataplane::engine::{open_jobs, OpenJob};
use vxwg::dataplane::io::cpu::{read_cpu_ticks, CpuTicks};

/// When idle workers help decrypt a busy worker's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum AssistMode {
    /// Never: each worker decrypts what it receives.
    Off,
    /// Whenever another worker is waiting for work.
    On,
    /// When another worker is waiting and the machine has CPU to spare.
    #[default]
    Auto,
}

impl AssistMode {
    /// `VXWG_ASSIST=off|on|auto` (for comparison runs) over the configuration, over `auto`.
    pub fn plan(configured: Option<AssistMode>) -> anyhow::Result<AssistMode> {
        match std::env::var("VXWG_ASSIST") {
            Ok(v) => match v.as_str() {
                "off" => Ok(AssistMode::Off),
                "on" => Ok(AssistMode::On),
                "auto" => Ok(AssistMode::Auto),
                _ => anyhow::bail!("VXWG_ASSIST={v:?}: must be off, on or auto"),
            },
            Err(_) => Ok(configured.unwrap_or_default()),
        }
    }
}

/// Idle time worth waking a helper for, in CPUs.
const SPARE_CPUS: f64 = 0.5;
/// How often the machine's idle time is read (by the control thread, which wakes at least every
/// 250 ms).
const GAUGE_PERIOD: Duration = Duration::from_millis(200);
/// How long a helper stays on after helping, watching for the next batch: a woken thread takes
/// tens of microseconds to run here, about as long as a batch takes to open.
const HELPER_SPIN: Duration = Duration::from_micros(50);
/// Longest a helper stays away from its own queues in one go, however busy the others are.
const HELPER_MAX: Duration = Duration::from_millis(1);
/// How often a helper that stays on looks at its own queues.
const OWN_WORK_EVERY: Duration = Duration::from_micros(20);

/// What the workers share for helping each other.
pub(crate) struct Assist {
    mode: AssistMode,
    /// Worker `i` offers its batches on `boards[i]`.
    boards: Vec<Board>,
    /// Worker `i` is waiting in `poll` (and so may help); a cache line each, since every worker
    /// writes its own twice a loop.
    waiting: Vec<Padded>,
    /// Worker `i` polls `wake[i].0`; a byte on `wake[i].1` wakes it.
    wake: Vec<(UnixStream, UnixStream)>,
    gauge: IdleGauge,
}

impl Assist {
    /// For `workers` workers (sharing is off with one). `auto` stays off where the workers
    /// outnumber the CPUs the daemon may use: a helper would take an owner's own core.
    pub fn new(workers: usize, mode: AssistMode) -> io::Result<Assist> {
        let allowed = vxwg::dataplane::io::cpu::allowed_cpus().unwrap_or_default();
        let mode = match mode {
            _ if workers < 2 => AssistMode::Off,
            AssistMode::Auto if workers > allowed.len() => AssistMode::Off,
            m => m,
        };
        // No wake sockets where nobody is woken: the workers then poll none.
        let wake = (0..if mode == AssistMode::Off { 0 } else { workers })
            .map(|_| {
                let (reader, writer) = UnixStream::pair()?;
                reader.set_nonblocking(true)?;
                writer.set_nonblocking(true)?;
                Ok((reader, writer))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Assist {
            mode,
            boards: (0..workers).map(|_| Board::new()).collect(),
            waiting: (0..workers).map(|_| Padded::default()).collect(),
            wake,
            gauge: IdleGauge::new(allowed),
        })
    }

    /// What worker `worker` polls to hear it may help (-1, ignored by poll, if none).
    pub fn wake_fd(&self, worker: usize) -> RawFd {
        self.wake.get(worker).map_or(-1, |(reader, _)| reader.as_raw_fd())
    }

    /// Worker `worker` is about to wait in `poll` (`true`) or is back from it (`false`).
    pub fn set_waiting(&self, worker: usize, waiting: bool) {
        if let Some(w) = self.waiting.get(worker).filter(|_| self.mode != AssistMode::Off) {
            w.0.store(waiting, Ordering::Relaxed);
        }
    }

    /// Reads the machine's idle time if a period has passed (`auto` shares only while there is
    /// CPU to spare). Called by the control thread, off the packet path.
    pub fn sample(&self, now: Instant) {
        if self.mode == AssistMode::Auto {
            self.gauge.sample(now);
        }
    }

    /// Opens worker `owner`'s `jobs`, with the other workers' help when that pays. Returns how
    /// many of them the others opened.
    pub fn open(&self, owner: usize, bufs: &mut [Vec<u8>], jobs: &mut [OpenJob]) -> usize {
        let share = match self.mode {
            AssistMode::Off => false,
            AssistMode::On => true,
            // Whether the batch is large enough, the board decides.
            AssistMode::Auto => self.gauge.spare.load(Ordering::Relaxed),
        };
        let Some(board) = self.boards.get(owner).filter(|_| share) else {
            open_jobs(bufs, jobs);
            return 0;
        };
        board.open(bufs, jobs, |helpers| {
            // No more than could take a chunk each.
            let waiting = self.waiting.iter().enumerate().filter(|(i, w)| *i != owner && w.0.load(Ordering::Relaxed));
            for (i, _) in waiting.take(helpers) {
                // A full socket means a wakeup is pending already.
                let _ = (&self.wake[i].1).write(&[1]);
            }
        })
    }

    /// Takes worker `worker`'s wakeups (for a worker that has work of its own and will not help
    /// this time).
    pub fn drain_wake(&self, worker: usize) {
        if let Some((reader, _)) = self.wake.get(worker) {
            let mut sink = [0u8; 64];
            while matches!((&*reader).read(&mut sink), Ok(n) if n > 0) {}
        }
    }

    /// Worker `worker` was woken to help: opens what the other workers have on offer, and stays
    /// on for the next batch for a moment, but never past `HELPER_MAX` nor once `own_work` says
    /// its own queues have something. Returns how many datagrams it opened for them.
    pub fn help(&self, worker: usize, own_work: impl Fn() -> bool) -> usize {
        self.drain_wake(worker);
        let others = || self.boards.iter().enumerate().filter(move |(i, _)| *i != worker).map(|(_, b)| b);
        let start = Instant::now();
        let mut opened: usize = others().map(Board::help).sum();
        let (mut idle_since, mut looked) = (Instant::now(), Instant::now());
        loop {
            let now = Instant::now();
            if now - idle_since >= HELPER_SPIN || now - start >= HELPER_MAX {
                return opened;
            }
            if now - looked >= OWN_WORK_EVERY {
                if own_work() {
                    return opened;
                }
                looked = now;
            }
            if others().any(Board::has_offer) {
                opened += others().map(Board::help).sum::<usize>();
                idle_since = Instant::now();
            }
            std::hint::spin_loop();
        }
    }
}

/// A worker's `waiting` flag, on a cache line of its own.
#[derive(Default)]
#[repr(align(128))]
struct Padded(AtomicBool);

/// Whether the daemon's CPUs have had time to spare lately, from `/proc/stat`.
struct IdleGauge {
    allowed: Vec<usize>,
    reading: Mutex<Reading>,
    spare: AtomicBool,
}

#[derive(Default)]
struct Reading {
    due: Option<Instant>,
    last: Option<CpuTicks>,
    text: String,
}

impl IdleGauge {
    fn new(allowed: Vec<usize>) -> IdleGauge {
        IdleGauge { allowed, reading: Mutex::default(), spare: AtomicBool::new(false) }
    }

    fn sample(&self, now: Instant) {
        let Ok(mut r) = self.reading.try_lock() else { return };
        if r.due.is_some_and(|due| now < due) {
            return;
        }
        r.due = Some(now + GAUGE_PERIOD);
        let r = &mut *r;
        let ticks = read_cpu_ticks(&mut r.text, &self.allowed).ok();
        // No reading, or none before it (the first, or after a failed one): not known to be idle.
        let idle = match (ticks, r.last) {
            (Some(now), Some(before)) if now.cpus == before.cpus => now.idle_cpus_since(&before),
            _ => None,
        };
        self.spare.store(idle.is_some_and(|cpus| cpus >= SPARE_CPUS), Ordering::Relaxed);
        r.last = ticks;
    }
}
