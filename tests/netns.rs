//! Node-agent tests over real network namespaces (root only; CI runs as root).
//!
//! Every test builds its own namespaces with unique names, joined by a veth pair, and sends traffic
//! only to addresses inside them. Guards delete namespaces, kill daemons and remove UAPI sockets
//! on drop, so a failing or panicking test leaves nothing behind.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{ifname, keypair, require, sh, Netns, RemoveDir, NEXT};

/// Two namespaces joined by a veth pair: 10.201.0.1/24 <-> 10.201.0.2/24 (underlay).
fn underlay() -> (Netns, Netns) {
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (va, vb) = (format!("vxa{}{n}", std::process::id() % 10000), format!("vxb{}{n}", std::process::id() % 10000));
    sh(&format!("ip link add {va} netns {} type veth peer name {vb} netns {}", a.name, b.name));
    a.exec(&format!("ip addr add 10.201.0.1/24 dev {va} && ip link set {va} up"));
    b.exec(&format!("ip addr add 10.201.0.2/24 dev {vb} && ip link set {vb} up"));
    (a, b)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Vxwg,
    /// vxwg with two pinned packet workers, whatever the machine's core count.
    VxwgTwoWorkers,
    /// vxwg with the TUN offloads off (`VXWG_OFFLOAD=0`): one plain packet per read and write,
    /// as on a kernel that refuses them.
    VxwgNoOffload,
    /// vxwg with two unpinned workers that always help each other decrypt (`VXWG_ASSIST=on`).
    VxwgAssist,
    WireguardGo,
}

/// A running WireGuard daemon in a namespace; killed (and its socket removed) on drop.
struct Node<'a> {
    ns: &'a Netns,
    ifname: String,
    child: Option<Child>,
    private: String,
    public: String,
    overlay: String,
}

impl<'a> Node<'a> {
    fn start(ns: &'a Netns, which: Impl, overlay: &str) -> Node<'a> {
        let (private, public) = keypair();
        let mut node = Node { ns, ifname: ifname(), child: None, private, public, overlay: overlay.to_string() };
        node.launch(which);
        node
    }

    fn launch(&mut self, which: Impl) {
        let cmd = match which {
            Impl::Vxwg => format!("{} up --foreground {}", env!("CARGO_BIN_EXE_vxwg"), self.ifname),
            Impl::VxwgTwoWorkers => {
                format!("env VXWG_WORKERS=2 VXWG_PIN=1 {} up --foreground {}", env!("CARGO_BIN_EXE_vxwg"), self.ifname)
            }
            Impl::VxwgNoOffload => {
                format!("env VXWG_OFFLOAD=0 {} up --foreground {}", env!("CARGO_BIN_EXE_vxwg"), self.ifname)
            }
            Impl::VxwgAssist => format!(
                "env VXWG_WORKERS=2 VXWG_ASSIST=on {} up --foreground {}",
                env!("CARGO_BIN_EXE_vxwg"),
                self.ifname
            ),
            Impl::WireguardGo => format!("env WG_PROCESS_FOREGROUND=1 wireguard-go {}", self.ifname),
        };
        self.child = Some(self.ns.spawn(&cmd));
        let sock = format!("/var/run/wireguard/{}.sock", self.ifname);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::path::Path::new(&sock).exists() {
            assert!(Instant::now() < deadline, "{which:?} did not create {sock}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let keyfile = format!("/tmp/{}.key", self.ifname);
        std::fs::File::create(&keyfile).unwrap().write_all(self.private.as_bytes()).unwrap();
        self.ns.exec(&format!("wg set {} private-key {keyfile} listen-port 51820", self.ifname));
        let _ = std::fs::remove_file(&keyfile);
        self.ns.exec(&format!(
            "ip addr add {}/24 dev {i} && ip link set {i} mtu 1420 up",
            self.overlay,
            i = self.ifname
        ));
    }

    fn add_peer(&self, peer: &Node, endpoint: &str) {
        self.ns.exec(&format!(
            "wg set {} peer {} allowed-ips {}/32 endpoint {endpoint}:51820",
            self.ifname, peer.public, peer.overlay
        ));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", self.ifname));
    }
}

impl Drop for Node<'_> {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Two nodes of `which` on the two ends of [`underlay`], each the other's peer (overlay
/// addresses `overlays`, /24).
fn peered<'a>(na: &'a Netns, nb: &'a Netns, which: (Impl, Impl), overlays: (&str, &str)) -> (Node<'a>, Node<'a>) {
    let a = Node::start(na, which.0, overlays.0);
    let b = Node::start(nb, which.1, overlays.1);
    a.add_peer(&b, "10.201.0.2");
    b.add_peer(&a, "10.201.0.1");
    (a, b)
}

#[track_caller]
fn ping(ns: &Netns, dst: &str) {
    let out = ns.try_exec(&format!("ping -c 3 -i 0.2 -W 3 {dst}"));
    assert!(out.status.success(), "ping {dst} failed: {}", String::from_utf8_lossy(&out.stdout));
}

/// Sends `mb` MiB of pseudo-random bytes over TCP from `from` to `to_ip` and checks that the
/// SHA-256 on the far side matches.
#[track_caller]
fn tcp_transfer(from: &Netns, to: &Netns, to_ip: &str, mb: usize) {
    let port = 5201 + (NEXT.fetch_add(1, Ordering::Relaxed) % 1000) as u16;
    let server = to.spawn(&format!(
        "python3 -c 'import socket,hashlib\ns=socket.socket(socket.AF_INET6 if \":\" in \"{to_ip}\" else socket.AF_INET)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind((\"{to_ip}\",{port}))\ns.listen(1)\nc,_=s.accept()\nh=hashlib.sha256()\nn=0\nwhile True:\n  d=c.recv(1<<16)\n  if not d: break\n  h.update(d); n+=len(d)\nprint(n,h.hexdigest())'"
    ));
    std::thread::sleep(Duration::from_millis(300));
    let client = from.exec(&format!(
        "python3 -c 'import socket,hashlib,random\nr=random.Random(7)\nh=hashlib.sha256()\nc=socket.create_connection((\"{to_ip}\",{port}),timeout=30)\nn=0\nfor _ in range({mb}*16):\n  d=r.randbytes(65536)\n  h.update(d); c.sendall(d); n+=len(d)\nc.close()\nprint(n,h.hexdigest())'"
    ));
    let out = server.wait_with_output().unwrap();
    let server_line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "receiver failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server_line, client.trim(), "bytes and SHA-256 on both sides");
    assert!(server_line.starts_with(&format!("{} ", mb << 20)));
}

fn two_nodes(a_impl: Impl, b_impl: Impl) {
    if !require(&["ip", "wg", "ping", "python3"])
        || (a_impl == Impl::WireguardGo || b_impl == Impl::WireguardGo) && !require(&["wireguard-go"])
    {
        return;
    }
    let (na, nb) = underlay();
    let (a, b) = peered(&na, &nb, (a_impl, b_impl), ("100.64.7.1", "100.64.7.2"));
    ping(&na, "100.64.7.2");
    ping(&nb, "100.64.7.1");
    tcp_transfer(&na, &nb, "100.64.7.2", 100);
    tcp_transfer(&nb, &na, "100.64.7.1", 20);
    // vxwg's side of the transfers went through the offloads: the kernel handed over TCP
    // super-packets that vxwg cut, and vxwg merged received segments into fewer TUN writes.
    if a_impl == Impl::Vxwg {
        let offload = &status_json(&na, &a.ifname)["offload"]["tun"];
        assert_eq!(offload["mode"].as_str(), Some("tso+uso"), "{offload}");
        assert!(offload["super_packets"].as_u64().unwrap() > 100, "{offload}");
        assert_eq!(offload["split_errors"].as_u64(), Some(0), "{offload}");
    }
    if b_impl == Impl::Vxwg {
        let status = status_json(&nb, &b.ifname);
        // The receiving socket's kernel drops are reported (SO_RXQ_OVFL); with 8 MB buffers,
        // usually none.
        assert!(status["drops"]["socket_receive_buffer"].is_u64(), "{status}");
        // And what its own socket did not take on the way out.
        assert!(status["drops"]["socket_send"].is_u64(), "{status}");
        let offload = &status["offload"]["tun"];
        assert!(offload["merged_writes"].as_u64().unwrap() > 100, "{offload}");
        assert_eq!(offload["write_errors"].as_u64(), Some(0), "{offload}");
    }
}

#[test]
fn two_vxwg_nodes_ping_and_transfer() {
    two_nodes(Impl::Vxwg, Impl::Vxwg);
}

/// With the tunnel's MTU raised to 8920 (a jumbo underlay), packets and TSO segments are larger
/// than vxwg's TUN slots start out (1500 bytes of packet): a ping of 8028 bytes that must not be
/// fragmented, and TCP whose super-packets are cut into 8.9 KB segments, both ways. The slots
/// grow once and every byte arrives; nothing is counted as a packet that could not be cut.
#[test]
fn jumbo_packets_and_segments_larger_than_a_slot_go_through() {
    jumbo_case(Impl::Vxwg);
}

/// The same with node A's offloads off: its reads are plain packets, up to 8920 bytes each.
#[test]
fn jumbo_packets_go_through_a_node_without_offloads() {
    jumbo_case(Impl::VxwgNoOffload);
}

fn jumbo_case(a_impl: Impl) {
    if !require(&["ip", "wg", "ping", "python3"]) {
        return;
    }
    let (na, nb) = underlay();
    for ns in [&na, &nb] {
        ns.exec("ip link set $(ip -o link show type veth | cut -d: -f2 | cut -d@ -f1) mtu 9100");
    }
    let (a, b) = peered(&na, &nb, (a_impl, Impl::Vxwg), ("100.64.9.1", "100.64.9.2"));
    ping(&na, "100.64.9.2");
    na.exec(&format!("ip link set {} mtu 8920", a.ifname));
    nb.exec(&format!("ip link set {} mtu 8920", b.ifname));
    for (ns, dst) in [(&na, "100.64.9.2"), (&nb, "100.64.9.1")] {
        let out = ns.try_exec(&format!("ping -c 3 -i 0.2 -W 3 -M do -s 8000 {dst}"));
        assert!(out.status.success(), "jumbo ping to {dst} failed: {}", String::from_utf8_lossy(&out.stdout));
    }
    tcp_transfer(&na, &nb, "100.64.9.2", 20);
    tcp_transfer(&nb, &na, "100.64.9.1", 20);
    for (ns, node, which) in [(&na, &a, a_impl), (&nb, &b, Impl::Vxwg)] {
        let offload = &status_json(ns, &node.ifname)["offload"]["tun"];
        if which == Impl::VxwgNoOffload {
            assert_eq!(offload["mode"].as_str(), Some("off"), "{offload}");
        } else {
            assert!(offload["super_packets"].as_u64().unwrap() > 10, "{offload}");
        }
        assert_eq!(offload["split_errors"].as_u64(), Some(0), "{offload}");
    }
}

/// Per worker of a vxwg node: (datagrams encrypted, packets decrypted).
fn worker_packets(ns: &Netns, ifname: &str) -> Vec<(u64, u64)> {
    let status = status_json(ns, ifname);
    let workers = status["workers"].as_array().unwrap_or_else(|| panic!("no workers in {status}"));
    workers.iter().map(|w| (w["packets_out"].as_u64().unwrap(), w["packets_in"].as_u64().unwrap())).collect()
}

/// Sends numbered UDP datagrams on `flows` flows (distinct source ports) from `from` to
/// `to_ip`; returns what the receiver counted: (received, per-flow order inversions).
fn numbered_udp_flows(from: &Netns, to: &Netns, to_ip: &str, flows: usize, per_flow: usize) -> (u64, u64) {
    let port = 6201 + (NEXT.fetch_add(1, Ordering::Relaxed) % 1000) as u16;
    let receiver = to.spawn(&format!(
        "python3 -c 'import socket,struct\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<24)\ns.bind((\"{to_ip}\",{port}))\ns.settimeout(3)\nlast={{}}\nn=inv=0\ntry:\n  while True:\n    d,a=s.recvfrom(2048)\n    q=struct.unpack(\"!Q\",d[:8])[0]\n    if q<=last.get(a[1],-1): inv+=1\n    last[a[1]]=q\n    n+=1\nexcept socket.timeout: pass\nprint(n,inv)'"
    ));
    std::thread::sleep(Duration::from_millis(300));
    // Paced in bursts so that loss stays rare: the check is order, not capacity.
    from.exec(&format!(
        "python3 -c 'import socket,struct,time\nss=[socket.socket(socket.AF_INET,socket.SOCK_DGRAM) for _ in range({flows})]\nfor q in range({per_flow}):\n  for s in ss: s.sendto(struct.pack(\"!Q\",q)+bytes(200),(\"{to_ip}\",{port}))\n  if q%20==19: time.sleep(0.002)'"
    ));
    let out = receiver.wait_with_output().unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut it = line.split(' ').map(|x| x.parse::<u64>().unwrap_or_else(|_| panic!("receiver said {line:?}")));
    (it.next().unwrap(), it.next().unwrap())
}

/// Two packet workers per node: flows spread over both (the TUN queues are steered by flow
/// hash, not by where replies were written), every TCP transfer arrives intact, and no flow is
/// ever reordered, although the workers encrypt in parallel.
#[test]
fn two_workers_share_the_flows_and_never_reorder_one() {
    if !require(&["ip", "wg", "ping", "python3"]) {
        return;
    }
    let (na, nb) = underlay();
    let (a, _b) = peered(&na, &nb, (Impl::VxwgTwoWorkers, Impl::VxwgTwoWorkers), ("100.64.7.1", "100.64.7.2"));
    ping(&na, "100.64.7.2");
    assert_eq!(worker_packets(&na, &a.ifname).len(), 2);

    // 8 TCP flows at once, each checked end to end.
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| tcp_transfer(&na, &nb, "100.64.7.2", 8));
        }
    });
    let sent = worker_packets(&na, &a.ifname);
    assert!(sent.iter().all(|&(out, _)| out > 1000), "A's workers (out, in): {sent:?}");

    // 32 UDP flows of numbered datagrams: gaps (loss) are possible, inversions must not be.
    let before = worker_packets(&na, &a.ifname);
    let (received, inversions) = numbered_udp_flows(&na, &nb, "100.64.7.2", 32, 500);
    let after = worker_packets(&na, &a.ifname);
    assert!(received >= 32 * 500 * 9 / 10, "received only {received} of {}", 32 * 500);
    assert_eq!(inversions, 0, "datagrams of one flow arrived out of order");
    let moved: Vec<u64> = after.iter().zip(&before).map(|(x, y)| x.0 - y.0).collect();
    assert!(moved.iter().all(|&m| m > 1000), "UDP datagrams encrypted per worker: {moved:?}");
}

/// All of one peer's datagrams reach one worker of the receiver (its socket of the group). With
/// `VXWG_ASSIST=on` the other worker decrypts part of them: TCP transfers still arrive intact,
/// no UDP flow is reordered, and the status shows datagrams decrypted by the worker that did not
/// receive them, as many as the receiving worker counts as opened by others.
#[test]
fn an_idle_worker_helps_decrypt_one_peers_traffic_and_nothing_is_reordered() {
    if !require(&["ip", "wg", "ping", "python3"]) {
        return;
    }
    let (na, nb) = underlay();
    let (_a, b) = peered(&na, &nb, (Impl::Vxwg, Impl::VxwgAssist), ("100.64.21.1", "100.64.21.2"));
    ping(&na, "100.64.21.2");
    tcp_transfer(&na, &nb, "100.64.21.2", 100);
    let (received, inversions) = numbered_udp_flows(&na, &nb, "100.64.21.2", 8, 2000);
    assert!(received >= 8 * 2000 * 9 / 10, "received only {received} of {}", 8 * 2000);
    assert_eq!(inversions, 0, "datagrams of one flow arrived out of order");
    tcp_transfer(&na, &nb, "100.64.21.2", 50);
    let status = status_json(&nb, &b.ifname);
    let workers = status["workers"].as_array().unwrap();
    let count = |key: &str| workers.iter().map(|w| w[key].as_u64().unwrap()).collect::<Vec<_>>();
    let (for_others, by_others, packets_in) =
        (count("packets_opened_for_others"), count("packets_opened_by_others"), count("packets_in"));
    eprintln!("decrypted for others {for_others:?}, by others {by_others:?}, delivered {packets_in:?}");
    assert!(for_others.iter().sum::<u64>() > 0, "no worker helped: {workers:?}");
    assert_eq!(for_others.iter().sum::<u64>(), by_others.iter().sum::<u64>(), "helped and helped-by agree");
    // The peer's datagrams all arrive at one worker, which alone delivers them.
    assert!(packets_in.contains(&0), "one worker received everything: {packets_in:?}");
}

/// Threads of a running process.
fn threads_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().count()
}

/// UDP sockets listening on `port` in a namespace.
fn udp_listeners(ns: &Netns, port: u16) -> usize {
    ns.exec(&format!("ss -Hulnp sport = :{port}")).lines().filter(|l| !l.trim().is_empty()).count()
}

/// `wg set listen-port` on a running daemon stops its workers, gives each a socket of the new
/// port's group and starts them again: traffic flows on the new port, the old one is closed,
/// and no thread is left behind, however often it happens.
#[test]
fn listen_port_changes_move_every_worker_and_leak_no_thread() {
    if !require(&["ip", "wg", "ping", "python3", "ss"]) {
        return;
    }
    let (na, nb) = underlay();
    let (a, b) = peered(&na, &nb, (Impl::VxwgTwoWorkers, Impl::VxwgTwoWorkers), ("100.64.7.1", "100.64.7.2"));
    ping(&na, "100.64.7.2");
    let pid = a.child.as_ref().unwrap().id();
    let threads = threads_of(pid);
    assert_eq!(udp_listeners(&na, 51820), 2, "one socket per worker");
    for port in [51901u16, 51902, 51903] {
        na.exec(&format!("wg set {} listen-port {port}", a.ifname));
        nb.exec(&format!("wg set {} peer {} endpoint 10.201.0.1:{port}", b.ifname, a.public));
        ping(&nb, "100.64.7.1");
        ping(&na, "100.64.7.2");
        assert_eq!(udp_listeners(&na, port), 2, "both workers on port {port}");
        assert_eq!(udp_listeners(&na, port - 1), 0, "the old port is closed");
        assert_eq!(status_json(&na, &a.ifname)["listen_port"].as_u64(), Some(u64::from(port)));
        assert_eq!(threads_of(pid), threads, "thread count after moving to port {port}");
    }
    tcp_transfer(&na, &nb, "100.64.7.2", 8);
    tcp_transfer(&nb, &na, "100.64.7.1", 8);
}

/// Resumes a stopped process on drop, so that a failed assertion cannot leave it frozen.
struct Continue(u32);

impl Drop for Continue {
    fn drop(&mut self) {
        let _ = sh(&format!("kill -CONT {}", self.0));
    }
}

/// The kernel's own count of datagrams dropped by the UDP sockets on `port` in `ns` (`ss -m`,
/// `d`), all of them together.
fn kernel_socket_drops(ns: &Netns, port: u16) -> u64 {
    let out = ns.exec(&format!("ss -Huamn sport = :{port}"));
    out.split(|c: char| c == ',' || c == ')' || c.is_whitespace())
        .filter_map(|field| field.strip_prefix('d')?.parse::<u64>().ok())
        .sum()
}

/// `vxwg status`'s count of datagrams lost to a full socket receive buffer.
fn receive_buffer_drops(ns: &Netns, ifname: &str) -> u64 {
    status_json(ns, ifname)["drops"]["socket_receive_buffer"].as_u64().unwrap()
}

/// Freezes the daemon, floods its port from `from` with more one-byte datagrams than its
/// receive buffer holds, resumes it, and waits until its status counts the drops; returns them.
/// The kernel reports a socket's drop count with the next datagram it queues, so one more is
/// sent every 50 ms until the count shows.
fn overflow_receive_buffer(node: &Node, from: &Netns, dst: &str, port: u16, before: u64) -> u64 {
    let pid = node.child.as_ref().unwrap().id();
    let send = |count: u32| {
        from.exec(&format!(
            "python3 -c \"import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for _ in range({count}): s.sendto(b'x', ('{dst}', {port}))\""
        ))
    };
    {
        sh(&format!("kill -STOP {pid}"));
        let _resume = Continue(pid);
        send(60_000);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        send(1);
        let drops = receive_buffer_drops(node.ns, &node.ifname);
        if drops > before {
            return drops;
        }
        assert!(Instant::now() < deadline, "no receive-buffer drop counted after the flood (still {drops})");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn receive_buffer_drops_survive_a_listen_port_change() {
    if !require(&["ip", "wg", "ping", "python3"]) {
        return;
    }
    let (na, nb) = underlay();
    let (a, _b) = peered(&na, &nb, (Impl::VxwgTwoWorkers, Impl::Vxwg), ("100.64.9.1", "100.64.9.2"));
    ping(&na, "100.64.9.2");
    let first = overflow_receive_buffer(&a, &nb, "10.201.0.1", 51820, 0);
    assert_eq!(first, kernel_socket_drops(&na, 51820), "vxwg counts what the kernel dropped");
    na.exec(&format!("wg set {} listen-port 51921", a.ifname));
    assert_eq!(status_json(&na, &a.ifname)["listen_port"].as_u64(), Some(51921));
    // The drops of the sockets given up are still counted: a counter never goes back.
    let second = overflow_receive_buffer(&a, &nb, "10.201.0.1", 51921, first);
    let on_new = kernel_socket_drops(&na, 51921);
    assert!(on_new > 0, "the second flood overflowed the new sockets");
    assert_eq!(second, first + on_new, "the old sockets' drops ({first}) plus the new ones' ({on_new})");
}

/// Each worker thread's time on a CPU and waiting for one, in seconds, as the kernel accounts
/// it (`/proc/PID/task/TID/schedstat`), by worker index.
fn kernel_worker_cpu(pid: u32) -> Vec<(usize, f64, f64)> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let Some(index) = comm.trim().strip_prefix("vxwg-worker-").and_then(|i| i.parse().ok()) else { continue };
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap();
        let ns: Vec<f64> = stat.split_whitespace().take(2).map(|n| n.parse::<f64>().unwrap() / 1e9).collect();
        found.push((index, ns[0], ns[1]));
    }
    found.sort_by_key(|w| w.0);
    found
}

/// `vxwg status`'s CPU time of each worker: (seconds running, seconds waiting for a CPU).
fn status_worker_cpu(ns: &Netns, ifname: &str) -> Vec<(f64, f64)> {
    let v = status_json(ns, ifname);
    let workers = v["workers"].as_array().unwrap().iter();
    workers.map(|w| (w["cpu_seconds"].as_f64().unwrap(), w["cpu_wait_seconds"].as_f64().unwrap())).collect()
}

#[test]
fn worker_cpu_time_matches_the_kernels_and_never_goes_back() {
    if !require(&["ip", "wg", "ping", "python3"]) {
        return;
    }
    let (na, nb) = underlay();
    let (a, b) = peered(&na, &nb, (Impl::VxwgTwoWorkers, Impl::Vxwg), ("100.64.19.1", "100.64.19.2"));
    tcp_transfer(&na, &nb, "100.64.19.2", 16);
    let pid = a.child.as_ref().unwrap().id();
    // The daemon is idle now, so its threads' times hold still between the two reads.
    let reported = status_worker_cpu(&na, &a.ifname);
    let kernel = kernel_worker_cpu(pid);
    assert_eq!(kernel.len(), 2, "two worker threads: {kernel:?}");
    for ((index, ran, waited), (r_ran, r_waited)) in kernel.iter().zip(&reported) {
        assert!((ran - r_ran).abs() < 0.02, "worker {index}: kernel {ran} s on a CPU, status {r_ran}");
        assert!((waited - r_waited).abs() < 0.02, "worker {index}: kernel {waited} s waiting, status {r_waited}");
    }
    let busiest = reported.iter().map(|w| w.0).fold(0.0, f64::max);
    assert!(busiest >= 0.02, "16 MiB through the tunnel took a worker measurable time: {reported:?}");
    // A listen-port change restarts the worker threads: their earlier time still counts.
    na.exec(&format!("wg set {} listen-port 51941", a.ifname));
    nb.exec(&format!("wg set {} peer {} endpoint 10.201.0.1:51941", b.ifname, a.public));
    ping(&nb, "100.64.19.1");
    let after = status_worker_cpu(&na, &a.ifname);
    for (i, (before, now)) in reported.iter().zip(&after).enumerate() {
        assert!(now.0 >= before.0 && now.1 >= before.1, "worker {i}: {before:?} before the restart, {now:?} after");
    }
    let restarted = kernel_worker_cpu(pid);
    let fresh = restarted.iter().map(|w| w.1).fold(0.0, f64::max);
    assert!(fresh < busiest, "the new threads started from nothing ({restarted:?}), so the count carried over");
}

#[test]
fn vxwg_initiates_to_wireguard_go() {
    two_nodes(Impl::Vxwg, Impl::WireguardGo);
}

#[test]
fn wireguard_go_initiates_to_vxwg() {
    two_nodes(Impl::WireguardGo, Impl::Vxwg);
}

#[test]
fn wg_show_set_and_remove_against_vxwg() {
    if !require(&["ip", "wg", "ping"]) {
        return;
    }
    let (na, nb) = underlay();
    let (a, b) = peered(&na, &nb, (Impl::Vxwg, Impl::Vxwg), ("100.64.8.1", "100.64.8.2"));
    ping(&na, "100.64.8.2");

    let dump = na.exec(&format!("wg show {} dump", a.ifname));
    let lines: Vec<&str> = dump.lines().collect();
    assert_eq!(lines.len(), 2, "interface line and one peer: {dump}");
    let iface: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(iface[0], a.private);
    assert_eq!(iface[1], a.public);
    assert_eq!(iface[2], "51820");
    let peer: Vec<&str> = lines[1].split('\t').collect();
    assert_eq!(peer[0], b.public);
    assert_eq!(peer[2], "10.201.0.2:51820");
    assert_eq!(peer[3], "100.64.8.2/32");
    let handshake: u64 = peer[4].parse().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!(handshake > 0 && now.abs_diff(handshake) < 60, "recent handshake: {handshake} vs {now}");
    let (rx1, tx1): (u64, u64) = (peer[5].parse().unwrap(), peer[6].parse().unwrap());
    assert!(rx1 > 0 && tx1 > 0);
    ping(&na, "100.64.8.2");
    let peer2 = na.exec(&format!("wg show {} transfer", a.ifname));
    let counters: Vec<u64> = peer2.split_whitespace().skip(1).map(|x| x.parse().unwrap()).collect();
    assert!(counters[0] > rx1 && counters[1] > tx1, "counters move: {peer2}");

    let conf = na.exec(&format!("wg showconf {}", a.ifname));
    assert!(conf.contains(&format!("PrivateKey = {}", a.private)), "{conf}");
    assert!(conf.contains(&format!("PublicKey = {}", b.public)), "{conf}");
    assert!(conf.contains("AllowedIPs = 100.64.8.2/32"), "{conf}");
    assert!(conf.contains("Endpoint = 10.201.0.2:51820"), "{conf}");

    na.exec(&format!("wg set {} peer {} remove", a.ifname, b.public));
    assert_eq!(na.exec(&format!("wg show {} peers", a.ifname)).trim(), "");
    let out = na.try_exec("ping -c 2 -i 0.2 -W 1 100.64.8.2");
    assert!(!out.status.success(), "traffic must stop once the peer is removed");
}

#[test]
fn restarted_node_recovers_without_manual_action_beyond_its_config() {
    if !require(&["ip", "wg", "ping"]) {
        return;
    }
    let (na, nb) = underlay();
    let (a, mut b) = peered(&na, &nb, (Impl::Vxwg, Impl::Vxwg), ("100.64.9.1", "100.64.9.2"));
    ping(&na, "100.64.9.2");
    b.kill();
    b.launch(Impl::Vxwg);
    b.add_peer(&a, "10.201.0.1");
    // A still holds the old session; its packets are dropped by the new B until A re-handshakes
    // (new-handshake timer, 15 s at most) — or B's first packet starts one right away.
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        if na.try_exec("ping -c 1 -W 1 100.64.9.2").status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "traffic did not resume after the restart");
    }
    ping(&nb, "100.64.9.1");
}

#[test]
fn bad_uapi_input_is_refused_and_changes_nothing() {
    if !require(&["ip", "wg"]) {
        return;
    }
    let (na, _nb) = underlay();
    let a = Node::start(&na, Impl::Vxwg, "100.64.10.1");
    let before = na.exec(&format!("wg showconf {}", a.ifname));
    let sock = format!("/var/run/wireguard/{}.sock", a.ifname);
    for (request, errno) in [
        ("set=1\nlisten_port=99999\n\n", "errno=-22"),
        ("set=1\npublic_key=zz\n\n", "errno=-22"),
        ("set=1\nbogus_key=1\n\n", "errno=-"),
        (&format!("set=1\nlisten_port=5555\npublic_key={}\nallowed_ip=10.0.0.0/99\n\n", "ab".repeat(32)), "errno=-22"),
    ] {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut s, &mut reply).unwrap();
        assert!(reply.starts_with(errno) && !reply.starts_with("errno=0"), "{request:?} -> {reply:?}");
    }
    let after = na.exec(&format!("wg showconf {}", a.ifname));
    assert_eq!(before, after, "a refused request changes nothing (not even the listen port)");
}

/// Waits for a daemon to exit by itself; fails after `secs`.
#[track_caller]
fn exits_within(node: &mut Node, secs: u64) -> std::process::ExitStatus {
    let child = node.child.as_mut().expect("running");
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "daemon still running after {secs} s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn daemon_exits_cleanly_on_sigterm_tun_deletion_and_socket_removal() {
    if !require(&["ip", "wg"]) {
        return;
    }
    let (na, _nb) = underlay();

    // SIGTERM: clean exit, socket removed, interface gone.
    let mut a = Node::start(&na, Impl::Vxwg, "100.64.11.1");
    let pid = a.child.as_ref().unwrap().id();
    sh(&format!("kill -TERM {pid}"));
    assert!(exits_within(&mut a, 5).success(), "clean exit on SIGTERM");
    assert!(!std::path::Path::new(&format!("/var/run/wireguard/{}.sock", a.ifname)).exists());
    assert!(!na.try_exec(&format!("ip link show {}", a.ifname)).status.success(), "TUN device removed");

    // Interface deleted under the daemon.
    let mut b = Node::start(&na, Impl::Vxwg, "100.64.11.2");
    na.exec(&format!("ip link del {}", b.ifname));
    assert!(exits_within(&mut b, 5).success(), "clean exit when the TUN device is deleted");
    assert!(!std::path::Path::new(&format!("/var/run/wireguard/{}.sock", b.ifname)).exists());

    // Socket file removed.
    let mut c = Node::start(&na, Impl::Vxwg, "100.64.11.3");
    std::fs::remove_file(format!("/var/run/wireguard/{}.sock", c.ifname)).unwrap();
    assert!(exits_within(&mut c, 5).success(), "clean exit when the UAPI socket is removed");
    assert!(!na.try_exec(&format!("ip link show {}", c.ifname)).status.success());
}

#[test]
fn status_and_ping_report_the_tunnel() {
    if !require(&["ip", "wg"]) {
        return;
    }
    let (na, nb) = underlay();
    let (a, b) = peered(&na, &nb, (Impl::Vxwg, Impl::Vxwg), ("100.64.12.1", "100.64.12.2"));
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let out = na.exec(&format!("{vxwg} ping -c 3 {} 100.64.12.2", a.ifname));
    assert!(out.contains("3 sent, 3 received"), "{out}");

    // Something the far side must drop: a packet for an address no peer owns.
    let _ = na.try_exec("ping -c 1 -W 1 100.64.12.77");
    let json = na.exec(&format!("{vxwg} status --json {}", a.ifname));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["public_key"].as_str(), Some(a.public.as_str()));
    assert_eq!(v["peers"][0]["public_key"].as_str(), Some(b.public.as_str()));
    assert_eq!(v["peers"][0]["endpoint"].as_str(), Some("10.201.0.2:51820"));
    assert_eq!(v["peers"][0]["allowed_ips"][0].as_str(), Some("100.64.12.2/32"));
    assert!(v["peers"][0]["latest_handshake"].as_u64().is_some());
    assert!(v["peers"][0]["rx_bytes"].as_u64().unwrap() > 0);
    assert!(v["drops"]["no_route"].as_u64().unwrap() >= 1, "{json}");

    let text = na.exec(&format!("{vxwg} status {}", a.ifname));
    assert!(text.contains(&format!("peer: {}", b.public)) && text.contains("latest handshake:"), "{text}");
    assert!(text.contains("no_route="), "drops by reason: {text}");

    // Not our daemon: a clear error, not a hang.
    let out = na.try_exec(&format!("{vxwg} status nosuchif0"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no vxwg daemon serves nosuchif0"));
}

/// Writes a node's TOML config and key into a fresh directory under /tmp.
fn config_dir(private: &str, body: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("vxwg-cfg-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("private.key"), private).unwrap();
    std::fs::write(dir.join("node.toml"), format!("private_key_file = \"private.key\"\n{body}")).unwrap();
    dir
}

#[test]
fn up_with_config_sets_up_routes_and_removes_them_on_exit() {
    if !require(&["ip", "wg", "ping"]) {
        return;
    }
    let (na, nb) = underlay();
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let keys: Vec<(String, String)> = (0..2)
        .map(|_| {
            let private = sh(&format!("{vxwg} genkey")).trim().to_string();
            let public = sh(&format!("echo {private} | {vxwg} pubkey")).trim().to_string();
            (private, public)
        })
        .collect();
    // Each node also advertises a pod CIDR behind it (inside the test namespaces only).
    let a_dir = config_dir(
        &keys[0].0,
        &format!(
            "listen_port = 41641\naddresses = [\"100.64.13.1/32\"]\nmtu = 1380\n[[peer]]\npublic_key = \"{}\"\nendpoint = \"10.201.0.2:41641\"\nallowed_ips = [\"100.64.13.2/32\", \"10.42.2.0/24\"]\n",
            keys[1].1
        ),
    );
    let b_dir = config_dir(
        &keys[1].0,
        &format!(
            "listen_port = 41641\naddresses = [\"100.64.13.2/32\", \"10.42.2.1/24\"]\n[[peer]]\npublic_key = \"{}\"\nendpoint = \"10.201.0.1:41641\"\nallowed_ips = [\"100.64.13.1/32\"]\n",
            keys[0].1
        ),
    );
    let (ia, ib) = (ifname(), ifname());
    let mut a = Node {
        ns: &na,
        ifname: ia.clone(),
        child: None,
        private: keys[0].0.clone(),
        public: keys[0].1.clone(),
        overlay: String::new(),
    };
    let mut b = Node {
        ns: &nb,
        ifname: ib.clone(),
        child: None,
        private: keys[1].0.clone(),
        public: keys[1].1.clone(),
        overlay: String::new(),
    };
    a.child = Some(na.spawn(&format!("{vxwg} up --foreground --config {} {ia}", a_dir.join("node.toml").display())));
    b.child = Some(nb.spawn(&format!("{vxwg} up --foreground --config {} {ib}", b_dir.join("node.toml").display())));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(na.try_exec("ip -4 rule show pref 5270 | grep -q 'lookup 52'").status.success()
        && nb.try_exec("ip -4 rule show pref 5270 | grep -q 'lookup 52'").status.success())
    {
        assert!(Instant::now() < deadline, "rules did not appear");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Interface, routes and rules as configured, in vxwg's table and not the main one.
    let link = na.exec(&format!("ip link show {ia}"));
    assert!(link.contains("mtu 1380") && link.contains(",UP"), "{link}");
    assert!(na.exec(&format!("ip addr show {ia}")).contains("100.64.13.1/32"));
    let table = na.exec("ip route show table 52");
    assert!(table.contains("100.64.13.2 dev") && table.contains("10.42.2.0/24 dev"), "{table}");
    assert!(!na.exec("ip route show table main").contains("10.42.2.0/24"));
    let rules = na.exec("ip rule show");
    assert!(rules.contains("5270:\tnot from all fwmark 0x80000/0xff0000 lookup 52"), "{rules}");
    assert!(na.exec("ip -6 rule show").contains("lookup 52"));
    assert_eq!(na.exec(&format!("wg show {ia} fwmark")).trim(), "0x80000");

    // Traffic to the overlay address and into the pod CIDR behind B.
    ping(&na, "100.64.13.2");
    ping(&na, "10.42.2.1");

    // Clean exit removes everything it added.
    sh(&format!("kill -TERM {}", a.child.as_ref().unwrap().id()));
    assert!(exits_within(&mut a, 5).success());
    assert_eq!(na.exec("ip route show table 52").trim(), "", "routes removed");
    assert!(!na.exec("ip rule show").contains("lookup 52"), "rule removed");
    assert!(!na.exec("ip -6 rule show").contains("lookup 52"), "IPv6 rule removed");
    assert!(!na.try_exec(&format!("ip link show {ia}")).status.success(), "interface removed");
    b.kill();
    let _ = std::fs::remove_dir_all(a_dir);
    let _ = std::fs::remove_dir_all(b_dir);
}

#[test]
fn bad_config_is_refused_before_anything_is_created() {
    if !require(&["ip"]) {
        return;
    }
    let (na, _nb) = underlay();
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let private = sh(&format!("{vxwg} genkey")).trim().to_string();
    for (body, needle) in [
        ("addresses = [\"100.64.14.1/40\"]\n", "addresses[0]"),
        ("[[peer]]\npublic_key = \"oops\"\n", "peer[0].public_key"),
        ("mtu = 70000\n", "mtu = 70000"),
        (
            "addresses = [\"100.64.14.1/32\"]\n[vxlan]\nvtep_mac = \"02:00:00:00:00:01\"\npod_mtu = 9000\n",
            "vxlan.pod_mtu",
        ),
    ] {
        let dir = config_dir(&private, body);
        let name = ifname();
        let out = na.try_exec(&format!("{vxwg} up --foreground --config {} {name}", dir.join("node.toml").display()));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted {body:?}");
        assert!(err.contains(needle) && err.contains("node.toml"), "error names the file and field: {err}");
        assert!(!na.try_exec(&format!("ip link show {name}")).status.success(), "no interface left behind");
        assert!(!std::path::Path::new(&format!("/var/run/wireguard/{name}.sock")).exists(), "no socket left behind");
        // Either the table was never created, or it is empty.
        let table = na.try_exec("ip route show table 52");
        assert!(String::from_utf8_lossy(&table.stdout).trim().is_empty(), "no routes left behind");
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn ipv6_underlay_and_ipv6_inner_packets() {
    if !require(&["ip", "wg", "ping", "python3"]) {
        return;
    }
    let (na, nb) = underlay();
    // IPv6 on the veth (nodad: usable at once), and an IPv6 overlay address on each tunnel.
    for (ns, addr) in [(&na, "fd10:201::1"), (&nb, "fd10:201::2")] {
        let veth = ns.exec("ip -o link show type veth | cut -d: -f2 | cut -d@ -f1").trim().to_string();
        ns.exec(&format!("ip -6 addr add {addr}/64 dev {veth} nodad"));
    }
    let a = Node::start(&na, Impl::Vxwg, "100.64.15.1");
    let b = Node::start(&nb, Impl::WireguardGo, "100.64.15.2");
    na.exec(&format!("ip -6 addr add fd64::1/64 dev {} nodad", a.ifname));
    nb.exec(&format!("ip -6 addr add fd64::2/64 dev {} nodad", b.ifname));
    na.exec(&format!(
        "wg set {} peer {} allowed-ips 100.64.15.2/32,fd64::2/128 endpoint [fd10:201::2]:51820",
        a.ifname, b.public
    ));
    nb.exec(&format!(
        "wg set {} peer {} allowed-ips 100.64.15.1/32,fd64::1/128 endpoint [fd10:201::1]:51820",
        b.ifname, a.public
    ));
    ping(&na, "fd64::2");
    ping(&na, "100.64.15.2");
    let dump = na.exec(&format!("wg show {} endpoints", a.ifname));
    assert!(dump.contains("[fd10:201::2]:51820"), "IPv6 endpoint: {dump}");
    tcp_transfer(&nb, &na, "fd64::1", 20);
}

#[test]
fn up_without_foreground_daemonizes_once_the_socket_is_ready() {
    if !require(&["ip", "wg"]) {
        return;
    }
    let (na, _nb) = underlay();
    let name = ifname();
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let sock = format!("/var/run/wireguard/{name}.sock");
    // Returns as soon as the daemon serves its socket, like wireguard-go.
    na.exec(&format!("{vxwg} up {name}"));
    assert!(std::path::Path::new(&sock).exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the UAPI socket (which reveals the private key) is owner-only");
    assert!(na.exec(&format!("wg show {name} listen-port")).trim().parse::<u16>().is_ok());
    assert!(na.try_exec(&format!("ip link show {name}")).status.success());
    // Removing the socket stops it (and the Netns guard would kill it anyway).
    std::fs::remove_file(&sock).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while na.try_exec(&format!("ip link show {name}")).status.success() {
        assert!(Instant::now() < deadline, "daemon did not exit after its socket was removed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn wg_setconf_and_syncconf_against_the_daemon() {
    if !require(&["ip", "wg", "ping"]) {
        return;
    }
    let (na, nb) = underlay();
    let a = Node::start(&na, Impl::Vxwg, "100.64.16.1");
    let b = Node::start(&nb, Impl::Vxwg, "100.64.16.2");
    b.add_peer(&a, "10.201.0.1");
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let other = sh(&format!("{vxwg} genkey | {vxwg} pubkey")).trim().to_string();
    let dir = std::env::temp_dir().join(format!(
        "vxwg-setconf-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // setconf replaces everything: key, port, peers.
    let conf = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 100.64.16.2/32\nEndpoint = 10.201.0.2:51820\n\n[Peer]\nPublicKey = {other}\nAllowedIPs = 10.99.0.0/16\n",
        a.private, b.public
    );
    std::fs::write(dir.join("a.conf"), &conf).unwrap();
    na.exec(&format!("wg setconf {} {}", a.ifname, dir.join("a.conf").display()));
    let shown = na.exec(&format!("wg showconf {}", a.ifname));
    assert!(shown.contains(&format!("PublicKey = {other}")) && shown.contains("AllowedIPs = 10.99.0.0/16"), "{shown}");
    ping(&na, "100.64.16.2");
    let rx_before = na.exec(&format!("wg show {} transfer", a.ifname));

    // syncconf drops the second peer and leaves the live one (and its session) alone.
    let synced = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 100.64.16.2/32\nEndpoint = 10.201.0.2:51820\n",
        a.private, b.public
    );
    std::fs::write(dir.join("a.conf"), synced).unwrap();
    na.exec(&format!("wg syncconf {} {}", a.ifname, dir.join("a.conf").display()));
    let peers = na.exec(&format!("wg show {} peers", a.ifname));
    assert_eq!(peers.trim(), b.public, "only the live peer is left");
    let rx_after = na.exec(&format!("wg show {} transfer", a.ifname));
    let first = |s: &str| s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap();
    assert!(first(&rx_after) >= first(&rx_before), "the live peer was not recreated (its counters survive)");
    ping(&na, "100.64.16.2");
    let _ = std::fs::remove_dir_all(dir);
}

/// A pod namespace behind a node namespace: a veth pair, `gw` on the node's side and `pod` in
/// the pod namespace (both /24), the pod's default route via `gw`, forwarding on in the node.
fn pod_behind(node: &Netns, tag: &str, gw: &str, pod: &str) -> Netns {
    let ns = Netns::new(tag);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let (vn, vp) = (format!("pn{}{n}", std::process::id() % 10000), format!("pp{}{n}", std::process::id() % 10000));
    sh(&format!("ip link add {vn} netns {} type veth peer name {vp} netns {}", node.name, ns.name));
    node.exec(&format!("ip addr add {gw}/24 dev {vn} && ip link set {vn} up && sysctl -qw net.ipv4.ip_forward=1"));
    ns.exec(&format!("ip addr add {pod}/24 dev {vp} && ip link set {vp} up && ip route add default via {gw}"));
    ns
}

/// The pod-side TUN's default name, as the daemon derives it: `IFNAME-pods` with IFNAME cut to 10
/// characters. (Test interface names grow with the pid and a shared counter.)
fn pod_ifname(ifname: &str) -> String {
    format!("{}-pods", ifname.chars().take(10).collect::<String>())
}

/// One side of a two-node pod-path setup: its overlay (VTEP) address, VTEP MAC and pod CIDR.
struct PodSide<'a> {
    overlay: &'a str,
    mac: &'a str,
    pods: &'a str,
}

/// A node's `--config` body for the pod path: its peer's AllowedIPs hold only the peer's overlay
/// (VTEP) address, and the peer's pod CIDR is `pod_cidrs`, carried as VXLAN to that VTEP. `extra`
/// goes into the top-level table (e.g. `mtu = 1360\n`).
fn pod_config(me: &PodSide, peer: &PodSide, peer_public: &str, peer_endpoint: &str, extra: &str) -> String {
    format!(
        "listen_port = 41641\naddresses = [\"{}/32\"]\n{extra}[vxlan]\nvtep_mac = \"{}\"\npod_cidrs = [\"{}\"]\n[[peer]]\npublic_key = \"{peer_public}\"\nendpoint = \"{peer_endpoint}:41641\"\nallowed_ips = [\"{}/32\"]\nvtep_mac = \"{}\"\npod_cidrs = [\"{}\"]\n",
        me.overlay, me.mac, me.pods, peer.overlay, peer.mac, peer.pods
    )
}

/// `vxwg up --foreground --config DIR/node.toml IFNAME` in `ns`, as a `Node` killed on drop.
fn start_with_config<'a>(ns: &'a Netns, ifname: &str, keys: &(String, String), dir: &std::path::Path) -> Node<'a> {
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    Node {
        ns,
        ifname: ifname.to_string(),
        child: Some(ns.spawn(&format!("{vxwg} up --foreground --config {} {ifname}", dir.join("node.toml").display()))),
        private: keys.0.clone(),
        public: keys.1.clone(),
        overlay: String::new(),
    }
}

/// Two vxwg nodes with the pod path: A (VTEP 100.64.17.1, pods 10.42.1.0/24) and B (VTEP
/// 100.64.17.2, pods 10.42.2.0/24) over `underlay()`, started and with their pod routes in place.
struct PodPair<'a> {
    a: Node<'a>,
    b: Node<'a>,
    pod_a: String,
    _dirs: (RemoveDir, RemoveDir),
}

impl<'a> PodPair<'a> {
    fn start(na: &'a Netns, nb: &'a Netns) -> PodPair<'a> {
        let (ka, kb) = (keypair(), keypair());
        let side_a = PodSide { overlay: "100.64.17.1", mac: "02:00:00:00:17:01", pods: "10.42.1.0/24" };
        let side_b = PodSide { overlay: "100.64.17.2", mac: "02:00:00:00:17:02", pods: "10.42.2.0/24" };
        let a_dir = config_dir(&ka.0, &pod_config(&side_a, &side_b, &kb.1, "10.201.0.2", ""));
        let b_dir = config_dir(&kb.0, &pod_config(&side_b, &side_a, &ka.1, "10.201.0.1", ""));
        let dirs = (RemoveDir(a_dir.clone()), RemoveDir(b_dir.clone()));
        let (ia, ib) = (ifname(), ifname());
        let (pod_a, pod_b) = (pod_ifname(&ia), pod_ifname(&ib));
        let a = start_with_config(na, &ia, &ka, &a_dir);
        let b = start_with_config(nb, &ib, &kb, &b_dir);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(na.try_exec(&format!("ip route show table 52 | grep -q 'dev {pod_a}'")).status.success()
            && nb.try_exec(&format!("ip route show table 52 | grep -q 'dev {pod_b}'")).status.success())
        {
            assert!(Instant::now() < deadline, "pod routes did not appear");
            std::thread::sleep(Duration::from_millis(50));
        }
        PodPair { a, b, pod_a, _dirs: dirs }
    }
}

/// Per-peer path MTU: the underlay between two pod nodes shrinks from 1500 to 1400 under a
/// running mesh. vxwg reads the smaller path from the kernel, lowers that peer's pod MTU to
/// 1400 - 60 - 50 = 1290, and answers a larger DF packet itself with frag-needed carrying 1290,
/// which the sending pod's kernel learns; TCP then completes over the smaller path.
#[test]
fn pod_mtu_follows_a_shrinking_underlay_path() {
    if !require(&["ip", "wg", "ping", "python3", "sysctl"]) {
        return;
    }
    let (na, nb) = underlay();
    let pa = pod_behind(&na, "pa", "10.42.1.1", "10.42.1.2");
    let pb = pod_behind(&nb, "pb", "10.42.2.1", "10.42.2.2");
    let pair = PodPair::start(&na, &nb);
    let (ia, ib) = (pair.a.ifname.clone(), pair.b.ifname.clone());
    // The configured pod MTU (1420 - 50) passes while the underlay is 1500.
    ping(&pa, "10.42.2.2");
    let full = pa.try_exec("ping -c 1 -W 3 -M do -s 1342 10.42.2.2");
    assert!(full.status.success(), "1370 passes: {}", String::from_utf8_lossy(&full.stdout));

    // The underlay path shrinks (both ends of the veth, as a smaller link in between would).
    for ns in [&na, &nb] {
        let veth = ns.exec("ip -o link show type veth | awk -F': ' '$2 ~ /^vx/ {print $2}' | cut -d@ -f1");
        ns.exec(&format!("ip link set {} mtu 1400", veth.trim()));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let va = status_json(&na, &ia);
        if va["pod"]["paths"][0]["pod_mtu"].as_u64() == Some(1290) {
            assert_eq!(va["pod"]["paths"][0]["path_mtu"].as_u64(), Some(1400), "{va}");
            break;
        }
        assert!(Instant::now() < deadline, "pod MTU not lowered: {va}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // 1300 with DF: vxwg answers (the pod TUN still says 1370) with frag-needed carrying 1290;
    // the pod's kernel learns it, so the next attempt fails locally with the same MTU.
    let first = pa.try_exec("ping -c 1 -W 3 -M do -s 1272 10.42.2.2");
    let second = pa.try_exec("ping -c 1 -W 3 -M do -s 1272 10.42.2.2");
    let said = format!("{}{}", String::from_utf8_lossy(&first.stdout), String::from_utf8_lossy(&second.stderr));
    let said = said + &String::from_utf8_lossy(&second.stdout);
    assert!(!first.status.success() && !second.status.success(), "{said}");
    assert!(said.contains("mtu = 1290") || said.contains("mtu=1290"), "frag-needed carried 1290: {said}");
    assert!(status_json(&na, &ia)["pod"]["too_big"].as_u64().unwrap() >= 1);
    // What fits the smaller path passes, and TCP completes over it (both directions).
    let fits = pa.try_exec("ping -c 1 -W 3 -M do -s 1262 10.42.2.2");
    assert!(fits.status.success(), "1290 passes: {}", String::from_utf8_lossy(&fits.stdout));
    tcp_transfer(&pa, &pb, "10.42.2.2", 20);
    tcp_transfer(&pb, &pa, "10.42.1.2", 5);
    assert_eq!(status_json(&nb, &ib)["pod"]["paths"][0]["pod_mtu"].as_u64(), Some(1290));
}

/// `vxwg status --json` of a node, parsed.
fn status_json(ns: &Netns, ifname: &str) -> serde_json::Value {
    let json = ns.exec(&format!("{} status --json {ifname}", env!("CARGO_BIN_EXE_vxwg")));
    serde_json::from_str(&json).unwrap()
}

#[test]
fn pods_behind_two_vxwg_nodes_talk_over_vxlan_in_wireguard() {
    if !require(&["ip", "wg", "ping", "python3", "sysctl"]) {
        return;
    }
    let (na, nb) = underlay();
    let pa = pod_behind(&na, "pa", "10.42.1.1", "10.42.1.2");
    let pb = pod_behind(&nb, "pb", "10.42.2.1", "10.42.2.2");
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let PodPair { mut a, mut b, _dirs, pod_a, .. } = PodPair::start(&na, &nb);
    let (ia, ib) = (a.ifname.clone(), b.ifname.clone());
    // The pod TUN: up, at the pod MTU (1420 - 50 of VXLAN over IPv4 VTEPs), and the remote pod
    // CIDR routed into it in vxwg's table; the overlay address stays on the WireGuard TUN.
    let link = na.exec(&format!("ip link show {pod_a}"));
    assert!(link.contains("mtu 1370") && link.contains(",UP"), "{link}");
    let table = na.exec("ip route show table 52");
    assert!(table.contains(&format!("10.42.2.0/24 dev {pod_a}")), "{table}");
    assert!(table.contains(&format!("100.64.17.2 dev {ia}")), "{table}");

    // Pod to pod through both nodes, both ways, then a TCP transfer (MSS clamped to the pod MTU).
    ping(&pa, "10.42.2.2");
    ping(&pb, "10.42.1.2");
    tcp_transfer(&pa, &pb, "10.42.2.2", 20);
    tcp_transfer(&pb, &pa, "10.42.1.2", 5);
    // Plain L3 between the overlay addresses still works over the same tunnel.
    ping(&na, "100.64.17.2");

    // Too big for the pod MTU with DF: refused (by A's kernel, at the pod TUN's MTU).
    let big = pa.try_exec("ping -c 1 -W 2 -M do -s 1400 10.42.2.2");
    assert!(!big.status.success(), "1428-octet DF packet must not pass a 1370 pod MTU");

    let text = na.exec(&format!("{vxwg} status {ia}"));
    assert!(
        text.contains("pod path: VTEP 100.64.17.1") && text.contains("10.42.2.0/24 via VTEP 100.64.17.2"),
        "{text}"
    );
    let va = status_json(&na, &ia);
    let vb = status_json(&nb, &ib);
    let pod = &va["pod"];
    assert_eq!(pod["vni"].as_u64(), Some(1), "{va}");
    assert_eq!(pod["port"].as_u64(), Some(8472), "{va}");
    assert_eq!(pod["vtep_ip"].as_str(), Some("100.64.17.1"), "{va}");
    assert!(pod["packets_out"].as_u64().unwrap() > 1000, "{va}");
    assert!(pod["packets_in"].as_u64().unwrap() > 100, "{va}");
    assert!(pod["l3_in"].as_u64().unwrap() >= 3, "{va}");
    assert!(pod["mss_clamped"].as_u64().unwrap() >= 1, "{va}");
    assert!(vb["pod"]["packets_in"].as_u64().unwrap() > 1000, "{vb}");
    // Pod traffic takes the offloads too: super-packets cut on A, merged writes on B's pod TUN.
    assert!(va["offload"]["pod_tun"]["super_packets"].as_u64().unwrap() > 10, "{va}");
    assert!(vb["offload"]["pod_tun"]["merged_writes"].as_u64().unwrap() > 10, "{vb}");
    for v in [&va, &vb] {
        // (no_route may count the kernel's own chatter on the pod TUN, such as IPv6 MLD.)
        for reason in
            ["source_not_allowed", "vxlan", "wrong_vni", "wrong_mac", "inner_not_ip", "pod_source_not_allowed"]
        {
            assert_eq!(v["pod"]["drops"][reason].as_u64(), Some(0), "pod drop {reason}: {v}");
        }
    }

    // SIGTERM: the pod TUN, its routes and everything else are gone.
    sh(&format!("kill -TERM {}", a.child.as_ref().unwrap().id()));
    assert!(exits_within(&mut a, 5).success());
    assert_eq!(na.exec("ip route show table 52").trim(), "", "routes removed");
    assert!(!na.exec("ip rule show").contains("lookup 52"), "rule removed");
    assert!(!na.try_exec(&format!("ip link show {pod_a}")).status.success(), "pod TUN removed");
    assert!(!na.try_exec(&format!("ip link show {ia}")).status.success(), "interface removed");
    assert!(!na.exec("ip route show").contains("10.42.2.0"), "nothing in the main table either");
    b.kill();
}

/// The interop case: node A runs vxwg with `[vxlan]`; node B runs wireguard-go plus Linux's own
/// `vxlan` device over it, set up as flannel's VXLAN backend would (fdb entry, neighbour and
/// onlink route for A's pod CIDR). Pods behind each exchange ping and TCP.
#[test]
fn vxwg_pod_path_interoperates_with_a_kernel_vxlan_over_wireguard_go() {
    if !require(&["ip", "wg", "ping", "python3", "sysctl", "bridge", "wireguard-go", "tshark"]) {
        return;
    }
    let (na, nb) = underlay();
    let underlay_veth = na.exec("ip -o link show type veth | grep -o 'vxa[0-9]*' | head -1").trim().to_string();
    let pa = pod_behind(&na, "pa", "10.42.1.1", "10.42.1.2");
    let pb = pod_behind(&nb, "pb", "10.42.2.1", "10.42.2.2");
    let vxwg = env!("CARGO_BIN_EXE_vxwg");
    let (mac_a, mac_b) = ("02:00:00:00:18:01", "02:00:00:00:18:02");

    // B: wireguard-go on 100.64.18.2/24, listening on 51820.
    let b = Node::start(&nb, Impl::WireguardGo, "100.64.18.2");
    // A: vxwg from a config file, B's pods behind B's VTEP (its overlay address).
    let ka = keypair();
    let a_dir = config_dir(
        &ka.0,
        &format!(
            "listen_port = 51820\naddresses = [\"100.64.18.1/32\"]\n[vxlan]\nvtep_mac = \"{mac_a}\"\npod_cidrs = [\"10.42.1.0/24\"]\n[[peer]]\npublic_key = \"{}\"\nendpoint = \"10.201.0.2:51820\"\nallowed_ips = [\"100.64.18.2/32\"]\nvtep_mac = \"{mac_b}\"\npod_cidrs = [\"10.42.2.0/24\"]\n",
            b.public
        ),
    );
    let _cleanup = RemoveDir(a_dir.clone());
    let ia = ifname();
    let mut a = Node {
        ns: &na,
        ifname: ia.clone(),
        child: None,
        private: ka.0.clone(),
        public: ka.1.clone(),
        overlay: "100.64.18.1".to_string(),
    };
    a.child = Some(na.spawn(&format!("{vxwg} up --foreground --config {} {ia}", a_dir.join("node.toml").display())));
    b.add_peer(&a, "10.201.0.1");
    let pod_a = pod_ifname(&ia);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !na.try_exec(&format!("ip route show table 52 | grep -q 'dev {pod_a}'")).status.success() {
        assert!(Instant::now() < deadline, "pod routes did not appear");
        std::thread::sleep(Duration::from_millis(50));
    }

    // B's kernel VTEP, flannel style: VNI 1, port 8472, local = B's overlay address, no learning;
    // A's pod CIDR via A's "gateway" 10.42.1.0, whose MAC is A's VTEP MAC, found at A's overlay IP.
    nb.exec(&format!(
        "ip link add vxlan0 type vxlan id 1 dstport 8472 local 100.64.18.2 nolearning && \
         ip link set vxlan0 address {mac_b} mtu 1370 up && \
         ip addr add 10.42.2.0/32 dev vxlan0 && \
         ip neigh add 10.42.1.0 lladdr {mac_a} dev vxlan0 nud permanent && \
         bridge fdb append {mac_a} dev vxlan0 dst 100.64.18.1 && \
         ip route add 10.42.1.0/24 via 10.42.1.0 dev vxlan0 onlink"
    ));

    // tshark is the independent oracle: what vxwg puts on the underlay must dissect as WireGuard,
    // and what B's kernel sends inside the tunnel as VXLAN with VNI 1.
    let pcap = |side: &str| std::env::temp_dir().join(format!("vxwg-{}-{side}.pcapng", ia));
    let (pcap_a, pcap_b) = (pcap("underlay"), pcap("inner"));
    let capture = |ns: &Netns, dev: &str, port: u16, file: &std::path::Path| {
        ns.spawn(&format!("tshark -q -i {dev} -f 'udp port {port}' -c 60 -a duration:6 -w {}", file.display()))
    };
    let cap_a = capture(&na, &underlay_veth, 51820, &pcap_a);
    let cap_b = capture(&nb, &b.ifname, 8472, &pcap_b);
    std::thread::sleep(Duration::from_millis(1500));

    ping(&pa, "10.42.2.2");
    ping(&pb, "10.42.1.2");
    for cap in [cap_a, cap_b] {
        let _ = cap.wait_with_output();
    }
    let dissect = |file: &std::path::Path, decode_as: &str, filter: &str, field: &str| -> Vec<String> {
        sh(&format!("tshark -r {} -d {decode_as} -Y {filter} -T fields -e {field}", file.display()))
            .lines()
            .map(str::to_string)
            .collect()
    };
    let wg_types = dissect(&pcap_a, "udp.port==51820,wg", "wg", "wg.type");
    assert!(!wg_types.is_empty(), "no WireGuard captured on the underlay");
    assert!(wg_types.iter().all(|t| ["1", "2", "3", "4"].contains(&t.as_str())), "{wg_types:?}");
    assert!(wg_types.iter().any(|t| t == "4"), "transport data on the wire: {wg_types:?}");
    let vnis = dissect(&pcap_b, "udp.port==8472,vxlan", "vxlan", "vxlan.vni");
    assert!(!vnis.is_empty(), "no VXLAN captured inside the tunnel");
    assert!(vnis.iter().all(|v| v == "1"), "VNI 1 throughout: {vnis:?}");
    let _ = std::fs::remove_file(&pcap_a);
    let _ = std::fs::remove_file(&pcap_b);

    tcp_transfer(&pa, &pb, "10.42.2.2", 20);
    tcp_transfer(&pb, &pa, "10.42.1.2", 5);
    // Plain L3 over the same tunnel.
    ping(&na, "100.64.18.2");

    let v = status_json(&na, &ia);
    assert!(v["pod"]["packets_out"].as_u64().unwrap() > 1000, "{v}");
    assert!(v["pod"]["packets_in"].as_u64().unwrap() > 100, "{v}");
    for reason in ["source_not_allowed", "vxlan", "wrong_vni", "wrong_mac", "inner_not_ip", "pod_source_not_allowed"] {
        assert_eq!(v["pod"]["drops"][reason].as_u64(), Some(0), "pod drop {reason}: {v}");
    }
    sh(&format!("kill -TERM {}", a.child.as_ref().unwrap().id()));
    assert!(exits_within(&mut a, 5).success());
    assert!(!na.try_exec(&format!("ip link show {pod_a}")).status.success(), "pod TUN removed");
    assert_eq!(na.exec("ip route show table 52").trim(), "", "routes removed");
}

/// `vxwg demo` as root: three nodes in namespaces with a pod behind each, measured, then removed.
#[test]
fn demo_builds_a_three_node_mesh_measures_it_and_removes_it() {
    if !require(&["ip", "ping"]) {
        return;
    }
    let child = Command::new(env!("CARGO_BIN_EXE_vxwg"))
        .args(["demo", "--mb", "20"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vxwg demo");
    let prefix = format!("vxwgdemo-{}-", child.id());
    let o = child.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr);
    let left = sh("ip netns list");
    assert!(!left.contains(&prefix), "namespaces left behind: {left}");
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.trim_end().ends_with("ok"), "{out}");
    for n in 1..=3 {
        let row = out.lines().find(|l| l.trim_start().starts_with(&format!("node-{n} "))).expect(&out);
        assert!(row.contains(&format!("100.64.0.{n}")) && row.contains(&format!("10.42.{n}.0/24")), "{row}");
        assert!(row.contains(" 1370 ") && row.contains(" 2/2 "), "pod MTU and sessions: {row}");
        // The RTT row of pod-N: a dash for itself and two positive numbers.
        let rtt = out.lines().find(|l| l.trim_start().starts_with(&format!("pod-{n} "))).expect(&out);
        let ms: Vec<f64> = rtt.split_whitespace().skip(1).filter_map(|c| c.parse().ok()).collect();
        assert!(ms.len() == 2 && ms.iter().all(|&m| m > 0.0), "{rtt}");
    }
    let rates: Vec<f64> = out
        .lines()
        .filter(|l| l.contains(" -> ") && l.ends_with("Gbit/s"))
        .filter_map(|l| l.split_whitespace().rev().nth(1)?.parse().ok())
        .collect();
    assert!(rates.len() == 3 && rates.iter().all(|&r| r > 0.0), "{out}");
    assert!(out.contains("20 MiB in"), "{out}");
}

/// One underlay MTU and family: pods at exactly the pod MTU get through with DF (so the outer
/// packet, which the tunnel never fragments, fits the underlay exactly), one byte more comes back
/// as frag-needed carrying the pod MTU, and a 50 MB transfer completes.
fn pod_mtu_case(underlay_mtu: u32, ipv6_underlay: bool) {
    let (na, nb) = underlay();
    let veth = |ns: &Netns| ns.exec("ip -o link show type veth | cut -d: -f2 | cut -d@ -f1").trim().to_string();
    let (va, vb) = (veth(&na), veth(&nb));
    na.exec(&format!("ip link set {va} mtu {underlay_mtu}"));
    nb.exec(&format!("ip link set {vb} mtu {underlay_mtu}"));
    let (ea, eb) = if ipv6_underlay {
        na.exec(&format!("ip -6 addr add fd10:202::1/64 dev {va} nodad"));
        nb.exec(&format!("ip -6 addr add fd10:202::2/64 dev {vb} nodad"));
        ("[fd10:202::1]", "[fd10:202::2]")
    } else {
        ("10.201.0.1", "10.201.0.2")
    };
    // Tunnel MTU = underlay - WireGuard (60 over IPv4, 80 over IPv6); pod MTU = tunnel - VXLAN (50
    // with IPv4 VTEPs), the default the config derives.
    let tunnel_mtu = underlay_mtu - if ipv6_underlay { 80 } else { 60 };
    let pod_mtu = tunnel_mtu - 50;
    let pa = pod_behind(&na, "pa", "10.42.1.1", "10.42.1.2");
    let pb = pod_behind(&nb, "pb", "10.42.2.1", "10.42.2.2");
    let (ka, kb) = (keypair(), keypair());
    let side_a = PodSide { overlay: "100.64.18.1", mac: "02:00:00:00:18:01", pods: "10.42.1.0/24" };
    let side_b = PodSide { overlay: "100.64.18.2", mac: "02:00:00:00:18:02", pods: "10.42.2.0/24" };
    let mtu_line = format!("mtu = {tunnel_mtu}\n");
    let a_dir = config_dir(&ka.0, &pod_config(&side_a, &side_b, &kb.1, eb, &mtu_line));
    let b_dir = config_dir(&kb.0, &pod_config(&side_b, &side_a, &ka.1, ea, &mtu_line));
    let _cleanup = (RemoveDir(a_dir.clone()), RemoveDir(b_dir.clone()));
    let (ia, ib) = (ifname(), ifname());
    let mut a = start_with_config(&na, &ia, &ka, &a_dir);
    let mut b = start_with_config(&nb, &ib, &kb, &b_dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    let (pod_a, pod_b) = (pod_ifname(&ia), pod_ifname(&ib));
    while !(na.try_exec(&format!("ip link show {pod_a}")).status.success()
        && nb.try_exec(&format!("ip link show {pod_b}")).status.success()
        && na.try_exec("ip route show table 52 | grep -q 10.42.2.0").status.success())
    {
        assert!(Instant::now() < deadline, "pod path did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(na.exec(&format!("ip link show {pod_a}")).contains(&format!("mtu {pod_mtu} ")));
    // Warm up the session, then the largest packet the pod MTU allows, with DF.
    ping(&pa, "10.42.2.2");
    let fits = pa.try_exec(&format!("ping -c 2 -i 0.2 -W 3 -M do -s {} 10.42.2.2", pod_mtu - 28));
    assert!(
        fits.status.success(),
        "underlay {underlay_mtu} ({}): a {pod_mtu}-byte DF packet must pass: {}{}",
        if ipv6_underlay { "IPv6" } else { "IPv4" },
        String::from_utf8_lossy(&fits.stdout),
        String::from_utf8_lossy(&fits.stderr)
    );
    // One byte more: frag-needed with the pod MTU in it.
    let over = pa.try_exec(&format!("ping -c 2 -i 0.2 -W 2 -M do -s {} 10.42.2.2", pod_mtu - 27));
    let said = format!("{}{}", String::from_utf8_lossy(&over.stdout), String::from_utf8_lossy(&over.stderr));
    assert!(!over.status.success(), "{said}");
    assert!(
        said.contains(&format!("mtu = {pod_mtu}")) || said.contains(&format!("mtu={pod_mtu}")),
        "frag-needed carries {pod_mtu}: {said}"
    );
    // And a bulk transfer does not stall (MSS clamped to the pod MTU).
    tcp_transfer(&pa, &pb, "10.42.2.2", 50);
    a.kill();
    b.kill();
}

#[test]
fn pod_mtu_over_ipv4_underlays_of_1280_1420_and_1500() {
    if !require(&["ip", "wg", "ping", "python3", "sysctl"]) {
        return;
    }
    for mtu in [1280, 1420, 1500] {
        pod_mtu_case(mtu, false);
    }
}

#[test]
fn pod_mtu_over_ipv6_underlays_of_1280_1420_and_1500() {
    if !require(&["ip", "wg", "ping", "python3", "sysctl"]) {
        return;
    }
    for mtu in [1280, 1420, 1500] {
        pod_mtu_case(mtu, true);
    }
}

/// A worker that ends on its own (its TUN device deleted) while the control thread is busy
/// with a listen-port change, which stops the workers: the daemon must still notice and exit,
/// not carry on serving UAPI with no packet worker left.
#[test]
fn a_worker_ending_during_a_listen_port_change_still_ends_the_daemon() {
    if !require(&["ip", "wg"]) {
        return;
    }
    use std::io::{BufRead, BufReader};
    let (na, _nb) = underlay();
    let mut a = Node::start(&na, Impl::VxwgTwoWorkers, "100.64.12.1");
    let sock = format!("/var/run/wireguard/{}.sock", a.ifname);
    let stream = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    // One connection, several requests: the control thread stays in it between them (it waits
    // up to 500 ms for the next), so it cannot see the workers end before the `set` below.
    // `None`: the connection closed first (on a loaded machine the control thread may give up
    // waiting and see the workers end by itself; the daemon must exit either way).
    let mut request = |text: &str| -> Option<String> {
        writer.write_all(text.as_bytes()).ok()?;
        let mut reply = String::new();
        while !reply.ends_with("\n\n") {
            if reader.read_line(&mut reply).ok()? == 0 {
                return None;
            }
        }
        Some(reply)
    };
    assert!(request("get=1\n\n").expect("get").contains("listen_port=51820"));
    na.exec(&format!("ip link del {}", a.ifname));
    std::thread::sleep(Duration::from_millis(100));
    let reply = request("set=1\nlisten_port=51821\n\n");
    drop((reader, writer));
    eprintln!("listen-port change after the TUN device went: {reply:?}");
    assert!(exits_within(&mut a, 5).success(), "the daemon exits once its workers are gone");
}

/// CPU time (user + system, in clock ticks) a process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which ends with the last ')'): utime and stime are the
    // 12th and 13th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Without a private key the protocol timers do not run, so a due one (here a peer's persistent
/// keepalive) must not become a zero poll timeout: the control thread would spin on a core,
/// taking the workers' lock each turn, until a key is set.
#[test]
fn an_unkeyed_daemon_with_a_due_timer_sleeps() {
    if !require(&["ip", "wg"]) {
        return;
    }
    let (na, _nb) = underlay();
    let (private, public) = keypair();
    let ifname = ifname();
    let child = na.spawn(&format!("{} up --foreground {ifname}", env!("CARGO_BIN_EXE_vxwg")));
    let node = Node { ns: &na, ifname, child: Some(child), private, public, overlay: String::new() };
    let sock = format!("/var/run/wireguard/{}.sock", node.ifname);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::path::Path::new(&sock).exists() {
        assert!(Instant::now() < deadline, "vxwg did not create {sock}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, peer) = keypair();
    na.exec(&format!("wg set {} peer {peer} endpoint 10.201.0.2:51820 persistent-keepalive 1", node.ifname));
    // The keepalive falls due after 1 s; then watch the daemon for 2 s.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = node.child.as_ref().unwrap().id();
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - before;
    // A spinning thread uses ~200 ticks in 2 s; an idle daemon a handful.
    assert!(used < 50, "the daemon used {used} ticks of CPU in 2 s while idle");
}
