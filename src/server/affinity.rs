//! Pinning shard threads to CPUs (`--cpu-affinity auto`): shard `i` runs on the `i`-th CPU
//! this process may use, modulo their number.
//!
//! Source: sched_setaffinity(2), CPU_SET(3).

use std::io;

/// The CPUs this process may run on, in order (empty if they cannot be read).
pub(super) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a live cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        tracing::warn!(
            "sched_getaffinity: {}; shards are not pinned",
            io::Error::last_os_error()
        );
        return Vec::new();
    }
    // SAFETY: reading bits of an initialised set, below CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect()
}

/// Pins the calling thread (shard `me`) to `cpu`; a failure is logged and ignored.
pub(super) fn pin_to(me: usize, cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; `cpu` < CPU_SETSIZE (from allowed_cpus).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed.
    if unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) } != 0 {
        tracing::warn!(
            shard = me,
            cpu,
            "sched_setaffinity: {}; shard not pinned",
            io::Error::last_os_error()
        );
    }
}
