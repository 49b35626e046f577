//! The `stead` command line: `up` runs a node ([`up`]); client commands talk
//! to a node over gRPC ([`client`]: TLS for `https://` addresses, the admin
//! token on admin calls when given); `build` turns a guest crate into a
//! component ([`build`]); `bench` measures a node ([`bench`]).
//!
//! The binary's edge: errors are `anyhow` here and become one line on stderr
//! and exit code 1 (2 for usage errors, from clap). Flags take their
//! defaults from `stead_types::config`'s constants, so they cannot drift
//! from the library's.

mod bench;
mod build;
mod client;
mod cluster;
mod parse;
mod up;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use bench::BenchArgs;
use up::UpArgs;

#[derive(Parser)]
#[command(
    name = "stead",
    version,
    about = "Stateful entities as WebAssembly components, run as if they were stateless"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// gRPC address of the node, for client commands.
    #[arg(
        long,
        global = true,
        env = "STEAD_ADDR",
        default_value = "http://127.0.0.1:7400"
    )]
    pub(crate) addr: String,
    /// File holding the admin token, sent on admin calls (deploy, types,
    /// info); `STEAD_ADMIN_TOKEN` holds the token itself (the file wins).
    /// For `up`: the same as --admin-token-file.
    #[arg(
        long,
        global = true,
        env = "STEAD_ADMIN_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub(crate) token_file: Option<PathBuf>,
    /// PEM certificate of a private CA to trust for an `https://` address
    /// (default: the system's roots).
    #[arg(long, global = true, env = "STEAD_CA_CERT", value_name = "FILE")]
    pub(crate) ca_cert: Option<PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Run a node on embedded defaults (Ctrl-C or SIGTERM stops it cleanly).
    Up(Box<UpArgs>),
    /// Deploy a component (.wasm) to the node.
    Deploy {
        /// The component file, e.g. target/guests/account.wasm.
        file: PathBuf,
    },
    /// Send a JSON command to an entity.
    Send {
        /// Entity type, e.g. account.
        #[arg(value_name = "TYPE")]
        entity_type: String,
        /// Entity id, e.g. acc-1.
        #[arg(value_name = "ID")]
        entity_id: String,
        /// The command, e.g. '{"deposit":{"amount":100}}'.
        #[arg(value_name = "JSON")]
        command: String,
        /// Command id (idempotency key): a retry with the same id returns the
        /// original reply and persists nothing.
        #[arg(long = "id", value_name = "CMD_ID")]
        command_id: Option<String>,
    },
    /// Show an entity's view.
    Get {
        #[arg(value_name = "TYPE")]
        entity_type: String,
        #[arg(value_name = "ID")]
        entity_id: String,
    },
    /// List an entity's persisted events.
    Events {
        #[arg(value_name = "TYPE")]
        entity_type: String,
        #[arg(value_name = "ID")]
        entity_id: String,
        /// First sequence number to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
    /// Follow every event of an entity type: history from the cursor (the
    /// start without one), then new events as they commit. On Ctrl-C, or
    /// after `--count` events, prints the cursor to resume from (stderr).
    Subscribe {
        #[arg(value_name = "TYPE")]
        entity_type: String,
        /// Resume after this cursor (`v1.shard:position,...`).
        #[arg(long)]
        cursor: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
    /// List the deployed entity types.
    Types,
    /// Show the node's version, data directory, shards and load.
    Info,
    /// A local cluster, and the state of a cluster.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Measure a node: throughput, latency, memory, recovery (see BENCHMARKS.md).
    Bench(BenchArgs),
    /// Build a guest crate into a validated component.
    Build {
        /// The guest crate (or workspace of guest crates). Default: `.`.
        path: Option<PathBuf>,
        /// Where to write `<name>.wasm`. Default: `<path>/target/stead`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Cargo target directory of the wasm build. Default:
        /// `<path>/target/stead-wasm`.
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum ClusterCommand {
    /// Run a local cluster: a PostgreSQL of its own under --data-dir and N
    /// nodes (node-i from 0: gRPC 7400+i, HTTP 7480+i) until Ctrl-C.
    Up(cluster::ClusterUpArgs),
    /// Members, their states and each node's shards, as the node at --addr
    /// sees them.
    Status,
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stead: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Build {
        path,
        out,
        target_dir,
    } = &cli.command
    {
        return build::build_command(path.clone(), out.clone(), target_dir.clone(), cli.json);
    }
    if let Command::Up(args) = cli.command {
        return up::up(*args, cli.token_file);
    }
    if let Command::Cluster(ClusterCommand::Up(args)) = &cli.command {
        return cluster::cluster_up(args);
    }
    if let Command::Bench(args) = cli.command {
        return bench::bench(args, &cli.addr, cli.json);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(client::client(cli))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("stead").chain(args.iter().copied()))
    }

    #[test]
    fn a_zero_count_or_duration_is_refused_naming_its_flag() {
        for flag in [
            "--shards",
            "--workers",
            "--queue-depth",
            "--call-deadline-ms",
            "--memory-limit-mib",
            "--idle-timeout-secs",
            "--max-command-bytes",
            "--request-timeout-ms",
            "--max-activations-per-batch",
        ] {
            let err = match parse(&["up", flag, "0"]) {
                Ok(_) => panic!("{flag} 0 was accepted"),
                Err(e) => e,
            };
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag}"
            );
            let text = err.to_string();
            assert!(
                text.contains(flag) && text.contains("must be at least 1"),
                "{flag}: {text}"
            );
        }
    }

    #[test]
    fn a_duration_or_limit_that_could_overflow_is_refused() {
        let refused = |flag: &str, value: &str, max: &str| {
            let err = parse(&["up", flag, value]).err();
            assert!(
                err.is_some_and(|e| e.to_string().contains(&format!("must be at most {max}"))),
                "{flag} {value}"
            );
            assert!(parse(&["up", flag, max]).is_ok(), "{flag} {max}");
        };
        refused("--memory-limit-mib", "1048577", "1048576");
        refused("--memory-limit-mib", "18446744073709551615", "1048576");
        refused("--request-timeout-ms", "18446744073709551615", "86400000");
        refused("--call-deadline-ms", "3600001", "3600000");
        refused("--idle-timeout-secs", "18446744073709551615", "31536000");
    }

    #[test]
    fn the_dedup_horizon_takes_units_and_refuses_zero_and_nonsense() {
        assert_eq!(
            parse::horizon(up::DEFAULT_DEDUP_HORIZON_TEXT),
            Ok(stead_types::config::DEFAULT_DEDUP_HORIZON)
        );
        assert_eq!(
            parse::horizon(up::DEFAULT_MAX_TIMER_DELAY_TEXT),
            Ok(stead_types::config::DEFAULT_MAX_TIMER_DELAY)
        );
        let horizon = |text: &str| parse(&["up", "--dedup-horizon", text]);
        for ok in ["24h", "90m", "3600", "3600s", "7d"] {
            assert!(horizon(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("0", "at least 1s"),
            ("0h", "at least 1s"),
            ("3w", "unknown unit"),
            ("h", "not a duration"),
            ("3651d", "at most 3650d"),
        ] {
            let text = horizon(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(text.contains(says), "{bad}: {text}");
        }
    }

    #[test]
    fn the_defaults_and_positive_values_parse() {
        assert!(parse(&["up"]).is_ok());
        assert!(parse(&["up", "--workers", "1", "--queue-depth", "1"]).is_ok());
        let engine = |workers| {
            parse(&[
                "bench",
                "engine",
                "--component",
                "a.wasm",
                "--workers",
                workers,
            ])
        };
        assert!(engine("2").is_ok());
        assert!(
            matches!(engine("0"), Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation)
        );
    }
}
