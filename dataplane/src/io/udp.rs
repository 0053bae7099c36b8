//! The WireGuard UDP socket: dual-stack, non-blocking, with batched `recvmmsg`/`sendmmsg`.
//!
//! Several sockets may share one port ([`UdpSocket::bind_group`], `SO_REUSEPORT`), one per worker:
//! the kernel hands each datagram to one of them by a hash of its addresses and ports, so one
//! peer's datagrams always reach the same socket.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Most datagrams moved per syscall.
pub const BATCH: usize = 64;

/// Socket buffer size asked for: a burst of a few thousand full-size datagrams must not overflow.
const SOCKET_BUFFER: usize = 8 << 20;

/// Datagrams gathered per `sendmmsg` with GSO (up to BATCH messages of several datagrams each).
const GSO_CHUNK: usize = 256;
/// Most datagrams in one GSO message (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
const GSO_MAX_SEGMENTS: usize = 64;
/// Most payload bytes in one GSO message: an IPv4 datagram's 65,535 less headers, with margin.
const GSO_MAX_BYTES: usize = 65_000;
/// `gso` states: on; unsupported by this kernel; otherwise the datagrams still to send without
/// GSO after the kernel refused it, before trying again.
const GSO_ON: u32 = 0;
const GSO_UNSUPPORTED: u32 = u32::MAX;
const GSO_OFF_FOR: u32 = 1 << 16;
const UNSPECIFIED: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));

/// One receive: its length in the caller's buffer and who sent it. With UDP GRO on, a buffer may
/// hold several datagrams from one sender back to back, each `segment` bytes but the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    pub len: usize,
    pub src: SocketAddr,
    /// Size of each datagram in the buffer (equal to `len` for a single datagram).
    pub segment: usize,
}

impl RecvMeta {
    /// The datagrams in the buffer, as ranges.
    pub fn datagrams(&self) -> impl Iterator<Item = std::ops::Range<usize>> {
        let (len, step) = (self.len, self.segment.max(1));
        (0..len).step_by(step).map(move |start| start..(start + step).min(len))
    }
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self { len: 0, src: SocketAddr::from(([0, 0, 0, 0], 0)), segment: 0 }
    }
}

/// A bound UDP socket for WireGuard traffic.
#[derive(Debug)]
pub struct UdpSocket {
    socket: Socket,
    dual_stack: bool,
    /// GSO state (see `GSO_ON`).
    gso: AtomicU32,
    /// Datagrams the kernel dropped because this socket's receive buffer was full, as last
    /// reported with a received datagram (SO_RXQ_OVFL), widened past the kernel's u32.
    receive_drops: AtomicU64,
}

impl UdpSocket {
    /// Binds `[::]:port` accepting IPv4 too, or `0.0.0.0:port` where IPv6 is unavailable.
    /// Port 0 picks a free port.
    pub fn bind(port: u16) -> io::Result<Self> {
        Self::bind_with(port, false, None)
    }

    /// Binds `n` sockets (at least 1) to one port, as [`UdpSocket::bind`] does each, sharing the
    /// port with `SO_REUSEPORT` (a lone socket does without). Port 0: the kernel picks a free port
    /// for the first and the others join it. All are of the first one's family (dual-stack or
    /// IPv4 only). An error says which socket failed; those already bound are closed.
    ///
    /// The first socket binds without `SO_REUSEPORT` and turns it on only once bound, so a port
    /// another group holds is refused (`AddrInUse`) rather than joined, and port 0 never picks
    /// one: the kernel lets any socket of the same user that asked for `SO_REUSEPORT` into a
    /// group, and as root that is every other daemon.
    pub fn bind_group(port: u16, n: usize) -> io::Result<Vec<Self>> {
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("UDP port {port}: 0 sockets asked for")));
        }
        let first = Self::bind_with(port, false, None)
            .and_then(|s| if n > 1 { s.socket.set_reuse_port(true).map(|()| s) } else { Ok(s) })
            .map_err(|e| io::Error::new(e.kind(), format!("UDP port {port}: binding socket 0 of {n}: {e}")))?;
        let (port, dual_stack) = (first.local_port()?, first.dual_stack);
        let mut group = Vec::with_capacity(n);
        group.push(first);
        for i in 1..n {
            let socket = Self::bind_with(port, true, Some(dual_stack))
                .map_err(|e| io::Error::new(e.kind(), format!("UDP port {port}: binding socket {i} of {n}: {e}")))?;
            group.push(socket);
        }
        Ok(group)
    }

    /// A second handle on this socket (a duplicated descriptor), for sending from another thread.
    /// It starts from this handle's GSO state and drop count and keeps its own from then on.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            socket: self.socket.try_clone()?,
            dual_stack: self.dual_stack,
            gso: AtomicU32::new(self.gso.load(Ordering::Relaxed)),
            receive_drops: AtomicU64::new(self.receive_drops.load(Ordering::Relaxed)),
        })
    }

    /// Binds as [`UdpSocket::bind`] describes, with `SO_REUSEPORT` if `reuse_port`; `dual_stack`
    /// `None` tries dual-stack and falls back to IPv4, `Some` insists on one.
    fn bind_with(port: u16, reuse_port: bool, dual_stack: Option<bool>) -> io::Result<Self> {
        let (socket, dual_stack) = match dual_stack {
            Some(true) => (Self::bind_v6(port, reuse_port)?, true),
            Some(false) => (Self::bind_v4(port, reuse_port)?, false),
            None => match Self::bind_v6(port, reuse_port) {
                Ok(s) => (s, true),
                Err(_) => (Self::bind_v4(port, reuse_port)?, false),
            },
        };
        // Never fragment the outer packet: DF on IPv4, no fragmentation on IPv6. A datagram too big
        // for the path is then an error (EMSGSIZE) instead of fragments.
        let fd = socket.as_raw_fd();
        if dual_stack {
            set_opt(fd, libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_PMTUDISC_DO)?;
        }
        // Also covers the IPv4 side of a dual-stack socket.
        let _ = set_opt(fd, libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_PMTUDISC_DO);
        // Best effort: the unprivileged limit (net.core.rmem_max) may cap these; as root, force.
        for (force, normal) in [(libc::SO_RCVBUFFORCE, libc::SO_RCVBUF), (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF)] {
            if set_int_opt(socket.as_raw_fd(), force, SOCKET_BUFFER as libc::c_int).is_err() {
                let _ = set_int_opt(socket.as_raw_fd(), normal, SOCKET_BUFFER as libc::c_int);
            }
        }
        // UDP GSO (Linux 4.18+): probe the option; the segment size is set per message.
        let gso = if set_opt(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok() { GSO_ON } else { GSO_UNSUPPORTED };
        // Best effort: the kernel then reports its count of datagrams dropped for a full receive
        // buffer with every datagram received after a drop.
        let _ = set_int_opt(fd, libc::SO_RXQ_OVFL, 1);
        Ok(Self { socket, dual_stack, gso: AtomicU32::new(gso), receive_drops: AtomicU64::new(0) })
    }

    fn bind_v6(port: u16, reuse_port: bool) -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        // Before bind: the kernel lets a socket into a port's group only if it asked beforehand
        // (and runs as the same user as the group's first, which asked at any time).
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        s.bind(&SockAddr::from(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))))?;
        Ok(s)
    }

    fn bind_v4(port: u16, reuse_port: bool) -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV4, Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP))?;
        if reuse_port {
            s.set_reuse_port(true)?;
        }
        s.bind(&SockAddr::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))))?;
        Ok(s)
    }

    /// The port bound.
    pub fn local_port(&self) -> io::Result<u16> {
        Ok(self.socket.local_addr()?.as_socket().map_or(0, |a| a.port()))
    }

    /// The raw descriptor, for poll(2).
    pub fn raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }

    /// The receive buffer the kernel granted.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.socket.recv_buffer_size()
    }

    fn to_wire(&self, dst: SocketAddr) -> SockAddr {
        match (dst, self.dual_stack) {
            (SocketAddr::V4(v4), true) => SockAddr::from(SocketAddrV6::new(v4.ip().to_ipv6_mapped(), v4.port(), 0, 0)),
            _ => SockAddr::from(dst),
        }
    }

    /// Receives up to `min(bufs.len(), BATCH)` datagrams without blocking; returns how many, with
    /// their lengths and sources in `meta`. `WouldBlock` when none is waiting.
    pub fn recv_batch<B: AsMut<[u8]>>(&self, bufs: &mut [B], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = bufs.len().min(meta.len()).min(BATCH);
        if n == 0 {
            return Ok(0);
        }
        let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
        // SAFETY: sockaddr_storage and mmsghdr are plain C structs for which all-zero is valid.
        let mut addrs: [libc::sockaddr_storage; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        // Room for a UDP_GRO and an SO_RXQ_OVFL control message (an int and a u32, 24 bytes each
        // with their headers), 8-byte aligned as cmsghdr requires.
        let mut controls = [[0u64; 8]; BATCH];
        for i in 0..n {
            hdrs[i].msg_hdr.msg_control = controls[i].as_mut_ptr().cast();
            hdrs[i].msg_hdr.msg_controllen = std::mem::size_of::<[u64; 8]>();
            let b = bufs[i].as_mut();
            iovs[i].write(libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() });
            hdrs[i].msg_hdr.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = iovs[i].as_mut_ptr();
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: the first `n` headers point at `n` initialised iovecs over live, exclusively
        // borrowed buffers and at `n` address slots; all outlive the call.
        let got = unsafe {
            libc::recvmmsg(
                self.socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for i in 0..got {
            // SAFETY: the kernel wrote `msg_namelen` bytes of a valid socket address into addrs[i].
            let addr = unsafe { SockAddr::new(addrs[i], hdrs[i].msg_hdr.msg_namelen) };
            let src = addr.as_socket().map(unmap).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let len = hdrs[i].msg_len as usize;
            let (segment, drops) = received_controls(&hdrs[i].msg_hdr);
            if let Some(d) = drops {
                // Only forward: a thread sharing the socket may report an older count after us.
                let _ = self
                    .receive_drops
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| Some(widen_drop_count(seen, d)));
            }
            meta[i] = RecvMeta { len, src, segment: segment.unwrap_or(len) };
        }
        Ok(got)
    }

    /// Sends datagrams in batches; returns how many were sent before the first error (the error
    /// is returned only if none was sent). Takes an iterator so callers can describe a batch
    /// without building a list: nothing is allocated.
    ///
    /// With UDP GSO, consecutive datagrams of one size to one destination (the last may be
    /// shorter) leave as one `UDP_SEGMENT` message: the kernel walks its stack once for the whole
    /// run and cuts it at the end. If the kernel refuses GSO for the device (EIO), the batch is
    /// resent datagram by datagram and GSO stays off for a while, then is tried again; a run it
    /// refuses for its size (EINVAL/EMSGSIZE: the path MTU) is resent datagram by datagram, so
    /// each datagram gets the error it would have had anyway.
    pub fn send_batch<'a>(&self, msgs: impl IntoIterator<Item = (&'a [u8], SocketAddr)>) -> io::Result<usize> {
        let mut msgs = msgs.into_iter().peekable();
        let mut sent = 0;
        let mut chunk: [(&[u8], SocketAddr); GSO_CHUNK] = [(&[], UNSPECIFIED); GSO_CHUNK];
        while msgs.peek().is_some() {
            let gso = self.gso_enabled();
            let cap = if gso { GSO_CHUNK } else { BATCH };
            let mut n = 0;
            for m in msgs.by_ref().take(cap) {
                chunk[n] = m;
                n += 1;
            }
            let chunk = &chunk[..n];
            let (count, outcome) = self.send_chunk(chunk, gso);
            sent += count;
            if !gso {
                self.note_plain_sends(count);
            }
            match outcome {
                ChunkOutcome::Complete => {}
                ChunkOutcome::Blocked => return Ok(sent),
                ChunkOutcome::Failed(e) if gso && is_gso_refusal(&e) => {
                    if e.raw_os_error() == Some(libc::EIO) {
                        self.gso.store(GSO_OFF_FOR, Ordering::Relaxed);
                    }
                    let (count, outcome) = self.send_chunk(&chunk[count..], false);
                    sent += count;
                    match outcome {
                        ChunkOutcome::Complete => {}
                        ChunkOutcome::Blocked => return Ok(sent),
                        ChunkOutcome::Failed(e) if sent == 0 => return Err(e),
                        ChunkOutcome::Failed(_) => return Ok(sent),
                    }
                }
                ChunkOutcome::Failed(e) if sent == 0 => return Err(e),
                ChunkOutcome::Failed(_) => return Ok(sent),
            }
        }
        Ok(sent)
    }

    /// Whether GSO is to be tried now.
    fn gso_enabled(&self) -> bool {
        self.gso.load(Ordering::Relaxed) == GSO_ON
    }

    /// Counts datagrams sent without GSO while it is off, turning it back on after a while.
    fn note_plain_sends(&self, count: usize) {
        let left = self.gso.load(Ordering::Relaxed);
        if left != GSO_ON && left != GSO_UNSUPPORTED {
            let next = left.saturating_sub(count as u32);
            self.gso.store(next, Ordering::Relaxed);
        }
    }

    /// Sends `chunk` with as few `sendmmsg` calls as it takes: with `gso`, runs of equal-sized
    /// datagrams to one destination become one message each. Returns how many datagrams (from
    /// the front) were sent, and why it stopped.
    fn send_chunk(&self, chunk: &[(&[u8], SocketAddr)], gso: bool) -> (usize, ChunkOutcome) {
        let mut sent = 0;
        while sent < chunk.len() {
            // A short count means the kernel stopped at a message and kept its error to itself:
            // the next call starts there and reports it (or sends it).
            match self.send_messages(&chunk[sent..], gso) {
                Ok(count) => sent += count,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return (sent, ChunkOutcome::Blocked),
                Err(e) => return (sent, ChunkOutcome::Failed(e)),
            }
        }
        (sent, ChunkOutcome::Complete)
    }

    /// One `sendmmsg` of up to BATCH messages from the front of `chunk`. Returns the datagrams
    /// sent (at least one message's worth), or the error of the first message.
    fn send_messages(&self, chunk: &[(&[u8], SocketAddr)], gso: bool) -> io::Result<usize> {
        let mut addrs: [MaybeUninit<SockAddr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
        let mut iovs: [MaybeUninit<libc::iovec>; GSO_CHUNK] = [const { MaybeUninit::uninit() }; GSO_CHUNK];
        // Room for one cmsghdr carrying a u16, 8-byte aligned as cmsghdr requires.
        let mut controls = [[0u64; 4]; BATCH];
        // SAFETY: all-zero is a valid mmsghdr.
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        let mut per_msg = [0usize; BATCH];
        let (mut n, mut i) = (0, 0);
        while i < chunk.len().min(GSO_CHUNK) && n < BATCH {
            let (data, dst) = chunk[i];
            let first = i;
            let mut total = data.len();
            i += 1;
            if gso {
                while i < chunk.len().min(GSO_CHUNK) && i - first < GSO_MAX_SEGMENTS {
                    let (next, next_dst) = chunk[i];
                    if next_dst != dst
                        || next.is_empty()
                        || next.len() > data.len()
                        || total + next.len() > GSO_MAX_BYTES
                    {
                        break;
                    }
                    total += next.len();
                    i += 1;
                    if next.len() < data.len() {
                        break;
                    }
                }
            }
            for (k, (d, _)) in chunk[first..i].iter().enumerate() {
                iovs[first + k].write(libc::iovec { iov_base: d.as_ptr() as *mut libc::c_void, iov_len: d.len() });
            }
            let a = addrs[n].write(self.to_wire(dst));
            let h = &mut hdrs[n].msg_hdr;
            h.msg_name = a.as_ptr() as *mut libc::c_void;
            h.msg_namelen = a.len();
            h.msg_iov = iovs[first].as_mut_ptr();
            h.msg_iovlen = i - first;
            if i - first > 1 {
                set_segment_size(h, &mut controls[n], data.len() as u16);
            }
            per_msg[n] = i - first;
            n += 1;
        }
        // SAFETY: the first `n` headers point at initialised addresses, iovecs over buffers
        // borrowed from `chunk` (only read by the kernel) and control buffers; all outlive the call.
        let rc = unsafe { libc::sendmmsg(self.socket.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
        // SAFETY: exactly the first `n` address slots were initialised above.
        for a in &mut addrs[..n] {
            unsafe { a.assume_init_drop() };
        }
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(per_msg[..rc as usize].iter().sum())
    }

    /// Datagrams the kernel dropped because the receive buffer was full, as of the last datagram
    /// received after such a drop (the kernel reports the count with the next one it queues).
    pub fn receive_drops(&self) -> u64 {
        self.receive_drops.load(Ordering::Relaxed)
    }

    /// Asks the kernel to hand over runs of datagrams from one sender in one buffer (UDP GRO,
    /// Linux 5.0+); [`RecvMeta::segment`] then says how to cut them. Receive buffers must be
    /// 64 KiB. False if the kernel does not offer it.
    pub fn enable_gro(&self) -> bool {
        set_opt(self.socket.as_raw_fd(), libc::SOL_UDP, libc::UDP_GRO, 1).is_ok()
    }

    /// Marks outgoing packets (SO_MARK, `fwmark` in `wg`), so policy routing can keep the
    /// tunnel's own traffic out of the tunnel. 0 clears it.
    pub fn set_mark(&self, mark: u32) -> io::Result<()> {
        set_int_opt(self.socket.as_raw_fd(), libc::SO_MARK, mark as libc::c_int)
    }

    /// Sends one datagram.
    pub fn send_to(&self, data: &[u8], dst: SocketAddr) -> io::Result<usize> {
        self.socket.send_to(data, &self.to_wire(dst))
    }
}

/// The path MTU the kernel knows towards `dst`: the route's MTU, lowered by any ICMP
/// fragmentation-needed / packet-too-big it has received for that destination. Read as
/// `IP_MTU`/`IPV6_MTU` from a socket connected to `dst` (nothing is sent), carrying `mark` so
/// that policy routing picks the route the tunnel's own packets take. One-off: a daemon reading
/// many peers' paths keeps a [`PathMtuProbe`].
pub fn path_mtu(dst: SocketAddr, mark: u32) -> io::Result<u32> {
    PathMtuProbe::new(mark).read(dst)
}

/// Reads path MTUs (see [`path_mtu`]) through one UDP socket per address family, connected
/// afresh to each destination and disconnected after, instead of a socket per read: a node with
/// a thousand peers, read every two seconds, would otherwise open and close 500 sockets a second.
/// Between reads its sockets hold no port: they never send and nothing reaches them.
#[derive(Debug, Default)]
pub struct PathMtuProbe {
    mark: u32,
    v4: Option<Socket>,
    v6: Option<Socket>,
}

impl PathMtuProbe {
    /// A probe whose sockets carry `mark` (0: none); they are opened on first use.
    pub fn new(mark: u32) -> PathMtuProbe {
        PathMtuProbe { mark, v4: None, v6: None }
    }

    /// The mark the probe's sockets carry.
    pub fn mark(&self) -> u32 {
        self.mark
    }

    /// The path MTU towards `dst`, as [`path_mtu`] reads it.
    pub fn read(&mut self, dst: SocketAddr) -> io::Result<u32> {
        let mark = self.mark;
        let (slot, domain, level, opt) = if dst.is_ipv4() {
            (&mut self.v4, Domain::IPV4, libc::IPPROTO_IP, libc::IP_MTU)
        } else {
            (&mut self.v6, Domain::IPV6, libc::IPPROTO_IPV6, libc::IPV6_MTU)
        };
        let s = match slot.take() {
            Some(s) => s,
            None => {
                let s = Socket::new(domain, Type::DGRAM.cloexec(), Some(Protocol::UDP))?;
                if mark != 0 {
                    set_int_opt(s.as_raw_fd(), libc::SO_MARK, mark as libc::c_int)?;
                }
                s
            }
        };
        let mtu = read_path_mtu(&s, dst, level, opt);
        // Connecting also binds the socket to an ephemeral port and pins the source address it
        // chose; disconnecting drops both (and the route). Pinned, that source would steer every
        // later lookup (policy rules `from`), and once gone from the node fail every later read;
        // bound, the socket could receive. A socket that cannot be disconnected is not kept.
        if disconnect(&s).is_ok() {
            *slot = Some(s);
        }
        mtu
    }
}

/// Connects `s` to `dst` (a route lookup; nothing is sent) and reads the route's MTU as option
/// `level`/`opt`. A failed connect ends the read: no other route's MTU is read as `dst`'s.
fn read_path_mtu(s: &Socket, dst: SocketAddr, level: libc::c_int, opt: libc::c_int) -> io::Result<u32> {
    s.connect(&SockAddr::from(dst))?;
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into a live c_int.
    let rc = unsafe { libc::getsockopt(s.as_raw_fd(), level, opt, (&mut v as *mut libc::c_int).cast(), &mut len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    u32::try_from(v).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("path MTU {v}")))
}

/// Dissolves a UDP socket's association (`connect` to `AF_UNSPEC`): no destination, route or
/// source address, and its autobound port released, so nothing can reach it.
fn disconnect(s: &Socket) -> io::Result<()> {
    let unspec = libc::sockaddr { sa_family: libc::AF_UNSPEC as libc::sa_family_t, sa_data: [0; 14] };
    // SAFETY: connect reads `len` bytes from a live sockaddr of that size.
    let rc = unsafe { libc::connect(s.as_raw_fd(), &unspec, std::mem::size_of::<libc::sockaddr>() as libc::socklen_t) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// How [`UdpSocket::send_chunk`] ended.
enum ChunkOutcome {
    Complete,
    /// The socket buffer is full: the rest is dropped (the protocols above recover).
    Blocked,
    Failed(io::Error),
}

/// Whether a GSO send failed for reasons a plain send would not share: the device cannot do it
/// (EIO), or the run is too big for the kernel or the path (EINVAL, EMSGSIZE).
fn is_gso_refusal(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EIO | libc::EINVAL | libc::EMSGSIZE))
}

/// The running drop count after the kernel reports `reported`, its own u32 count, which wraps:
/// `seen` moved forward by the distance from its low 32 bits. A report behind `seen` (older, from
/// another thread's receive) leaves it as it is.
fn widen_drop_count(seen: u64, reported: u32) -> u64 {
    match reported.wrapping_sub(seen as u32) as i32 {
        ahead @ 1.. => seen + ahead as u64,
        _ => seen,
    }
}

/// From a receive's control messages: the datagram size of a UDP GRO run, and the socket's
/// count of datagrams dropped for a full buffer (SO_RXQ_OVFL).
fn received_controls(h: &libc::msghdr) -> (Option<usize>, Option<u32>) {
    let (mut segment, mut drops) = (None, None);
    // SAFETY: `msg_control` points at a live buffer of at least `msg_controllen` bytes (the
    // kernel only lowers it). CMSG_FIRSTHDR/CMSG_NXTHDR return a header lying wholly inside those
    // bytes, or null; a header's data is read only where `cmsg_data` has checked it is there.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == libc::UDP_GRO {
                let size = cmsg_data::<libc::c_int>(h, c);
                segment = size.and_then(|s| usize::try_from(s).ok()).filter(|&s| s > 0);
            } else if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SO_RXQ_OVFL {
                drops = cmsg_data::<u32>(h, c);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    (segment, drops)
}

/// The data of control message `c` read as a `T`, if the message is long enough to hold one and
/// that data lies inside the `msg_controllen` bytes of `h`'s control buffer. A message cut short
/// (MSG_CTRUNC) or shorter than its type's data has none: reading it anyway would take bytes of
/// the next message, or past the end of what the kernel wrote.
///
/// # Safety
/// `c` is a header inside `h`'s control buffer, as CMSG_FIRSTHDR/CMSG_NXTHDR return; every bit
/// pattern is a valid `T` (an integer).
unsafe fn cmsg_data<T: Copy>(h: &libc::msghdr, c: *const libc::cmsghdr) -> Option<T> {
    // SAFETY: CMSG_LEN is a pure size computation.
    let need = unsafe { libc::CMSG_LEN(std::mem::size_of::<T>() as u32) } as usize;
    let offset = c as usize - h.msg_control as usize;
    // SAFETY: `c` is a whole header inside the buffer (the caller's promise).
    let len = unsafe { (*c).cmsg_len };
    if len < need || offset + need > h.msg_controllen {
        return None;
    }
    // SAFETY: checked above: `size_of::<T>()` bytes of data follow the header inside the buffer;
    // read unaligned, as nothing aligns them for `T`.
    Some(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<T>()) })
}

/// Attaches a `UDP_SEGMENT` control message (the GSO segment size) to `h`, in `control`.
fn set_segment_size(h: &mut libc::msghdr, control: &mut [u64; 4], size: u16) {
    h.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    h.msg_controllen = unsafe { libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) } as usize;
    // SAFETY: msg_control points at 32 zeroed, aligned bytes, more than CMSG_SPACE(2) = 24, so
    // CMSG_FIRSTHDR is non-null and the header and its 2 data bytes lie inside the buffer.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(h);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = libc::UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), size);
    }
}

/// `::ffff:a.b.c.d` back to `a.b.c.d`, so a peer's endpoint reads as the family it really is.
fn unmap(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        v4 => v4,
    }
}

fn set_int_opt(fd: RawFd, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    set_opt(fd, libc::SOL_SOCKET, opt, value)
}

fn set_opt(fd: RawFd, level: libc::c_int, opt: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_over_loopback() {
        let a = UdpSocket::bind(0).unwrap();
        let b = UdpSocket::bind(0).unwrap();
        let b_addr = SocketAddr::from(([127, 0, 0, 1], b.local_port().unwrap()));
        let payloads: Vec<Vec<u8>> = (0..100u8).map(|i| vec![i; 10 + i as usize]).collect();
        let msgs: Vec<(&[u8], SocketAddr)> = payloads.iter().map(|p| (p.as_slice(), b_addr)).collect();
        assert_eq!(a.send_batch(msgs.iter().copied()).unwrap(), 100);
        let mut bufs = vec![vec![0u8; 2048]; BATCH];
        let mut meta = [RecvMeta::default(); BATCH];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 100 && std::time::Instant::now() < deadline {
            match b.recv_batch(&mut bufs, &mut meta) {
                Ok(n) => {
                    for i in 0..n {
                        assert_eq!(meta[i].src, SocketAddr::from(([127, 0, 0, 1], a.local_port().unwrap())));
                        got.push(bufs[i][..meta[i].len].to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, payloads, "every datagram, in order, with an IPv4 (unmapped) source");
    }

    /// Drains `sock` until `want` datagrams arrived (or 5 s passed).
    fn receive(sock: &UdpSocket, want: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut bufs = vec![vec![0u8; 65_536]; BATCH];
        let mut meta = [RecvMeta::default(); BATCH];
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < want && std::time::Instant::now() < deadline {
            match sock.recv_batch(&mut bufs, &mut meta) {
                Ok(n) => got.extend((0..n).map(|i| (bufs[i][..meta[i].len].to_vec(), meta[i].src))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[test]
    fn gso_runs_arrive_as_the_datagrams_they_were() {
        let a = UdpSocket::bind(0).unwrap();
        assert!(a.gso_enabled(), "this kernel has UDP GSO (4.18+)");
        let (b, c) = (UdpSocket::bind(0).unwrap(), UdpSocket::bind(0).unwrap());
        let b_addr = SocketAddr::from(([127, 0, 0, 1], b.local_port().unwrap()));
        let c_addr = SocketAddr::from(([127, 0, 0, 1], c.local_port().unwrap()));
        // Runs of equal sizes with a shorter tail, runs broken by another destination, 300
        // datagrams (more than one sendmmsg), and one alone.
        let mut msgs: Vec<(Vec<u8>, SocketAddr)> = Vec::new();
        for i in 0..300u32 {
            let size = match i % 50 {
                49 => 333,
                _ => 1452,
            };
            let dst = if i % 97 == 0 { c_addr } else { b_addr };
            let mut d = vec![(i % 251) as u8; size];
            d[..4].copy_from_slice(&i.to_be_bytes());
            msgs.push((d, dst));
        }
        let sent = a.send_batch(msgs.iter().map(|(d, a)| (d.as_slice(), *a))).unwrap();
        assert_eq!(sent, 300);
        let want_b: Vec<Vec<u8>> = msgs.iter().filter(|m| m.1 == b_addr).map(|m| m.0.clone()).collect();
        let want_c: Vec<Vec<u8>> = msgs.iter().filter(|m| m.1 == c_addr).map(|m| m.0.clone()).collect();
        let got_b: Vec<Vec<u8>> = receive(&b, want_b.len()).into_iter().map(|g| g.0).collect();
        let got_c: Vec<Vec<u8>> = receive(&c, want_c.len()).into_iter().map(|g| g.0).collect();
        assert_eq!(got_b, want_b, "each datagram whole, in order, at its own size");
        assert_eq!(got_c, want_c);
    }

    #[test]
    fn gro_receive_cuts_back_into_the_datagrams_sent() {
        let a = UdpSocket::bind(0).unwrap();
        let b = UdpSocket::bind(0).unwrap();
        assert!(b.enable_gro(), "this kernel has UDP GRO (5.0+)");
        let b_addr = SocketAddr::from(([127, 0, 0, 1], b.local_port().unwrap()));
        let msgs: Vec<Vec<u8>> = (0..200u32)
            .map(|i| {
                let mut d = vec![(i % 251) as u8; if i % 40 == 39 { 100 } else { 1200 }];
                d[..4].copy_from_slice(&i.to_be_bytes());
                d
            })
            .collect();
        assert_eq!(a.send_batch(msgs.iter().map(|d| (d.as_slice(), b_addr))).unwrap(), 200);
        let mut bufs = vec![vec![0u8; 65_536]; BATCH];
        let mut meta = [RecvMeta::default(); BATCH];
        let (mut got, mut coalesced) = (Vec::new(), 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 200 && std::time::Instant::now() < deadline {
            match b.recv_batch(&mut bufs, &mut meta) {
                Ok(n) => {
                    for i in 0..n {
                        coalesced += usize::from(meta[i].segment < meta[i].len);
                        got.extend(meta[i].datagrams().map(|r| bufs[i][r].to_vec()));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, msgs, "every datagram, in order, at its size");
        // Over loopback a GSO send reaches a GRO socket whole.
        assert!(coalesced > 0, "some receives held several datagrams");
    }

    #[test]
    fn datagrams_dropped_for_a_full_buffer_are_counted() {
        let a = UdpSocket::bind(0).unwrap();
        let b = UdpSocket::bind(0).unwrap();
        // A receive buffer of a few datagrams (the kernel's floor), then a burst far beyond it.
        set_int_opt(b.raw_fd(), libc::SO_RCVBUFFORCE, 4096).unwrap();
        let b_addr = SocketAddr::from(([127, 0, 0, 1], b.local_port().unwrap()));
        let payload = [7u8; 1000];
        for _ in 0..20 {
            let _ = a.send_batch(std::iter::repeat_n((&payload[..], b_addr), 100));
        }
        // Loopback sends are synchronous: everything is queued or dropped by now.
        let mut bufs = vec![vec![0u8; 65_536]; BATCH];
        let mut meta = [RecvMeta::default(); BATCH];
        let mut got = 0;
        while let Ok(n) = b.recv_batch(&mut bufs, &mut meta) {
            got += meta[..n].iter().map(|m| m.datagrams().count()).sum::<usize>();
        }
        assert!(got < 2000, "some of the 2000 datagrams were dropped ({got} arrived)");
        assert_eq!(b.receive_drops(), 0, "no datagram after the drops has told us yet");
        // The next datagram queued carries the count.
        a.send_to(&payload, b_addr).unwrap();
        assert_eq!(receive(&b, 1).len(), 1);
        assert_eq!(b.receive_drops(), 2000 - got as u64, "every dropped datagram counted");
    }

    /// A control buffer of `messages` (level, type, cmsg_len, data) laid out as the kernel lays
    /// them out, each header followed by 4 bytes of data and padded to 8 bytes.
    fn control_buffer(messages: &[(libc::c_int, libc::c_int, usize, u32)]) -> [u64; 8] {
        let mut bytes = [0u8; 64];
        let mut at = 0;
        for &(level, kind, len, data) in messages {
            bytes[at..at + 8].copy_from_slice(&len.to_ne_bytes());
            bytes[at + 8..at + 12].copy_from_slice(&level.to_ne_bytes());
            bytes[at + 12..at + 16].copy_from_slice(&kind.to_ne_bytes());
            bytes[at + 16..at + 20].copy_from_slice(&data.to_ne_bytes());
            at += (len + 7) & !7;
        }
        std::array::from_fn(|i| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap()))
    }

    fn controls_of(buf: &mut [u64; 8], controllen: usize) -> (Option<usize>, Option<u32>) {
        // SAFETY: all-zero is a valid msghdr.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_control = buf.as_mut_ptr().cast();
        h.msg_controllen = controllen;
        received_controls(&h)
    }

    #[test]
    fn control_messages_read_only_the_data_they_hold() {
        // SAFETY: CMSG_LEN is a pure size computation.
        let len = |data: u32| unsafe { libc::CMSG_LEN(data) } as usize;
        let (gro, ovfl) = ((libc::SOL_UDP, libc::UDP_GRO), (libc::SOL_SOCKET, libc::SO_RXQ_OVFL));
        // Both, well formed.
        let mut buf = control_buffer(&[(gro.0, gro.1, len(4), 1400), (ovfl.0, ovfl.1, len(4), 7)]);
        assert_eq!(controls_of(&mut buf, 48), (Some(1400), Some(7)));
        // A GRO message without data: its "size" would be the next header's length field.
        let mut buf = control_buffer(&[(gro.0, gro.1, len(0), 0), (ovfl.0, ovfl.1, len(4), 7)]);
        assert_eq!(controls_of(&mut buf, 40), (None, Some(7)), "no segment size read from the next header");
        // A message cut short by the end of the control data (MSG_CTRUNC): its data lies past
        // what the kernel wrote.
        let mut buf = control_buffer(&[(gro.0, gro.1, len(4), 1400)]);
        assert_eq!(controls_of(&mut buf, 16), (None, None), "no data read past msg_controllen");
        let mut buf = control_buffer(&[(ovfl.0, ovfl.1, len(4), 7)]);
        assert_eq!(controls_of(&mut buf, 18), (None, None), "no data read past msg_controllen");
    }

    #[test]
    fn the_drop_count_goes_on_past_the_kernels_u32() {
        assert_eq!(widen_drop_count(0, 5), 5);
        assert_eq!(widen_drop_count(5, 5), 5, "a repeated report adds nothing");
        assert_eq!(widen_drop_count(u64::from(u32::MAX) - 1, u32::MAX), u64::from(u32::MAX));
        // The kernel's count wrapped from 2^32 - 2 to 3: five more drops.
        assert_eq!(widen_drop_count(u64::from(u32::MAX) - 1, 3), (1 << 32) + 3);
        // Far past the first wrap, the low 32 bits still lead.
        assert_eq!(widen_drop_count((7 << 32) + 10, 20), (7 << 32) + 20);
        assert_eq!(widen_drop_count((7 << 32) + u64::from(u32::MAX), 0), 8 << 32);
        // An older report (another thread's receive, read before ours) does not move it back,
        // nor does one that is older across the wrap.
        assert_eq!(widen_drop_count(100, 90), 100);
        assert_eq!(widen_drop_count((1 << 32) + 3, u32::MAX - 1), (1 << 32) + 3);
    }

    #[test]
    fn path_mtu_reads_the_route_mtu() {
        // Loopback's MTU (65536, capped at IPv4's largest datagram) is what a socket connected to
        // 127.0.0.1 reports.
        let lo = std::fs::read_to_string("/sys/class/net/lo/mtu").unwrap().trim().parse::<u32>().unwrap();
        assert_eq!(path_mtu(SocketAddr::from(([127, 0, 0, 1], 9)), 0).unwrap(), lo.min(65_535));
    }

    #[test]
    fn outer_packets_carry_dont_fragment() {
        // The end-to-end proof (a full-size pod packet fits the underlay exactly) is the MTU test
        // in tests/netns.rs; here, the socket option that makes a miscalculation an error.
        let a = UdpSocket::bind(0).unwrap();
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into a live c_int.
        let rc = unsafe {
            libc::getsockopt(
                a.raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        assert_eq!(rc, 0);
        assert_eq!(v, libc::IP_PMTUDISC_DO, "DF on every outer IPv4 packet");
    }
}
