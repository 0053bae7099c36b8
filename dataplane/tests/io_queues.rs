//! The IO drivers for multi-core workers, against the real kernel: a UDP port shared by a
//! reuseport group, a multi-queue TUN device (in a network namespace of its own), thread pinning,
//! and the misuse errors. The kernel chooses by flow hash in both cases: the tests check that it
//! spreads flows over more than one socket / queue and keeps each flow on one.

mod common;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{require, Netns};
use vxwg_dataplane::io::cpu;
use vxwg_dataplane::io::steering::flow_hash;
use vxwg_dataplane::io::{Offload, RecvMeta, Tun, UdpSocket, BATCH};
use vxwg_dataplane::offload::VNET_HDR_LEN;

/// Receives from every member until `want` datagrams arrived (or 5 s passed); returns, per
/// member, the (source, payload) of each.
fn drain_group(group: &[UdpSocket], want: usize) -> Vec<Vec<(SocketAddr, Vec<u8>)>> {
    let mut bufs = vec![vec![0u8; 2048]; BATCH];
    let mut meta = [RecvMeta::default(); BATCH];
    let mut got: Vec<Vec<(SocketAddr, Vec<u8>)>> = vec![Vec::new(); group.len()];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.iter().map(Vec::len).sum::<usize>() < want && Instant::now() < deadline {
        let mut idle = true;
        for (member, sock) in group.iter().enumerate() {
            match sock.recv_batch(&mut bufs, &mut meta) {
                Ok(n) => {
                    idle = false;
                    for i in 0..n {
                        got[member].push((meta[i].src, bufs[i][..meta[i].len].to_vec()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("member {member}: {e}"),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    got
}

#[test]
fn reuseport_group_spreads_sources_and_keeps_each_on_one_socket() {
    let group = UdpSocket::bind_group(0, 4).unwrap();
    let port = group[0].local_port().unwrap();
    assert_ne!(port, 0);
    for (i, s) in group.iter().enumerate() {
        assert_eq!(s.local_port().unwrap(), port, "member {i} shares the first one's port");
    }
    let dst = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let sources: Vec<std::net::UdpSocket> =
        (0..32).map(|_| std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()).collect();
    const PER_SOURCE: u8 = 8;
    for round in 0..PER_SOURCE {
        for (i, s) in sources.iter().enumerate() {
            s.send_to(&[i as u8, round], dst).unwrap();
        }
    }
    let total = sources.len() * PER_SOURCE as usize;
    let got = drain_group(&group, total);
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), total, "every datagram arrived");

    // Which members each source reached, checked against what it sent.
    let mut members_of: HashMap<SocketAddr, HashSet<usize>> = HashMap::new();
    for (member, datagrams) in got.iter().enumerate() {
        for (src, payload) in datagrams {
            let sent_by = &sources[payload[0] as usize];
            assert_eq!(*src, sent_by.local_addr().unwrap(), "payload names its sender");
            members_of.entry(*src).or_default().insert(member);
        }
    }
    assert_eq!(members_of.len(), sources.len(), "all 32 sources heard from");
    for (src, members) in &members_of {
        assert_eq!(members.len(), 1, "{src} reached one member only, not {members:?}");
    }
    let used: HashSet<usize> = members_of.values().flatten().copied().collect();
    eprintln!("32 sources over {} of 4 members: {:?}", used.len(), got.iter().map(Vec::len).collect::<Vec<_>>());
    assert!(used.len() >= 2, "the kernel spread 32 sources over more than one member ({used:?})");
}

#[test]
fn a_cloned_socket_sends_from_the_same_port() {
    let group = UdpSocket::bind_group(0, 2).unwrap();
    let clone = group[1].try_clone().unwrap();
    assert_eq!(clone.local_port().unwrap(), group[1].local_port().unwrap());
    assert_ne!(clone.raw_fd(), group[1].raw_fd(), "a descriptor of its own");
    let peer = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    clone.send_to(b"from the clone", peer.local_addr().unwrap()).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"from the clone");
    assert_eq!(from.port(), group[0].local_port().unwrap());
    drop(group);
    // The clone keeps the socket open after the original is gone.
    clone.send_to(b"still here", peer.local_addr().unwrap()).unwrap();
    let (n, _) = peer.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still here");
}

#[test]
fn a_lone_member_or_a_group_of_none() {
    let lone = UdpSocket::bind_group(0, 1).unwrap();
    assert_eq!(lone.len(), 1);
    assert_ne!(lone[0].local_port().unwrap(), 0);
    let e = UdpSocket::bind_group(0, 0).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}

const FLOWS: u16 = 64;
const PER_FLOW: u16 = 8;
const DST_PORT: u16 = 9999;

const TUN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const PEER_ADDR: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
/// The steering key the tests give, so they can predict each flow's queue.
const KEY: u32 = 0x5eed_0001;
const TUN_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
const PEER_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);

/// One test packet read from a queue.
#[derive(Debug, Clone, Copy)]
struct Seen {
    /// The UDP source port: one flow per port.
    flow: u16,
    seq: u16,
    /// What the steering program returns for it (with `KEY`).
    hash: u32,
    /// IPv4 with options (IHL > 5).
    options: bool,
}

/// A 2-queue TUN device `mq0` with 10.77.0.1/24 and fd77::1/64, up, in a fresh namespace.
fn two_queue_device(offload: bool) -> (Netns, Vec<Tun>) {
    let ns = Netns::new("vxwgmq");
    let name = "mq0";
    let queues = ns.run(|| Tun::create_queues(name, 2, offload)).unwrap();
    assert_eq!(queues.len(), 2);
    for q in &queues {
        assert_eq!(q.name(), name);
        assert_eq!(q.offload(), queues[0].offload(), "all queues alike");
        assert_eq!(q.offload() != Offload::None, offload, "a vnet header exactly when asked");
    }
    ns.ip(&format!("addr add {TUN_ADDR}/24 dev {name}"));
    ns.ip(&format!("addr add {TUN_ADDR6}/64 dev {name} nodad"));
    ns.ip(&format!("link set {name} up"));
    (ns, queues)
}

/// `n` UDP sockets on 10.77.0.1 in `ns`, one flow each towards the peer.
fn senders(ns: &Netns, n: u16) -> Vec<std::net::UdpSocket> {
    senders_from(ns, n, IpAddr::V4(TUN_ADDR))
}

fn senders_from(ns: &Netns, n: u16, addr: IpAddr) -> Vec<std::net::UdpSocket> {
    ns.run(|| (0..n).map(|_| std::net::UdpSocket::bind((addr, 0)).unwrap()).collect())
}

/// Has the IPv4 socket's packets carry 4 bytes of IP options (3 NOPs and an end of list), so
/// their IHL is 6 and the ports sit 4 bytes later.
fn with_ip_options(socket: &std::net::UdpSocket) {
    let options = [1u8, 1, 1, 0];
    // SAFETY: IP_OPTIONS reads `options.len()` bytes from the pointer, valid across the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_OPTIONS,
            options.as_ptr().cast(),
            options.len() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "IP_OPTIONS: {}", io::Error::last_os_error());
}

/// Reads every queue until `got` holds `want` test packets in all (or 5 s passed).
fn read_test_packets(queues: &[Tun], header: usize, got: &mut [Vec<Seen>], want: usize) {
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.iter().map(Vec::len).sum::<usize>() < want && Instant::now() < deadline {
        let mut idle = true;
        for (q, tun) in queues.iter().enumerate() {
            match tun.recv(&mut buf) {
                Ok(n) => {
                    idle = false;
                    if let Some(packet) = test_packet(&buf[..n], header) {
                        got[q].push(packet);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("queue {q}: {e}"),
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// How the flows of [`flows_through_two_queues`] are sent and taken.
#[derive(Debug, Clone, Copy)]
struct Run {
    offload: bool,
    /// Steering program attached ([`Tun::set_flow_steering`]).
    steered: bool,
    /// Over IPv6 instead of IPv4.
    ipv6: bool,
}

const PLAIN: Run = Run { offload: false, steered: false, ipv6: false };

/// UDP from `FLOWS` sockets (one flow each) towards the peer (10.77.0.2 or fd77::2), which the
/// kernel routes into a 2-queue device; over IPv4 every other flow carries IP options. Returns,
/// per queue, each test packet read.
fn flows_through_two_queues(run: Run) -> Vec<Vec<Seen>> {
    let (ns, queues) = two_queue_device(run.offload);
    if run.steered {
        queues[0].set_flow_steering_keyed(KEY).unwrap();
    }
    let (src, dst) = if run.ipv6 {
        (IpAddr::V6(TUN_ADDR6), SocketAddr::from((PEER_ADDR6, DST_PORT)))
    } else {
        (IpAddr::V4(TUN_ADDR), SocketAddr::from((PEER_ADDR, DST_PORT)))
    };
    let senders = senders_from(&ns, FLOWS, src);
    if !run.ipv6 {
        senders.iter().step_by(2).for_each(with_ip_options);
    }
    let header = if run.offload { VNET_HDR_LEN } else { 0 };
    let mut got: Vec<Vec<Seen>> = vec![Vec::new(); queues.len()];
    for seq in 0..PER_FLOW {
        for s in &senders {
            s.send_to(&seq.to_be_bytes(), dst).unwrap();
        }
        // Read each round before the next (a queue holds 500 packets by default).
        read_test_packets(&queues, header, &mut got, usize::from(seq + 1) * usize::from(FLOWS));
    }
    got
}

/// An IPv4/UDP packet from the peer's `DST_PORT` to `TUN_ADDR:port`, as a worker would write it.
fn reply_packet(port: u16, payload: &[u8]) -> Vec<u8> {
    udp4_packet((PEER_ADDR, DST_PORT), (TUN_ADDR, port), payload)
}

/// An IPv4/UDP packet without options.
fn udp4_packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), payload: &[u8]) -> Vec<u8> {
    let len = 20 + 8 + payload.len();
    let mut p = vec![0u8; len];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.0.octets());
    p[16..20].copy_from_slice(&dst.0.octets());
    let sum: u32 = p[..20].chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    p[10..12].copy_from_slice(&checksum.to_be_bytes());
    p[20..22].copy_from_slice(&src.1.to_be_bytes());
    p[22..24].copy_from_slice(&dst.1.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    // UDP checksum 0: none (allowed over IPv4).
    p[28..].copy_from_slice(payload);
    p
}

/// One of the test's UDP or TCP packets (IPv4 or IPv6) to `DST_PORT`, after `header` bytes of vnet
/// header (TCP ones with sequence 0); `None` for anything else the kernel sends (IPv6 router
/// solicitations, say).
fn test_packet(read: &[u8], header: usize) -> Option<Seen> {
    let ip = read.get(header..)?;
    let (protocol, udp_at) = match ip.first()? >> 4 {
        4 => (*ip.get(9)?, usize::from(ip[0] & 0x0f) * 4),
        6 => (*ip.get(6)?, 40),
        _ => return None,
    };
    let l4 = ip.get(udp_at..)?;
    let port = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
    let seq = match protocol {
        17 => port(8)?,
        6 => 0,
        _ => return None,
    };
    if port(2)? != DST_PORT {
        return None;
    }
    Some(Seen { flow: port(0)?, seq, hash: flow_hash(KEY, ip), options: ip[0] >> 4 == 4 && udp_at > 20 })
}

fn check_flows_kept_to_one_queue(got: &[Vec<Seen>]) {
    let mut queue_of: HashMap<u16, HashSet<usize>> = HashMap::new();
    for (q, packets) in got.iter().enumerate() {
        for p in packets {
            queue_of.entry(p.flow).or_default().insert(q);
        }
    }
    eprintln!("{FLOWS} flows over 2 queues: {:?} packets", got.iter().map(Vec::len).collect::<Vec<_>>());
    assert_eq!(got.iter().map(Vec::len).sum::<usize>(), usize::from(FLOWS * PER_FLOW), "every packet read");
    assert_eq!(queue_of.len(), usize::from(FLOWS), "every flow seen");
    for (flow, queues) in &queue_of {
        assert_eq!(queues.len(), 1, "flow from port {flow} came out of one queue, not {queues:?}");
    }
    for (q, packets) in got.iter().enumerate() {
        assert!(!packets.is_empty(), "queue {q} got some flows");
        // In order within each flow.
        let mut last: HashMap<u16, u16> = HashMap::new();
        for Seen { flow, seq, .. } in packets {
            if let Some(prev) = last.insert(*flow, *seq) {
                assert!(*seq > prev, "flow {flow}: {seq} after {prev}");
            }
        }
    }
}

#[test]
fn multi_queue_tun_spreads_flows_and_keeps_each_on_one_queue() {
    if !require(&["ip"]) {
        return;
    }
    check_flows_kept_to_one_queue(&flows_through_two_queues(PLAIN));
}

#[test]
fn multi_queue_tun_with_offload_spreads_flows_and_keeps_each_on_one_queue() {
    if !require(&["ip"]) {
        return;
    }
    check_flows_kept_to_one_queue(&flows_through_two_queues(Run { offload: true, ..PLAIN }));
}

/// Sends one packet of a flow into a 2-queue device, writes a reply for the flow on the queue it
/// did not come out of, then sends `PER_FLOW` more. Returns the queue the first packet came out
/// of, and where the later ones did.
fn reply_on_the_other_queue(steered: bool) -> (usize, Vec<Vec<Seen>>) {
    let (ns, queues) = two_queue_device(false);
    if steered {
        queues[1].set_flow_steering().unwrap();
    }
    let sender = senders(&ns, 1).pop().unwrap();
    sender.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let port = sender.local_addr().unwrap().port();
    let dst = SocketAddr::from((PEER_ADDR, DST_PORT));
    let mut got = vec![Vec::new(); 2];
    sender.send_to(&0u16.to_be_bytes(), dst).unwrap();
    read_test_packets(&queues, 0, &mut got, 1);
    let first = got.iter().position(|q| !q.is_empty()).expect("the first packet came out of a queue");
    let other = 1 - first;

    queues[other].send(&reply_packet(port, b"reply")).unwrap();
    let mut buf = [0u8; 64];
    let (n, from) = sender.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (&b"reply"[..], dst), "the reply reached the flow's socket");

    let mut after = vec![Vec::new(); 2];
    for seq in 1..=PER_FLOW {
        sender.send_to(&seq.to_be_bytes(), dst).unwrap();
    }
    read_test_packets(&queues, 0, &mut after, usize::from(PER_FLOW));
    eprintln!(
        "steered: {steered}; first packet on queue {first}, reply written on {other}, then {:?}",
        after.iter().map(Vec::len).collect::<Vec<_>>()
    );
    (first, after)
}

/// The kernel learns which queue a flow's packets come back from (a write on a queue records the
/// flow's symmetric hash against it) and sends the flow's next packets to that queue: a worker
/// that answers a flow gets the flow.
#[test]
fn a_flow_follows_the_queue_its_replies_were_written_on() {
    if !require(&["ip"]) {
        return;
    }
    let (first, after) = reply_on_the_other_queue(false);
    let other = 1 - first;
    assert_eq!(after[other].len(), usize::from(PER_FLOW), "the flow moved to queue {other}: {after:?}");
}

/// With the steering program (a random key here) the kernel learns nothing from writes: the flow
/// stays on the queue its first packet came out of (set through either queue: the program is the
/// device's).
#[test]
fn a_steered_flow_stays_on_its_queue_after_a_reply_on_the_other() {
    if !require(&["ip"]) {
        return;
    }
    let (first, after) = reply_on_the_other_queue(true);
    assert_eq!(after[first].len(), usize::from(PER_FLOW), "the flow stayed on queue {first}: {after:?}");
}

/// Every flow on exactly the queue `flow_hash(KEY, ..) % 2` says, in order, and both queues used.
fn check_steered(got: &[Vec<Seen>]) {
    check_flows_kept_to_one_queue(got);
    check_steered_each_on_its_queue(got);
}

fn check_steered_each_on_its_queue(got: &[Vec<Seen>]) {
    for (q, packets) in got.iter().enumerate() {
        for p in packets {
            assert_eq!(p.hash as usize % 2, q, "{p:?} came out of the queue its hash picks");
        }
    }
}

#[test]
fn steered_ipv4_flows_spread_and_each_takes_its_hash_queue() {
    if !require(&["ip"]) {
        return;
    }
    let got = flows_through_two_queues(Run { steered: true, ..PLAIN });
    let with_options = got.iter().flatten().filter(|p| p.options).count();
    assert_eq!(with_options, usize::from(FLOWS / 2 * PER_FLOW), "half the flows carry IP options");
    check_steered(&got);
}

#[test]
fn steered_ipv4_flows_with_offload_spread_and_each_takes_its_hash_queue() {
    if !require(&["ip"]) {
        return;
    }
    check_steered(&flows_through_two_queues(Run { offload: true, steered: true, ipv6: false }));
}

#[test]
fn steered_ipv6_flows_spread_and_each_takes_its_hash_queue() {
    if !require(&["ip"]) {
        return;
    }
    check_steered(&flows_through_two_queues(Run { steered: true, ipv6: true, ..PLAIN }));
}

/// Unsteered IPv6 flows too spread over both queues, one queue each, but by the kernel's own
/// (randomly keyed) hash: some disagree with `flow_hash % 2`, so the agreement the steered tests
/// check is the program's doing (64 flows agreeing by chance: 1 in 2^64).
#[test]
fn unsteered_ipv6_flows_spread_but_not_by_the_steering_hash() {
    if !require(&["ip"]) {
        return;
    }
    let got = flows_through_two_queues(Run { ipv6: true, ..PLAIN });
    check_flows_kept_to_one_queue(&got);
    let disagree =
        got.iter().enumerate().flat_map(|(q, ps)| ps.iter().filter(move |p| p.hash as usize % 2 != q)).count();
    assert!(disagree > 0, "the kernel's own choice is not flow_hash % 2");
}

/// TCP too: the SYNs of 16 IPv4 and 16 IPv6 connections (nobody answers them) each come out of
/// the queue their hash picks.
#[test]
fn steered_tcp_connections_take_their_hash_queue() {
    if !require(&["ip"]) {
        return;
    }
    let (ns, queues) = two_queue_device(false);
    queues[0].set_flow_steering_keyed(KEY).unwrap();
    let connecting: Vec<socket2::Socket> = ns.run(|| {
        let mut v = Vec::new();
        for (src, dst) in
            [(IpAddr::V4(TUN_ADDR), IpAddr::V4(PEER_ADDR)), (IpAddr::V6(TUN_ADDR6), IpAddr::V6(PEER_ADDR6))]
        {
            for _ in 0..16 {
                let s = socket2::Socket::new(
                    socket2::Domain::for_address(SocketAddr::new(src, 0)),
                    socket2::Type::STREAM,
                    None,
                )
                .unwrap();
                s.set_nonblocking(true).unwrap();
                s.bind(&SocketAddr::new(src, 0).into()).unwrap();
                let e = s.connect(&SocketAddr::new(dst, DST_PORT).into()).unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::EINPROGRESS), "{e}");
                v.push(s);
            }
        }
        v
    });
    let mut got = vec![Vec::new(); 2];
    read_test_packets(&queues, 0, &mut got, connecting.len());
    check_steered_each_on_its_queue(&got);
    let flows: HashSet<u16> = got.iter().flatten().map(|p| p.flow).collect();
    assert_eq!(flows.len(), connecting.len(), "a SYN from every connection: {got:?}");
    assert!(got.iter().all(|q| !q.is_empty()), "both queues used: {got:?}");
}

/// On a single-queue device the program attaches (the driver does not care how many queues
/// there are) and changes nothing: packets still come out of the one queue.
#[test]
fn steering_a_single_queue_device_attaches_and_changes_nothing() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgsq");
    let tun = ns.run(|| Tun::create("sq0")).unwrap();
    tun.set_flow_steering().unwrap();
    ns.ip(&format!("addr add {TUN_ADDR}/24 dev sq0"));
    ns.ip("link set sq0 up");
    let senders = senders(&ns, 4);
    for s in &senders {
        s.send_to(&7u16.to_be_bytes(), SocketAddr::from((PEER_ADDR, DST_PORT))).unwrap();
    }
    let mut got = vec![Vec::new()];
    read_test_packets(std::slice::from_ref(&tun), 0, &mut got, senders.len());
    assert_eq!(got[0].len(), senders.len(), "every packet read: {got:?}");
}

/// Whether `name` exists in `ns`.
fn link_exists(ns: &Netns, name: &str) -> bool {
    ns.ip("-o link show").lines().any(|l| l.split(':').nth(1).map(str::trim) == Some(name))
}

/// Waits up to 2 s for `name` to be gone from `ns`.
fn gone(ns: &Netns, name: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while link_exists(ns, name) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[test]
fn tun_queue_errors_leave_no_device_behind() {
    if !require(&["ip"]) {
        return;
    }
    let ns = Netns::new("vxwgmqe");
    let e = ns.run(|| Tun::create_queues("mqe0", 0, false)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    assert!(!link_exists(&ns, "mqe0"));

    // The kernel allows 256 queues: the 257th fails, and the 256 opened are closed with it.
    let e = ns.run(|| Tun::create_queues("mqe1", 257, true)).unwrap_err();
    assert!(e.to_string().contains("queue 256 of 257"), "the error names the queue: {e}");
    assert!(gone(&ns, "mqe1"), "the queues opened before were closed, taking the device");

    // A device opened single-queue takes no queue of a multi-queue one: queue 0 fails.
    let single = ns.run(|| Tun::create("mqe2")).unwrap();
    let e = ns.run(|| Tun::create_queues("mqe2", 2, false)).unwrap_err();
    assert!(e.to_string().contains("queue 0 of 2"), "{e}");
    drop(single);
    assert!(gone(&ns, "mqe2"));

    // The queues close with their last descriptor.
    let queues = ns.run(|| Tun::create_queues("mqe3", 3, false)).unwrap();
    assert!(link_exists(&ns, "mqe3"));
    drop(queues);
    assert!(gone(&ns, "mqe3"));
}

#[test]
fn pinned_threads_run_on_their_cpu() {
    let cpus = cpu::allowed_cpus().unwrap();
    assert!(!cpus.is_empty());
    assert!(cpus.windows(2).all(|w| w[0] < w[1]), "ascending: {cpus:?}");
    std::thread::scope(|s| {
        s.spawn(|| {
            for &c in &cpus {
                cpu::pin_current_thread(c).unwrap();
                // The pin moves the thread before the call returns.
                // SAFETY: sched_getcpu has no preconditions.
                let now = unsafe { libc::sched_getcpu() };
                assert_eq!(now, c as i32, "pinned to CPU {c}");
            }
        });
    });
    let e = cpu::pin_current_thread(usize::MAX).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
}
