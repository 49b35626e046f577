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
    ensure_installed()?;
    step("starting a PostgreSQL server for the run");
    let server = Server::start()?;
    println!(
        "    {} (data in {})",
        server.url(),
        server.data_dir().display()
    );
    Ok(server)
}
