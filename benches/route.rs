//! `cargo bench --bench route`: the cryptokey routing lookup, once per packet each way.
//!
//! * `lookup_v4/{hit,miss}/N`: `AllowedIps::lookup_v4` on a table of N random IPv4 prefixes
//!   (N = 10, 1,000, 10,000), for 1,024 addresses per iteration that each fall inside some prefix
//!   (hit) or inside none (miss: in the gaps between the prefixes, so the search is as long).
//!   Divide the time by 1,024 (or read the element rate) for ns/lookup.
//! * `lookup_v6/{hit,miss}/1000`: the same for IPv6.
//! * `build/N`: inserting the N prefixes into an empty table, one by one (control-plane cost).
//! * `list_by_peer/P`: listing every peer's prefixes, peer by peer, as `wg show` and `vxwg status`
//!   do (under the dataplane lock), for P peers of 10 prefixes each; and `replace_one/P`: replacing
//!   one peer's 10 prefixes in that table, as an AllowedIPs update from the control plane does.
//!
//! Prefixes sit in 10.0.0.0/8 (IPv4) or fd00::/16 (IPv6) with random lengths (/20–/32, /48–/128),
//! owned by 64 peers; misses are random addresses of the same range that no prefix contains.
//! Random numbers come from a fixed-seed generator so every run measures the same tables.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use vxwg::dataplane::route::{AllowedIps, IpNet};

const PROBES: usize = 1024;

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn u128(&mut self) -> u128 {
        u128::from(self.next()) << 64 | u128::from(self.next())
    }
}

fn v4_prefixes(n: usize, rng: &mut Rng) -> Vec<(IpNet, u32)> {
    (0..n)
        .map(|i| {
            let addr = 0x0a00_0000 | (rng.next() as u32 & 0x00ff_ffff);
            let len = 20 + rng.below(13) as u8;
            (IpNet::new(IpAddr::V4(Ipv4Addr::from(addr)), len).unwrap(), i as u32 % 64)
        })
        .collect()
}

fn v6_prefixes(n: usize, rng: &mut Rng) -> Vec<(IpNet, u32)> {
    (0..n)
        .map(|i| {
            let addr = 0xfd00 << 112 | (rng.u128() >> 16);
            let len = 48 + rng.below(81) as u8;
            (IpNet::new(IpAddr::V6(Ipv6Addr::from(addr)), len).unwrap(), i as u32 % 64)
        })
        .collect()
}

/// A random address inside `net`.
fn inside(net: IpNet, rng: &mut Rng) -> IpAddr {
    match net.addr() {
        IpAddr::V4(a) => {
            let host = (rng.next() as u32).checked_shr(u32::from(net.prefix_len())).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) | host))
        }
        IpAddr::V6(a) => {
            let host = rng.u128().checked_shr(u32::from(net.prefix_len())).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) | host))
        }
    }
}

fn hits(nets: &[(IpNet, u32)], rng: &mut Rng) -> Vec<IpAddr> {
    (0..PROBES).map(|_| inside(nets[rng.below(nets.len() as u64) as usize].0, rng)).collect()
}

/// Addresses of `range` that no prefix in `nets` contains (checked by brute force).
fn misses(range: IpNet, nets: &[(IpNet, u32)], rng: &mut Rng) -> Vec<IpAddr> {
    std::iter::repeat_with(|| inside(range, rng))
        .filter(|&a| !nets.iter().any(|(n, _)| n.contains(a)))
        .take(PROBES)
        .collect()
}

fn lookup_v4(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup_v4");
    g.throughput(Throughput::Elements(PROBES as u64));
    for n in [10, 1_000, 10_000] {
        let mut rng = Rng(n as u64);
        let nets = v4_prefixes(n, &mut rng);
        let table: AllowedIps<u32> = nets.iter().copied().collect();
        let to_bytes = |a: IpAddr| match a {
            IpAddr::V4(a) => a.octets(),
            IpAddr::V6(_) => unreachable!(),
        };
        let hit: Vec<[u8; 4]> = hits(&nets, &mut rng).into_iter().map(to_bytes).collect();
        assert!(hit.iter().all(|&a| table.lookup_v4(a).is_some()));
        let miss: Vec<[u8; 4]> =
            misses("10.0.0.0/8".parse().unwrap(), &nets, &mut rng).into_iter().map(to_bytes).collect();
        assert!(miss.iter().all(|&a| table.lookup_v4(a).is_none()));
        for (name, probes) in [("hit", &hit), ("miss", &miss)] {
            g.bench_with_input(BenchmarkId::new(name, n), probes, |b, probes| {
                b.iter(|| {
                    let mut found = 0u32;
                    for &a in probes {
                        found = found.wrapping_add(table.lookup_v4(black_box(a)).map_or(0, |v| v + 1));
                    }
                    found
                })
            });
        }
    }
    g.finish();
}

fn lookup_v6(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup_v6");
    g.throughput(Throughput::Elements(PROBES as u64));
    let n = 1_000;
    let mut rng = Rng(6);
    let nets = v6_prefixes(n, &mut rng);
    let table: AllowedIps<u32> = nets.iter().copied().collect();
    let to_bytes = |a: IpAddr| match a {
        IpAddr::V6(a) => a.octets(),
        IpAddr::V4(_) => unreachable!(),
    };
    let hit: Vec<[u8; 16]> = hits(&nets, &mut rng).into_iter().map(to_bytes).collect();
    assert!(hit.iter().all(|&a| table.lookup_v6(a).is_some()));
    let miss: Vec<[u8; 16]> = misses("fd00::/16".parse().unwrap(), &nets, &mut rng).into_iter().map(to_bytes).collect();
    assert!(miss.iter().all(|&a| table.lookup_v6(a).is_none()));
    for (name, probes) in [("hit", &hit), ("miss", &miss)] {
        g.bench_with_input(BenchmarkId::new(name, n), probes, |b, probes| {
            b.iter(|| {
                let mut found = 0u32;
                for &a in probes {
                    found = found.wrapping_add(table.lookup_v6(black_box(a)).map_or(0, |v| v + 1));
                }
                found
            })
        });
    }
    g.finish();
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    for n in [1_000, 10_000] {
        let nets = v4_prefixes(n, &mut Rng(n as u64));
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &nets, |b, nets| {
            b.iter_batched(|| nets.clone(), |nets| nets.into_iter().collect::<AllowedIps<u32>>(), BatchSize::LargeInput)
        });
    }
    g.finish();
}

/// P peers with 10 random IPv4 prefixes each (the peer is the value).
fn peer_table(peers: usize) -> AllowedIps<u32> {
    let mut rng = Rng(peers as u64);
    let nets = v4_prefixes(peers * 10, &mut rng);
    nets.into_iter().enumerate().map(|(i, (net, _))| (net, (i / 10) as u32)).collect()
}

fn per_peer(c: &mut Criterion) {
    let mut g = c.benchmark_group("list_by_peer");
    g.sample_size(10);
    for peers in [100, 1_000] {
        let table = peer_table(peers);
        g.throughput(Throughput::Elements(peers as u64));
        g.bench_with_input(BenchmarkId::from_parameter(peers), &table, |b, table| {
            b.iter(|| (0..peers as u32).map(|p| table.prefixes_of(black_box(p)).count()).sum::<usize>())
        });
    }
    g.finish();
    let mut g = c.benchmark_group("replace_one");
    g.sample_size(10);
    for peers in [100, 1_000] {
        let table = peer_table(peers);
        let fresh: Vec<IpNet> = v4_prefixes(10, &mut Rng(7)).into_iter().map(|(n, _)| n).collect();
        g.bench_with_input(BenchmarkId::from_parameter(peers), &table, |b, table| {
            b.iter_batched(
                || table.clone(),
                |mut t| {
                    t.remove_value(black_box(3));
                    t.extend(fresh.iter().map(|&n| (n, 3)));
                    t
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, lookup_v4, lookup_v6, build, per_peer);
criterion_main!(benches);
