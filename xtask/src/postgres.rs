//! PostgreSQL for the tests and benchmarks: installs Debian's server
//! packages when they are missing (as root), and starts one server that a
//! whole `cargo xtask test` run shares (its URL in `STEAD_TEST_POSTGRES`).

use std::process::Command;

use anyhow::{Result, bail};
use stead_postgres_testing::{Server, installed};

use crate::step;

/// Installs PostgreSQL's server binaries if they are missing.
pub(crate) fn ensure_installed() -> Result<()> {
    if installed() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "PostgreSQL's server (initdb, postgres) is not installed, and installing it needs root: apt-get install postgresql (or set STEAD_PG_BIN to its bin directory)"
        );
    }
    step(
        "installing PostgreSQL's server (Debian's postgresql package) for the shared-journal tests",
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let ok = apt(&[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "postgresql",
    ]) || (apt(&["update", "-q"])
        && apt(&[
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "postgresql",
        ]));
    if !ok || !installed() {
        bail!("PostgreSQL could not be installed: apt-get install postgresql");
    }
    Ok(())
}

/// Installs if needed and starts a server for this run (stopped on drop).
pub(crate) fn start() -> Result<Server> {
    start_with(&[])
}

/// The benchmarks' server: a fresh cluster zero-fills each new 16 MB WAL
/// segment, with an fsync, in the path of the commit that needs it, until
/// its WAL has grown to `max_wal_size` and segments are recycled; a server
/// that has run a while never does. Not zero-filling them measures that
/// steady state (A/B on fresh servers in BENCHMARKS.md: p99 35-49 ms with,
/// 7-13 ms without).
pub(crate) fn start_for_bench() -> Result<Server> {
    start_with(&["wal_init_zero=off"])
}

fn start_with(settings: &[&str]) -> Result<Server> {
    ensure_installed()?;
    step("starting a PostgreSQL server for the run");
    let server = Server::start_with(settings)?;
    println!(
        "    {} (data in {})",
        server.url(),
        server.data_dir().display()
    );
    Ok(server)
}
