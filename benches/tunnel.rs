//! `cargo bench --bench tunnel`: throughput through a real tunnel, vxwg against wireguard-go and
//! boringtun, on this machine only (root; network namespaces). Four cases, all in one invocation
//! and alternating within each round:
//! * `tcp` (`tunnel/tcp_single_stream`): one TCP stream, Gbit/s received;
//! * `tcp4` (`tunnel/tcp_4_streams`): `iperf3 -P 4`, Gbit/s received, all streams together;
//! * `udp64` (`tunnel/udp_64_byte_packets`): `iperf3 -u -l 64 -b 0 -w 4M` (64-byte UDP payloads,
//!   no rate limit, 4 MB socket buffers at both iperf3 ends so that the receiving iperf3's own
//!   socket is not the first to overflow; `VXWG_BENCH_UDP_WINDOW=SIZE` or `=default`), packets per
//!   second *delivered to the receiving iperf3* (its bytes received over 64, over its own elapsed
//!   time), not packets sent;
//! * `pod` (`tunnel/pod_tcp_single_stream`): one TCP stream pod to pod (see below).
//!
//! For every run the bench also counts where packets were lost: the receiving node namespace's
//! `Udp: RcvbufErrors` (plus `Udp6RcvbufErrors`) before and after the transfer ("rx drops"), the
//! drop counter (`ss -m`, `d`) of the receiving tunnel daemon's own UDP sockets (port 51820) just
//! before it stops ("tunnel socket"), and the sending node namespace's interfaces' `tx_dropped`
//! before and after ("tx drops": a TUN whose queue the daemon does not drain in time). In the
//! `udp64` case the rx figure also includes the receiving iperf3's socket (for the plain
//! contenders it runs in the receiving node's namespace), which the tunnel socket figure does not.
//! For TCP it also counts the segments the receiver reported as received twice (D-SACK, from the
//! sending namespace's `TcpExt: TCPDSACKRecvSegs`): a retransmission covered by one was spurious,
//! the original having been reordered, not lost.
//! It also reads each daemon process's CPU time (user + system, all threads, `/proc/PID/stat`)
//! over the transfer, in % of one core: above 100% means the daemon used more than one core.
//! And how long each side was runnable but waited for a CPU ("waited for a CPU", summed over
//! threads from `/proc/PID/task/*/schedstat`, in % of the time measured): the iperf3 pair from
//! 1 s in to 1 s before the end, the daemons over the whole transfer. Where the cores are
//! shared, this shows who was kept off them.
//!
//! Needs, beyond what `.ci/run` installs (`ip`, `wg`, `wireguard-go`), which it does not install
//! because CI does not run benches:
//! * `iperf3` (Debian package: `apt-get install -y iperf3`), required;
//! * `boringtun-cli` (crates.io: `cargo install boringtun-cli --locked`), optional: without it the
//!   boringtun column is skipped, with a note saying how to install it. `wireguard-go` is optional
//!   the same way.
//!
//! Each run builds two fresh namespaces joined by a veth pair (underlay 10.202.0.1/24 <-> .2),
//! starts one daemon of the implementation under test in each (interfaces `vb<pid>n<k>`, overlay
//! 100.64.20.1/24 <-> .2, MTU 1420), configures them with `wg`, waits for a ping to cross, then runs
//! `iperf3 -c 100.64.20.2 -t SECONDS -J [case options]` from A against `iperf3 -s -1 -B
//! 100.64.20.2` in B and reads `end.sum_received`. Each round runs every selected case, and within
//! a case every contender in turn (vxwg with its default of one worker per core, vxwg with one
//! worker (`VXWG_WORKERS=1`, to show what the second core adds), wireguard-go, boringtun, the null
//! tunnel, then the bare veth pair as context; the pod case has its own two contenders; the order
//! rotates by one each round), for
//! ROUNDS rounds, so drift on the shared machine hits all of them alike. The summary gives, per case, the median, min and max per
//! contender and its median receive-buffer drops, then the ratios of the medians vxwg/peer with
//! the throughput issue's targets next to them.
//!
//! The pod case has two pod-to-pod contenders. Each adds a pod namespace behind each node
//! (veth, node side 10.42.1.1/24 and 10.42.2.1/24, pods .2 with a default route to it, forwarding
//! on in the node namespace) and runs iperf3 from pod A against pod B at 10.42.2.2:
//! * "vxwg pod": both nodes `vxwg up --foreground --config NODE.toml` with `[vxlan]` (VTEP = own
//!   overlay address, pod CIDR 10.42.N.0/24, the peer's VTEP MAC and pod CIDR), VXLAN inside
//!   WireGuard in one process;
//! * "wg-go+kernel vxlan": both nodes wireguard-go plus a flannel-style kernel vxlan device (VNI
//!   1, dstport 8472, local = own overlay address, nolearning, MTU = tunnel MTU - 50, an fdb entry
//!   for the other VTEP's MAC at the other overlay address, a neighbour and an onlink route for
//!   the other pod CIDR). Needs `bridge` (iproute2).
//!
//! The null tunnel (`tunnel_null.rs`, this bench's own executable re-run in each namespace as
//! `--null-tunnel`) moves packets between its TUN and its UDP socket with vxwg's system calls and
//! offloads but no cryptography and no protocol, one thread per end: the ratio vxwg/null tunnel
//! is what the cryptography and the protocol cost in each case, and null/wireguard-go is how far
//! a tunnel that does nothing at all gets against the same targets on this machine.
//!
//! Targets printed with the ratios: single-stream TCP vxwg >= 6x wireguard-go and >= 6x boringtun;
//! 64-byte UDP packets delivered vxwg >= 5x wireguard-go; vxwg pod >= 2x wg-go+kernel vxlan and
//! >= 0.85x vxwg's own single-stream figure (the `tcp` case of the same invocation).
//!
//! The vxwg binary measured is `CARGO_BIN_EXE_vxwg`: before running a bench, cargo builds the
//! package's binaries with the bench profile (which inherits release; `[profile.bench]` mirrors
//! `[profile.release]`) and hands the bench their absolute path, whatever CARGO_TARGET_DIR or
//! `build.target-dir` say. That is the release binary, always up to date, with no nested cargo
//! and no guessing at target/release. `VXWG_BENCH_BIN=/path/to/vxwg` measures another build.
//!
//! Knobs: `VXWG_BENCH_SECONDS` (default 8), `VXWG_BENCH_ROUNDS` (default 3),
//! `VXWG_BENCH_CASES=tcp,tcp4,udp64,pod` (default: all), `VXWG_BENCH_CONTENDERS=vxwg,vxwg1,
//! vxwgassist,wggo,boringtun,null,veth` (default: all but `vxwgassist`, vxwg with `VXWG_ASSIST=on`;
//! the pod case's contenders follow `vxwg` and `wggo`). Filter
//! arguments select cases too: `cargo bench --bench tunnel -- udp` runs only
//! `tunnel/udp_64_byte_packets`; `-- --list` lists the case ids. Each run's daemon
//! stderr and iperf3 output go to files under `CARGO_TARGET_TMPDIR/tunnel-<pid>/`, kept after the
//! run, with each vxwg daemon's `vxwg status --json` taken just after the transfer
//! (`*.a.status.json`, `*.b.status.json`), and each namespace's `/proc/net/snmp`, `netstat` and
//! `ip -s -s link` after it (`*.a.counters`, `*.b.counters`, and `*.pod-a.counters`,
//! `*.pod-b.counters` in the pod case); a failed run prints the daemons' last lines.
//! `VXWG_BENCH_NICE=N` starts the vxwg daemons under `nice -n N` (the others unchanged), to see
//! how a case depends on the CPU share the daemons get against iperf3 on the same cores.
//!
//! Exits 0 without doing anything when not root, under `cargo test --benches` (no `--bench`
//! argument) or when no case id matches the filter arguments; exits 1 after
//! the table if any run failed, 130 on Ctrl-C. Namespaces, daemons and iperf3 processes are
//! removed by guards on drop, also on a panic or Ctrl-C.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use vxwg::dataplane::io::cpu::parse_schedstat;

#[path = "tunnel_null.rs"]
mod null_tunnel;

const UNDERLAY_A: &str = "10.202.0.1";
const UNDERLAY_B: &str = "10.202.0.2";
const OVERLAY_A: &str = "100.64.20.1";
const OVERLAY_B: &str = "100.64.20.2";
const TUNNEL_MTU: u32 = 1420;
const WG_PORT: u16 = 51820;
/// The pod cases: a pod namespace behind each node (gateway .1 on the node, pod .2).
const POD_CIDR_A: &str = "10.42.1.0/24";
const POD_CIDR_B: &str = "10.42.2.0/24";
const POD_GW_A: &str = "10.42.1.1";
const POD_GW_B: &str = "10.42.2.1";
const POD_A: &str = "10.42.1.2";
const POD_B: &str = "10.42.2.2";
/// flannel's "gateway" address of each node's pod CIDR, on its kernel vxlan device.
const POD_NET_A: &str = "10.42.1.0";
const POD_NET_B: &str = "10.42.2.0";
const VTEP_MAC_A: &str = "02:00:00:00:20:01";
const VTEP_MAC_B: &str = "02:00:00:00:20:02";
/// The UDP payload of the packet-rate case (`iperf3 -l`).
const UDP_PAYLOAD: u16 = 64;
/// VXLAN over IPv4 VTEPs: outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
const VXLAN_OVERHEAD: u32 = 50;

static NEXT: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------------------------
// Arguments and environment

/// What one run measures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    /// One TCP stream, Gbit/s received.
    Tcp,
    /// Four TCP streams (`iperf3 -P 4`), Gbit/s received in total.
    Tcp4,
    /// 64-byte UDP payloads at no rate limit, packets per second delivered to the receiver.
    Udp64,
    /// One TCP stream from a pod behind node A to a pod behind node B.
    Pod,
}

impl Case {
    const ALL: [Case; 4] = [Case::Tcp, Case::Tcp4, Case::Udp64, Case::Pod];

    /// What filter arguments are matched against (and what `--list` prints).
    fn id(self) -> &'static str {
        match self {
            Case::Tcp => "tunnel/tcp_single_stream",
            Case::Tcp4 => "tunnel/tcp_4_streams",
            Case::Udp64 => "tunnel/udp_64_byte_packets",
            Case::Pod => "tunnel/pod_tcp_single_stream",
        }
    }

    /// The name in `VXWG_BENCH_CASES`, log file names and the summary.
    fn key(self) -> &'static str {
        match self {
            Case::Tcp => "tcp",
            Case::Tcp4 => "tcp4",
            Case::Udp64 => "udp64",
            Case::Pod => "pod",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Case::Tcp => "single-stream TCP",
            Case::Tcp4 => "4-stream TCP (iperf3 -P 4)",
            Case::Udp64 => "64-byte UDP packet rate (iperf3 -u -l 64 -b 0 -w 4M), delivered to the receiver",
            Case::Pod => "pod-to-pod single-stream TCP",
        }
    }

    /// iperf3 client options beyond `-c ADDR -t SECONDS -J`.
    fn iperf_args(self) -> &'static [&'static str] {
        match self {
            Case::Tcp | Case::Pod => &[],
            Case::Tcp4 => &["-P", "4"],
            // `-l` is UDP_PAYLOAD.
            Case::Udp64 => &["-u", "-l", "64", "-b", "0"],
        }
    }

    /// Whether `which` takes part in this case.
    fn has(self, which: Impl) -> bool {
        match self {
            Case::Pod => matches!(which, Impl::VxwgPod | Impl::WgGoVxlan),
            _ => !matches!(which, Impl::VxwgPod | Impl::WgGoVxlan),
        }
    }

    /// The figure of merit in the summary's unit (Gbit/s or Mpackets/s).
    fn figure(self, m: &Measured) -> f64 {
        match self {
            Case::Udp64 => m.packets_per_second.unwrap_or(0.0) / 1e6,
            _ => m.bits_per_second / 1e9,
        }
    }

    /// What [`daemon_cpu_per_work`] is in: both daemons' cores over this case's figure.
    fn cpu_unit(self) -> &'static str {
        match self {
            Case::Udp64 => "us/pkt",
            _ => "core-s/Gbit",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Case::Udp64 => "Mpkt/s",
            _ => "Gbit/s",
        }
    }
}

/// Whether `cargo bench` (not `cargo test`) invoked us, and which cases the filters select.
enum Mode {
    Run(Vec<Case>),
    List(Vec<Case>),
    Skip(String),
}

fn mode(args: &[String]) -> Mode {
    // Options of criterion and libtest that take a value in the next argument.
    const WITH_VALUE: &[&str] = &[
        "-c",
        "--color",
        "-s",
        "--save-baseline",
        "-b",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--format",
        "--profile-time",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--plotting-backend",
        "--output-format",
        "--logfile",
        "--test-threads",
        "-Z",
    ];
    let (mut bench, mut test, mut list, mut exact) = (false, false, false, false);
    let (mut filters, mut skips) = (Vec::new(), Vec::new());
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bench" => bench = true,
            "--test" => test = true,
            "--list" => list = true,
            "--exact" => exact = true,
            "--skip" => skips.extend(it.next().cloned()),
            o if WITH_VALUE.contains(&o) => {
                it.next();
            }
            o if o.starts_with('-') => {}
            filter => filters.push(filter.to_string()),
        }
    }
    let selected: Vec<Case> = Case::ALL
        .into_iter()
        .filter(|c| {
            let matches = |f: &String| if exact { f == c.id() || f == "tunnel" } else { c.id().contains(f.as_str()) };
            (filters.is_empty() || filters.iter().any(matches)) && !skips.iter().any(|s| c.id().contains(s.as_str()))
        })
        .collect();
    if list {
        return if selected.is_empty() { Mode::Skip(String::new()) } else { Mode::List(selected) };
    }
    if !bench || test {
        return Mode::Skip("tunnel: not run under `cargo test` (run `cargo bench --bench tunnel`)".into());
    }
    if selected.is_empty() {
        return Mode::Skip(String::new());
    }
    Mode::Run(selected)
}

/// The comma-separated names in `name` (all of `known` when unset); panics on an unknown one.
fn env_list<'a>(name: &str, known: &[&'a str]) -> Vec<&'a str> {
    let Ok(v) = std::env::var(name) else { return known.to_vec() };
    let mut chosen = Vec::new();
    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        match known.iter().find(|k| **k == item) {
            Some(k) => chosen.push(*k),
            None => panic!("{name}={v:?}: unknown {item:?}, expected some of {known:?}"),
        }
    }
    chosen
}

fn env_number(name: &str, default: u32) -> u32 {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => panic!("{name}={v:?}: expected a positive integer"),
        },
        Err(_) => default,
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// The absolute path of `tool`: on PATH, else (for cargo-installed tools) in CARGO_HOME/bin or
/// ~/.cargo/bin, which `sudo` often drops from PATH.
fn find_tool(tool: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    dirs.extend(std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin")));
    dirs.extend(std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin")));
    dirs.extend(["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(tool)).find(|p| {
        std::fs::metadata(p)
            .is_ok_and(|m| m.is_file() && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
    })
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text).lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
        })
        .unwrap_or_else(|| "?".into())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map_or_else(|_| "?".into(), |s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

// ---------------------------------------------------------------------------------------------
// Shell, namespaces, daemons (after tests/netns.rs)

fn run(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

fn sh(cmd: &str) -> Result<String, String> {
    let o = run(cmd);
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!(
            "`{cmd}` failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout).trim(),
            String::from_utf8_lossy(&o.stderr).trim()
        ))
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A network namespace that is deleted (with everything still running in it) on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(tag: &str) -> Result<Netns, String> {
        let name = format!("vxwgb-{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        sh(&format!("ip netns add {name}"))?;
        let ns = Netns { name };
        ns.exec("ip link set lo up")?;
        Ok(ns)
    }

    fn exec(&self, cmd: &str) -> Result<String, String> {
        sh(&format!("ip netns exec {} sh -c {}", self.name, quote(cmd)))
    }

    fn try_exec(&self, cmd: &str) -> Output {
        run(&format!("ip netns exec {} sh -c {}", self.name, quote(cmd)))
    }

    /// Starts `program args` in the namespace, stdout and stderr appended to files (maybe the same).
    fn spawn(
        &self,
        program: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        stdout: &Path,
        stderr: &Path,
    ) -> Result<Child, String> {
        let open =
            |p: &Path| File::options().create(true).append(true).open(p).map_err(|e| format!("{}: {e}", p.display()));
        let out = open(stdout)?;
        let err = if stderr == stdout { out.try_clone().map_err(|e| e.to_string())? } else { open(stderr)? };
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        if let (Ok(n), true) = (std::env::var("VXWG_BENCH_NICE"), program.ends_with("vxwg")) {
            cmd.args(["nice", "-n", &n]);
        }
        cmd.arg(program).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawning {}: {e}", program.display()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run(&format!("ip netns pids {} | xargs -r kill -9", self.name));
        let _ = run(&format!("ip netns del {}", self.name));
    }
}

/// Two namespaces joined by a veth pair carrying the underlay.
fn underlay() -> Result<(Netns, Netns), String> {
    let (a, b) = (Netns::new("a")?, Netns::new("b")?);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let (va, vb) = (format!("vba{pid}n{n}"), format!("vbb{pid}n{n}"));
    sh(&format!("ip link add {va} netns {} type veth peer name {vb} netns {}", a.name, b.name))?;
    a.exec(&format!("ip addr add {UNDERLAY_A}/24 dev {va} && ip link set {va} up"))?;
    b.exec(&format!("ip addr add {UNDERLAY_B}/24 dev {vb} && ip link set {vb} up"))?;
    Ok((a, b))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Impl {
    Vxwg,
    /// vxwg with one packet worker (`VXWG_WORKERS=1`): what the second core adds.
    Vxwg1,
    /// vxwg with its workers always helping each other decrypt (`VXWG_ASSIST=on`; the default,
    /// `auto`, shares only while the machine has idle CPU). Only when named in
    /// `VXWG_BENCH_CONTENDERS`.
    VxwgAssist,
    WireguardGo,
    Boringtun,
    /// vxwg with `[vxlan]` on both nodes: pod to pod, VXLAN inside WireGuard.
    VxwgPod,
    /// wireguard-go on both nodes, each with a flannel-style kernel vxlan device over it.
    WgGoVxlan,
    /// A tunnel that only moves packets (no cryptography, no protocol), one thread per end, with
    /// vxwg's system calls and offloads (`tunnel_null.rs`): what the kernel and the iperf3 pair
    /// leave for any tunnel that crosses user space on these cores.
    Null,
    /// No tunnel: iperf3 over the veth pair itself.
    Veth,
}

impl Impl {
    fn label(self) -> &'static str {
        match self {
            Impl::Vxwg => "vxwg",
            Impl::Vxwg1 => "vxwg, 1 worker",
            Impl::VxwgAssist => "vxwg, assist on",
            Impl::WireguardGo => "wireguard-go",
            Impl::Boringtun => "boringtun",
            Impl::VxwgPod => "vxwg pod",
            Impl::WgGoVxlan => "wg-go+kernel vxlan",
            Impl::Null => "null tunnel",
            Impl::Veth => "veth (no tunnel)",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Impl::Vxwg => "vxwg",
            Impl::Vxwg1 => "vxwg1",
            Impl::VxwgAssist => "vxwgassist",
            Impl::WireguardGo => "wggo",
            Impl::Boringtun => "boringtun",
            Impl::VxwgPod => "vxwgpod",
            Impl::WgGoVxlan => "wggovxlan",
            Impl::Null => "null",
            Impl::Veth => "veth",
        }
    }
}

/// What each contender runs: the program and the arguments before the interface name.
struct Contender {
    which: Impl,
    program: PathBuf,
    args: Vec<&'static str>,
    env: Vec<(&'static str, &'static str)>,
}

impl Contender {
    fn command_line(&self) -> String {
        let env: String = self.env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let args: String = self.args.iter().map(|a| format!("{a} ")).collect();
        match self.which {
            Impl::VxwgPod => format!("{env}{} {args}NODE.toml IFNAME  ([vxlan], pods behind)", self.program.display()),
            Impl::WgGoVxlan => format!(
                "{env}{} {args}IFNAME  (+ kernel vxlan id 1 dstport 8472, mtu {}, pods behind)",
                self.program.display(),
                TUNNEL_MTU - VXLAN_OVERHEAD
            ),
            Impl::Null => {
                format!("{} {args}IFNAME {WG_PORT} PEER:{WG_PORT}  (no crypto, 1 thread)", self.program.display())
            }
            _ => format!("{env}{} {args}IFNAME", self.program.display()),
        }
    }
}

/// A running WireGuard daemon in a namespace: stopped (and its UAPI socket removed) on drop.
struct Node<'a> {
    ns: &'a Netns,
    ifname: String,
    child: Option<Child>,
    log: PathBuf,
    public: String,
    overlay: &'static str,
}

fn socket_path(ifname: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{ifname}.sock"))
}

impl<'a> Node<'a> {
    fn start(ns: &'a Netns, c: &Contender, overlay: &'static str, log: PathBuf) -> Result<Node<'a>, String> {
        // A unique name: the UAPI socket directory is shared by all namespaces.
        let ifname = format!("vb{}n{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed));
        let private = sh("wg genkey")?.trim().to_string();
        let public = sh(&format!("echo {private} | wg pubkey"))?.trim().to_string();
        let mut args = c.args.clone();
        args.push(&ifname);
        let child = ns.spawn(&c.program, &args, &c.env, &log, &log)?;
        let mut node = Node { ns, ifname, child: Some(child), log, public, overlay };
        let sock = socket_path(&node.ifname);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sock.exists() {
            if let Some(status) = node.exited() {
                return Err(format!("{} exited during start-up ({status}){}", c.which.label(), node.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not create {} in 10 s{}",
                    c.which.label(),
                    sock.display(),
                    node.log_tail()
                ));
            }
            stop_requested()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        let keyfile = std::env::temp_dir().join(format!("{}.key", node.ifname));
        std::fs::write(&keyfile, &private).map_err(|e| e.to_string())?;
        // The socket file appears just before the daemon listens on it: retry briefly.
        let set = format!("wg set {} private-key {} listen-port {WG_PORT}", node.ifname, keyfile.display());
        let deadline = Instant::now() + Duration::from_secs(3);
        let result = loop {
            match ns.exec(&set) {
                Ok(_) => break Ok(()),
                Err(e) if Instant::now() > deadline => break Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        let _ = std::fs::remove_file(&keyfile);
        result.map_err(|e| format!("{e}{}", node.log_tail()))?;
        ns.exec(&format!("ip addr add {overlay}/24 dev {i} && ip link set {i} mtu {TUNNEL_MTU} up", i = node.ifname))?;
        Ok(node)
    }

    /// Starts the null tunnel (this bench's own executable) towards `peer_underlay`, and gives
    /// its TUN the overlay address, the tunnel MTU and vxwg's segment cap once it exists.
    fn start_null(
        ns: &'a Netns,
        c: &Contender,
        overlay: &'static str,
        peer_underlay: &str,
        log: PathBuf,
    ) -> Result<Node<'a>, String> {
        let ifname = format!("vb{}n{}", std::process::id() % 100_000, NEXT.fetch_add(1, Ordering::Relaxed));
        let peer = format!("{peer_underlay}:{WG_PORT}");
        let port = WG_PORT.to_string();
        let mut args = c.args.clone();
        args.extend([ifname.as_str(), port.as_str(), peer.as_str()]);
        let child = ns.spawn(&c.program, &args, &c.env, &log, &log)?;
        let mut node = Node { ns, ifname, child: Some(child), log, public: String::new(), overlay };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ns.try_exec(&format!("ip link show {}", node.ifname)).status.success() {
            if let Some(status) = node.exited() {
                return Err(format!("the null tunnel exited during start-up ({status}){}", node.log_tail()));
            }
            if Instant::now() > deadline {
                return Err(format!("the null tunnel did not create {} in 10 s{}", node.ifname, node.log_tail()));
            }
            stop_requested()?;
            std::thread::sleep(Duration::from_millis(20));
        }
        ns.exec(&format!(
            "ip link set {i} gso_max_segs {segs} && ip addr add {overlay}/24 dev {i} && ip link set {i} mtu {TUNNEL_MTU} up",
            i = node.ifname,
            segs = null_tunnel::MAX_SEGMENTS
        ))?;
        Ok(node)
    }

    fn add_peer(&self, peer: &Node, endpoint: &str) -> Result<(), String> {
        self.ns
            .exec(&format!(
                "wg set {} peer {} allowed-ips {}/32 endpoint {endpoint}:{WG_PORT}",
                self.ifname, peer.public, peer.overlay
            ))
            .map(drop)
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last lines of the daemon's stderr, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = if lines.is_empty() {
            "(empty)".to_string()
        } else {
            lines[lines.len().saturating_sub(15)..].join("\n    ")
        };
        format!("\n  {} (last lines):\n    {tail}", self.log.display())
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first so it can remove its socket; then make sure.
            let _ = run(&format!("kill -TERM {} 2>/dev/null", c.id()));
            let deadline = Instant::now() + Duration::from_secs(2);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(socket_path(&self.ifname));
    }
}

impl Drop for Node<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Removes a directory (a vxwg config and key) on drop.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pod namespace behind a node namespace: a veth pair, `gw` on the node's side and `pod` in
/// the pod namespace (both /24), the pod's default route via `gw`, forwarding on in the node.
/// Deleting the pod namespace (on drop) removes the pair.
fn pod_behind(node: &Netns, tag: &str, gw: &str, pod: &str) -> Result<Netns, String> {
    let ns = Netns::new(tag)?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let (vn, vp) = (format!("vbn{pid}n{n}"), format!("vbp{pid}n{n}"));
    sh(&format!("ip link add {vn} netns {} type veth peer name {vp} netns {}", node.name, ns.name))?;
    node.exec(&format!("ip addr add {gw}/24 dev {vn} && ip link set {vn} up && sysctl -qw net.ipv4.ip_forward=1"))?;
    ns.exec(&format!("ip addr add {pod}/24 dev {vp} && ip link set {vp} up && ip route add default via {gw}"))?;
    Ok(ns)
}

/// Starts vxwg from a config file with `[vxlan]` in `ns`: VTEP `me` (its overlay address),
/// `pods` behind it, and one peer at `endpoint` with VTEP `peer_ip` and `peer_pods` behind it.
/// Returns the node and the config directory's guard; waits until the pod route is installed.
fn start_vxwg_pod<'a>(
    ns: &'a Netns,
    c: &Contender,
    keys: (&str, &str),
    me: (&'static str, &str, &str),
    peer: (&str, &str, &str, &str, &str),
    log: PathBuf,
) -> Result<(Node<'a>, RemoveDir), String> {
    let (private, public) = keys;
    let (overlay, mac, pods) = me;
    let (peer_public, endpoint, peer_ip, peer_mac, peer_pods) = peer;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    let (ifname, pod_if) = (format!("vb{pid}n{n}"), format!("vbq{pid}n{n}"));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tunnel-{}-cfg{n}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let guard = RemoveDir(dir.clone());
    std::fs::write(dir.join("private.key"), private).map_err(|e| e.to_string())?;
    let config = [
        "private_key_file = \"private.key\"".to_string(),
        format!("listen_port = {WG_PORT}"),
        format!("addresses = [\"{overlay}/32\"]"),
        format!("mtu = {TUNNEL_MTU}"),
        "[vxlan]".to_string(),
        format!("vtep_mac = \"{mac}\""),
        format!("pod_interface = \"{pod_if}\""),
        format!("pod_cidrs = [\"{pods}\"]"),
        "[[peer]]".to_string(),
        format!("public_key = \"{peer_public}\""),
        format!("endpoint = \"{endpoint}:{WG_PORT}\""),
        format!("allowed_ips = [\"{peer_ip}/32\"]"),
        format!("vtep_mac = \"{peer_mac}\""),
        format!("pod_cidrs = [\"{peer_pods}\"]"),
    ]
    .join("\n");
    let toml = dir.join("node.toml");
    std::fs::write(&toml, config).map_err(|e| e.to_string())?;
    let mut args = c.args.clone();
    let toml = toml.display().to_string();
    args.push(&toml);
    args.push(&ifname);
    let child = ns.spawn(&c.program, &args, &c.env, &log, &log)?;
    let mut node = Node { ns, ifname, child: Some(child), log, public: public.to_string(), overlay };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ns.try_exec(&format!("ip route show table 52 | grep -q 'dev {pod_if}'")).status.success() {
        if let Some(status) = node.exited() {
            return Err(format!("vxwg exited during start-up ({status}){}", node.log_tail()));
        }
        if Instant::now() > deadline {
            return Err(format!("vxwg did not route the pod CIDR into {pod_if} in 10 s{}", node.log_tail()));
        }
        stop_requested()?;
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((node, guard))
}

/// A flannel-style kernel VTEP on a wireguard-go node: VNI 1, port 8472, local = its overlay
/// address, no learning; the other node's pod CIDR via that node's "gateway" (the network
/// address), whose MAC is the other VTEP's MAC, found at the other overlay address.
fn kernel_vxlan(ns: &Netns, own: (&str, &str, &str), other: (&str, &str, &str, &str)) -> Result<(), String> {
    let (overlay, mac, pod_net) = own;
    let (other_overlay, other_mac, other_net, other_cidr) = other;
    ns.exec(&format!(
        "ip link add vxlan0 type vxlan id 1 dstport 8472 local {overlay} nolearning && \
         ip link set vxlan0 address {mac} mtu {mtu} up && \
         ip addr add {pod_net}/32 dev vxlan0 && \
         ip neigh add {other_net} lladdr {other_mac} dev vxlan0 nud permanent && \
         bridge fdb append {other_mac} dev vxlan0 dst {other_overlay} && \
         ip route add {other_cidr} via {other_net} dev vxlan0 onlink",
        mtu = TUNNEL_MTU - VXLAN_OVERHEAD
    ))
    .map(drop)
}

/// One pod-to-pod run: fresh node and pod namespaces, fresh daemons (vxwg with `[vxlan]`, or
/// wireguard-go plus kernel vxlan), one iperf3 transfer from pod A to pod B.
fn measure_pod(c: &Contender, case: Case, seconds: u32, logs: &Path, round: u32) -> Result<Measured, String> {
    let (na, nb) = underlay()?;
    let pa = pod_behind(&na, "pa", POD_GW_A, POD_A)?;
    let pb = pod_behind(&nb, "pb", POD_GW_B, POD_B)?;
    let prefix = logs.join(format!("round{round}-{}-{}", case.key(), c.which.tag()));
    let (mut a, mut b, _dirs) = match c.which {
        Impl::VxwgPod => {
            let key = || -> Result<(String, String), String> {
                let private = sh("wg genkey")?.trim().to_string();
                let public = sh(&format!("echo {private} | wg pubkey"))?.trim().to_string();
                Ok((private, public))
            };
            let (ka, kb) = (key()?, key()?);
            let (a, da) = start_vxwg_pod(
                &na,
                c,
                (&ka.0, &ka.1),
                (OVERLAY_A, VTEP_MAC_A, POD_CIDR_A),
                (&kb.1, UNDERLAY_B, OVERLAY_B, VTEP_MAC_B, POD_CIDR_B),
                prefix.with_extension("a.log"),
            )?;
            let (b, db) = start_vxwg_pod(
                &nb,
                c,
                (&kb.0, &kb.1),
                (OVERLAY_B, VTEP_MAC_B, POD_CIDR_B),
                (&ka.1, UNDERLAY_A, OVERLAY_A, VTEP_MAC_A, POD_CIDR_A),
                prefix.with_extension("b.log"),
            )?;
            (a, b, vec![da, db])
        }
        Impl::WgGoVxlan => {
            let a = Node::start(&na, c, OVERLAY_A, prefix.with_extension("a.log"))?;
            let b = Node::start(&nb, c, OVERLAY_B, prefix.with_extension("b.log"))?;
            a.add_peer(&b, UNDERLAY_B)?;
            b.add_peer(&a, UNDERLAY_A)?;
            kernel_vxlan(&na, (OVERLAY_A, VTEP_MAC_A, POD_NET_A), (OVERLAY_B, VTEP_MAC_B, POD_NET_B, POD_CIDR_B))?;
            kernel_vxlan(&nb, (OVERLAY_B, VTEP_MAC_B, POD_NET_B), (OVERLAY_A, VTEP_MAC_A, POD_NET_A, POD_CIDR_A))?;
            (a, b, Vec::new())
        }
        other => return Err(format!("{} is not a pod case", other.label())),
    };
    let result = ping_then_transfer(c, &mut a, &mut b, &pa, POD_B, "from pod A to pod B", || {
        iperf(&pa, &pb, (&na, &nb), POD_B, case, seconds, &prefix)
    });
    save_counters(&prefix, &[("a", &na), ("b", &nb), ("pod-a", &pa), ("pod-b", &pb)]);
    result
}

/// Keeps each namespace's protocol counters and interface statistics after a run, next to the
/// run's logs (`PREFIX.NAME.counters`): where a packet was lost or reordered shows there.
fn save_counters(prefix: &Path, namespaces: &[(&str, &Netns)]) {
    for (name, ns) in namespaces {
        let out = ns.try_exec("cat /proc/net/snmp /proc/net/netstat; ip -s -s link");
        let _ = std::fs::write(prefix.with_extension(format!("{name}.counters")), out.stdout);
    }
}

/// Kills a child process (an iperf3 server) on drop.
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One measurement

/// Set by Ctrl-C / SIGTERM: the bench stops at the next check, cleaning up through the guards.
static STOP: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));

fn stop_requested() -> Result<(), String> {
    if STOP.load(Ordering::Relaxed) {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

struct Measured {
    /// Received, all streams together.
    bits_per_second: f64,
    /// UDP only: packets delivered to the receiving iperf3 per second of its run.
    packets_per_second: Option<f64>,
    /// UDP only: packets the sending iperf3 sent per second.
    sent_packets_per_second: Option<f64>,
    retransmits: Option<u64>,
    /// TCP only: segments the receiver reported as received twice (D-SACK); a retransmission
    /// it covers was spurious, caused by reordering rather than loss.
    dsacked: Option<u64>,
    sender_cpu: Option<f64>,
    receiver_cpu: Option<f64>,
    /// Receive-buffer drops during the transfer, whole receiving node namespace.
    rx_drops: Option<u64>,
    /// Packets the sending node's interfaces dropped on transmit during the transfer (a TUN
    /// whose queue the daemon does not drain in time counts them).
    tx_drops: Option<u64>,
    /// Of those, on the receiving tunnel daemon's own UDP sockets (port 51820), over its lifetime.
    tunnel_socket_drops: Option<u64>,
    /// CPU time of the sending and the receiving daemon process (all threads, user + system)
    /// over the transfer, in % of one core: above 100 means more than one core at work. Kernel
    /// work done in softirq context (a kernel vxlan device, the veth) is not included.
    daemon_cpu: Option<(f64, f64)>,
    /// Time each side spent runnable but waiting for a CPU, in % of the time measured: the
    /// iperf3 pair over the middle of the transfer, the daemons (all threads) over all of it.
    iperf_wait: Option<(f64, f64)>,
    daemon_wait: Option<(f64, f64)>,
}

/// Seconds the threads of process `pid` (those alive now) have waited for a CPU while
/// runnable (`/proc/PID/task/*/schedstat`, second field).
fn wait_seconds(pid: u32) -> Option<f64> {
    let mut total = Duration::ZERO;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        total += parse_schedstat(&stat).map_or(Duration::ZERO, |t| t.waiting);
    }
    Some(total.as_secs_f64())
}

/// A share of the wall time, in %, from two readings of a counter of seconds.
fn share_of(before: Option<f64>, after: Option<f64>, wall: f64) -> Option<f64> {
    Some(100.0 * (after? - before?) / wall)
}

/// User + system CPU seconds of process `pid` so far, all its threads included.
fn cpu_seconds(pid: u32) -> Option<f64> {
    static TICKS: LazyLock<f64> = LazyLock::new(|| {
        first_line(Command::new("getconf").arg("CLK_TCK")).parse().ok().filter(|t| *t > 0.0).unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces: state is
    // field 3 of proc(5), utime 14 and stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / *TICKS)
}

/// Runs one transfer between two running daemons and adds what only they can tell: their CPU
/// time during it, and the drops on the receiving daemon's socket (read before it stops).
fn with_daemons(a: &Node, b: &Node, transfer: impl FnOnce() -> Result<Measured, String>) -> Result<Measured, String> {
    let cpu = |n: &Node| n.child.as_ref().and_then(|c| cpu_seconds(c.id()));
    let wait = |n: &Node| n.child.as_ref().and_then(|c| wait_seconds(c.id()));
    let (a0, b0, started) = (cpu(a), cpu(b), Instant::now());
    let (aw0, bw0) = (wait(a), wait(b));
    let m = transfer()?;
    let wall = started.elapsed().as_secs_f64();
    let (a1, b1) = (cpu(a), cpu(b));
    let daemon_cpu = Option::zip(share_of(a0, a1, wall), share_of(b0, b1, wall));
    let (aw1, bw1) = (wait(a), wait(b));
    let daemon_wait = Option::zip(share_of(aw0, aw1, wall), share_of(bw0, bw1, wall));
    Ok(Measured { tunnel_socket_drops: socket_drops(b.ns, WG_PORT), daemon_cpu, daemon_wait, ..m })
}

/// Datagrams dropped for a full receive buffer in `ns` so far: `Udp: RcvbufErrors` plus
/// `Udp6RcvbufErrors` (the counters are per network namespace).
fn rcvbuf_errors(ns: &Netns) -> Option<u64> {
    let v4 = table_counter(&ns.exec("cat /proc/net/snmp").ok()?, "Udp:", "RcvbufErrors")?;
    let v6: u64 = ns
        .exec("cat /proc/net/snmp6")
        .ok()
        .and_then(|t| t.lines().find_map(|l| l.strip_prefix("Udp6RcvbufErrors")?.trim().parse().ok()))
        .unwrap_or(0);
    Some(v4 + v6)
}

/// TCP segments in `ns` so far that the peer reported received twice (D-SACK, RFC 2883): the
/// retransmissions among them were spurious, the original having arrived late (reordered), not
/// lost.
fn dsack_segments(ns: &Netns) -> Option<u64> {
    table_counter(&ns.exec("cat /proc/net/netstat").ok()?, "TcpExt:", "TCPDSACKRecvSegs")
}

/// A counter of a `/proc/net/snmp`-style table: a line of names after `prefix`, then a line of
/// values after the same prefix.
fn table_counter(text: &str, prefix: &str, name: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let at = names.split_whitespace().position(|n| n == name)?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Transmit drops of all interfaces in `ns` so far (`ip netns exec` mounts the namespace's sysfs).
fn tx_dropped(ns: &Netns) -> Option<u64> {
    let out = ns.exec("cat /sys/class/net/*/statistics/tx_dropped").ok()?;
    out.lines().map(|l| l.trim().parse::<u64>().ok()).sum()
}

/// The drop counters (`skmem:(...,dN)`) of all UDP sockets bound to `port` in `ns`, summed: what
/// the tunnel daemon lost to its own full receive buffers (sockets opened by the kernel, like a
/// vxlan device's, are not listed).
fn socket_drops(ns: &Netns, port: u16) -> Option<u64> {
    let out = ns.exec(&format!("ss -Huamn sport = :{port}")).ok()?;
    let drops: Vec<u64> = out
        .split("skmem:(")
        .skip(1)
        .filter_map(|m| {
            let fields = &m[..m.find(')')?];
            fields.split(',').find_map(|f| f.strip_prefix('d')?.parse::<u64>().ok())
        })
        .collect();
    // No socket listed: unknown, not zero.
    (!drops.is_empty()).then(|| drops.iter().sum())
}

/// Finds `keys` one after another in `json` and parses the number that follows the last one.
fn json_number(json: &str, keys: &[&str]) -> Option<f64> {
    let mut at = 0;
    for k in keys {
        at += json[at..].find(&format!("\"{k}\""))? + k.len() + 2;
    }
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start();
    let end = rest.find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c))).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// iperf3's own error message in its JSON output, if any.
fn json_error(json: &str) -> Option<String> {
    let at = json.find("\"error\"")? + 7;
    let rest = json[at..].trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(rest[..rest.find('"').unwrap_or(rest.len())].to_string())
}

/// iperf3 from `a` to `server_ip` in `b` for `seconds`, with the case's options. Its output goes
/// to `prefix.iperf3-{server.log,client.json,client.err}`. `tx_drops` and `rx_drops` come from
/// the sending and the receiving node's namespaces, read before and after the transfer.
fn iperf(
    a: &Netns,
    b: &Netns,
    nodes: (&Netns, &Netns),
    server_ip: &str,
    case: Case,
    seconds: u32,
    prefix: &Path,
) -> Result<Measured, String> {
    let iperf3 = find_tool("iperf3").ok_or("iperf3 not found")?;
    let server_log = prefix.with_extension("iperf3-server.log");
    let server = Reaper(Some(b.spawn(&iperf3, &["-s", "-1", "-B", server_ip], &[], &server_log, &server_log)?));
    let server_pid = server.0.as_ref().map(Child::id);
    // Wait until it listens (a refused client would fail the run).
    let deadline = Instant::now() + Duration::from_secs(5);
    while !b.try_exec("ss -Hltn sport = :5201").stdout.contains(&b':') {
        if Instant::now() > deadline {
            return Err("iperf3 server did not listen within 5 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (json_path, err_path) =
        (prefix.with_extension("iperf3-client.json"), prefix.with_extension("iperf3-client.err"));
    let t = seconds.to_string();
    let mut args = vec!["-c", server_ip, "-t", &t, "-J", "--connect-timeout", "5000"];
    args.extend_from_slice(case.iperf_args());
    // 64-byte datagrams: iperf3's default socket buffers hold only a few hundred, and a receiving
    // iperf3 descheduled for a moment on this shared machine would drop the rest and cap every
    // contender alike; `-w` sets both ends' buffers.
    let window = std::env::var("VXWG_BENCH_UDP_WINDOW").unwrap_or_else(|_| "4M".into());
    if case == Case::Udp64 && window != "default" {
        args.extend(["-w", window.as_str()]);
    }
    let drops_before = (tx_dropped(nodes.0), rcvbuf_errors(nodes.1));
    let dsack_before = dsack_segments(a);
    let mut client = Reaper(Some(a.spawn(&iperf3, &args, &[], &json_path, &err_path)?));
    let client_pid = client.0.as_ref().map(Child::id);
    // Polled rather than waited for, so that Ctrl-C and a hung transfer end it.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(u64::from(seconds) + 30);
    // The iperf3 pair's waiting for a CPU, read 1 s in and 1 s before the end (both exit with
    // the transfer, and their threads' figures with them).
    let window = (Duration::from_secs(1), Duration::from_secs(u64::from(seconds).saturating_sub(1)));
    let read_waits = || (client_pid.and_then(wait_seconds), server_pid.and_then(wait_seconds), Instant::now());
    let (mut first, mut last) = (None, None);
    let status = loop {
        let child = client.0.as_mut().expect("client");
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        let since = started.elapsed();
        if first.is_none() && since >= window.0 {
            first = Some(read_waits());
        } else if last.is_none() && since >= window.1 && window.1 > window.0 {
            last = Some(read_waits());
        }
        stop_requested()?;
        if Instant::now() > deadline {
            return Err(format!("iperf3 client still running {} s after the end of its test", 30));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    client.0 = None;
    let iperf_wait = Option::zip(first, last).and_then(|((c0, s0, t0), (c1, s1, t1))| {
        let wall = (t1 - t0).as_secs_f64();
        Option::zip(share_of(c0, c1, wall), share_of(s0, s1, wall))
    });
    let tx_drops = Option::zip(tx_dropped(nodes.0), drops_before.0).map(|(after, before)| after - before);
    let rx_drops = Option::zip(rcvbuf_errors(nodes.1), drops_before.1).map(|(after, before)| after - before);
    let dsacked = Option::zip(dsack_segments(a), dsack_before).map(|(after, before)| after - before);
    let json = std::fs::read_to_string(&json_path).unwrap_or_default();
    if let Some(e) = json_error(&json) {
        return Err(format!("iperf3: {e}"));
    }
    if !status.success() {
        let err = std::fs::read_to_string(&err_path).unwrap_or_default();
        return Err(format!("iperf3 client failed ({status}): {}", err.trim()));
    }
    let field = |keys: &[&str]| {
        json_number(&json, keys).ok_or_else(|| format!("no {} in {}", keys.join("."), json_path.display()))
    };
    let bits_per_second = field(&["end", "sum_received", "bits_per_second"])?;
    let (packets_per_second, sent_packets_per_second) = if case == Case::Udp64 {
        // The receiver's own byte count, in whole datagrams (its `packets` is the highest
        // sequence number seen, which counts the lost ones too).
        let received = (field(&["end", "sum_received", "bytes"])? / f64::from(UDP_PAYLOAD)).floor();
        let elapsed = field(&["end", "sum_received", "seconds"])?;
        let sent = field(&["end", "sum_sent", "packets"])? / field(&["end", "sum_sent", "seconds"])?;
        (Some(received / elapsed), Some(sent))
    } else {
        (None, None)
    };
    Ok(Measured {
        bits_per_second,
        packets_per_second,
        sent_packets_per_second,
        retransmits: json_number(&json, &["end", "sum_sent", "retransmits"]).map(|r| r as u64),
        dsacked,
        sender_cpu: json_number(&json, &["end", "cpu_utilization_percent", "host_total"]),
        receiver_cpu: json_number(&json, &["end", "cpu_utilization_percent", "remote_total"]),
        rx_drops,
        tx_drops,
        tunnel_socket_drops: None,
        daemon_cpu: None,
        iperf_wait,
        daemon_wait: None,
    })
}

/// One run: fresh namespaces, fresh daemons, one iperf3 transfer.
fn measure(c: &Contender, case: Case, seconds: u32, logs: &Path, round: u32) -> Result<Measured, String> {
    if case == Case::Pod {
        return measure_pod(c, case, seconds, logs, round);
    }
    let (na, nb) = underlay()?;
    let prefix = logs.join(format!("round{round}-{}-{}", case.key(), c.which.tag()));
    if c.which == Impl::Veth {
        return iperf(&na, &nb, (&na, &nb), UNDERLAY_B, case, seconds, &prefix);
    }
    let (mut a, mut b) = if c.which == Impl::Null {
        let a = Node::start_null(&na, c, OVERLAY_A, UNDERLAY_B, prefix.with_extension("a.log"))?;
        (a, Node::start_null(&nb, c, OVERLAY_B, UNDERLAY_A, prefix.with_extension("b.log"))?)
    } else {
        let a = Node::start(&na, c, OVERLAY_A, prefix.with_extension("a.log"))?;
        let b = Node::start(&nb, c, OVERLAY_B, prefix.with_extension("b.log"))?;
        a.add_peer(&b, UNDERLAY_B)?;
        b.add_peer(&a, UNDERLAY_A)?;
        (a, b)
    };
    let result = ping_then_transfer(c, &mut a, &mut b, &na, OVERLAY_B, "across the tunnel", || {
        iperf(&na, &nb, (&na, &nb), OVERLAY_B, case, seconds, &prefix)
    });
    save_counters(&prefix, &[("a", &na), ("b", &nb)]);
    result
}

/// Waits (15 s at most) for a ping from `from` to `dst` to cross (the first packet starts the
/// handshake), runs `transfer` with the daemons' CPU time measured, and fails with their logs if
/// the transfer fails or either daemon exited during it.
fn ping_then_transfer<'n>(
    c: &Contender,
    a: &mut Node<'n>,
    b: &mut Node<'n>,
    from: &Netns,
    dst: &str,
    path: &str,
    transfer: impl FnOnce() -> Result<Measured, String>,
) -> Result<Measured, String> {
    let tails = |a: &Node, b: &Node| format!("{}{}", a.log_tail(), b.log_tail());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !from.try_exec(&format!("ping -c 1 -W 1 {dst}")).status.success() {
        stop_requested()?;
        if Instant::now() > deadline {
            return Err(format!("no ping {path} within 15 s{}", tails(a, b)));
        }
    }
    let result = with_daemons(a, b, transfer);
    if matches!(c.which, Impl::Vxwg | Impl::Vxwg1 | Impl::VxwgAssist | Impl::VxwgPod) {
        // What only the daemon knows (drops by reason, per-worker counts), kept next to its log.
        for node in [&*a, &*b] {
            let status = Command::new(&c.program).args(["status", "--json", &node.ifname]).output();
            if let Ok(out) = status {
                let _ = std::fs::write(node.log.with_extension("status.json"), out.stdout);
            }
        }
    }
    for (side, node) in [("A (sender)", &mut *a), ("B (receiver)", &mut *b)] {
        if let Some(status) = node.exited() {
            return Err(format!(
                "the {} daemon in {side} exited during the run ({status}); iperf3: {}{}",
                c.which.label(),
                result.as_ref().map_or_else(|e| e.clone(), |m| format!("{:.3} Gbit/s", m.bits_per_second / 1e9)),
                node.log_tail()
            ));
        }
    }
    result.map_err(|e| format!("{e}{}", tails(a, b)))
}

// ---------------------------------------------------------------------------------------------
// Statistics and report

/// Both daemons' CPU for one unit of the run's figure: µs per packet delivered (`udp64`), or
/// core-seconds per Gbit received: how much machine each contender spends on the same work.
fn daemon_cpu_per_work(case: Case, m: &Measured) -> Option<f64> {
    let (s, r) = m.daemon_cpu?;
    let figure = case.figure(m);
    (figure > 0.0).then(|| (s + r) / 100.0 / figure)
}

fn median(v: &[f64]) -> Option<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => None,
        n if n % 2 == 1 => Some(s[n / 2]),
        n => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

fn ratio(num: Option<f64>, den: Option<f64>) -> Option<f64> {
    Some(num? / den?).filter(|r| r.is_finite())
}

fn fmt_ratio(r: Option<f64>, why: &str) -> String {
    r.map_or_else(|| format!("n/a ({why})"), |r| format!("{r:.2}x"))
}

/// The median of counters, for the drop columns.
fn median_count(v: impl Iterator<Item = Option<u64>>) -> String {
    let v: Vec<f64> = v.flatten().map(|n| n as f64).collect();
    median(&v).map_or("?".into(), |m| format!("{m:.0}"))
}

/// A ratio with its target, if the issue sets one, and whether it is met.
fn with_target(r: Option<f64>, why: &str, target: Option<f64>) -> String {
    let r_text = fmt_ratio(r, why);
    match (r, target) {
        (Some(r), Some(t)) => format!("{r_text} (target >= {t}x: {})", if r >= t { "met" } else { "not met" }),
        (None, Some(t)) => format!("{r_text} (target >= {t}x)"),
        (_, None) => r_text,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--null-tunnel") {
        // Inside a run's namespace, started by the bench itself (`Node::start_null`).
        let peer = args.get(3).and_then(|p| p.parse().ok());
        let (Some(ifname), Some(port), Some(peer)) = (args.get(1), args.get(2).and_then(|p| p.parse().ok()), peer)
        else {
            eprintln!("usage: tunnel --null-tunnel IFNAME PORT PEER_ADDR:PORT");
            std::process::exit(2);
        };
        if let Err(e) = null_tunnel::run(ifname, port, peer) {
            eprintln!("null tunnel: {e}");
            std::process::exit(1);
        }
        return;
    }
    let cases = match mode(&args) {
        Mode::Skip(note) => {
            if !note.is_empty() {
                println!("{note}");
            }
            return;
        }
        Mode::List(cases) => {
            for case in cases {
                println!("{}: benchmark", case.id());
            }
            return;
        }
        Mode::Run(cases) => cases,
    };
    let chosen = env_list("VXWG_BENCH_CASES", &Case::ALL.map(Case::key));
    let cases: Vec<Case> = cases.into_iter().filter(|c| chosen.contains(&c.key())).collect();
    if cases.is_empty() {
        println!("tunnel: no case selected (VXWG_BENCH_CASES and the filter arguments exclude all)");
        return;
    }
    if !is_root() {
        println!("cargo bench --bench tunnel needs root to create network namespaces; skipping");
        return;
    }
    let missing: Vec<&str> =
        ["ip", "wg", "iperf3", "ss", "ping"].into_iter().filter(|t| find_tool(t).is_none()).collect();
    if !missing.is_empty() {
        println!(
            "cargo bench --bench tunnel needs {missing:?} (Debian: apt-get install -y iproute2 wireguard-tools \
             iperf3 iputils-ping); skipping"
        );
        return;
    }
    let seconds = env_number("VXWG_BENCH_SECONDS", 8);
    let rounds = env_number("VXWG_BENCH_ROUNDS", 3);
    let mut wanted =
        env_list("VXWG_BENCH_CONTENDERS", &["vxwg", "vxwg1", "vxwgassist", "wggo", "boringtun", "null", "veth"]);
    if std::env::var_os("VXWG_BENCH_CONTENDERS").is_none() {
        wanted.retain(|w| *w != "vxwgassist");
    }
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&STOP)).expect("registering a signal handler");
    }

    let vxwg =
        std::env::var_os("VXWG_BENCH_BIN").map_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_vxwg")), PathBuf::from);
    assert!(
        vxwg.is_file(),
        "{} does not exist: run through `cargo bench --bench tunnel`, which builds it, or set VXWG_BENCH_BIN",
        vxwg.display()
    );
    let mut contenders = vec![
        Contender { which: Impl::Vxwg, program: vxwg.clone(), args: vec!["up", "--foreground"], env: vec![] },
        Contender {
            which: Impl::Vxwg1,
            program: vxwg.clone(),
            args: vec!["up", "--foreground"],
            env: vec![("VXWG_WORKERS", "1")],
        },
        Contender {
            which: Impl::VxwgAssist,
            program: vxwg.clone(),
            args: vec!["up", "--foreground"],
            env: vec![("VXWG_ASSIST", "on")],
        },
    ];
    let mut skipped: Vec<(Impl, String)> = Vec::new();
    let wireguard_go = find_tool("wireguard-go");
    match &wireguard_go {
        Some(p) => contenders.push(Contender {
            which: Impl::WireguardGo,
            program: p.clone(),
            args: vec![],
            env: vec![("WG_PROCESS_FOREGROUND", "1")],
        }),
        None => skipped.push((Impl::WireguardGo, "wireguard-go not installed: apt-get install -y wireguard-go".into())),
    }
    match find_tool("boringtun-cli") {
        Some(p) => contenders.push(Contender {
            which: Impl::Boringtun,
            program: p,
            args: vec!["--foreground", "--disable-drop-privileges"],
            env: vec![],
        }),
        None => {
            skipped.push((Impl::Boringtun, "boringtun-cli not installed: cargo install boringtun-cli --locked".into()))
        }
    }
    // The pod-to-pod contenders.
    if find_tool("sysctl").is_some() {
        contenders.push(Contender {
            which: Impl::VxwgPod,
            program: vxwg,
            args: vec!["up", "--foreground", "--config"],
            env: vec![],
        });
    } else {
        skipped.push((Impl::VxwgPod, "sysctl not installed: apt-get install -y procps".into()));
    }
    match (&wireguard_go, find_tool("bridge"), find_tool("sysctl")) {
        (Some(p), Some(_), Some(_)) => contenders.push(Contender {
            which: Impl::WgGoVxlan,
            program: p.clone(),
            args: vec![],
            env: vec![("WG_PROCESS_FOREGROUND", "1")],
        }),
        (None, _, _) => {
            skipped.push((Impl::WgGoVxlan, "wireguard-go not installed: apt-get install -y wireguard-go".into()))
        }
        _ => {
            skipped.push((Impl::WgGoVxlan, "bridge or sysctl not installed: apt-get install -y iproute2 procps".into()))
        }
    }
    match std::env::current_exe() {
        Ok(me) => {
            contenders.push(Contender { which: Impl::Null, program: me, args: vec!["--null-tunnel"], env: vec![] })
        }
        Err(e) => skipped.push((Impl::Null, format!("this bench's own path is unknown: {e}"))),
    }
    contenders.push(Contender { which: Impl::Veth, program: PathBuf::new(), args: vec![], env: vec![] });
    // VXWG_BENCH_CONTENDERS: the pod contenders follow their plain counterparts.
    let selected = |w: Impl| {
        wanted.contains(&match w {
            Impl::Vxwg | Impl::VxwgPod => "vxwg",
            Impl::Vxwg1 => "vxwg1",
            Impl::VxwgAssist => "vxwgassist",
            Impl::WireguardGo | Impl::WgGoVxlan => "wggo",
            Impl::Boringtun => "boringtun",
            Impl::Null => "null",
            Impl::Veth => "veth",
        })
    };
    for c in contenders.iter().filter(|c| !selected(c.which)) {
        skipped.push((c.which, "not selected: VXWG_BENCH_CONTENDERS".into()));
    }
    contenders.retain(|c| selected(c.which) && cases.iter().any(|case| case.has(c.which)));
    skipped.retain(|(w, _)| cases.iter().any(|case| case.has(*w)));

    let logs = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tunnel-{}", std::process::id()));
    std::fs::create_dir_all(&logs).expect("creating the log directory");
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "tunnel: cases {} (iperf3 -t {seconds}), {rounds} rounds, contenders alternating within each case, \
         tunnel MTU {TUNNEL_MTU}, {cpus} CPUs, kernel {}",
        cases.iter().map(|c| c.key()).collect::<Vec<_>>().join(", "),
        first_line(Command::new("uname").arg("-r"))
    );
    for c in &contenders {
        if matches!(c.which, Impl::Veth | Impl::Null) {
            if c.which == Impl::Null {
                println!("  {:<19} {}", c.which.label(), c.command_line());
            }
            continue;
        }
        let version = first_line(Command::new(&c.program).arg("--version"));
        println!("  {:<19} {}  [{version}]", c.which.label(), c.command_line());
    }
    println!("  {:<19} {}", "iperf3", first_line(Command::new("iperf3").arg("--version")));
    for (which, why) in &skipped {
        println!("  {:<19} SKIPPED: {why}", which.label());
    }
    println!("  daemon stderr and iperf3 output: {}/", logs.display());
    println!("  load average before: {} (other work on the machine skews absolute numbers)", loadavg());
    println!();

    // One slot per (case, contender), in the order they run within a round.
    let slots: Vec<(Case, &Contender)> = cases
        .iter()
        .flat_map(|&case| contenders.iter().filter(move |c| case.has(c.which)).map(move |c| (case, c)))
        .collect();
    let mut results: Vec<Vec<Measured>> = slots.iter().map(|_| Vec::new()).collect();
    let mut failures: Vec<Vec<String>> = vec![Vec::new(); slots.len()];
    'rounds: for round in 1..=rounds {
        // Within each case the contenders take turns at going first, round after round, so no
        // one always runs right after the same neighbour.
        let mut order = Vec::with_capacity(slots.len());
        for &case in &cases {
            let mut of_case: Vec<usize> = (0..slots.len()).filter(|&i| slots[i].0 == case).collect();
            if !of_case.is_empty() {
                let by = (round as usize - 1) % of_case.len();
                of_case.rotate_left(by);
            }
            order.extend(of_case);
        }
        for i in order {
            let (case, c) = slots[i];
            if STOP.load(Ordering::Relaxed) {
                break 'rounds;
            }
            let started = Instant::now();
            let head = format!("round {round}/{rounds}  {:<5}  {:<19}", case.key(), c.which.label());
            match measure(c, case, seconds, &logs, round) {
                Ok(m) => {
                    let detail = match case {
                        Case::Udp64 => {
                            format!("delivered (sent {:.3} Mpkt/s", m.sent_packets_per_second.unwrap_or(f64::NAN) / 1e6)
                        }
                        _ => format!(
                            "(retransmits {}, D-SACKed {}",
                            m.retransmits.map_or("?".into(), |r| r.to_string()),
                            m.dsacked.map_or("?".into(), |r| r.to_string())
                        ),
                    };
                    let cpu = match (m.sender_cpu, m.receiver_cpu) {
                        (Some(s), Some(r)) => format!(", iperf3 cpu sender {s:.0}% receiver {r:.0}%"),
                        _ => String::new(),
                    };
                    let waits = match (m.iperf_wait, m.daemon_wait) {
                        (Some((s, r)), Some((ds, dr))) => format!(
                            ", waited for a CPU: iperf3 sender {s:.0}% receiver {r:.0}%, daemon sender {ds:.0}% receiver {dr:.0}%"
                        ),
                        (Some((s, r)), None) => format!(", waited for a CPU: iperf3 sender {s:.0}% receiver {r:.0}%"),
                        _ => String::new(),
                    };
                    let count = |n: Option<u64>| n.map_or("?".into(), |n| n.to_string());
                    let daemons = m
                        .daemon_cpu
                        .map_or(String::new(), |(s, r)| format!(", daemon cpu sender {s:.0}% receiver {r:.0}%"));
                    let drops = match c.which {
                        Impl::Veth => format!("tx drops {}, rx drops {}", count(m.tx_drops), count(m.rx_drops)),
                        _ => format!(
                            "tx drops {}, rx drops {} (tunnel socket {})",
                            count(m.tx_drops),
                            count(m.rx_drops),
                            count(m.tunnel_socket_drops)
                        ),
                    };
                    println!(
                        "{head} {:>7.3} {} {detail}{cpu}{daemons}{waits}; {drops}; {:.1} s)",
                        case.figure(&m),
                        case.unit(),
                        started.elapsed().as_secs_f64()
                    );
                    results[i].push(m);
                }
                Err(e) => {
                    println!("{head} FAILED: {e}");
                    failures[i].push(e);
                }
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    println!();
    println!("load average after: {}", loadavg());
    let mut medians: Vec<(Case, Impl, Option<f64>)> = Vec::new();
    // Median daemon CPU per unit of work, by case and contender.
    let mut work_cost: Vec<(Case, Impl, f64)> = Vec::new();
    for &case in &cases {
        println!();
        println!(
            "{} ({}; medians of drops: tx = sending node's interfaces, rx = receiving node's UDP receive \
             buffers, of which the tunnel socket's; daemon cpu = sender/receiver daemon process, % of one core; \
             cpu/work = both daemons' CPU per unit of the figure, {})",
            case.title(),
            case.unit(),
            case.cpu_unit()
        );
        println!(
            "{:<19} {:>9} {:>8} {:>8} {:>9} {:>9} {:>14} {:>12} {:>9}  runs",
            "contender", "median", "min", "max", "tx drops", "rx drops", "tunnel socket", "daemon cpu%", "cpu/work"
        );
        for (i, &(_, c)) in slots.iter().enumerate().filter(|(_, (k, _))| *k == case) {
            let v: Vec<f64> = results[i].iter().map(|m| case.figure(m)).collect();
            let m = median(&v);
            medians.push((case, c.which, m));
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let runs = format!(
                "{} ok{}",
                v.len(),
                if failures[i].is_empty() { String::new() } else { format!(", {} failed", failures[i].len()) }
            );
            let tx = median_count(results[i].iter().map(|m| m.tx_drops));
            let rx = median_count(results[i].iter().map(|m| m.rx_drops));
            let cpu_of = |side: fn((f64, f64)) -> f64| {
                let v: Vec<f64> = results[i].iter().filter_map(|m| m.daemon_cpu.map(side)).collect();
                median(&v).map_or("?".into(), |c| format!("{c:.0}"))
            };
            let cpu = if c.which == Impl::Veth {
                "-".into()
            } else {
                format!("{}/{}", cpu_of(|(s, _)| s), cpu_of(|(_, r)| r))
            };
            let per_work: Vec<f64> = results[i].iter().filter_map(|m| daemon_cpu_per_work(case, m)).collect();
            let per_work = median(&per_work);
            work_cost.extend(per_work.map(|w| (case, c.which, w)));
            let per_work = per_work.map_or("-".into(), |w| format!("{w:.2}"));
            let sock = if c.which == Impl::Veth {
                "-".into()
            } else {
                median_count(results[i].iter().map(|m| m.tunnel_socket_drops))
            };
            match m {
                Some(m) => {
                    println!(
                        "{:<19} {m:>9.3} {min:>8.3} {max:>8.3} {tx:>9} {rx:>9} {sock:>14} {cpu:>12} {per_work:>9}  {runs}",
                        c.which.label()
                    )
                }
                None => {
                    let l = c.which.label();
                    println!(
                        "{l:<19} {:>9} {:>8} {:>8} {:>9} {:>9} {:>14} {:>12} {:>9}  {runs}",
                        "-", "-", "-", "-", "-", "-", "-", "-"
                    )
                }
            }
        }
        for (which, _) in skipped.iter().filter(|(w, _)| case.has(*w)) {
            let l = which.label();
            println!(
                "{l:<19} {:>9} {:>8} {:>8} {:>9} {:>9} {:>14} {:>12} {:>9}  skipped",
                "-", "-", "-", "-", "-", "-", "-", "-"
            );
        }
    }
    let get = |case: Case, w: Impl| medians.iter().find(|(k, x, _)| *k == case && *x == w).and_then(|(_, _, m)| *m);
    let why = |case: Case, w: Impl| {
        if !cases.contains(&case) {
            format!("{} case not selected", case.key())
        } else if let Some((_, note)) = skipped.iter().find(|(x, _)| *x == w) {
            note.split(':').next().unwrap_or("skipped").to_string()
        } else {
            format!("{}: no successful run", w.label())
        }
    };
    // Why a ratio is missing: its numerator's reason first, then its denominator's.
    let ratio_of = |num: (Case, Impl), den: (Case, Impl), target: Option<f64>| {
        let (n, d) = (get(num.0, num.1), get(den.0, den.1));
        with_target(ratio(n, d), &if n.is_none() { why(num.0, num.1) } else { why(den.0, den.1) }, target)
    };
    println!();
    println!("ratios of medians, with the throughput issue's targets:");
    for &case in &cases {
        let line = match case {
            Case::Tcp => format!(
                "vxwg/wireguard-go = {}, vxwg/boringtun = {}, vxwg/vxwg 1 worker = {}, vxwg/null tunnel = {}, \
                 vxwg assist on/vxwg = {}",
                ratio_of((case, Impl::Vxwg), (case, Impl::WireguardGo), Some(6.0)),
                ratio_of((case, Impl::Vxwg), (case, Impl::Boringtun), Some(6.0)),
                ratio_of((case, Impl::Vxwg), (case, Impl::Vxwg1), None),
                ratio_of((case, Impl::Vxwg), (case, Impl::Null), None),
                ratio_of((case, Impl::VxwgAssist), (case, Impl::Vxwg), None)
            ),
            Case::Tcp4 => format!(
                "vxwg/wireguard-go = {}, vxwg/boringtun = {}, vxwg/vxwg 1 worker = {}, vxwg/null tunnel = {} \
                 (no targets)",
                ratio_of((case, Impl::Vxwg), (case, Impl::WireguardGo), None),
                ratio_of((case, Impl::Vxwg), (case, Impl::Boringtun), None),
                ratio_of((case, Impl::Vxwg), (case, Impl::Vxwg1), None),
                ratio_of((case, Impl::Vxwg), (case, Impl::Null), None)
            ),
            Case::Udp64 => format!(
                "vxwg/wireguard-go = {}, vxwg/boringtun = {}, vxwg/vxwg 1 worker = {}, vxwg/null tunnel = {} \
                 (packets delivered); the null tunnel (no crypto) against the same target: null/wireguard-go = {}",
                ratio_of((case, Impl::Vxwg), (case, Impl::WireguardGo), Some(5.0)),
                ratio_of((case, Impl::Vxwg), (case, Impl::Boringtun), None),
                ratio_of((case, Impl::Vxwg), (case, Impl::Vxwg1), None),
                ratio_of((case, Impl::Vxwg), (case, Impl::Null), None),
                ratio_of((case, Impl::Null), (case, Impl::WireguardGo), Some(5.0))
            ),
            Case::Pod => format!(
                "vxwg pod/wg-go+kernel vxlan = {}, vxwg pod/vxwg plain single-stream = {}",
                ratio_of((case, Impl::VxwgPod), (case, Impl::WgGoVxlan), Some(2.0)),
                ratio_of((case, Impl::VxwgPod), (Case::Tcp, Impl::Vxwg), Some(0.85))
            ),
        };
        println!("  {:<5}  {line}", case.key());
    }
    let shares: Vec<String> = cases
        .iter()
        .filter_map(|&case| {
            let veth = get(case, Impl::Veth)?;
            let parts: Vec<String> = medians
                .iter()
                .filter(|(k, w, _)| *k == case && *w != Impl::Veth)
                .map(|(_, w, m)| {
                    format!("{} {}", w.label(), m.map_or("-".into(), |m| format!("{:.1}%", 100.0 * m / veth)))
                })
                .collect();
            Some(format!("  {:<5}  {}", case.key(), parts.join(", ")))
        })
        .collect();
    if !shares.is_empty() {
        println!("share of the bare veth pair:");
        shares.iter().for_each(|l| println!("{l}"));
    }
    // The same work's CPU cost, as a multiple of vxwg's: throughput ratios are capped by the
    // pipe (and by how two shared cores are split), this one is not.
    let costs: Vec<String> = cases
        .iter()
        .filter_map(|&case| {
            let mine = if case == Case::Pod { Impl::VxwgPod } else { Impl::Vxwg };
            let (_, _, base) = *work_cost.iter().find(|(k, w, _)| *k == case && *w == mine)?;
            let parts: Vec<String> = work_cost
                .iter()
                .filter(|(k, w, _)| *k == case && *w != mine)
                .map(|(_, w, c)| format!("{} {:.2}x", w.label(), c / base))
                .collect();
            (!parts.is_empty()).then(|| format!("  {:<5}  {}", case.key(), parts.join(", ")))
        })
        .collect();
    if !costs.is_empty() {
        println!("daemon CPU for the same work, as a multiple of vxwg's:");
        costs.iter().for_each(|l| println!("{l}"));
    }
    if STOP.load(Ordering::Relaxed) {
        println!("interrupted: the numbers above are partial");
        std::process::exit(130);
    }
    let failed: usize = failures.iter().map(Vec::len).sum();
    if failed > 0 {
        println!("tunnel: {failed} run(s) failed (see FAILED above and the logs in {}/)", logs.display());
        std::process::exit(1);
    }
}
