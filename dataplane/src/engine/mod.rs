//! The pipeline that composes wire formats, WireGuard and cryptokey routing, a batch at a time.
//!
//! Outbound: IP packets (from a TUN device) → destination lookup in AllowedIPs → the owning peer's
//! session → encrypted in place → datagrams to send. Inbound: datagrams → decrypted in place →
//! the inner source must lie in the sending peer's AllowedIPs → IP packets to deliver.
//!
//! Sans-IO like the protocol below it: the caller owns the buffers and does the syscalls.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Instant;

use crate::route::{AllowedIps, IpNet};
use crate::wireguard::{Device, PeerConfig, PeerError, PeerId, Received, RecvError, Transmit};

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

/// A WireGuard interface: the protocol [`Device`] plus its cryptokey routing table.
#[derive(Debug)]
pub struct Engine {
    device: Device,
    routes: AllowedIps<PeerId>,
    stats: EngineStats,
    /// Reused per run so the batch path does not allocate in steady state.
    run_scratch: Vec<(usize, usize)>,
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
        Self { device, routes: AllowedIps::new(), stats: EngineStats::default(), run_scratch: Vec::new() }
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
    /// [`Engine::poll_transmit`] once the handshake completes).
    pub fn encapsulate_batch<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        lens: &[usize],
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        // Consecutive packets for the same peer (the common case: one flow, or one busy peer) go
        // to the protocol as one run, so per-peer work is paid once per run.
        let n = bufs.len().min(lens.len());
        let mut run: Option<(PeerId, usize)> = None;
        for slot in 0..=n {
            let peer = if slot < n {
                match bufs[slot].as_mut().get(HEADROOM..HEADROOM + lens[slot]).and_then(ip_dst) {
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
                    self.flush_run(current, &mut bufs[start..slot], &lens[start..slot], start, now, out);
                    run = None;
                }
            }
            if let (Some(p), None) = (peer, run) {
                run = Some((p, slot));
            }
        }
    }

    /// Encrypts one run of packets for `peer` (`bufs` begins at batch slot `base`).
    fn flush_run<B: AsMut<[u8]>>(
        &mut self,
        peer: PeerId,
        bufs: &mut [B],
        lens: &[usize],
        base: usize,
        now: Instant,
        out: &mut Vec<Outgoing>,
    ) {
        let mut ready = Vec::new();
        std::mem::swap(&mut ready, &mut self.run_scratch);
        ready.clear();
        match self.device.encapsulate_batch(peer, bufs, lens, now, &mut ready) {
            Ok(Some(dst)) => {
                self.stats.packets_out += ready.len() as u64;
                out.extend(ready.iter().map(|&(slot, len)| Outgoing { slot: base + slot, len, dst }));
            }
            Ok(None) => {}
            Err(_) => self.stats.no_endpoint += lens.len() as u64,
        }
        self.run_scratch = ready;
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
        if let Ok(Received::Packet { peer, packet }) = self.device.decapsulate(src, datagram, now) {
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
            if let Some(datagram) = bufs.get_mut(d.slot).and_then(|b| b.as_mut().get_mut(d.range.clone())) {
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
