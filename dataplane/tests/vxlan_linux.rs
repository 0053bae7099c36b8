//! `vxlan` framing against Linux's own VXLAN driver: the kernel is the oracle (root only; CI runs
//! as root). Outside CI a non-root run skips with a note.
//!
//! Two namespaces (`vxwgvx-<pid>-<n>`) joined by a veth pair, 10.203.0.1/24 and 10.203.0.2/24.
//! The second holds a kernel `vx0` (VNI 42, port 8472, no learning, outer UDP checksums on, all
//! frames to 10.203.0.1) with 192.168.77.2/24 and a static neighbour 192.168.77.1 at our MAC. From
//! the first namespace we send ICMP echo requests to 192.168.77.2 framed by vxwg — once as a full
//! outer IPv4/UDP/VXLAN packet from [`encapsulate`] over a raw socket (so the kernel checks our
//! outer UDP checksum), once as VXLAN-only from [`encapsulate_vxlan`] over a UDP socket — and take
//! the kernel's VXLAN-encapsulated echo replies apart with [`decapsulate_vxlan`] (UDP socket) and
//! [`decapsulate`] (raw socket: the full outer packet, kernel-computed UDP checksum included).
//! The namespaces are deleted on drop, panics too.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use vxwg_dataplane::vxlan::{decapsulate, decapsulate_vxlan, encapsulate, encapsulate_vxlan, HEADROOM_V4};
use vxwg_dataplane::wire::checksum;
use vxwg_dataplane::wire::ethernet::{self, EtherType, EthernetAddress};
use vxwg_dataplane::wire::ipv4::{self, IpProtocol};
use vxwg_dataplane::wire::vxlan::{Vni, DEFAULT_PORT};

const OUR_MAC: EthernetAddress = EthernetAddress([0x02, 0x77, 0, 0, 0, 1]);
const OUR_VTEP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 1);
const KERNEL_VTEP: Ipv4Addr = Ipv4Addr::new(10, 203, 0, 2);
const OUR_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const KERNEL_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);
const ECHO_ID: u16 = 0x7778;

mod common;
use common::{require, Netns};

/// `bridge -n NS <cmd>`.
#[track_caller]
fn bridge(ns: &Netns, cmd: &str) -> String {
    ns.tool("bridge", cmd)
}

/// The two namespaces and the kernel VTEP; returns them with vx0's MAC.
fn setup() -> (Netns, Netns, EthernetAddress) {
    let (ours, kernel) = (Netns::new("vxwgvx"), Netns::new("vxwgvx"));
    ours.ip(&format!("link add veth1 type veth peer name veth2 netns {}", kernel.name));
    ours.ip("addr add 10.203.0.1/24 dev veth1");
    ours.ip("link set veth1 up");
    kernel.ip("addr add 10.203.0.2/24 dev veth2");
    kernel.ip("link set veth2 up");
    kernel.ip("link add vx0 type vxlan id 42 dstport 8472 local 10.203.0.2 dev veth2 nolearning udpcsum");
    bridge(&kernel, "fdb append 00:00:00:00:00:00 dev vx0 dst 10.203.0.1");
    kernel.ip("addr add 192.168.77.2/24 dev vx0");
    kernel.ip("link set vx0 up");
    kernel.ip(&format!("neigh add 192.168.77.1 lladdr {OUR_MAC} dev vx0"));
    kernel.run(|| disable_tx_checksum("veth2"));
    let show = kernel.ip("link show vx0");
    let mac = show
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {show}"))
        .parse()
        .expect("vx0 MAC");
    (ours, kernel, mac)
}

/// Turns off transmit checksum offload on `dev` (`ethtool -K dev tx off`, without ethtool), on a
/// thread in the device's namespace. Over veth, offloaded checksums reach the peer namespace as
/// partial sums (`CHECKSUM_PARTIAL`), which a raw socket sees as they are; with offload off the
/// kernel computes the whole outer UDP checksum in software, so `decapsulate` checks a real one.
#[allow(unsafe_code)]
fn disable_tx_checksum(dev: &str) {
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct Ifreq {
        name: [u8; libc::IFNAMSIZ],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    const SIOCETHTOOL: u64 = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    let sock = UdpSocket::bind("127.0.0.1:0").expect("ioctl socket");
    let mut value = EthtoolValue { cmd: ETHTOOL_STXCSUM, data: 0 };
    let mut req = Ifreq { name: [0; libc::IFNAMSIZ], data: &mut value, _pad: [0; 16] };
    req.name[..dev.len()].copy_from_slice(dev.as_bytes());
    // SAFETY: SIOCETHTOOL reads the NUL-terminated name and the `ethtool_value` that `req.data`
    // points to; both outlive the call, and the socket descriptor is open.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    assert_eq!(rc, 0, "ETHTOOL_STXCSUM on {dev}: {}", std::io::Error::last_os_error());
}

/// An ICMP echo request 192.168.77.1 -> .2 in an Ethernet frame to `dst_mac`, written at
/// `buf[start..]`; returns the frame length.
fn echo_request(buf: &mut [u8], start: usize, dst_mac: EthernetAddress, seq: u16) -> usize {
    let data = b"vxwg vxlan interop";
    let icmp_len = 8 + data.len();
    let len = ethernet::HEADER_LEN + ipv4::HEADER_LEN + icmp_len;
    let frame = &mut buf[start..start + len];
    ethernet::Repr { src: OUR_MAC, dst: dst_mac, ethertype: EtherType::IPV4 }
        .emit(&mut ethernet::Frame::new_unchecked(&mut frame[..]))
        .unwrap();
    ipv4::Repr {
        src: OUR_IP,
        dst: KERNEL_IP,
        protocol: IpProtocol::ICMP,
        payload_len: icmp_len,
        ttl: 64,
        dont_frag: true,
        dscp_ecn: 0,
        ident: seq,
    }
    .emit(&mut ipv4::Packet::new_unchecked(&mut frame[14..]))
    .unwrap();
    let icmp = &mut frame[34..];
    icmp[..8].copy_from_slice(&[8, 0, 0, 0, (ECHO_ID >> 8) as u8, ECHO_ID as u8, (seq >> 8) as u8, seq as u8]);
    icmp[8..].copy_from_slice(data);
    let sum = checksum::finish(checksum::sum(icmp));
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    len
}

/// Whether `frame` is the kernel's echo reply with sequence `seq`, checking every field of it.
fn is_echo_reply(frame: &[u8], vx0_mac: EthernetAddress, seq: u16) -> bool {
    let Ok(eth) = ethernet::Frame::new_checked(frame) else { return false };
    if eth.ethertype() != EtherType::IPV4 {
        return false; // e.g. the kernel's IPv6 router solicitations
    }
    let Ok(ip) = ipv4::Packet::new_checked(eth.payload()) else { return false };
    let Ok(repr) = ipv4::Repr::parse(&ip) else { return false };
    let icmp = ip.payload();
    if repr.protocol != IpProtocol::ICMP || icmp.len() < 8 || icmp[0] != 0 {
        return false;
    }
    if u16::from_be_bytes([icmp[6], icmp[7]]) != seq {
        return false;
    }
    assert_eq!((eth.src_addr(), eth.dst_addr()), (vx0_mac, OUR_MAC));
    assert_eq!((repr.src, repr.dst), (KERNEL_IP, OUR_IP));
    assert_eq!(icmp[1], 0);
    assert_eq!(u16::from_be_bytes([icmp[4], icmp[5]]), ECHO_ID);
    assert_eq!(&icmp[8..], b"vxwg vxlan interop");
    assert_eq!(checksum::finish(checksum::sum(icmp)), 0, "ICMP checksum");
    true
}

/// Calls `recv` until `accept` returns true for a datagram, or panics after 5 s. `recv` must have
/// a read timeout.
fn recv_until(
    what: &str,
    mut recv: impl FnMut(&mut [u8]) -> std::io::Result<usize>,
    mut accept: impl FnMut(&[u8]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        match recv(&mut buf) {
            Ok(n) if accept(&buf[..n]) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("{what}: recv: {e}"),
        }
    }
    panic!("{what}: nothing accepted within 5 s");
}

/// Full IPv4 packets from a raw `IPPROTO_UDP` socket.
fn recv_raw(sock: &Socket, accept: impl FnMut(&[u8]) -> bool) {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    recv_until("raw socket", |buf| (&*sock).read(buf), accept);
}

/// UDP payloads from a UDP socket.
fn recv_udp(sock: &UdpSocket, accept: impl FnMut(&[u8]) -> bool) {
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    recv_until("UDP socket", |buf| sock.recv(buf), accept);
}

#[test]
fn kernel_vxlan_device_answers_frames_we_frame_and_we_parse_its_frames() {
    if !require(&["ip", "bridge"]) {
        return;
    }
    let (ours, _kernel, vx0_mac) = setup();
    let vni = Vni::new(42).unwrap();
    ours.run(|| {
        let udp = UdpSocket::bind(SocketAddrV4::new(OUR_VTEP, DEFAULT_PORT)).expect("bind 10.203.0.1:8472");
        let raw_rx = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("raw UDP socket");
        let raw_tx = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW))).expect("raw socket");

        // 1. The full outer packet from `encapsulate`, sent as-is: the kernel checks our IPv4
        // header and our outer UDP checksum (udpcsum), then the VXLAN header and the frame.
        let mut buf = [0u8; 512];
        let len = echo_request(&mut buf, HEADROOM_V4, vx0_mac, 1);
        let range = encapsulate(&mut buf, HEADROOM_V4, len, vni, OUR_VTEP.into(), KERNEL_VTEP.into(), DEFAULT_PORT)
            .expect("encapsulate");
        let to = SocketAddr::from(SocketAddrV4::new(KERNEL_VTEP, 0));
        raw_tx.send_to(&buf[range], &to.into()).expect("send full outer packet");
        // The reply as the raw socket sees it: outer IPv4 + UDP (kernel checksum) + VXLAN + frame.
        let mut raw_replies = 0;
        recv_raw(&raw_rx, |packet| {
            // Everything from 10.203.0.2:8472 is vx0's (IPv6 router solicitations, MLD, the reply):
            // each must pass every check, checksums included.
            if packet.get(12..16) != Some(&KERNEL_VTEP.octets()[..]) {
                return false;
            }
            let d = decapsulate(packet, DEFAULT_PORT).expect("decapsulate a kernel VXLAN packet");
            raw_replies += 1;
            assert_eq!(d.vni, vni);
            assert_eq!(d.outer_src, KERNEL_VTEP);
            let csum = u16::from_be_bytes([packet[26], packet[27]]);
            assert_ne!(csum, 0, "vx0 has udpcsum: decapsulate verified a real checksum");
            is_echo_reply(&packet[d.inner], vx0_mac, 1)
        });
        // The same reply through the UDP socket: VXLAN + frame only.
        recv_udp(&udp, |payload| {
            let (got, inner) = decapsulate_vxlan(payload).expect("decapsulate_vxlan");
            assert_eq!(got, vni);
            is_echo_reply(&payload[inner], vx0_mac, 1)
        });

        // 2. VXLAN-only from `encapsulate_vxlan`, through the UDP socket.
        let mut buf = [0u8; 512];
        let len = echo_request(&mut buf, 8, vx0_mac, 2);
        let range = encapsulate_vxlan(&mut buf, 8, len, vni).expect("encapsulate_vxlan");
        udp.send_to(&buf[range], SocketAddrV4::new(KERNEL_VTEP, DEFAULT_PORT)).expect("send VXLAN payload");
        recv_udp(&udp, |payload| {
            let (got, inner) = decapsulate_vxlan(payload).expect("decapsulate_vxlan");
            assert_eq!(got, vni);
            is_echo_reply(&payload[inner], vx0_mac, 2)
        });
        assert!(raw_replies >= 1);

        // 3. Negative controls, proving the kernel really checks what we send: a full outer
        // packet with a corrupted UDP checksum, and one for another VNI, get no reply.
        for (seq, corrupt, vni) in [(3, true, vni), (4, false, Vni::new(43).unwrap())] {
            let mut buf = [0u8; 512];
            let len = echo_request(&mut buf, HEADROOM_V4, vx0_mac, seq);
            let range = encapsulate(&mut buf, HEADROOM_V4, len, vni, OUR_VTEP.into(), KERNEL_VTEP.into(), DEFAULT_PORT)
                .expect("encapsulate");
            if corrupt {
                buf[range.start + 26] ^= 0x01;
            }
            raw_tx.send_to(&buf[range], &to.into()).expect("send full outer packet");
            udp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
            let deadline = Instant::now() + Duration::from_millis(700);
            let mut rx = [0u8; 2048];
            while Instant::now() < deadline {
                if let Ok(n) = udp.recv(&mut rx) {
                    if let Ok((_, inner)) = decapsulate_vxlan(&rx[..n]) {
                        assert!(!is_echo_reply(&rx[..n][inner], vx0_mac, seq), "seq {seq} was answered");
                    }
                }
            }
        }
    });
}
