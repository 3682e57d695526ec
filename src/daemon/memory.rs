//! Gives memory freed after a burst (the first inspection of every credential, a round of
//! probes, a batch of rotations) back to the system. glibc's allocator keeps freed pages
//! for reuse, so a daemon's resident memory would otherwise stay at its busiest moment's;
//! `malloc_trim` returns every whole free page of its heaps. Large buffers (a fleet's
//! `/metrics` exposition, which is encoded at every scrape beyond a few thousand
//! credentials) are mapped on their own from the start, so freeing one returns it at once.
//! Elsewhere: nothing.

/// Returns freed heap pages to the system (glibc), after a burst of work.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers; it only walks glibc's own heaps under their
    // locks and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Buffers from this size on are mapped on their own and unmapped when freed.
const MAP_FROM: i32 = 1 << 20;

/// Maps every buffer of [`MAP_FROM`] or more on its own (glibc), for the daemon's lifetime.
/// glibc's default threshold rises to the largest buffer freed so far (up to 32 MiB), after
/// which buffers of that size come from the heap and freed ones stay resident; a fixed
/// threshold keeps them mapped, so an exposition of 28 MB costs memory only while a scrape
/// is being answered.
pub fn map_large_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes no pointers; it sets a parameter of glibc's allocator under
    // its lock and is safe to call at any time.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MAP_FROM);
    }
}
