//! Giving memory back to the operating system after passivation.
//!
//! Freed entity memory goes back to the allocator, which keeps it for reuse:
//! after a burst of activations passivates, the process would stay at its
//! peak size. A worker that passivated many entities asks the allocator of
//! its thread to return free pages ([`release_free_memory`]). It works with
//! either allocator the host may run on: mimalloc (the `stead` binary's) and
//! glibc's malloc (an embedding program's default); each call is a no-op
//! for the one not in use.

/// Entities a worker passivates at once before it returns free memory (small
/// sweeps leave memory for the next activations to reuse).
pub(crate) const RELEASE_AFTER_PASSIVATIONS: usize = 1024;

/// Returns the calling thread's free allocator pages to the OS.
pub(crate) fn release_free_memory() {
    // SAFETY: both calls take no pointers and only walk the allocators' own
    // free lists; they are documented as callable from any thread at any
    // time.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        libc::malloc_trim(0);
    }
}
