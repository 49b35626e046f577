//! A local cluster of real `stead up` processes on one PostgreSQL journal,
//! for the cluster tests and `cargo xtask chaos --cluster`: nodes gossip on
//! UDP ports picked up front (each node's seeds are all of them), listen on
//! free TCP ports, and are started, killed, frozen and stopped one by one.
//!
//! The [`Load`] records every command in the history format of the
//! deterministic simulator ([`crate::chaos::history`]), and [`check_ledger`] ends
//! with the simulator's checkers on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::chaos::NodeProcess;
use crate::chaos::history::{HistoryChecked, Recorder, check_history, dump_accounts};

/// One node's fixed identity: its id, gossip port and data directory.
struct Slot {
    node_id: String,
    gossip: u16,
    data: tempfile::TempDir,
    process: Option<NodeProcess>,
}

/// Nodes `n1`..`nN` of one cluster.
pub struct LocalCluster {
    stead: PathBuf,
    url: String,
    slots: Vec<Slot>,
    extra: Vec<String>,
}

/// A free UDP port on loopback (free when asked; the node binds it soon
/// after).
fn free_udp_port() -> Result<u16, String> {
    let socket =
        std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("binding UDP: {e}"))?;
    socket
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("UDP address: {e}"))
}

impl LocalCluster {
    /// Slots for `nodes` nodes on the journal at `url`; none started yet.
    /// `extra` flags go to every node.
    pub fn new(stead: &Path, url: &str, nodes: usize, extra: &[&str]) -> Result<Self, String> {
        let mut slots = Vec::with_capacity(nodes);
        for i in 1..=nodes {
            slots.push(Slot {
                node_id: format!("n{i}"),
                gossip: free_udp_port()?,
                data: tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?,
                process: None,
            });
        }
        Ok(Self {
            stead: stead.to_owned(),
            url: url.to_owned(),
            slots,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// Adds a slot (a node that may join later); returns its index.
    pub fn add_slot(&mut self) -> Result<usize, String> {
        let i = self.slots.len();
        self.slots.push(Slot {
            node_id: format!("n{}", i + 1),
            gossip: free_udp_port()?,
            data: tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?,
            process: None,
        });
        Ok(i)
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Starts node `i` (again), seeded with every slot's gossip address.
    pub fn start(&mut self, i: usize) -> Result<(), String> {
        let seeds: Vec<String> = self
            .slots
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.gossip))
            .collect();
        let slot = &mut self.slots[i];
        let mut args: Vec<String> = vec![
            "--journal".into(),
            self.url.clone(),
            "--node-id".into(),
            slot.node_id.clone(),
            "--gossip".into(),
            format!("127.0.0.1:{}", slot.gossip),
            "--seeds".into(),
            seeds.join(","),
        ];
        args.extend(self.extra.iter().cloned());
        slot.process = Some(NodeProcess::start_with(
            &self.stead,
            slot.data.path(),
            &args,
        )?);
        Ok(())
    }

    /// Starts every node not running.
    pub fn start_all(&mut self) -> Result<(), String> {
        for i in 0..self.slots.len() {
            if self.slots[i].process.is_none() {
                self.start(i)?;
            }
        }
        Ok(())
    }

    pub fn node(&self, i: usize) -> Option<&NodeProcess> {
        self.slots[i].process.as_ref()
    }

    pub fn node_id(&self, i: usize) -> &str {
        &self.slots[i].node_id
    }

    /// The index of the node named `node_id`.
    pub fn index_of(&self, node_id: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.node_id == node_id)
    }

    /// Indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].process.is_some())
            .collect()
    }

    /// The HTTP addresses of the running nodes, but `except`.
    pub fn http_addrs(&self, except: Option<usize>) -> Vec<String> {
        self.running()
            .into_iter()
            .filter(|&i| Some(i) != except)
            .filter_map(|i| self.node(i).map(|n| n.http.clone()))
            .collect()
    }

    /// SIGKILL of node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(p) = self.slots[i].process.take() {
            p.kill();
        }
    }

    /// SIGTERM of node `i` and its clean exit (a graceful leave).
    pub fn stop(&mut self, i: usize) -> Result<(), String> {
        match self.slots[i].process.take() {
            Some(p) => p.stop(),
            None => Ok(()),
        }
    }

    /// Sends `signal` (e.g. `-STOP`, `-CONT`) to node `i`.
    pub fn signal(&self, i: usize, signal: &str) -> Result<(), String> {
        let p = self.node(i).ok_or("the node is not running")?;
        let status = Command::new("kill")
            .args([signal, &p.pid().to_string()])
            .status()
            .map_err(|e| format!("kill: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill {signal} failed"))
        }
    }

    /// `GET /v1/cluster` of node `i`.
    pub fn status(&self, i: usize) -> Result<Value, String> {
        let node = self.node(i).ok_or("the node is not running")?;
        crate::chaos::client::Reader::new(&node.http).get_json("/v1/cluster")
    }

    /// The node holding `shard`, as node `i` sees it.
    pub fn holder(&self, i: usize, shard: u64) -> Option<String> {
        let status = self.status(i).ok()?;
        status["shards"]
            .as_array()?
            .iter()
            .find(|s| s["shard"].as_u64() == Some(shard))?["holder"]
            .as_str()
            .map(str::to_owned)
    }

    /// Waits until every running node sees exactly the running nodes as
    /// ready members and every shard held by the node it is placed on.
    pub fn wait_settled(&self, within: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let running: Vec<String> = self
            .running()
            .iter()
            .map(|&i| self.slots[i].node_id.clone())
            .collect();
        let mut last = String::new();
        while started.elapsed() < within {
            match self.settled(&running) {
                Ok(()) => return Ok(started.elapsed()),
                Err(why) => last = why,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "the cluster did not settle within {within:?}: {last}"
        ))
    }

    fn settled(&self, running: &[String]) -> Result<(), String> {
        for i in self.running() {
            let status = self.status(i)?;
            let members: Vec<(String, String)> = status["members"]
                .as_array()
                .ok_or("no members")?
                .iter()
                .map(|m| {
                    (
                        m["node_id"].as_str().unwrap_or_default().to_owned(),
                        m["state"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            let ready: Vec<&String> = members
                .iter()
                .filter(|(_, s)| s == "ready")
                .map(|(id, _)| id)
                .collect();
            if ready.len() != running.len() || !running.iter().all(|r| ready.contains(&r)) {
                return Err(format!(
                    "{} sees members {members:?}",
                    self.slots[i].node_id
                ));
            }
            for shard in status["shards"].as_array().ok_or("no shards")? {
                if shard["holder"] != shard["placed"] || shard["holder"].is_null() {
                    return Err(format!("{} sees shard {shard}", self.slots[i].node_id));
                }
            }
        }
        Ok(())
    }
}

/// Clients opening accounts and sending deposits of 1 through every running node, each command
/// with its own idempotency key, retried with that key until acknowledged:
/// on another node when the node asked is unreachable, after a pause when
/// it answered an error (every error is recorded). Every fourth command is
/// followed by a read of the entity's view; commands and views go into the
/// load's history.
pub struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadReport>>,
    recorder: std::sync::Arc<Recorder>,
    /// The HTTP addresses of the nodes to send through (the test updates it
    /// as nodes stop and start).
    pub nodes: std::sync::Arc<std::sync::RwLock<Vec<String>>>,
}

/// What one load thread saw.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// (entity id, idempotency key, seq-nr) of every acknowledged command.
    pub acked: Vec<(String, String, u64)>,
    /// Error answers (code and message), in order.
    pub errors: Vec<String>,
    /// Requests that got no answer (the node died or stopped).
    pub unreachable: u64,
    /// Commands that took longest, from first try to acknowledgement.
    pub slowest: Duration,
    /// Acknowledged commands per entity id, with when they were acknowledged.
    pub acked_at: Vec<(String, Instant)>,
    /// Views read (and recorded) between commands.
    pub views: u64,
    /// Every command in the simulator's history format (filled by
    /// [`Load::finish`]).
    pub history: stead_history::History,
    /// Commands recorded that are no account's, or replies without a
    /// balance: a bug of the load or the node, failed by [`check_ledger`].
    pub unrecordable: Vec<String>,
}

impl LoadReport {
    /// The errors answered other than `unavailable` (a shard moving, or
    /// the node asked gone), which clients retrying must never see.
    pub fn unexpected_errors(&self) -> Vec<&String> {
        self.errors
            .iter()
            .filter(|e| !e.starts_with("unavailable"))
            .collect()
    }
}

impl Load {
    /// Starts `threads` clients over `entities` (accounts; each client
    /// opens its own, then deposits): `entities.len()` must be a multiple of
    /// `threads`, so each entity has one client.
    pub fn start(nodes: Vec<String>, entities: &[String], threads: usize) -> Self {
        assert!(
            threads > 0 && entities.len().is_multiple_of(threads),
            "each entity needs exactly one client"
        );
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, RwLock};
        let stop = Arc::new(AtomicBool::new(false));
        let nodes = Arc::new(RwLock::new(nodes));
        let recorder = Arc::new(Recorder::new());
        let threads = (0..threads)
            .map(|t| {
                let (stop, nodes) = (stop.clone(), nodes.clone());
                let recorder = recorder.clone();
                let entities = entities.to_vec();
                std::thread::spawn(move || {
                    let mut report = LoadReport::default();
                    let mut k = 0usize;
                    let mut turn = t;
                    let mut opened = std::collections::HashSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        let entity = &entities[(t + k * threads) % entities.len()];
                        let key = format!("t{t}-{k}");
                        let command = if opened.insert(entity.clone()) {
                            serde_json::json!({"open": {"owner": key}})
                        } else {
                            serde_json::json!({"deposit": {"amount": 1}})
                        };
                        let started = Instant::now();
                        let invoked_at = recorder.now();
                        let record =
                            |answer: &crate::chaos::client::Outcome,
                             unrecordable: &mut Vec<String>| {
                                if let Err(e) = recorder.record_command(
                                    t as u64, entity, &command, &key, invoked_at, answer,
                                ) {
                                    unrecordable.push(e);
                                }
                            };
                        loop {
                            let addr = {
                                let nodes = nodes
                                    .read()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                                if nodes.is_empty() {
                                    None
                                } else {
                                    Some(nodes[turn % nodes.len()].clone())
                                }
                            };
                            let Some(addr) = addr else {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            };
                            let mut client = crate::chaos::client::Client::http(&addr);
                            let answer = client.send("account", entity, &command, &key);
                            let timed_out = started.elapsed() > Duration::from_secs(60);
                            if timed_out
                                || matches!(answer, crate::chaos::client::Outcome::Acked { .. })
                            {
                                record(&answer, &mut report.unrecordable);
                            }
                            match answer {
                                crate::chaos::client::Outcome::Acked { seq_nr, .. } => {
                                    report.acked.push((entity.clone(), key.clone(), seq_nr));
                                    report.acked_at.push((entity.clone(), Instant::now()));
                                    report.slowest = report.slowest.max(started.elapsed());
                                    break;
                                }
                                crate::chaos::client::Outcome::Refused { code, message } => {
                                    report.errors.push(format!("{code} via {addr}: {message}"));
                                    std::thread::sleep(Duration::from_millis(50));
                                }
                                crate::chaos::client::Outcome::Unreachable(_) => {
                                    report.unreachable += 1;
                                    turn += 1;
                                    std::thread::sleep(Duration::from_millis(10));
                                }
                            }
                            if timed_out {
                                report
                                    .errors
                                    .push(format!("{key} on {entity}: no acknowledgement in 60 s"));
                                break;
                            }
                        }
                        // Every fourth command, a read of the entity through
                        // the node the next command goes to: a stale view
                        // (from a node that lost the shard) is a history no
                        // order explains. A read that fails decides nothing.
                        if k % 4 == 3 {
                            let addr = {
                                let nodes = nodes
                                    .read()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                                (!nodes.is_empty()).then(|| nodes[turn % nodes.len()].clone())
                            };
                            if let Some(addr) = addr {
                                // Short: a read stuck on a frozen or
                                // leaving node would hold up the load.
                                let reader = crate::chaos::client::Reader::with_timeout(
                                    &addr,
                                    Duration::from_secs(2),
                                );
                                if recorder.record_view(t as u64, &reader, entity).is_ok() {
                                    report.views += 1;
                                }
                            }
                        }
                        k += 1;
                    }
                    report
                })
            })
            .collect();
        Self {
            stop,
            threads,
            recorder,
            nodes,
        }
    }

    /// The load's history recorder, for a test's own commands on the
    /// load's entities (they must be in the history the checkers judge).
    pub fn recorder(&self) -> std::sync::Arc<Recorder> {
        self.recorder.clone()
    }

    /// Replaces the nodes to send through.
    pub fn set_nodes(&self, nodes: Vec<String>) {
        *self
            .nodes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = nodes;
    }

    /// Stops the clients (each finishes its command) and merges reports.
    pub fn finish(self) -> LoadReport {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = LoadReport::default();
        for thread in self.threads {
            let report = thread.join().unwrap_or_default();
            all.acked.extend(report.acked);
            all.errors.extend(report.errors);
            all.unreachable += report.unreachable;
            all.slowest = all.slowest.max(report.slowest);
            all.acked_at.extend(report.acked_at);
            all.unrecordable.extend(report.unrecordable);
            all.views += report.views;
        }
        all.history = self.recorder.history();
        all
    }
}

/// Checks the journal against the load's acknowledgements, through the node
/// at `http`: every entity's events are numbered 1..n without a gap, no
/// command took effect twice, every acknowledged command is there at the
/// sequence number it was acknowledged with, and nothing else is. Then the
/// simulator's checkers judge the load's history: linearizable per entity,
/// every acknowledgement durable. A violating history is written to the
/// temporary directory, named in the error.
pub fn check_ledger(
    http: &str,
    entities: &[String],
    report: &LoadReport,
) -> Result<HistoryChecked, String> {
    if let Some(first) = report.unrecordable.first() {
        return Err(format!(
            "{} commands could not be recorded, the first: {first}",
            report.unrecordable.len()
        ));
    }
    use std::collections::{BTreeMap, BTreeSet};
    let reader = crate::chaos::client::Reader::new(http);
    let mut acked: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    for (entity, key, seq_nr) in &report.acked {
        acked.entry(entity).or_default().insert(key, *seq_nr);
    }
    let mut total = 0;
    for entity in entities {
        let events = reader.events("account", entity)?;
        let mut seen = BTreeSet::new();
        for (i, e) in events.iter().enumerate() {
            if e.seq_nr != i as u64 + 1 {
                return Err(format!("{entity}: event {} has seq-nr {}", i + 1, e.seq_nr));
            }
            if !seen.insert(e.command_id.as_str()) {
                return Err(format!(
                    "{entity}: command {} took effect twice",
                    e.command_id
                ));
            }
        }
        let mine = acked.get(entity.as_str()).cloned().unwrap_or_default();
        for (key, seq_nr) in &mine {
            let at = events.iter().find(|e| e.command_id == *key);
            match at {
                None => return Err(format!("{entity}: acknowledged command {key} is lost")),
                Some(e) if e.seq_nr != *seq_nr => {
                    return Err(format!(
                        "{entity}: {key} was acknowledged at seq-nr {seq_nr}, journal has it at {}",
                        e.seq_nr
                    ));
                }
                Some(_) => {}
            }
        }
        if events.len() != mine.len() {
            return Err(format!(
                "{entity}: {} events for {} acknowledged commands",
                events.len(),
                mine.len()
            ));
        }
        total += events.len();
    }
    let dump = dump_accounts(http, entities.iter().map(String::as_str))?;
    let keep = std::env::temp_dir().join(format!(
        "stead-cluster-history-{}.jsonl",
        std::process::id()
    ));
    let checked = check_history(&report.history, &dump, Some(&keep))?;
    if checked.events != total {
        return Err(format!(
            "the journal changed between the two reads: {total} events, then {}",
            checked.events
        ));
    }
    Ok(checked)
}
