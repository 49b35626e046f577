//! `stead-chaos`: the long crash loop behind `cargo xtask chaos`.
//!
//! Usage: `stead-chaos --stead BIN --guests DIR [--rounds N] [--fault sigkill|power-loss|both]
//! [--seed S] [--entities N] [--clients N] [--report FILE]`. Runs N rounds of
//! each chosen fault on a fresh temporary directory, prints every round, and
//! writes the totals as JSON to `--report`. Exits non-zero on the first
//! failed check, printing the seed that replays the run.

use std::path::PathBuf;
use std::time::Instant;

use stead_tests::chaos::{ChaosConfig, ChaosReport, Fault, run};

struct Args {
    stead: PathBuf,
    guests: PathBuf,
    rounds: u32,
    faults: Vec<Fault>,
    seed: u64,
    entities: usize,
    clients: usize,
    report: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        stead: PathBuf::new(),
        guests: PathBuf::new(),
        rounds: 10,
        faults: vec![Fault::SigKill, Fault::PowerLoss],
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
        entities: 1000,
        clients: 16,
        report: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--stead" => args.stead = value()?.into(),
            "--guests" => args.guests = value()?.into(),
            "--rounds" => {
                args.rounds = number(value()?)?
                    .try_into()
                    .map_err(|_| "too many rounds")?
            }
            "--seed" => args.seed = number(value()?)?,
            "--entities" => args.entities = number(value()?)? as usize,
            "--clients" => args.clients = number(value()?)? as usize,
            "--report" => args.report = Some(value()?.into()),
            "--fault" => {
                args.faults = match value()?.as_str() {
                    "sigkill" => vec![Fault::SigKill],
                    "power-loss" => vec![Fault::PowerLoss],
                    "both" => vec![Fault::SigKill, Fault::PowerLoss],
                    other => {
                        return Err(format!(
                            "unknown fault {other}: sigkill, power-loss or both"
                        ));
                    }
                }
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if args.stead.as_os_str().is_empty() || args.guests.as_os_str().is_empty() {
        return Err("--stead and --guests are required".into());
    }
    Ok(args)
}

fn main() {
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("stead-chaos: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut reports: Vec<ChaosReport> = Vec::new();
    for fault in &args.faults {
        if *fault == Fault::PowerLoss
            && let Err(why) = stead_tests::lazyfs::fuse_available()
        {
            eprintln!("stead-chaos: power-loss rounds skipped: {why}");
            continue;
        }
        let dir = match tempfile::tempdir() {
            Ok(dir) => dir,
            Err(e) => {
                eprintln!("stead-chaos: temporary directory: {e}");
                std::process::exit(1);
            }
        };
        let mut config = ChaosConfig::new(
            args.stead.clone(),
            args.guests.clone(),
            dir.path().to_owned(),
            *fault,
        );
        config.rounds = args.rounds;
        config.seed = args.seed;
        config.entities = args.entities;
        config.clients = args.clients;
        println!(
            "chaos: {} rounds of {fault}, seed {}, {} entities, {} clients",
            args.rounds, args.seed, args.entities, args.clients
        );
        let result = run(&config, &mut |r| {
            println!(
                "  {fault} round {:>3}: killed after {:>5} ms, {:>6} acked, {:>3} in doubt, {:>3} found persisted, {:>7} events verified, {:>4} retries ({:>4} past the window), {:>9} unsynced bytes lost, ready in {} ms",
                r.round,
                r.kill_after.as_millis(),
                r.acked,
                r.in_doubt,
                r.in_doubt_persisted,
                r.events_verified,
                r.retries_checked,
                r.retries_past_window,
                r.lost_unsynced_bytes,
                r.restart_to_ready.as_millis()
            );
        });
        match result {
            Ok(report) => {
                println!(
                    "chaos: {fault}: {} rounds, {} crashes survived, {} commands acknowledged, {} in doubt, {} events in the final check, {} retries answered as duplicates ({} past the node's window), history: {}, {:.0} s",
                    report.rounds,
                    report.crashes,
                    report.acked,
                    report.in_doubt,
                    report.events_verified_last,
                    report.retries_checked,
                    report.retries_past_window,
                    report.history,
                    report.elapsed.as_secs_f64()
                );
                reports.push(report);
            }
            Err(failure) => {
                eprintln!("stead-chaos: {failure}");
                std::process::exit(1);
            }
        }
    }
    if let Some(path) = &args.report {
        let runs: Vec<_> = reports
            .iter()
            .map(|r| {
                serde_json::json!({
                    "fault": r.fault.map(|f| f.to_string()),
                    "rounds": r.rounds,
                    "crashes": r.crashes,
                    "acked": r.acked,
                    "in_doubt": r.in_doubt,
                    "events_verified_final": r.events_verified_last,
                    "events_verified_total": r.events_verified_total,
                    "duplicate_retries": r.retries_checked,
                    "duplicate_retries_past_window": r.retries_past_window,
                    "history_operations": r.history.operations,
                    "history_states_explored": r.history.states_explored,
                    "seconds": r.elapsed.as_secs_f64(),
                })
            })
            .collect();
        let json = serde_json::json!({
            "seed": args.seed,
            "entities": args.entities,
            "clients": args.clients,
            "runs": runs,
            "lost_or_duplicated": 0,
            "seconds": started.elapsed().as_secs_f64(),
        });
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = std::fs::write(path, format!("{json:#}\n")) {
            eprintln!("stead-chaos: writing {}: {e}", path.display());
            std::process::exit(1);
        }
    }
}
