//! The global allocator, and giving free memory back to the kernel when a shard goes idle.
//! glibc's malloc by default; jemalloc with the `jemalloc` cargo feature.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Gives the allocator's free memory back to the kernel: glibc `malloc_trim(0)` (every
/// arena's free pages, malloc_trim(3)), or with jemalloc the calling thread's cache flushed
/// and every arena's dirty pages purged (`thread.tcache.flush`, `arena.<MALLCTL_ARENAS_ALL>.purge`,
/// jemalloc(3)). A walk of the heap: never on a per-message path.
pub fn trim() {
    #[cfg(feature = "jemalloc")]
    for name in [&b"thread.tcache.flush\0"[..], b"arena.4096.purge\0"] {
        // SAFETY: both are void mallctls (no old or new value), names NUL-terminated;
        // 4096 is MALLCTL_ARENAS_ALL.
        unsafe {
            tikv_jemalloc_sys::mallctl(
                name.as_ptr().cast(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
            );
        }
    }
    #[cfg(not(feature = "jemalloc"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The periodic trim of a busy shard (every `--head-timeout`): [`trim`] with glibc, whose
/// arenas keep what cross-shard frees scatter; nothing with jemalloc, which returns dirty
/// pages by itself (`dirty_decay_ms`, 10 s).
pub fn trim_busy() {
    #[cfg(not(feature = "jemalloc"))]
    trim();
}
