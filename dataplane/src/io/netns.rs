//! Entering a network namespace (setns(2)), for the calling thread only.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Moves the calling thread into the network namespace at `path` (a namespace file such as
/// `/var/run/netns/NAME` or `/proc/PID/ns/net`). Needs CAP_SYS_ADMIN.
///
/// Only this thread changes namespace, for the rest of its life: call it on a dedicated thread,
/// and open sockets (netlink, UDP, TUN) after it, since a socket stays in the namespace it was
/// created in. Other threads of the process are unaffected.
pub fn enter(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: setns takes a descriptor and a flag, touches no memory of ours, and `file` keeps the
    // descriptor open across the call. CLONE_NEWNET makes the kernel refuse any other kind of
    // namespace file (EINVAL) rather than switch something else.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
