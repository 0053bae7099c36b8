//! The steady-state data path allocates nothing: a counting global allocator watches the engine
//! encrypt and decrypt batches both ways after the handshake and warm-up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use rand_core::OsRng;
use vxwg_dataplane::engine::{Engine, Incoming, Outgoing, HEADROOM, TAILROOM};
use vxwg_dataplane::route::IpNet;
use vxwg_dataplane::wireguard::{Device, DeviceConfig, PeerConfig};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: defers every call to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
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
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..200 {
        round(&mut a, &mut b, [10, 0, 0, 1], [10, 0, 0, 2], &srcs_a);
        round(&mut b, &mut a, [10, 0, 0, 2], [10, 0, 0, 1], &srcs_b);
    }
    COUNTING.store(false, Ordering::SeqCst);
    assert_eq!(delivered, 204 * 2 * BATCH);
    assert_eq!(ALLOCATIONS.load(Ordering::SeqCst), 0, "allocations on the steady-state data path");
}
