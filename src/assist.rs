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
//! `auto` (the default) shares only while the machine has CPU to spare: at least half a CPU idle
//! over the last 200 ms (`/proc/stat`). Where every core is busy (the two shared cores of the
//! tunnel bench, or a node whose pods use all of it), waking a helper only moves the same work to
//! another thread and costs the wakeup.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use vxwg::dataplane::assist::{Board, MIN_SHARED};

/// How long a helper stays on after helping, watching for the next batch: a woken thread takes
/// tens of microseconds to run here, about as long as a batch takes to open.
const HELPER_SPIN: Duration = Duration::from_micros(50);
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
/// How often the machine's idle time is read.
const GAUGE_PERIOD: Duration = Duration::from_millis(200);

/// What the workers share for helping each other.
pub(crate) struct Assist {
    mode: AssistMode,
    /// Worker `i` offers its batches on `boards[i]`.
    boards: Vec<Board>,
    /// Worker `i` is waiting in `poll` (and so may help).
    waiting: Vec<AtomicBool>,
    /// Worker `i` polls `wake[i].0`; a byte on `wake[i].1` wakes it.
    wake: Vec<(UnixStream, UnixStream)>,
    gauge: IdleGauge,
}

impl Assist {
    /// For `workers` workers (sharing is off with one).
    pub fn new(workers: usize, mode: AssistMode) -> io::Result<Assist> {
        let wake = (0..workers)
            .map(|_| {
                let (reader, writer) = UnixStream::pair()?;
                reader.set_nonblocking(true)?;
                writer.set_nonblocking(true)?;
                Ok((reader, writer))
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Assist {
            mode: if workers > 1 { mode } else { AssistMode::Off },
            boards: (0..workers).map(|_| Board::new()).collect(),
            waiting: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            wake,
            gauge: IdleGauge::default(),
        })
    }

    /// What worker `worker` polls to hear it may help (-1, ignored by poll, if none).
    pub fn wake_fd(&self, worker: usize) -> RawFd {
        self.wake.get(worker).map_or(-1, |(reader, _)| reader.as_raw_fd())
    }

    /// Worker `worker` is about to wait in `poll` (`true`) or is back from it (`false`).
    pub fn set_waiting(&self, worker: usize, waiting: bool) {
        if let Some(w) = self.waiting.get(worker) {
            w.store(waiting, Ordering::Relaxed);
        }
    }

    /// Opens worker `owner`'s `jobs`, with the other workers' help when that pays. Returns how
    /// many of them the others opened.
    pub fn open(&self, owner: usize, bufs: &mut [Vec<u8>], jobs: &mut [OpenJob], now: Instant) -> usize {
        let share = match self.mode {
            AssistMode::Off => false,
            AssistMode::On => true,
            AssistMode::Auto => jobs.len() >= MIN_SHARED && self.gauge.spare(now),
        };
        let Some(board) = self.boards.get(owner).filter(|_| share) else {
            open_jobs(bufs, jobs);
            return 0;
        };
        board.open(bufs, jobs, || {
            for (i, waiting) in self.waiting.iter().enumerate() {
                if i != owner && waiting.load(Ordering::Relaxed) {
                    // A full socket means a wakeup is pending already.
                    let _ = (&self.wake[i].1).write(&[1]);
                }
            }
        })
    }

    /// Worker `worker` was woken to help: opens what the other workers have on offer. Returns
    /// how many datagrams it opened for them.
    pub fn help(&self, worker: usize) -> usize {
        if let Some((reader, _)) = self.wake.get(worker) {
            let mut sink = [0u8; 64];
            while matches!((&*reader).read(&mut sink), Ok(n) if n > 0) {}
        }
        let others = || self.boards.iter().enumerate().filter(move |(i, _)| *i != worker).map(|(_, b)| b);
        let mut opened: usize = others().map(Board::help).sum();
        let mut idle_since = Instant::now();
        while idle_since.elapsed() < HELPER_SPIN {
            if others().any(Board::has_offer) {
                opened += others().map(Board::help).sum::<usize>();
                idle_since = Instant::now();
            }
            std::hint::spin_loop();
        }
        opened
    }
}

/// Whether the machine has had CPU to spare lately, from `/proc/stat`, read by whichever worker
/// asks first once a period is over.
#[derive(Default)]
struct IdleGauge {
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
    fn spare(&self, now: Instant) -> bool {
        // Another worker reading it now: its verdict will do.
        if let Ok(mut r) = self.reading.try_lock() {
            if r.due.is_none_or(|due| now >= due) {
                r.due = Some(now + GAUGE_PERIOD);
                let ticks = read_cpu_ticks(&mut r.text).ok();
                if let (Some(now), Some(before)) = (ticks, r.last) {
                    let idle = now.idle_cpus_since(&before);
                    self.spare.store(idle.is_some_and(|cpus| cpus >= SPARE_CPUS), Ordering::Relaxed);
                }
                r.last = ticks;
            }
        }
        self.spare.load(Ordering::Relaxed)
    }
}
