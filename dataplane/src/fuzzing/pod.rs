//! Fuzz entry points for the pod path: VXLAN framing, local ARP/NDP answers, MTU handling.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::mtu::{check_size, clamp_tcp_mss, fragment_v4, icmp_too_big};
use crate::vxlan::{answer_arp, answer_ndp, decapsulate, decapsulate_vxlan, encapsulate, Fdb, HEADROOM_V6};
use crate::wire::ethernet::{EthernetAddress, Frame};
use crate::wire::vxlan::{Vni, DEFAULT_PORT};

/// Outer IP/UDP/VXLAN packets and bare VXLAN payloads. Whatever is accepted must re-encapsulate
/// to a packet that decapsulates to the same frame and VNI.
pub fn vxlan_decapsulate(data: &[u8]) {
    if let Ok(d) = decapsulate(data, DEFAULT_PORT) {
        assert!(d.inner.start <= d.inner.end && d.inner.end <= data.len());
        let frame = &data[d.inner.clone()];
        let local = match d.outer_src {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
        };
        let mut buf = vec![0u8; HEADROOM_V6 + frame.len()];
        buf[HEADROOM_V6..].copy_from_slice(frame);
        if let Ok(range) = encapsulate(&mut buf, HEADROOM_V6, frame.len(), d.vni, local, d.outer_src, DEFAULT_PORT) {
            let packet = &buf[range];
            let again = decapsulate(packet, DEFAULT_PORT).expect("our own packet decapsulates");
            assert_eq!(again.vni, d.vni);
            assert_eq!(&packet[again.inner], frame);
        }
    }
    if let Ok((_, inner)) = decapsulate_vxlan(data) {
        assert!(inner.start <= inner.end && inner.end <= data.len());
    }
}

/// Frames from a pod: ARP requests and neighbour solicitations are answered only for known
/// neighbours, and every answer is a well-formed Ethernet frame that fits the output buffer.
pub fn neighbour_answers(data: &[u8]) {
    let vni = Vni::new(42).expect("valid VNI");
    let mut fdb = Fdb::new();
    fdb.insert_neighbour(vni, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)), EthernetAddress([2, 0, 0, 0, 0, 2]));
    fdb.insert_neighbour(
        vni,
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
        EthernetAddress([2, 0, 0, 0, 0, 2]),
    );
    let mut out = [0u8; 1514];
    let arp = answer_arp(data, &fdb, vni, &mut out);
    if let Some(n) = arp {
        assert!(n <= out.len());
        Frame::new_checked(&out[..n]).expect("ARP answers are well-formed frames");
    }
    if let Some(n) = answer_ndp(data, &fdb, vni, &mut out) {
        assert!(n <= out.len());
        Frame::new_checked(&out[..n]).expect("NDP answers are well-formed frames");
    }
}

/// Inner packets meeting a path MTU: the first two bytes are the MTU, the rest the packet.
pub fn mtu_handling(data: &[u8]) {
    let Some((head, packet)) = data.split_first_chunk::<2>() else { return };
    let mtu = usize::from(u16::from_be_bytes(*head)) % 9001;
    let _ = check_size(packet, mtu);
    let mut out = [0u8; 1500];
    for src in [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1))] {
        if let Ok(n) = icmp_too_big(packet, mtu as u16, src, &mut out) {
            assert!(n <= 1280, "ICMP errors never exceed the IPv6 minimum MTU");
        }
    }
    let mut scratch = vec![0u8; mtu.min(packet.len())];
    let mut fragments = 0;
    if fragment_v4(packet, mtu, &mut scratch, &mut |f: &[u8]| {
        assert!(f.len() <= mtu.max(1));
        fragments += 1;
    })
    .is_ok()
    {
        assert!(fragments >= 1);
    }
    let mut copy = packet.to_vec();
    let _ = clamp_tcp_mss(&mut copy, (mtu as u16).saturating_sub(40));
}
