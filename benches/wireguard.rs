//! `cargo bench --bench wireguard`: per-packet cost of WireGuard transport encryption.
//!
//! In one run, for payloads of 64, 512 and 1420 bytes:
//! * `aead/*`: the bare ChaCha20-Poly1305 seal of the same bytes — the floor — for ring (vxwg's
//!   and boringtun's backend), RustCrypto's portable build, and aws-lc-rs with `--features aead-aws-lc`;
//! * `encapsulate/*` and `decapsulate/*`: vxwg's `Device` against boringtun's `noise::Tunn`,
//!   each with an established session to a peer of its own kind.
//! * `encapsulate_batch/*`: 32 and 64 packets per call, through vxwg's `Device::encapsulate_batch`
//!   (`device_x32`, `device_x64`: one peer's run, the way the engine hands it to the protocol) and
//!   `Engine::encapsulate_batch` (`engine_x32`, `engine_x64`: cryptokey routing included);
//! * `decapsulate_batch/*`: `Engine::decapsulate_batch`, 32 and 64 datagrams per call (the
//!   protocol has no batch decapsulation of its own; the engine adds the inbound source check).
//! * `*_batch/pod_x32`, `pod_x64`: the pod path, `PodEngine::encapsulate_pod_batch` and
//!   `decapsulate_pod_batch` (VXLAN built around the pod packet, then WireGuard, in one buffer).
//!   SIZE is the pod packet; what is sealed is 50 bytes more (outer IPv4, UDP, VXLAN, Ethernet).
//!   The bench's pod MTU is 1420 so that the 1420-byte row carries a 1420-byte pod packet.
//!
//! * `parallel_seal/threads_{1,2}_x64`: 1 or 2 threads sharing one `Engine` behind a mutex, as
//!   the daemon's workers do: plan under the lock (`Engine::plan_encapsulate`), seal outside it
//!   (`seal_jobs`). Elements are packets; 2 threads on 2 idle cores should come close to 2x.
//! * `parallel_open/{alone,one_helper}_x64`: one peer's batch of 64 datagrams opened by the
//!   worker that received it alone, or with a second thread woken to help as the daemon's
//!   workers are (`dataplane::assist`). Only the opening is timed.
//! * `offload/split_tcp4`, `offload/coalesce_tcp4`: the TSO/GRO halves around the crypto. A TCP
//!   super-packet of 44 segments of 1380 payload bytes (what a 1420-byte TUN carries) is cut by
//!   `offload::split` (lengths, IPv4 header checksum and a full TCP checksum per segment), and the
//!   44 segments are merged back by `offload::Coalescer` (one write planned).
//!
//! The batch groups count throughput in packets (criterion's "elem/s"). The interleaved summary
//! that follows (`VXWG_BENCH_SUMMARY`, below) gives every case in nanoseconds per packet and as a
//! ratio to the AEAD floor of the same size.

use std::hint::black_box;
use std::net::SocketAddr;
use std::ops::Range;
use std::time::{Duration, Instant, SystemTime};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use rand_core::OsRng;
use vxwg::dataplane::engine::pod::{
    PodConfig, PodEngine, PodIcmp, PodIncoming, PodOutgoing, RemoteVtep, POD_HEADROOM, POD_TAILROOM,
};
use vxwg::dataplane::engine::{Engine, Incoming, Outgoing};
use vxwg::dataplane::offload::{split, Coalescer, GsoType, VirtioNetHdr};
use vxwg::dataplane::route::IpNet;
use vxwg::dataplane::wire::ethernet::EthernetAddress;
use vxwg::dataplane::wire::vxlan::Vni;
use vxwg::dataplane::wireguard::aead::{Aead, RingChaCha, RustCryptoChaCha};
use vxwg::dataplane::wireguard::{
    Device, DeviceConfig, Encapsulated, PeerConfig, PeerId, Received, HEADROOM, TAILROOM,
};

const SIZES: [usize; 3] = [64, 512, 1420];
const BATCHES: [usize; 2] = [32, 64];
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

/// Copies `packet` into every buffer at `headroom`, for a batch call that seals them in place.
fn refill(bufs: &mut [Vec<u8>], headroom: usize, packet: &[u8]) {
    for buf in bufs {
        buf[headroom..headroom + packet.len()].copy_from_slice(packet);
    }
}

struct VxPair {
    a: Device,
    a_peer: PeerId,
    b: Device,
    now: Instant,
}

/// Runs a handshake from A (to its peer `a_peer`, B) to completion, both ways, including A's
/// confirming keepalive.
fn handshake(a: &mut Device, a_peer: PeerId, b: &mut Device, now: Instant) {
    a.initiate_handshake(a_peer, now);
    let (a_addr, b_addr): (SocketAddr, SocketAddr) = (A_ADDR.parse().unwrap(), B_ADDR.parse().unwrap());
    for _ in 0..4 {
        while let Some(mut t) = a.poll_transmit() {
            let _ = b.decapsulate(a_addr, &mut t.payload, now);
        }
        while let Some(mut t) = b.poll_transmit() {
            let _ = a.decapsulate(b_addr, &mut t.payload, now);
        }
    }
    assert!(a.has_session(a_peer, now));
}

fn vx_pair() -> VxPair {
    let now = Instant::now();
    let (ka, kb) = ([1u8; 32], [2u8; 32]);
    let mut a = Device::new(DeviceConfig::new(ka), OsRng, now, SystemTime::now());
    let mut b = Device::new(DeviceConfig::new(kb), OsRng, now, SystemTime::now());
    let a_peer =
        a.add_peer(PeerConfig { endpoint: Some(B_ADDR.parse().unwrap()), ..PeerConfig::new(b.public_key()) }).unwrap();
    b.add_peer(PeerConfig::new(a.public_key())).unwrap();
    handshake(&mut a, a_peer, &mut b, now);
    VxPair { a, a_peer, b, now }
}

/// Two engines with an established session: A routes 10.0.0.2 (the test packets' destination)
/// to B, and B accepts 10.0.0.1 (their source) from A.
struct EnginePair {
    a: Engine,
    b: Engine,
    now: Instant,
}

fn engine_pair() -> EnginePair {
    let now = Instant::now();
    let (ka, kb) = ([3u8; 32], [4u8; 32]);
    let mut a = Engine::new(Device::new(DeviceConfig::new(ka), OsRng, now, SystemTime::now()));
    let mut b = Engine::new(Device::new(DeviceConfig::new(kb), OsRng, now, SystemTime::now()));
    let (a_pub, b_pub) = (a.device().public_key(), b.device().public_key());
    let to_b = PeerConfig { endpoint: Some(B_ADDR.parse().unwrap()), ..PeerConfig::new(b_pub) };
    let a_peer = a.add_peer(to_b, &["10.0.0.2/32".parse::<IpNet>().unwrap()]).unwrap();
    b.add_peer(PeerConfig::new(a_pub), &["10.0.0.1/32".parse::<IpNet>().unwrap()]).unwrap();
    // The engines only hand handshake messages to their devices.
    handshake(a.device_mut(), a_peer, b.device_mut(), now);
    EnginePair { a, b, now }
}

/// Batches of `size`-byte packets for one peer through `Device::encapsulate_batch`.
struct DeviceBatch {
    pair: VxPair,
    packet: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    out: Vec<(usize, usize)>,
}

impl DeviceBatch {
    fn new(size: usize, batch: usize) -> Self {
        DeviceBatch {
            pair: vx_pair(),
            packet: ipv4_packet(size),
            bufs: vec![vec![0u8; HEADROOM + size + TAILROOM]; batch],
            lens: vec![size; batch],
            out: Vec::with_capacity(batch),
        }
    }

    /// One call on a fresh copy of the plaintext in every buffer.
    fn encapsulate(&mut self) -> usize {
        refill(&mut self.bufs, HEADROOM, &self.packet);
        self.out.clear();
        let p = &mut self.pair;
        let dst = p.a.encapsulate_batch(p.a_peer, &mut self.bufs, &self.lens, p.now, &mut self.out).unwrap();
        assert!(dst.is_some() && self.out.len() == self.bufs.len(), "every packet of the batch is sealed");
        self.out.len()
    }
}

/// Sealed datagrams (all from A's address) waiting for a receive side's `decapsulate`.
struct Sealed {
    msgs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    srcs: Vec<SocketAddr>,
}

impl Sealed {
    fn new(batch: usize) -> Self {
        Sealed { msgs: Vec::new(), lens: Vec::new(), srcs: vec![A_ADDR.parse().unwrap(); batch] }
    }

    fn clear(&mut self) {
        self.msgs.clear();
        self.lens.clear();
    }

    fn push(&mut self, msg: &[u8]) {
        self.msgs.push(msg.to_vec());
        self.lens.push(msg.len());
    }

    fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Hands the datagrams to `receive` up to `batch` at a time (messages, lengths, sources);
    /// returns the sum of what it returns.
    fn receive(
        &mut self,
        batch: usize,
        mut receive: impl FnMut(&mut [Vec<u8>], &[usize], &[SocketAddr]) -> usize,
    ) -> usize {
        let mut delivered = 0;
        for (msgs, lens) in self.msgs.chunks_mut(batch).zip(self.lens.chunks(batch)) {
            delivered += receive(msgs, lens, &self.srcs[..msgs.len()]);
        }
        delivered
    }
}

/// Batches of `size`-byte packets through a pair of engines, with the buffers reused call to call.
struct EngineBatch {
    pair: EnginePair,
    packet: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    out: Vec<Outgoing>,
    /// Sealed messages waiting for [`EngineBatch::decapsulate`].
    sealed: Sealed,
    incoming: Vec<Incoming>,
}

impl EngineBatch {
    fn new(size: usize, batch: usize) -> Self {
        EngineBatch {
            pair: engine_pair(),
            packet: ipv4_packet(size),
            bufs: vec![vec![0u8; HEADROOM + size + TAILROOM]; batch],
            lens: vec![size; batch],
            out: Vec::with_capacity(batch),
            sealed: Sealed::new(batch),
            incoming: Vec::with_capacity(batch),
        }
    }

    fn batch(&self) -> usize {
        self.bufs.len()
    }

    /// One `Engine::encapsulate_batch` call on a fresh copy of the plaintext in every buffer.
    fn encapsulate(&mut self) -> usize {
        refill(&mut self.bufs, HEADROOM, &self.packet);
        self.out.clear();
        self.pair.a.encapsulate_batch(&mut self.bufs, &self.lens, self.pair.now, &mut self.out);
        assert_eq!(self.out.len(), self.batch(), "every packet of the batch is sealed");
        self.out.len()
    }

    /// Seals `calls` batches (untimed) for [`EngineBatch::decapsulate`].
    fn prepare(&mut self, calls: usize) {
        self.sealed.clear();
        for _ in 0..calls {
            self.encapsulate();
            for o in &self.out {
                self.sealed.push(&self.bufs[o.slot][..o.len]);
            }
        }
    }

    /// Decrypts everything [`EngineBatch::prepare`] sealed, one `Engine::decapsulate_batch` call
    /// per batch; returns how many packets were delivered.
    fn decapsulate(&mut self) -> usize {
        let batch = self.batch();
        let (b, now, incoming) = (&mut self.pair.b, self.pair.now, &mut self.incoming);
        let delivered = self.sealed.receive(batch, |msgs, lens, srcs| {
            incoming.clear();
            b.decapsulate_batch(msgs, lens, srcs, now, incoming);
            incoming.len()
        });
        assert_eq!(delivered, self.sealed.len(), "every sealed packet is delivered");
        delivered
    }
}

/// Batches of `size`-byte pod packets (10.42.1.5 -> 10.42.2.7, UDP, DF) from pod engine A to pod
/// engine B: VTEPs 10.0.0.1 and 10.0.0.2, pod CIDRs 10.42.1.0/24 and 10.42.2.0/24.
struct PodBatch {
    a: PodEngine,
    b: PodEngine,
    now: Instant,
    packet: Vec<u8>,
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    out: Vec<PodOutgoing>,
    icmp: Vec<PodIcmp>,
    sealed: Sealed,
    incoming: Vec<PodIncoming>,
}

impl PodBatch {
    /// The pod MTU of both engines: the largest size in [`SIZES`], so every row fits.
    const POD_MTU: u32 = 1420;

    fn new(size: usize, batch: usize) -> Self {
        let EnginePair { a, b, now } = engine_pair();
        let mac = |last: u8| EthernetAddress([2, 0, 0, 0, 0, last]);
        let config = |last: u8, ip: &str| PodConfig {
            vni: Vni::new(1).unwrap(),
            local_vtep_mac: mac(last),
            local_vtep_ip: ip.parse().unwrap(),
            dst_port: 8472,
            pod_mtu: Self::POD_MTU,
            clamp_mss: false,
        };
        let mut a = PodEngine::new(a, config(0xa, "10.0.0.1")).unwrap();
        let mut b = PodEngine::new(b, config(0xb, "10.0.0.2")).unwrap();
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        a.insert_route(net("10.42.2.0/24"), RemoteVtep { vtep_ip: "10.0.0.2".parse().unwrap(), vtep_mac: mac(0xb) })
            .unwrap();
        b.insert_route(net("10.42.1.0/24"), RemoteVtep { vtep_ip: "10.0.0.1".parse().unwrap(), vtep_mac: mac(0xa) })
            .unwrap();
        let mut packet = ipv4_packet(size);
        packet[6] = 0x40; // DF, no fragment offset, as pods send
        packet[7] = 0;
        packet[9] = 17;
        packet[12..16].copy_from_slice(&[10, 42, 1, 5]);
        packet[16..20].copy_from_slice(&[10, 42, 2, 7]);
        PodBatch {
            a,
            b,
            now,
            packet,
            bufs: vec![vec![0u8; POD_HEADROOM + size + POD_TAILROOM]; batch],
            lens: vec![size; batch],
            out: Vec::with_capacity(batch),
            icmp: Vec::new(),
            sealed: Sealed::new(batch),
            incoming: Vec::with_capacity(batch),
        }
    }

    fn batch(&self) -> usize {
        self.bufs.len()
    }

    /// One `encapsulate_pod_batch` call on a fresh copy of the pod packet in every buffer.
    fn encapsulate(&mut self) -> usize {
        refill(&mut self.bufs, POD_HEADROOM, &self.packet);
        self.out.clear();
        self.a.encapsulate_pod_batch(&mut self.bufs, &self.lens, self.now, &mut self.out, &mut self.icmp);
        assert_eq!(self.out.len(), self.batch(), "every pod packet of the batch is sealed: {:?}", self.a.stats());
        self.out.len()
    }

    /// Seals `calls` batches (untimed) for [`PodBatch::decapsulate`].
    fn prepare(&mut self, calls: usize) {
        self.sealed.clear();
        for _ in 0..calls {
            self.encapsulate();
            for o in &self.out {
                self.sealed.push(&self.bufs[o.slot][o.range.clone()]);
            }
        }
    }

    /// Decrypts and unwraps everything [`PodBatch::prepare`] sealed, one `decapsulate_pod_batch`
    /// call per batch; returns how many pod packets were delivered.
    fn decapsulate(&mut self) -> usize {
        let batch = self.batch();
        let (b, now, incoming) = (&mut self.b, self.now, &mut self.incoming);
        let delivered = self.sealed.receive(batch, |msgs, lens, srcs| {
            incoming.clear();
            b.decapsulate_pod_batch(msgs, lens, srcs, now, incoming);
            incoming.len()
        });
        assert_eq!(delivered, self.sealed.len(), "every sealed pod packet is delivered: {:?}", self.b.stats());
        delivered
    }
}

/// Payload bytes per TCP segment through a 1420-byte tunnel (IPv4 and TCP headers of 20 each).
const MSS: usize = 1380;
/// Segments per super-packet: 60720 payload bytes, under the 64 KiB IPv4 limit.
const SEGMENTS: usize = 44;

/// A TCP/IPv4 super-packet as the TUN device hands it over with TSO, and the segments cut from it,
/// for [`Offload::split`] and [`Offload::coalesce`] to repeat on.
struct Offload {
    hdr: VirtioNetHdr,
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    super_len: usize,
    /// The headers of the super-packet, and those of its first segment after the split: each
    /// operation starts from the state it expects, since both rewrite the first buffer's headers.
    super_headers: [u8; 40],
    segment_headers: [u8; 40],
    packets: Vec<(usize, Range<usize>)>,
    coalescer: Coalescer,
}

impl Offload {
    fn new() -> Self {
        let super_len = 40 + SEGMENTS * MSS;
        let mut first = vec![0x5au8; HEADROOM + super_len + TAILROOM];
        let p = &mut first[HEADROOM..HEADROOM + super_len];
        p[..20].copy_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        p[2..4].copy_from_slice(&(super_len as u16).to_be_bytes());
        // Ports 40000 -> 5201, sequence 1000, ack 1, data offset 5, ACK|PSH, window 512.
        p[20..40].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 3, 0xe8, 0, 0, 0, 1, 0x50, 0x18, 2, 0, 0, 0, 0, 0]);
        let super_headers: [u8; 40] = p[..40].try_into().unwrap();
        let mut bufs = vec![vec![0u8; HEADROOM + 40 + MSS + TAILROOM]; SEGMENTS];
        bufs[0] = first;
        let hdr = VirtioNetHdr {
            flags: 1, // VIRTIO_NET_HDR_F_NEEDS_CSUM
            gso_type: GsoType::TcpV4,
            hdr_len: 40,
            gso_size: MSS as u16,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut o = Offload {
            hdr,
            bufs,
            lens: vec![0; SEGMENTS],
            super_len,
            super_headers,
            segment_headers: [0; 40],
            packets: Vec::new(),
            coalescer: Coalescer::new(),
        };
        o.split();
        o.segment_headers = o.bufs[0][HEADROOM..HEADROOM + 40].try_into().unwrap();
        o.packets = o.lens.iter().enumerate().map(|(slot, &len)| (slot, HEADROOM..HEADROOM + len)).collect();
        o
    }

    /// Cuts the super-packet into [`SEGMENTS`] segments; returns how many.
    fn split(&mut self) -> usize {
        self.bufs[0][HEADROOM..HEADROOM + 40].copy_from_slice(&self.super_headers);
        let n = split(&self.hdr, &mut self.bufs, HEADROOM, self.super_len, &mut self.lens).unwrap();
        assert_eq!(n, SEGMENTS, "the super-packet is cut into every segment");
        n
    }

    /// Plans the TUN writes for the segments; returns how many segments went into them.
    fn coalesce(&mut self) -> usize {
        self.bufs[0][HEADROOM..HEADROOM + 40].copy_from_slice(&self.segment_headers);
        self.coalescer.coalesce(&mut self.bufs, &self.packets);
        assert!(
            self.coalescer.writes().len() == 1 && self.coalescer.followers().len() == SEGMENTS - 1,
            "the segments merge into one write"
        );
        SEGMENTS
    }
}

fn offload(c: &mut Criterion) {
    let mut g = c.benchmark_group("offload");
    g.throughput(Throughput::Elements(SEGMENTS as u64));
    let mut o = Offload::new();
    g.bench_function(BenchmarkId::new("split_tcp4", MSS), |b| b.iter(|| black_box(o.split())));
    g.bench_function(BenchmarkId::new("coalesce_tcp4", MSS), |b| b.iter(|| black_box(o.coalesce())));
    g.finish();
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
    for size in SIZES {
        for batch in BATCHES {
            g.throughput(Throughput::Elements(batch as u64));
            let mut device = DeviceBatch::new(size, batch);
            g.bench_with_input(BenchmarkId::new(format!("device_x{batch}"), size), &size, |b, _| {
                b.iter(|| black_box(device.encapsulate()))
            });
            let mut engine = EngineBatch::new(size, batch);
            g.bench_with_input(BenchmarkId::new(format!("engine_x{batch}"), size), &size, |b, _| {
                b.iter(|| black_box(engine.encapsulate()))
            });
            let mut pod = PodBatch::new(size, batch);
            g.bench_with_input(BenchmarkId::new(format!("pod_x{batch}"), size), &size, |b, _| {
                b.iter(|| black_box(pod.encapsulate()))
            });
        }
    }
    g.finish();
}

/// A batch path with a sender and a receiver: [`EngineBatch`] or [`PodBatch`].
trait BatchPath {
    /// Packets per call.
    fn batch(&self) -> usize;
    /// Seals `calls` batches (untimed) for [`BatchPath::decapsulate`].
    fn prepare(&mut self, calls: usize);
    /// Opens everything prepared, one call per batch; returns the packets delivered.
    fn decapsulate(&mut self) -> usize;
}

impl BatchPath for EngineBatch {
    fn batch(&self) -> usize {
        EngineBatch::batch(self)
    }
    fn prepare(&mut self, calls: usize) {
        EngineBatch::prepare(self, calls)
    }
    fn decapsulate(&mut self) -> usize {
        EngineBatch::decapsulate(self)
    }
}

impl BatchPath for PodBatch {
    fn batch(&self) -> usize {
        PodBatch::batch(self)
    }
    fn prepare(&mut self, calls: usize) {
        PodBatch::prepare(self, calls)
    }
    fn decapsulate(&mut self) -> usize {
        PodBatch::decapsulate(self)
    }
}

/// Criterion's `iter_custom` for the receive side: each timed call opens one batch sealed
/// (untimed) just before it.
fn time_receive(path: &mut impl BatchPath, iters: u64) -> Duration {
    let mut timed = Duration::ZERO;
    for _ in 0..iters {
        path.prepare(1);
        let t = Instant::now();
        black_box(path.decapsulate());
        timed += t.elapsed();
    }
    timed
}

fn decapsulate_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("decapsulate_batch");
    for size in SIZES {
        for batch in BATCHES {
            g.throughput(Throughput::Elements(batch as u64));
            let mut engine = EngineBatch::new(size, batch);
            g.bench_with_input(BenchmarkId::new(format!("engine_x{batch}"), size), &size, |b, _| {
                b.iter_custom(|iters| time_receive(&mut engine, iters))
            });
            let mut pod = PodBatch::new(size, batch);
            g.bench_with_input(BenchmarkId::new(format!("pod_x{batch}"), size), &size, |b, _| {
                b.iter_custom(|iters| time_receive(&mut pod, iters))
            });
        }
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

    /// Nanoseconds per packet over about BLOCK packets, `batch` packets per call of `call`.
    fn time_batches(batch: usize, mut call: impl FnMut() -> usize) -> f64 {
        let calls = BLOCK / batch;
        let t = Instant::now();
        for _ in 0..calls {
            black_box(call());
        }
        t.elapsed().as_nanos() as f64 / (calls * batch) as f64
    }

    /// Nanoseconds per packet to decrypt about BLOCK packets sealed (untimed) just before.
    fn time_decapsulate(path: &mut impl BatchPath) -> f64 {
        path.prepare(BLOCK / path.batch());
        let t = Instant::now();
        let delivered = path.decapsulate();
        t.elapsed().as_nanos() as f64 / delivered as f64
    }

    fn time_block(mut f: impl FnMut()) -> f64 {
        let t = Instant::now();
        for _ in 0..BLOCK {
            f();
        }
        t.elapsed().as_nanos() as f64 / BLOCK as f64
    }

    pub fn summary() {
        println!(
            "\ninterleaved medians ({ROUNDS} rounds of {BLOCK} packets; ns per packet; ratio = median of per-round \
             ratios to the first column, the AEAD floor; dev/eng/pod xN = Device/Engine/PodEngine batch of N per \
             call, pod: SIZE is the pod packet, 50 bytes less than what is sealed)"
        );
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
            let (mut dev32, mut dev64) = (DeviceBatch::new(size, 32), DeviceBatch::new(size, 64));
            let (mut eng32, mut eng64) = (EngineBatch::new(size, 32), EngineBatch::new(size, 64));
            let mut pod64 = PodBatch::new(size, 64);
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
                    ("dev x32", Box::new(|| time_batches(32, || dev32.encapsulate()))),
                    ("dev x64", Box::new(|| time_batches(64, || dev64.encapsulate()))),
                    ("eng x32", Box::new(|| time_batches(32, || eng32.encapsulate()))),
                    ("eng x64", Box::new(|| time_batches(64, || eng64.encapsulate()))),
                    ("pod x64", Box::new(|| time_batches(64, || pod64.encapsulate()))),
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
            let (mut eng32, mut eng64) = (EngineBatch::new(size, 32), EngineBatch::new(size, 64));
            let mut pod64 = PodBatch::new(size, 64);
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
                    ("eng x32", Box::new(|| time_decapsulate(&mut eng32))),
                    ("eng x64", Box::new(|| time_decapsulate(&mut eng64))),
                    ("pod x64", Box::new(|| time_decapsulate(&mut pod64))),
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

        // The offloads around the crypto, per 1420-byte segment, against the seal of one.
        let floor = RingChaCha::new(&[7; 32]);
        let mut floor_buf = vec![0x5au8; 40 + MSS];
        let mut counter = 0u64;
        let (mut cut, mut merge) = (Offload::new(), Offload::new());
        run(
            "offload",
            40 + MSS,
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
                ("split", Box::new(|| time_batches(SEGMENTS, || cut.split()))),
                ("coalesce", Box::new(|| time_batches(SEGMENTS, || merge.coalesce()))),
            ],
        );
    }
}

/// Workers sharing one engine, the daemon's way: each plans its batch of 64 under the engine's
/// lock (route, counters reserved) and seals it outside the lock, on its own buffers. With 2
/// threads on 2 otherwise idle cores the packet rate should nearly double: the lock is held only
/// for the plan.
fn parallel_seal(c: &mut Criterion) {
    use std::sync::{Arc, Mutex};
    use vxwg::dataplane::engine::{seal_jobs, SealJob};
    const BATCH: usize = 64;
    let mut g = c.benchmark_group("parallel_seal");
    for size in [64, 1420] {
        g.throughput(Throughput::Elements(BATCH as u64));
        let pair = engine_pair();
        let (engine, now) = (Arc::new(Mutex::new(pair.a)), pair.now);
        let packet = ipv4_packet(size);
        for threads in [1usize, 2] {
            g.bench_with_input(BenchmarkId::new(format!("threads_{threads}_x{BATCH}"), size), &size, |b, _| {
                b.iter_custom(|iters| {
                    // Each thread seals its share of the batches; the time is the wall time of all.
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for t in 0..threads {
                            let (engine, packet) = (engine.clone(), &packet);
                            let share = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
                            scope.spawn(move || {
                                let mut bufs = vec![vec![0u8; HEADROOM + size + TAILROOM]; BATCH];
                                let lens = vec![size; BATCH];
                                let (mut jobs, mut out) = (Vec::<SealJob>::new(), Vec::with_capacity(BATCH));
                                for _ in 0..share {
                                    refill(&mut bufs, HEADROOM, packet);
                                    jobs.clear();
                                    engine.lock().unwrap().plan_encapsulate(&bufs, &lens, now, &mut jobs);
                                    out.clear();
                                    seal_jobs(&mut bufs, &lens, &jobs, &mut out);
                                    assert_eq!(out.len(), BATCH, "every packet sealed");
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            });
        }
    }
    g.finish();
}

/// One peer's batch of 64 datagrams opened by the worker that received it alone, or with one
/// more worker's help (`dataplane::assist`), as the daemon does it: the helper waits in `poll` on
/// a socket and is woken by a byte on it once the batch is on offer. Only the opening is timed
/// (the batch is copied back and planned, untimed, before each). On 2 idle cores the helped
/// case should approach 2x at 1420 bytes, less at 64 where a batch is shorter than a wakeup.
fn parallel_open(c: &mut Criterion) {
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use vxwg::dataplane::assist::Board;
    use vxwg::dataplane::engine::{open_jobs, seal_jobs, Datagram, OpenJob, SealJob};
    use vxwg::dataplane::io::poll::wait_readable;
    const BATCH: usize = 64;
    const SPIN: Duration = Duration::from_micros(50);
    let mut g = c.benchmark_group("parallel_open");
    for size in [64, 1420] {
        g.throughput(Throughput::Elements(BATCH as u64));
        let mut pair = engine_pair();
        let packet = ipv4_packet(size);
        let mut bufs = vec![vec![0u8; HEADROOM + size + TAILROOM]; BATCH];
        refill(&mut bufs, HEADROOM, &packet);
        let (mut seal, mut out) = (Vec::<SealJob>::new(), Vec::new());
        pair.a.plan_encapsulate(&bufs, &vec![size; BATCH], pair.now, &mut seal);
        seal_jobs(&mut bufs, &vec![size; BATCH], &seal, &mut out);
        assert_eq!(out.len(), BATCH, "every packet sealed");
        let sealed: Vec<Vec<u8>> = out.iter().map(|o| bufs[o.slot][..o.len].to_vec()).collect();
        let src: SocketAddr = A_ADDR.parse().unwrap();
        let datagrams: Vec<Datagram> =
            sealed.iter().enumerate().map(|(slot, d)| Datagram { slot, range: 0..d.len(), src }).collect();
        for helpers in [0usize, 1] {
            let board = Arc::new(Board::new());
            let stop = Arc::new(AtomicBool::new(false));
            let (wake_rx, wake_tx) = UnixStream::pair().unwrap();
            wake_rx.set_nonblocking(true).unwrap();
            let helper = (helpers > 0).then(|| {
                let (board, stop) = (Arc::clone(&board), Arc::clone(&stop));
                std::thread::spawn(move || {
                    let mut sink = [0u8; 64];
                    while !stop.load(Ordering::Relaxed) {
                        let _ = wait_readable([wake_rx.as_raw_fd()], Some(Duration::from_millis(100)));
                        while matches!((&wake_rx).read(&mut sink), Ok(n) if n > 0) {}
                        board.help();
                        // As the daemon's helpers do: stay on for a moment, for the next batch.
                        let mut idle_since = Instant::now();
                        while idle_since.elapsed() < SPIN && !stop.load(Ordering::Relaxed) {
                            if board.has_offer() {
                                board.help();
                                idle_since = Instant::now();
                            }
                            std::hint::spin_loop();
                        }
                    }
                })
            });
            let name = if helpers == 0 { "alone_x64" } else { "one_helper_x64" };
            g.bench_with_input(BenchmarkId::new(name, size), &size, |b, _| {
                let mut work = sealed.clone();
                let mut jobs: Vec<OpenJob> = Vec::with_capacity(BATCH);
                b.iter_custom(|iters| {
                    let mut spent = Duration::ZERO;
                    for _ in 0..iters {
                        for (w, s) in work.iter_mut().zip(&sealed) {
                            w.copy_from_slice(s);
                        }
                        jobs.clear();
                        let planned = pair.b.plan_decapsulate(&mut work, &datagrams, pair.now, &mut jobs);
                        assert_eq!(planned, BATCH);
                        let start = Instant::now();
                        if helpers == 0 {
                            open_jobs(&mut work, &mut jobs);
                        } else {
                            board.open(&mut work, &mut jobs, |_| {
                                let _ = (&wake_tx).write(&[1]);
                            });
                        }
                        spent += start.elapsed();
                        assert!(jobs.iter().all(|j| matches!(j.opened(), Some(Ok(_)))), "every datagram opened");
                    }
                    spent
                })
            });
            stop.store(true, Ordering::Relaxed);
            let _ = (&wake_tx).write(&[1]);
            if let Some(h) = helper {
                h.join().unwrap();
            }
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    aead_floor,
    encapsulate,
    decapsulate,
    encapsulate_batch,
    decapsulate_batch,
    offload,
    parallel_seal,
    parallel_open
);

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
