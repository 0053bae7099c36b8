//! One batch's decryption shared between threads.
//!
//! The kernel hands every datagram of one peer to one socket of the `SO_REUSEPORT` group, so one
//! worker receives all of a peer's traffic, and a node that receives mostly from one other node
//! would decrypt on one core. The open jobs of a batch are independent of each other (each
//! decrypts its own datagram in place; the commit after them runs in arrival order, under the
//! engine's lock, on the owner), so other threads may take some of them:
//!
//! * the owner publishes its batch on its [`Board`] as chunks of [`CHUNK`] jobs
//!   ([`Board::open`]) and wakes whoever may help;
//! * a helper ([`Board::help`]) claims chunks, one at a time, until none is left;
//! * the owner claims chunks too, then withdraws the batch and waits only for the chunks that
//!   helpers are still opening.
//!
//! The owner never waits for a helper to start: a helper that arrives late finds nothing, and the
//! owner has opened everything itself. What the receiver delivers, and in which order, is what it
//! would be without helpers: only who ran the AEAD changes.
//!
//! The only `unsafe` code outside [`crate::io`] is here: helpers write into the owner's buffers
//! while the owner holds the `&mut` borrows of them. That is sound because:
//! 0. one [`Board::open`] call at a time publishes on a board (a flag taken on entry and given
//!    back after the last helper; a second caller opens its batch alone);
//! 1. [`Board::open`] keeps the exclusive borrows of the buffers and jobs for its whole call, and
//!    while the batch is shared it reaches them only through raw pointers derived once, before
//!    publishing (one per slot buffer, one for the jobs);
//! 2. before anything is published, every job's datagram is checked to lie inside its slot and
//!    after the previous job's (slots in order, ranges ascending and not overlapping); a batch
//!    that is not so is opened by the owner alone;
//! 3. each chunk is claimed once, under the board's lock, so no two threads touch the same job or
//!    the same bytes;
//! 4. the call returns, also when unwinding, only after the batch is withdrawn (no more claims)
//!    and every chunk a helper claimed is finished (a helper counts its chunk finished even when
//!    unwinding).
#![allow(unsafe_code)]

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::engine::{open_jobs, OpenJob};

/// Jobs per chunk: small enough that the owner's wait for a helper's last chunk stays short (16
/// datagrams of 1420 bytes are about 13 us of AEAD here), large enough that the lock and the
/// cache lines of the batch change hands rarely next to the work (8 measured slower).
pub const CHUNK: usize = 16;

/// Batches with fewer jobs than this, or fewer bytes than [`MIN_SHARED_BYTES`], are opened by
/// the owner alone: handing chunks over costs more than a helper could take (64 datagrams of
/// 64-byte packets open in about 12 us here, and sharing them made that slower).
pub const MIN_SHARED: usize = 2 * CHUNK;
pub const MIN_SHARED_BYTES: usize = 16 * 1024;

/// How long the owner spins for helpers still opening a chunk before it sleeps: a chunk takes
/// microseconds, and a sleeping owner takes tens of microseconds to wake on these VMs.
const OWNER_SPIN: Duration = Duration::from_micros(50);

/// Where one worker offers its batch's open jobs to others. One per worker, shared by all; on a
/// cache line of its own (helpers watch `offered` while its owner works on the rest).
#[derive(Default)]
#[repr(align(128))]
pub struct Board {
    state: Mutex<State>,
    /// Whether a batch is on offer: what a helper between batches watches without the lock (on
    /// a line of its own, apart from the lock the owner takes at every claim).
    offered: Padded<AtomicBool>,
    /// Chunks helpers have claimed and not yet finished (changed under the lock).
    in_flight: AtomicUsize,
    /// Taken by the one [`Board::open`] call that may publish at a time, from entry until every
    /// helper is done: a second caller (another thread, or `wake` calling back) opens alone.
    owned: AtomicBool,
    /// Signalled when a helper finishes a chunk while the owner sleeps.
    helper_done: Condvar,
}

#[derive(Default)]
struct State {
    /// The batch on offer, if any.
    batch: Option<Published>,
    /// Chunks handed out so far (to the owner and helpers) and in all.
    next: usize,
    chunks: usize,
    /// The owner sleeps until the helpers' chunks are finished (helpers then wake it).
    owner_waiting: bool,
    /// Jobs helpers opened in this batch.
    helper_jobs: usize,
    /// Each job's datagram (reused from batch to batch: no allocation once grown to the largest
    /// batch; not touched while a batch is published).
    datagrams: Vec<Datagram>,
}

/// A value on a cache line of its own.
#[derive(Default)]
#[repr(align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A job's datagram in the owner's buffer: where it starts and how long it is.
#[derive(Clone, Copy)]
struct Datagram {
    at: *mut u8,
    len: usize,
}

/// What helpers need of a published batch.
#[derive(Clone, Copy)]
struct Published {
    jobs: *mut OpenJob,
    len: usize,
    /// `State::datagrams`' buffer.
    datagrams: *const Datagram,
}

// SAFETY: the addresses are dereferenced only under the rules of the module documentation:
// by the thread that claimed the chunk they belong to, while the batch is published. What they
// point to may be used from any thread: bytes, and `OpenJob`s (checked below to be Send + Sync).
unsafe impl Send for Datagram {}
// SAFETY: as for `Datagram`.
unsafe impl Send for Published {}

const _: () = {
    const fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<OpenJob>();
};

impl Board {
    pub fn new() -> Board {
        Board::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens every job (as [`open_jobs`] does), sharing the work with the threads that call
    /// [`Board::help`] on this board meanwhile. Once the batch is on offer, `wake` is called with
    /// how many helpers could take part (its chunks less the owner's first), to wake up to that
    /// many. Returns how many jobs helpers opened (0 when the batch was not shared: too small,
    /// datagrams not in order, or another call already owns the board).
    pub fn open<B: AsMut<[u8]>>(&self, bufs: &mut [B], jobs: &mut [OpenJob], wake: impl FnOnce(usize)) -> usize {
        let bytes: usize = jobs.iter().map(|j| j.range().len()).sum();
        if jobs.len() < MIN_SHARED
            || bytes < MIN_SHARED_BYTES
            || self.owned.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err()
        {
            open_jobs(bufs, jobs);
            return 0;
        }
        // Given back however this call ends, after the helpers (`withdraw` is dropped first).
        let _owned = Owned(self);
        // Laid out without the lock (`as_mut` is the caller's code); the board is ours alone.
        let mut datagrams = std::mem::take(&mut self.lock().datagrams);
        if !lay_out(bufs, jobs, &mut datagrams) {
            self.lock().datagrams = datagrams;
            open_jobs(bufs, jobs);
            return 0;
        }
        let chunks = jobs.len().div_ceil(CHUNK);
        {
            let mut s = self.lock();
            s.datagrams = datagrams;
            s.batch = Some(Published { jobs: jobs.as_mut_ptr(), len: jobs.len(), datagrams: s.datagrams.as_ptr() });
            s.next = 0;
            s.chunks = chunks;
            s.helper_jobs = 0;
            self.offered.store(true, Ordering::Release);
        }
        // From here until `withdraw` is dropped, `bufs` and `jobs` are reached only through the
        // published addresses (not even `jobs.len()`: helpers hold `&mut` to some of them). The
        // guard withdraws the batch however this call ends.
        let withdraw = Withdraw(self);
        wake(chunks - 1);
        while let Some((batch, chunk)) = self.claim(false) {
            // SAFETY: rules 1-3 of the module documentation: the chunk is ours alone, its jobs
            // and datagrams were checked and published above, and `bufs` and `jobs` stay
            // borrowed by this call until `withdraw` has waited out every helper.
            unsafe { open_chunk(batch, chunk) };
        }
        drop(withdraw);
        let helped = self.lock().helper_jobs;
        helped
    }

    /// Whether a batch is on offer now (without taking the lock; a hint for a helper deciding
    /// whether to call [`Board::help`]).
    pub fn has_offer(&self) -> bool {
        self.offered.load(Ordering::Acquire)
    }

    /// Opens chunks of the batch on offer, if there is one, until none is left. Returns how many
    /// jobs this call opened.
    pub fn help(&self) -> usize {
        let mut opened = 0;
        while let Some((batch, chunk)) = self.claim(true) {
            // Counted finished on the way out, also when unwinding: the owner waits for it.
            let finished = Finished { board: self, jobs: chunk.len() };
            // SAFETY: as in `Board::open`: the chunk was claimed under the lock while the batch
            // was published, and the owner does not return before `finished` is dropped.
            unsafe { open_chunk(batch, chunk.clone()) };
            opened += finished.jobs;
        }
        opened
    }

    /// The next unclaimed chunk of the batch on offer: the batch's addresses and the chunk's
    /// job indices.
    fn claim(&self, helper: bool) -> Option<(Published, Range<usize>)> {
        let mut s = self.lock();
        let batch = s.batch?;
        if s.next >= s.chunks {
            return None;
        }
        let chunk = s.next;
        s.next += 1;
        if s.next == s.chunks {
            // Nothing left to take: helpers watching need not come.
            self.offered.store(false, Ordering::Release);
        }
        if helper {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        Some((batch, chunk * CHUNK..((chunk + 1) * CHUNK).min(batch.len)))
    }
}

/// Where each job's datagram lies, into `out`, if every one lies inside its slot, in slot order,
/// each after the one before (so no two share a byte; the engine plans them so, and a batch that
/// is not is not shared). One `as_mut` per slot: its length is checked and its address kept from
/// the same call (a second `as_mut` might answer otherwise, and would invalidate the addresses
/// taken from the first).
fn lay_out<B: AsMut<[u8]>>(bufs: &mut [B], jobs: &[OpenJob], out: &mut Vec<Datagram>) -> bool {
    out.clear();
    // One iterator over the slots, moving forward only: each element is borrowed once and apart
    // from the others (indexing the slice again would reborrow all of it, and with buffers kept
    // inline in the slice that would invalidate the addresses taken from earlier slots).
    let mut slots = bufs.iter_mut().enumerate();
    let mut current: Option<(usize, *mut u8, usize)> = None;
    let mut previous_end = 0;
    for job in jobs {
        let (slot, range) = (job.slot(), job.range());
        let (base, len) = match current {
            Some((s, base, len)) if s == slot => (base, len),
            Some((s, ..)) if slot < s => return false,
            _ => {
                let Some((_, buf)) = slots.by_ref().find(|(i, _)| *i == slot) else { return false };
                let buf = buf.as_mut();
                let (base, len) = (buf.as_mut_ptr(), buf.len());
                current = Some((slot, base, len));
                previous_end = 0;
                (base, len)
            }
        };
        if range.start < previous_end || range.start > range.end || range.end > len {
            return false;
        }
        previous_end = range.end;
        // In bounds (just checked), so the offset stays inside the slot's buffer.
        out.push(Datagram { at: base.wrapping_add(range.start), len: range.len() });
    }
    true
}

/// Gives the board back to the next [`Board::open`].
struct Owned<'a>(&'a Board);

impl Drop for Owned<'_> {
    fn drop(&mut self) {
        self.0.owned.store(false, Ordering::Release);
    }
}

/// Withdraws the board's batch (no more claims) and waits until every chunk a helper claimed is
/// finished: after its drop, the owner's buffers are the owner's alone again.
struct Withdraw<'a>(&'a Board);

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        let board = self.0;
        {
            let mut s = board.lock();
            s.batch = None;
            board.offered.store(false, Ordering::Release);
        }
        let start = Instant::now();
        while board.in_flight.load(Ordering::Acquire) > 0 {
            if start.elapsed() < OWNER_SPIN {
                std::hint::spin_loop();
                continue;
            }
            // Held up (descheduled, say): sleep. `in_flight` only falls under the lock, so the
            // helper that takes it to 0 sees `owner_waiting` and wakes us.
            let mut s = board.lock();
            s.owner_waiting = true;
            while board.in_flight.load(Ordering::Acquire) > 0 {
                s = board.helper_done.wait(s).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            s.owner_waiting = false;
            break;
        }
    }
}

/// A helper's claimed chunk, counted finished when dropped.
struct Finished<'a> {
    board: &'a Board,
    jobs: usize,
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        let mut s = self.board.lock();
        s.helper_jobs += self.jobs;
        self.board.in_flight.fetch_sub(1, Ordering::AcqRel);
        let wake = s.owner_waiting;
        drop(s);
        if wake {
            self.board.helper_done.notify_all();
        }
    }
}

/// Opens jobs `chunk` of a published batch.
///
/// # Safety
/// `batch` must be published on a board by a [`Board::open`] that has not returned yet, and the
/// chunk claimed from that board by the caller alone.
unsafe fn open_chunk(batch: Published, chunk: Range<usize>) {
    for i in chunk {
        // SAFETY: `i < batch.len` (the chunk was cut from it); job `i` and its datagram belong to
        // this chunk only, and datagrams do not overlap (checked before publishing).
        let (job, datagram) = unsafe {
            let d = *batch.datagrams.add(i);
            (&mut *batch.jobs.add(i), std::slice::from_raw_parts_mut(d.at, d.len))
        };
        job.open_in(datagram);
    }
}
