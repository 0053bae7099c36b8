//! The pipeline that composes wire formats, WireGuard and cryptokey routing, a batch at a time.
//!
//! Outbound: IP packets (from a TUN device) → destination lookup in AllowedIPs → the owning peer's
//! session → encrypted in place → datagrams to send. Inbound: datagrams → decrypted in place →
//! the inner source must lie in the sending peer's AllowedIPs → IP packets to deliver.
//!
//! Sans-IO like the protocol below it: the caller owns the buffers and does the syscalls.
//!
//! # Several workers, one engine
//! The data path comes in three phases so that worker threads sharing one engine behind a lock
//! run the AEAD outside it (as kernel WireGuard and wireguard-go do):
//!
//! * send: [`Engine::plan_encapsulate`] (under the lock: routing, one block of send counters
//!   reserved per run of packets to one peer, timers and statistics) → [`seal_jobs`] (no engine:
//!   padding and encryption in place);
//! * receive: [`Engine::plan_decapsulate`] (under the lock: keypair lookup and the replay
//!   pre-check; control messages handled completely) → [`open_jobs`] (no engine: decryption in
//!   place) → [`Engine::commit_decapsulate`] (under the lock again: the counter enters the replay
//!   window, after authentication and only once even if two workers opened the same datagram;
//!   then roaming, timers, statistics and the AllowedIPs source check).
//!
//! Received datagrams take effect in arrival order, as kernel WireGuard's do: a handshake message
//! may replace the very keypair a data packet before it in the batch was planned on, so planning
//! stops before a handshake message that follows planned data and says how many datagrams it
//! consumed; the caller opens and commits those, then plans again from there. A batch of data
//! alone is planned in one call.
//!
//! The single-call methods ([`Engine::encapsulate_batch`], [`Engine::decapsulate_batch`], ...)
//! do the same work back to back (receiving, one datagram at a time, so in order too).
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use crate::route::{AllowedIps, IpNet};
use crate::wireguard::device::is_handshake_message;
use crate::wireguard::{
    Device, OpenFailure, OpenTicket, PeerConfig, PeerError, PeerId, ReceivePlan, Received, RecvError, SendBlock,
    Transmit,
};

pub mod pod;
pub use crate::wireguard::{HEADROOM, TAILROOM};

/// Why a packet was dropped by the engine (the protocol's own reasons are in
/// [`crate::wireguard::DropReason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EngineDrop {
    /// Outbound packet whose destination no peer's AllowedIPs cover.
    NoRoute,
    /// Outbound packet that is not IPv4 or IPv6.
    NotIp,
    /// Outbound packet for a peer with no endpoint.
    NoEndpoint,
    /// Decrypted packet whose source is not in the sending peer's AllowedIPs.
    SourceNotAllowed,
}

/// Engine counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub no_route: u64,
    pub not_ip: u64,
    pub no_endpoint: u64,
    pub source_not_allowed: u64,
    pub packets_out: u64,
    pub packets_in: u64,
}

/// A packet to send: `bufs[slot][..len]` to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    pub slot: usize,
    pub len: usize,
    pub dst: SocketAddr,
}

/// A received datagram: `bufs[slot][range]`, from `src`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    pub slot: usize,
    pub range: Range<usize>,
    pub src: SocketAddr,
}

/// A packet to deliver: `bufs[slot][range]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub slot: usize,
    pub range: Range<usize>,
    pub peer: PeerId,
}

/// One run of packets for one peer, planned under the engine's lock
/// ([`Engine::plan_encapsulate`]), sealed without it ([`seal_jobs`]).
#[derive(Debug, Clone)]
pub struct SealJob {
    /// The key and the run's reserved counters: slot `slots.start + i` seals on counter `i`.
    block: SendBlock,
    dst: SocketAddr,
    slots: Range<usize>,
}

impl SealJob {
    /// Where the run goes.
    pub fn dst(&self) -> SocketAddr {
        self.dst
    }

    /// The batch slots of the run.
    pub fn slots(&self) -> Range<usize> {
        self.slots.clone()
    }

    /// The counter of the run's first packet.
    pub fn first_counter(&self) -> u64 {
        self.block.first_counter()
    }
}

/// Phase 2 of sending, on any thread and without the engine: pads and encrypts every job's
/// packets in place (`bufs[i][HEADROOM..HEADROOM + lens[i]]`, as planned) and appends what to
/// send. A slot outside `bufs` or without room for its padding and tag is skipped (its counter
/// goes unused).
pub fn seal_jobs<B: AsMut<[u8]>>(bufs: &mut [B], lens: &[usize], jobs: &[SealJob], out: &mut Vec<Outgoing>) {
    for job in jobs {
        for (i, slot) in job.slots.clone().enumerate() {
            let (Some(buf), Some(&len)) = (bufs.get_mut(slot), lens.get(slot)) else { continue };
            if let Some(len) = job.block.seal(i as u64, buf.as_mut(), len) {
                out.push(Outgoing { slot, len, dst: job.dst });
            }
        }
    }
}

/// Just before a sealed batch is sent: moves every run that fell more than
/// [`RESEAL_BEHIND`](crate::wireguard::RESEAL_BEHIND) counters behind its keypair (other workers
/// sent to the same peer meanwhile) onto fresh counters, and re-encrypts its messages in `out`
/// (as [`seal_jobs`] made them) on those. Returns how many were resealed. Costs one atomic load
/// per run when none fell behind.
pub fn reseal_stale<B: AsMut<[u8]>>(bufs: &mut [B], jobs: &mut [SealJob], out: &[Outgoing]) -> usize {
    let runs = jobs.iter_mut().map(|j| (&mut j.block, j.slots.clone()));
    reseal_runs(bufs, runs, || out.iter().map(|o| (o.slot, 0..o.len)))
}

/// Both paths' [`reseal_stale`]: `runs` are each run's block and batch slots, `messages` where
/// each sealed message lies (slot, byte range in it).
pub(crate) fn reseal_runs<'a, B, I>(
    bufs: &mut [B],
    runs: impl Iterator<Item = (&'a mut SendBlock, Range<usize>)>,
    messages: impl Fn() -> I,
) -> usize
where
    B: AsMut<[u8]>,
    I: Iterator<Item = (usize, Range<usize>)>,
{
    let mut resealed = 0;
    for (block, slots) in runs.filter(|(block, _)| block.is_stale()) {
        let Some(old) = block.renew() else { continue };
        for (slot, range) in messages().filter(|(slot, _)| slots.contains(slot)) {
            let i = (slot - slots.start) as u64;
            if let Some(message) = bufs.get_mut(slot).and_then(|b| b.as_mut().get_mut(range)) {
                resealed += usize::from(block.reseal(&old, i, message));
            }
        }
    }
    resealed
}

/// One received transport-data message whose keypair and counter passed the pre-check
/// ([`Engine::plan_decapsulate`]); [`open_jobs`] records the outcome of decryption in it, and
/// [`Engine::commit_decapsulate`] takes it from there.
#[derive(Debug, Clone)]
pub struct OpenJob {
    ticket: OpenTicket,
    slot: usize,
    range: Range<usize>,
    src: SocketAddr,
    /// Plaintext length, or why it did not open; `None` until [`open_jobs`] ran.
    opened: Option<Result<usize, OpenFailure>>,
}

impl OpenJob {
    /// The batch slot of the datagram.
    pub fn slot(&self) -> usize {
        self.slot
    }

    /// The datagram's position in its slot's buffer.
    pub fn range(&self) -> Range<usize> {
        self.range.clone()
    }

    /// Where the datagram came from.
    pub fn src(&self) -> SocketAddr {
        self.src
    }

    /// The peer whose keypair the datagram names.
    pub fn peer(&self) -> PeerId {
        self.ticket.peer
    }

    /// The datagram's counter.
    pub fn counter(&self) -> u64 {
        self.ticket.counter
    }

    /// Outcome of [`open_jobs`]: plaintext length, or why it failed; `None` before it ran.
    pub fn opened(&self) -> Option<Result<usize, OpenFailure>> {
        self.opened
    }

    /// [`open_jobs`] for this job alone, given its datagram (`bufs[slot][range]`, what
    /// [`OpenJob::slot`] and [`OpenJob::range`] name): decrypts it in place and records the
    /// outcome. For a caller that shares one batch's jobs between threads (`crate::assist`).
    pub fn open_in(&mut self, datagram: &mut [u8]) {
        let payload = datagram.get_mut(HEADROOM..);
        self.opened = Some(payload.map_or(Err(OpenFailure::Auth), |p| self.ticket.open(p)));
    }
}

/// Phase 2 of receiving, on any thread and without the engine: decrypts every job's payload in
/// place and records the outcome in the job. Nothing is committed.
pub fn open_jobs<B: AsMut<[u8]>>(bufs: &mut [B], jobs: &mut [OpenJob]) {
    for job in jobs {
        match in_slot(bufs, job.slot, job.range.clone()) {
            Some(datagram) => job.open_in(datagram),
            None => job.opened = Some(Err(OpenFailure::Auth)),
        }
    }
}

/// `bufs[slot][range]`, if the batch has that slot and the slot that range.
#[inline]
pub(crate) fn in_slot<B: AsMut<[u8]>>(bufs: &mut [B], slot: usize, range: Range<usize>) -> Option<&mut [u8]> {
    bufs.get_mut(slot).and_then(|b| b.as_mut().get_mut(range))
}

/// A WireGuard interface: the protocol [`Device`] plus its cryptokey routing table.
#[derive(Debug)]
pub struct Engine {
    device: Device,
    routes: AllowedIps<PeerId>,
    stats: EngineStats,
    /// Reused per batch so the single-call path does not allocate in steady state.
    seal_scratch: Vec<SealJob>,
}

/// Destination address bytes of an IP packet, if it is one.
#[inline]
fn ip_dst(packet: &[u8]) -> Option<IpKey> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpKey::V4(packet[16..20].try_into().ok()?)),
        6 if packet.len() >= 40 => Some(IpKey::V6(packet[24..40].try_into().ok()?)),
        _ => None,
    }
}

/// Source address bytes of an IP packet (the protocol already checked it is one).
#[inline]
fn ip_src(packet: &[u8]) -> Option<IpKey> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpKey::V4(packet[12..16].try_into().ok()?)),
        6 if packet.len() >= 40 => Some(IpKey::V6(packet[8..24].try_into().ok()?)),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum IpKey {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Engine {
    /// An engine around a protocol device with no peers.
    pub fn new(device: Device) -> Self {
        Self { device, routes: AllowedIps::new(), stats: EngineStats::default(), seal_scratch: Vec::new() }
    }

    /// The protocol device (peers, sessions, stats).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The protocol device, mutable (keys, endpoints, keepalives).
    pub fn device_mut(&mut self) -> &mut Device {
        &mut self.device
    }

    /// Engine counters.
    pub fn stats(&self) -> EngineStats {
        self.stats
    }

    /// Adds a peer with its AllowedIPs (a prefix another peer held moves to this one).
    pub fn add_peer(&mut self, config: PeerConfig, allowed_ips: &[IpNet]) -> Result<PeerId, PeerError> {
        let id = self.device.add_peer(config)?;
        for net in allowed_ips {
            self.routes.insert(*net, id);
        }
        Ok(id)
    }

    /// Removes a peer, its sessions and its AllowedIPs.
    pub fn remove_peer(&mut self, id: PeerId) -> bool {
        self.routes.remove_value(id);
        self.device.remove_peer(id)
    }

    /// Replaces our static key (see [`Device::set_private_key`]); a peer that had the new public
    /// key is removed together with its AllowedIPs, so no stale route can outlive it.
    pub fn set_private_key(&mut self, private_key: [u8; 32]) {
        for id in self.device.set_private_key(private_key) {
            self.routes.remove_value(id);
        }
    }

    /// Adds prefixes to a peer's AllowedIPs, after dropping its current ones if `replace`.
    pub fn set_allowed_ips(&mut self, id: PeerId, replace: bool, allowed_ips: &[IpNet]) {
        if replace {
            self.routes.remove_value(id);
        }
        for net in allowed_ips {
            self.routes.insert(*net, id);
        }
    }

    /// A peer's AllowedIPs.
    pub fn allowed_ips(&self, id: PeerId) -> Vec<IpNet> {
        self.routes.prefixes_of(id).collect()
    }

    /// The peer whose AllowedIPs cover `addr`.
    pub fn route(&self, addr: std::net::IpAddr) -> Option<PeerId> {
        self.routes.lookup(addr)
    }

    #[inline]
    fn lookup(&self, key: IpKey) -> Option<PeerId> {
        match key {
            IpKey::V4(a) => self.routes.lookup_v4(a),
            IpKey::V6(a) => self.routes.lookup_v6(a),
        }
    }

    /// Encrypts a batch of IP packets in place. `bufs[i][HEADROOM..HEADROOM + lens[i]]` holds
    /// packet `i`, with at least [`TAILROOM`] bytes after it. What must be sent is appended to
    /// `out`; packets without a session are staged by the protocol (they leave through
    /// [`Engine::poll_transmit`] once the handshake completes). [`Engine::plan_encapsulate`]
    /// then [`seal_jobs`].
    pub fn encapsulate_batch<B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        lens: &[usize],
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let mut jobs = std::mem::take(&mut self.seal_scratch);
        jobs.clear();
        self.plan_encapsulate(bufs, lens, now, &mut jobs);
        seal_jobs(bufs, lens, &jobs, out);
        self.seal_scratch = jobs;
    }

    /// Phase 1 of sending (needs the engine): routes each packet
    /// (`bufs[i][HEADROOM..HEADROOM + lens[i]]`), and for each run of consecutive packets to one
    /// peer reserves a block of send counters and does the per-peer bookkeeping (timers,
    /// statistics, rekey) once. Packets without a usable session are copied aside behind a
    /// handshake. Appends one [`SealJob`] per run, to be sealed by [`seal_jobs`].
    pub fn plan_encapsulate<B: AsRef<[u8]>>(
        &mut self,
        bufs: &[B],
        lens: &[usize],
        now: Instant,
        jobs: &mut Vec<SealJob>,
    ) {
        // Consecutive packets for the same peer (the common case: one flow, or one busy peer) go
        // to the protocol as one run, so per-peer work is paid once per run.
        let n = bufs.len().min(lens.len());
        let mut run: Option<(PeerId, usize)> = None;
        for slot in 0..=n {
            let peer = if slot < n {
                match bufs[slot].as_ref().get(HEADROOM..HEADROOM + lens[slot]).and_then(ip_dst) {
                    None => {
                        self.stats.not_ip += 1;
                        None
                    }
                    Some(dst) => {
                        let p = self.lookup(dst);
                        if p.is_none() {
                            self.stats.no_route += 1;
                        }
                        p
                    }
                }
            } else {
                None
            };
            if let Some((current, start)) = run {
                if peer != Some(current) {
                    self.plan_run(current, &bufs[start..slot], &lens[start..slot], start, now, jobs);
                    run = None;
                }
            }
            if let (Some(p), None) = (peer, run) {
                run = Some((p, slot));
            }
        }
    }

    /// Plans one run of packets for `peer` (`bufs` begins at batch slot `base`).
    fn plan_run<B: AsRef<[u8]>>(
        &mut self,
        peer: PeerId,
        bufs: &[B],
        lens: &[usize],
        base: usize,
        now: Instant,
        jobs: &mut Vec<SealJob>,
    ) {
        match self.device.plan_send(peer, bufs, lens, now) {
            Ok(Some(plan)) => {
                self.stats.packets_out += plan.sealable as u64;
                let slots = base..base + bufs.len().min(lens.len());
                jobs.push(SealJob { block: plan.block, dst: plan.dst, slots });
            }
            Ok(None) => {}
            Err(_) => self.stats.no_endpoint += lens.len() as u64,
        }
    }

    /// Decrypts a batch of datagrams in place: `bufs[i][..lens[i]]` came from `srcs[i]`. Packets
    /// to deliver are appended to `out`; protocol drops are counted by the device and returned
    /// nowhere else, so one bad datagram never stops a batch.
    pub fn decapsulate_batch<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        lens: &[usize],
        srcs: &[SocketAddr],
        now: Instant,
        out: &mut Vec<Incoming>,
    ) {
        for (slot, ((buf, &len), &src)) in bufs.iter_mut().zip(lens).zip(srcs).enumerate() {
            if let Some(datagram) = buf.as_mut().get_mut(..len) {
                self.receive_one(slot, 0, datagram, src, now, out);
            }
        }
    }

    /// Decrypts `datagram` (at `offset` in batch slot `slot`) and, if it carried a packet from a
    /// source its peer may use, appends it to `out`.
    fn receive_one(
        &mut self,
        slot: usize,
        offset: usize,
        datagram: &mut [u8],
        src: SocketAddr,
        now: Instant,
        out: &mut Vec<Incoming>,
    ) {
        let base = datagram.as_ptr() as usize;
        let received = self.device.decapsulate(src, datagram, now);
        self.deliver(slot, offset, base, received, out);
    }

    /// If `received` is a packet from a source its peer may use, appends it to `out` (`base` is
    /// the address of the datagram, which starts at `offset` in batch slot `slot`).
    fn deliver(
        &mut self,
        slot: usize,
        offset: usize,
        base: usize,
        received: Result<Received<'_>, RecvError>,
        out: &mut Vec<Incoming>,
    ) {
        if let Ok(Received::Packet { peer, packet }) = received {
            // Cryptokey routing, inbound: the inner source must be one this peer may use.
            if ip_src(packet).and_then(|s| self.lookup(s)) != Some(peer) {
                self.stats.source_not_allowed += 1;
                return;
            }
            let start = offset + (packet.as_ptr() as usize - base);
            self.stats.packets_in += 1;
            out.push(Incoming { slot, range: start..start + packet.len(), peer });
        }
    }

    /// Phase 1 of receiving (needs the engine): for each datagram in turn (`bufs[d.slot][d.range]`
    /// from `d.src`), transport data with a known receiver index, an unexpired keypair and a
    /// counter the replay window would accept becomes an [`OpenJob`]; everything else
    /// (handshakes, cookie replies, unknown indices, replays, expired keypairs) is handled
    /// completely here, as [`Device::decapsulate`] does (drops counted, transmits queued).
    /// Commits nothing.
    ///
    /// Returns how many of `datagrams` it consumed. It stops before a handshake message once this
    /// call has planned a job, because handling the handshake now could drop the keypair a job
    /// before it needs at its commit: open and commit the jobs, then call again with
    /// `&datagrams[consumed..]` (the handshake, now first, is handled then). Consumes at least
    /// one datagram unless `datagrams` is empty, and all of them if none is a handshake message
    /// after a data packet. Jobs already in `jobs` are left alone; commit them before calling.
    #[must_use = "the datagrams after the ones consumed still have to be planned"]
    pub fn plan_decapsulate<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        datagrams: &[Datagram],
        now: Instant,
        jobs: &mut Vec<OpenJob>,
    ) -> usize {
        let planned_before = jobs.len();
        for (i, d) in datagrams.iter().enumerate() {
            let Some(datagram) = in_slot(bufs, d.slot, d.range.clone()) else {
                continue;
            };
            if jobs.len() > planned_before && is_handshake_message(datagram) {
                return i;
            }
            if let Ok(ReceivePlan::Open(ticket)) = self.device.plan_decapsulate(d.src, datagram, now) {
                jobs.push(OpenJob { ticket, slot: d.slot, range: d.range.clone(), src: d.src, opened: None });
            }
        }
        datagrams.len()
    }

    /// Phase 3 of receiving (needs the engine): for each job [`open_jobs`] has run on, commits
    /// its counter to the keypair's replay window, re-found by index (a duplicate that another
    /// worker committed first, or a keypair dropped meanwhile, is dropped and counted; so is a
    /// failed authentication, as `decrypt`), then does the per-packet bookkeeping (roaming,
    /// session confirmation, statistics, timers) and the inbound AllowedIPs source check.
    /// Packets to deliver are appended to `out` (ranges are positions in `bufs`).
    pub fn commit_decapsulate<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        jobs: &[OpenJob],
        now: Instant,
        out: &mut Vec<Incoming>,
    ) {
        for job in jobs {
            let Some(datagram) = in_slot(bufs, job.slot, job.range.clone()) else {
                continue;
            };
            let base = datagram.as_ptr() as usize;
            let received = self.commit_job(job, datagram, now);
            self.deliver(job.slot, job.range.start, base, received, out);
        }
    }

    /// Commits one opened job whose datagram is `datagram` (see [`Device::commit_decapsulate`]).
    pub(crate) fn commit_job<'a>(
        &mut self,
        job: &OpenJob,
        datagram: &'a mut [u8],
        now: Instant,
    ) -> Result<Received<'a>, RecvError> {
        // A job that was never opened carries no plaintext: it fails like a bad tag.
        let opened = job.opened.unwrap_or(Err(OpenFailure::Auth));
        self.device.commit_decapsulate(job.src, &job.ticket, opened, datagram, now)
    }

    /// As [`Engine::decapsulate_batch`], for datagrams anywhere in the buffers: `bufs[d.slot][d.range]`
    /// came from `d.src` (several may share a buffer, as UDP GRO hands them over). The ranges in
    /// `out` are positions in the same buffers.
    pub fn decapsulate_datagrams<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        datagrams: &[Datagram],
        now: Instant,
        out: &mut Vec<Incoming>,
    ) {
        for d in datagrams {
            if let Some(datagram) = in_slot(bufs, d.slot, d.range.clone()) {
                self.receive_one(d.slot, d.range.start, datagram, d.src, now, out);
            }
        }
    }

    /// One datagram, for callers that do not batch (tests, the control path).
    pub fn decapsulate<'a>(
        &mut self,
        src: SocketAddr,
        datagram: &'a mut [u8],
        now: Instant,
    ) -> Result<Received<'a>, RecvError> {
        self.device.decapsulate(src, datagram, now)
    }

    /// Control datagrams the protocol wants sent (handshakes, keepalives, staged packets).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.device.poll_transmit()
    }

    /// When [`Engine::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.device.poll_timeout()
    }

    /// Runs the protocol timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.device.handle_timeout(now)
    }
}
