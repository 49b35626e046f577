//! `stead-cluster-chaos`: the long cluster loop behind `cargo xtask chaos
//! --cluster`.
//!
//! Usage: `stead-cluster-chaos --stead BIN --guests DIR [--rounds N] [--seed S]
//! [--nodes N] [--report FILE]`. Starts a PostgreSQL server and a cluster
//! of N `stead up --seeds` processes, keeps clients sending through every
//! node (each command retried with its idempotency key until acknowledged),
//! and each round does one fault to a random node: SIGKILL (restarted after
//! a moment), SIGSTOP past the lease ttl (then SIGCONT) or SIGTERM (a
//! graceful leave, then a restart); then waits for the cluster to settle.
//! At the end the journal is checked against every acknowledgement (no
//! command lost or applied twice, events contiguous), and the simulator's
//! checkers judge the recorded history (linearizable per account, every
//! acknowledgement durable). Exits non-zero on a failed check, printing the
//! seed (and the history file when the history is at fault).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use stead_postgres_testing as pg;
use stead_tests::cluster::{Load, LocalCluster, check_ledger};

struct Args {
    stead: PathBuf,
    guests: PathBuf,
    rounds: u32,
    seed: u64,
    nodes: usize,
    report: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        stead: PathBuf::new(),
        guests: PathBuf::new(),
        rounds: 10,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_secs()),
        nodes: 3,
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
            "--nodes" => args.nodes = number(value()?)?.clamp(3, 9) as usize,
            "--report" => args.report = Some(value()?.into()),
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
            eprintln!("stead-cluster-chaos: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!(
            "stead-cluster-chaos: FAILED: {e}\n  replay: cargo xtask chaos --cluster --seed {} --rounds {}",
            args.seed, args.rounds
        );
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let started = Instant::now();
    let server = pg::Server::start().map_err(|e| e.to_string())?;
    let db = server.database().map_err(|e| e.to_string())?;
    let mut cluster = LocalCluster::new(&args.stead, &db.url(), args.nodes, &[])?;
    cluster.start_all()?;
    cluster.wait_settled(Duration::from_secs(60))?;
    cluster
        .node(0)
        .ok_or("node 1 is not running")?
        .deploy(&args.guests)?;
    std::thread::sleep(Duration::from_secs(1));
    let entities: Vec<String> = (0..48).map(|i| format!("acc-{i}")).collect();
    let load = Load::start(cluster.http_addrs(None), &entities, 8);
    let mut rng = fastrand::Rng::with_seed(args.seed);
    println!(
        "cluster chaos: {} rounds on {} nodes, seed {}",
        args.rounds, args.nodes, args.seed
    );
    let mut faults: BTreeMap<&str, u32> = BTreeMap::new();
    let mut settles = Vec::new();
    for round in 1..=args.rounds {
        let running = cluster.running();
        let victim = running[rng.usize(..running.len())];
        let others = cluster.http_addrs(Some(victim));
        let fault = ["sigkill", "sigstop", "sigterm"][rng.usize(..3)];
        *faults.entry(fault).or_default() += 1;
        let hit = Instant::now();
        match fault {
            "sigkill" => {
                cluster.kill(victim);
                load.set_nodes(others);
                std::thread::sleep(Duration::from_millis(rng.u64(200..3000)));
                cluster.start(victim)?;
            }
            "sigstop" => {
                cluster.signal(victim, "-STOP")?;
                load.set_nodes(others);
                std::thread::sleep(Duration::from_millis(rng.u64(2500..4500)));
                cluster.signal(victim, "-CONT")?;
            }
            _ => {
                load.set_nodes(others);
                cluster.stop(victim)?;
                cluster.start(victim)?;
            }
        }
        load.set_nodes(cluster.http_addrs(None));
        let settled = cluster.wait_settled(Duration::from_secs(60))?;
        settles.push(hit.elapsed());
        println!(
            "  round {round:>3}: {fault} of {}, settled {:>5} ms after the fault ({} ms after the node was back)",
            cluster.node_id(victim),
            hit.elapsed().as_millis(),
            settled.as_millis()
        );
        std::thread::sleep(Duration::from_millis(rng.u64(200..1500)));
    }
    let report = load.finish();
    let reader = cluster
        .node(cluster.running()[0])
        .ok_or("no node running")?
        .http
        .clone();
    let checked = check_ledger(&reader, &entities, &report)?;
    let events = checked.events;
    let mut codes: BTreeMap<String, usize> = BTreeMap::new();
    for e in &report.errors {
        let code = e.split_whitespace().next().unwrap_or("?").to_owned();
        *codes.entry(code).or_default() += 1;
    }
    settles.sort();
    let p50 = settles.get(settles.len() / 2).copied().unwrap_or_default();
    let max = settles.last().copied().unwrap_or_default();
    println!(
        "cluster chaos: {} rounds ({faults:?}), {} commands acknowledged and checked in the journal ({checked}), errors answered {codes:?}, {} requests unanswered (retried elsewhere), slowest command {:?}, fault to settled p50 {p50:?} max {max:?}, {:.0} s",
        args.rounds,
        events,
        report.unreachable,
        report.slowest,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &args.report {
        let json = serde_json::json!({
            "rounds": args.rounds,
            "seed": args.seed,
            "nodes": args.nodes,
            "faults": faults,
            "acknowledged": events,
            "history_operations": checked.operations,
            "history_states_explored": checked.states_explored,
            "errors": codes,
            "unanswered": report.unreachable,
            "slowest_ms": report.slowest.as_millis() as u64,
            "settle_p50_ms": p50.as_millis() as u64,
            "settle_max_ms": max.as_millis() as u64,
            "seconds": started.elapsed().as_secs(),
        });
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        std::fs::write(path, json.to_string()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    let unexpected = report.unexpected_errors();
    if !unexpected.is_empty() {
        return Err(format!(
            "{} errors other than `unavailable`, the first: {:?}",
            unexpected.len(),
            unexpected.iter().take(3).collect::<Vec<_>>()
        ));
    }
    Ok(())
}
