//! The steady-state data path allocates nothing: a counting global allocator watches the engine
//! encrypt and decrypt batches both ways after the handshake and warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use rand_core::OsRng;
use vxwg_dataplane::engine::{Engine, Incoming, Outgoing, HEADROOM, TAILROOM};
use vxwg_dataplane::route::IpNet;
use vxwg_dataplane::wireguard::{Device, DeviceConfig, PeerConfig};

mod common;
use common::engines::{addr, pod_pair, A};

struct Counting;

// Per thread, so tests running in parallel never count each other's allocations. Const-initialised
// thread-locals without destructors do not allocate when first touched inside the allocator.
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
    }
}

/// Allocations made by this thread while `f` runs.
fn allocations_during(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: defers every call to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCH: usize = 64;

fn packet(src: [u8; 4], dst: [u8; 4], len: usize, buf: &mut [u8]) {
    let p = &mut buf[HEADROOM..HEADROOM + len];
    p.fill(0x5a);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
}

#[test]
fn steady_state_batches_allocate_nothing() {
    let now = Instant::now();
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = ("127.0.0.1:1".parse().unwrap(), "127.0.0.1:2".parse().unwrap());
    let mut a = Engine::new(Device::new(DeviceConfig::new([1; 32]), OsRng, now, SystemTime::now()));
    let mut b = Engine::new(Device::new(DeviceConfig::new([2; 32]), OsRng, now, SystemTime::now()));
    let (pa, pb) = (a.device().public_key(), b.device().public_key());
    let net = |s: &str| s.parse::<IpNet>().unwrap();
    let b_id = a.add_peer(PeerConfig { endpoint: Some(b_addr), ..PeerConfig::new(pb) }, &[net("10.0.0.2/32")]).unwrap();
    b.add_peer(PeerConfig { endpoint: Some(a_addr), ..PeerConfig::new(pa) }, &[net("10.0.0.1/32")]).unwrap();
    a.device_mut().initiate_handshake(b_id, now);
    for _ in 0..3 {
        while let Some(mut t) = a.poll_transmit() {
            let _ = b.decapsulate(a_addr, &mut t.payload, now);
        }
        while let Some(mut t) = b.poll_transmit() {
            let _ = a.decapsulate(b_addr, &mut t.payload, now);
        }
    }
    assert!(a.device().has_session(b_id, now));

    // Buffers and output lists sized once, as the daemon does.
    let mut bufs = vec![vec![0u8; HEADROOM + 1500 + TAILROOM]; BATCH];
    let mut lens = vec![0usize; BATCH];
    let mut wire_lens = vec![0usize; BATCH];
    let srcs_a = vec![a_addr; BATCH];
    let srcs_b = vec![b_addr; BATCH];
    let mut out: Vec<Outgoing> = Vec::with_capacity(BATCH);
    let mut inc: Vec<Incoming> = Vec::with_capacity(BATCH);
    let mut delivered = 0usize;

    let mut round = |from: &mut Engine, to: &mut Engine, src: [u8; 4], dst: [u8; 4], srcs: &[SocketAddr]| {
        for (i, (buf, len)) in bufs.iter_mut().zip(lens.iter_mut()).enumerate() {
            *len = 60 + (i * 23) % 1400;
            packet(src, dst, *len, buf);
        }
        out.clear();
        from.encapsulate_batch(&mut bufs, &lens, now, &mut out);
        assert_eq!(out.len(), BATCH);
        for o in &out {
            wire_lens[o.slot] = o.len;
        }
        inc.clear();
        to.decapsulate_batch(&mut bufs, &wire_lens, srcs, now, &mut inc);
        assert_eq!(inc.len(), BATCH);
        delivered += inc.len();
    };

    // Warm-up: first-use growth of internal scratch space is allowed.
    for _ in 0..4 {
        round(&mut a, &mut b, [10, 0, 0, 1], [10, 0, 0, 2], &srcs_a);
        round(&mut b, &mut a, [10, 0, 0, 2], [10, 0, 0, 1], &srcs_b);
    }
    let allocations = allocations_during(|| {
        for _ in 0..200 {
            round(&mut a, &mut b, [10, 0, 0, 1], [10, 0, 0, 2], &srcs_a);
            round(&mut b, &mut a, [10, 0, 0, 2], [10, 0, 0, 1], &srcs_b);
        }
    });
    assert_eq!(delivered, 204 * 2 * BATCH);
    assert_eq!(allocations, 0, "allocations on the steady-state data path");
}

/// The pod path (VXLAN in front of the packet, then WireGuard, in one buffer) is just as frugal.
#[test]
fn steady_state_pod_batches_allocate_nothing() {
    use vxwg_dataplane::engine::pod::{POD_HEADROOM, POD_TAILROOM};

    let now = Instant::now();
    let a_addr = addr(A);
    let (mut a, mut b) = pod_pair(now);

    let mut bufs = vec![vec![0u8; POD_HEADROOM + 1370 + POD_TAILROOM]; BATCH];
    let mut lens = vec![0usize; BATCH];
    let (mut out, mut icmp, mut inc) =
        (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    // The receiver's own buffers: copying into them stands for the wire.
    let mut wire = vec![vec![0u8; 1500]; BATCH];
    let mut wire_lens = vec![0usize; BATCH];
    let srcs = vec![a_addr; BATCH];
    let mut delivered = 0usize;
    let mut round = || {
        for (i, (buf, len)) in bufs.iter_mut().zip(lens.iter_mut()).enumerate() {
            *len = 60 + (i * 23) % 1300;
            let p = &mut buf[POD_HEADROOM - HEADROOM..];
            packet([10, 42, 1, 5], [10, 42, 2, 7], *len, p);
            p[HEADROOM + 6] = 0x40; // DF, as pods send
            p[HEADROOM + 9] = 17;
        }
        out.clear();
        icmp.clear();
        inc.clear();
        a.encapsulate_pod_batch(&mut bufs, &lens, now, &mut out, &mut icmp);
        assert_eq!(out.len(), BATCH);
        for o in &out {
            wire[o.slot][..o.range.len()].copy_from_slice(&bufs[o.slot][o.range.clone()]);
            wire_lens[o.slot] = o.range.len();
        }
        b.decapsulate_pod_batch(&mut wire, &wire_lens, &srcs, now, &mut inc);
        assert_eq!(inc.len(), BATCH);
        delivered += BATCH;
    };
    for _ in 0..4 {
        round();
    }
    let allocations = allocations_during(|| {
        for _ in 0..200 {
            round();
        }
    });
    assert_eq!(delivered, 204 * BATCH);
    assert_eq!(allocations, 0, "allocations on the steady-state pod path");
}

/// The phased path the daemon's workers take (plan under the lock, seal or open outside it,
/// commit) allocates nothing either, with job lists reused by the caller; for the pod path too.
#[test]
fn steady_state_phased_batches_allocate_nothing() {
    use vxwg_dataplane::engine::pod::{reseal_stale_pod, seal_pod_jobs, POD_HEADROOM, POD_TAILROOM};
    use vxwg_dataplane::engine::{open_jobs, reseal_stale, seal_jobs, Datagram};

    let now = Instant::now();
    let a_addr = addr(A);
    let (mut a, mut b) = pod_pair(now);

    // Everything sized once, as a worker does.
    let mut bufs = vec![vec![0u8; POD_HEADROOM + 1500 + POD_TAILROOM]; BATCH];
    let mut lens = vec![0usize; BATCH];
    let mut wire = vec![vec![0u8; 1600]; BATCH];
    let mut datagrams: Vec<Datagram> = Vec::with_capacity(BATCH);
    let (mut seal, mut pod_seal, mut open) =
        (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    let (mut out, mut pod_out, mut icmp) =
        (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    let (mut inc, mut pod_inc): (Vec<Incoming>, Vec<_>) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
    let mut delivered = 0usize;
    let mut round = || {
        // L3: plan, seal, then plan / open / commit on the other side.
        for (i, (buf, len)) in bufs.iter_mut().zip(lens.iter_mut()).enumerate() {
            *len = 60 + (i * 23) % 1400;
            packet([10, 0, 0, 1], [10, 0, 0, 2], *len, buf);
        }
        seal.clear();
        out.clear();
        a.engine_mut().plan_encapsulate(&bufs, &lens, now, &mut seal);
        seal_jobs(&mut bufs, &lens, &seal, &mut out);
        assert_eq!(out.len(), BATCH);
        // The workers' check just before sending: nobody else sends here, so nothing is stale.
        assert_eq!(reseal_stale(&mut bufs, &mut seal, &out), 0);
        datagrams.clear();
        for o in &out {
            wire[o.slot][..o.len].copy_from_slice(&bufs[o.slot][..o.len]);
            datagrams.push(Datagram { slot: o.slot, range: 0..o.len, src: a_addr });
        }
        open.clear();
        inc.clear();
        assert_eq!(
            b.engine_mut().plan_decapsulate(&mut wire, &datagrams, now, &mut open),
            datagrams.len(),
            "all data: planned in one call"
        );
        open_jobs(&mut wire, &mut open);
        b.engine_mut().commit_decapsulate(&mut wire, &open, now, &mut inc);
        assert_eq!(inc.len(), BATCH);
        delivered += inc.len();

        // Pod: the same, with VXLAN framing in the plan.
        for (i, (buf, len)) in bufs.iter_mut().zip(lens.iter_mut()).enumerate() {
            *len = 60 + (i * 23) % 1300;
            let p = &mut buf[POD_HEADROOM - HEADROOM..];
            packet([10, 42, 1, 5], [10, 42, 2, 7], *len, p);
            p[HEADROOM + 6] = 0x40; // DF, as pods send
            p[HEADROOM + 9] = 17;
        }
        pod_seal.clear();
        pod_out.clear();
        icmp.clear();
        a.plan_encapsulate_pod(&mut bufs, &lens, now, &mut pod_seal, &mut icmp);
        seal_pod_jobs(&mut bufs, &pod_seal, &mut pod_out);
        assert_eq!(pod_out.len(), BATCH);
        assert_eq!(reseal_stale_pod(&mut bufs, &mut pod_seal, &pod_out), 0);
        datagrams.clear();
        for o in &pod_out {
            wire[o.slot][..o.range.len()].copy_from_slice(&bufs[o.slot][o.range.clone()]);
            datagrams.push(Datagram { slot: o.slot, range: 0..o.range.len(), src: a_addr });
        }
        open.clear();
        pod_inc.clear();
        assert_eq!(
            b.plan_decapsulate_pod(&mut wire, &datagrams, now, &mut open),
            datagrams.len(),
            "all data: planned in one call"
        );
        open_jobs(&mut wire, &mut open);
        b.commit_decapsulate_pod(&mut wire, &open, now, &mut pod_inc);
        assert_eq!(pod_inc.len(), BATCH);
        delivered += pod_inc.len();
    };
    for _ in 0..4 {
        round();
    }
    let allocations = allocations_during(|| {
        for _ in 0..200 {
            round();
        }
    });
    assert_eq!(delivered, 204 * 2 * BATCH);
    assert_eq!(allocations, 0, "allocations on the steady-state phased path");
}

/// A TCP/IPv4 super-packet as a TSO TUN hands it over: 20 + 20 header bytes, then `payload`.
fn tso_packet(seq: u32, payload: usize, buf: &mut [u8]) -> usize {
    let p = &mut buf[HEADROOM..HEADROOM + 40 + payload];
    p.fill(0x6b);
    p[..40].fill(0);
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    40 + payload
}

#[test]
fn offload_split_and_coalesce_allocate_nothing_in_steady_state() {
    use std::ops::Range;
    use vxwg_dataplane::offload::{split, Coalescer, GsoType, VirtioNetHdr};

    const SEGMENT: usize = 1380;
    const SEGMENTS: usize = 40;
    let hdr = VirtioNetHdr {
        flags: 1,
        gso_type: GsoType::TcpV4,
        hdr_len: 40,
        gso_size: SEGMENT as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    // Slots and lists sized once, as the daemon's TunPort does.
    let mut slots = vec![vec![0u8; HEADROOM + 65_535 + TAILROOM]; 64];
    let mut lens = vec![0usize; 64];
    let mut packets: Vec<(usize, Range<usize>)> = Vec::with_capacity(64);
    let mut coalescer = Coalescer::new();
    let mut merged = 0usize;
    let mut round = |seq: u32| {
        let len = tso_packet(seq, SEGMENT * SEGMENTS, &mut slots[0]);
        let n = split(&hdr, &mut slots, HEADROOM, len, &mut lens).unwrap();
        assert_eq!(n, SEGMENTS);
        packets.clear();
        packets.extend((0..n).map(|i| (i, HEADROOM..HEADROOM + lens[i])));
        coalescer.coalesce(&mut slots, &packets);
        assert_eq!(coalescer.writes().len(), 1, "one flow in order: one write");
        merged += coalescer.followers().len() + 1;
    };
    for i in 0..4 {
        round(i * (SEGMENT * SEGMENTS) as u32);
    }
    let allocations = allocations_during(|| {
        for i in 4..204 {
            round(i * (SEGMENT * SEGMENTS) as u32);
        }
    });
    assert_eq!(merged, 204 * SEGMENTS);
    assert_eq!(allocations, 0, "allocations while cutting and merging super-packets");
}
