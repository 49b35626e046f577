//! Benchmarks with the node inside this process: the engine's ceiling with
//! no network, memory per active entity, and recovery times. Each opens a
//! fresh node on a temporary directory (on the disk of `work_dir`) with the
//! component under test.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{Figure, Latencies, ms, progress, rss_bytes};
use stead_journal::{EntityAppend, EntityKey, EventRecord, Journal};
use stead_journal_sled::SledJournal;
use stead_node::{Node, NodeError, PendingReply};
use stead_types::config::{JournalConfig, NodeConfig, SledOptions};

/// Commands kept in flight by the in-process drivers.
const WINDOW: usize = 16_384;

/// A fresh node with the component deployed.
pub fn node(
    work_dir: &Path,
    component: &Path,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Result<(tempfile::TempDir, Node, String)> {
    node_with(work_dir, component, tweak, |_| Ok(None))
}

/// [`node`], on the journal `journal` opens in the node's directory (`None`:
/// the config's).
fn node_with(
    work_dir: &Path,
    component: &Path,
    tweak: impl FnOnce(&mut NodeConfig),
    journal: impl FnOnce(&Path) -> Result<Option<Arc<dyn Journal>>>,
) -> Result<(tempfile::TempDir, Node, String)> {
    let dir = tempfile::tempdir_in(work_dir)
        .with_context(|| format!("temporary directory in {}", work_dir.display()))?;
    let mut config = NodeConfig::new(dir.path());
    config.shards.queue_depth = WINDOW * 2;
    tweak(&mut config);
    let mut builder = Node::builder(config);
    if let Some(journal) = journal(dir.path())? {
        builder = builder.journal(journal);
    }
    let node = builder.open()?;
    let bytes =
        std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    let info = node.deploy(&bytes)?;
    Ok((dir, node, info.name))
}

/// Sends `count` commands, `make(i)` giving (entity id, command), keeping up
/// to [`WINDOW`] in flight; returns the elapsed time. Rejections count as
/// handled (the command ran); any other error stops the run.
pub fn drive(
    node: &Node,
    entity_type: &str,
    count: usize,
    make: impl Fn(usize) -> (String, &'static str),
) -> Result<Duration> {
    drive_with_ids(node, entity_type, count, |i| {
        let (id, command) = make(i);
        (id, command, None)
    })
}

/// [`drive`] with a command id (idempotency key) chosen per command.
pub fn drive_with_ids(
    node: &Node,
    entity_type: &str,
    count: usize,
    make: impl Fn(usize) -> (String, &'static str, Option<String>),
) -> Result<Duration> {
    drive_for(node, entity_type, count, Duration::ZERO, make).map(|(_, elapsed)| elapsed)
}

/// [`drive_with_ids`] for at least `count` commands and at least
/// `min_time`, so a fast scenario is not measured over a fraction of a
/// second; returns the commands sent and the elapsed time.
pub fn drive_for(
    node: &Node,
    entity_type: &str,
    count: usize,
    min_time: Duration,
    make: impl Fn(usize) -> (String, &'static str, Option<String>),
) -> Result<(usize, Duration)> {
    let started = Instant::now();
    let mut in_flight: VecDeque<PendingReply> = VecDeque::with_capacity(WINDOW);
    let settle = |p: PendingReply| -> Result<()> {
        match p.wait_blocking() {
            Ok(_) | Err(NodeError::Rejected(_)) => Ok(()),
            Err(e) => bail!("command failed: {e}"),
        }
    };
    let mut i = 0;
    loop {
        // Past `count`, the clock is read once per window of commands.
        if i >= count && (min_time.is_zero() || (i % WINDOW == 0 && started.elapsed() >= min_time))
        {
            break;
        }
        if in_flight.len() >= WINDOW
            && let Some(p) = in_flight.pop_front()
        {
            settle(p)?;
        }
        let (id, command, command_id) = make(i);
        in_flight.push_back(node.submit(
            entity_type,
            &id,
            command.as_bytes().to_vec(),
            command_id,
        )?);
        i += 1;
    }
    for p in in_flight {
        settle(p)?;
    }
    Ok((i, started.elapsed()))
}

const OPEN: &str = r#"{"open":{"owner":"bench"}}"#;
const DEPOSIT: &str = r#"{"deposit":{"amount":1}}"#;

/// Commands/s through shards, wasm and the journal, for 1 and many entities,
/// each measured over at least `commands` commands and `min_time`.
pub fn engine(
    work_dir: &Path,
    component: &Path,
    commands: usize,
    entities: usize,
    workers: Option<usize>,
    min_time: Duration,
) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for n in [1usize, entities] {
        let (_dir, node, ty) = node(work_dir, component, |config| {
            if let Some(workers) = workers {
                config.shards.workers = workers;
            }
        })?;
        progress(&format!("engine: opening {n} entities"));
        drive(&node, &ty, n, |i| (format!("e{i}"), OPEN))?;
        progress(&format!(
            "engine: deposits over {n} entities, at least {commands} and {min_time:?}"
        ));
        let (sent, elapsed) = drive_for(&node, &ty, commands, min_time, |i| {
            (format!("e{}", i % n), DEPOSIT, None)
        })?;
        let rate = sent as f64 / elapsed.as_secs_f64();
        let mut figure = Figure::new(
            "engine",
            &format!("commands/s, {n} entities"),
            rate,
            "cmd/s",
        );
        if n == entities {
            figure = figure.target(">= 100,000 cmd/s", rate >= 100_000.0);
        }
        figures.push(figure);
        if n == entities {
            // The same load with a new idempotency key on each command: the
            // cost of the command-id index without HTTP or wrk on the cores.
            progress(&format!(
                "engine: deposits over {n} entities, a new key on each, at least {commands} and {min_time:?}"
            ));
            let (sent, elapsed) = drive_for(&node, &ty, commands, min_time, |i| {
                (format!("e{}", i % n), DEPOSIT, Some(format!("key-{i}")))
            })?;
            let keyed = sent as f64 / elapsed.as_secs_f64();
            figures.push(
                Figure::new(
                    "engine",
                    &format!("commands/s, {n} entities, a new key on each"),
                    keyed,
                    "cmd/s",
                )
                .against("without keys", rate, "cmd/s")
                .target("within 10%", keyed >= 0.9 * rate),
            );
        }
        node.shutdown();
    }
    Ok(figures)
}

/// RSS per active idle entity, and after passivating them all.
pub fn memory(work_dir: &Path, component: &Path, entities: usize) -> Result<Vec<Figure>> {
    // A small journal cache, so the figure is about entities, not sled's cache.
    let (_dir, node, ty) = node(work_dir, component, |c| {
        c.journal = JournalConfig::Sled(SledOptions {
            cache_capacity: 16 * 1024 * 1024,
            ..SledOptions::default()
        })
    })?;
    drive(&node, &ty, 1000, |i| (format!("warm-{i}"), OPEN))?;
    node.passivate_all_blocking()?;
    let start = settled_rss();
    progress(&format!(
        "memory: activating {entities} entities (one command each)"
    ));
    drive(&node, &ty, entities, |i| (format!("m{i}"), OPEN))?;
    std::thread::sleep(Duration::from_secs(1));
    let active = rss_bytes();
    progress("memory: passivating them all");
    node.passivate_all_blocking()?;
    let passivated = settled_rss();
    let per_entity = active.saturating_sub(start) as f64 / entities as f64;
    let after = passivated as f64 / start as f64;
    node.shutdown();
    Ok(vec![
        Figure::new(
            "memory",
            "RSS growth per active entity",
            per_entity,
            "bytes",
        )
        .target("<= 512 bytes", per_entity <= 512.0),
        Figure::new("memory", "RSS with all active", active as f64 / 1e6, "MB").against(
            "RSS at start",
            start as f64 / 1e6,
            "MB",
        ),
        Figure::new(
            "memory",
            "RSS after passivation",
            passivated as f64 / 1e6,
            "MB",
        )
        .against("RSS at start", start as f64 / 1e6, "MB")
        .target("<= 1.1x start", after <= 1.1),
        // What stays per entity ever activated: the journal's index of it
        // (sled keeps per-key metadata in memory beyond its cache).
        Figure::new(
            "memory",
            "RSS kept per passivated entity",
            passivated.saturating_sub(start) as f64 / entities as f64,
            "bytes",
        ),
    ])
}

/// RSS once it stops falling: the allocator returns freed pages after a
/// delay (mimalloc: 1 s), so one reading right after a release can catch it
/// half done. Polls until a second passes without a 1% drop, at most 10 s.
fn settled_rss() -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = rss_bytes();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = rss_bytes();
        if now + last / 100 >= last || Instant::now() >= deadline {
            return now.min(last);
        }
        last = now;
    }
}

fn time_activation(node: &Node, ty: &str, id: &str, rounds: usize) -> Result<Latencies> {
    let mut samples = Vec::new();
    for _ in 0..rounds {
        node.passivate_all_blocking()?;
        let started = Instant::now();
        node.view_blocking(ty, id)?;
        samples.push(started.elapsed());
    }
    Ok(Latencies::of(samples))
}

/// Activation of one long-lived entity, and a restart over many entities.
pub fn recovery(
    work_dir: &Path,
    component: &Path,
    events: usize,
    entities: usize,
    sample: usize,
) -> Result<Vec<Figure>> {
    // The history without snapshots is written straight into the node's
    // journal (commands would snapshot every `snapshot_every` events).
    let mut journal: Option<Arc<SledJournal>> = None;
    let (dir, node, ty) = node_with(
        work_dir,
        component,
        |_| {},
        |dir| {
            let sled = Arc::new(SledJournal::open(
                &dir.join("journal"),
                SledOptions::default(),
            )?);
            journal = Some(sled.clone());
            Ok(Some(sled))
        },
    )?;
    let journal = journal.context("the bench opened the journal")?;
    progress(&format!("recovery: {events} events without a snapshot"));
    node.send_blocking(&ty, "no-snapshot", OPEN.as_bytes().to_vec(), None)?;
    let key = EntityKey::new(node.shard_of(&ty, "no-snapshot"), &ty, "no-snapshot");
    // A fresh lease of the entity's shard, shared with the node's worker.
    let fence = node.acquire_shards(&[key.shard])?[0];
    for chunk in (0..events.saturating_sub(1))
        .collect::<Vec<_>>()
        .chunks(1000)
    {
        let records = chunk
            .iter()
            .map(|_| EventRecord {
                command_id: String::new(),
                timestamp_ms: 0,
                payload: br#"{"deposited":{"amount":1}}"#.to_vec(),
                reply: None,
            })
            .collect();
        let append = EntityAppend {
            key: key.clone(),
            expected_seq_nr: journal.last_seq_nr(&key)?,
            fence,
            events: records,
            command_ids: Vec::new(),
            sends: Vec::new(),
            timers: Vec::new(),
        };
        if let Some(Err(e)) = journal.append(vec![append]).pop() {
            bail!("seeding the history: {e}");
        }
    }
    let plain = time_activation(&node, &ty, "no-snapshot", 5)?;
    progress(&format!("recovery: {events} events with snapshots"));
    drive(&node, &ty, 1, |_| ("snapshotted".into(), OPEN))?;
    drive(&node, &ty, events - 1, |_| ("snapshotted".into(), DEPOSIT))?;
    let snapshotted = time_activation(&node, &ty, "snapshotted", 5)?;

    progress(&format!("recovery: a journal of {entities} entities"));
    drive(&node, &ty, entities, |i| (format!("r{i}"), OPEN))?;
    let config = node.config().clone();
    node.shutdown();
    // The restarted node opens the journal itself.
    drop(journal);
    let started = Instant::now();
    let node = Node::open(config)?;
    node.send_blocking(&ty, "r0", DEPOSIT.as_bytes().to_vec(), None)?;
    let first = started.elapsed();
    let step = (entities / sample.max(1)).max(1);
    for i in (0..entities).step_by(step).take(sample) {
        node.view_blocking(&ty, &format!("r{i}"))?;
    }
    let sampled = started.elapsed();
    node.shutdown();
    drop(dir);
    Ok(vec![
        Figure::new(
            "recovery",
            &format!("activate {events} events, no snapshot"),
            ms(plain.p50),
            "ms",
        )
        .target("<= 20 ms", plain.p50 <= Duration::from_millis(20)),
        Figure::new(
            "recovery",
            &format!("activate {events} events, snapshots"),
            ms(snapshotted.p50),
            "ms",
        )
        .against("no snapshot", ms(plain.p50), "ms")
        .target("<= 1 ms", snapshotted.p50 <= Duration::from_millis(1)),
        Figure::new(
            "recovery",
            &format!("restart to first command, {entities} entities"),
            ms(first),
            "ms",
        )
        .target("<= 1000 ms", first <= Duration::from_secs(1)),
        Figure::new(
            "recovery",
            &format!("restart to {sample} entities answered"),
            ms(sampled),
            "ms",
        ),
    ])
}
