//! The `stead` binary: see [`stead_host::cli`].

fn main() -> std::process::ExitCode {
    stead_host::cli::main()
}
