//! `vxwg demo` as root: three vxwg nodes in network namespaces, a pod namespace behind each, the
//! VXLAN-over-WireGuard mesh between them, measured and then removed.
//!
//! Layout (every name carries this process's id, so runs never collide):
//!
//! ```text
//!   vxwgdemo-PID-ul        a Linux bridge `br0`, one veth `nN` per node       (the underlay)
//!   vxwgdemo-PID-nodeN     `eth0` 10.250.0.N/24 on the bridge, `pod0` 10.42.N.1/24,
//!                          vxwg `up --config` with overlay 100.64.0.N/32 and [vxlan]
//!   vxwgdemo-PID-podN      `eth0` 10.42.N.2/24, default route via 10.42.N.1
//! ```
//!
//! The demo runs `ip` only for its own scaffolding (namespaces, veths, the bridge, the pods'
//! addresses); each daemon configures its interfaces, routes and rule itself through netlink.
//! Nothing is created in, or changed in, the namespace the demo runs in. A guard deletes every
//! namespace and stops every daemon on the way out, including on error, panic, SIGINT and SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use rand_core::OsRng;
use vxwg::control::keys::Key;

const NODES: usize = 3;
const PORT: u16 = 41641;
/// The pod TUN's MTU the daemons derive: the default tunnel MTU 1420 minus 50 of VXLAN over IPv4.
const POD_MTU: u32 = 1370;

/// Why the mesh cannot run here, or `None` when it can (root with `ip` and `ping`).
pub fn unavailable() -> Option<String> {
    if !is_root() {
        return Some("not running as root".into());
    }
    for tool in ["ip", "ping"] {
        if !on_path(tool) {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    None
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

struct Node {
    ns: String,
    pod_ns: String,
    ifname: String,
    key: Key,
    daemon: Option<Child>,
}

impl Node {
    fn overlay(i: usize) -> String {
        format!("100.64.0.{}", i + 1)
    }
    fn underlay(i: usize) -> String {
        format!("10.250.0.{}", i + 1)
    }
    fn pod_cidr(i: usize) -> String {
        format!("10.42.{}.0/24", i + 1)
    }
    fn pod_ip(i: usize) -> String {
        format!("10.42.{}.2", i + 1)
    }
    fn mac(i: usize) -> String {
        format!("02:00:00:00:00:{:02x}", i + 1)
    }
}

/// Everything the demo created; dropping it removes all of it.
struct Mesh {
    underlay: String,
    nodes: Vec<Node>,
    dir: PathBuf,
    namespaces: Vec<String>,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.daemon.take() {
                let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).stderr(Stdio::null()).status();
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            // The UAPI socket directory is shared by all namespaces; a killed daemon leaves its socket.
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{}.sock", node.ifname));
        }
        for ns in self.namespaces.iter().rev() {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).stderr(Stdio::null()).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-KILL", pid]).stderr(Stdio::null()).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `ip ARGS` (scaffolding only); fails with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

/// Runs `ARGS` inside namespace `ns`.
fn in_ns(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(["netns", "exec", ns]).args(args))
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let o = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    ensure!(
        o.status.success(),
        "{cmd:?} failed ({}): {}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout).trim(),
        String::from_utf8_lossy(&o.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

fn check(stop: &AtomicBool) -> anyhow::Result<()> {
    ensure!(!stop.load(Ordering::Relaxed), "interrupted; removing everything the demo created");
    Ok(())
}

pub fn run_mesh(mb: u32) -> anyhow::Result<()> {
    ensure!((1..=10_000).contains(&mb), "--mb must be between 1 and 10000");
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let exe = std::env::current_exe().context("finding the vxwg binary")?;
    let pid = std::process::id();
    let prefix = format!("vxwgdemo-{pid}");
    let dir = std::env::temp_dir().join(&prefix);
    let mut mesh =
        Mesh { underlay: format!("{prefix}-ul"), nodes: Vec::new(), dir: dir.clone(), namespaces: Vec::new() };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;

    println!("vxwg demo: three vxwg nodes in network namespaces, a pod behind each, VXLAN inside WireGuard");
    println!("  (namespaces {prefix}-*, removed at the end; nothing outside them is touched)");

    // The underlay: a bridge in its own namespace.
    let ul = mesh.underlay.clone();
    ip(&["netns", "add", &ul])?;
    mesh.namespaces.push(ul.clone());
    in_ns(&ul, &["ip", "link", "set", "lo", "up"])?;
    in_ns(&ul, &["ip", "link", "add", "br0", "type", "bridge"])?;
    in_ns(&ul, &["ip", "link", "set", "br0", "up"])?;

    for i in 0..NODES {
        check(&stop)?;
        let ns = format!("{prefix}-node{}", i + 1);
        let pod_ns = format!("{prefix}-pod{}", i + 1);
        for n in [&ns, &pod_ns] {
            ip(&["netns", "add", n])?;
            mesh.namespaces.push(n.clone());
            in_ns(n, &["ip", "link", "set", "lo", "up"])?;
        }
        let port = format!("n{}", i + 1);
        in_ns(&ul, &["ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
        in_ns(&ul, &["ip", "link", "set", &port, "master", "br0", "up"])?;
        in_ns(&ns, &["ip", "addr", "add", &format!("{}/24", Node::underlay(i)), "dev", "eth0"])?;
        in_ns(&ns, &["ip", "link", "set", "eth0", "up"])?;
        in_ns(&ns, &["ip", "link", "add", "pod0", "type", "veth", "peer", "name", "eth0", "netns", &pod_ns])?;
        in_ns(&ns, &["ip", "addr", "add", &format!("10.42.{}.1/24", i + 1), "dev", "pod0"])?;
        in_ns(&ns, &["ip", "link", "set", "pod0", "up"])?;
        in_ns(&ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        in_ns(&pod_ns, &["ip", "addr", "add", &format!("{}/24", Node::pod_ip(i)), "dev", "eth0"])?;
        in_ns(&pod_ns, &["ip", "link", "set", "eth0", "up"])?;
        in_ns(&pod_ns, &["ip", "route", "add", "default", "via", &format!("10.42.{}.1", i + 1)])?;
        mesh.nodes.push(Node {
            ns,
            pod_ns,
            ifname: format!("vd{}n{}", pid % 100_000, i + 1),
            key: Key::generate_private(&mut OsRng),
            daemon: None,
        });
    }

    // One config per node, every other node a peer; then the daemons.
    for i in 0..NODES {
        check(&stop)?;
        let node_dir = dir.join(format!("node{}", i + 1));
        std::fs::create_dir_all(&node_dir)?;
        std::fs::write(node_dir.join("private.key"), mesh.nodes[i].key.to_base64())?;
        let mut toml = format!(
            "private_key_file = \"private.key\"\nlisten_port = {PORT}\naddresses = [\"{}/32\"]\n\n[vxlan]\nvtep_mac = \"{}\"\npod_cidrs = [\"{}\"]\n",
            Node::overlay(i),
            Node::mac(i),
            Node::pod_cidr(i)
        );
        for j in (0..NODES).filter(|&j| j != i) {
            toml += &format!(
                "\n[[peer]]\npublic_key = \"{}\"\nendpoint = \"{}:{PORT}\"\nallowed_ips = [\"{}/32\"]\nvtep_mac = \"{}\"\npod_cidrs = [\"{}\"]\n",
                mesh.nodes[j].key.public().to_base64(),
                Node::underlay(j),
                Node::overlay(j),
                Node::mac(j),
                Node::pod_cidr(j)
            );
        }
        let config = node_dir.join("node.toml");
        std::fs::write(&config, toml)?;
        let log = std::fs::File::create(node_dir.join("daemon.log"))?;
        let node = &mut mesh.nodes[i];
        let child = Command::new("ip")
            .args(["netns", "exec", &node.ns])
            .arg(&exe)
            .args(["up", "--foreground", "--config"])
            .arg(&config)
            .arg(&node.ifname)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting vxwg up")?;
        node.daemon = Some(child);
    }

    // Ready once each daemon has routed its peers' pod CIDRs into its pod TUN.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (i, node) in mesh.nodes.iter_mut().enumerate() {
        let pod_if = format!("{}-pods", node.ifname);
        loop {
            check(&stop)?;
            if let Some(status) = node.daemon.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let log = std::fs::read_to_string(dir.join(format!("node{}/daemon.log", i + 1))).unwrap_or_default();
                bail!("vxwg on node-{} exited ({status}): {}", i + 1, log.trim());
            }
            let table = in_ns(&node.ns, &["ip", "route", "show", "table", "52"]).unwrap_or_default();
            if table.matches(&format!("dev {pod_if}")).count() >= NODES - 1 {
                break;
            }
            ensure!(Instant::now() < deadline, "vxwg on node-{} did not come up within 15 s", i + 1);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    // Handshakes: the first pod packet to each peer starts one; wait for a session everywhere.
    for i in 0..NODES {
        for j in (0..NODES).filter(|&j| j != i) {
            let _ = in_ns(&mesh.nodes[i].pod_ns, &["ping", "-c", "1", "-W", "3", &Node::pod_ip(j)]);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let statuses = loop {
        check(&stop)?;
        let statuses: Vec<serde_json::Value> =
            mesh.nodes.iter().map(|n| status_json(&exe, n)).collect::<anyhow::Result<_>>()?;
        let all_up = statuses.iter().all(|s| {
            s["peers"].as_array().is_some_and(|p| p.len() == NODES - 1 && p.iter().all(|p| p["session"] == true))
        });
        if all_up {
            break statuses;
        }
        ensure!(Instant::now() < deadline, "not every pair of nodes completed a handshake within 10 s");
        std::thread::sleep(Duration::from_millis(100));
    };

    // Pod MTU: what the daemons report, and what the kernel has on each pod TUN.
    let mut pod_mtus = Vec::new();
    for (node, status) in mesh.nodes.iter().zip(&statuses) {
        let reported = status["pod"]["pod_mtu"].as_u64().context("status --json has no pod.pod_mtu")? as u32;
        let link = in_ns(&node.ns, &["ip", "link", "show", &format!("{}-pods", node.ifname)])?;
        let kernel = link
            .split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1)
            .and_then(|m| m.parse::<u32>().ok())
            .context("no mtu in `ip link show` of the pod TUN")?;
        ensure!(reported == POD_MTU && kernel == POD_MTU, "pod MTU {reported} (kernel {kernel}), expected {POD_MTU}");
        pod_mtus.push(kernel);
    }

    // Ping RTT for every ordered pair of pods.
    let mut rtt = vec![vec![None; NODES]; NODES];
    for (i, row) in rtt.iter_mut().enumerate() {
        for j in (0..NODES).filter(|&j| j != i) {
            check(&stop)?;
            let out =
                in_ns(&mesh.nodes[i].pod_ns, &["ping", "-q", "-c", "5", "-i", "0.2", "-W", "2", &Node::pod_ip(j)])
                    .with_context(|| format!("ping from pod-{} to pod-{}", i + 1, j + 1))?;
            row[j] = Some(parse_avg_rtt(&out).with_context(|| format!("no RTT in ping output: {out}"))?);
        }
    }

    // TCP around the ring: pod-1 -> pod-2 -> pod-3 -> pod-1.
    let mut tcp = Vec::new();
    for i in 0..NODES {
        check(&stop)?;
        let j = (i + 1) % NODES;
        let (secs, bytes) = tcp_transfer(&exe, &mesh.nodes[i].pod_ns, &mesh.nodes[j].pod_ns, &Node::pod_ip(j), mb)
            .with_context(|| format!("TCP from pod-{} to pod-{}", i + 1, j + 1))?;
        tcp.push((i, j, secs, bytes));
    }

    println!();
    println!(
        "  {:<7} {:<12} {:<12} {:<14} {:<8} {:<9} handshakes",
        "node", "underlay", "overlay IP", "pod CIDR", "pod MTU", "sessions"
    );
    for (i, status) in statuses.iter().enumerate() {
        let peers = status["peers"].as_array().map(Vec::as_slice).unwrap_or_default();
        let up = peers.iter().filter(|p| p["session"] == true).count();
        let handshakes: u64 = peers.iter().filter_map(|p| p["handshakes"].as_u64()).sum();
        println!(
            "  {:<7} {:<12} {:<12} {:<14} {:<8} {:<9} {}",
            format!("node-{}", i + 1),
            Node::underlay(i),
            Node::overlay(i),
            Node::pod_cidr(i),
            pod_mtus[i],
            format!("{up}/{}", NODES - 1),
            handshakes
        );
    }
    println!();
    println!("  pod-to-pod ping RTT, ms (avg of 5)");
    print!("  {:<10}", "from \\ to");
    for j in 0..NODES {
        print!(" {:>8}", format!("pod-{}", j + 1));
    }
    println!();
    for (i, row) in rtt.iter().enumerate() {
        print!("  {:<10}", format!("pod-{}", i + 1));
        for cell in row {
            match cell {
                Some(ms) => print!(" {ms:>8.3}"),
                None => print!(" {:>8}", "-"),
            }
        }
        println!();
    }
    println!();
    println!("  pod-to-pod TCP, one stream, {mb} MiB each, byte count and checksum verified");
    for (i, j, secs, bytes) in &tcp {
        println!(
            "  pod-{} -> pod-{}   {:>6} MiB in {:>7.3} s   {:>6.2} Gbit/s",
            i + 1,
            j + 1,
            bytes >> 20,
            secs,
            *bytes as f64 * 8.0 / secs.max(1e-9) / 1e9
        );
    }
    println!();
    println!("  removing the namespaces and daemons");
    drop(mesh);
    println!("\nok");
    Ok(())
}

fn status_json(exe: &Path, node: &Node) -> anyhow::Result<serde_json::Value> {
    let out =
        run(Command::new("ip").args(["netns", "exec", &node.ns]).arg(exe).args(["status", "--json", &node.ifname]))?;
    serde_json::from_str(&out).context("parsing vxwg status --json")
}

/// The average of `rtt min/avg/max/mdev = a/b/c/d ms`.
fn parse_avg_rtt(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.contains("min/avg/max"))?;
    line.split('=').nth(1)?.trim().split('/').nth(1)?.parse().ok()
}

/// Runs `vxwg demo-tcp serve` in `to_ns` and `vxwg demo-tcp send` in `from_ns`; returns the
/// receiver's seconds and bytes after checking both sides agree on count and checksum.
fn tcp_transfer(exe: &Path, from_ns: &str, to_ns: &str, to_ip: &str, mb: u32) -> anyhow::Result<(f64, u64)> {
    let addr = format!("{to_ip}:5201");
    let mut server = Command::new("ip")
        .args(["netns", "exec", to_ns])
        .arg(exe)
        .args(["demo-tcp", "serve", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the receiver")?;
    let result = (|| {
        let mut lines = BufReader::new(server.stdout.take().context("receiver stdout")?).lines();
        let ready = lines.next().context("receiver exited")??;
        ensure!(ready == "ready", "receiver said {ready:?}");
        let sent = run(Command::new("ip").args(["netns", "exec", from_ns]).arg(exe).args([
            "demo-tcp",
            "send",
            &addr,
            "--mb",
            &mb.to_string(),
        ]))?;
        let received = lines.next().context("receiver printed nothing")??;
        let (sent, received) =
            (sent.split_whitespace().collect::<Vec<_>>(), received.split_whitespace().collect::<Vec<_>>());
        ensure!(sent.len() == 3 && received.len() == 3, "unexpected report: {sent:?} / {received:?}");
        ensure!(
            sent[0] == received[0] && sent[2] == received[2],
            "sent {} bytes (checksum {}), received {} (checksum {})",
            sent[0],
            sent[2],
            received[0],
            received[2]
        );
        let bytes: u64 = received[0].parse()?;
        ensure!(bytes == u64::from(mb) << 20, "received {bytes} bytes, expected {}", u64::from(mb) << 20);
        Ok((received[1].parse::<f64>()?, bytes))
    })();
    if result.is_err() {
        let _ = server.kill();
    }
    let out = server.wait_with_output()?;
    match result {
        Ok(r) => Ok(r),
        Err(e) => Err(e.context(String::from_utf8_lossy(&out.stderr).trim().to_string())),
    }
}

const CHUNK: usize = 1 << 20;

/// FNV-1a over the stream taken as little-endian 64-bit words (cheap enough not to limit the
/// measured rate), independent of how reads split the stream.
struct Checksum {
    hash: u64,
    pending: [u8; 8],
    filled: usize,
}

impl Checksum {
    fn new() -> Checksum {
        Checksum { hash: 0xcbf2_9ce4_8422_2325, pending: [0; 8], filled: 0 }
    }

    fn word(&mut self, w: [u8; 8]) {
        self.hash = (self.hash ^ u64::from_le_bytes(w)).wrapping_mul(0x100_0000_01b3);
    }

    fn update(&mut self, mut bytes: &[u8]) {
        if self.filled > 0 {
            let take = (8 - self.filled).min(bytes.len());
            self.pending[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled < 8 {
                return;
            }
            self.word(self.pending);
            self.filled = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.word(w.try_into().expect("8 bytes"));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
    }

    fn finish(mut self) -> u64 {
        if self.filled > 0 {
            self.pending[self.filled..].fill(0);
            self.word(self.pending);
        }
        self.hash
    }
}

/// One MiB of xorshift bytes, the same on both sides.
fn pattern() -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..CHUNK / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

/// `vxwg demo-tcp serve ADDR`: accept one connection, read to EOF; print `bytes seconds checksum`.
pub fn serve(addr: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    println!("ready");
    std::io::stdout().flush()?;
    let (mut conn, _) = listener.accept()?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let start = Instant::now();
    let mut buf = vec![0u8; 256 << 10];
    let (mut bytes, mut sum) = (0u64, Checksum::new());
    loop {
        let n = conn.read(&mut buf).context("receiving")?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        sum.update(&buf[..n]);
    }
    println!("{bytes} {:.6} {:016x}", start.elapsed().as_secs_f64(), sum.finish());
    Ok(())
}

/// `vxwg demo-tcp send ADDR --mb N`: send N MiB; print `bytes seconds checksum`.
pub fn send(addr: SocketAddr, mb: u32) -> anyhow::Result<()> {
    let data = pattern();
    let mut conn =
        TcpStream::connect_timeout(&addr, Duration::from_secs(10)).with_context(|| format!("connecting to {addr}"))?;
    conn.set_write_timeout(Some(Duration::from_secs(30)))?;
    let start = Instant::now();
    for _ in 0..mb {
        conn.write_all(&data).context("sending")?;
    }
    conn.shutdown(std::net::Shutdown::Write)?;
    // Wait for the receiver to close, so the connection is fully drained.
    let _ = conn.read(&mut [0u8; 1]);
    let secs = start.elapsed().as_secs_f64();
    let mut sum = Checksum::new();
    for _ in 0..mb {
        sum.update(&data);
    }
    println!("{} {secs:.6} {:016x}", u64::from(mb) * CHUNK as u64, sum.finish());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_does_not_depend_on_how_the_stream_is_split() {
        let data = pattern();
        let mut whole = Checksum::new();
        whole.update(&data[..1001]);
        let mut parts = Checksum::new();
        for piece in data[..1001].chunks(3) {
            parts.update(piece);
        }
        assert_eq!(whole.finish(), parts.finish());
        let (mut a, mut b) = (Checksum::new(), Checksum::new());
        a.update(&data[..1000]);
        b.update(&data[..999]);
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn parses_the_average_rtt() {
        let out = "--- 10.42.2.2 ping statistics ---\n5 packets transmitted, 5 received, 0% packet loss, time 822ms\nrtt min/avg/max/mdev = 0.311/0.518/0.901/0.204 ms\n";
        assert_eq!(parse_avg_rtt(out), Some(0.518));
        assert_eq!(parse_avg_rtt("100% packet loss"), None);
    }
}
