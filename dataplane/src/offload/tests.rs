use super::*;
use crate::wire::checksum;

const HEADROOM: usize = 16;

/// A TCP super-packet as the kernel hands it over with TSO: one header, `payload` bytes, the
/// checksum field holding the pseudo-header sum (NEEDS_CSUM).
fn tcp_super(v6: bool, payload: &[u8], seq: u32, flags: u8) -> Vec<u8> {
    let tcp_len = 32; // with a 12-byte timestamp option, as Linux sends
    let ip_len = if v6 { 40 } else { 20 };
    let mut p = vec![0u8; ip_len + tcp_len + payload.len()];
    let total = p.len();
    if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        let c = checksum::finish(checksum::sum(&p[..20]));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let t = ip_len;
    p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
    p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
    p[t + 8..t + 12].copy_from_slice(&77u32.to_be_bytes());
    p[t + 12] = (tcp_len as u8 / 4) << 4;
    p[t + 13] = flags;
    p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
    p[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
    p[t + 32..].copy_from_slice(payload);
    let pseudo = pseudo(&p, v6, (total - t) as u32, 6);
    p[t + 16..t + 18].copy_from_slice(&(!checksum::finish(pseudo)).to_be_bytes());
    p
}

fn pseudo(p: &[u8], v6: bool, len: u32, proto: u8) -> u32 {
    if v6 {
        let s: [u8; 16] = p[8..24].try_into().unwrap();
        let d: [u8; 16] = p[24..40].try_into().unwrap();
        checksum::pseudo_header_v6(s.into(), d.into(), proto, len)
    } else {
        let s: [u8; 4] = p[12..16].try_into().unwrap();
        let d: [u8; 4] = p[16..20].try_into().unwrap();
        checksum::pseudo_header_v4(s.into(), d.into(), proto, len)
    }
}

/// Checks IP lengths and checksums of a finished packet the way a receiver would.
fn assert_valid(p: &[u8], proto: u8) {
    let v6 = p[0] >> 4 == 6;
    let ip_len = if v6 { 40 } else { 20 };
    if v6 {
        assert_eq!(usize::from(u16::from_be_bytes([p[4], p[5]])), p.len() - 40);
    } else {
        assert_eq!(usize::from(u16::from_be_bytes([p[2], p[3]])), p.len());
        assert_eq!(checksum::finish(checksum::sum(&p[..20])), 0, "IPv4 header checksum");
    }
    let ps = pseudo(p, v6, (p.len() - ip_len) as u32, proto);
    assert_eq!(checksum::finish(checksum::combine(&[ps, checksum::sum(&p[ip_len..])])), 0, "L4 checksum");
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn slots(n: usize, size: usize) -> Vec<Vec<u8>> {
    vec![vec![0u8; HEADROOM + size]; n]
}

fn tso_hdr(v6: bool, gso: u16, ip_len: u16) -> VirtioNetHdr {
    VirtioNetHdr {
        flags: 1,
        gso_type: if v6 { GsoType::TcpV6 } else { GsoType::TcpV4 },
        hdr_len: ip_len + 32,
        gso_size: gso,
        csum_start: ip_len,
        csum_offset: 16,
    }
}

/// Splits `sup` and returns the segments.
fn split_all(hdr: &VirtioNetHdr, sup: &[u8]) -> Vec<Vec<u8>> {
    let mut bufs = slots(64, 65_600);
    bufs[0][HEADROOM..HEADROOM + sup.len()].copy_from_slice(sup);
    let mut lens = [0usize; 64];
    let n = split(hdr, &mut bufs, HEADROOM, sup.len(), &mut lens).unwrap();
    (0..n).map(|i| bufs[i][HEADROOM..HEADROOM + lens[i]].to_vec()).collect()
}

#[test]
fn vnet_header_round_trips_in_little_endian() {
    let h = tso_hdr(false, 1448, 20);
    let b = h.to_bytes();
    assert_eq!(b, [1, 1, 52, 0, 0xa8, 0x05, 20, 0, 16, 0]);
    assert_eq!(VirtioNetHdr::parse(&b), Some(h));
    assert_eq!(VirtioNetHdr::parse(&b[..9]), None);
}

#[test]
fn tso_super_packet_splits_into_valid_segments() {
    for v6 in [false, true] {
        let data = payload(10_000);
        let ip_len = if v6 { 40 } else { 20 };
        let sup = tcp_super(v6, &data, 1_000_000, 0x18 | 0x01); // ACK|PSH|FIN
        let segs = split_all(&tso_hdr(v6, 1400, ip_len), &sup);
        assert_eq!(segs.len(), 8, "10000 bytes in 1400-byte segments");
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            assert_valid(s, 6);
            let t = &s[ip_len as usize..];
            let seq = u32::from_be_bytes(t[4..8].try_into().unwrap());
            assert_eq!(seq, 1_000_000 + 1400 * i as u32);
            let last = i == segs.len() - 1;
            assert_eq!(t[13], if last { 0x19 } else { 0x10 }, "PSH and FIN only on the last segment");
            assert_eq!(&t[20..32], &sup[ip_len as usize + 20..ip_len as usize + 32], "options copied");
            if !v6 {
                assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16, "IPv4 ID increments");
            }
            joined.extend_from_slice(&t[32..]);
            assert_eq!(t.len() - 32, if last { 10_000 - 7 * 1400 } else { 1400 });
        }
        assert_eq!(joined, data);
    }
}

/// A UDP super-packet (USO) of `data` in 1200-byte datagrams, with its header.
fn udp_super(data: &[u8]) -> (VirtioNetHdr, Vec<u8>) {
    let mut p = vec![0u8; 20 + 8 + data.len()];
    p[0] = 0x45;
    let total = p.len() as u16;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    p[20..22].copy_from_slice(&1000u16.to_be_bytes());
    p[22..24].copy_from_slice(&2000u16.to_be_bytes());
    p[28..].copy_from_slice(data);
    let hdr = VirtioNetHdr {
        flags: 1,
        gso_type: GsoType::UdpL4,
        hdr_len: 28,
        gso_size: 1200,
        csum_start: 20,
        csum_offset: 6,
    };
    (hdr, p)
}

#[test]
fn udp_super_packet_splits_into_datagrams() {
    let data = payload(3000);
    let (hdr, p) = udp_super(&data);
    let segs = split_all(&hdr, &p);
    assert_eq!(segs.iter().map(|s| s.len() - 28).collect::<Vec<_>>(), [1200, 1200, 600]);
    let mut joined = Vec::new();
    for s in &segs {
        assert_valid(s, 17);
        assert_eq!(usize::from(u16::from_be_bytes([s[24], s[25]])), s.len() - 20, "UDP length");
        joined.extend_from_slice(&s[28..]);
    }
    assert_eq!(joined, data);
}

/// `split_into`, with the packet in a landing buffer of its own, cuts exactly what `split` cuts
/// in place, the first segment included, and keeps every segment within the room given.
#[test]
fn split_into_cuts_what_split_cuts_and_keeps_to_the_room() {
    let cases = [
        (tso_hdr(false, 1400, 20), tcp_super(false, &payload(10_000), 7, 0x19)),
        (tso_hdr(true, 1380, 40), tcp_super(true, &payload(6_001), 9, 0x18)),
        udp_super(&payload(3000)),
        (tso_hdr(false, 0, 20).with_gso(GsoType::None), tcp_super(false, &payload(500), 5, 0x18)),
    ];
    for (hdr, sup) in &cases {
        let expected = split_all(hdr, sup);
        let mut landing = sup.clone();
        let mut bufs = slots(64, 1500);
        let mut lens = [0usize; 64];
        let n = split_into(hdr, &mut landing, &mut bufs, HEADROOM, 1500, &mut lens).unwrap();
        let got: Vec<Vec<u8>> = (0..n).map(|i| bufs[i][HEADROOM..HEADROOM + lens[i]].to_vec()).collect();
        assert_eq!(got, expected, "{:?}", hdr.gso_type);
    }
    // A segment longer than the room, though the buffer is longer still (the rest is the
    // caller's tailroom): refused, with the length a buffer would have needed.
    let (hdr, sup) = (tso_hdr(false, 1400, 20), tcp_super(false, &payload(4000), 7, 0x10));
    let mut bufs = slots(8, 2000);
    let refused = split_into(&hdr, &mut sup.clone(), &mut bufs, HEADROOM, 1000, &mut [0; 8]);
    assert_eq!(refused, Err(SplitError::BufferTooShort { needed: HEADROOM + 52 + 1400, actual: HEADROOM + 1000 }));
    let (hdr, plain) = (tso_hdr(false, 0, 20).with_gso(GsoType::None), tcp_super(false, &payload(1200), 5, 0x18));
    let refused = split_into(&hdr, &mut plain.clone(), &mut bufs, HEADROOM, 1000, &mut [0; 8]);
    assert_eq!(refused, Err(SplitError::BufferTooShort { needed: HEADROOM + 1252, actual: HEADROOM + 1000 }));
    assert!(split_into(&hdr, &mut plain.clone(), &mut bufs, HEADROOM, 1000, &mut []).is_err(), "no lengths");
}

#[test]
fn plain_packet_gets_its_checksum_completed_in_place() {
    let sup = tcp_super(false, &payload(500), 5, 0x18);
    let segs = split_all(&tso_hdr(false, 0, 20).with_gso(GsoType::None), &sup);
    assert_eq!(segs.len(), 1);
    assert_valid(&segs[0], 6);
    assert_eq!(segs[0][52..], sup[52..]);
}

impl VirtioNetHdr {
    fn with_gso(mut self, t: GsoType) -> Self {
        self.gso_type = t;
        self
    }
}

#[test]
fn split_refuses_bad_input_without_panicking() {
    let sup = tcp_super(false, &payload(4000), 5, 0x10);
    let mut bufs = slots(2, 2000);
    let mut big = vec![0u8; HEADROOM + sup.len()];
    big[HEADROOM..].copy_from_slice(&sup);
    let mut lens = [0usize; 4];
    // Too few buffers: 4000 / 1000 needs 4.
    bufs[0] = big;
    assert_eq!(
        split(&tso_hdr(false, 1000, 20), &mut bufs, HEADROOM, sup.len(), &mut lens),
        Err(SplitError::NoRoom { needed: 4, room: 2 })
    );
    // Wrong family for the type, zero segment size, unsupported type.
    assert!(split(&tso_hdr(true, 1000, 40), &mut bufs, HEADROOM, sup.len(), &mut lens).is_err());
    assert!(split(&tso_hdr(false, 0, 20), &mut bufs, HEADROOM, sup.len(), &mut lens).is_err());
    let ufo = tso_hdr(false, 1000, 20).with_gso(GsoType::Other(3));
    assert_eq!(split(&ufo, &mut bufs, HEADROOM, sup.len(), &mut lens), Err(SplitError::Unsupported(GsoType::Other(3))));
    // A length beyond the buffer.
    assert!(split(&tso_hdr(false, 1000, 20), &mut bufs, HEADROOM, 1 << 20, &mut lens).is_err());
}

/// Puts segments into datagram-like buffers (16 bytes of something before each, as after
/// decryption) and coalesces them.
fn coalesce_segments(segs: &[Vec<u8>]) -> (Coalescer, Vec<Vec<u8>>) {
    let mut bufs: Vec<Vec<u8>> = segs.iter().map(|s| [vec![0xee; 16], s.clone()].concat()).collect();
    let packets: Vec<_> = segs.iter().enumerate().map(|(i, s)| (i, 16..16 + s.len())).collect();
    let mut c = Coalescer::new();
    c.coalesce(&mut bufs, &packets);
    (c, bufs)
}

/// What the kernel receives for one write: the head and its followers' payloads.
fn assemble(c: &Coalescer, bufs: &[Vec<u8>], w: &TunWrite) -> Vec<u8> {
    let mut p = bufs[w.slot][w.range.clone()].to_vec();
    for (slot, r) in &c.followers()[w.followers.clone()] {
        p.extend_from_slice(&bufs[*slot][r.clone()]);
    }
    p
}

#[test]
fn split_then_coalesce_gives_back_the_super_packet() {
    for v6 in [false, true] {
        let ip_len = if v6 { 40 } else { 20 };
        let sup = tcp_super(v6, &payload(20_000), 42, 0x18);
        let segs = split_all(&tso_hdr(v6, 1380, ip_len), &sup);
        let (c, bufs) = coalesce_segments(&segs);
        assert_eq!(c.writes().len(), 1, "one flow, in order: one write");
        let w = &c.writes()[0];
        assert_eq!(w.vnet, tso_hdr(v6, 1380, ip_len));
        let mut merged = assemble(&c, &bufs, w);
        // The kernel completes the checksum (NEEDS_CSUM) and would cut it back the same way.
        assert_eq!(merged.len(), sup.len());
        complete_checksum(&mut merged, w.vnet.csum_start.into(), w.vnet.csum_offset.into()).unwrap();
        assert_valid(&merged, 6);
        assert_eq!(merged[ip_len as usize + 32..], sup[ip_len as usize + 32..], "payload in order");
        assert_eq!(merged[ip_len as usize + 13], 0x18, "the last segment's PSH is on the merged packet");
        let again = split_all(&w.vnet, &{
            let mut m = assemble(&c, &bufs, w);
            m[ip_len as usize + 16..ip_len as usize + 18].copy_from_slice(&sup[ip_len as usize + 16..][..2]);
            m
        });
        assert_eq!(again, segs, "cutting the merged packet again gives the same segments");
    }
}

#[test]
fn flows_interleave_gaps_split_groups_and_order_holds_per_flow() {
    let a = split_all(&tso_hdr(false, 1000, 20), &tcp_super(false, &payload(4000), 0, 0x10));
    let mut b_sup = tcp_super(false, &payload(3000), 900, 0x10);
    b_sup[20..22].copy_from_slice(&40001u16.to_be_bytes()); // another source port: another flow
    let b = split_all(&tso_hdr(false, 1000, 20), &b_sup);
    // a0 b0 a1 b1 a3 (a2 lost) b2 a2 (late)
    let order = [&a[0], &b[0], &a[1], &b[1], &a[3], &b[2], &a[2]];
    let segs: Vec<Vec<u8>> = order.iter().map(|s| (*s).clone()).collect();
    let (c, bufs) = coalesce_segments(&segs);
    let summary: Vec<(usize, usize)> = c.writes().iter().map(|w| (w.slot, w.followers.len())).collect();
    // a0+a1 merged; b0+b1+b2 merged; a3 alone (gap); a2 alone after it.
    assert_eq!(summary, [(0, 1), (1, 2), (4, 0), (6, 0)]);
    for w in c.writes() {
        let mut p = assemble(&c, &bufs, w);
        if w.vnet.needs_csum() {
            complete_checksum(&mut p, w.vnet.csum_start.into(), w.vnet.csum_offset.into()).unwrap();
        }
        assert_valid(&p, 6);
    }
}

#[test]
fn non_mergeable_packets_are_written_alone_in_order() {
    let segs = split_all(&tso_hdr(false, 1000, 20), &tcp_super(false, &payload(3000), 0, 0x10));
    // A FIN in the middle of the flow, then more data: the FIN must not be overtaken.
    let fin = tcp_super(false, &[], 2000, 0x11);
    let mut fin = fin;
    let c = checksum::finish(checksum::combine(&[
        pseudo(&fin, false, 32, 6),
        checksum::sum(&{
            let mut t = fin[20..].to_vec();
            t[16..18].fill(0);
            t
        }),
    ]));
    fin[36..38].copy_from_slice(&c.to_be_bytes());
    let udp = {
        let mut u = vec![0u8; 28];
        u[0] = 0x45;
        u[2..4].copy_from_slice(&28u16.to_be_bytes());
        u[9] = 17;
        u
    };
    let all = vec![segs[0].clone(), segs[1].clone(), udp, fin, segs[2].clone()];
    let (c, _) = coalesce_segments(&all);
    let summary: Vec<(usize, usize)> = c.writes().iter().map(|w| (w.slot, w.followers.len())).collect();
    assert_eq!(summary, [(0, 1), (2, 0), (3, 0), (4, 0)]);
    assert_eq!(c.writes()[1].vnet, VirtioNetHdr::NONE);
}

#[test]
fn coalescing_stops_at_the_ipv4_length_limit_and_segment_cap() {
    // Two back-to-back super-packets of one flow: 90 segments of 1000 bytes.
    let data = payload(90_000);
    let mut segs = split_all(&tso_hdr(false, 1000, 20), &tcp_super(false, &data[..60_000], 0, 0x10));
    segs.extend(split_all(&tso_hdr(false, 1000, 20), &tcp_super(false, &data[60_000..], 60_000, 0x10)));
    assert_eq!(segs.len(), 90);
    let (c, bufs) = coalesce_segments(&segs);
    let mut joined = Vec::new();
    for w in c.writes() {
        let p = assemble(&c, &bufs, w);
        assert!(p.len() <= 65_535);
        assert!(w.followers.len() < MAX_COALESCED_SEGMENTS);
        joined.extend_from_slice(&p[52..]);
    }
    assert_eq!(joined, data);
    assert_eq!(c.writes().len(), 2, "90,000 bytes need two IPv4 packets");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
    #[test]
    fn split_coalesce_round_trip(len in 1usize..30_000, gso in 536u16..1460, v6: bool) {
        let ip_len = if v6 { 40 } else { 20 };
        let sup = tcp_super(v6, &payload(len), 7, 0x10);
        let hdr = tso_hdr(v6, gso, ip_len);
        let segs = split_all(&hdr, &sup);
        proptest::prop_assert_eq!(segs.len(), len.div_ceil(usize::from(gso)));
        for s in &segs { assert_valid(s, 6); }
        let (c, bufs) = coalesce_segments(&segs);
        let mut joined = Vec::new();
        for w in c.writes() {
            let p = assemble(&c, &bufs, w);
            joined.extend_from_slice(&p[usize::from(ip_len) + 32..]);
        }
        proptest::prop_assert_eq!(joined, payload(len));
    }
}

/// A UDP/IPv4 datagram with a complete checksum.
fn udp_datagram(payload: &[u8], sport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 28 + payload.len()];
    let total = p.len() as u16;
    p[0] = 0x45;
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let c = checksum::finish(checksum::sum(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&53u16.to_be_bytes());
    p[24..26].copy_from_slice(&(8 + payload.len() as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    let c = checksum::finish(checksum::combine(&[
        pseudo(&p, false, 8 + payload.len() as u32, 17),
        checksum::sum(&p[20..]),
    ]));
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

#[test]
fn udp_runs_merge_only_with_uso_and_cut_back_into_the_same_datagrams() {
    let data = payload(6500);
    let mut dgrams: Vec<Vec<u8>> = data.chunks(1200).map(|c| udp_datagram(c, 4000)).collect();
    dgrams.insert(3, udp_datagram(&data[..100], 4001)); // another flow in the middle
    let packets: Vec<_> = dgrams.iter().enumerate().map(|(i, d)| (i, 16..16 + d.len())).collect();
    let bufs0: Vec<Vec<u8>> = dgrams.iter().map(|d| [vec![0u8; 16], d.clone()].concat()).collect();

    // Without USO: every datagram alone, untouched.
    let mut bufs = bufs0.clone();
    let mut c = Coalescer::new();
    c.coalesce(&mut bufs, &packets);
    assert_eq!(c.writes().len(), dgrams.len());
    assert!(c.writes().iter().all(|w| w.vnet == VirtioNetHdr::NONE));
    assert_eq!(bufs, bufs0);

    // With USO: the 1200-byte run and its 500-byte tail in one write; the other flow alone.
    let mut bufs = bufs0.clone();
    c.set_merge_udp(true);
    c.coalesce(&mut bufs, &packets);
    let summary: Vec<(usize, usize)> = c.writes().iter().map(|w| (w.slot, w.followers.len())).collect();
    assert_eq!(summary, [(0, 5), (3, 0)]);
    let w = &c.writes()[0];
    assert_eq!(
        w.vnet,
        VirtioNetHdr {
            flags: 1,
            gso_type: GsoType::UdpL4,
            hdr_len: 28,
            gso_size: 1200,
            csum_start: 20,
            csum_offset: 6
        }
    );
    let merged = assemble(&c, &bufs, w);
    assert_eq!(merged.len(), 28 + 6500);
    assert_eq!(usize::from(u16::from_be_bytes([merged[24], merged[25]])), 8 + 6500, "UDP length of the run");
    // What the kernel does with it: cut at gso_size, checksums completed per datagram.
    let again = split_all(&w.vnet, &merged);
    let originals: Vec<&Vec<u8>> = dgrams.iter().enumerate().filter(|(i, _)| *i != 3).map(|(_, d)| d).collect();
    assert_eq!(again.len(), originals.len());
    for (got, want) in again.iter().zip(originals) {
        assert_valid(got, 17);
        // The same UDP datagram (ports, length, checksum, payload); only the IPv4 ID (and so
        // the header checksum) is renumbered per segment, as the kernel does.
        assert!(got[20..] == want[20..], "UDP datagram differs");
    }
}

/// A TCP/IPv4 segment of flow `sport` with `len` payload bytes, TOS byte `tos` and `flags`.
fn segment(sport: u16, seq: u32, len: usize, tos: u8, flags: u8) -> Vec<u8> {
    let mut p = tcp_super(false, &payload(len), seq, flags);
    p[1] = tos;
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p
}

/// Packet indices in the order the writes deliver them (head, then followers).
fn delivery_order(c: &Coalescer) -> Vec<usize> {
    let mut order = Vec::new();
    for w in c.writes() {
        order.push(w.slot);
        order.extend(c.followers()[w.followers.clone()].iter().map(|(slot, _)| *slot));
    }
    order
}

#[test]
fn a_flow_is_never_reordered_even_when_its_headers_change() {
    // ECT(0), then CE-marked segments around a pure ACK: the ACK must not be overtaken.
    let segs = [
        segment(40000, 0, 1000, 0x02, 0x10),
        segment(40000, 1000, 1000, 0x03, 0x10),
        segment(40000, 2000, 0, 0x03, 0x10),
        segment(40000, 2000, 1000, 0x03, 0x10),
    ];
    let (c, _) = coalesce_segments(&segs);
    assert_eq!(delivery_order(&c), [0, 1, 2, 3]);

    // Many random batches of three flows with changing TOS, sizes, flags, gaps and retransmits:
    // within each flow, packets leave in arrival order.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for _ in 0..2000 {
        let mut seqs = [0u32; 3];
        let mut batch = Vec::new();
        for _ in 0..(4 + next(40)) {
            let flow = next(3) as usize;
            let len = [0, 500, 1000, 1000, 1000][next(5) as usize];
            let tos = [0x00, 0x02, 0x03][next(3) as usize];
            let flags = [0x10, 0x10, 0x10, 0x18, 0x11][next(5) as usize];
            let seq = if next(8) == 0 { seqs[flow].wrapping_sub(1000) } else { seqs[flow] };
            batch.push(segment(40000 + flow as u16, seq, len, tos, flags));
            seqs[flow] = seq.wrapping_add(len as u32);
        }
        let (c, _) = coalesce_segments(&batch);
        let order = delivery_order(&c);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..batch.len()).collect::<Vec<_>>(), "every packet exactly once");
        for flow in 0..3u16 {
            let of_flow: Vec<usize> =
                order.iter().copied().filter(|&i| batch[i][20..22] == (40000 + flow).to_be_bytes()).collect();
            assert!(of_flow.windows(2).all(|w| w[0] < w[1]), "flow {flow} reordered: {order:?}");
        }
    }
}
