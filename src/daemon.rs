//! `vxwg up`: the node daemon. Packet workers (one per core, see [`crate::worker`]) move the
//! traffic; this thread serves the `wg` UAPI socket at /var/run/wireguard/IFNAME.sock exactly like
//! wireguard-go (so wg-quick can drive it), runs the protocol timers and applies the control plane.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};

use crate::assist::Assist;
use crate::config::Config;
use crate::netconf::InterfaceSetup;
use crate::packet_io::{self, PortCounters, TunPort};
use crate::worker::{take_transmits, Exit, PodPort, Running, Shared, StopSignal, Threads, Worker, WorkerStats};
use rand_core::OsRng;
use vxwg::control::keys::Key;
use vxwg::control::uapi::{self, DeviceSnapshot, DeviceUpdate, PeerSnapshot, Request};
use vxwg::dataplane::engine::pod::{PodConfig, PodEngine, POD_HEADROOM, POD_TAILROOM};
use vxwg::dataplane::engine::{Engine, HEADROOM, TAILROOM};
use vxwg::dataplane::io::netlink::Netlink;
use vxwg::dataplane::io::poll::wait_readable;
use vxwg::dataplane::io::udp::PathMtuProbe;
use vxwg::dataplane::io::UdpSocket;
use vxwg::dataplane::mtu;
use vxwg::dataplane::wireguard::{Device, DeviceConfig, PeerConfig, Transmit};

/// vxwg's own request on the UAPI socket (answered with one line of JSON and a blank line).
pub const STATUS_REQUEST: &str = "vxwg_status=1\n\n";

/// Where `wg` looks for userspace implementations.
pub const SOCKET_DIR: &str = "/var/run/wireguard";
/// Longest the control thread sleeps: timers armed by workers meanwhile are at most this late.
const CONTROL_TICK: Duration = Duration::from_millis(250);
/// The UDP port used until `wg` sets one (0: any free port, as wireguard-go).
const DEFAULT_PORT: u16 = 0;

pub struct Daemon {
    name: String,
    /// The protocol state, shared with the workers.
    shared: Arc<Shared>,
    workers: WorkerSet,
    listen_port: u16,
    fwmark: Option<u32>,
    private_key: Option<Key>,
    /// Per peer, with the pod path: the underlay path MTU last read and the pod MTU it allows.
    pod_paths: Option<PodPaths>,
    uapi: UnixListener,
    /// The UAPI socket's path; removes the socket file when the daemon is dropped, however far
    /// it got.
    socket_file: SocketFile,
    signals: UnixStream,
    /// For reading the interface MTU, which `ip link set mtu` may change at any time.
    netlink: Option<(Netlink, u32)>,
    mtu_checked: Instant,
    /// When the UAPI socket file was last checked for removal.
    socket_checked: Instant,
    /// The control plane (`[control]`): its thread's wake-up fd is polled with the others.
    control: Option<crate::control_plane::ControlSide>,
}

/// The packet engine: plain L3, or L3 plus the pod path (`[vxlan]`), which owns the L3 engine.
/// UAPI, status and the host TUN reach the L3 engine through [`Dataplane::engine`] either way.
pub(crate) enum Dataplane {
    L3(Box<Engine>),
    Pod(Box<PodEngine>),
}

impl Dataplane {
    pub(crate) fn engine(&self) -> &Engine {
        match self {
            Dataplane::L3(e) => e,
            Dataplane::Pod(p) => p.engine(),
        }
    }

    pub(crate) fn engine_mut(&mut self) -> &mut Engine {
        match self {
            Dataplane::L3(e) => e,
            Dataplane::Pod(p) => p.engine_mut(),
        }
    }

    /// What the protocol wants sent (with the pod path: its IPv4 fragments first).
    pub(crate) fn poll_transmit(&mut self) -> Option<Transmit> {
        match self {
            Dataplane::L3(e) => e.poll_transmit(),
            Dataplane::Pod(p) => p.poll_transmit(),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.engine().poll_timeout()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.engine_mut().handle_timeout(now)
    }
}

/// Pod path: per peer, the underlay path MTU last read and the pod MTU it allows.
#[derive(Default)]
struct PodPaths {
    paths: std::collections::HashMap<vxwg::dataplane::wireguard::PeerId, (u32, u32)>,
    /// When the paths were last read.
    checked: Option<Instant>,
    /// Reads them: one socket per family, carrying the device's fwmark.
    probe: PathMtuProbe,
}

/// The packet workers: idle (being configured) or running, with what the control thread keeps
/// of them: a handle on each socket (marks, control datagrams) and their counters.
struct WorkerSet {
    idle: Vec<Worker>,
    running: Vec<Running>,
    threads: Threads,
    /// Second handles on the workers' sockets, in worker order.
    sockets: Vec<UdpSocket>,
    stats: Vec<Arc<WorkerStats>>,
    stop: StopSignal,
    /// Readable once a worker has ended.
    ended: UnixStream,
    ended_writer: UnixStream,
}

impl WorkerSet {
    fn new(idle: Vec<Worker>, threads: Threads) -> io::Result<WorkerSet> {
        let sockets = idle.iter().map(Worker::socket_handle).collect::<io::Result<_>>()?;
        let stats = idle.iter().map(|w| w.stats.clone()).collect();
        let (ended, ended_writer) = UnixStream::pair()?;
        ended.set_nonblocking(true)?;
        Ok(WorkerSet {
            idle,
            running: Vec::new(),
            threads,
            sockets,
            stats,
            stop: StopSignal::new()?,
            ended,
            ended_writer,
        })
    }

    fn start(&mut self, name: &str, shared: &Arc<Shared>) -> anyhow::Result<()> {
        self.stop = StopSignal::new()?;
        for worker in std::mem::take(&mut self.idle) {
            let cpu = self.threads.cpus.as_ref().map(|c| c[worker.index]);
            let running = worker.spawn(name, shared.clone(), &self.stop, self.ended_writer.try_clone()?, cpu)?;
            self.running.push(running);
        }
        Ok(())
    }

    /// Stops every worker and takes them back. An error if one had already ended on its own (a
    /// device gone, a panic): the daemon is then shutting down.
    fn stop(&mut self) -> Result<(), WorkerEnd> {
        self.stop.raise();
        let mut end = Ok(());
        for running in self.running.drain(..) {
            match running.join() {
                Some((worker, Exit::Stopped)) => self.idle.push(worker),
                Some((_, Exit::DeviceGone)) => end = end.and(Err(WorkerEnd::DeviceGone)),
                None => end = Err(WorkerEnd::Panicked),
            }
        }
        self.idle.sort_by_key(|w| w.index);
        // Each stopped worker said so; only an end nobody asked for must wake the control loop,
        // and it must still do so after this drain (a caller such as a listen-port change goes
        // back to the loop, which would otherwise run on without workers).
        let mut sink = [0u8; 64];
        while matches!(io::Read::read(&mut &self.ended, &mut sink), Ok(n) if n > 0) {}
        if end.is_err() {
            let _ = io::Write::write(&mut &self.ended_writer, &[1]);
        }
        end
    }

    /// Gives the (idle) workers new sockets: a new port.
    fn replace_sockets(&mut self, sockets: Vec<UdpSocket>) -> io::Result<()> {
        self.sockets = sockets.iter().map(UdpSocket::try_clone).collect::<io::Result<_>>()?;
        for (worker, udp) in self.idle.iter_mut().zip(sockets) {
            worker.replace_socket(udp);
        }
        Ok(())
    }

    /// The socket the control thread sends from.
    fn control_socket(&self) -> &UdpSocket {
        &self.sockets[0]
    }
}

impl Drop for WorkerSet {
    /// However the daemon ends (an error while starting them, a panic in the control thread),
    /// the workers stop before the devices and sockets they use go away.
    fn drop(&mut self) {
        if !self.running.is_empty() {
            let _ = self.stop();
        }
    }
}

/// How a worker ended without being asked to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerEnd {
    DeviceGone,
    Panicked,
}

/// Binds the UAPI socket at `path`, owner only (it hands out the private key), and never there
/// with more: a socket takes its mode from the umask when bound, and a client that connects
/// before a later chmod keeps its connection. So it is bound in a directory only we may enter,
/// made owner only there, then linked into place (refused if something is at `path` already).
fn bind_owner_only(path: &Path) -> io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let name = path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?;
    let private = path.with_file_name(format!(".{}.{}", name.to_string_lossy(), std::process::id()));
    // Left over from a run of ours that died in between (same pid: a restart in a new namespace).
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let bound = private.join(name);
    let listener = UnixListener::bind(&bound)
        .and_then(|l| std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(0o600)).map(|()| l))
        .and_then(|l| std::fs::hard_link(&bound, path).map(|()| l));
    let _ = std::fs::remove_dir_all(&private);
    listener
}

/// A socket pair whose reading end becomes readable on SIGINT or SIGTERM.
fn watch_signals() -> io::Result<UnixStream> {
    let (signals, writer) = UnixStream::pair()?;
    signals.set_nonblocking(true)?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::low_level::pipe::register(sig, writer.try_clone()?)?;
    }
    Ok(signals)
}

/// Removes the UAPI socket when the daemon ends, however it ends.
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Daemon {
    /// Creates the TUN device (one queue per worker), the UDP sockets and the UAPI socket;
    /// nothing is configured and no worker runs yet.
    pub fn create(name: &str, threads: Threads) -> anyhow::Result<Daemon> {
        let n = threads.workers;
        let tuns = packet_io::create_tun_queues(name, n).with_context(|| format!("creating TUN device {name}"))?;
        let sockets = bind_udp(DEFAULT_PORT, n).context("binding the UDP sockets")?;
        let listen_port = sockets[0].local_port()?;
        let ifname = tuns[0].name().to_string();
        std::fs::create_dir_all(SOCKET_DIR).with_context(|| format!("creating {SOCKET_DIR}"))?;
        let socket_path = Path::new(SOCKET_DIR).join(format!("{ifname}.sock"));
        if socket_path.exists() {
            // A live daemon would answer; a dead one left its socket behind.
            if UnixStream::connect(&socket_path).is_ok() {
                bail!("{} is already served by another process", socket_path.display());
            }
            std::fs::remove_file(&socket_path)
                .with_context(|| format!("removing the stale socket {}", socket_path.display()))?;
        }
        let uapi = bind_owner_only(&socket_path).with_context(|| format!("binding {}", socket_path.display()))?;
        // From here on, a failed start must not leave the socket file behind (`wg show` would
        // list a dead interface).
        let socket_file = SocketFile(socket_path);
        let socket_path = &socket_file.0;
        uapi.set_nonblocking(true).with_context(|| format!("binding {}", socket_path.display()))?;
        let signals = watch_signals().context("setting up SIGINT/SIGTERM handling")?;
        // Until `wg` sets a private key, traffic is dropped; a random placeholder keeps the
        // protocol state well defined meanwhile.
        let placeholder = Key::generate_private(&mut OsRng);
        let device = Device::new(DeviceConfig::new(placeholder.0), OsRng, Instant::now(), SystemTime::now());
        let idle = tuns
            .into_iter()
            .zip(sockets)
            .enumerate()
            .map(|(i, (tun, udp))| Worker::new(i, TunPort::new(tun, HEADROOM, TAILROOM), None, udp))
            .collect();
        Ok(Daemon {
            name: ifname,
            shared: Shared::new(
                Dataplane::L3(Box::new(Engine::new(device))),
                Assist::new(n, threads.assist).context("setting up the workers' wakeups")?,
            ),
            workers: WorkerSet::new(idle, threads).context("setting up the packet workers")?,
            listen_port,
            fwmark: None,
            private_key: None,
            pod_paths: None,
            uapi,
            socket_file,
            signals,
            netlink: None,
            mtu_checked: Instant::now(),
            socket_checked: Instant::now(),
            control: None,
        })
    }

    /// Runs until SIGINT/SIGTERM, a TUN device disappears, or the UAPI socket file is removed.
    /// The packets are the workers'; this thread serves the UAPI, the timers and the control
    /// plane.
    pub fn run(mut self) -> anyhow::Result<()> {
        let pinned = match &self.workers.threads.cpus {
            Some(cpus) => format!(", pinned to CPUs {cpus:?}"),
            None => String::new(),
        };
        log(
            &self.name,
            &format!(
                "up: UAPI at {}, UDP port {}, {} worker(s){pinned}",
                self.socket_file.0.display(),
                self.listen_port,
                self.workers.threads.workers
            ),
        );
        if self.pod_paths.is_some() {
            log(&self.name, "pod path: VXLAN through the pod TUN");
        }
        self.workers.start(&self.name, &self.shared)?;
        let result = self.control_loop();
        let _ = self.workers.stop();
        result
    }

    fn control_loop(&mut self) -> anyhow::Result<()> {
        loop {
            let now = Instant::now();
            // Workers arm timers while this thread sleeps: wake often enough that none is late
            // by more than a fraction of the shortest (a 1 s persistent keepalive). Without a
            // key the timers do not run, so a due one must not turn into a zero timeout (a spin).
            let deadline = if self.private_key.is_some() { self.shared.lock().poll_timeout() } else { None };
            let timeout = deadline.map_or(CONTROL_TICK, |t| t.saturating_duration_since(now).min(CONTROL_TICK));
            let [uapi, sig, netmap, ended] = wait_readable(
                [
                    self.uapi.as_raw_fd(),
                    self.signals.as_raw_fd(),
                    self.control.as_ref().map_or(-1, |c| c.wake_fd()),
                    self.workers.ended.as_raw_fd(),
                ],
                Some(timeout),
            )?;
            if sig.readable {
                log(&self.name, "signal received, shutting down");
                return Ok(());
            }
            if ended.readable {
                // A device gone is a normal end (someone deleted the interface); a panic is not,
                // so a service manager that restarts on failure sees one.
                if self.workers.stop() == Err(WorkerEnd::Panicked) {
                    bail!("a packet worker panicked (its message is above); shutting down");
                }
                log(&self.name, "TUN device gone, shutting down");
                return Ok(());
            }
            // A stat per wake-up showed in profiles: look twice a second.
            if self.socket_checked.elapsed() >= Duration::from_millis(500) {
                self.socket_checked = Instant::now();
                if !self.socket_file.0.exists() {
                    log(&self.name, "UAPI socket removed, shutting down");
                    return Ok(());
                }
            }
            if uapi.readable {
                self.serve_uapi();
            }
            self.shared.assist.sample(Instant::now());
            if self.private_key.is_some() {
                self.shared.lock().handle_timeout(Instant::now());
            }
            if let Some(control) = self.control.as_mut() {
                control.poll(&self.name, &self.shared, netmap.readable);
            }
            self.flush_control();
            self.refresh_mtu();
            self.refresh_path_mtus();
        }
    }

    /// Applies a `--config` file: keys, port and peers through the same path as `wg set`, then
    /// the interface (addresses, MTU, link up) and the routes for peers' AllowedIPs.
    fn configure(&mut self, config: &Config) -> anyhow::Result<InterfaceSetup> {
        self.apply(config.update.clone()).map_err(|(errno, why)| anyhow::anyhow!("{why} (errno {errno})"))?;
        self.shared.lock().engine_mut().device_mut().set_mtu(config.mtu as usize);
        let prefixes: Vec<_> = config.update.peers.iter().flat_map(|p| p.allowed_ips.iter().copied()).collect();
        let mut pod_ifname = None;
        if let Some(vxlan) = &config.vxlan {
            let name = vxlan.pod_interface(&self.name);
            if name == self.name {
                bail!("vxlan.pod_interface = {name:?} is the WireGuard interface's own name; choose another");
            }
            let pod_config = PodConfig {
                vni: vxlan.vni,
                local_vtep_mac: vxlan.vtep_mac,
                local_vtep_ip: vxlan.vtep_ip,
                dst_port: vxlan.port,
                pod_mtu: vxlan.pod_mtu,
                clamp_mss: vxlan.clamp_mss,
            };
            let mut dp = self.shared.lock();
            // The pod engine takes over the L3 engine (and its peers); a placeholder stands in
            // for the instant of the swap.
            let placeholder = Engine::new(Device::new(
                DeviceConfig::new(Key::generate_private(&mut OsRng).0),
                OsRng,
                Instant::now(),
                SystemTime::now(),
            ));
            let engine = match std::mem::replace(&mut *dp, Dataplane::L3(Box::new(placeholder))) {
                Dataplane::L3(e) => *e,
                Dataplane::Pod(p) => bail!("the pod path is already configured (VTEP {})", p.config().local_vtep_ip),
            };
            let mut pod = PodEngine::new(engine, pod_config).context("vxlan")?;
            for r in &vxlan.routes {
                pod.insert_route(r.net, r.remote).with_context(|| format!("pod route {}", r.net))?;
            }
            *dp = Dataplane::Pod(Box::new(pod));
            drop(dp);
            let queues = self.workers.idle.len();
            let tuns = packet_io::create_tun_queues(&name, queues)
                .with_context(|| format!("creating pod TUN device {name}"))?;
            pod_ifname = Some(tuns[0].name().to_string());
            for (worker, tun) in self.workers.idle.iter_mut().zip(tuns) {
                worker.pod = Some(PodPort::new(TunPort::new(tun, POD_HEADROOM, POD_TAILROOM)));
            }
            self.pod_paths = Some(PodPaths::default());
        }
        let setup = InterfaceSetup::apply(&self.name, config, &prefixes, pod_ifname.as_deref())?;
        if config.control.is_some() {
            self.control = Some(crate::control_plane::ControlSide::start(&self.name, config, pod_ifname.as_deref())?);
        }
        Ok(setup)
    }

    /// Pod path: holds pod packets to each peer to what its underlay path carries, as the kernel
    /// knows it (route MTU, lowered by ICMP it received), read every 2 s and at once after a send
    /// was refused as too big. The probes run without the lock.
    fn refresh_path_mtus(&mut self) {
        let Some(pod) = self.pod_paths.as_mut() else { return };
        let stale = self.shared.paths_stale.swap(false, Ordering::Relaxed);
        if !stale && pod.checked.is_some_and(|t| t.elapsed() < Duration::from_secs(2)) {
            return;
        }
        pod.checked = Some(Instant::now());
        let peers: Vec<_> = {
            let dp = self.shared.lock();
            let device = dp.engine().device();
            device.peer_ids().filter_map(|id| Some((id, device.peer_endpoint(id)?))).collect()
        };
        pod.paths.retain(|id, _| peers.iter().any(|(p, _)| p == id));
        let mark = self.fwmark.unwrap_or(0);
        if pod.probe.mark() != mark {
            pod.probe = PathMtuProbe::new(mark);
        }
        let probed: Vec<_> = peers
            .into_iter()
            .filter_map(|(id, endpoint)| Some((id, endpoint, pod.probe.read(endpoint).ok()?)))
            .collect();
        let mut dp = self.shared.lock();
        let Dataplane::Pod(engine) = &mut *dp else { return };
        for (id, endpoint, path) in probed {
            // The peer may have gone (or moved) while we probed without the lock.
            if engine.engine().device().peer_endpoint(id) != Some(endpoint) {
                continue;
            }
            // Set every time: the path lives with the peer, which may be new in this slot, or
            // have moved to an endpoint of the other family with the same path MTU.
            let family = if endpoint.is_ipv4() { mtu::Family::V4 } else { mtu::Family::V6 };
            let pod_mtu = engine.set_path_mtu(id, path, family);
            let before = pod.paths.insert(id, (path, pod_mtu));
            let changed = before.map_or(pod_mtu < engine.config().pod_mtu, |(_, m)| m != pod_mtu);
            if changed {
                log(&self.name, &format!("path to {endpoint}: MTU {path}, pod MTU {pod_mtu}"));
            }
        }
    }

    /// Pads to the interface's MTU as it is now (checked once a second).
    fn refresh_mtu(&mut self) {
        if self.mtu_checked.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.mtu_checked = Instant::now();
        if self.netlink.is_none() {
            let Ok(mut nl) = Netlink::open() else { return };
            let Ok(index) = nl.link_index(&self.name) else { return };
            self.netlink = Some((nl, index));
        }
        if let Some((nl, index)) = self.netlink.as_mut() {
            if let Ok(mtu) = nl.link_mtu(*index) {
                let mut dp = self.shared.lock();
                if mtu as usize != dp.engine().device().mtu() {
                    dp.engine_mut().device_mut().set_mtu(mtu as usize);
                }
            }
        }
    }

    /// Sends what the protocol queued from timers and configuration: handshakes, keepalives,
    /// staged packets.
    fn flush_control(&mut self) {
        let mut transmits = Vec::new();
        take_transmits(&mut self.shared.lock(), &mut transmits);
        for t in transmits {
            if let Err(e) = self.workers.control_socket().send_to(&t.payload, t.dst) {
                log(&self.name, &format!("send to {}: {e}", t.dst));
            }
        }
    }

    fn serve_uapi(&mut self) {
        loop {
            match self.uapi.accept() {
                Ok((stream, _)) => {
                    if let Err(e) = self.serve_connection(stream) {
                        log(&self.name, &format!("UAPI connection: {e}"));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log(&self.name, &format!("UAPI accept: {e}"));
                    return;
                }
            }
        }
    }

    /// Answers every request on one connection until the client closes it.
    fn serve_connection(&mut self, stream: UnixStream) -> io::Result<()> {
        stream.set_nonblocking(false)?;
        // Served inside the packet loop: `wg` writes its whole request at once, so a short
        // timeout bounds how long a stuck client can hold the dataplane.
        stream.set_read_timeout(Some(Duration::from_millis(500)))?;
        stream.set_write_timeout(Some(Duration::from_millis(500)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut writer = stream;
        loop {
            // A request ends with an empty line; cap its size so a client cannot exhaust memory.
            let mut request = String::new();
            loop {
                let mut line = String::new();
                if reader.by_ref().take(4096).read_line(&mut line)? == 0 {
                    return Ok(());
                }
                request.push_str(&line);
                if line == "\n" || request.len() > 1 << 20 {
                    break;
                }
            }
            if request == crate::control_plane::ROUTES_REQUEST {
                let routes = self.control.as_ref().map_or(serde_json::Value::Null, |c| c.routes_json());
                writer.write_all(format!("{routes}\n\n").as_bytes())?;
                continue;
            }
            if request == STATUS_REQUEST {
                writer.write_all(format!("{}\n\n", self.status_json()).as_bytes())?;
                continue;
            }
            let response = match uapi::parse_request(&request) {
                Ok(Request::Get) => uapi::render_get(&self.snapshot()),
                Ok(Request::Set(update)) => match self.apply(update) {
                    Ok(()) => uapi::render_errno(0),
                    Err((errno, why)) => {
                        log(&self.name, &format!("UAPI set refused: {why}"));
                        uapi::render_errno(errno)
                    }
                },
                Err(e) => {
                    log(&self.name, &format!("UAPI request refused: {e}"));
                    uapi::render_errno(e.errno())
                }
            };
            writer.write_all(response.as_bytes())?;
        }
    }

    /// `vxwg status --json`: what `wg show` says plus what only vxwg knows (drops by reason).
    fn status_json(&self) -> String {
        let dp = self.shared.lock();
        let device = dp.engine().device();
        let now = Instant::now();
        let unix =
            |t: Option<SystemTime>| t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok()).map(|d| d.as_secs());
        let peers: Vec<serde_json::Value> = device
            .peer_ids()
            .map(|id| {
                let stats = device.peer_stats(id).unwrap_or_default();
                serde_json::json!({
                    "public_key": Key(device.peer_public_key(id).unwrap_or_default()).to_base64(),
                    "endpoint": device.peer_endpoint(id).map(|e| e.to_string()),
                    "allowed_ips": dp.engine().allowed_ips(id).iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                    "latest_handshake": unix(stats.last_handshake),
                    "handshakes": stats.handshakes,
                    "session": device.has_session(id, now),
                    "rx_bytes": stats.rx_bytes,
                    "tx_bytes": stats.tx_bytes,
                    "persistent_keepalive": device.peer_persistent_keepalive(id).map(|d| d.as_secs()),
                })
            })
            .collect();
        let mut drops = serde_json::Map::new();
        for (reason, n) in device.drops() {
            drops.insert(reason.name().to_string(), n.into());
        }
        let e = dp.engine().stats();
        let stats = &self.workers.stats;
        let socket_drops: u64 = stats.iter().map(|s| s.socket_receive_drops.load(Ordering::Relaxed)).sum();
        let unsent: u64 = stats.iter().map(|s| s.send_unsent.load(Ordering::Relaxed)).sum();
        for (name, n) in [
            ("no_route", e.no_route),
            ("not_ip", e.not_ip),
            ("no_endpoint", e.no_endpoint),
            ("source_not_allowed", e.source_not_allowed),
            // Datagrams the kernel dropped for a full socket receive buffer (SO_RXQ_OVFL).
            ("socket_receive_buffer", socket_drops),
            // Datagrams the socket did not take (full send buffer, or refused mid-batch).
            ("socket_send", unsent),
        ] {
            drops.insert(name.to_string(), n.into());
        }
        let pod = match &*dp {
            Dataplane::L3(_) => serde_json::Value::Null,
            Dataplane::Pod(p) => pod_status(p, self.pod_paths.as_ref().map(|s| &s.paths)),
        };
        let sum = |port: fn(&WorkerStats) -> PortCounters| stats.iter().map(|s| port(s)).sum::<PortCounters>();
        let tun = sum(|s| s.tun.load());
        let pod_tun = self.pod_paths.is_some().then(|| sum(|s| s.pod_tun.load()));
        let cpus = self.workers.threads.cpus.as_ref();
        let workers: Vec<_> = stats
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let cpu = s.cpu_time();
                serde_json::json!({
                    "cpu": cpus.map(|c| c[i]),
                    "packets_out": s.packets_out.load(Ordering::Relaxed),
                    "packets_in": s.packets_in.load(Ordering::Relaxed),
                    "packets_resealed": s.packets_resealed.load(Ordering::Relaxed),
                    "packets_opened_for_others": s.packets_opened_for_others.load(Ordering::Relaxed),
                    "packets_opened_by_others": s.packets_opened_by_others.load(Ordering::Relaxed),
                    "socket_receive_drops": s.socket_receive_drops.load(Ordering::Relaxed),
                    "send_unsent": s.send_unsent.load(Ordering::Relaxed),
                    "cpu_seconds": cpu.map(|t| seconds(t.running)),
                    "cpu_wait_seconds": cpu.map(|t| seconds(t.waiting)),
                })
            })
            .collect();
        serde_json::json!({
            "interface": self.name,
            "public_key": self.private_key.map(|k| k.public().to_base64()),
            "listen_port": self.listen_port,
            "packets_out": e.packets_out,
            "packets_in": e.packets_in,
            "peers": peers,
            "drops": drops,
            "pod": pod,
            "control": self.control.as_ref().map(|c| c.status_json()),
            "offload": {
                "tun": tun.to_json(),
                "pod_tun": pod_tun.map(|c| c.to_json()),
            },
            "workers": workers,
        })
        .to_string()
    }

    fn snapshot(&self) -> DeviceSnapshot {
        let dp = self.shared.lock();
        let device = dp.engine().device();
        let peers = device
            .peer_ids()
            .map(|id| {
                let stats = device.peer_stats(id).unwrap_or_default();
                PeerSnapshot {
                    public_key: Key(device.peer_public_key(id).unwrap_or_default()),
                    preshared_key: device.peer_preshared_key(id).map(Key),
                    endpoint: device.peer_endpoint(id),
                    last_handshake: stats.last_handshake,
                    rx_bytes: stats.rx_bytes,
                    tx_bytes: stats.tx_bytes,
                    persistent_keepalive: device
                        .peer_persistent_keepalive(id)
                        .map_or(0, |d| d.as_secs().min(u64::from(u16::MAX)) as u16),
                    allowed_ips: dp.engine().allowed_ips(id),
                }
            })
            .collect();
        DeviceSnapshot { private_key: self.private_key, listen_port: self.listen_port, fwmark: self.fwmark, peers }
    }

    /// Applies a validated update. Anything that could still fail is checked before the first
    /// change, so a refused update leaves the device as it was.
    fn apply(&mut self, update: DeviceUpdate) -> Result<(), (i32, String)> {
        const EINVAL: i32 = 22;
        const EADDRINUSE: i32 = 98;
        if let Some(p) = update
            .peers
            .iter()
            .find(|p| !p.remove && !vxwg::dataplane::wireguard::is_usable_public_key(&p.public_key.0))
        {
            return Err((EINVAL, format!("peer {} is a low-order point", p.public_key.to_base64())));
        }
        let new_sockets = match update.listen_port {
            Some(port) if port != self.listen_port => Some(
                bind_udp(port, self.workers.threads.workers)
                    .map_err(|e| (EADDRINUSE, format!("listen_port {port}: {e}")))?,
            ),
            _ => None,
        };
        if let Some(sockets) = new_sockets {
            self.move_to(sockets).map_err(|e| (EADDRINUSE, format!("listen_port: {e}")))?;
        }

        let now = Instant::now();
        let mut dp = self.shared.lock();
        if let Some(key) = update.private_key {
            match key {
                Some(k) => {
                    dp.engine_mut().set_private_key(k.0);
                    self.private_key = Some(k);
                }
                None => {
                    let placeholder = Key::generate_private(&mut OsRng);
                    dp.engine_mut().set_private_key(placeholder.0);
                    self.private_key = None;
                }
            }
            self.shared.keyed.store(self.private_key.is_some(), Ordering::Relaxed);
        }
        if let Some(mark) = update.fwmark {
            self.fwmark = mark;
            for udp in &self.workers.sockets {
                let _ = udp.set_mark(mark.unwrap_or(0));
            }
        }
        if update.replace_peers {
            for id in dp.engine().device().peer_ids().collect::<Vec<_>>() {
                dp.engine_mut().remove_peer(id);
            }
        }
        for p in update.peers {
            let existing = dp.engine().device().peer_by_key(&p.public_key.0);
            if p.remove {
                if let Some(id) = existing {
                    dp.engine_mut().remove_peer(id);
                }
                continue;
            }
            let id = match existing {
                Some(id) => id,
                None if p.update_only => continue,
                None => match dp.engine_mut().add_peer(PeerConfig::new(p.public_key.0), &[]) {
                    Ok(id) => id,
                    // Our own public key: ignored, as Linux and wireguard-go do.
                    Err(_) => continue,
                },
            };
            let device = dp.engine_mut().device_mut();
            if let Some(psk) = p.preshared_key {
                device.set_peer_preshared_key(id, psk.map(|k| k.0));
            }
            if let Some(endpoint) = p.endpoint {
                device.set_peer_endpoint(id, Some(endpoint));
            }
            if let Some(secs) = p.persistent_keepalive {
                device.set_peer_persistent_keepalive(id, (secs > 0).then(|| Duration::from_secs(u64::from(secs))), now);
            }
            dp.engine_mut().set_allowed_ips(id, p.replace_allowed_ips, &p.allowed_ips);
        }
        Ok(())
    }

    /// Moves the workers to new sockets (a new listen port): they stop, take their socket of
    /// the new group and start again; the mark follows.
    fn move_to(&mut self, sockets: Vec<UdpSocket>) -> anyhow::Result<()> {
        let port = sockets[0].local_port()?;
        if let Some(mark) = self.fwmark {
            for udp in &sockets {
                udp.set_mark(mark)?;
            }
        }
        let running = !self.workers.running.is_empty();
        if running && self.workers.stop().is_err() {
            bail!("a worker has ended; the daemon is shutting down");
        }
        // Whether or not the sockets could be swapped (all or none are), the workers run again.
        let moved = self.workers.replace_sockets(sockets);
        if moved.is_ok() {
            self.listen_port = port;
        }
        if running {
            self.workers.start(&self.name, &self.shared)?;
        }
        Ok(moved?)
    }
}

/// A duration for the status document: seconds, to the millisecond.
fn seconds(d: Duration) -> f64 {
    d.as_millis() as f64 / 1000.0
}

/// The pod path in `vxwg status --json`: the VTEP, its routes and counters.
fn pod_status(
    p: &PodEngine,
    paths: Option<&std::collections::HashMap<vxwg::dataplane::wireguard::PeerId, (u32, u32)>>,
) -> serde_json::Value {
    let c = p.config();
    let s = p.stats();
    let device = p.engine().device();
    let paths: Vec<_> = paths
        .into_iter()
        .flatten()
        .map(|(&id, &(path_mtu, pod_mtu))| {
            serde_json::json!({
                "public_key": Key(device.peer_public_key(id).unwrap_or_default()).to_base64(),
                "endpoint": device.peer_endpoint(id).map(|e| e.to_string()),
                "path_mtu": path_mtu,
                "pod_mtu": pod_mtu,
            })
        })
        .collect();
    serde_json::json!({
        "vni": c.vni.get(),
        "port": c.dst_port,
        "vtep_ip": c.local_vtep_ip.to_string(),
        "vtep_mac": c.local_vtep_mac.to_string(),
        "pod_mtu": c.pod_mtu,
        "paths": paths,
        "routes": p.routes().iter().map(|(net, r)| serde_json::json!({
            "cidr": net.to_string(), "vtep_ip": r.vtep_ip.to_string(), "vtep_mac": r.vtep_mac.to_string(),
        })).collect::<Vec<_>>(),
        "packets_out": s.packets_out,
        "packets_in": s.packets_in,
        "l3_in": s.l3_in,
        "staged": s.staged,
        "mss_clamped": s.mss_clamped,
        "fragmented": s.fragmented,
        "too_big": s.too_big,
        "drops": {
            "malformed": s.malformed,
            "no_route": s.no_route,
            "no_peer": s.no_peer,
            "no_endpoint": s.no_endpoint,
            "encapsulation": s.encapsulation,
            "too_big_silent": s.too_big_silent,
            "source_not_allowed": s.source_not_allowed,
            "vxlan": s.vxlan,
            "wrong_vni": s.wrong_vni,
            "wrong_mac": s.wrong_mac,
            "inner_not_ip": s.inner_not_ip,
            "pod_source_not_allowed": s.pod_source_not_allowed,
        },
    })
}

/// The WireGuard sockets, one per worker on one port (SO_REUSEPORT), taking runs of datagrams
/// per receive (UDP GRO) where the kernel offers it and the offloads are on.
fn bind_udp(port: u16, workers: usize) -> io::Result<Vec<UdpSocket>> {
    let sockets = UdpSocket::bind_group(port, workers)?;
    if packet_io::offload_wanted() {
        for udp in &sockets {
            udp.enable_gro();
        }
    }
    Ok(sockets)
}

fn log(name: &str, msg: &str) {
    eprintln!("vxwg[{name}]: {msg}");
}

/// `vxwg up`: in the foreground, or re-executed in the background (as wireguard-go does) and
/// returning once the UAPI socket accepts connections.
pub fn up(name: &str, foreground: bool, config_path: Option<&Path>) -> anyhow::Result<()> {
    // Validate the whole configuration before creating anything.
    let config = config_path.map(Config::load).transpose()?;
    let foreground = foreground || std::env::var("WG_PROCESS_FOREGROUND").is_ok_and(|v| v == "1");
    if foreground {
        let threads = Threads::plan(
            config.as_ref().and_then(|c| c.workers),
            config.as_ref().and_then(|c| c.pin_workers),
            config.as_ref().and_then(|c| c.assist),
        )?;
        let mut daemon = Daemon::create(name, threads)?;
        let applied = match &config {
            // A failed configuration leaves nothing behind: the TUN, the socket file and what
            // netlink added go with their owners.
            Some(c) => Some(daemon.configure(c)?),
            None => None,
        };
        let result = daemon.run();
        // Routes, rules and addresses go before the TUN device does.
        drop(applied);
        return result;
    }
    let mut args: Vec<std::ffi::OsString> = vec!["up".into(), "--foreground".into()];
    if let Some(path) = config_path {
        args.push("--config".into());
        args.push(std::fs::canonicalize(path)?.into());
    }
    args.push(name.into());
    let exe = std::env::current_exe().context("finding our own executable")?;
    let mut child = std::process::Command::new(exe)
        .args(&args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        // Detached like wireguard-go: a caller capturing our output (wg-quick, a test) must not
        // wait on a pipe the daemon holds forever. LOG_LEVEL keeps the logs on stderr.
        .stderr(if std::env::var_os("LOG_LEVEL").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .process_group(0)
        .spawn()
        .context("starting the background daemon")?;
    let socket = Path::new(SOCKET_DIR).join(format!("{name}.sock"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("the daemon exited during start-up ({status})");
        }
        if UnixStream::connect(&socket).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    bail!("the daemon did not open {} within 10 s", socket.display())
}

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::AtomicBool;

    /// A directory of its own under the system's temporary one, removed at the end.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(what: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!("vxwg-{what}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn the_uapi_socket_is_never_there_for_others_to_connect_to() {
        let dir = TempDir::new("uapi-bind");
        let path = dir.0.join("wg0.sock");
        // Another local user, watching for the socket to appear: any moment it is there with
        // more than owner permissions, such a user could connect, and keep the connection to
        // ask for the private key later.
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let (stop, path) = (Arc::clone(&stop), path.clone());
            std::thread::spawn(move || {
                let mut modes_seen = std::collections::BTreeSet::new();
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(m) = std::fs::symlink_metadata(&path) {
                        modes_seen.insert(m.permissions().mode() & 0o777);
                    }
                }
                modes_seen
            })
        };
        for _ in 0..300 {
            let listener = bind_owner_only(&path).unwrap();
            let client = UnixStream::connect(&path).unwrap();
            assert!(listener.accept().is_ok(), "the socket at the path is the one bound");
            drop(client);
            std::fs::remove_file(&path).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        let modes_seen: Vec<String> = watcher.join().unwrap().iter().map(|m| format!("{m:o}")).collect();
        assert!(modes_seen.iter().all(|m| m == "600"), "the socket appeared with modes {modes_seen:?}");
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 0, "nothing left behind");
    }

    /// However the daemon ends (an error while starting, a panic in the control thread), the
    /// worker set dropped with it has stopped and joined its running workers by the time the
    /// drop returns: none is left holding the dataplane. Root only: the workers need a TUN
    /// device, made in a network namespace of the test's own.
    #[test]
    fn a_dropped_worker_set_has_joined_its_running_workers() {
        use std::process::Command;
        use vxwg::dataplane::io::{netns, Tun};
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
            eprintln!("skipped: needs root and iproute2");
            return;
        }
        struct Netns(String);
        impl Drop for Netns {
            fn drop(&mut self) {
                let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
            }
        }
        let ns = Netns(format!("vxwgdrop{}", std::process::id()));
        assert!(Command::new("ip").args(["netns", "add", &ns.0]).status().unwrap().success());
        let path = PathBuf::from(format!("/var/run/netns/{}", ns.0));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            netns::enter(&path).unwrap();
            let tuns = Tun::create_queues("droptest0", 2, false).unwrap();
            let idle = tuns
                .into_iter()
                .enumerate()
                .map(|(i, tun)| {
                    Worker::new(i, TunPort::new(tun, HEADROOM, TAILROOM), None, UdpSocket::bind(0).unwrap())
                })
                .collect();
            let threads = Threads { workers: 2, cpus: None, assist: crate::assist::AssistMode::Auto };
            let mut workers = WorkerSet::new(idle, threads).unwrap();
            let device = Device::new(DeviceConfig::new([7; 32]), OsRng, Instant::now(), SystemTime::now());
            let shared = Shared::new(
                Dataplane::L3(Box::new(Engine::new(device))),
                Assist::new(2, crate::assist::AssistMode::Auto).unwrap(),
            );
            workers.start("droptest", &shared).unwrap();
            assert_eq!(Arc::strong_count(&shared), 3, "each running worker holds the dataplane");
            drop(workers);
            let _ = tx.send(Arc::strong_count(&shared));
        });
        let left = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(left, Ok(1), "the drop returned with no worker left holding the dataplane");
    }

    #[test]
    fn a_uapi_socket_that_is_there_already_is_not_replaced() {
        let dir = TempDir::new("uapi-taken");
        let path = dir.0.join("wg0.sock");
        let _first = bind_owner_only(&path).unwrap();
        assert!(bind_owner_only(&path).is_err(), "a second daemon does not take over the path");
        assert!(UnixStream::connect(&path).is_ok(), "the first one still answers there");
        assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1, "nothing but the first socket");
    }
}
