//! The daemon's packet workers: one thread per core, each with its own TUN queue(s) and its own
//! UDP socket of the SO_REUSEPORT group, sharing the protocol state behind one lock.
//!
//! The kernel steers each flow to one TUN queue (by flow hash) and each peer's datagrams to one
//! socket (by 4-tuple), so a flow is always handled by one worker, in order. A worker holds the
//! lock only to plan a batch (routing, counters reserved in blocks, replay pre-check) and to
//! commit it (replay window, timers, AllowedIPs); the AEAD runs outside it, so workers encrypt
//! and decrypt in parallel.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::assist::{Assist, AssistMode};
use crate::daemon::Dataplane;
use crate::packet_io::{PortCounters, TunPort};
use vxwg::dataplane::engine::pod::{self, Delivery, PodIcmp, PodIncoming, PodOutgoing, PodSealJob};
use vxwg::dataplane::engine::{self, Datagram, Incoming, OpenJob, Outgoing, SealJob};
use vxwg::dataplane::io::cpu::{self, CpuTime};
use vxwg::dataplane::io::poll::wait_readable;
use vxwg::dataplane::io::{RecvMeta, UdpSocket, BATCH};
use vxwg::dataplane::wireguard::Transmit;

/// Largest datagram the UDP socket hands us (a UDP GRO run).
const MAX_DATAGRAM: usize = 65535;

/// What the workers and the control thread share.
pub(crate) struct Shared {
    dp: Mutex<Dataplane>,
    /// Whether a private key is set; until then traffic is dropped.
    pub keyed: AtomicBool,
    /// Set when a send was refused as too big: the control thread reads the path MTUs at once.
    pub paths_stale: AtomicBool,
    /// How the workers help each other decrypt.
    pub assist: Assist,
}

impl Shared {
    pub fn new(dp: Dataplane, assist: Assist) -> Arc<Shared> {
        Arc::new(Shared {
            dp: Mutex::new(dp),
            keyed: AtomicBool::new(false),
            paths_stale: AtomicBool::new(false),
            assist,
        })
    }

    /// The protocol state. A worker that panicked while holding it leaves it poisoned; the
    /// daemon shuts down when a worker ends, so the state is used only to answer on the way out.
    pub fn lock(&self) -> MutexGuard<'_, Dataplane> {
        self.dp.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One worker's counters, published after each batch for `vxwg status`.
#[derive(Default)]
pub(crate) struct WorkerStats {
    pub tun: PortStats,
    pub pod_tun: PortStats,
    /// Datagrams the kernel dropped for this worker's full socket receive buffer.
    pub socket_receive_drops: AtomicU64,
    /// Datagrams the socket did not take (its buffer full, or refused after others of the same
    /// batch went out): lost here, never retried.
    pub send_unsent: AtomicU64,
    /// Datagrams this worker encrypted and packets it decrypted: how the load is spread.
    pub packets_out: AtomicU64,
    pub packets_in: AtomicU64,
    /// Datagrams sealed again on fresh counters before sending, because other workers had sent
    /// so much to the same peer meanwhile that a receiver's replay window might have refused
    /// them (`dataplane::engine::reseal_stale`).
    pub packets_resealed: AtomicU64,
    /// Datagrams this worker decrypted for other workers, and datagrams of its own batches that
    /// others decrypted (`crate::assist`).
    pub packets_opened_for_others: AtomicU64,
    pub packets_opened_by_others: AtomicU64,
    /// The worker's thread while one runs (0 between threads, `THREAD_ENDING` as one ends), for
    /// its CPU time.
    thread_id: AtomicI32,
    /// CPU time of the threads this worker ran on before (a listen-port change restarts them),
    /// running and waiting, in nanoseconds.
    earlier_cpu: [AtomicU64; 2],
}

impl WorkerStats {
    /// Time the worker's threads spent on a CPU and waiting for one, all of them together.
    /// `None` where the kernel keeps no scheduler statistics.
    ///
    /// Never less than a reading before: the live thread's time is taken only if the thread was
    /// running, and not yet ending, both before and after it was read (an ending thread moves its
    /// time into `earlier_cpu`, where it would otherwise be counted twice, or not at all).
    pub fn cpu_time(&self) -> Option<CpuTime> {
        let earlier = || {
            let [running, waiting] =
                self.earlier_cpu.each_ref().map(|a| Duration::from_nanos(a.load(Ordering::SeqCst)));
            CpuTime { running, waiting }
        };
        loop {
            let tid = self.thread_id.load(Ordering::SeqCst);
            if tid == THREAD_ENDING {
                // Moving its time over: a few microseconds.
                std::thread::yield_now();
                continue;
            }
            let before = earlier();
            if tid == 0 {
                return Some(before);
            }
            let live = cpu::thread_cpu_time(tid);
            if self.thread_id.load(Ordering::SeqCst) != tid {
                // It began ending meanwhile (a read of an ending thread fails, ESRCH or NotFound).
                continue;
            }
            return live.ok().map(|live| before + live);
        }
    }

    /// Called by the worker's thread as it starts.
    fn thread_started(&self) {
        self.thread_id.store(cpu::current_thread_id(), Ordering::SeqCst);
    }

    /// Called by the worker's thread as it ends: keeps its CPU time for [`WorkerStats::cpu_time`].
    /// Marked as ending first, so that no reading of its live time can come after the time kept.
    fn thread_ending(&self) {
        self.thread_id.store(THREAD_ENDING, Ordering::SeqCst);
        if let Ok(t) = cpu::thread_cpu_time(cpu::current_thread_id()) {
            self.earlier_cpu[0].fetch_add(t.running.as_nanos() as u64, Ordering::SeqCst);
            self.earlier_cpu[1].fetch_add(t.waiting.as_nanos() as u64, Ordering::SeqCst);
        }
        self.thread_id.store(0, Ordering::SeqCst);
    }
}

/// `WorkerStats::thread_id` while the thread moves its CPU time to `earlier_cpu` (no thread id
/// is negative).
const THREAD_ENDING: i32 = -1;

/// A TUN port's counters, as atomics.
#[derive(Default)]
pub(crate) struct PortStats([AtomicU64; 8]);

impl PortStats {
    fn publish(&self, c: &PortCounters) {
        for (slot, v) in self.0.iter().zip(c.to_array()) {
            slot.store(v, Ordering::Relaxed);
        }
    }

    pub fn load(&self) -> PortCounters {
        PortCounters::from_array(self.0.each_ref().map(|a| a.load(Ordering::Relaxed)))
    }
}

/// Everything one worker owns: its queue of each TUN device, its socket, its buffers.
pub(crate) struct Worker {
    pub index: usize,
    pub tun: TunPort,
    pub pod: Option<PodPort>,
    udp: UdpSocket,
    /// Receive-buffer drops counted on the sockets this worker had before `udp` (a listen-port
    /// change swaps them), so that the published count never goes back.
    earlier_receive_drops: u64,
    pub stats: Arc<WorkerStats>,
    udp_bufs: Vec<Vec<u8>>,
    udp_meta: Vec<RecvMeta>,
    datagrams: Vec<Datagram>,
    seal_jobs: Vec<SealJob>,
    open_jobs: Vec<OpenJob>,
    outgoing: Vec<Outgoing>,
    incoming: Vec<Incoming>,
    transmits: Vec<Transmit>,
}

/// A worker's queue of the pod TUN and its batch buffers.
pub(crate) struct PodPort {
    pub port: TunPort,
    seal_jobs: Vec<PodSealJob>,
    out: Vec<PodOutgoing>,
    icmp: Vec<PodIcmp>,
    incoming: Vec<PodIncoming>,
}

impl PodPort {
    pub fn new(port: TunPort) -> PodPort {
        PodPort {
            port,
            seal_jobs: Vec::with_capacity(BATCH),
            out: Vec::with_capacity(BATCH),
            icmp: Vec::new(),
            incoming: Vec::with_capacity(BATCH),
        }
    }
}

/// Why a worker stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Asked to (shutdown, or a reconfiguration that swaps its socket).
    Stopped,
    /// A TUN device is gone.
    DeviceGone,
}

/// A running worker thread; it hands its [`Worker`] back when it stops.
pub(crate) struct Running {
    handle: std::thread::JoinHandle<(Worker, Exit)>,
}

/// Tells the workers to stop: a socket that stays readable once written to, which every
/// worker polls (nobody reads it), plus a flag.
pub(crate) struct StopSignal {
    flag: Arc<AtomicBool>,
    reader: Arc<UnixStream>,
    writer: UnixStream,
}

impl StopSignal {
    pub fn new() -> io::Result<StopSignal> {
        let (reader, writer) = UnixStream::pair()?;
        reader.set_nonblocking(true)?;
        Ok(StopSignal { flag: Arc::new(AtomicBool::new(false)), reader: Arc::new(reader), writer })
    }

    pub fn raise(&self) {
        self.flag.store(true, Ordering::SeqCst);
        let _ = io::Write::write(&mut &self.writer, &[1]);
    }
}

impl Worker {
    pub fn new(index: usize, tun: TunPort, pod: Option<PodPort>, udp: UdpSocket) -> Worker {
        Worker {
            index,
            tun,
            pod,
            udp,
            earlier_receive_drops: 0,
            stats: Arc::new(WorkerStats::default()),
            // One zeroed allocation each (not `vec![v; n]`, which would copy the first one into
            // the others): the kernel maps zero pages lazily, so a buffer costs memory only once
            // a datagram that long has arrived in it.
            udp_bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            udp_meta: vec![RecvMeta::default(); BATCH],
            datagrams: Vec::with_capacity(BATCH),
            seal_jobs: Vec::with_capacity(BATCH),
            open_jobs: Vec::with_capacity(BATCH),
            outgoing: Vec::with_capacity(BATCH),
            incoming: Vec::with_capacity(BATCH),
            transmits: Vec::new(),
        }
    }

    /// Starts this worker on its own thread, pinned to `cpu` if given. When it ends (stopped,
    /// a device gone, or a panic) it writes to `ended`, which the control thread polls.
    pub fn spawn(
        self,
        name: &str,
        shared: Arc<Shared>,
        stop: &StopSignal,
        ended: UnixStream,
        cpu: Option<usize>,
    ) -> io::Result<Running> {
        let (flag, reader) = (stop.flag.clone(), stop.reader.clone());
        let name = name.to_string();
        let handle = std::thread::Builder::new().name(format!("vxwg-worker-{}", self.index)).spawn(move || {
            // Written on the way out however the thread ends, a panic included.
            struct Ended(UnixStream);
            impl Drop for Ended {
                fn drop(&mut self) {
                    let _ = io::Write::write(&mut &self.0, &[1]);
                }
            }
            let _ended = Ended(ended);
            // Declared after `_ended`, so dropped before it: the time is kept before the
            // control thread hears that the worker ended.
            struct Accounted(Arc<WorkerStats>);
            impl Drop for Accounted {
                fn drop(&mut self) {
                    self.0.thread_ending();
                }
            }
            self.stats.thread_started();
            let _accounted = Accounted(Arc::clone(&self.stats));
            if let Some(cpu) = cpu {
                if let Err(e) = vxwg::dataplane::io::cpu::pin_current_thread(cpu) {
                    log(&name, &format!("worker {}: pinning to CPU {cpu}: {e}", self.index));
                }
            }
            self.run(&name, &shared, &flag, reader.as_raw_fd())
        })?;
        Ok(Running { handle })
    }

    fn run(mut self, name: &str, shared: &Shared, stop: &AtomicBool, stop_fd: i32) -> (Worker, Exit) {
        loop {
            if stop.load(Ordering::SeqCst) {
                return (self, Exit::Stopped);
            }
            let pod_fd = self.pod.as_ref().map_or(-1, |p| p.port.tun.raw_fd());
            shared.assist.set_waiting(self.index, true);
            let ready = wait_readable(
                [self.tun.tun.raw_fd(), self.udp.raw_fd(), pod_fd, stop_fd, shared.assist.wake_fd(self.index)],
                Some(Duration::from_secs(1)),
            );
            shared.assist.set_waiting(self.index, false);
            let [tun, udp, pod, stop_ready, help] = match ready {
                Ok(r) => r,
                Err(e) => {
                    log(name, &format!("worker {}: poll: {e}", self.index));
                    return (self, Exit::DeviceGone);
                }
            };
            // Raised, or dropped without a raise (the control thread unwound): a hung-up stop
            // socket stays ready, so going on would spin.
            if stop_ready.readable || stop_ready.failed {
                return (self, Exit::Stopped);
            }
            if tun.failed || pod.failed {
                return (self, Exit::DeviceGone);
            }
            if help.readable && (tun.readable || udp.readable || pod.readable) {
                // Its own work first: this wakeup goes unanswered.
                shared.assist.drain_wake(self.index);
            } else if help.readable {
                // Back to its own queues as soon as they have something (or the stop signal).
                let own = [self.tun.tun.raw_fd(), self.udp.raw_fd(), pod_fd, stop_fd];
                let own_work = || wait_readable(own, Some(Duration::ZERO)).is_ok_and(|r| r.iter().any(|r| r.readable));
                let helped = shared.assist.help(self.index, own_work);
                self.stats.packets_opened_for_others.fetch_add(helped as u64, Ordering::Relaxed);
            }
            if tun.readable && !self.drain_tun(name, shared) {
                return (self, Exit::DeviceGone);
            }
            if pod.readable && !self.drain_pod(name, shared) {
                return (self, Exit::DeviceGone);
            }
            if udp.readable {
                self.drain_udp(name, shared);
            }
            self.publish_stats();
        }
    }

    fn publish_stats(&self) {
        self.stats.tun.publish(&self.tun.counters());
        if let Some(pod) = &self.pod {
            self.stats.pod_tun.publish(&pod.port.counters());
        }
        let drops = self.earlier_receive_drops + self.udp.receive_drops();
        self.stats.socket_receive_drops.store(drops, Ordering::Relaxed);
    }

    /// Another handle on the worker's socket (for the control thread's own sends and marks).
    pub fn socket_handle(&self) -> io::Result<UdpSocket> {
        self.udp.try_clone()
    }

    /// Gives the worker the socket it receives and sends on from now (a listen-port change),
    /// keeping the old one's receive-buffer drops in its count.
    pub fn replace_socket(&mut self, udp: UdpSocket) {
        self.earlier_receive_drops += self.udp.receive_drops();
        self.udp = udp;
    }

    /// Reads a batch from the TUN queue, encrypts it, sends it. False if the device is gone.
    fn drain_tun(&mut self, name: &str, shared: &Shared) -> bool {
        let Some(n) = self.tun.read_batch() else { return false };
        if n == 0 || !shared.keyed.load(Ordering::Relaxed) {
            return true;
        }
        let (bufs, lens) = (&mut self.tun.bufs[..n], &self.tun.lens[..n]);
        self.seal_jobs.clear();
        {
            let mut dp = shared.lock();
            dp.engine_mut().plan_encapsulate(bufs, lens, Instant::now(), &mut self.seal_jobs);
            take_transmits(&mut dp, &mut self.transmits);
        }
        self.outgoing.clear();
        engine::seal_jobs(bufs, lens, &self.seal_jobs, &mut self.outgoing);
        self.stats.packets_out.fetch_add(self.outgoing.len() as u64, Ordering::Relaxed);
        // Last, so nothing but the send itself lies between this check and the wire.
        let resealed = engine::reseal_stale(bufs, &mut self.seal_jobs, &self.outgoing);
        if resealed > 0 {
            self.stats.packets_resealed.fetch_add(resealed as u64, Ordering::Relaxed);
        }
        let msgs = self.outgoing.iter().map(|o| (&bufs[o.slot][..o.len], o.dst));
        if let Some(e) = send_counted(&self.udp, &self.stats, msgs, self.outgoing.len()) {
            log(name, &format!("send: {e}"));
        }
        self.send_transmits(name);
        true
    }

    /// Reads a batch of pod packets, wraps them in VXLAN inside WireGuard, sends them; ICMP
    /// too-big answers go back to the pod TUN. False if the device is gone.
    fn drain_pod(&mut self, name: &str, shared: &Shared) -> bool {
        let Some(pod) = self.pod.as_mut() else { return true };
        let Some(n) = pod.port.read_batch() else { return false };
        if n == 0 || !shared.keyed.load(Ordering::Relaxed) {
            return true;
        }
        let (bufs, lens) = (&mut pod.port.bufs[..n], &pod.port.lens[..n]);
        pod.seal_jobs.clear();
        pod.icmp.clear();
        {
            let mut dp = shared.lock();
            if let Dataplane::Pod(engine) = &mut *dp {
                engine.plan_encapsulate_pod(bufs, lens, Instant::now(), &mut pod.seal_jobs, &mut pod.icmp);
            }
            take_transmits(&mut dp, &mut self.transmits);
        }
        pod.out.clear();
        pod::seal_pod_jobs(bufs, &pod.seal_jobs, &mut pod.out);
        self.stats.packets_out.fetch_add(pod.out.len() as u64, Ordering::Relaxed);
        let resealed = pod::reseal_stale_pod(bufs, &mut pod.seal_jobs, &pod.out);
        if resealed > 0 {
            self.stats.packets_resealed.fetch_add(resealed as u64, Ordering::Relaxed);
        }
        let msgs = pod.out.iter().map(|o| (&bufs[o.slot][o.range.clone()], o.dst));
        if let Some(e) = send_counted(&self.udp, &self.stats, msgs, pod.out.len()) {
            if e.raw_os_error() == Some(libc::EMSGSIZE) {
                // The path shrank under us: read it again now rather than in up to 2 s.
                shared.paths_stale.store(true, Ordering::Relaxed);
            }
            log(name, &format!("send: {e}"));
        }
        for icmp in &pod.icmp {
            if let Err(e) = pod.port.write_one(&icmp.packet) {
                log(name, &format!("pod TUN write: {e}"));
            }
        }
        self.send_transmits(name);
        true
    }

    /// Receives a batch of datagrams, decrypts them, writes the packets to the TUN queue(s).
    fn drain_udp(&mut self, name: &str, shared: &Shared) {
        let n = match self.udp.recv_batch(&mut self.udp_bufs, &mut self.udp_meta) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => return,
            Err(e) => {
                log(name, &format!("receive: {e}"));
                return;
            }
        };
        if !shared.keyed.load(Ordering::Relaxed) {
            return;
        }
        // With UDP GRO one buffer may hold a run of datagrams from one sender.
        self.datagrams.clear();
        for (slot, meta) in self.udp_meta[..n].iter().enumerate() {
            self.datagrams.extend(meta.datagrams().map(|range| Datagram { slot, range, src: meta.src }));
        }
        // Datagrams take effect in arrival order: planning stops before a handshake message that
        // follows planned data, which is opened and committed first, then planning goes on.
        if let Some(pod) = self.pod.as_mut() {
            pod.incoming.clear();
        }
        self.incoming.clear();
        let mut next = 0;
        while next < self.datagrams.len() {
            // Always forward, even if planning ever consumed nothing: a stuck loop would hang
            // the worker.
            next += self.receive_round(shared, next).max(1);
        }
        if let Some(pod) = self.pod.as_mut() {
            self.stats.packets_in.fetch_add(pod.incoming.len() as u64, Ordering::Relaxed);
            // VXLAN for our VTEP goes to the pod TUN, everything else to the host TUN.
            let to = |d: Delivery| move |i: &&PodIncoming| i.delivery == d;
            let pods = pod.incoming.iter().filter(to(Delivery::Pod)).map(|i| (i.slot, i.range.clone()));
            if let Some(e) = pod.port.write_packets(&mut self.udp_bufs, pods) {
                log(name, &format!("pod TUN write: {e}"));
            }
            let hosts = pod.incoming.iter().filter(to(Delivery::Host)).map(|i| (i.slot, i.range.clone()));
            if let Some(e) = self.tun.write_packets(&mut self.udp_bufs, hosts) {
                log(name, &format!("TUN write: {e}"));
            }
        } else {
            self.stats.packets_in.fetch_add(self.incoming.len() as u64, Ordering::Relaxed);
            let packets = self.incoming.iter().map(|i| (i.slot, i.range.clone()));
            if let Some(e) = self.tun.write_packets(&mut self.udp_bufs, packets) {
                log(name, &format!("TUN write: {e}"));
            }
        }
        self.send_transmits(name);
    }

    /// One round of the receive phases over `self.datagrams[from..]`: plan under the lock, open
    /// outside it, commit under it again; what to deliver is appended to the incoming list (the
    /// pod port's if there is one). Returns how many datagrams planning consumed (at least one).
    fn receive_round(&mut self, shared: &Shared, from: usize) -> usize {
        self.open_jobs.clear();
        let consumed = {
            let mut dp = shared.lock();
            let (bufs, datagrams, jobs) = (&mut self.udp_bufs, &self.datagrams[from..], &mut self.open_jobs);
            let consumed = match &mut *dp {
                Dataplane::Pod(p) => p.plan_decapsulate_pod(bufs, datagrams, Instant::now(), jobs),
                Dataplane::L3(e) => e.plan_decapsulate(bufs, datagrams, Instant::now(), jobs),
            };
            take_transmits(&mut dp, &mut self.transmits);
            consumed
        };
        debug_assert!(consumed > 0, "planning consumes at least one datagram");
        if self.open_jobs.is_empty() {
            // Handshakes and drops only: nothing to open or commit, no second lock.
            return consumed;
        }
        let helped = shared.assist.open(self.index, &mut self.udp_bufs, &mut self.open_jobs);
        let now = Instant::now();
        if helped > 0 {
            self.stats.packets_opened_by_others.fetch_add(helped as u64, Ordering::Relaxed);
        }
        let mut dp = shared.lock();
        match self.pod.as_mut() {
            Some(pod) => {
                if let Dataplane::Pod(p) = &mut *dp {
                    p.commit_decapsulate_pod(&mut self.udp_bufs, &self.open_jobs, now, &mut pod.incoming);
                }
            }
            None => dp.engine_mut().commit_decapsulate(&mut self.udp_bufs, &self.open_jobs, now, &mut self.incoming),
        }
        take_transmits(&mut dp, &mut self.transmits);
        consumed
    }

    /// Sends the control datagrams taken from the protocol (handshakes, keepalives, staged
    /// packets released by a handshake) from this worker's socket.
    fn send_transmits(&mut self, name: &str) {
        for t in self.transmits.drain(..) {
            if let Err(e) = self.udp.send_to(&t.payload, t.dst) {
                log(name, &format!("send to {}: {e}", t.dst));
            }
        }
    }
}

/// Sends a batch of `total` datagrams, counting those the socket did not take; the error if it
/// took none.
fn send_counted<'a>(
    udp: &UdpSocket,
    stats: &WorkerStats,
    msgs: impl IntoIterator<Item = (&'a [u8], std::net::SocketAddr)>,
    total: usize,
) -> Option<io::Error> {
    let (sent, error) = match udp.send_batch(msgs) {
        Ok(sent) => (sent.min(total), None),
        Err(e) => (0, Some(e)),
    };
    stats.send_unsent.fetch_add((total - sent) as u64, Ordering::Relaxed);
    error
}

/// Moves what the protocol queued for sending into `into` (sent once the lock is released).
pub(crate) fn take_transmits(dp: &mut Dataplane, into: &mut Vec<Transmit>) {
    while let Some(t) = dp.poll_transmit() {
        into.push(t);
    }
}

impl Running {
    /// Waits for the worker to end and takes it back (`None` if it panicked).
    pub fn join(self) -> Option<(Worker, Exit)> {
        self.handle.join().ok()
    }
}

fn log(name: &str, msg: &str) {
    eprintln!("vxwg[{name}]: {msg}");
}

/// Most workers a daemon runs (a TUN device takes at most 256 queues; past a few dozen the
/// shared lock, not the cores, would be the limit).
pub(crate) const MAX_WORKERS: usize = 64;

/// Most workers run unless configured: a node agent shares its machine. Each worker holds at
/// most about 4.5 MB of batch buffers (64 KB UDP GRO buffers, touched only as long datagrams
/// arrive, and per TUN device about 270 KB of MTU-sized slots and one 64 KB landing buffer).
const DEFAULT_MAX_WORKERS: usize = 4;

/// How many workers to run and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Threads {
    pub workers: usize,
    /// CPU for each worker, when pinned.
    pub cpus: Option<Vec<usize>>,
    /// When idle workers help decrypt a busy worker's batch.
    pub assist: AssistMode,
}

impl Threads {
    /// `VXWG_WORKERS` / `VXWG_PIN` (for comparison runs) override the configuration, which
    /// overrides the default: one worker per CPU the daemon may run on (at most 4), left to the
    /// scheduler.
    pub fn plan(workers: Option<usize>, pin: Option<bool>, assist: Option<AssistMode>) -> anyhow::Result<Threads> {
        let env_workers = match std::env::var("VXWG_WORKERS") {
            Ok(v) => Some(
                v.parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_WORKERS).contains(n))
                    .ok_or_else(|| anyhow::anyhow!("VXWG_WORKERS={v:?}: must be 1 to {MAX_WORKERS}"))?,
            ),
            Err(_) => None,
        };
        let env_pin = match std::env::var("VXWG_PIN") {
            Ok(v) if v == "0" => Some(false),
            Ok(v) if v == "1" => Some(true),
            Ok(v) => anyhow::bail!("VXWG_PIN={v:?}: must be 0 or 1"),
            Err(_) => None,
        };
        let cpus = vxwg::dataplane::io::cpu::allowed_cpus().unwrap_or_default();
        let workers = env_workers.or(workers).unwrap_or(cpus.len().clamp(1, DEFAULT_MAX_WORKERS));
        // Unpinned unless asked: a node agent shares its cores with pods, and the scheduler can
        // move an unpinned worker off a core that something else keeps busy. Pinning pays when
        // the cores are the daemon's (docs/performance.md has both measured).
        let pin = env_pin.or(pin).unwrap_or(false) && !cpus.is_empty();
        let cpus = pin.then(|| (0..workers).map(|i| cpus[i % cpus.len()]).collect());
        Ok(Threads { workers, cpus, assist: AssistMode::plan(assist)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::time::SystemTime;
    use vxwg::dataplane::engine::{Engine, HEADROOM, TAILROOM};
    use vxwg::dataplane::io::Tun;
    use vxwg::dataplane::wireguard::{Device, DeviceConfig};

    /// A network namespace of this test's own, deleted however the test ends.
    struct Netns(String);
    impl Drop for Netns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    /// The control thread's stop signal dropped without being raised (it unwound on an error or
    /// a panic): the worker must end, not spin on the hung-up socket for the rest of the
    /// process. Root only: the worker needs a TUN device, made in a namespace of its own.
    #[test]
    fn a_worker_ends_when_its_stop_signal_is_dropped_without_a_raise() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || Command::new("ip").arg("-V").output().is_err() {
            eprintln!("skipped: needs root and iproute2");
            return;
        }
        let ns = Netns(format!("vxwgstop{}", std::process::id()));
        assert!(Command::new("ip").args(["netns", "add", &ns.0]).status().unwrap().success());
        let path = format!("/var/run/netns/{}", ns.0);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            vxwg::dataplane::io::netns::enter(std::path::Path::new(&path)).unwrap();
            let tun = Tun::create_queues("stoptest0", 1, false).unwrap().remove(0);
            let udp = UdpSocket::bind(0).unwrap();
            let worker = Worker::new(0, TunPort::new(tun, HEADROOM, TAILROOM), None, udp);
            let device = Device::new(DeviceConfig::new([7; 32]), rand_core::OsRng, Instant::now(), SystemTime::now());
            let shared =
                Shared::new(Dataplane::L3(Box::new(Engine::new(device))), Assist::new(1, AssistMode::Off).unwrap());
            let stop = StopSignal::new().unwrap();
            let (_ended, ended_writer) = UnixStream::pair().unwrap();
            let running = worker.spawn("stoptest", shared, &stop, ended_writer, None).unwrap();
            std::thread::sleep(Duration::from_millis(50));
            drop(stop);
            let _ = tx.send(running.join().map(|(_, exit)| exit));
        });
        let exit = rx.recv_timeout(Duration::from_secs(10));
        assert_eq!(exit, Ok(Some(Exit::Stopped)), "the worker ended within 10 s of the signal being dropped");
    }

    /// Threads that start, compute for a moment and end, one after another, as a worker's
    /// threads do across listen-port changes, while the status reads the worker's CPU time.
    #[test]
    fn a_workers_cpu_time_never_goes_back_as_its_threads_end() {
        let stats = Arc::new(WorkerStats::default());
        if cpu::thread_cpu_time(cpu::current_thread_id()).is_err() {
            eprintln!("skipped: no scheduler statistics in /proc (kernel without CONFIG_SCHED_INFO)");
            return;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let churn = {
            let (stats, stop) = (Arc::clone(&stats), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let stats = Arc::clone(&stats);
                    std::thread::spawn(move || {
                        stats.thread_started();
                        let start = Instant::now();
                        let mut x = 0u64;
                        while start.elapsed() < Duration::from_micros(300) {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                        }
                        stats.thread_ending();
                    })
                    .join()
                    .unwrap();
                }
            })
        };
        let (mut last, mut backwards) = (CpuTime::default(), Vec::new());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let now = stats.cpu_time().expect("scheduler statistics");
            if now.running < last.running || now.waiting < last.waiting {
                backwards.push((last, now));
            }
            last = now;
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        assert!(backwards.is_empty(), "{} readings went back, e.g. {:?}", backwards.len(), backwards.first());
    }
}
