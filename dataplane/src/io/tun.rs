//! A layer-3 TUN device (`IFF_TUN | IFF_NO_PI`): one IP packet per read or write; with offloads
//! (`IFF_VNET_HDR` and TSO), each packet behind a `virtio_net_hdr` and up to 64 KiB long (see
//! [`crate::offload`]).
//!
//! A device may have several queues ([`Tun::create_queues`], `IFF_MULTI_QUEUE`): each is its own
//! descriptor, and the kernel hands each packet it routes into the device to one queue, chosen by
//! a hash of the packet's flow, so one flow always comes out of one queue and is never reordered.
//! The kernel also learns from writes: once a queue writes a packet of a flow (either direction;
//! the hash is symmetric), the flow's next packets go to that queue, for a few seconds after the
//! last such write. [`Tun::set_flow_steering`] replaces both with a keyed hash of the flow's
//! 5-tuple, so a flow stays on one queue whoever answers it.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_MULTI_QUEUE: libc::c_short = 0x0100;
/// Fail with EBUSY rather than attach if the device exists already.
const IFF_TUN_EXCL: libc::c_short = 0x8000u16 as libc::c_short;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;
/// `_IOR('T', 224, int)`: attach (or, with -1, detach) a queue-steering socket filter.
const TUNSETSTEERINGEBPF: libc::c_ulong = 0x8004_54e0;

/// What the kernel may hand a TUN device opened with [`Tun::create_with_offload`]. Ordered from
/// least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Offload {
    /// Plain packets (no `virtio_net_hdr`).
    None,
    /// A `virtio_net_hdr` in front of every packet, but the kernel granted no offload.
    HeaderOnly,
    /// A `virtio_net_hdr` in front of every packet, TCP super-packets (TSO) and checksums left open.
    Tso,
    /// As `Tso`, plus UDP super-packets (USO, Linux 6.2+).
    TsoUso,
}

impl Offload {
    /// The TUNSETOFFLOAD flags that ask for this.
    fn flags(self) -> libc::c_uint {
        let tso = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        match self {
            Offload::None | Offload::HeaderOnly => 0,
            Offload::Tso => tso,
            Offload::TsoUso => tso | TUN_F_USO4 | TUN_F_USO6,
        }
    }
}

/// How a queue is opened: every queue of a device must be opened alike.
#[derive(Debug, Clone, Copy)]
struct Mode {
    vnet_hdr: bool,
    multi_queue: bool,
    /// Create the device, never attach to an existing one.
    exclusive: bool,
}

#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// An open TUN device. Dropping it closes the file descriptor; the kernel deletes the interface
/// with it (it is not persistent).
#[derive(Debug)]
pub struct Tun {
    file: File,
    name: String,
    offload: Offload,
}

impl Tun {
    /// Creates (or attaches to) the TUN interface `name`. Needs CAP_NET_ADMIN.
    pub fn create(name: &str) -> io::Result<Tun> {
        Self::open(name, Mode { vnet_hdr: false, multi_queue: false, exclusive: false })
    }

    /// Creates the TUN interface `name` with a `virtio_net_hdr` on every packet and as many
    /// offloads as the kernel grants (TSO, then USO), falling back to plain packets if it grants
    /// none. [`Tun::offload`] says which; reads and writes then carry the header.
    pub fn create_with_offload(name: &str) -> io::Result<Tun> {
        let mut tun = Self::open(name, Mode { vnet_hdr: true, multi_queue: false, exclusive: false })?;
        tun.offload = tun.negotiate_offload();
        Ok(tun)
    }

    /// Creates the multi-queue TUN interface `name` and opens `queues` queues
    /// (at least 1; the kernel allows 256), one descriptor each, for one worker each. With
    /// `offload`, each queue is set up as [`Tun::create_with_offload`] does, and all report the
    /// least offload any queue was granted (the kernel's offload flags are the device's, so that
    /// is what the device then has); without, as [`Tun::create`].
    ///
    /// A device of that name that already exists is refused (EBUSY, `ResourceBusy`) and left
    /// untouched (queue 0 asks for `IFF_TUN_EXCL`): the kernel would let our queues join another
    /// process's multi-queue device, hand them part of its flows, and let our offload and
    /// steering settings replace its own; a single-queue open of a device in use gets EBUSY.
    ///
    /// An error names the queue that failed; the queues already opened are closed again (and the
    /// device goes with them unless someone else holds it open).
    pub fn create_queues(name: &str, queues: usize, offload: bool) -> io::Result<Vec<Tun>> {
        if queues == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("TUN {name}: 0 queues asked for")));
        }
        let mut tuns: Vec<Tun> = Vec::with_capacity(queues);
        for i in 0..queues {
            // Every queue after the first attaches to the device the first created (its name,
            // which a `%d` pattern resolved; same flags: the kernel refuses a queue whose
            // IFF_MULTI_QUEUE differs).
            let mode = Mode { vnet_hdr: offload, multi_queue: true, exclusive: i == 0 };
            let device = tuns.first().map_or(name, Tun::name);
            let mut tun = Self::open(device, mode).map_err(|e| {
                let why = if i == 0 && e.raw_os_error() == Some(libc::EBUSY) {
                    "a device of this name exists already".to_string()
                } else {
                    e.to_string()
                };
                io::Error::new(e.kind(), format!("TUN {name}: opening queue {i} of {queues}: {why}"))
            })?;
            if offload {
                tun.offload = tun.negotiate_offload();
            }
            tuns.push(tun);
        }
        let least = tuns.iter().map(Tun::offload).min().unwrap_or(Offload::None);
        if offload && tuns.iter().any(|t| t.offload != least) {
            // TUNSETOFFLOAD sets the device's features, whichever queue it goes through: leave
            // it at what every queue agreed to.
            tuns[0].set_offload(least.flags()).map_err(|e| {
                io::Error::new(e.kind(), format!("TUN {name}: setting offload {least:?} on queue 0: {e}"))
            })?;
        }
        for tun in &mut tuns {
            tun.offload = least;
        }
        Ok(tuns)
    }

    /// Asks for TSO and USO, then TSO alone; says what the kernel granted (the header was already
    /// negotiated at TUNSETIFF).
    fn negotiate_offload(&self) -> Offload {
        for offload in [Offload::TsoUso, Offload::Tso] {
            if self.set_offload(offload.flags()).is_ok() {
                return offload;
            }
        }
        // The header stays; it just never asks for anything.
        Offload::HeaderOnly
    }

    /// Which offloads are on; anything but [`Offload::None`] means a `virtio_net_hdr` in front of
    /// every packet read or written.
    pub fn offload(&self) -> Offload {
        self.offload
    }

    /// Makes the device pick each packet's queue by a keyed hash of its flow's addresses,
    /// protocol and ports ([`crate::io::steering`], key random) instead of learning flows from
    /// writes: every packet of a flow comes out of the same queue, whichever queue wrote its
    /// replies. Call it once, on any queue: the program is the device's. On a single-queue device
    /// it succeeds and changes nothing (the kernel asks for a queue only when there are several).
    ///
    /// Needs CAP_BPF (or CAP_SYS_ADMIN) besides CAP_NET_ADMIN; on an error (no permission, a
    /// kernel without eBPF or TUNSETSTEERINGEBPF, 4.16+) the device keeps the kernel's default.
    pub fn set_flow_steering(&self) -> io::Result<()> {
        self.set_flow_steering_keyed(crate::io::steering::random_key()?)
    }

    /// As [`Tun::set_flow_steering`] with a known key: a flow's packets then come out of queue
    /// `steering::flow_hash(key, packet) % queues`.
    pub fn set_flow_steering_keyed(&self, key: u32) -> io::Result<()> {
        let prog = crate::io::steering::load(key)?;
        let fd: libc::c_int = prog.as_raw_fd();
        // SAFETY: TUNSETSTEERINGEBPF reads an int (the program's descriptor) through the pointer,
        // which lives across the call; the driver takes its own reference to the program, so
        // `prog` closes when it goes out of scope.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETSTEERINGEBPF, &fd as *const libc::c_int) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(e.kind(), format!("TUN {}: attaching the steering program: {e}", self.name)));
        }
        Ok(())
    }

    fn set_offload(&self, flags: libc::c_uint) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value (an unsigned int of TUN_F_* flags).
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETOFFLOAD, flags as libc::c_ulong) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn open(name: &str, mode: Mode) -> io::Result<Tun> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("interface name {name:?} must be 1-15 characters without '/', spaces or NUL"),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open("/dev/net/tun")?;
        let flags = IFF_TUN
            | IFF_NO_PI
            | if mode.vnet_hdr { IFF_VNET_HDR } else { 0 }
            | if mode.multi_queue { IFF_MULTI_QUEUE } else { 0 }
            | if mode.exclusive { IFF_TUN_EXCL } else { 0 };
        let mut req = IfReqFlags { name: [0; libc::IFNAMSIZ], flags, _pad: [0; 22] };
        for (dst, src) in req.name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `IfReqFlags` has its layout (16-byte
        // name, then the flags of the union, padded to the union's 24 bytes), and lives across the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReqFlags) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let name = name_from_ifreq(&req.name)?;
        let offload = if mode.vnet_hdr { Offload::HeaderOnly } else { Offload::None };
        Ok(Tun { file, name, offload })
    }

    /// The interface name the kernel gave (same as requested unless it contained `%d`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads one packet; `WouldBlock` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Reads one packet scattered over several pieces (readv): the kernel fills each piece before
    /// the next, so a small packet lands whole in the first and only a larger one runs on.
    pub fn recv_vectored(&self, pieces: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&self.file).read_vectored(pieces)
    }

    /// Writes one packet.
    pub fn send(&self, packet: &[u8]) -> io::Result<usize> {
        (&self.file).write(packet)
    }

    /// Writes one packet gathered from several pieces (writev): with offloads, the header, the
    /// head of a merged super-packet and its followers' payloads, without copying them together.
    pub fn send_vectored(&self, pieces: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(pieces)
    }

    /// The raw descriptor, for poll(2).
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The interface name the kernel wrote back into an `ifreq`: its bytes up to the first NUL (all
/// 16 if there is none), as UTF-8 like the name asked for. Read byte by byte as chars, a
/// non-ASCII name would come back as another name, which later queues would then create.
fn name_from_ifreq(name: &[libc::c_char; libc::IFNAMSIZ]) -> io::Result<String> {
    let len = name.iter().position(|&c| c == 0).unwrap_or(libc::IFNAMSIZ);
    let bytes: Vec<u8> = name[..len].iter().map(|&c| c as u8).collect();
    String::from_utf8(bytes).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidData, format!("the kernel named the TUN device {:?}", e.as_bytes()))
    })
}

impl AsFd for Tun {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifreq_name(bytes: &[u8]) -> [libc::c_char; libc::IFNAMSIZ] {
        let mut name = [0; libc::IFNAMSIZ];
        for (dst, &src) in name.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        name
    }

    #[test]
    fn the_name_the_kernel_writes_back_reads_as_its_bytes() {
        assert_eq!(name_from_ifreq(&ifreq_name(b"vxwg0")).unwrap(), "vxwg0");
        // The kernel takes any bytes but '/', ':', NUL and whitespace: a name asked for in UTF-8
        // comes back in UTF-8, and is the same name (byte for byte) when a queue attaches by it.
        let name = name_from_ifreq(&ifreq_name("wg-é".as_bytes())).unwrap();
        assert_eq!(name, "wg-é");
        // 16 bytes with no NUL: all of them.
        assert_eq!(name_from_ifreq(&ifreq_name(b"abcdefghijklmnop")).unwrap(), "abcdefghijklmnop");
        // Not UTF-8: an error, not another name.
        assert_eq!(name_from_ifreq(&ifreq_name(b"wg\xff")).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
