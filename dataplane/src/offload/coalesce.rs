//! Merging decrypted TCP segments of one flow into one super-packet for the TUN device (the
//! receive half of the offloads, like Linux GRO): the kernel's TCP stack then handles one packet
//! per run instead of one per segment. With USO on the device, runs of equal-sized UDP datagrams
//! of one flow are merged too (one write, cut back into the same datagrams by the kernel).

use std::io::IoSlice;
use std::ops::Range;

use super::vnet::{GsoType, VirtioNetHdr, F_NEEDS_CSUM};
use crate::wire::checksum;

/// Most segments merged into one write (also bounds the writer's I/O vector).
pub const MAX_COALESCED_SEGMENTS: usize = 64;
/// Flows tracked at once within a batch; a further flow closes the oldest.
const OPEN_FLOWS: usize = 8;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
const NO_LINK: u32 = u32::MAX;

/// One write to the TUN device: `vnet`, then the packet at `bufs[slot][range]`, then the payloads
/// listed at `followers` in [`Coalescer::followers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunWrite {
    pub vnet: VirtioNetHdr,
    pub slot: usize,
    pub range: Range<usize>,
    pub followers: Range<usize>,
}

/// Pieces one [`TunWrite`] takes at most: its header, its head packet and its followers.
pub const MAX_WRITE_PIECES: usize = MAX_COALESCED_SEGMENTS + 2;

impl TunWrite {
    /// The write's pieces for `writev`, into `iov`: `vnet` (this write's header as
    /// [`VirtioNetHdr::to_bytes`] gave it), the head packet, then each follower's payload
    /// (`followers` is [`Coalescer::followers`]). Returns how many it filled.
    pub fn pieces<'a, B: AsRef<[u8]>>(
        &self,
        vnet: &'a [u8],
        bufs: &'a [B],
        followers: &[(usize, Range<usize>)],
        iov: &mut [IoSlice<'a>; MAX_WRITE_PIECES],
    ) -> usize {
        iov[0] = IoSlice::new(vnet);
        iov[1] = IoSlice::new(&bufs[self.slot].as_ref()[self.range.clone()]);
        let mut k = 2;
        for (slot, range) in &followers[self.followers.clone()] {
            iov[k] = IoSlice::new(&bufs[*slot].as_ref()[range.clone()]);
            k += 1;
        }
        k
    }
}

const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;

/// What coalescing needs to know of a TCP segment or UDP datagram.
#[derive(Debug, Clone, Copy)]
struct Segment {
    v4: bool,
    /// TCP or UDP.
    proto: u8,
    ip_len: usize,
    /// Transport header length (the TCP header with options, or UDP's 8).
    tcp_len: usize,
    payload: usize,
    /// TCP only (0 for UDP).
    seq: u32,
    flags: u8,
}

impl Segment {
    /// A TCP segment that may be merged: IPv4 without options or fragmentation, or IPv6 with TCP
    /// as the next header; only ACK (and PSH) set; some payload. With `udp`, also a UDP datagram
    /// with some payload whose length field matches the packet.
    fn parse(p: &[u8], udp: bool) -> Option<Segment> {
        let wanted = |proto: u8| proto == PROTO_TCP || (udp && proto == PROTO_UDP);
        let (v4, ip_len, total, proto) = match p.first()? >> 4 {
            4 => {
                if p.len() < 20 || p[0] & 0x0f != 5 || !wanted(p[9]) {
                    return None;
                }
                // More fragments or an offset: a fragment, never merged.
                if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
                    return None;
                }
                (true, 20, usize::from(u16::from_be_bytes([p[2], p[3]])), p[9])
            }
            6 => {
                if p.len() < 40 || !wanted(p[6]) {
                    return None;
                }
                (false, 40, 40 + usize::from(u16::from_be_bytes([p[4], p[5]])), p[6])
            }
            _ => return None,
        };
        if proto == PROTO_UDP {
            let udp_len = usize::from(u16::from_be_bytes([*p.get(ip_len + 4)?, *p.get(ip_len + 5)?]));
            if total != p.len() || udp_len != p.len() - ip_len || udp_len <= 8 {
                return None;
            }
            return Some(Segment { v4, proto, ip_len, tcp_len: 8, payload: udp_len - 8, seq: 0, flags: 0 });
        }
        if total != p.len() || p.len() < ip_len + 20 {
            return None;
        }
        let t = &p[ip_len..];
        let tcp_len = usize::from(t[12] >> 4) * 4;
        let flags = t[13];
        if tcp_len < 20 || p.len() < ip_len + tcp_len || flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
            return None;
        }
        let payload = p.len() - ip_len - tcp_len;
        if payload == 0 {
            return None;
        }
        let seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        Some(Segment { v4, proto, ip_len, tcp_len, payload, seq, flags })
    }

    fn headers(&self) -> usize {
        self.ip_len + self.tcp_len
    }
}

/// Whether `b` may follow `a` in one super-packet, header-wise: same flow (addresses, ports),
/// same IP fields that GRO keeps (TOS/traffic class, TTL/hop limit, DF, flow label) and the same
/// TCP acknowledgement, window and options.
fn same_headers(a: &[u8], sa: &Segment, b: &[u8], sb: &Segment) -> bool {
    if sa.v4 != sb.v4 || sa.proto != sb.proto || sa.tcp_len != sb.tcp_len {
        return false;
    }
    let ip_same = if sa.v4 {
        a[1] == b[1] && a[6] & 0x40 == b[6] & 0x40 && a[8] == b[8] && a[12..20] == b[12..20]
    } else {
        a[..4] == b[..4] && a[7] == b[7] && a[8..40] == b[8..40]
    };
    let (ta, tb) = (&a[sa.ip_len..sa.headers()], &b[sb.ip_len..sb.headers()]);
    if sa.proto == PROTO_UDP {
        // Ports (length and checksum differ per datagram).
        return ip_same && ta[..4] == tb[..4];
    }
    // Ports, then ack, then window, then options (checksum and urgent pointer may differ).
    ip_same && ta[..4] == tb[..4] && ta[8..12] == tb[8..12] && ta[14..16] == tb[14..16] && ta[20..] == tb[20..]
}

/// Protocol, addresses and ports: one flow.
type FlowKey = (u8, [u8; 32], [u8; 4]);

/// A super-packet being built: the head packet and the chain of followers.
#[derive(Debug, Clone)]
struct Group {
    head: u32,
    tail: u32,
    count: u32,
    /// The flow of a TCP or UDP head (the one group it may have open).
    key: Option<FlowKey>,
    /// The head, if it may take followers (a TCP segment, or with USO a UDP datagram).
    seg: Option<Segment>,
    /// Payload bytes per segment (the head's).
    gso_size: usize,
    total_payload: usize,
    next_seq: u32,
    /// PSH seen on a follower: carried to the head.
    psh: bool,
}

impl Group {
    fn mergeable(&self) -> bool {
        self.seg.is_some()
    }

    fn udp(&self) -> bool {
        self.seg.is_some_and(|s| s.proto == PROTO_UDP)
    }
}

/// Plans TUN writes for a batch of decrypted packets, merging TCP runs. Reused across batches:
/// it allocates only while growing to the largest batch seen.
#[derive(Debug, Default)]
pub struct Coalescer {
    groups: Vec<Group>,
    /// Indices into `groups` of the groups still accepting segments.
    open: Vec<u32>,
    /// Per packet: the next packet of its group.
    links: Vec<u32>,
    /// Per packet: its IP + transport header length (what a follower leaves out).
    header_lens: Vec<u32>,
    writes: Vec<TunWrite>,
    followers: Vec<(usize, Range<usize>)>,
    /// Merge UDP datagrams too (the device takes USO super-packets).
    udp: bool,
}

impl Coalescer {
    /// A coalescer for a device with TSO: TCP runs are merged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also merges runs of equal-sized UDP datagrams of one flow (for a device with USO), or
    /// stops doing so.
    pub fn set_merge_udp(&mut self, on: bool) {
        self.udp = on;
    }

    /// Plans the writes for `packets` (`bufs[slot][range]`, in arrival order) and prepares the
    /// head of every merged group in place (lengths, IPv4 header checksum, PSH, and the TCP
    /// pseudo-header sum the kernel completes). Per flow, order is kept.
    pub fn coalesce<B: AsMut<[u8]> + AsRef<[u8]>>(&mut self, bufs: &mut [B], packets: &[(usize, Range<usize>)]) {
        self.groups.clear();
        self.open.clear();
        self.links.clear();
        self.links.resize(packets.len(), NO_LINK);
        self.header_lens.clear();
        self.header_lens.resize(packets.len(), 0);
        self.writes.clear();
        self.followers.clear();
        for (i, (slot, range)) in packets.iter().enumerate() {
            let Some(p) = bufs.get(*slot).and_then(|b| b.as_ref().get(range.clone())) else { continue };
            let seg = Segment::parse(p, self.udp);
            self.header_lens[i] = seg.map_or(0, |s| s.headers() as u32);
            let key = flow_key(p);
            // A flow has at most one open group: any packet of the flow that does not join it
            // ends it, so nothing of the flow can overtake that packet (as Linux GRO flushes).
            let open = key.and_then(|k| self.open.iter().position(|&gi| self.groups[gi as usize].key == Some(k)));
            if let Some(pos) = open {
                let gi = self.open[pos] as usize;
                if let (Some(s), Some(hs)) = (seg, self.groups[gi].seg) {
                    let (hslot, hrange) = &packets[self.groups[gi].head as usize];
                    let head = &bufs[*hslot].as_ref()[hrange.clone()];
                    let g = &mut self.groups[gi];
                    let fits_len = g.total_payload + s.payload + s.headers() <= usize::from(u16::MAX);
                    let in_sequence = g.udp() || s.seq == g.next_seq;
                    if same_headers(head, &hs, p, &s) && in_sequence && s.payload <= g.gso_size && fits_len {
                        self.links[g.tail as usize] = i as u32;
                        g.tail = i as u32;
                        g.count += 1;
                        g.total_payload += s.payload;
                        g.next_seq = g.next_seq.wrapping_add(s.payload as u32);
                        g.psh |= s.flags & TCP_PSH != 0;
                        // A short segment or PSH ends a run, as does the size cap.
                        if s.payload < g.gso_size || g.psh || g.count as usize >= MAX_COALESCED_SEGMENTS {
                            self.open.remove(pos);
                        }
                        continue;
                    }
                }
                self.open.remove(pos);
            }
            let (gso_size, next_seq, psh) = match seg {
                Some(s) => (s.payload, s.seq.wrapping_add(s.payload as u32), s.flags & TCP_PSH != 0),
                None => (0, 0, false),
            };
            self.groups.push(Group {
                head: i as u32,
                tail: i as u32,
                count: 1,
                key,
                seg,
                gso_size,
                total_payload: gso_size,
                next_seq,
                psh: false,
            });
            if seg.is_some() && !psh {
                if self.open.len() == OPEN_FLOWS {
                    self.open.remove(0);
                }
                self.open.push((self.groups.len() - 1) as u32);
            }
        }
        for gi in 0..self.groups.len() {
            let g = self.groups[gi].clone();
            let (slot, range) = packets[g.head as usize].clone();
            let first = self.followers.len();
            let mut vnet = VirtioNetHdr::NONE;
            if g.mergeable() && g.count > 1 {
                let mut next = self.links[g.head as usize];
                while next != NO_LINK {
                    let (fs, fr) = &packets[next as usize];
                    let hl = self.header_lens[next as usize] as usize;
                    self.followers.push((*fs, fr.start + hl..fr.end));
                    next = self.links[next as usize];
                }
                vnet = prepare_head(&mut bufs[slot].as_mut()[range.clone()], &g);
            }
            self.writes.push(TunWrite { vnet, slot, range, followers: first..self.followers.len() });
        }
    }

    /// The planned writes, in an order that keeps every flow's packets in sequence.
    pub fn writes(&self) -> &[TunWrite] {
        &self.writes
    }

    /// Payloads appended to merged heads: `(slot, range)` in the caller's buffers.
    pub fn followers(&self) -> &[(usize, Range<usize>)] {
        &self.followers
    }
}

/// Protocol, addresses and ports of a TCP or UDP packet (any flags, any length), for keeping a
/// flow's order.
fn flow_key(p: &[u8]) -> Option<FlowKey> {
    let (proto, ip_len, addrs) = match p.first()? >> 4 {
        4 if p.len() >= 24 => (p[9], usize::from(p[0] & 0x0f) * 4, &p[12..20]),
        6 if p.len() >= 44 => (p[6], 40, &p[8..40]),
        _ => return None,
    };
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return None;
    }
    let ports: [u8; 4] = p.get(ip_len..ip_len + 4)?.try_into().ok()?;
    let mut a = [0u8; 32];
    a[..addrs.len()].copy_from_slice(addrs);
    Some((proto, a, ports))
}

/// Turns the head packet into the header of the whole super-packet and returns its vnet header.
fn prepare_head(head: &mut [u8], g: &Group) -> VirtioNetHdr {
    let s = g.seg.expect("only groups with a mergeable head are prepared");
    let tcp_total = s.tcp_len + g.total_payload;
    let pseudo = if s.v4 {
        head[2..4].copy_from_slice(&((s.ip_len + tcp_total) as u16).to_be_bytes());
        head[10..12].fill(0);
        let c = checksum::finish(checksum::sum(&head[..s.ip_len]));
        head[10..12].copy_from_slice(&c.to_be_bytes());
        let src: [u8; 4] = head[12..16].try_into().expect("IPv4 header");
        let dst: [u8; 4] = head[16..20].try_into().expect("IPv4 header");
        checksum::pseudo_header_v4(src.into(), dst.into(), s.proto, tcp_total as u32)
    } else {
        head[4..6].copy_from_slice(&(tcp_total as u16).to_be_bytes());
        let src: [u8; 16] = head[8..24].try_into().expect("IPv6 header");
        let dst: [u8; 16] = head[24..40].try_into().expect("IPv6 header");
        checksum::pseudo_header_v6(src.into(), dst.into(), s.proto, tcp_total as u32)
    };
    // NEEDS_CSUM: the field holds the folded pseudo-header sum, not its complement.
    let folded = !checksum::finish(pseudo);
    let l4 = s.ip_len;
    let (gso_type, csum_offset) = if s.proto == PROTO_UDP {
        // The UDP length covers the whole run; the kernel rewrites it per datagram when it cuts.
        head[l4 + 4..l4 + 6].copy_from_slice(&(tcp_total as u16).to_be_bytes());
        (GsoType::UdpL4, 6)
    } else {
        if g.psh {
            head[l4 + 13] |= TCP_PSH;
        }
        (if s.v4 { GsoType::TcpV4 } else { GsoType::TcpV6 }, 16)
    };
    head[l4 + csum_offset..l4 + csum_offset + 2].copy_from_slice(&folded.to_be_bytes());
    VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: s.headers() as u16,
        gso_size: g.gso_size as u16,
        csum_start: s.ip_len as u16,
        csum_offset: csum_offset as u16,
    }
}
