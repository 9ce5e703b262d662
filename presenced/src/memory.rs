//! Keeping the resident size small on glibc: the daemon idles for hours between short bursts
//! (a parse, a batch of posts), and glibc keeps what a burst freed, one arena per thread.

/// Call once at start: at most two malloc arenas, so that memory freed on one thread is
/// reused by the next burst instead of staying parked in another arena; and a fixed mmap
/// threshold, so that the big short-lived buffers of a burst (a feed body, an encoded state)
/// are mapped and unmapped whole instead of fragmenting the heap (glibc's default raises the
/// threshold after the first such buffer is freed, and the next ones land in the heap).
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other
    // thread exists, and a failure (0) just leaves the default in place.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
    }
}

/// Call after a burst (a feed parsed, a batch stored): gives freed memory back to the system.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only returns free pages of the allocator's own heaps to the kernel;
    // it is thread-safe and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}
