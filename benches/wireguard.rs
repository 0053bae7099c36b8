//! `cargo bench --bench wireguard`: per-packet cost of WireGuard transport encryption.
//!
//! In one run, for payloads of 64, 512 and 1420 bytes:
//! * `aead/*`: the bare ChaCha20-Poly1305 seal of the same bytes — the floor — for ring (vxwg's
//!   and boringtun's backend), RustCrypto's portable build, and aws-lc-rs with `--features aead-aws-lc`;
//! * `encapsulate/*` and `decapsulate/*`: vxwg's `Device` against boringtun's `noise::Tunn`,
//!   each with an established session to a peer of its own kind.
//! * `encapsulate_batch/*`: vxwg's `Device::encapsulate_batch`, 32 and 64 packets per call (the
//!   engine hands each run of packets for one peer to the protocol this way).

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use rand_core::OsRng;
use vxwg::dataplane::wireguard::aead::{Aead, RingChaCha, RustCryptoChaCha};
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
        let ring = RingChaCha::new(&[7; 32]);
        let mut counter = 0u64;
        g.bench_with_input(BenchmarkId::new("ring", size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                black_box(ring.seal_in_place(counter, &[], &mut buf))
            })
        });
        let rc = RustCryptoChaCha::new(&[7; 32]);
        g.bench_with_input(BenchmarkId::new("rustcrypto", size), &size, |b, _| {
            b.iter(|| {
                counter += 1;
                black_box(rc.seal_in_place(counter, &[], &mut buf))
            })
        });
        #[cfg(feature = "aead-aws-lc")]
        {
            let aws = vxwg::dataplane::wireguard::aead::AwsLcChaCha::new(&[7; 32]);
            g.bench_with_input(BenchmarkId::new("aws-lc-rs", size), &size, |b, _| {
                b.iter(|| {
                    counter += 1;
                    black_box(aws.seal_in_place(counter, &[], &mut buf))
                })
            });
        }
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
        let mut bufs = vec![vec![0u8; HEADROOM + size + TAILROOM]; batch];
        let lens = vec![size; batch];
        let mut out = Vec::with_capacity(batch);
        g.bench_with_input(BenchmarkId::new("vxwg", batch), &batch, |b, _| {
            b.iter(|| {
                for buf in bufs.iter_mut() {
                    buf[HEADROOM..HEADROOM + size].copy_from_slice(&packet);
                }
                out.clear();
                let dst = pair.a.encapsulate_batch(pair.a_peer, &mut bufs, &lens, pair.now, &mut out).unwrap();
                black_box((dst, out.len()))
            })
        });
    }
    g.finish();
}

/// Interleaved comparison for this noisy 2-core VM: in each round every contender encrypts (or
/// decrypts) a block of packets, in rotated order, so all of them see the same machine state;
/// the report is the median time per packet and the median of the per-round ratios.
mod interleaved {
    use super::*;

    const ROUNDS: usize = 60;
    const BLOCK: usize = 2000;

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }

    type Contender<'a> = (&'static str, Box<dyn FnMut() -> f64 + 'a>);

    fn run(title: &str, size: usize, mut contenders: Vec<Contender<'_>>) {
        let n = contenders.len();
        let mut samples = vec![Vec::with_capacity(ROUNDS); n];
        for round in 0..ROUNDS {
            for k in 0..n {
                let i = (round + k) % n;
                samples[i].push((contenders[i].1)());
            }
        }
        let base = samples[0].clone();
        let mut line = format!("{title:<12} {size:>5} B:");
        for (i, (name, _)) in contenders.iter().enumerate() {
            let ratio = median(samples[i].iter().zip(&base).map(|(x, b)| x / b).collect());
            line += &format!("  {name} {:>7.1} ns ({ratio:.3}x)", median(samples[i].clone()));
        }
        println!("{line}");
    }

    fn time_block(mut f: impl FnMut()) -> f64 {
        let t = Instant::now();
        for _ in 0..BLOCK {
            f();
        }
        t.elapsed().as_nanos() as f64 / BLOCK as f64
    }

    pub fn summary() {
        println!("\ninterleaved medians ({ROUNDS} rounds of {BLOCK} packets; ratio = median of per-round ratios to the first column)");
        let a_addr: SocketAddr = A_ADDR.parse().unwrap();
        for size in SIZES {
            let packet = ipv4_packet(size);
            // Encapsulation against the bare seal of the same bytes.
            let floor = RingChaCha::new(&[7; 32]);
            let mut floor_buf = vec![0x5au8; size];
            let mut counter = 0u64;
            let mut pair = vx_pair();
            let mut vx_buf = vec![0u8; HEADROOM + size + TAILROOM];
            let (mut bt, _) = bt_pair();
            let mut bt_out = vec![0u8; size + 64];
            let mut batch_pair = vx_pair();
            let mut batch_bufs = vec![vec![0u8; HEADROOM + size + TAILROOM]; 64];
            let batch_lens = vec![size; 64];
            let mut batch_out = Vec::with_capacity(64);
            run(
                "encapsulate",
                size,
                vec![
                    (
                        "aead",
                        Box::new(|| {
                            time_block(|| {
                                counter += 1;
                                black_box(floor.seal_in_place(counter, &[], &mut floor_buf));
                            })
                        }),
                    ),
                    (
                        "vxwg",
                        Box::new(|| {
                            time_block(|| {
                                vx_buf[HEADROOM..HEADROOM + size].copy_from_slice(&packet);
                                black_box(pair.a.encapsulate(pair.a_peer, &mut vx_buf, size, pair.now).unwrap());
                            })
                        }),
                    ),
                    (
                        "vxwg x64",
                        Box::new(|| {
                            let t = Instant::now();
                            for _ in 0..BLOCK / 64 {
                                for buf in batch_bufs.iter_mut() {
                                    buf[HEADROOM..HEADROOM + size].copy_from_slice(&packet);
                                }
                                batch_out.clear();
                                black_box(
                                    batch_pair
                                        .a
                                        .encapsulate_batch(
                                            batch_pair.a_peer,
                                            &mut batch_bufs,
                                            &batch_lens,
                                            batch_pair.now,
                                            &mut batch_out,
                                        )
                                        .unwrap(),
                                );
                            }
                            t.elapsed().as_nanos() as f64 / (BLOCK / 64 * 64) as f64
                        }),
                    ),
                    (
                        "boringtun",
                        Box::new(|| {
                            time_block(|| {
                                let TunnResult::WriteToNetwork(d) = bt.encapsulate(&packet, &mut bt_out) else {
                                    panic!()
                                };
                                black_box(d.len());
                            })
                        }),
                    ),
                ],
            );

            // Decapsulation: each round decrypts fresh messages made (untimed) just before it.
            let mut pair = vx_pair();
            let (mut bta, mut btb) = bt_pair();
            let mut open_floor_msgs: Vec<Vec<u8>> = Vec::new();
            let floor_open = RingChaCha::new(&[9; 32]);
            let mut floor_counter = 0u64;
            let mut out = vec![0u8; size + 64];
            run(
                "decapsulate",
                size,
                vec![
                    (
                        "aead",
                        Box::new(|| {
                            open_floor_msgs = (0..BLOCK)
                                .map(|_| {
                                    floor_counter += 1;
                                    let mut m = vec![0x5au8; size + 16];
                                    let tag = floor_open.seal_in_place(floor_counter, &[], &mut m[..size]);
                                    m[size..].copy_from_slice(&tag);
                                    m
                                })
                                .collect();
                            let base = floor_counter - BLOCK as u64 + 1;
                            let mut it = open_floor_msgs.iter_mut().enumerate();
                            time_block(|| {
                                let (i, m) = it.next().unwrap();
                                black_box(floor_open.open_in_place(base + i as u64, &[], m).unwrap());
                            })
                        }),
                    ),
                    (
                        "vxwg",
                        Box::new(|| {
                            let mut msgs: Vec<Vec<u8>> = (0..BLOCK)
                                .map(|_| {
                                    let mut buf = vec![0u8; HEADROOM + size + TAILROOM];
                                    buf[HEADROOM..HEADROOM + size].copy_from_slice(&packet);
                                    let Ok(Encapsulated::Ready { len, .. }) =
                                        pair.a.encapsulate(pair.a_peer, &mut buf, size, pair.now)
                                    else {
                                        panic!()
                                    };
                                    buf.truncate(len);
                                    buf
                                })
                                .collect();
                            let mut it = msgs.iter_mut();
                            time_block(|| {
                                let m = it.next().unwrap();
                                let Ok(Received::Packet { packet, .. }) = pair.b.decapsulate(a_addr, m, pair.now)
                                else {
                                    panic!()
                                };
                                black_box(packet.len());
                            })
                        }),
                    ),
                    (
                        "boringtun",
                        Box::new(|| {
                            let msgs: Vec<Vec<u8>> = (0..BLOCK)
                                .map(|_| {
                                    let mut enc = vec![0u8; size + 64];
                                    let TunnResult::WriteToNetwork(d) = bta.encapsulate(&packet, &mut enc) else {
                                        panic!()
                                    };
                                    d.to_vec()
                                })
                                .collect();
                            let mut it = msgs.iter();
                            time_block(|| {
                                let m = it.next().unwrap();
                                let TunnResult::WriteToTunnelV4(p, _) = btb.decapsulate(None, m, &mut out) else {
                                    panic!()
                                };
                                black_box(p.len());
                            })
                        }),
                    ),
                ],
            );
        }
    }
}

criterion_group!(benches, aead_floor, encapsulate, decapsulate, encapsulate_batch);

fn main() {
    // `cargo bench --bench wireguard -- <filter>` runs only matching criterion benchmarks; the
    // interleaved summary runs unless a filter is given or VXWG_BENCH_SUMMARY=0.
    let filtered = std::env::args().skip(1).any(|a| !a.starts_with('-'));
    benches();
    Criterion::default().configure_from_args().final_summary();
    if std::env::var("VXWG_BENCH_SUMMARY").map_or(!filtered, |v| v != "0") {
        interleaved::summary();
    }
}
