//! One batch's decryption shared between threads (`vxwg_dataplane::assist`): whoever opens a
//! datagram, every datagram is opened exactly once, with the outcome and the bytes the owner
//! alone would have produced, and the owner's commit delivers them in order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

mod common;
use common::engines::{addr, connected, ipv4_header, A};

use vxwg_dataplane::assist::{Board, CHUNK, MIN_SHARED, MIN_SHARED_BYTES};
use vxwg_dataplane::engine::{
    open_jobs, seal_jobs, Datagram, Engine, Incoming, OpenJob, Outgoing, SealJob, HEADROOM, TAILROOM,
};

/// Datagrams laid out as UDP GRO hands them over: several back to back in one buffer.
const PER_SLOT: usize = 5;

/// An IPv4 packet 10.0.0.1 -> 10.0.0.2 numbered `seq`, its body a pattern of the number.
fn numbered(seq: u32, buf: &mut [u8]) -> usize {
    numbered_up_to(seq, 1340, buf)
}

/// As `numbered`, at most `max` (> 40) bytes long.
fn numbered_up_to(seq: u32, max: usize, buf: &mut [u8]) -> usize {
    let len = 40 + (seq as usize * 13) % (max - 40);
    let p = &mut buf[HEADROOM..HEADROOM + len];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(7).wrapping_add(seq) as u8;
    }
    ipv4_header(p, len);
    p[20..24].copy_from_slice(&seq.to_le_bytes());
    len
}

/// A's datagrams to B carrying packets `0..count`, in order.
fn sealed(a: &mut Engine, count: u32, now: Instant) -> Vec<Vec<u8>> {
    sealed_up_to(a, count, 1340, now)
}

/// As `sealed`, with packets of at most `max` bytes.
fn sealed_up_to(a: &mut Engine, count: u32, max: usize, now: Instant) -> Vec<Vec<u8>> {
    let mut wire = Vec::new();
    for seq in 0..count {
        let mut buf = vec![0u8; HEADROOM + 1400 + TAILROOM];
        let len = numbered_up_to(seq, max, &mut buf);
        let (mut jobs, mut out): (Vec<SealJob>, Vec<Outgoing>) = (Vec::new(), Vec::new());
        a.plan_encapsulate(std::slice::from_ref(&buf), &[len], now, &mut jobs);
        seal_jobs(std::slice::from_mut(&mut buf), &[len], &jobs, &mut out);
        assert_eq!(out.len(), 1);
        wire.push(buf[..out[0].len].to_vec());
    }
    wire
}

/// `datagrams` packed `PER_SLOT` to a buffer, and where each lies.
fn packed(datagrams: &[Vec<u8>]) -> (Vec<Vec<u8>>, Vec<Datagram>) {
    let (mut bufs, mut at) = (Vec::new(), Vec::new());
    for group in datagrams.chunks(PER_SLOT) {
        let mut buf = Vec::new();
        for d in group {
            at.push(Datagram { slot: bufs.len(), range: buf.len()..buf.len() + d.len(), src: addr(A) });
            buf.extend_from_slice(d);
        }
        bufs.push(buf);
    }
    (bufs, at)
}

/// A job's outcome (plaintext length, or the failure) and its datagram's bytes after opening.
type Outcome = (Option<Result<usize, String>>, Vec<u8>);

/// What a batch's jobs came to.
fn outcomes(bufs: &[Vec<u8>], jobs: &[OpenJob]) -> Vec<Outcome> {
    jobs.iter()
        .map(|j| (j.opened().map(|r| r.map_err(|e| format!("{e:?}"))), bufs[j.slot()][j.range()].to_vec()))
        .collect()
}

/// Opens `jobs` on a fresh board with a helper thread that `wake` starts, and that the owner
/// waits for before it claims anything: the helper takes every chunk. Returns what the owner
/// counted as helped, what the helper said it opened, and the helpers `wake` was told of.
fn open_with_a_prompt_helper<B: AsMut<[u8]>>(bufs: &mut [B], jobs: &mut [OpenJob]) -> (usize, usize, usize) {
    let board = Arc::new(Board::new());
    let (go, went) = (mpsc::channel::<()>(), mpsc::channel::<usize>());
    let helper = {
        let board = Arc::clone(&board);
        let (go, went) = (go.1, went.0);
        std::thread::spawn(move || {
            go.recv().unwrap();
            went.send(board.help()).unwrap();
        })
    };
    let (mut by_helper, mut told) = (0, 0);
    let helped = board.open(bufs, jobs, |helpers| {
        told = helpers;
        go.0.send(()).unwrap();
        // The owner claims nothing until the helper has run out of chunks.
        by_helper = went.1.recv().unwrap();
    });
    helper.join().unwrap();
    (helped, by_helper, told)
}

/// A helper woken when the batch goes on offer, and waited for by the owner before it claims
/// anything, takes every chunk: the owner then opens none, and the outcome is the owner's own.
#[test]
fn a_helper_that_comes_at_once_opens_the_whole_batch() {
    let now = Instant::now();
    let (mut a, mut b, _) = connected(now);
    let wire = sealed(&mut a, 64, now);
    let (mut bufs, datagrams) = packed(&wire);
    let mut jobs = Vec::new();
    assert_eq!(b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs), 64);
    let (mut alone_bufs, mut alone_jobs) = (bufs.clone(), jobs.clone());
    open_jobs(&mut alone_bufs, &mut alone_jobs);

    let (helped, by_helper, told) = open_with_a_prompt_helper(&mut bufs, &mut jobs);
    assert_eq!(told, 64 / CHUNK - 1, "helpers that could take a chunk: all but the owner's first");
    assert_eq!((helped, by_helper), (64, 64), "every job opened by the helper, and counted so");
    assert_eq!(outcomes(&bufs, &jobs), outcomes(&alone_bufs, &alone_jobs), "as the owner alone would have");
    assert!(jobs.iter().all(|j| matches!(j.opened(), Some(Ok(_)))), "every job opened");
}

/// Small batches (too few datagrams, or too few bytes) are not offered (nobody is woken), and
/// neither is a batch whose datagrams are not in slot order (they might overlap): the owner
/// opens them alone, with the same outcome.
#[test]
fn small_or_unordered_batches_are_opened_by_the_owner_alone() {
    let now = Instant::now();
    let (mut a, mut b, _) = connected(now);
    // Datagrams of at most 100 bytes (68-byte packets): 64 of them are under the byte threshold.
    const { assert!(64 * 100 < MIN_SHARED_BYTES) };
    for (count, max, swap) in [(MIN_SHARED as u32 - 1, 1340, false), (64, 68, false), (40, 1340, true)] {
        let wire = sealed_up_to(&mut a, count, max, now);
        let (mut bufs, datagrams) = packed(&wire);
        let mut jobs = Vec::new();
        assert_eq!(b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs), count as usize);
        if swap {
            jobs.swap(3, 30);
        }
        let (mut alone_bufs, mut alone_jobs) = (bufs.clone(), jobs.clone());
        open_jobs(&mut alone_bufs, &mut alone_jobs);
        let board = Board::new();
        let mut woken = false;
        assert_eq!(board.open(&mut bufs, &mut jobs, |_| woken = true), 0);
        assert!(!woken, "{count} jobs of at most {max} bytes (swapped: {swap}) were not offered");
        assert_eq!(outcomes(&bufs, &jobs), outcomes(&alone_bufs, &alone_jobs));
    }
}

/// Owner and three helpers that keep asking, batch after batch: every datagram is opened once
/// (a datagram opened twice would fail its tag the second time, in place), the bytes are what
/// the owner alone makes, and the owner's commits deliver every packet once, in order. Forged
/// datagrams in the batch fail wherever they are opened.
#[test]
fn helpers_that_keep_asking_change_nothing_but_who_decrypts() {
    let now = Instant::now();
    let (mut a, mut b, _) = connected(now);
    const BATCHES: u32 = 150;
    const PER_BATCH: u32 = 61;
    let board = Arc::new(Board::new());
    let stop = Arc::new(AtomicBool::new(false));
    let by_helpers = Arc::new(AtomicUsize::new(0));
    let helpers: Vec<_> = (0..3)
        .map(|_| {
            let (board, stop, by_helpers) = (Arc::clone(&board), Arc::clone(&stop), Arc::clone(&by_helpers));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    by_helpers.fetch_add(board.help(), Ordering::Relaxed);
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let (mut delivered, mut helped, mut forged_failed) = (Vec::new(), 0, 0);
    let mut incoming: Vec<Incoming> = Vec::new();
    for batch in 0..BATCHES {
        let mut wire = sealed(&mut a, PER_BATCH, now);
        // One forgery per batch: a flipped ciphertext byte.
        let forged = (batch as usize * 17) % wire.len();
        let last = wire[forged].len() - 1;
        wire[forged][last] ^= 0x80;
        let (mut bufs, datagrams) = packed(&wire);
        let mut jobs = Vec::new();
        assert_eq!(b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs), PER_BATCH as usize);
        let (mut alone_bufs, mut alone_jobs) = (bufs.clone(), jobs.clone());
        open_jobs(&mut alone_bufs, &mut alone_jobs);
        helped += board.open(&mut bufs, &mut jobs, |_| {});
        assert_eq!(outcomes(&bufs, &jobs), outcomes(&alone_bufs, &alone_jobs), "batch {batch}");
        forged_failed += usize::from(matches!(jobs[forged].opened(), Some(Err(_))));
        incoming.clear();
        b.commit_decapsulate(&mut bufs, &jobs, now, &mut incoming);
        for i in &incoming {
            let p = &bufs[i.slot][i.range.clone()];
            let seq = u32::from_le_bytes(p[20..24].try_into().unwrap());
            let mut expected = vec![0u8; HEADROOM + p.len()];
            assert_eq!(numbered(seq, &mut expected), p.len());
            assert_eq!(&expected[HEADROOM..], p, "packet {seq} of batch {batch}");
            delivered.push((batch, seq));
        }
    }
    stop.store(true, Ordering::Relaxed);
    helpers.into_iter().for_each(|h| h.join().unwrap());
    assert_eq!(forged_failed, BATCHES as usize, "every forgery failed");
    let expected: Vec<(u32, u32)> = (0..BATCHES)
        .flat_map(|batch| {
            (0..PER_BATCH)
                .filter(move |&s| s as usize != (batch as usize * 17) % PER_BATCH as usize)
                .map(move |s| (batch, s))
        })
        .collect();
    assert_eq!(delivered, expected, "every genuine packet delivered once, in order");
    assert_eq!(helped, by_helpers.load(Ordering::Relaxed), "the owner counts what the helpers opened");
    // How much the helpers took depends on the scheduler (on a loaded machine they may not run
    // at all while the batches go by); that they do take chunks, and what then, is asserted
    // deterministically by the tests with a helper that comes at once.
    eprintln!(
        "helpers opened {helped} of {} datagrams ({} chunks of {CHUNK})",
        BATCHES * PER_BATCH,
        helped.div_ceil(CHUNK)
    );
}

/// A board has one owner at a time: a second `open` while a batch is on offer (here from the
/// first one's `wake`) opens its own batch alone, and both come out as they would alone.
#[test]
fn a_second_owner_of_a_board_opens_alone() {
    let now = Instant::now();
    let (mut a, mut b, _) = connected(now);
    let plan = |a: &mut Engine, b: &mut Engine| {
        let wire = sealed(a, 64, now);
        let (mut bufs, datagrams) = packed(&wire);
        let mut jobs = Vec::new();
        assert_eq!(b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs), 64);
        let (mut alone_bufs, mut alone_jobs) = (bufs.clone(), jobs.clone());
        open_jobs(&mut alone_bufs, &mut alone_jobs);
        (bufs, jobs, outcomes(&alone_bufs, &alone_jobs))
    };
    let (mut bufs1, mut jobs1, alone1) = plan(&mut a, &mut b);
    let (mut bufs2, mut jobs2, alone2) = plan(&mut a, &mut b);
    let board = Board::new();
    let mut inner = None;
    board.open(&mut bufs1, &mut jobs1, |_| {
        let mut woken = false;
        inner = Some((board.open(&mut bufs2, &mut jobs2, |_| woken = true), woken));
    });
    assert_eq!(inner, Some((0, false)), "the second owner shared nothing and woke nobody");
    assert_eq!(outcomes(&bufs1, &jobs1), alone1);
    assert_eq!(outcomes(&bufs2, &jobs2), alone2);
    // And once the first is done, the board is free again.
    let (mut bufs3, mut jobs3, alone3) = plan(&mut a, &mut b);
    let mut woken = false;
    board.open(&mut bufs3, &mut jobs3, |_| woken = true);
    assert!(woken, "offered again");
    assert_eq!(outcomes(&bufs3, &jobs3), alone3);
}

/// Buffers kept inline in the slice (arrays, not vectors) are shared the same way: each slot is
/// borrowed once, and the helper's outcome is the owner's own.
#[test]
fn inline_buffers_are_shared_as_well() {
    let now = Instant::now();
    let (mut a, mut b, _) = connected(now);
    let wire = sealed(&mut a, 64, now);
    let (vecs, datagrams) = packed(&wire);
    let mut bufs: Vec<[u8; 8192]> = vecs
        .iter()
        .map(|v| {
            let mut slot = [0u8; 8192];
            slot[..v.len()].copy_from_slice(v);
            slot
        })
        .collect();
    let mut jobs = Vec::new();
    assert_eq!(b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs), 64);
    let (mut alone_bufs, mut alone_jobs) = (bufs.clone(), jobs.clone());
    open_jobs(&mut alone_bufs, &mut alone_jobs);
    let (helped, by_helper, _) = open_with_a_prompt_helper(&mut bufs, &mut jobs);
    assert_eq!((helped, by_helper), (64, 64));
    let as_vecs = |bufs: &[[u8; 8192]]| bufs.iter().map(|b| b.to_vec()).collect::<Vec<_>>();
    assert_eq!(outcomes(&as_vecs(&bufs), &jobs), outcomes(&as_vecs(&alone_bufs), &alone_jobs));
}

mod layouts {
    use super::*;
    use proptest::prelude::*;

    /// How one datagram is laid out: bytes of junk before it, whether it starts a new slot.
    fn placement() -> impl Strategy<Value = (usize, bool)> {
        (0usize..48, prop::bool::weighted(0.2))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Whatever the layout of a batch (datagrams packed or spread over slots, junk between
        /// them, one range moved to overlap its neighbour, two swapped, one running past its
        /// buffer), the board's path, taken by the owner alone through the shared addresses,
        /// leaves every byte and outcome as `open_jobs` does.
        #[test]
        fn any_layout_opens_as_open_jobs_does(
            places in prop::collection::vec(placement(), 32..72),
            overlap in prop::option::of((0usize..72, 1usize..64)),
            swap in prop::option::of((0usize..72, 0usize..72)),
            past_end in prop::option::of(0usize..72),
        ) {
            let now = Instant::now();
            let (mut a, mut b, _) = connected(now);
            let wire = sealed(&mut a, places.len() as u32, now);
            let (mut bufs, mut datagrams): (Vec<Vec<u8>>, Vec<Datagram>) = (vec![Vec::new()], Vec::new());
            for (d, &(junk, new_slot)) in wire.iter().zip(&places) {
                if new_slot && !bufs.last().unwrap().is_empty() {
                    bufs.push(Vec::new());
                }
                let slot = bufs.len() - 1;
                let buf = &mut bufs[slot];
                buf.extend(std::iter::repeat_n(0x5a, junk));
                datagrams.push(Datagram { slot, range: buf.len()..buf.len() + d.len(), src: addr(A) });
                buf.extend_from_slice(d);
            }
            let n = datagrams.len();
            if let Some((i, by)) = overlap {
                let r = &mut datagrams[i % n].range;
                *r = r.start.saturating_sub(by)..r.end.saturating_sub(by);
            }
            if let Some((i, j)) = swap {
                datagrams.swap(i % n, j % n);
            }
            if let Some(i) = past_end {
                let d = &mut datagrams[i % n];
                d.range.end = bufs[d.slot].len() + 5;
            }
            let mut jobs = Vec::new();
            let mut planned = 0;
            while planned < n {
                planned += b.plan_decapsulate(&mut bufs, &datagrams[planned..], now, &mut jobs).max(1);
            }
            let (mut alone_bufs, mut alone_jobs) = (bufs.clone(), jobs.clone());
            open_jobs(&mut alone_bufs, &mut alone_jobs);
            let board = Board::new();
            prop_assert_eq!(board.open(&mut bufs, &mut jobs, |_| {}), 0, "nobody to help");
            prop_assert_eq!(outcomes(&bufs, &jobs), outcomes(&alone_bufs, &alone_jobs));
            prop_assert_eq!(bufs, alone_bufs, "every byte as open_jobs leaves it");
        }
    }
}
