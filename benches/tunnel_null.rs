//! The tunnel bench's `null` contender: a tunnel with no cryptography and no protocol at all,
//! built from the same system calls as vxwg's packet path, to tell how much of a case's ceiling
//! on this machine is the kernel's and the benchmark's own, whatever a tunnel does in between.
//!
//! Each end is one thread: TUN packets (with the `virtio_net_hdr` offloads; TSO/USO super-packets
//! cut by `offload::split`, as vxwg does) go to the other end as UDP datagrams, batched with
//! `sendmmsg` and UDP GSO; datagrams received (with UDP GRO) go to the TUN with TCP and UDP runs
//! merged into one write (`offload::Coalescer`, as vxwg does). Nothing is encrypted, nothing
//! checked: it is an oracle for the bench, on addresses inside the bench's own namespaces, and
//! lives nowhere but here.
//!
//! Started by the bench as `tunnel --null-tunnel IFNAME PORT PEER_ADDR:PORT` inside a namespace
//! (`ip netns exec`); the bench then gives the TUN its address and MTU. It runs until killed.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;

use vxwg::dataplane::io::poll::wait_readable;
use vxwg::dataplane::io::{Offload, RecvMeta, Tun, UdpSocket, BATCH};
use vxwg::dataplane::offload::{self, Coalescer, VirtioNetHdr, MAX_WRITE_PIECES, VNET_HDR_LEN};

/// Largest packet or datagram either side hands over.
const MAX_PACKET: usize = 65535;
/// Segments one TSO/USO super-packet may be cut into: the bench sets the device's
/// `gso_max_segs` to this, as vxwg does for its own.
pub const MAX_SEGMENTS: usize = 64;

/// Runs the null tunnel on TUN `ifname`, listening on UDP `port`, sending to `peer`. Returns only
/// on a setup error or when the device goes away.
pub fn run(ifname: &str, port: u16, peer: SocketAddr) -> Result<(), String> {
    let tun = Tun::create_with_offload(ifname).map_err(|e| format!("TUN {ifname}: {e}"))?;
    if tun.offload() == Offload::None {
        return Err(format!("TUN {ifname}: the kernel granted no offloads (the null tunnel expects them)"));
    }
    let udp = UdpSocket::bind(port).map_err(|e| format!("UDP port {port}: {e}"))?;
    udp.enable_gro();
    let mut coalescer = Coalescer::new();
    coalescer.set_merge_udp(tun.offload() == Offload::TsoUso);
    // TUN side: room for a batch of reads, each possibly a super-packet cut into segments.
    let mut slots: Vec<Vec<u8>> = (0..2 * MAX_SEGMENTS).map(|_| vec![0u8; VNET_HDR_LEN + MAX_PACKET]).collect();
    let mut lens = vec![0usize; slots.len()];
    // UDP side.
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; MAX_PACKET]).collect();
    let mut meta = vec![RecvMeta::default(); BATCH];
    let mut packets: Vec<(usize, std::ops::Range<usize>)> = Vec::with_capacity(BATCH * MAX_SEGMENTS);
    loop {
        let [t, u] = wait_readable([tun.raw_fd(), udp.raw_fd()], None).map_err(|e| format!("poll: {e}"))?;
        if t.failed {
            return Err(format!("TUN {ifname} is gone"));
        }
        if t.readable {
            let n = read_tun(&tun, &mut slots, &mut lens)?;
            let msgs = slots[..n].iter().zip(&lens[..n]).map(|(s, &l)| (&s[VNET_HDR_LEN..VNET_HDR_LEN + l], peer));
            // A full socket buffer loses the batch, as a tunnel's would.
            let _ = udp.send_batch(msgs);
        }
        if u.readable {
            let n = match udp.recv_batch(&mut bufs, &mut meta) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => 0,
                Err(e) => return Err(format!("receive: {e}")),
            };
            packets.clear();
            for (slot, m) in meta[..n].iter().enumerate() {
                packets.extend(m.datagrams().map(|r| (slot, r)));
            }
            coalescer.coalesce(&mut bufs, &packets);
            let followers = coalescer.followers();
            for w in coalescer.writes() {
                let vnet = w.vnet.to_bytes();
                let mut iov = [IoSlice::new(&[]); MAX_WRITE_PIECES];
                let k = w.pieces(&vnet, &bufs, followers, &mut iov);
                // A refused write loses its packets, as a tunnel's would.
                let _ = tun.send_vectored(&iov[..k]);
            }
        }
    }
}

/// Reads TUN packets until none is left or the slots are full; super-packets are cut into
/// segments in the slots after their own. Packet `i` is `slots[i][VNET_HDR_LEN..][..lens[i]]`.
fn read_tun(tun: &Tun, slots: &mut [Vec<u8>], lens: &mut [usize]) -> Result<usize, String> {
    let mut n = 0;
    while slots.len() - n >= MAX_SEGMENTS {
        let got = match tun.recv_vectored(&mut [IoSliceMut::new(&mut slots[n])]) {
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("TUN read: {e}")),
        };
        let Some(hdr) = VirtioNetHdr::parse(&slots[n]).filter(|_| got >= VNET_HDR_LEN) else { continue };
        if let Ok(segments) = offload::split(&hdr, &mut slots[n..], VNET_HDR_LEN, got - VNET_HDR_LEN, &mut lens[n..]) {
            n += segments;
        }
    }
    Ok(n)
}
