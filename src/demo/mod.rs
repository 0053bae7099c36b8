//! `vxwg demo`: as root, a real mesh of three vxwg nodes in network namespaces ([`mesh`]);
//! otherwise, or with `--in-process`, two WireGuard nodes in one process, wired back to back
//! through in-memory queues.
//!
//! The in-process demo exercises the same sans-IO engine a node runs (handshake, cookies, sessions, timers), checks
//! every packet end to end, and prints a table. It needs no privileges and sends nothing to any
//! network: datagrams go from one `Device` to the other in memory.

pub mod mesh;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure, Context};
use rand_core::OsRng;
use vxwg::control::keys::Key;
use vxwg::dataplane::wireguard::{
    Device, DeviceConfig, Encapsulated, PeerConfig, PeerId, Received, HEADROOM, TAILROOM,
};

struct Node {
    name: &'static str,
    addr: SocketAddr,
    device: Device,
    peer: PeerId,
    inbox: VecDeque<Vec<u8>>,
    delivered: u64,
    checksum: u64,
}

fn fnv(acc: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(acc, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// An IPv4/UDP packet of `size` bytes from `src` to `dst` carrying `seq`.
fn packet(src: [u8; 4], dst: [u8; 4], seq: u32, size: usize) -> Vec<u8> {
    let size = size.max(32);
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[28..32].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p[32..].iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(seq | 1) as u8;
    }
    p
}

fn new_node(name: &'static str, addr: &str, key: Key, peer_key: Key, peer_addr: &str, now: Instant) -> Node {
    let mut device = Device::new(DeviceConfig::new(key.0), OsRng, now, SystemTime::now());
    let peer = device
        .add_peer(PeerConfig { endpoint: Some(peer_addr.parse().expect("literal")), ..PeerConfig::new(peer_key.0) })
        .expect("distinct fresh keys");
    Node {
        name,
        addr: addr.parse().expect("literal"),
        device,
        peer,
        inbox: VecDeque::new(),
        delivered: 0,
        checksum: 0xcbf2_9ce4_8422_2325,
    }
}

/// Encrypts `p` on `from` and queues the datagram for `to`.
fn send(from: &mut Node, to: &mut Node, p: &[u8], buf: &mut [u8], now: Instant) -> anyhow::Result<()> {
    buf[HEADROOM..HEADROOM + p.len()].copy_from_slice(p);
    match from.device.encapsulate(from.peer, &mut buf[..HEADROOM + p.len() + TAILROOM], p.len(), now)? {
        Encapsulated::Ready { len, .. } => to.inbox.push_back(buf[..len].to_vec()),
        Encapsulated::Staged => {}
    }
    flush(from, to);
    Ok(())
}

fn flush(from: &mut Node, to: &mut Node) {
    while let Some(t) = from.device.poll_transmit() {
        to.inbox.push_back(t.payload);
    }
}

/// Delivers everything queued for `node`; replies go to `other`.
fn deliver(node: &mut Node, other: &mut Node, now: Instant) -> anyhow::Result<()> {
    while let Some(mut d) = node.inbox.pop_front() {
        match node.device.decapsulate(other.addr, &mut d, now) {
            Ok(Received::Packet { packet, .. }) => {
                node.delivered += 1;
                node.checksum = fnv(node.checksum, packet);
            }
            Ok(_) => {}
            Err(e) => bail!("{} dropped a datagram from {}: {e}", node.name, other.name),
        }
        flush(node, other);
    }
    Ok(())
}

fn pump(a: &mut Node, b: &mut Node, now: Instant) -> anyhow::Result<()> {
    while !a.inbox.is_empty() || !b.inbox.is_empty() {
        deliver(a, b, now)?;
        deliver(b, a, now)?;
    }
    Ok(())
}

/// `vxwg demo`: the namespace mesh when it can run here (and `in_process` is false), else the
/// in-process demo, saying why.
pub fn run(in_process: bool, mb: u32, packets: u32, size: usize) -> anyhow::Result<()> {
    ensure!((32..=65_000).contains(&size), "--size must be between 32 and 65000 bytes");
    if in_process {
        return run_in_process(packets, size);
    }
    match mesh::unavailable() {
        None => mesh::run_mesh(mb),
        Some(why) => {
            println!("vxwg demo: the namespace mesh (three nodes, a pod behind each) cannot run: {why}.");
            println!("  It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN: network namespaces, TUN devices,");
            println!("  netlink routes), `ip` (iproute2), `ping` and /dev/net/tun: `sudo vxwg demo`.");
            println!("  Running the in-process demo instead (same as `vxwg demo --in-process`).");
            println!();
            run_in_process(packets, size)
        }
    }
}

/// Two WireGuard nodes in this process.
pub fn run_in_process(packets: u32, size: usize) -> anyhow::Result<()> {
    ensure!((32..=65_000).contains(&size), "--size must be between 32 and 65000 bytes");
    let (ka, kb) = (Key::generate_private(&mut OsRng), Key::generate_private(&mut OsRng));
    let start = Instant::now();
    let mut now = start;
    let mut a = new_node("node-a", "127.0.0.1:41641", ka, kb.public(), "127.0.0.1:41642", now);
    let mut b = new_node("node-b", "127.0.0.1:41642", kb, ka.public(), "127.0.0.1:41641", now);
    let (ip_a, ip_b) = ([100, 64, 0, 1], [100, 64, 0, 2]);
    let mut buf = vec![0u8; HEADROOM + size + TAILROOM];
    println!("vxwg demo: two WireGuard nodes in this process (no sockets, no privileges)");
    println!("  node-a {}  public key {}", a.addr, ka.public().to_base64());
    println!("  node-b {}  public key {}", b.addr, kb.public().to_base64());

    // 1. Handshake, triggered by the first packet.
    let t = Instant::now();
    send(&mut a, &mut b, &packet(ip_a, ip_b, 0, size), &mut buf, now)?;
    pump(&mut a, &mut b, now)?;
    let handshake_time = t.elapsed();
    ensure!(a.device.has_session(a.peer, now), "handshake did not complete");
    ensure!(b.delivered == 1, "the packet staged during the handshake was not delivered");

    // 2. Bulk traffic both ways, every packet checked end to end.
    let (mut sent_a, mut sent_b) = (fnv(0xcbf2_9ce4_8422_2325, &packet(ip_a, ip_b, 0, size)), 0xcbf2_9ce4_8422_2325);
    let t = Instant::now();
    for seq in 1..=packets {
        let pa = packet(ip_a, ip_b, seq, size);
        let pb = packet(ip_b, ip_a, seq, size);
        sent_a = fnv(sent_a, &pa);
        sent_b = fnv(sent_b, &pb);
        send(&mut a, &mut b, &pa, &mut buf, now)?;
        send(&mut b, &mut a, &pb, &mut buf, now)?;
        if seq % 64 == 0 {
            pump(&mut a, &mut b, now)?;
        }
    }
    pump(&mut a, &mut b, now)?;
    let bulk = t.elapsed();
    ensure!(b.delivered == u64::from(packets) + 1 && a.delivered == u64::from(packets), "packets were lost");
    ensure!(a.checksum == sent_b && b.checksum == sent_a, "delivered bytes differ from what was sent");

    // 3. Ten simulated minutes of light traffic: sessions must roll over without loss.
    let before = (a.delivered, b.delivered);
    let step = Duration::from_millis(100);
    let end = now + Duration::from_secs(600);
    let mut seq = packets;
    while now < end {
        seq += 1;
        now += step;
        a.device.handle_timeout(now);
        b.device.handle_timeout(now);
        flush(&mut a, &mut b);
        flush(&mut b, &mut a);
        send(&mut a, &mut b, &packet(ip_a, ip_b, seq, 200), &mut buf, now)?;
        send(&mut b, &mut a, &packet(ip_b, ip_a, seq, 200), &mut buf, now)?;
        pump(&mut a, &mut b, now)?;
    }
    let rolled = (a.delivered - before.0, b.delivered - before.1);
    let expected = u64::from(seq - packets);
    ensure!(rolled == (expected, expected), "lost packets across session rollover: {rolled:?} of {expected}");
    let stats_a = a.device.peer_stats(a.peer).context("peer")?;
    let stats_b = b.device.peer_stats(b.peer).context("peer")?;

    println!();
    println!("  {:<42} {:.2?}", "handshake (in process)", handshake_time);
    println!("  {:<42} {} each way of {} bytes, every byte verified, in {:.2?}", "packets", packets, size, bulk);
    println!("  {:<42} see `cargo bench --bench wireguard` for the per-packet cost", "");
    println!(
        "  {:<42} {} sessions each side, {} packets each way, none lost",
        "10 simulated minutes (rekey every ~2 min)",
        stats_a.handshakes.min(stats_b.handshakes),
        expected
    );
    println!(
        "  {:<42} node-a {} / {} bytes, node-b {} / {} bytes",
        "rx / tx", stats_a.rx_bytes, stats_a.tx_bytes, stats_b.rx_bytes, stats_b.tx_bytes
    );
    println!("\nok");
    Ok(())
}
