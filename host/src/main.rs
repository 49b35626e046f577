//! The `stead` binary: see [`stead_host::cli`].

// The command path allocates many small, short-lived buffers (sled's node
// copies, guest lists); mimalloc is faster at that than glibc's malloc and
// hands memory back to the OS after passivation (see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    stead_host::cli::main()
}
