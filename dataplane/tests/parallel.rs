//! Several workers sharing one engine behind a lock, as the daemon runs them: planning under the
//! lock, the AEAD outside it, and (receive) a short commit under the lock again. What must hold:
//! no send counter is used twice, every packet is delivered exactly once, duplicates lose at the
//! commit, forgeries never move the replay window, and a keypair that rotates between the phases
//! is handled.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::engines::{addr, connected, exchange, ipv4_header, net, pod_pair, A, B};

use vxwg_dataplane::engine::pod::{
    reseal_stale_pod, seal_pod_jobs, Delivery, PodEngine, PodSealJob, POD_HEADROOM, POD_TAILROOM,
};
use vxwg_dataplane::engine::{
    open_jobs, reseal_stale, seal_jobs, Datagram, Engine, Incoming, OpenJob, Outgoing, SealJob, HEADROOM, TAILROOM,
};
use vxwg_dataplane::wireguard::RESEAL_BEHIND;
use vxwg_dataplane::wireguard::{DropReason, Encapsulated, PeerConfig, Received};

const BATCH: usize = 32;

/// An IPv4 packet 10.0.0.1 → 10.0.0.2 tagged with `(worker, seq)`, its body a pattern of both,
/// written at `buf[HEADROOM..]`; returns its length.
fn tagged(worker: u8, seq: u32, buf: &mut [u8]) -> usize {
    let len = 40 + (seq as usize * 7) % 600;
    let p = &mut buf[HEADROOM..HEADROOM + len];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(31).wrapping_add(seq).wrapping_add(u32::from(worker) << 8) as u8;
    }
    ipv4_header(p, len);
    p[20] = worker;
    p[21..25].copy_from_slice(&seq.to_le_bytes());
    len
}

/// The tag of a delivered packet, after checking every byte of it is what `tagged` wrote.
fn untag(packet: &[u8]) -> (u8, u32) {
    let (worker, seq) = (packet[20], u32::from_le_bytes(packet[21..25].try_into().unwrap()));
    let mut expected = vec![0u8; HEADROOM + packet.len()];
    assert_eq!(tagged(worker, seq, &mut expected), packet.len(), "length of ({worker}, {seq})");
    assert_eq!(&expected[HEADROOM..], packet, "contents of ({worker}, {seq})");
    (worker, seq)
}

fn counter_of(datagram: &[u8]) -> u64 {
    u64::from_le_bytes(datagram[8..16].try_into().unwrap())
}

/// Sends `count` tagged packets from `worker` through a shared engine: plan under the lock, seal
/// outside it. Returns the datagrams as they would go on the wire.
fn send_worker(engine: &Mutex<Engine>, worker: u8, count: u32, now: Instant) -> Vec<Vec<u8>> {
    let mut bufs = vec![vec![0u8; HEADROOM + 700 + TAILROOM]; BATCH];
    let mut lens = vec![0usize; BATCH];
    let mut jobs: Vec<SealJob> = Vec::new();
    let mut out: Vec<Outgoing> = Vec::new();
    let mut wire = Vec::new();
    let mut seq = 0;
    while seq < count {
        let n = BATCH.min((count - seq) as usize);
        for i in 0..n {
            lens[i] = tagged(worker, seq + i as u32, &mut bufs[i]);
        }
        jobs.clear();
        engine.lock().unwrap().plan_encapsulate(&bufs[..n], &lens[..n], now, &mut jobs);
        out.clear();
        seal_jobs(&mut bufs[..n], &lens[..n], &jobs, &mut out);
        assert_eq!(out.len(), n, "every packet sealed");
        wire.extend(out.iter().map(|o| bufs[o.slot][..o.len].to_vec()));
        seq += n as u32;
    }
    wire
}

/// Receives `wire` through a shared engine: plan under the lock, open outside it, commit under
/// the lock. Returns the tags of the packets delivered.
fn receive_worker(engine: &Mutex<Engine>, mut wire: Vec<Vec<u8>>, src: SocketAddr, now: Instant) -> Vec<(u8, u32)> {
    let mut delivered = Vec::new();
    let (mut datagrams, mut jobs, mut inc): (Vec<Datagram>, Vec<OpenJob>, Vec<Incoming>) =
        (Vec::new(), Vec::new(), Vec::new());
    for chunk in wire.chunks_mut(BATCH) {
        datagrams.clear();
        datagrams.extend(chunk.iter().enumerate().map(|(slot, d)| Datagram { slot, range: 0..d.len(), src }));
        jobs.clear();
        assert_eq!(
            engine.lock().unwrap().plan_decapsulate(chunk, &datagrams, now, &mut jobs),
            datagrams.len(),
            "all data: planned in one call"
        );
        open_jobs(chunk, &mut jobs);
        inc.clear();
        engine.lock().unwrap().commit_decapsulate(chunk, &jobs, now, &mut inc);
        delivered.extend(inc.iter().map(|i| untag(&chunk[i.slot][i.range.clone()])));
    }
    delivered
}

#[test]
fn phase_types_cross_threads() {
    fn send<T: Send>() {}
    send::<SealJob>();
    send::<OpenJob>();
    send::<PodSealJob>();
}

#[test]
fn two_senders_sharing_an_engine_never_reuse_a_counter_and_every_packet_arrives_once() {
    const PER_WORKER: u32 = 3000;
    let now = Instant::now();
    let (a, mut b, _) = connected(now);
    let a = Arc::new(Mutex::new(a));
    let workers: Vec<_> = (0..2u8)
        .map(|w| {
            let a = Arc::clone(&a);
            std::thread::spawn(move || send_worker(&a, w, PER_WORKER, now))
        })
        .collect();
    let mut wire: Vec<Vec<u8>> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert_eq!(wire.len(), 2 * PER_WORKER as usize);
    let counters: HashSet<u64> = wire.iter().map(|d| counter_of(d)).collect();
    assert_eq!(counters.len(), wire.len(), "every counter on the wire is unique");
    assert_eq!(a.lock().unwrap().stats().packets_out, 2 * u64::from(PER_WORKER));

    let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
    let srcs = vec![addr(A); wire.len()];
    let mut inc = Vec::new();
    b.decapsulate_batch(&mut wire, &lens, &srcs, now, &mut inc);
    let mut seen = HashMap::new();
    for i in &inc {
        *seen.entry(untag(&wire[i.slot][i.range.clone()])).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2 * PER_WORKER as usize, "every packet delivered");
    assert!(seen.values().all(|&n| n == 1), "none twice");
    assert_eq!(b.device().drop_count(DropReason::Replay), 0);
}

#[test]
fn two_receivers_given_the_same_datagrams_deliver_each_once() {
    const COUNT: u32 = 2000;
    let now = Instant::now();
    let (a, b, _) = connected(now);
    let wire = send_worker(&Mutex::new(a), 0, COUNT, now);
    let b = Arc::new(Mutex::new(b));
    let replays_before = b.lock().unwrap().device().drop_count(DropReason::Replay);
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (b, wire) = (Arc::clone(&b), wire.clone());
            std::thread::spawn(move || receive_worker(&b, wire, addr(A), now))
        })
        .collect();
    let delivered: Vec<(u8, u32)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    let unique: HashSet<(u8, u32)> = delivered.iter().copied().collect();
    assert_eq!(delivered.len(), COUNT as usize, "each datagram delivered by exactly one worker");
    assert_eq!(unique.len(), COUNT as usize);
    let b = b.lock().unwrap();
    assert_eq!(b.device().drop_count(DropReason::Replay) - replays_before, u64::from(COUNT), "the copies: replays");
    assert_eq!(b.device().drop_count(DropReason::Decrypt), 0);
    assert_eq!(b.stats().packets_in, u64::from(COUNT));
}

#[test]
fn a_forgery_with_a_fresh_counter_does_not_move_the_window() {
    let now = Instant::now();
    let (a, mut b, _) = connected(now);
    let genuine = send_worker(&Mutex::new(a), 0, 1, now).remove(0);
    let mut forged = genuine.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x80; // the tag
    let mut datagrams = vec![Datagram { slot: 0, range: 0..forged.len(), src: addr(A) }];
    let (mut jobs, mut inc) = (Vec::new(), Vec::new());

    // The forgery alone, all three phases: counted as a failed decryption, nothing delivered.
    let mut bufs = vec![forged.clone()];
    assert_eq!(
        b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs),
        datagrams.len(),
        "all data: planned in one call"
    );
    assert_eq!(jobs.len(), 1, "a fresh counter passes the pre-check");
    open_jobs(&mut bufs, &mut jobs);
    b.commit_decapsulate(&mut bufs, &jobs, now, &mut inc);
    assert!(inc.is_empty());
    assert_eq!(b.device().drop_count(DropReason::Decrypt), 1);

    // The forgery and the genuine datagram planned together: both pass the pre-check, only the
    // genuine one commits.
    let mut bufs = vec![forged, genuine.clone()];
    datagrams.push(Datagram { slot: 1, range: 0..genuine.len(), src: addr(A) });
    jobs.clear();
    assert_eq!(
        b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs),
        datagrams.len(),
        "all data: planned in one call"
    );
    assert_eq!(jobs.len(), 2);
    open_jobs(&mut bufs, &mut jobs);
    b.commit_decapsulate(&mut bufs, &jobs, now, &mut inc);
    assert_eq!(inc.len(), 1, "the genuine datagram is accepted after the forgery");
    assert_eq!((inc[0].slot, untag(&bufs[1][inc[0].range.clone()])), (1, (0, 0)));
    assert_eq!(b.device().drop_count(DropReason::Decrypt), 2);
    assert_eq!(b.device().drop_count(DropReason::Replay), 0);

    // And now it is a replay.
    let mut bufs = vec![genuine];
    jobs.clear();
    assert_eq!(b.plan_decapsulate(&mut bufs, &datagrams[..1], now, &mut jobs), 1, "all data: planned in one call");
    assert!(jobs.is_empty());
    assert_eq!(b.device().drop_count(DropReason::Replay), 1);
}

/// B plans a datagram on the first session, then a rekey handshake (or two) happens before the
/// commit.
fn rotate_between_plan_and_commit(rekeys: u32) -> (Engine, Vec<Incoming>, Vec<Vec<u8>>) {
    let now = Instant::now();
    let (mut a, mut b, b_at_a) = connected(now);
    let a_shared = Mutex::new(a);
    let mut bufs = send_worker(&a_shared, 0, 1, now);
    a = a_shared.into_inner().unwrap();
    let datagrams = [Datagram { slot: 0, range: 0..bufs[0].len(), src: addr(A) }];
    let mut jobs = Vec::new();
    assert_eq!(
        b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs),
        datagrams.len(),
        "all data: planned in one call"
    );
    assert_eq!(jobs.len(), 1);
    open_jobs(&mut bufs, &mut jobs);

    let mut later = now;
    for round in 0..rekeys {
        // Past REKEY_TIMEOUT, so the initiation is not rate-limited away.
        later += Duration::from_secs(6);
        a.device_mut().initiate_handshake(b_at_a, later);
        exchange(&mut a, &mut b, later);
        if round == 0 {
            // Data on the new session: B switches to it, the old one becomes its previous.
            let a_shared = Mutex::new(a);
            let mut fresh = send_worker(&a_shared, 1, 1, later);
            a = a_shared.into_inner().unwrap();
            let mut inc = Vec::new();
            let lens = [fresh[0].len()];
            b.decapsulate_batch(&mut fresh, &lens, &[addr(A)], later, &mut inc);
            assert_eq!(inc.len(), 1, "the new session carries data");
        }
    }
    let mut inc = Vec::new();
    b.commit_decapsulate(&mut bufs, &jobs, later, &mut inc);
    (b, inc, bufs)
}

#[test]
fn a_keypair_kept_as_previous_between_plan_and_commit_still_delivers_once() {
    let (b, inc, bufs) = rotate_between_plan_and_commit(1);
    assert_eq!(inc.len(), 1);
    assert_eq!(untag(&bufs[0][inc[0].range.clone()]), (0, 0));
    assert_eq!(b.device().drop_count(DropReason::UnknownIndex), 0);
}

#[test]
fn a_keypair_dropped_between_plan_and_commit_drops_the_packet_and_counts_it() {
    let (b, inc, _) = rotate_between_plan_and_commit(2);
    assert!(inc.is_empty());
    assert_eq!(b.device().drop_count(DropReason::UnknownIndex), 1);
}

#[test]
fn a_peer_removed_and_its_slot_reused_between_plan_and_commit_drops_the_packet() {
    let now = Instant::now();
    let (a, mut b, _) = connected(now);
    let a_public = a.device().public_key();
    let mut bufs = send_worker(&Mutex::new(a), 0, 1, now);
    let datagrams = [Datagram { slot: 0, range: 0..bufs[0].len(), src: addr(A) }];
    let mut jobs = Vec::new();
    assert_eq!(
        b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs),
        datagrams.len(),
        "all data: planned in one call"
    );
    assert_eq!(jobs.len(), 1);
    open_jobs(&mut bufs, &mut jobs);
    // The peer goes, and another one takes its slot (same PeerId) with the same AllowedIPs.
    let old = b.device().peer_by_key(&a_public).unwrap();
    assert!(b.remove_peer(old));
    let other = b.add_peer(PeerConfig::new(vxwg_dataplane::wireguard::public_key(&[9; 32])), &[net("10.0.0.1/32")]);
    assert_eq!(other.unwrap(), old, "the slot is reused");
    let mut inc = Vec::new();
    b.commit_decapsulate(&mut bufs, &jobs, now, &mut inc);
    assert!(inc.is_empty(), "nothing is delivered in the new peer's name");
    assert_eq!(b.device().drop_count(DropReason::UnknownIndex), 1);
    assert_eq!(b.stats().packets_in, 0);
}

#[test]
fn a_job_committed_without_being_opened_is_a_failed_decryption() {
    let now = Instant::now();
    let (a, mut b, _) = connected(now);
    let mut bufs = send_worker(&Mutex::new(a), 0, 1, now);
    let datagrams = [Datagram { slot: 0, range: 0..bufs[0].len(), src: addr(A) }];
    let (mut jobs, mut inc) = (Vec::new(), Vec::new());
    assert_eq!(
        b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs),
        datagrams.len(),
        "all data: planned in one call"
    );
    b.commit_decapsulate(&mut bufs, &jobs, now, &mut inc);
    assert!(inc.is_empty());
    assert_eq!(b.device().drop_count(DropReason::Decrypt), 1);
    // The window did not move: the same datagram, opened this time, is accepted.
    jobs.clear();
    assert_eq!(
        b.plan_decapsulate(&mut bufs, &datagrams, now, &mut jobs),
        datagrams.len(),
        "all data: planned in one call"
    );
    open_jobs(&mut bufs, &mut jobs);
    b.commit_decapsulate(&mut bufs, &jobs, now, &mut inc);
    assert_eq!(inc.len(), 1);
}

/// `n` pod packets 10.42.1.5 → 10.42.2.7 (UDP, DF), of 100, 400, 700... bytes, each at
/// `POD_HEADROOM` in its own buffer: the buffers, the lengths and the packets.
fn pod_packets(n: usize) -> (Vec<Vec<u8>>, Vec<usize>, Vec<Vec<u8>>) {
    let mut bufs = vec![vec![0u8; POD_HEADROOM + 1370 + POD_TAILROOM]; n];
    let mut lens = vec![0usize; n];
    let mut originals = Vec::new();
    for (i, (buf, len)) in bufs.iter_mut().zip(lens.iter_mut()).enumerate() {
        *len = 100 + 300 * (i % 4);
        let p = &mut buf[POD_HEADROOM..POD_HEADROOM + *len];
        p.iter_mut().enumerate().for_each(|(j, b)| *b = (j * 13 + i) as u8);
        p[..20].fill(0);
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(*len as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 42, 1, 5]);
        p[16..20].copy_from_slice(&[10, 42, 2, 7]);
        originals.push(p.to_vec());
    }
    (bufs, lens, originals)
}

#[test]
fn pod_phases_round_trip_a_pod_packet() {
    let now = Instant::now();
    let (a, mut b) = pod_pair(now);

    let (mut bufs, lens, originals) = pod_packets(2);
    // Planned under a lock, sealed on another thread.
    let a = Mutex::new(a);
    let (mut jobs, mut icmp) = (Vec::new(), Vec::new());
    a.lock().unwrap().plan_encapsulate_pod(&mut bufs, &lens, now, &mut jobs, &mut icmp);
    // Both packets go to one peer: one run, one block of two counters.
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].slots(), 0..2);
    assert!(icmp.is_empty());
    let (bufs, out) = std::thread::spawn(move || {
        let mut out = Vec::new();
        seal_pod_jobs(&mut bufs, &jobs, &mut out);
        (bufs, out)
    })
    .join()
    .unwrap();
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.dst == addr(B)));
    assert_eq!(a.lock().unwrap().stats().packets_out, 2);

    let mut wire: Vec<Vec<u8>> = out.iter().map(|o| bufs[o.slot][o.range.clone()].to_vec()).collect();
    let datagrams: Vec<Datagram> =
        wire.iter().enumerate().map(|(slot, d)| Datagram { slot, range: 0..d.len(), src: addr(A) }).collect();
    let (mut open, mut inc) = (Vec::new(), Vec::new());
    assert_eq!(
        b.plan_decapsulate_pod(&mut wire, &datagrams, now, &mut open),
        datagrams.len(),
        "all data: planned in one call"
    );
    assert_eq!(open.len(), 2);
    open_jobs(&mut wire, &mut open);
    b.commit_decapsulate_pod(&mut wire, &open, now, &mut inc);
    assert_eq!(inc.len(), 2);
    for (i, got) in inc.iter().enumerate() {
        assert_eq!(got.delivery, Delivery::Pod);
        assert_eq!(wire[got.slot][got.range.clone()], originals[i][..], "pod packet {i} intact");
    }
    assert_eq!(b.stats().packets_in, 2);
}

/// The responder's first two packets on a fresh session (its `next`) are planned by two workers
/// before either commits: the first commit promotes the session, the second finds it current
/// and promotes nothing, so the old session stays as `previous` and both packets arrive.
#[test]
fn two_workers_committing_first_packets_on_next_promote_it_once() {
    let now = Instant::now();
    let (mut a, mut b, b_at_a) = connected(now);
    let a_at_b = b.device().peer_by_key(&a.device().public_key()).unwrap();
    // A datagram on the old session, held back until after the rotation.
    let a_shared = Mutex::new(a);
    let mut old = send_worker(&a_shared, 9, 1, now);
    a = a_shared.into_inner().unwrap();

    // Rekey, A initiating; B answers, but A's confirmation is not delivered: B's new session
    // stays its `next` until the data below.
    let later = now + Duration::from_secs(6);
    a.device_mut().initiate_handshake(b_at_a, later);
    let mut initiation = a.poll_transmit().expect("initiation");
    b.decapsulate(addr(A), &mut initiation.payload, later).unwrap();
    let mut response = b.poll_transmit().expect("response");
    a.decapsulate(addr(B), &mut response.payload, later).unwrap();
    while a.poll_transmit().is_some() {}
    let a_shared = Mutex::new(a);
    let mut fresh = send_worker(&a_shared, 1, 2, later);
    a = a_shared.into_inner().unwrap();

    // Two workers, one datagram each: both plan and open before either commits.
    let b = Mutex::new(b);
    let mut workers: Vec<(Vec<Vec<u8>>, Vec<OpenJob>)> = fresh
        .drain(..)
        .map(|d| {
            let datagrams = [Datagram { slot: 0, range: 0..d.len(), src: addr(A) }];
            let mut bufs = vec![d];
            let mut jobs = Vec::new();
            assert_eq!(
                b.lock().unwrap().plan_decapsulate(&mut bufs, &datagrams, later, &mut jobs),
                datagrams.len(),
                "all data: planned in one call"
            );
            assert_eq!(jobs.len(), 1, "the datagram passes the pre-check on `next`");
            open_jobs(&mut bufs, &mut jobs);
            (bufs, jobs)
        })
        .collect();
    let mut delivered = Vec::new();
    for (bufs, jobs) in &mut workers {
        let mut inc = Vec::new();
        b.lock().unwrap().commit_decapsulate(bufs, jobs, later, &mut inc);
        delivered.extend(inc.iter().map(|i| untag(&bufs[i.slot][i.range.clone()])));
    }
    assert_eq!(delivered, [(1, 0), (1, 1)]);

    // The old session is B's previous: the held-back datagram still arrives.
    let mut b = b.into_inner().unwrap();
    let lens = [old[0].len()];
    let mut inc = Vec::new();
    b.decapsulate_batch(&mut old, &lens, &[addr(A)], later, &mut inc);
    assert_eq!(inc.len(), 1, "the old session was kept as previous");
    // And B sends on the new session (its counter 0), which A opens and delivers.
    let mut buf = vec![0u8; HEADROOM + 40 + TAILROOM];
    let packet = &mut buf[HEADROOM..HEADROOM + 40];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&40u16.to_be_bytes());
    packet[12..16].copy_from_slice(&[10, 0, 0, 2]);
    packet[16..20].copy_from_slice(&[10, 0, 0, 1]);
    let Ok(Encapsulated::Ready { len, .. }) = b.device_mut().encapsulate(a_at_b, &mut buf, 40, later) else {
        panic!("B has a session to send on");
    };
    assert_eq!(counter_of(&buf), 0, "B's first packet on the new session");
    assert!(matches!(a.decapsulate(addr(B), &mut buf[..len], later), Ok(Received::Packet { .. })));
}

/// One worker seals a batch and is held up before sending it; another sends more than
/// `RESEAL_BEHIND` packets to the same peer meanwhile. Checked just before the send, the held
/// batch moves onto counters at the head, so a receiver with a small replay window (boringtun:
/// 1,024) still takes it; the receiver here opens every packet once, intact.
#[test]
fn a_batch_left_behind_by_another_worker_is_resealed_on_fresh_counters_before_it_goes_out() {
    let now = Instant::now();
    let (a, mut b, _) = connected(now);
    let a = Mutex::new(a);
    let mut bufs = vec![vec![0u8; HEADROOM + 700 + TAILROOM]; BATCH];
    let lens: Vec<usize> = (0..BATCH).map(|i| tagged(1, i as u32, &mut bufs[i])).collect();
    let (mut jobs, mut out) = (Vec::new(), Vec::new());
    a.lock().unwrap().plan_encapsulate(&bufs, &lens, now, &mut jobs);
    seal_jobs(&mut bufs, &lens, &jobs, &mut out);
    let before: Vec<Vec<u8>> = out.iter().map(|o| bufs[o.slot][..o.len].to_vec()).collect();
    assert_eq!(reseal_stale(&mut bufs, &mut jobs, &out), 0, "nobody sent meanwhile: nothing to do");
    let unchanged: Vec<Vec<u8>> = out.iter().map(|o| bufs[o.slot][..o.len].to_vec()).collect();
    assert_eq!(unchanged, before, "a batch that is not behind is sent as sealed");

    let others = send_worker(&a, 2, RESEAL_BEHIND as u32 + 1, now);
    assert_eq!(reseal_stale(&mut bufs, &mut jobs, &out), BATCH);
    let held: Vec<Vec<u8>> = out.iter().map(|o| bufs[o.slot][..o.len].to_vec()).collect();
    let newest_other = others.iter().map(|d| counter_of(d)).max().unwrap();
    assert!(held.iter().all(|d| counter_of(d) > newest_other), "the held batch is now at the head");
    assert!(held.iter().zip(&before).all(|(h, b)| h.len() == b.len()), "same lengths: the send plan holds");
    assert_eq!(reseal_stale(&mut bufs, &mut jobs, &out), 0, "resealed once, then current");

    let mut wire: Vec<Vec<u8>> = others.into_iter().chain(held).collect();
    let counters: HashSet<u64> = wire.iter().map(|d| counter_of(d)).collect();
    assert_eq!(counters.len(), wire.len(), "no counter used twice");
    let lens: Vec<usize> = wire.iter().map(Vec::len).collect();
    let srcs = vec![addr(A); wire.len()];
    let mut inc = Vec::new();
    b.decapsulate_batch(&mut wire, &lens, &srcs, now, &mut inc);
    let delivered: HashSet<(u8, u32)> = inc.iter().map(|i| untag(&wire[i.slot][i.range.clone()])).collect();
    assert_eq!(inc.len(), wire.len());
    assert!((0..BATCH as u32).all(|seq| delivered.contains(&(1, seq))), "every held packet arrived");
}

/// The same on the pod path: a held run of VXLAN-in-WireGuard datagrams is resealed in place
/// (behind its outer headers) and the remote node delivers the pod packets intact.
#[test]
fn a_pod_run_left_behind_is_resealed_and_still_delivers_the_pod_packets() {
    let now = Instant::now();
    let (a, mut b) = pod_pair(now);
    let a = Mutex::new(a);
    let send = |a: &Mutex<PodEngine>, n: usize| {
        let (mut bufs, lens, originals) = pod_packets(n);
        let (mut jobs, mut icmp, mut out) = (Vec::new(), Vec::new(), Vec::new());
        a.lock().unwrap().plan_encapsulate_pod(&mut bufs, &lens, now, &mut jobs, &mut icmp);
        seal_pod_jobs(&mut bufs, &jobs, &mut out);
        assert_eq!(out.len(), n);
        (bufs, jobs, out, originals)
    };
    let (mut held, mut held_jobs, held_out, originals) = send(&a, 4);
    let sealed: Vec<Vec<u8>> = held_out.iter().map(|o| held[o.slot][o.range.clone()].to_vec()).collect();
    let mut others = 0;
    while others <= RESEAL_BEHIND as usize {
        others += send(&a, 32).2.len();
    }
    assert_eq!(reseal_stale_pod(&mut held, &mut held_jobs, &held_out), 4);
    let mut wire: Vec<Vec<u8>> = held_out.iter().map(|o| held[o.slot][o.range.clone()].to_vec()).collect();
    for (new, old) in wire.iter().zip(&sealed) {
        assert!(counter_of(new) > counter_of(old) + RESEAL_BEHIND, "moved to the head");
    }
    let datagrams: Vec<Datagram> =
        wire.iter().enumerate().map(|(slot, d)| Datagram { slot, range: 0..d.len(), src: addr(A) }).collect();
    let (mut open, mut inc) = (Vec::new(), Vec::new());
    assert_eq!(b.plan_decapsulate_pod(&mut wire, &datagrams, now, &mut open), 4);
    open_jobs(&mut wire, &mut open);
    b.commit_decapsulate_pod(&mut wire, &open, now, &mut inc);
    assert_eq!(inc.len(), 4);
    for (i, got) in inc.iter().enumerate() {
        assert_eq!(got.delivery, Delivery::Pod);
        assert_eq!(wire[got.slot][got.range.clone()], originals[i][..], "pod packet {i} intact");
    }
}
