//! The deterministic simulator of a stead cluster.
//!
//! One seed builds, in one process and on one thread, 3 to 5 real nodes
//! (`Node`, `Cluster`, the gRPC services), a database host
//! ([`db::Database`], the shared journal's semantics) and clients
//! ([`client`]), all on turmoil's simulated network and clock. The seed
//! draws a fault schedule ([`faults`]): partitions (one-way too), crashes
//! and restarts, nodes frozen past their lease ttl, clock jumps and steps,
//! node-to-database outages, database latency and connection resets before
//! and after a commit. Then everything heals, and in the liveness phase
//! every command must complete.
//!
//! The seams the node runs on here are the production ones with other
//! implementations behind them: `stead_types::Clock` ([`clock::SimClock`]),
//! `stead_types::Spawner` ([`node::HostTasks`]), `stead_journal::AsyncJournal`
//! ([`db::DbJournal`]), `stead_cluster::forward::Dialer` and chitchat's
//! `Transport` ([`net`]), and tonic's server on [`net::incoming`]. There is
//! no `if simulated` in the node.
//!
//! Checked during and after every run ([`check`]): at most one node's
//! appends succeed under one (shard, epoch); epochs only grow; every
//! acknowledged event is in the journal at its seq-nr, with no gaps; one
//! idempotency key gives at most one event; each entity's history is
//! linearizable (`stead_history`); every command completes once healed,
//! and by the end every shard is held under a valid lease (settled). With
//! the `transfer` component, a client also runs sagas ([`saga`]): every
//! transfer started ends, starts once, no delivery takes effect twice, and
//! money is conserved.
//!
//! Determinism: turmoil orders hosts and messages from the seed; time is
//! simulated (tokio's paused clock, `turmoil::sim_elapsed` for the
//! clocks); OS randomness (std's `HashMap` keys, chitchat's and tokio's
//! generators) comes from the seed through the `stead-sim` binary's
//! `getrandom`; each seed runs on a fresh thread. A seed's trace
//! ([`trace::Trace`]) is the same byte for byte on every run.

pub mod check;
pub mod client;
pub mod clock;
pub mod db;
pub mod faults;
pub mod net;
pub mod node;
pub mod saga;
pub mod trace;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use stead_history::History;

use crate::clock::SimClock;
use crate::db::{Broken, Database, DbFaults};
use crate::faults::{Fault, Schedule};
use crate::trace::Trace;

/// What a run needs besides its seed.
#[derive(Clone)]
pub struct SimOptions {
    /// The `account` component (`target/guests/account.wasm`).
    pub component: Arc<Vec<u8>>,
    /// The `transfer` component: with it, a client runs sagas between
    /// accounts of its own and their invariants are checked ([`saga`]).
    pub saga: Option<Arc<Vec<u8>>>,
    /// Where compiled components are cached across seeds.
    pub compile_cache: PathBuf,
    pub broken: Broken,
    /// Keep the trace's lines in the report (for a replay).
    pub keep_trace: bool,
}

/// What one seed did and found.
#[derive(Debug, Clone, Serialize)]
pub struct SeedReport {
    pub seed: u64,
    pub nodes: usize,
    pub simulated_ms: u64,
    pub trace_hash: String,
    pub operations: usize,
    pub faults: BTreeMap<String, u64>,
    pub rare: BTreeMap<String, u64>,
    pub violations: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trace: Vec<String>,
}

/// Why a run could not be made (not a finding).
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("setting up the run: {0}")]
    Setup(String),
}

const SHARDS: u32 = 16;
const LEASE_TTL: Duration = Duration::from_secs(2);
/// Faults start once the cluster has formed.
const FAULTS_FROM: Duration = Duration::from_secs(4);
const HEAL_AT: Duration = Duration::from_secs(24);
/// Clients stop starting operations.
const STOP_AT: Duration = Duration::from_secs(30);
/// Every operation must have completed by then.
const GIVE_UP_AT: Duration = Duration::from_secs(45);

/// Compiles the component into the cache before any seed runs, so every
/// seed finds it there: a run that compiled would create more hash maps on
/// its thread first, and std's per-thread hash keys (hence chitchat's
/// iteration orders) would differ from a run that did not.
pub fn warm_cache(components: &[&[u8]], cache: &std::path::Path) -> Result<(), SimError> {
    let dir = tempfile::tempdir().map_err(|e| SimError::Setup(format!("temp dir: {e}")))?;
    let mut config = stead_node::NodeConfig::new(dir.path());
    config.journal = stead_node::JournalConfig::Memory;
    config.compile_cache = Some(cache.to_owned());
    config.shard_count = 1;
    config.shards.workers = 1;
    let node = stead_node::Node::open(config)
        .map_err(|e| SimError::Setup(format!("opening a node to compile the component: {e}")))?;
    for component in components {
        node.deploy(component)
            .map_err(|e| SimError::Setup(format!("compiling a component: {e}")))?;
    }
    node.shutdown();
    Ok(())
}

/// Runs one seed (on a thread of its own: see the binary's docs).
pub fn run_seed(seed: u64, options: &SimOptions) -> Result<SeedReport, SimError> {
    clock::set_virtual_now(Some(Duration::ZERO));
    let report = run(seed, options);
    clock::set_virtual_now(None);
    report
}

fn run(seed: u64, options: &SimOptions) -> Result<SeedReport, SimError> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let nodes: Vec<String> = (1..=rng.random_range(3..=5))
        .map(|i| format!("n{i}"))
        .collect();
    let accounts: Vec<String> = (1..=rng.random_range(6..=10))
        .map(|i| format!("a{i}"))
        .collect();
    let trace = Trace::default();
    let faults = DbFaults {
        latency: rng.random_range(0.0..0.2),
        max_latency: Duration::from_millis(rng.random_range(5..300)),
        reset_before: rng.random_range(0.0..0.03),
        reset_after: rng.random_range(0.0..0.03),
    };
    let db = Database::new(seed, LEASE_TTL, faults, options.broken, trace.clone());
    let schedule = Schedule::draw(&mut rng, &nodes, FAULTS_FROM, HEAL_AT, LEASE_TTL);
    let dirs = tempfile::tempdir().map_err(|e| SimError::Setup(format!("temp dir: {e}")))?;

    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(rng.random_range(2..20)))
        .simulation_duration(GIVE_UP_AT + Duration::from_secs(30))
        .build();
    {
        let db = db.clone();
        sim.host("db", move || {
            let db = db.clone();
            async move {
                db.serve().await?;
                Ok(())
            }
        });
    }
    let mut clocks = BTreeMap::new();
    let mailbox = Arc::new(net::Mailbox::default());
    let routing = Arc::new(Mutex::new(Vec::new()));
    for id in &nodes {
        let clock = SimClock::new(
            rng.random_range(-200..=200),
            rng.random_range(-2_000..=2_000),
        );
        clocks.insert(id.clone(), clock.clone());
        let spec = node::NodeSpec {
            id: id.clone(),
            data_dir: dirs.path().join(id),
            compile_cache: options.compile_cache.clone(),
            component: options.component.clone(),
            saga: options.saga.clone(),
            shard_count: SHARDS,
            clock,
            members: nodes.clone(),
            dedup_window: if options.broken == Broken::DedupForgetsKeys {
                0
            } else {
                64
            },
            mailbox: mailbox.clone(),
            routing: routing.clone(),
            told_ttl: if options.broken == Broken::LeaseNeverExpires {
                Duration::from_secs(365 * 24 * 3600)
            } else {
                LEASE_TTL
            },
        };
        sim.host(id.as_str(), move || node::run(spec.clone()));
    }
    let history = Arc::new(Mutex::new(History::default()));
    for c in 1..=rng.random_range(2..=4u64) {
        let spec = client::ClientSpec {
            id: c,
            seed: seed.wrapping_mul(31).wrapping_add(c),
            nodes: nodes.clone(),
            accounts: accounts.clone(),
            stop_at: STOP_AT,
            give_up_at: GIVE_UP_AT,
        };
        let (history, trace) = (history.clone(), trace.clone());
        sim.client(format!("c{c}"), client::run(spec, history, trace));
    }
    let saga_log = Arc::new(Mutex::new(saga::SagaLog::default()));
    if options.saga.is_some() {
        let spec = saga::SagaSpec {
            seed: seed.wrapping_mul(37).wrapping_add(1),
            nodes: nodes.clone(),
            stop_at: STOP_AT,
            give_up_at: GIVE_UP_AT,
        };
        let (log, trace) = (saga_log.clone(), trace.clone());
        sim.client("saga", saga::run(spec, log, trace));
    }

    let mut injected: BTreeMap<String, u64> = BTreeMap::new();
    let mut events = schedule.events.into_iter().peekable();
    let mut violations = Vec::new();
    let mut faults_on = false;
    loop {
        let now = sim.elapsed();
        clock::set_virtual_now(Some(now));
        if !faults_on && now >= FAULTS_FROM && now < HEAL_AT {
            db.set_faults(true);
            faults_on = true;
        }
        if faults_on && now >= HEAL_AT {
            db.set_faults(false);
            faults_on = false;
        }
        while let Some(event) = events.next_if(|e| e.at <= now) {
            if !matches!(event.fault, Fault::Heal(_)) {
                *injected.entry(event.fault.kind().to_owned()).or_default() += 1;
            }
            trace.line_at(now.as_millis(), format!("fault {:?}", event.fault));
            faults::apply(&mut sim, &event.fault, &clocks, &db);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                violations.push(format!("the simulation failed: {e}"));
                break;
            }
        }
    }
    let simulated_ms = u64::try_from(sim.elapsed().as_millis()).unwrap_or(u64::MAX);
    drop(sim);
    // Settled: every shard held under a valid lease when the clients are
    // done (at least 6 s after the heal).
    let unsettled = db.unsettled(SHARDS, simulated_ms);
    if !unsettled.is_empty() {
        violations.push(format!(
            "liveness: {} s after the faults healed, shards {unsettled:?} are held by no node",
            simulated_ms.saturating_sub(u64::try_from(HEAL_AT.as_millis()).unwrap_or(0)) / 1000
        ));
    }

    let history = std::mem::take(&mut *history.lock().unwrap_or_else(|p| p.into_inner()));
    let db_report = db.report();
    violations.extend(db_report.violations.iter().cloned());
    let keys: Vec<stead_journal::EntityKey> = accounts
        .iter()
        .map(|a| {
            stead_journal::EntityKey::new(
                stead_types::shard::shard_of("account", a, SHARDS),
                "account",
                a.as_str(),
            )
        })
        .collect();
    let journal = db.dump(&keys);
    violations.extend(check::check(&history, &journal));
    violations.extend(db.stream_violations("account", SHARDS));
    let saga_log = std::mem::take(&mut *saga_log.lock().unwrap_or_else(|p| p.into_inner()));
    if options.saga.is_some() {
        let journal = db.dump(&saga::keys(&saga_log, SHARDS));
        violations.extend(saga::check(&saga_log, &journal));
        violations.extend(db.stream_violations("transfer", SHARDS));
    }
    let mut rare = BTreeMap::new();
    rare.insert("transfer ended".to_owned(), saga_log.ended as u64);
    rare.insert("ambiguous commit".to_owned(), db_report.ambiguous_commits);
    rare.insert("fenced append".to_owned(), db_report.fenced_appends);
    rare.insert("lease takeover".to_owned(), db_report.takeovers);
    rare.insert(
        "duplicate answered".to_owned(),
        history
            .operations
            .iter()
            .filter(|o| {
                matches!(
                    o.outcome,
                    stead_history::Outcome::Ok {
                        duplicate: true,
                        ..
                    }
                )
            })
            .count() as u64,
    );
    {
        use std::sync::atomic::Ordering::Relaxed;
        let counters = routing.lock().unwrap_or_else(|p| p.into_inner());
        let sum = |f: &dyn Fn(&stead_cluster::router::RoutingCounters) -> u64| {
            counters.iter().map(|c| f(c)).sum::<u64>()
        };
        rare.insert(
            "request forwarded".to_owned(),
            sum(&|c| c.forwarded.load(Relaxed)),
        );
        rare.insert(
            "request retried while its shard moved".to_owned(),
            sum(&|c| c.retried_while_moving.load(Relaxed)),
        );
    }
    injected.insert("db latency".into(), db_report.injected_latency);
    injected.insert("db reset before commit".into(), db_report.resets_before);
    injected.insert("db reset after commit".into(), db_report.resets_after);
    Ok(SeedReport {
        seed,
        nodes: nodes.len(),
        simulated_ms,
        trace_hash: trace.hash(),
        operations: history.operations.len(),
        faults: injected,
        rare,
        violations,
        trace: if options.keep_trace {
            trace.lines()
        } else {
            Vec::new()
        },
    })
}
