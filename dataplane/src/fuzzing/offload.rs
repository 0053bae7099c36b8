//! Fuzz entry points for the offloads: cutting TUN super-packets, merging decrypted segments.

use std::ops::Range;

use crate::offload::{split, split_into, Coalescer, SplitError, VirtioNetHdr, VNET_HDR_LEN};

const HEADROOM: usize = 16;

/// A `virtio_net_hdr` then a packet, as the TUN device hands them over: never a panic, and what is
/// cut stays within the original. (Payload order and checksums are checked in the unit tests.)
pub fn tun_split(data: &[u8]) {
    let Some(hdr) = VirtioNetHdr::parse(data) else { return };
    let packet = &data[VNET_HDR_LEN..];
    let mut bufs = vec![vec![0u8; HEADROOM + packet.len()]; 64];
    bufs[0][HEADROOM..].copy_from_slice(packet);
    let mut lens = [0usize; 64];
    if let Ok(n) = split(&hdr, &mut bufs, HEADROOM, packet.len(), &mut lens) {
        assert!((1..=64).contains(&n));
        // Every segment repeats the headers and carries a share of the payload: none is longer
        // than the original, and together they hold at least all of it.
        let total: usize = lens[..n].iter().sum();
        assert!(lens[..n].iter().all(|&l| l <= packet.len()));
        assert!(total >= packet.len());
    }
    // Cut from a landing buffer into slots of a room of 1500 bytes, as the daemon does with a
    // packet larger than a slot: the same segments as in place, or a refusal; never a panic.
    let mut landing = packet.to_vec();
    let mut slots = vec![vec![0u8; HEADROOM + 1500 + 16]; 64];
    let mut slot_lens = [0usize; 64];
    match split_into(&hdr, &mut landing, &mut slots, HEADROOM, 1500, &mut slot_lens) {
        Ok(n) => {
            assert!(slot_lens[..n].iter().all(|&l| l <= 1500));
            let mut bufs = vec![vec![0u8; HEADROOM + packet.len()]; 64];
            bufs[0][HEADROOM..].copy_from_slice(packet);
            let mut lens = [0usize; 64];
            assert_eq!(split(&hdr, &mut bufs, HEADROOM, packet.len(), &mut lens), Ok(n));
            for i in 0..n {
                assert_eq!(slots[i][HEADROOM..HEADROOM + slot_lens[i]], bufs[i][HEADROOM..HEADROOM + lens[i]]);
            }
        }
        Err(SplitError::BufferTooShort { needed, .. }) => assert!(needed > HEADROOM + 1500),
        Err(_) => {}
    }
}

/// Packets as 2-byte big-endian lengths then bytes. Every packet must be written exactly once,
/// as a head or as a follower, and within one flow (protocol, addresses, ports) in arrival order.
/// The first byte's low bit turns UDP merging (a device with USO) on.
pub fn tun_coalesce(data: &[u8]) {
    let Some((&flags, mut rest)) = data.split_first() else { return };
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    while rest.len() >= 2 && bufs.len() < 128 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        bufs.push([&[0u8; 16][..], &rest[2..2 + len]].concat());
        rest = &rest[2 + len..];
    }
    let packets: Vec<(usize, Range<usize>)> = bufs.iter().enumerate().map(|(i, b)| (i, 16..b.len())).collect();
    let mut c = Coalescer::new();
    c.set_merge_udp(flags & 1 == 1);
    c.coalesce(&mut bufs, &packets);
    let mut seen = vec![false; packets.len()];
    for w in c.writes() {
        assert!(!std::mem::replace(&mut seen[w.slot], true), "packet {} written twice", w.slot);
        assert!(w.range.end <= bufs[w.slot].len());
        for (slot, range) in &c.followers()[w.followers.clone()] {
            assert!(!std::mem::replace(&mut seen[*slot], true), "packet {slot} written twice");
            assert!(range.start <= range.end && range.end <= bufs[*slot].len());
        }
    }
    assert!(seen.iter().all(|s| *s), "every packet is written");
    let mut last: Vec<(FlowKey, usize)> = Vec::new();
    for w in c.writes() {
        let order = std::iter::once(w.slot).chain(c.followers()[w.followers.clone()].iter().map(|(slot, _)| *slot));
        for slot in order {
            let Some(key) = flow_of(&bufs[slot][16..]) else { continue };
            match last.iter_mut().find(|(k, _)| *k == key) {
                Some((_, prev)) => {
                    assert!(*prev < slot, "flow reordered: {prev} after {slot}");
                    *prev = slot;
                }
                None => last.push((key, slot)),
            }
        }
    }
}

type FlowKey = (u8, Vec<u8>);

/// Protocol, addresses and ports of a TCP or UDP packet, as the coalescer groups flows. A
/// follower's buffer keeps its headers, so its flow is read from the whole packet.
fn flow_of(p: &[u8]) -> Option<FlowKey> {
    let (proto, l4, addrs) = match p.first()? >> 4 {
        4 if p.len() >= 24 => (p[9], usize::from(p[0] & 0x0f) * 4, p.get(12..20)?),
        6 if p.len() >= 44 => (p[6], 40, p.get(8..40)?),
        _ => return None,
    };
    if proto != 6 && proto != 17 {
        return None;
    }
    Some((proto, [addrs, p.get(l4..l4 + 4)?].concat()))
}
