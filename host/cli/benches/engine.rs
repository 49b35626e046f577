//! The engine's wasm overhead: the same `account` commands through the same
//! command path (shards, journal with group commit, dedup), once in the
//! built component and once compiled natively into the host. Run by
//! `cargo xtask bench`; prints one JSON array of figures as its last line.
//!
//! usage: cargo bench -p stead-cli --bench engine -- [--commands N] [--entities N] [--work-dir DIR] [--component FILE]

/// The `account` guest's logic, the very file its component is built from,
/// compiled natively (depending on the guest crate would share its
/// hash-less cdylib output file with the guests workspace).
#[path = "../../../guests/account/src/entity.rs"]
#[allow(dead_code, unreachable_pub)]
mod account;
#[path = "support/native.rs"]
mod native;

use std::path::PathBuf;
use std::sync::Arc;

use native::Native;
use stead_cli::bench::inprocess::drive;
use stead_cli::bench::{Figure, progress};
use stead_node::{Node, NodeConfig};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let commands: usize = arg(&args, "--commands").map_or(Ok(200_000), |v| v.parse())?;
    let entities: usize = arg(&args, "--entities").map_or(Ok(10_000), |v| v.parse())?;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let work = arg(&args, "--work-dir").map_or_else(|| root.join("target/bench"), PathBuf::from);
    let component = arg(&args, "--component")
        .map_or_else(|| root.join("target/guests/account.wasm"), PathBuf::from);
    std::fs::create_dir_all(&work)?;
    let bytes = std::fs::read(&component)?;

    let mut rates = Vec::new();
    let mut workers = 1;
    for native in [false, true] {
        let dir = tempfile::tempdir_in(&work)?;
        let mut config = NodeConfig::new(dir.path());
        config.shards.queue_depth = 32_768;
        workers = config.shards.workers;
        let node = Node::open(config)?;
        let ty = if native {
            node.deploy_native(Arc::new(Native::<account::Account>::new()))?
                .name
        } else {
            node.deploy(&bytes)?.name
        };
        let what = if native { "native" } else { "wasm" };
        progress(&format!(
            "engine ({what}): opening {entities} entities, then {commands} deposits"
        ));
        drive(&node, &ty, entities, |i| {
            (format!("e{i}"), r#"{"open":{"owner":"bench"}}"#)
        })?;
        let elapsed = drive(&node, &ty, commands, |i| {
            (format!("e{}", i % entities), r#"{"deposit":{"amount":1}}"#)
        })?;
        rates.push(commands as f64 / elapsed.as_secs_f64());
        node.shutdown();
    }
    let (wasm, native) = (rates[0], rates[1]);
    // CPU time per command: wall time per command times the busy workers.
    let overhead_us = (1.0 / wasm - 1.0 / native) * 1e6 * workers as f64;
    let figures = vec![
        Figure::new(
            "engine",
            &format!("wasm commands/s, {entities} entities"),
            wasm,
            "cmd/s",
        )
        .against("native build", native, "cmd/s"),
        Figure::new("engine", "wasm overhead per command", overhead_us, "µs")
            .target("< 5 µs", overhead_us < 5.0),
    ];
    for f in &figures {
        eprintln!("{}", f.line());
    }
    println!("{}", serde_json::to_string(&figures)?);
    Ok(())
}
