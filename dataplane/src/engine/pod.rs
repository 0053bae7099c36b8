//! The pod path: VXLAN inside WireGuard, built and taken apart in one buffer.
//!
//! Outbound, for each IP packet a pod sent (read from the pod-side TUN into
//! `buf[POD_HEADROOM..]`): TCP MSS clamp (optional) → pod CIDR lookup in [`PodRoutes`] (the
//! remote VTEP) → [`mtu::check_size`] against the pod MTU → inner Ethernet header (dst = the
//! remote VTEP's MAC, src = ours) written in the 14 octets in front of the packet →
//! outer IP/UDP/VXLAN in front of that, as [`vxlan::encapsulate`] writes them (from an
//! [`OuterHeaders`] template) → the L3 engine's AllowedIPs pick the WireGuard peer that owns the
//! remote VTEP address → the device encrypts the outer packet in place, its WireGuard header
//! written into the last 16 octets of headroom. Lookups and the outer template are shared by a
//! run of packets to one destination, send counters reserved once per run to one peer.
//! The pod packet is never moved: every layer is written around it. This is what flannel's
//! `flannel.1` (VXLAN, UDP 8472) puts on the wire, so a Linux vxlan device on the other side of a
//! kernel WireGuard tunnel accepts it too.
//!
//! Inbound, the mirror image: decrypt in place → the outer source must lie in the sending peer's
//! AllowedIPs → if the decrypted packet is UDP to our VTEP address and the VXLAN port, it is
//! checked ([`vxlan::decapsulate`], VNI, destination MAC, inner source in a pod CIDR of that very
//! VTEP) and the inner IP packet is returned as a range of the same buffer, for the pod TUN;
//! anything else is an ordinary L3 packet for the host TUN, so one tunnel carries both.
//!
//! Sans-IO like the rest of the engine: the caller owns the buffers and does the syscalls; the
//! steady-state path allocates nothing (only the rare paths do: ICMP answers and IPv4 fragments).
//!
//! Like the L3 engine, the data path comes in phases so that workers sharing one engine behind a
//! lock encrypt and decrypt outside it: [`PodEngine::plan_encapsulate_pod`] → [`seal_pod_jobs`],
//! and [`PodEngine::plan_decapsulate_pod`] → [`super::open_jobs`] →
//! [`PodEngine::commit_decapsulate_pod`], repeated from where planning stopped (before a
//! handshake message, so that datagrams take effect in arrival order; see [`super`]). The rare
//! IPv4 packets fragmented at the inner layer are sealed during planning (into copies), since
//! they are built one at a time in a buffer of the engine's own.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::time::{Duration, Instant};

use super::{in_slot, Datagram, Engine, OpenJob};
use crate::mtu::{self, Family, SizeVerdict};
use crate::route::{AllowedIps, IpNet};
use crate::vxlan::encap::{FrameHeaders, OuterHeaders};
use crate::vxlan::{self, HEADROOM_V4, HEADROOM_V6};
use crate::wire::ethernet::{self, EtherType, EthernetAddress};
use crate::wire::vxlan::Vni;
use crate::wireguard::{PeerId, Received, RecvError, SendBlock, SendError, SendPlan, Transmit, HEADROOM, TAILROOM};

/// Headroom a caller reserves in front of each pod packet: room for every header the pod path
/// writes in front of it, for either VTEP family.
///
/// ```text
///   16  WireGuard transport header   (wireguard::HEADROOM)
/// + 40  outer (VTEP) IPv6 header      (20 for IPv4 VTEPs)
/// +  8  UDP                           } vxlan::HEADROOM_V6 = 56 (HEADROOM_V4 = 36)
/// +  8  VXLAN                         }
/// + 14  inner Ethernet header
/// = 86
/// ```
///
/// With IPv4 VTEPs the 20 octets at the front go unused: the WireGuard datagram starts at octet
/// 20 of the buffer (see [`PodEngine::datagram_offset`]).
pub const POD_HEADROOM: usize = HEADROOM + HEADROOM_V6 + ethernet::HEADER_LEN;

/// Room to leave after each pod packet: WireGuard's padding and tag ([`TAILROOM`]).
pub const POD_TAILROOM: usize = TAILROOM;

/// ICMP too-big answers a burst may send before the rate limit applies.
const ICMP_BURST: u32 = 50;
/// One ICMP too-big token per this interval: 100 a second once the burst is spent (RFC 4443
/// 2.4 (f), RFC 1812 4.3.2.8 ask for a limit; the value is of the order of Linux's default).
const ICMP_INTERVAL: Duration = Duration::from_millis(10);

/// Settings of the local VTEP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodConfig {
    /// The VXLAN network identifier (flannel uses 1).
    pub vni: Vni,
    /// Our VTEP's MAC: the source MAC of frames we send, the destination MAC we accept.
    pub local_vtep_mac: EthernetAddress,
    /// Our overlay address: the outer source of VXLAN packets, the destination we accept them at.
    pub local_vtep_ip: IpAddr,
    /// VXLAN UDP destination port (flannel/Cilium: 8472).
    pub dst_port: u16,
    /// The largest pod packet carried (see [`mtu::pod_mtu`]); larger ones get ICMP or fragmenting.
    pub pod_mtu: u32,
    /// Clamp the MSS of TCP SYNs to what `pod_mtu` allows ([`mtu::max_mss`]).
    pub clamp_mss: bool,
}

/// A remote node's VTEP: where frames for one of its pod CIDRs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteVtep {
    /// The remote node's overlay address (a WireGuard peer's AllowedIPs must cover it).
    pub vtep_ip: IpAddr,
    /// The remote VTEP's MAC (flannel: the `flannel.1` MAC of that node).
    pub vtep_mac: EthernetAddress,
}

/// Pod CIDR → remote VTEP, longest-prefix match (flannel's per-node route + neighbour + fdb
/// entries in one table).
#[derive(Debug, Clone, Default)]
pub struct PodRoutes {
    table: AllowedIps<usize>,
    /// One entry per prefix (so a lookup also knows the matching prefix); `None` marks a free slot.
    entries: Vec<Option<(IpNet, RemoteVtep)>>,
    free: Vec<usize>,
}

impl PodRoutes {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes `net` to `remote`; returns the remote that had exactly this prefix before.
    pub fn insert(&mut self, net: IpNet, remote: RemoteVtep) -> Option<RemoteVtep> {
        let old = self.remove(net);
        let slot = match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some((net, remote));
                i
            }
            None => {
                self.entries.push(Some((net, remote)));
                self.entries.len() - 1
            }
        };
        self.table.insert(net, slot);
        old
    }

    /// Removes exactly the prefix `net`; returns its remote, if it had one.
    pub fn remove(&mut self, net: IpNet) -> Option<RemoteVtep> {
        let slot = self.table.remove(net)?;
        let (_, remote) = self.entries.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some(remote)
    }

    /// The longest prefix containing `addr` and its remote VTEP.
    pub fn lookup(&self, addr: IpAddr) -> Option<(IpNet, RemoteVtep)> {
        self.entry(self.table.lookup(addr)?)
    }

    /// Every prefix and its remote.
    pub fn iter(&self) -> impl Iterator<Item = (IpNet, RemoteVtep)> + '_ {
        self.entries.iter().flatten().copied()
    }

    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    #[inline]
    fn entry(&self, slot: usize) -> Option<(IpNet, RemoteVtep)> {
        *self.entries.get(slot)?
    }

    #[inline]
    fn lookup_key(&self, key: Key) -> Option<(IpNet, RemoteVtep)> {
        let slot = match key {
            Key::V4(a) => self.table.lookup_v4(a),
            Key::V6(a) => self.table.lookup_v6(a),
        }?;
        self.entry(slot)
    }
}

/// Misconfiguration refused by [`PodEngine::new`] / [`PodEngine::insert_route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PodConfigError {
    /// A remote VTEP address is not of the local VTEP's family (VXLAN runs between VTEPs of one
    /// family).
    #[error("remote VTEP {remote} is not of the local VTEP {local}'s family")]
    MixedFamilies { local: IpAddr, remote: IpAddr },
    /// The pod MTU is below IPv4's floor of 68 or above 65535.
    #[error("pod MTU {0} out of range 68..=65535")]
    PodMtu(u32),
}

/// Why a pod packet was dropped (each has a [`PodStats`] counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PodDrop {
    /// Outbound: not an IPv4/IPv6 packet consistent with its buffer.
    Malformed,
    /// Outbound: no pod CIDR covers the destination.
    NoRoute,
    /// Outbound: no WireGuard peer's AllowedIPs cover the remote VTEP.
    NoPeer,
    /// Outbound: the peer has no endpoint.
    NoEndpoint,
    /// Outbound: VXLAN framing or encryption failed (caller left too little head/tailroom).
    Encapsulation,
    /// Outbound: too big, and no ICMP answer may be sent (ICMP error, non-unicast source, IPv6
    /// below 1280, or rate limited). Answered ones count under `too_big`.
    TooBigSilent,
    /// Inbound: the decrypted packet's source is not in the sending peer's AllowedIPs.
    SourceNotAllowed,
    /// Inbound: UDP to our VTEP and port, but not a valid VXLAN packet.
    Vxlan,
    /// Inbound: VXLAN with another VNI.
    WrongVni,
    /// Inbound: inner frame not addressed to our VTEP MAC.
    WrongMac,
    /// Inbound: inner frame is not a well-formed IPv4/IPv6 packet.
    InnerNotIp,
    /// Inbound: inner source not in a pod CIDR of the VTEP that sent it.
    PodSourceNotAllowed,
}

/// Pod path counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodStats {
    /// Pod packets encrypted and handed out (fragments count one each).
    pub packets_out: u64,
    /// Pod packets held by the protocol behind a handshake.
    pub staged: u64,
    /// Packets whose TCP MSS was lowered.
    pub mss_clamped: u64,
    /// IPv4 packets split at the inner layer.
    pub fragmented: u64,
    /// Fragments made of them and encrypted (also counted in `packets_out`).
    pub fragments_out: u64,
    /// Packets answered with ICMP frag-needed / Packet Too Big.
    pub too_big: u64,
    /// Pod packets delivered from VXLAN.
    pub packets_in: u64,
    /// Plain L3 packets delivered from the same tunnel (for the host TUN).
    pub l3_in: u64,
    // Drops, one per `PodDrop`.
    pub malformed: u64,
    pub no_route: u64,
    pub no_peer: u64,
    pub no_endpoint: u64,
    pub encapsulation: u64,
    pub too_big_silent: u64,
    pub source_not_allowed: u64,
    pub vxlan: u64,
    pub wrong_vni: u64,
    pub wrong_mac: u64,
    pub inner_not_ip: u64,
    pub pod_source_not_allowed: u64,
}

impl PodStats {
    /// The counter of a drop reason.
    pub fn drop_count(&self, reason: PodDrop) -> u64 {
        match reason {
            PodDrop::Malformed => self.malformed,
            PodDrop::NoRoute => self.no_route,
            PodDrop::NoPeer => self.no_peer,
            PodDrop::NoEndpoint => self.no_endpoint,
            PodDrop::Encapsulation => self.encapsulation,
            PodDrop::TooBigSilent => self.too_big_silent,
            PodDrop::SourceNotAllowed => self.source_not_allowed,
            PodDrop::Vxlan => self.vxlan,
            PodDrop::WrongVni => self.wrong_vni,
            PodDrop::WrongMac => self.wrong_mac,
            PodDrop::InnerNotIp => self.inner_not_ip,
            PodDrop::PodSourceNotAllowed => self.pod_source_not_allowed,
        }
    }

    fn count(&mut self, reason: PodDrop) {
        let c = match reason {
            PodDrop::Malformed => &mut self.malformed,
            PodDrop::NoRoute => &mut self.no_route,
            PodDrop::NoPeer => &mut self.no_peer,
            PodDrop::NoEndpoint => &mut self.no_endpoint,
            PodDrop::Encapsulation => &mut self.encapsulation,
            PodDrop::TooBigSilent => &mut self.too_big_silent,
            PodDrop::SourceNotAllowed => &mut self.source_not_allowed,
            PodDrop::Vxlan => &mut self.vxlan,
            PodDrop::WrongVni => &mut self.wrong_vni,
            PodDrop::WrongMac => &mut self.wrong_mac,
            PodDrop::InnerNotIp => &mut self.inner_not_ip,
            PodDrop::PodSourceNotAllowed => &mut self.pod_source_not_allowed,
        };
        *c += 1;
    }
}

/// A WireGuard datagram to send: `bufs[slot][range]` to `dst`. The range does not start at 0:
/// it starts at [`PodEngine::datagram_offset`] (20 with IPv4 VTEPs, 0 with IPv6 ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOutgoing {
    pub slot: usize,
    pub range: Range<usize>,
    pub dst: SocketAddr,
}

/// Most packets one [`PodSealJob`] carries: longer runs to one peer take several jobs.
const RUN_MAX: usize = 64;

/// A run of consecutive pod packets to one peer, framed and planned under the engine's lock
/// ([`PodEngine::plan_encapsulate_pod`]) with one block of send counters, sealed without it
/// ([`seal_pod_jobs`]).
#[derive(Debug, Clone)]
pub struct PodSealJob {
    block: SendBlock,
    dst: SocketAddr,
    /// The batch slots of the run, one packet each, sealed on the block's counters in order.
    slots: Range<usize>,
    /// Where the WireGuard message starts in each slot's buffer.
    wg_start: usize,
    /// Length of each packet's outer (VTEP) packet behind the WireGuard header, by position in
    /// the run (at most 65535: [`vxlan::encapsulate`] refuses larger).
    outer_lens: [u16; RUN_MAX],
}

impl PodSealJob {
    /// The batch slots of the run.
    pub fn slots(&self) -> Range<usize> {
        self.slots.clone()
    }

    /// Where the run's datagrams go.
    pub fn dst(&self) -> SocketAddr {
        self.dst
    }

    /// The counter reserved for the run's first packet (the others follow it).
    pub fn first_counter(&self) -> u64 {
        self.block.first_counter()
    }
}

/// Phase 2 of the pod send path, on any thread and without the engine: encrypts every job's
/// outer packets in place and appends the datagrams to send. A packet whose buffer lost its room
/// is skipped (its counter goes unused).
pub fn seal_pod_jobs<B: AsMut<[u8]>>(bufs: &mut [B], jobs: &[PodSealJob], out: &mut Vec<PodOutgoing>) {
    for job in jobs {
        for (i, (slot, &outer_len)) in job.slots.clone().zip(&job.outer_lens).enumerate() {
            let Some(buf) = bufs.get_mut(slot).and_then(|b| b.as_mut().get_mut(job.wg_start..)) else { continue };
            if let Some(len) = job.block.seal(i as u64, buf, usize::from(outer_len)) {
                out.push(PodOutgoing { slot, range: job.wg_start..job.wg_start + len, dst: job.dst });
            }
        }
    }
}

/// [`reseal_stale`](super::reseal_stale) for the pod path: just before sending, moves every run
/// that fell more than [`RESEAL_BEHIND`](crate::wireguard::RESEAL_BEHIND) counters behind its
/// keypair onto fresh counters and re-encrypts its messages in `out`. Returns how many.
pub fn reseal_stale_pod<B: AsMut<[u8]>>(bufs: &mut [B], jobs: &mut [PodSealJob], out: &[PodOutgoing]) -> usize {
    let runs = jobs.iter_mut().map(|j| (&mut j.block, j.slots.clone()));
    super::reseal_runs(bufs, runs, || out.iter().map(|o| (o.slot, o.range.clone())))
}

/// An ICMP answer (frag-needed or Packet Too Big) to the pod packet of batch slot `slot`, a
/// complete IP packet to write to the pod TUN.
///
/// Its source is the network address of the remote pod CIDR the packet was routed by (e.g.
/// 10.42.2.0 for 10.42.2.0/24, which is also what flannel gives the remote `flannel.1`: the
/// "next hop" whose link is too small). Not one of this node's own addresses (the overlay IP
/// or a pod gateway): the kernel drops a packet arriving on the TUN from one of its own
/// addresses as a martian (`accept_local` = 0), and its reverse path is the pod TUN itself, so
/// strict `rp_filter` accepts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIcmp {
    pub slot: usize,
    pub packet: Vec<u8>,
}

/// Which TUN a received packet goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// A pod packet that came out of VXLAN: to the pod TUN.
    Pod,
    /// A plain L3 packet (not VXLAN to our VTEP): to the host (WireGuard) TUN.
    Host,
}

/// A received packet to deliver: `datagram[range]` (or `bufs[slot][range]` from a batch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIncoming {
    pub slot: usize,
    pub range: Range<usize>,
    pub peer: PeerId,
    pub delivery: Delivery,
}

/// Why [`PodEngine::decapsulate_pod`] dropped a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PodRecvError {
    /// The WireGuard layer refused it (counted by the device).
    #[error(transparent)]
    WireGuard(#[from] RecvError),
    /// A pod-path drop (counted in [`PodStats`]).
    #[error("dropped: {0:?}")]
    Dropped(PodDrop),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Key {
    V4([u8; 4]),
    V6([u8; 16]),
}

impl Key {
    fn ip(self) -> IpAddr {
        match self {
            Key::V4(a) => IpAddr::from(a),
            Key::V6(a) => IpAddr::from(a),
        }
    }
}

/// What the pod packets of a batch to one destination share: looked up once per run of them
/// ([`PodEngine::plan_encapsulate_pod`]).
#[derive(Clone, Copy)]
struct Target {
    dst: Key,
    /// The pod CIDR `dst` matched (the source of ICMP answers).
    net: IpNet,
    remote: RemoteVtep,
    /// The WireGuard peer whose AllowedIPs cover the remote VTEP.
    peer: PeerId,
    /// [`PodEngine::pod_mtu_for`] that peer.
    pod_mtu: u32,
    headers: FrameHeaders,
}

/// Consecutive framed pod packets to one peer, waiting for their block of counters.
struct Run {
    peer: PeerId,
    /// The first batch slot; the run holds `start..start + len`.
    start: usize,
    len: usize,
    wg_start: usize,
    outer_lens: [u16; RUN_MAX],
}

impl Run {
    fn new(peer: PeerId, slot: usize, wg_start: usize, outer_len: u16) -> Self {
        let mut outer_lens = [0; RUN_MAX];
        outer_lens[0] = outer_len;
        Self { peer, start: slot, len: 1, wg_start, outer_lens }
    }

    /// Whether the packet of batch slot `slot` can join the run.
    fn continues(&self, peer: PeerId, slot: usize, wg_start: usize) -> bool {
        self.peer == peer && self.start + self.len == slot && self.wg_start == wg_start && self.len < RUN_MAX
    }
}

/// What [`PodEngine::prepare`] left to do for a packet.
enum Step {
    /// Framed, to be sealed for `peer`; `roomy` if its buffer has room for any padding and the tag.
    Framed { peer: PeerId, wg_start: usize, outer_len: u16, roomy: bool },
    /// To be split at the inner layer into fragments of at most `mtu` octets.
    Fragment { target: Target, mtu: usize },
    /// Answered (ICMP): nothing more.
    Done,
}

/// Source (`src` true) or destination address of an IP packet.
#[inline]
fn ip_addr(packet: &[u8], src: bool) -> Option<Key> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => {
            let r = if src { 12..16 } else { 16..20 };
            Some(Key::V4(packet[r].try_into().ok()?))
        }
        6 if packet.len() >= 40 => {
            let r = if src { 8..24 } else { 24..40 };
            Some(Key::V6(packet[r].try_into().ok()?))
        }
        _ => None,
    }
}

/// The length of the IP packet at the start of `payload` (IPv4 Total Length, IPv6 40 + Payload
/// Length) and its EtherType, if it is consistent with the buffer.
fn inner_ip_len(payload: &[u8]) -> Option<(usize, EtherType)> {
    match payload.first()? >> 4 {
        4 => {
            let p = crate::wire::ipv4::Packet::new_checked(payload).ok()?;
            Some((usize::from(p.total_len()), EtherType::IPV4))
        }
        6 => {
            let p = crate::wire::ipv6::Packet::new_checked(payload).ok()?;
            Some((p.total_len(), EtherType::IPV6))
        }
        _ => None,
    }
}

/// Whether a decrypted packet is UDP to `local:port` (a VXLAN packet for our VTEP). Only looks;
/// [`vxlan::decapsulate`] validates.
fn is_vxlan_for(packet: &[u8], local: IpAddr, port: u16) -> bool {
    let port = port.to_be_bytes();
    match (local, packet.first().map(|b| b >> 4)) {
        (IpAddr::V4(l), Some(4)) if packet.len() >= 20 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            packet[9] == 17 && packet[16..20] == l.octets() && packet.get(ihl + 2..ihl + 4) == Some(&port[..])
        }
        (IpAddr::V6(l), Some(6)) if packet.len() >= 44 => {
            packet[6] == 17 && packet[24..40] == l.octets() && packet[42..44] == port
        }
        _ => false,
    }
}

/// The L3 [`Engine`] plus a VTEP: pod packets in and out of VXLAN inside WireGuard.
#[derive(Debug)]
pub struct PodEngine {
    engine: Engine,
    config: PodConfig,
    routes: PodRoutes,
    stats: PodStats,
    /// Headers in front of the frame: [`HEADROOM_V4`] or [`HEADROOM_V6`], by VTEP family.
    vxlan_headroom: usize,
    /// One fragment at a time is built here (POD_HEADROOM + pod MTU + POD_TAILROOM).
    frag_buf: Vec<u8>,
    /// Encrypted fragments waiting for [`PodEngine::poll_transmit`].
    pending: VecDeque<Transmit>,
    /// Reused per batch so the single-call path does not allocate in steady state.
    seal_scratch: Vec<PodSealJob>,
    icmp_tokens: u32,
    icmp_refill: Option<Instant>,
}

impl PodEngine {
    /// A pod engine around an L3 engine (its peers and AllowedIPs decide which peer owns each
    /// remote VTEP address). Fails if the pod MTU is out of range.
    pub fn new(engine: Engine, config: PodConfig) -> Result<Self, PodConfigError> {
        if !(mtu::IPV4_MIN_MTU..=u32::from(u16::MAX)).contains(&config.pod_mtu) {
            return Err(PodConfigError::PodMtu(config.pod_mtu));
        }
        let vxlan_headroom = match config.local_vtep_ip {
            IpAddr::V4(_) => HEADROOM_V4,
            IpAddr::V6(_) => HEADROOM_V6,
        };
        Ok(Self {
            engine,
            config,
            routes: PodRoutes::new(),
            stats: PodStats::default(),
            vxlan_headroom,
            frag_buf: vec![0; POD_HEADROOM + config.pod_mtu as usize + POD_TAILROOM],
            pending: VecDeque::new(),
            seal_scratch: Vec::new(),
            icmp_tokens: ICMP_BURST,
            icmp_refill: None,
        })
    }

    /// The L3 engine (peers, AllowedIPs, sessions).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The L3 engine, mutable (peers, AllowedIPs; its own batch path for host traffic).
    pub fn engine_mut(&mut self) -> &mut Engine {
        &mut self.engine
    }

    /// The VTEP settings.
    pub fn config(&self) -> &PodConfig {
        &self.config
    }

    /// Pod path counters (the L3 engine and the device keep their own).
    pub fn stats(&self) -> PodStats {
        self.stats
    }

    /// The pod CIDR table.
    pub fn routes(&self) -> &PodRoutes {
        &self.routes
    }

    /// Routes pod CIDR `net` to `remote`; refuses a remote VTEP of the other family.
    pub fn insert_route(&mut self, net: IpNet, remote: RemoteVtep) -> Result<Option<RemoteVtep>, PodConfigError> {
        if remote.vtep_ip.is_ipv4() != self.config.local_vtep_ip.is_ipv4() {
            return Err(PodConfigError::MixedFamilies { local: self.config.local_vtep_ip, remote: remote.vtep_ip });
        }
        Ok(self.routes.insert(net, remote))
    }

    /// Records the underlay path MTU towards `peer` (as the kernel measured it: `IP_MTU` on a
    /// socket connected to its endpoint, or ICMP-driven PMTU discovery), so that pod packets to
    /// it are held to what fits that path: the configured pod MTU, or less when the path is
    /// smaller. Returns the pod MTU now in force for the peer.
    ///
    /// The path is kept with the peer in the protocol device (as the cap on its padding), so it
    /// goes with the peer: a peer removed and added again, or another peer in its slot, starts
    /// from the configured MTU until its own path is read.
    pub fn set_path_mtu(&mut self, peer: PeerId, underlay_mtu: u32, underlay: Family) -> u32 {
        // WireGuard pads to 16 but never past the tunnel MTU: capping it at this path's keeps a
        // pod packet of exactly the pod MTU within the path after padding.
        let tunnel = mtu::tunnel_mtu(underlay_mtu, underlay).unwrap_or(mtu::IPV4_MIN_MTU) as usize;
        self.engine.device_mut().set_peer_path_mtu(peer, Some(tunnel));
        self.pod_mtu_for(peer)
    }

    /// The pod MTU in force for packets to `peer`: the configured one, or less if its path is
    /// smaller (see [`PodEngine::set_path_mtu`]).
    pub fn pod_mtu_for(&self, peer: PeerId) -> u32 {
        match self.engine.device().peer_path_mtu(peer) {
            Some(tunnel) => {
                let vxlan = mtu::vxlan_overhead(Family::of(self.config.local_vtep_ip)) as u32;
                let fits = (tunnel as u32).saturating_sub(vxlan).max(mtu::IPV4_MIN_MTU);
                fits.min(self.config.pod_mtu)
            }
            None => self.config.pod_mtu,
        }
    }

    /// Removes pod CIDR `net`.
    pub fn remove_route(&mut self, net: IpNet) -> Option<RemoteVtep> {
        self.routes.remove(net)
    }

    /// Where in each buffer the WireGuard datagram starts:
    /// `POD_HEADROOM - 14 - vxlan headroom - 16` = 20 with IPv4 VTEPs, 0 with IPv6 ones.
    pub fn datagram_offset(&self) -> usize {
        POD_HEADROOM - ethernet::HEADER_LEN - self.vxlan_headroom - HEADROOM
    }

    /// Encrypts a batch of pod packets in place. `bufs[i][POD_HEADROOM..POD_HEADROOM + lens[i]]`
    /// holds packet `i`, with at least [`POD_TAILROOM`] octets after it.
    ///
    /// Datagrams ready to send are appended to `out` (`bufs[slot][range]`); ICMP answers for
    /// packets too big for the pod MTU to `icmp_out` (write them to the pod TUN). Packets without
    /// a session are staged by the protocol, and IPv4 packets fragmented at the inner layer are
    /// encrypted into copies: both leave through [`PodEngine::poll_transmit`], which is to be
    /// drained after every batch. Drops are counted in [`PodStats`].
    /// [`PodEngine::plan_encapsulate_pod`] then [`seal_pod_jobs`].
    pub fn encapsulate_pod_batch<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        lens: &[usize],
        now: Instant,
        out: &mut Vec<PodOutgoing>,
        icmp_out: &mut Vec<PodIcmp>,
    ) {
        let mut jobs = std::mem::take(&mut self.seal_scratch);
        jobs.clear();
        self.plan_encapsulate_pod(bufs, lens, now, &mut jobs, icmp_out);
        seal_pod_jobs(bufs, &jobs, out);
        self.seal_scratch = jobs;
    }

    /// Phase 1 of the pod send path (needs the engine): everything
    /// [`PodEngine::encapsulate_pod_batch`] does before encryption — pod route and peer lookup,
    /// MSS clamp, the MTU check (ICMP answers into `icmp_out`), inner fragmentation (fragments
    /// are sealed here, into [`PodEngine::poll_transmit`]), the Ethernet, VXLAN, UDP and outer
    /// IP headers written in place — then one block of send counters reserved per run of
    /// consecutive packets to one peer. Appends one [`PodSealJob`] per run ready to seal; packets
    /// without a session are staged.
    ///
    /// Lookups (pod route, peer, pod MTU, outer header template) are done once per run of
    /// packets to one destination, and the protocol's per-peer work (timers, statistics, rekey)
    /// once per run to one peer, as [`Engine::plan_encapsulate`] does: this runs under the
    /// workers' shared lock.
    pub fn plan_encapsulate_pod<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        lens: &[usize],
        now: Instant,
        jobs: &mut Vec<PodSealJob>,
        icmp_out: &mut Vec<PodIcmp>,
    ) {
        let mut target: Option<Target> = None;
        let mut run: Option<Run> = None;
        for slot in 0..bufs.len().min(lens.len()) {
            let step = self.prepare(slot, bufs[slot].as_mut(), lens[slot], now, &mut target, icmp_out);
            match step {
                Ok(Step::Framed { peer, wg_start, outer_len, roomy: true }) => {
                    if let Some(r) = run.as_mut().filter(|r| r.continues(peer, slot, wg_start)) {
                        r.outer_lens[r.len] = outer_len;
                        r.len += 1;
                    } else {
                        if let Some(r) = run.take() {
                            self.plan_run(&r, bufs, now, jobs);
                        }
                        run = Some(Run::new(peer, slot, wg_start, outer_len));
                    }
                }
                Ok(Step::Framed { peer, wg_start, outer_len, roomy: false }) => {
                    // Too little tailroom to be sure: the one-packet path checks exactly.
                    if let Some(r) = run.take() {
                        self.plan_run(&r, bufs, now, jobs);
                    }
                    let r = Run::new(peer, slot, wg_start, outer_len);
                    let buf = bufs[slot].as_mut().get(wg_start..).unwrap_or_default();
                    if let Err(reason) = self.plan_single(&r, buf, now, jobs) {
                        self.stats.count(reason);
                    }
                }
                Ok(Step::Fragment { target, mtu }) => {
                    // Counters in packet order: the run so far takes its block first.
                    if let Some(r) = run.take() {
                        self.plan_run(&r, bufs, now, jobs);
                    }
                    let packet = bufs[slot].as_mut().get(POD_HEADROOM..POD_HEADROOM + lens[slot]).unwrap_or_default();
                    if let Err(reason) = self.fragment(packet, mtu, &target, now) {
                        self.stats.count(reason);
                    }
                }
                Ok(Step::Done) => {}
                Err(reason) => self.stats.count(reason),
            }
        }
        if let Some(r) = run.take() {
            self.plan_run(&r, bufs, now, jobs);
        }
    }

    /// Everything per packet before the counters: lookups (through `target`, the previous
    /// packet's), MSS clamp, MTU check, and for a packet that fits, its headers.
    fn prepare(
        &mut self,
        slot: usize,
        buf: &mut [u8],
        len: usize,
        now: Instant,
        target: &mut Option<Target>,
        icmp_out: &mut Vec<PodIcmp>,
    ) -> Result<Step, PodDrop> {
        let packet = buf.get_mut(POD_HEADROOM..POD_HEADROOM.checked_add(len).ok_or(PodDrop::Malformed)?);
        let packet = packet.ok_or(PodDrop::Encapsulation)?;
        let dst = ip_addr(packet, false).ok_or(PodDrop::Malformed)?;
        let t = self.target(dst, target)?;
        let mtu = t.pod_mtu as usize;
        if self.config.clamp_mss {
            let family = if matches!(dst, Key::V4(_)) { Family::V4 } else { Family::V6 };
            if mtu::clamp_tcp_mss(packet, mtu::max_mss(t.pod_mtu, family)) {
                self.stats.mss_clamped += 1;
            }
        }
        match mtu::check_size(packet, mtu) {
            SizeVerdict::Fits => {
                let len = inner_ip_len(packet).map_or(len, |(l, _)| l);
                let (wg_start, outer_len) = frame(&t.headers, buf, len)?;
                let roomy = buf.len().saturating_sub(wg_start) >= HEADROOM + outer_len + TAILROOM;
                let outer_len = u16::try_from(outer_len).map_err(|_| PodDrop::Encapsulation)?;
                Ok(Step::Framed { peer: t.peer, wg_start, outer_len, roomy })
            }
            SizeVerdict::TooBig => {
                if !self.take_icmp_token(now) {
                    return Err(PodDrop::TooBigSilent);
                }
                let mut answer = vec![0u8; mtu::ICMPV6_MAX_LEN];
                let mtu16 = u16::try_from(mtu).unwrap_or(u16::MAX);
                match mtu::icmp_too_big(packet, mtu16, t.net.addr(), &mut answer) {
                    Ok(n) => {
                        answer.truncate(n);
                        self.stats.too_big += 1;
                        icmp_out.push(PodIcmp { slot, packet: answer });
                        Ok(Step::Done)
                    }
                    Err(_) => Err(PodDrop::TooBigSilent),
                }
            }
            SizeVerdict::FragmentV4 => Ok(Step::Fragment { target: *t, mtu }),
            SizeVerdict::Malformed => Err(PodDrop::Malformed),
        }
    }

    /// Where packets to `dst` go, from `cache` (the previous packet's target) when it is the
    /// same destination or the same remote VTEP; otherwise looked up and cached. A failed lookup
    /// leaves the cache as it was.
    fn target<'c>(&self, dst: Key, cache: &'c mut Option<Target>) -> Result<&'c Target, PodDrop> {
        if cache.as_ref().is_some_and(|t| t.dst == dst) {
            return cache.as_ref().ok_or(PodDrop::NoRoute);
        }
        let (net, remote) = self.routes.lookup_key(dst).ok_or(PodDrop::NoRoute)?;
        let target = match cache.as_ref() {
            Some(t) if t.remote == remote => Target { dst, net, ..*t },
            _ => {
                let peer = self.engine.route(remote.vtep_ip).ok_or(PodDrop::NoPeer)?;
                let c = &self.config;
                let headers = OuterHeaders::new(c.vni, c.local_vtep_ip, remote.vtep_ip, c.dst_port)
                    .map_err(|_| PodDrop::Encapsulation)?
                    .with_macs(remote.vtep_mac, c.local_vtep_mac);
                Target { dst, net, remote, peer, pod_mtu: self.pod_mtu_for(peer), headers }
            }
        };
        Ok(cache.insert(target))
    }

    /// Reserves one block of counters for a run (the protocol's per-peer work done once) and
    /// appends its job; a run without a session is staged, one that cannot be sent is counted.
    fn plan_run<B: AsMut<[u8]>>(&mut self, run: &Run, bufs: &mut [B], now: Instant, jobs: &mut Vec<PodSealJob>) {
        let slots = run.start..run.start + run.len;
        // The WireGuard messages as the device sees them; every one was checked to have room.
        let mut messages: [&[u8]; RUN_MAX] = [&[]; RUN_MAX];
        for (message, buf) in messages.iter_mut().zip(&mut bufs[slots.clone()]) {
            *message = buf.as_mut().get(run.wg_start..).unwrap_or_default();
        }
        let mut lens = [0usize; RUN_MAX];
        for (len, &outer_len) in lens.iter_mut().zip(&run.outer_lens[..run.len]) {
            *len = usize::from(outer_len);
        }
        let n = run.len;
        match self.engine.device_mut().plan_send(run.peer, &messages[..n], &lens[..n], now) {
            Ok(Some(plan)) => {
                self.stats.packets_out += plan.sealable as u64;
                let (block, dst) = (plan.block, plan.dst);
                jobs.push(PodSealJob { block, dst, slots, wg_start: run.wg_start, outer_lens: run.outer_lens });
            }
            Ok(None) => self.stats.staged += n as u64,
            Err(e) => {
                for _ in 0..n {
                    self.stats.count(send_drop(e));
                }
            }
        }
    }

    /// A one-packet run whose message `buf` may lack room: planned as [`Device::plan_send_one`]
    /// does, which refuses a buffer too small before anything else.
    ///
    /// [`Device::plan_send_one`]: crate::wireguard::Device::plan_send_one
    fn plan_single(&mut self, run: &Run, buf: &[u8], now: Instant, jobs: &mut Vec<PodSealJob>) -> Result<(), PodDrop> {
        let outer_len = usize::from(run.outer_lens[0]);
        match plan_send(&mut self.engine, run.peer, buf, outer_len, now)? {
            Some(plan) => {
                self.stats.packets_out += 1;
                let (block, dst, slots) = (plan.block, plan.dst, run.start..run.start + 1);
                jobs.push(PodSealJob { block, dst, slots, wg_start: run.wg_start, outer_lens: run.outer_lens });
            }
            None => self.stats.staged += 1,
        }
        Ok(())
    }

    /// Splits an IPv4 packet without DF at the inner layer and encrypts each fragment into a
    /// copy queued for [`PodEngine::poll_transmit`]. Rare path: copies and allocates.
    fn fragment(&mut self, packet: &[u8], mtu: usize, target: &Target, now: Instant) -> Result<(), PodDrop> {
        let peer = target.peer;
        let mut fragments = mtu::Fragmenter::new(packet, mtu).map_err(|_| PodDrop::Malformed)?;
        self.stats.fragmented += 1;
        let end = POD_HEADROOM + mtu;
        while let Ok(Some(n)) = fragments.next_into(&mut self.frag_buf[POD_HEADROOM..end]) {
            let sealed = seal_now(&mut self.engine, &target.headers, peer, &mut self.frag_buf, n, now);
            match sealed {
                Ok(Some((range, dst))) => {
                    self.stats.fragments_out += 1;
                    self.stats.packets_out += 1;
                    let payload = self.frag_buf[range].to_vec();
                    self.pending.push_back(Transmit { peer: Some(peer), dst, payload });
                }
                Ok(None) => self.stats.staged += 1,
                Err(reason) => self.stats.count(reason),
            }
        }
        Ok(())
    }

    /// Token bucket for ICMP answers: [`ICMP_BURST`], refilled one per [`ICMP_INTERVAL`].
    fn take_icmp_token(&mut self, now: Instant) -> bool {
        let last = *self.icmp_refill.get_or_insert(now);
        let elapsed = now.saturating_duration_since(last);
        let add = (elapsed.as_nanos() / ICMP_INTERVAL.as_nanos()).min(u128::from(ICMP_BURST)) as u32;
        if add > 0 {
            self.icmp_tokens = (self.icmp_tokens + add).min(ICMP_BURST);
            self.icmp_refill = Some(now);
        }
        if self.icmp_tokens == 0 {
            return false;
        }
        self.icmp_tokens -= 1;
        true
    }

    /// Decrypts one datagram from `src` in place and classifies what it carried.
    ///
    /// `Ok(Some(incoming))`: deliver `datagram[incoming.range]` to the TUN `incoming.delivery`
    /// names (`slot` is 0). `Ok(None)`: a control message (handshake, keepalive, cookie) was
    /// handled; drain [`PodEngine::poll_transmit`]. Errors are counted (WireGuard ones by the
    /// device, the rest in [`PodStats`]).
    pub fn decapsulate_pod(
        &mut self,
        src: SocketAddr,
        datagram: &mut [u8],
        now: Instant,
    ) -> Result<Option<PodIncoming>, PodRecvError> {
        let base = datagram.as_ptr() as usize;
        let received = self.engine.decapsulate(src, datagram, now)?;
        self.accept(base, received)
    }

    /// Classifies what a datagram at address `base` carried and counts it (ranges relative to
    /// the datagram).
    fn accept(&mut self, base: usize, received: Received<'_>) -> Result<Option<PodIncoming>, PodRecvError> {
        let (peer, packet) = match received {
            Received::Packet { peer, packet } => (peer, packet),
            _ => return Ok(None),
        };
        let start = packet.as_ptr() as usize - base;
        match self.classify(peer, packet) {
            Ok((delivery, inner)) => {
                match delivery {
                    Delivery::Pod => self.stats.packets_in += 1,
                    Delivery::Host => self.stats.l3_in += 1,
                }
                Ok(Some(PodIncoming { slot: 0, range: start + inner.start..start + inner.end, peer, delivery }))
            }
            Err(reason) => {
                self.stats.count(reason);
                Err(PodRecvError::Dropped(reason))
            }
        }
    }

    /// [`PodEngine::decapsulate_pod`] over a batch: `bufs[i][..lens[i]]` came from `srcs[i]`;
    /// packets to deliver are appended to `out`, everything else is counted.
    pub fn decapsulate_pod_batch<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        lens: &[usize],
        srcs: &[SocketAddr],
        now: Instant,
        out: &mut Vec<PodIncoming>,
    ) {
        for (slot, ((buf, &len), &src)) in bufs.iter_mut().zip(lens).zip(srcs).enumerate() {
            if let Some(datagram) = buf.as_mut().get_mut(..len) {
                self.receive_one(slot, 0, datagram, src, now, out);
            }
        }
    }

    /// Decrypts `datagram` (at `offset` in batch slot `slot`) and appends what it carried for a
    /// TUN to `out`, with its range in the slot's buffer.
    fn receive_one(
        &mut self,
        slot: usize,
        offset: usize,
        datagram: &mut [u8],
        src: SocketAddr,
        now: Instant,
        out: &mut Vec<PodIncoming>,
    ) {
        if let Ok(Some(incoming)) = self.decapsulate_pod(src, datagram, now) {
            let range = offset + incoming.range.start..offset + incoming.range.end;
            out.push(PodIncoming { slot, range, ..incoming });
        }
    }

    /// As [`PodEngine::decapsulate_pod_batch`], for datagrams anywhere in the buffers (several
    /// may share one, as UDP GRO hands them over); ranges in `out` are positions in the buffers.
    pub fn decapsulate_pod_datagrams<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        datagrams: &[Datagram],
        now: Instant,
        out: &mut Vec<PodIncoming>,
    ) {
        for d in datagrams {
            if let Some(datagram) = in_slot(bufs, d.slot, d.range.clone()) {
                self.receive_one(d.slot, d.range.start, datagram, d.src, now, out);
            }
        }
    }

    /// Phase 1 of the pod receive path (needs the engine): as [`Engine::plan_decapsulate`],
    /// which also says what the returned count of datagrams consumed means (planning stops
    /// before a handshake message that follows planned data; plan again from there after the
    /// commit).
    #[must_use = "the datagrams after the ones consumed still have to be planned"]
    pub fn plan_decapsulate_pod<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        datagrams: &[Datagram],
        now: Instant,
        jobs: &mut Vec<OpenJob>,
    ) -> usize {
        self.engine.plan_decapsulate(bufs, datagrams, now, jobs)
    }

    /// Phase 3 of the pod receive path (needs the engine): as [`Engine::commit_decapsulate`]
    /// (replay window, bookkeeping), then the outer source check and the VXLAN classification
    /// of [`PodEngine::decapsulate_pod`]. What to deliver is appended to `out` (ranges are
    /// positions in `bufs`).
    pub fn commit_decapsulate_pod<B: AsMut<[u8]>>(
        &mut self,
        bufs: &mut [B],
        jobs: &[OpenJob],
        now: Instant,
        out: &mut Vec<PodIncoming>,
    ) {
        for job in jobs {
            let range = job.range();
            let Some(datagram) = in_slot(bufs, job.slot(), range.clone()) else {
                continue;
            };
            let base = datagram.as_ptr() as usize;
            let Ok(received) = self.engine.commit_job(job, datagram, now) else { continue };
            if let Ok(Some(incoming)) = self.accept(base, received) {
                let at = range.start + incoming.range.start..range.start + incoming.range.end;
                out.push(PodIncoming { slot: job.slot(), range: at, ..incoming });
            }
        }
    }

    /// Checks a decrypted packet from `peer` and returns where it goes and the range to deliver,
    /// relative to `packet`.
    fn classify(&self, peer: PeerId, packet: &[u8]) -> Result<(Delivery, Range<usize>), PodDrop> {
        // Cryptokey routing, inbound: the (outer) source must be one this peer may use.
        let outer_src = ip_addr(packet, true).ok_or(PodDrop::SourceNotAllowed)?;
        if self.engine.route(outer_src.ip()) != Some(peer) {
            return Err(PodDrop::SourceNotAllowed);
        }
        if !is_vxlan_for(packet, self.config.local_vtep_ip, self.config.dst_port) {
            return Ok((Delivery::Host, 0..packet.len()));
        }
        let d = vxlan::decapsulate(packet, self.config.dst_port).map_err(|_| PodDrop::Vxlan)?;
        if d.vni != self.config.vni {
            return Err(PodDrop::WrongVni);
        }
        let frame = ethernet::Frame::new_unchecked(&packet[d.inner.clone()]);
        if frame.dst_addr() != self.config.local_vtep_mac {
            return Err(PodDrop::WrongMac);
        }
        let payload = frame.payload();
        let (len, ethertype) = inner_ip_len(payload).ok_or(PodDrop::InnerNotIp)?;
        if ethertype != frame.ethertype() || len > payload.len() {
            return Err(PodDrop::InnerNotIp);
        }
        // The pod layer's own source check: the inner source must be in a pod CIDR of the VTEP
        // that sent it, so one node cannot speak for another's pods.
        let inner_src = ip_addr(payload, true).ok_or(PodDrop::InnerNotIp)?;
        match self.routes.lookup_key(inner_src) {
            Some((_, remote)) if remote.vtep_ip == d.outer_src => {}
            _ => return Err(PodDrop::PodSourceNotAllowed),
        }
        let start = d.inner.start + ethernet::HEADER_LEN;
        Ok((Delivery::Pod, start..start + len))
    }

    /// Datagrams to send that did not come out of a batch in place: encrypted IPv4 fragments,
    /// then the protocol's own (handshakes, keepalives, staged pod packets). Drain until `None`
    /// after every batch and every timeout.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.pending.pop_front().or_else(|| self.engine.poll_transmit())
    }

    /// When [`PodEngine::handle_timeout`] must next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.engine.poll_timeout()
    }

    /// Runs the protocol timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.engine.handle_timeout(now)
    }
}

/// Frames the pod packet at `buf[POD_HEADROOM..POD_HEADROOM + len]`: the Ethernet header, then
/// VXLAN/UDP/IP, from `headers` (see [`FrameHeaders::encapsulate`]). Returns where the WireGuard
/// message will start and the length of the outer packet behind its header.
fn frame(headers: &FrameHeaders, buf: &mut [u8], len: usize) -> Result<(usize, usize), PodDrop> {
    let ethertype = match buf.get(POD_HEADROOM).map(|b| b >> 4) {
        Some(4) => EtherType::IPV4,
        Some(6) => EtherType::IPV6,
        _ => return Err(PodDrop::Malformed),
    };
    let outer = headers.encapsulate(buf, POD_HEADROOM, len, ethertype).map_err(|_| PodDrop::Encapsulation)?;
    debug_assert_eq!(outer.start, POD_HEADROOM - headers.headroom());
    // The outer packet now starts `HEADROOM` octets after the WireGuard message's start: exactly
    // where the device expects a plaintext, so it is encrypted where it lies.
    Ok((outer.start - HEADROOM, outer.len()))
}

/// Reserves a send counter for the framed packet `message` (WireGuard message space first, as
/// [`frame`] left it); `None` if it was staged behind a handshake.
fn plan_send(
    engine: &mut Engine,
    peer: PeerId,
    message: &[u8],
    outer_len: usize,
    now: Instant,
) -> Result<Option<SendPlan>, PodDrop> {
    engine.device_mut().plan_send_one(peer, message, outer_len, now).map_err(send_drop)
}

/// The pod drop a send error stands for.
fn send_drop(e: SendError) -> PodDrop {
    match e {
        SendError::NoEndpoint => PodDrop::NoEndpoint,
        SendError::UnknownPeer => PodDrop::NoPeer,
        SendError::BufferTooSmall { .. } => PodDrop::Encapsulation,
    }
}

/// Frames, plans and seals at once (the fragment path, which reuses one buffer). Returns the
/// datagram's range in `buf` and its destination, or `None` if it was staged.
fn seal_now(
    engine: &mut Engine,
    headers: &FrameHeaders,
    peer: PeerId,
    buf: &mut [u8],
    len: usize,
    now: Instant,
) -> Result<Option<(Range<usize>, SocketAddr)>, PodDrop> {
    let (wg_start, outer_len) = frame(headers, buf, len)?;
    let Some(plan) = plan_send(engine, peer, &buf[wg_start..], outer_len, now)? else { return Ok(None) };
    let len = plan.block.seal(0, &mut buf[wg_start..], outer_len).ok_or(PodDrop::Encapsulation)?;
    Ok(Some((wg_start..wg_start + len, plan.dst)))
}
