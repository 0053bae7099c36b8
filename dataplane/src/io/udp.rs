//! The WireGuard UDP socket: dual-stack, non-blocking, with batched `recvmmsg`/`sendmmsg`.

use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Most datagrams moved per syscall.
pub const BATCH: usize = 64;

/// Socket buffer size asked for: a burst of a few thousand full-size datagrams must not overflow.
const SOCKET_BUFFER: usize = 8 << 20;

/// One received datagram: its length in the caller's buffer and who sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvMeta {
    pub len: usize,
    pub src: SocketAddr,
}

impl Default for RecvMeta {
    fn default() -> Self {
        Self { len: 0, src: SocketAddr::from(([0, 0, 0, 0], 0)) }
    }
}

/// A bound UDP socket for WireGuard traffic.
#[derive(Debug)]
pub struct UdpSocket {
    socket: Socket,
    dual_stack: bool,
}

impl UdpSocket {
    /// Binds `[::]:port` accepting IPv4 too, or `0.0.0.0:port` where IPv6 is unavailable.
    /// Port 0 picks a free port.
    pub fn bind(port: u16) -> io::Result<Self> {
        let (socket, dual_stack) = match Self::bind_v6(port) {
            Ok(s) => (s, true),
            Err(_) => {
                let s = Socket::new(Domain::IPV4, Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP))?;
                s.bind(&SockAddr::from(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))))?;
                (s, false)
            }
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
        Ok(Self { socket, dual_stack })
    }

    fn bind_v6(port: u16) -> io::Result<Socket> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM.nonblocking().cloexec(), Some(Protocol::UDP))?;
        s.set_only_v6(false)?;
        s.bind(&SockAddr::from(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port))))?;
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
        for i in 0..n {
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
            meta[i] = RecvMeta { len: hdrs[i].msg_len as usize, src };
        }
        Ok(got)
    }

    /// Sends datagrams in batches of up to BATCH; returns how many were sent before the first
    /// error (the error is returned only if none was sent). Takes an iterator so callers can
    /// describe a batch without building a list: nothing is allocated.
    pub fn send_batch<'a>(&self, msgs: impl IntoIterator<Item = (&'a [u8], SocketAddr)>) -> io::Result<usize> {
        let mut msgs = msgs.into_iter().peekable();
        let mut sent = 0;
        while msgs.peek().is_some() {
            let mut addrs: [MaybeUninit<SockAddr>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
            let mut iovs: [MaybeUninit<libc::iovec>; BATCH] = [const { MaybeUninit::uninit() }; BATCH];
            // SAFETY: all-zero is a valid mmsghdr.
            let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
            let mut n = 0;
            for (data, dst) in msgs.by_ref().take(BATCH) {
                let a = addrs[n].write(self.to_wire(dst));
                hdrs[n].msg_hdr.msg_name = a.as_ptr() as *mut libc::c_void;
                hdrs[n].msg_hdr.msg_namelen = a.len();
                let iov =
                    iovs[n].write(libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() });
                hdrs[n].msg_hdr.msg_iov = iov;
                hdrs[n].msg_hdr.msg_iovlen = 1;
                n += 1;
            }
            // SAFETY: the first `n` headers point at initialised addresses and iovecs over live
            // buffers borrowed for 'a (only read by the kernel); all outlive the call.
            let rc = unsafe { libc::sendmmsg(self.socket.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0) };
            // SAFETY: exactly the first `n` address slots were initialised above.
            for a in &mut addrs[..n] {
                unsafe { a.assume_init_drop() };
            }
            if rc < 0 {
                let e = io::Error::last_os_error();
                if sent == 0 {
                    return Err(e);
                }
                return Ok(sent);
            }
            sent += rc as usize;
            if (rc as usize) < n {
                return Ok(sent);
            }
        }
        Ok(sent)
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
