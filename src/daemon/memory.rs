//! Gives memory freed after a burst (the first inspection of every credential, a round of
//! probes, a batch of rotations) back to the system. glibc's allocator keeps freed pages
//! for reuse, so a daemon's resident memory would otherwise stay at its busiest moment's;
//! `malloc_trim` returns every whole free page of its heaps. Elsewhere: nothing.

/// Returns freed heap pages to the system (glibc), after a burst of work.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers; it only walks glibc's own heaps under their
    // locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
