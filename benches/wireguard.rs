//! `cargo bench --bench wireguard`: per-packet cost of WireGuard transport encryption.
//!
//! In one run, for payloads of 64, 512 and 1420 bytes:
//! * `aead/*`: the bare ChaCha20-Poly1305 seal of the same bytes — the floor — for aws-lc-rs
//!   (vxwg's backend), ring (boringtun's) and RustCrypto's portable build;
//! * `encapsulate/*` and `decapsulate/*`: vxwg's `Device` against boringtun's `noise::Tunn`,
//!   each with an established session to a peer of its own kind.
//! * `encapsulate_batch/*`: vxwg encrypting 32 and 64 packets per call sequence (the engine's unit).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use rand_core::OsRng;
use vxwg::dataplane::wireguard::aead::{Aead, AwsLcChaCha, RustCryptoChaCha};
use vxwg::dataplane::wireguard::{
    Device, DeviceConfig, Encapsulated, PeerConfig, PeerId, Received, HEADROOM, TAILROOM,
};

const SIZES: [usize; 3] = [64, 512, 1420];
const A_ADDR: &str = "127.0.0.1:1";
const B_ADDR: &str = "127.0.0.1:2";

/// An IPv4 packet of `len` bytes (boringtun checks the header on receive).
fn ipv4_packet(len: usize) -> Vec<u8> {
    let mut p = vec![0xa5u8; len];
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p
}

struct VxPair {
    a: Device,
    a_peer: PeerId,
    b: Device,
    now: Instant,
}

fn vx_pair() -> VxPair {
    let now = Instant::now();
    let (ka, kb) = ([1u8; 32], [2u8; 32]);
    let mut a = Device::new(DeviceConfig::new(ka), OsRng, now, SystemTime::now());
    let mut b = Device::new(DeviceConfig::new(kb), OsRng, now, SystemTime::now());
    let a_peer =
        a.add_peer(PeerConfig { endpoint: Some(B_ADDR.parse().unwrap()), ..PeerConfig::new(b.public_key()) }).unwrap();
    b.add_peer(PeerConfig::new(a.public_key())).unwrap();
    a.initiate_handshake(a_peer, now);
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = (A_ADDR.parse().unwrap(), B_ADDR.parse().unwrap());
    // Run the handshake to completion, both ways, including A's confirming keepalive.
    for _ in 0..4 {
        while let Some(mut t) = a.poll_transmit() {
            let _ = b.decapsulate(a_addr, &mut t.payload, now);
        }
        while let Some(mut t) = b.poll_transmit() {
            let _ = a.decapsulate(b_addr, &mut t.payload, now);
        }
    }
    assert!(a.has_session(a_peer, now));
    VxPair { a, a_peer, b, now }
}

fn bt_pair() -> (Tunn, Tunn) {
    let (ka, kb) = (x25519::StaticSecret::from([1u8; 32]), x25519::StaticSecret::from([2u8; 32]));
    let (pa, pb) = (x25519::PublicKey::from(&ka), x25519::PublicKey::from(&kb));
    let mut a = Tunn::new(ka, pb, None, None, 1, None);
    let mut b = Tunn::new(kb, pa, None, None, 2, None);
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = a.format_handshake_initiation(&mut buf, false) else { panic!() };
    let TunnResult::WriteToNetwork(resp) = b.decapsulate(None, init, &mut out) else { panic!() };
    let resp = resp.to_vec();
    let TunnResult::WriteToNetwork(keepalive) = a.decapsulate(None, &resp, &mut buf) else { panic!() };
    let keepalive = keepalive.to_vec();
    let _ = b.decapsulate(None, &keepalive, &mut out);
    (a, b)
}

fn aead_floor(c: &mut Criterion) {
    let mut g = c.benchmark_group("aead");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5au8; size];
        let aws = AwsLcChaCha::new(&[7; 32]);
        let mut counter = 0u64;
        g.bench_with_input(BenchmarkId::new("aws-lc-rs", size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                black_box(aws.seal_in_place(counter, &[], &mut buf))
            })
        });
        let rc = RustCryptoChaCha::new(&[7; 32]);
        g.bench_with_input(BenchmarkId::new("rustcrypto", size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                black_box(rc.seal_in_place(counter, &[], &mut buf))
            })
        });
        let ring_key = ring::aead::LessSafeKey::new(
            ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &[7; 32]).unwrap(),
        );
        g.bench_with_input(BenchmarkId::new("ring", size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                let mut nonce = [0u8; 12];
                nonce[4..].copy_from_slice(&counter.to_le_bytes());
                black_box(
                    ring_key
                        .seal_in_place_separate_tag(
                            ring::aead::Nonce::assume_unique_for_key(nonce),
                            ring::aead::Aad::empty(),
                            &mut buf,
                        )
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

fn encapsulate(c: &mut Criterion) {
    let mut g = c.benchmark_group("encapsulate");
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let packet = ipv4_packet(size);

        let mut pair = vx_pair();
        let mut buf = vec![0u8; HEADROOM + size + TAILROOM];
        g.bench_with_input(BenchmarkId::new("vxwg", size), &size, |b, _| {
            b.iter(|| {
                buf[HEADROOM..HEADROOM + size].copy_from_slice(&packet);
                match pair.a.encapsulate(pair.a_peer, &mut buf, size, pair.now) {
                    Ok(Encapsulated::Ready { len, .. }) => black_box(len),
                    other => panic!("{other:?}"),
                }
            })
        });

        let (mut bt, _) = bt_pair();
        let mut out = vec![0u8; size + 64];
        g.bench_with_input(BenchmarkId::new("boringtun", size), &size, |b, _| {
            b.iter(|| match bt.encapsulate(&packet, &mut out) {
                TunnResult::WriteToNetwork(d) => black_box(d.len()),
                _ => panic!(),
            })
        });
    }
    g.finish();
}

fn decapsulate(c: &mut Criterion) {
    let mut g = c.benchmark_group("decapsulate");
    let a_addr: SocketAddr = A_ADDR.parse().unwrap();
    for size in SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        let packet = ipv4_packet(size);

        let mut pair = vx_pair();
        g.bench_with_input(BenchmarkId::new("vxwg", size), &size, |b, _| {
            b.iter_batched_ref(
                || {
                    let mut buf = vec![0u8; HEADROOM + size + TAILROOM];
                    buf[HEADROOM..HEADROOM + size].copy_from_slice(&packet);
                    let Ok(Encapsulated::Ready { len, .. }) = pair.a.encapsulate(pair.a_peer, &mut buf, size, pair.now)
                    else {
                        panic!()
                    };
                    buf.truncate(len);
                    buf
                },
                |datagram| match pair.b.decapsulate(a_addr, datagram, pair.now) {
                    Ok(Received::Packet { packet, .. }) => black_box(packet.len()),
                    other => panic!("{other:?}"),
                },
                BatchSize::SmallInput,
            )
        });

        let (mut bta, mut btb) = bt_pair();
        let mut out = vec![0u8; size + 64];
        g.bench_with_input(BenchmarkId::new("boringtun", size), &size, |b, _| {
            b.iter_batched_ref(
                || {
                    let mut enc = vec![0u8; size + 64];
                    let TunnResult::WriteToNetwork(d) = bta.encapsulate(&packet, &mut enc) else { panic!() };
                    d.to_vec()
                },
                |datagram| match btb.decapsulate(None, datagram, &mut out) {
                    TunnResult::WriteToTunnelV4(p, _) => black_box(p.len()),
                    _ => panic!(),
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn encapsulate_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("encapsulate_batch");
    let size = 1420;
    let packet = ipv4_packet(size);
    for batch in [32usize, 64] {
        g.throughput(Throughput::Bytes((size * batch) as u64));
        let mut pair = vx_pair();
        let stride = HEADROOM + size + TAILROOM;
        let mut arena = vec![0u8; stride * batch];
        g.bench_with_input(BenchmarkId::new("vxwg", batch), &batch, |b, _| {
            b.iter(|| {
                for buf in arena.chunks_exact_mut(stride) {
                    buf[HEADROOM..HEADROOM + size].copy_from_slice(&packet);
                    let r = pair.a.encapsulate(pair.a_peer, buf, size, pair.now);
                    debug_assert!(matches!(r, Ok(Encapsulated::Ready { .. })));
                    black_box(&r);
                }
            })
        });
    }
    g.finish();
}

criterion_group!(benches, aead_floor, encapsulate, decapsulate, encapsulate_batch);
criterion_main!(benches);
