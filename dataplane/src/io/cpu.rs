//! CPU affinity for worker threads: which CPUs the process may use, and pinning a thread to one,
//! so each worker keeps its caches and its queues' interrupts stay near it.

use std::io;

/// CPUs this process may run on (its affinity mask, as `sched_getaffinity` reports it; a cgroup
/// cpuset or `taskset` narrows it), ascending. Only the first `CPU_SETSIZE` (1024) are seen.
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: all-zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: sched_getaffinity writes at most `size_of::<cpu_set_t>()` bytes into a live set.
    let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CPU_ISSET only reads the bit of `cpu` in `set`; every cpu below CPU_SETSIZE has one.
    Ok((0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect())
}

/// Pins the calling thread to `cpu` (`sched_setaffinity` on the thread itself). Fails with
/// `InvalidInput` beyond `CPU_SETSIZE`, and as the kernel says (EINVAL) for a CPU this process
/// may not use.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("CPU {cpu} is beyond the {} an affinity mask holds", libc::CPU_SETSIZE),
        ));
    }
    // SAFETY: all-zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET only sets the bit of `cpu` in `set`; checked above to be within it.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity reads `size_of::<cpu_set_t>()` bytes from a live set; pid 0 is
    // the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("pinning this thread to CPU {cpu}: {e}")));
    }
    Ok(())
}
