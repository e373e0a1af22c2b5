//! Giving freed heap back to the kernel.
//!
//! glibc keeps what a program frees for its next allocations, returning
//! only a free top of its heap, and only past a threshold that grows with
//! the blocks it has seen. After reading a long release list PID 1 would
//! then hold megabytes it no longer uses for the hours until the next
//! check, so the updater asks glibc to let go once a check is over.

/// Returns the free pages of every glibc heap (arena) to the kernel. A
/// no-op with other C libraries, which have no such call.
pub fn trim_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer; it walks glibc's own heaps
    // under their locks and may be called from any thread.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}
