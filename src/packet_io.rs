//! The daemon's side of its TUN devices: batch reads and writes over caller-owned buffers, with
//! the kernel's offloads when it grants them (TSO super-packets cut into segments on the way in,
//! decrypted TCP segments merged on the way out; see `vxwg::dataplane::offload`).

use std::io::{self, IoSlice, IoSliceMut};
use std::ops::Range;

use vxwg::dataplane::io::netlink::Netlink;
use vxwg::dataplane::io::{Offload, Tun, BATCH};
use vxwg::dataplane::offload::{self, Coalescer, GsoType, SplitError, VirtioNetHdr, MAX_WRITE_PIECES, VNET_HDR_LEN};

/// Largest packet a TUN device hands over (a TSO super-packet, or a packet at the largest MTU).
pub const MAX_PACKET: usize = 65535;
/// Packet room of a slot to begin with: a packet or segment at the usual MTUs (WireGuard's 1420,
/// pods' less) fits. Slots grow, once, if the device's MTU is raised past it. Super-packets
/// land in one buffer of `MAX_PACKET` per port instead, so a worker holds a few hundred KB of
/// TUN slots rather than a 64 KB slot per segment (8 MB, most of it never needed at once).
const INITIAL_SLOT_MTU: usize = 1500;
/// Most segments one super-packet may need; the TUN device is told so (`gso_max_segs`).
const MAX_SEGMENTS: usize = 64;
/// Packet slots per batch with offloads: room for a batch of reads, each possibly a super-packet.
const OFFLOAD_SLOTS: usize = 2 * MAX_SEGMENTS;

/// Whether `VXWG_OFFLOAD=0` turned the TUN offloads off (for comparison runs and for kernels
/// that misbehave with them).
pub fn offload_wanted() -> bool {
    std::env::var("VXWG_OFFLOAD").map_or(true, |v| v != "0")
}

/// Packets the kernel may queue for a TUN device before dropping (its default is 500): enough
/// to ride out the daemon being descheduled for a moment at small-packet rates.
const TUN_QUEUE_LEN: u32 = 2048;

/// Creates the TUN device `name` with `queues` queues (one per worker), with offloads unless
/// they are turned off; caps the segments per super-packet so that one always fits a batch, and
/// deepens the device's queue (once, for all queues).
pub fn create_tun_queues(name: &str, queues: usize) -> io::Result<Vec<Tun>> {
    let tuns = Tun::create_queues(name, queues, offload_wanted())?;
    if let Some(first) = tuns.first() {
        tune(first);
        // Queues chosen by a hash of each flow, not learned from our writes: otherwise every
        // flow to a peer follows the worker that receives that peer's datagrams.
        if queues > 1 {
            if let Err(e) = first.set_flow_steering() {
                eprintln!(
                    "vxwg[{}]: steering flows over the TUN queues (the kernel's default stays): {e}",
                    first.name()
                );
            }
        }
    }
    Ok(tuns)
}

/// Deepens the device's queue and, with offloads, caps the segments per super-packet (both are
/// the device's, whichever queue names it).
fn tune(tun: &Tun) {
    let vnet = tun.offload() != Offload::None;
    let tuned = Netlink::open().and_then(|mut nl| {
        let index = nl.link_index(tun.name())?;
        nl.set_txqueuelen(index, TUN_QUEUE_LEN)?;
        if vnet {
            nl.set_gso_max_segs(index, MAX_SEGMENTS as u32)?;
        }
        Ok(())
    });
    if let Err(e) = tuned {
        // Not fatal: a shorter queue drops more under bursts, and a super-packet of more
        // segments than a batch holds is dropped and counted (`split_errors`); TCP retransmits.
        eprintln!("vxwg[{}]: tuning the TUN device: {e}", tun.name());
    }
}

/// A TUN device with its receive slots.
pub struct TunPort {
    pub tun: Tun,
    /// Packet `i` of a batch is `bufs[i][headroom..headroom + lens[i]]`. Each slot has room for
    /// `slot_mtu` bytes of packet between its headroom and tailroom.
    pub bufs: Vec<Vec<u8>>,
    pub lens: Vec<usize>,
    headroom: usize,
    tailroom: usize,
    slot_mtu: usize,
    /// Where the part of a read beyond its slot's room goes (a super-packet), at the offsets it
    /// would have had in a slot of `MAX_PACKET`; the packet is made whole here and cut into slots.
    landing: Vec<u8>,
    vnet: bool,
    /// Merge UDP runs into USO writes (on with USO, off after the kernel refuses one).
    udp_merging: bool,
    coalescer: Coalescer,
    /// Scratch: the packets handed to the coalescer.
    packets: Vec<(usize, Range<usize>)>,
    /// Super-packets that could not be cut (malformed, or more segments than a batch holds).
    pub split_errors: u64,
    /// Writes the kernel refused.
    pub write_errors: u64,
    /// Super-packets read and the segments they were cut into.
    pub super_packets: u64,
    pub segments_cut: u64,
    /// Writes that merged several segments, and how many segments they carried.
    pub merged_writes: u64,
    pub merged_segments: u64,
}

impl TunPort {
    /// Slots with `headroom` before and `tailroom` after each packet.
    pub fn new(tun: Tun, headroom: usize, tailroom: usize) -> Self {
        let vnet = tun.offload() != Offload::None;
        let slots = if vnet { OFFLOAD_SLOTS } else { BATCH };
        debug_assert!(headroom >= VNET_HDR_LEN);
        // UDP runs go out as USO super-packets only where the device takes them.
        let udp_merging = tun.offload() == Offload::TsoUso;
        TunPort {
            tun,
            bufs: vec![vec![0u8; headroom + INITIAL_SLOT_MTU + tailroom]; slots],
            lens: vec![0; slots],
            headroom,
            tailroom,
            slot_mtu: INITIAL_SLOT_MTU,
            landing: vec![0u8; headroom + MAX_PACKET],
            vnet,
            udp_merging,
            coalescer: Coalescer::new(),
            packets: Vec::with_capacity(BATCH),
            split_errors: 0,
            write_errors: 0,
            super_packets: 0,
            segments_cut: 0,
            merged_writes: 0,
            merged_segments: 0,
        }
    }

    /// Reads up to a batch of packets (super-packets already cut into segments, checksums
    /// complete). `None` when the device is gone (EBADFD / EIO / ENODEV: deleted under us).
    pub fn read_batch(&mut self) -> Option<usize> {
        let (mut n, mut reads) = (0, 0);
        let reserve = if self.vnet { MAX_SEGMENTS } else { 1 };
        let start = if self.vnet { self.headroom - VNET_HDR_LEN } else { self.headroom };
        while reads < BATCH && self.bufs.len() - n >= reserve {
            let slot_end = self.headroom + self.slot_mtu;
            let mut pieces =
                [IoSliceMut::new(&mut self.bufs[n][start..slot_end]), IoSliceMut::new(&mut self.landing[slot_end..])];
            let got = match self.tun.recv_vectored(&mut pieces) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The interface was deleted under us.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBADFD | libc::EIO | libc::ENODEV)) => return None,
                Err(_) => {
                    // Anything else (EINVAL for a packet the header cannot describe) costs that
                    // packet, not the device.
                    self.split_errors += 1;
                    break;
                }
            };
            reads += 1;
            let hdr = if self.vnet {
                match VirtioNetHdr::parse(&self.bufs[n][start..]).filter(|_| got >= VNET_HDR_LEN) {
                    Some(hdr) => hdr,
                    None => {
                        self.split_errors += 1;
                        continue;
                    }
                }
            } else {
                VirtioNetHdr::NONE
            };
            let len = got - (self.headroom - start);
            let cut = if start + got <= slot_end {
                if !self.vnet {
                    self.lens[n] = len;
                    n += 1;
                    continue;
                }
                offload::split(&hdr, &mut self.bufs[n..], self.headroom, len, &mut self.lens[n..])
            } else {
                // Larger than a slot: whole in the landing buffer, then cut into slots.
                self.landing[start..slot_end].copy_from_slice(&self.bufs[n][start..slot_end]);
                self.cut_landed(&hdr, n, len)
            };
            match cut {
                Ok(segments) => {
                    if segments > 1 {
                        self.super_packets += 1;
                        self.segments_cut += segments as u64;
                    }
                    n += segments;
                }
                Err(_) => self.split_errors += 1,
            }
        }
        Some(n)
    }

    /// Cuts the `len`-byte packet in the landing buffer into the slots from `n` on, growing every
    /// slot first if one of its segments (or, unsegmented, the packet) is larger than a slot
    /// holds: the device's MTU was raised past it. That allocates, once per raise.
    fn cut_landed(&mut self, hdr: &VirtioNetHdr, n: usize, len: usize) -> Result<usize, SplitError> {
        let packet = &mut self.landing[self.headroom..self.headroom + len];
        let cut =
            offload::split_into(hdr, packet, &mut self.bufs[n..], self.headroom, self.slot_mtu, &mut self.lens[n..]);
        let Err(SplitError::BufferTooShort { needed, .. }) = cut else { return cut };
        let mtu = needed - self.headroom;
        if mtu <= self.slot_mtu || mtu > MAX_PACKET {
            return cut;
        }
        self.slot_mtu = mtu;
        let slot_len = self.headroom + mtu + self.tailroom;
        for slot in &mut self.bufs {
            slot.resize(slot_len, 0);
        }
        let packet = &mut self.landing[self.headroom..self.headroom + len];
        offload::split_into(hdr, packet, &mut self.bufs[n..], self.headroom, self.slot_mtu, &mut self.lens[n..])
    }

    /// Writes decrypted packets `bufs[slot][range]` to the device, merging TCP runs when the
    /// device takes super-packets. Returns the first error (the others are counted).
    pub fn write_packets<B: AsMut<[u8]> + AsRef<[u8]>>(
        &mut self,
        bufs: &mut [B],
        packets: impl Iterator<Item = (usize, Range<usize>)>,
    ) -> Option<io::Error> {
        let mut first_error = None;
        if !self.vnet {
            for (slot, range) in packets {
                if let Err(e) = self.tun.send(&bufs[slot].as_ref()[range]) {
                    self.write_errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            return first_error;
        }
        self.packets.clear();
        self.packets.extend(packets);
        self.coalescer.set_merge_udp(self.udp_merging);
        self.coalescer.coalesce(bufs, &self.packets);
        let followers = self.coalescer.followers();
        let bufs: &[B] = bufs;
        for w in self.coalescer.writes() {
            let vnet = w.vnet.to_bytes();
            let mut iov = [IoSlice::new(&[]); MAX_WRITE_PIECES];
            let k = w.pieces(&vnet, bufs, followers, &mut iov);
            if k > 2 {
                self.merged_writes += 1;
                self.merged_segments += k as u64 - 1;
            }
            if let Err(e) = self.tun.send_vectored(&iov[..k]) {
                self.write_errors += 1;
                if w.vnet.gso_type == GsoType::UdpL4 {
                    // A kernel that hands USO to the device but refuses it from it: stop merging
                    // UDP (this run is lost; the ones after go one by one).
                    self.udp_merging = false;
                }
                first_error.get_or_insert(e);
            }
        }
        first_error
    }

    /// Writes one complete packet (an ICMP answer, say).
    pub fn write_one(&self, packet: &[u8]) -> io::Result<usize> {
        if self.vnet {
            let vnet = VirtioNetHdr::NONE.to_bytes();
            self.tun.send_vectored(&[IoSlice::new(&vnet), IoSlice::new(packet)])
        } else {
            self.tun.send(packet)
        }
    }
}

/// A TUN port's counters, summed over the queues of one device for `vxwg status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// The offload mode (`Offload as u64`; every queue of a device has the same).
    pub mode: u64,
    /// Ports still merging UDP runs.
    pub udp_merging: u64,
    pub split_errors: u64,
    pub write_errors: u64,
    pub super_packets: u64,
    pub segments_cut: u64,
    pub merged_writes: u64,
    pub merged_segments: u64,
}

impl PortCounters {
    pub fn to_array(self) -> [u64; 8] {
        [
            self.mode,
            self.udp_merging,
            self.split_errors,
            self.write_errors,
            self.super_packets,
            self.segments_cut,
            self.merged_writes,
            self.merged_segments,
        ]
    }

    pub fn from_array(a: [u64; 8]) -> Self {
        let [mode, udp_merging, split_errors, write_errors, super_packets, segments_cut, merged_writes, merged_segments] =
            a;
        PortCounters {
            mode,
            udp_merging,
            split_errors,
            write_errors,
            super_packets,
            segments_cut,
            merged_writes,
            merged_segments,
        }
    }

    /// The offload counters for `vxwg status --json`.
    pub fn to_json(self) -> serde_json::Value {
        let mode = [Offload::None, Offload::HeaderOnly, Offload::Tso, Offload::TsoUso]
            .into_iter()
            .find(|m| *m as u64 == self.mode)
            .unwrap_or(Offload::None);
        serde_json::json!({
            "mode": match mode {
                Offload::None => "off",
                Offload::HeaderOnly => "header-only",
                Offload::Tso => "tso",
                Offload::TsoUso => "tso+uso",
            },
            "super_packets": self.super_packets,
            "segments_cut": self.segments_cut,
            "merged_writes": self.merged_writes,
            "merged_segments": self.merged_segments,
            "udp_merging": self.udp_merging > 0,
            "split_errors": self.split_errors,
            "write_errors": self.write_errors,
        })
    }
}

impl std::iter::Sum for PortCounters {
    fn sum<I: Iterator<Item = PortCounters>>(iter: I) -> Self {
        iter.fold(PortCounters::default(), |a, b| {
            let (x, y) = (a.to_array(), b.to_array());
            let mut sum = PortCounters::from_array(std::array::from_fn(|i| x[i] + y[i]));
            sum.mode = a.mode.max(b.mode);
            sum
        })
    }
}

impl TunPort {
    /// This port's counters.
    pub fn counters(&self) -> PortCounters {
        PortCounters {
            mode: self.tun.offload() as u64,
            udp_merging: u64::from(self.udp_merging),
            split_errors: self.split_errors,
            write_errors: self.write_errors,
            super_packets: self.super_packets,
            segments_cut: self.segments_cut,
            merged_writes: self.merged_writes,
            merged_segments: self.merged_segments,
        }
    }
}
