//! The C allocator's heap.

/// Hands the heap's free memory back to the kernel (`malloc_trim(0)`).
///
/// glibc keeps freed memory in its arenas for reuse, and a thread that
/// allocates next may take a different arena: a read of changes that gave
/// up would otherwise stay resident while the full read that replaces it
/// fills other arenas, and the run's peak would hold both.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointers; it only walks the allocator's
    // own arenas under their locks, and 0 asks for no padding.
    unsafe {
        libc::malloc_trim(0);
    }
}
