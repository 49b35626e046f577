//! The `stead` binary: see [`stead_cli::cli`].

// The command path allocates many small, short-lived buffers (sled's node
// copies, guest lists); mimalloc is faster at that than glibc's malloc and
// hands memory back to the OS after passivation (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    stead_cli::cli::main()
}

/// Opts this process out of transparent huge pages. With THP on (`always`
/// on many distributions), every thread's allocator pages and every touched
/// region are backed by 2 MiB pages: the benchmark's idle node measured
/// 141 MB RSS against 54 MB without, and freed memory went back to the OS
/// only in whole 2 MiB pages. Engine throughput and recovery measured the
/// same either way (BENCHMARKS.md). Set `STEAD_THP=1` to keep the system's
/// setting.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("STEAD_THP").is_none_or(|v| v != "1") {
        // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and
        // changes nothing but this process's paging policy.
        #[allow(unsafe_code)]
        let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}
