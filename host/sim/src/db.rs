//! The database of a simulated cluster: the shared journal's semantics in
//! memory, on its own simulated host, reached over the simulated network.
//!
//! [`Database`] is the server: one [`MemoryJournal`] handle per node (the
//! node id is the lease owner, as in PostgreSQL, so a restarted node owns
//! what it owned) on one [`MemoryStore`], and in front of its claims the
//! lease table PostgreSQL keeps: a claim takes a shard only when it is
//! free, released, expired (on the database's clock) or already the
//! node's; a renewal extends a lease whose epoch and owner still match; an
//! append is fenced by the handle's epoch. [`DbJournal`] is a node's client:
//! the [`AsyncJournal`] a simulated node runs on, one request per frame over
//! a small pool of connections, every call bounded by a timeout
//! (`Unavailable`, like the PostgreSQL backend's).
//!
//! Faults it injects while the schedule says so: latency before a request
//! is applied, a connection reset before it is applied, and a reset after
//! it was applied (the node sees an error for a commit that happened).
//!
//! It also watches the safety of what it is asked: at most one node's
//! appends succeed under one (shard, epoch), and a shard's epochs only grow.

mod client;

pub use client::DbJournal;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use stead_journal::{
    AppendError, AsyncJournal, BoxFuture, CommandIdRecord, CommitObserver, EntityAppend, EntityKey,
    FenceToken, FiredTimer, Journal, JournalError, MemoryJournal, MemoryStore, PendingSend,
    PendingTimer, SendId, ShardId, SnapshotRecord, StoredEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::trace::Trace;

/// The database's port on its host.
pub const DB_PORT: u16 = 5432;

/// A call of the journal contract, as it crosses the network.
#[derive(Debug, Serialize, Deserialize)]
enum Call {
    Claim(Vec<ShardId>),
    Renew(Vec<FenceToken>),
    Release(Vec<FenceToken>),
    Append(Vec<EntityAppend>),
    LastSeqNr(EntityKey),
    ReadEvents(EntityKey, u64, usize),
    ReadStream(String, Vec<(ShardId, u64)>, usize),
    SaveSnapshot(EntityKey, SnapshotRecord),
    LoadSnapshot(EntityKey),
    FindCommandIds(Vec<(EntityKey, String)>),
    ExpireCommandIds(FenceToken, u64, usize),
    ReadOutbox(ShardId, Option<SendId>, usize),
    AckSends(FenceToken, Vec<SendId>),
    AnswerSends(FenceToken, Vec<(SendId, stead_journal::Answer)>),
    ReadTimers(ShardId, Option<(EntityKey, String)>, usize),
    AckTimers(FenceToken, Vec<FiredTimer>),
}

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    node: String,
    call: Call,
}

#[derive(Debug, Serialize, Deserialize)]
enum Answer {
    Tokens(Result<Vec<FenceToken>, JournalError>),
    Done(Result<(), JournalError>),
    Appended(Vec<Result<(), AppendError>>),
    SeqNr(Result<u64, JournalError>),
    Events(Result<Vec<StoredEvent>, JournalError>),
    Stream(Result<Vec<stead_journal::StreamEvent>, JournalError>),
    Snapshot(Result<Option<SnapshotRecord>, JournalError>),
    Found(Result<Vec<Option<CommandIdRecord>>, JournalError>),
    Expired(Result<usize, AppendError>),
    Outbox(Result<Vec<PendingSend>, JournalError>),
    Timers(Result<Vec<PendingTimer>, JournalError>),
    Acked(Result<(), AppendError>),
}

/// How the database misbehaves while faults are on (probabilities per
/// request).
#[derive(Debug, Clone, Copy)]
pub struct DbFaults {
    pub latency: f64,
    pub max_latency: Duration,
    pub reset_before: f64,
    pub reset_after: f64,
}

/// Deliberately broken semantics, to prove the checkers catch them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Broken {
    #[default]
    None,
    /// Appends are not fenced: any node's append under any epoch is
    /// written.
    AppendSkipsEpochCheck,
    /// Nodes believe their leases never expire (the database still expires
    /// them): a node cut off from the database keeps serving reads.
    LeaseNeverExpires,
    /// The command-id index answers nothing (a dedup that forgets keys).
    DedupForgetsKeys,
}

/// One row of the lease table.
#[derive(Debug, Clone)]
struct Lease {
    owner: Option<String>,
    epoch: u64,
    expires_ms: u64,
}

/// What the database counts and finds.
#[derive(Debug, Default, Clone)]
pub struct DbReport {
    pub requests: u64,
    pub injected_latency: u64,
    pub resets_before: u64,
    pub resets_after: u64,
    /// Resets after an append that wrote something: a commit the node
    /// could not know of.
    pub ambiguous_commits: u64,
    pub fenced_appends: u64,
    /// Claims of a shard another node held (its lease expired).
    pub takeovers: u64,
    pub violations: Vec<String>,
}

struct State {
    store: Arc<MemoryStore>,
    handles: BTreeMap<String, Arc<MemoryJournal>>,
    leases: BTreeMap<ShardId, Lease>,
    /// Who appended successfully under each (shard, epoch).
    writers: BTreeMap<(ShardId, u64), String>,
    rng: SmallRng,
    faults_on: bool,
    /// Nodes whose appends are parked and lease calls lost until released:
    /// writes delayed in the network while the lease moves.
    stalled: std::collections::BTreeSet<String>,
    report: DbReport,
}

/// The database server's shared state.
pub struct Database {
    state: Mutex<State>,
    ttl: Duration,
    faults: DbFaults,
    broken: Broken,
    trace: Trace,
}

fn now_ms() -> u64 {
    turmoil::sim_elapsed().map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Database {
    pub fn new(
        seed: u64,
        ttl: Duration,
        faults: DbFaults,
        broken: Broken,
        trace: Trace,
    ) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                store: MemoryStore::new(),
                handles: BTreeMap::new(),
                leases: BTreeMap::new(),
                writers: BTreeMap::new(),
                rng: SmallRng::seed_from_u64(seed ^ 0xdb),
                faults_on: false,
                stalled: std::collections::BTreeSet::new(),
                report: DbReport::default(),
            }),
            ttl,
            faults,
            broken,
            trace,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns the injected faults on or off.
    pub fn set_faults(&self, on: bool) {
        self.lock().faults_on = on;
    }

    /// Until [`Database::unstall`], parks `node`'s appends and loses its
    /// lease calls (reads are answered): its renewals stop arriving, its
    /// lease expires and moves, then the writes it sent under its lease
    /// arrive.
    pub fn stall(&self, node: &str) {
        self.lock().stalled.insert(node.to_owned());
    }

    pub fn unstall(&self, node: &str) {
        self.lock().stalled.remove(node);
    }

    fn is_stalled(&self, node: &str) -> bool {
        self.lock().stalled.contains(node)
    }

    /// Whether every append's shard is leased under a later epoch than the
    /// append's fence.
    fn moved_on(&self, appends: &[EntityAppend]) -> bool {
        let state = self.lock();
        appends.iter().all(|a| {
            state
                .leases
                .get(&a.fence.shard)
                .is_some_and(|l| l.epoch > a.fence.epoch)
        })
    }

    /// The shards of `0..shards` not held by a node under a lease still
    /// valid at `now_ms` (empty once the cluster has settled).
    pub fn unsettled(&self, shards: u32, now_ms: u64) -> Vec<ShardId> {
        let state = self.lock();
        (0..shards)
            .filter(|s| {
                state
                    .leases
                    .get(s)
                    .is_none_or(|l| l.owner.is_none() || l.expires_ms <= now_ms)
            })
            .collect()
    }

    pub fn report(&self) -> DbReport {
        self.lock().report.clone()
    }

    /// Every entity's events as stored, for the checks after a run.
    pub fn dump(&self, keys: &[EntityKey]) -> BTreeMap<EntityKey, Vec<StoredEvent>> {
        let store = self.lock().store.clone();
        let reader = MemoryJournal::on(store);
        keys.iter()
            .map(|k| {
                (
                    k.clone(),
                    reader.read_events(k, 1, usize::MAX).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// The shard streams' invariant after a run: `entity_type`'s stream,
    /// read in pages from the start, holds every stored event of the type
    /// once, each entity's in seq-nr order, positions growing in each shard.
    pub fn stream_violations(&self, entity_type: &str, shards: u32) -> Vec<String> {
        let store = self.lock().store.clone();
        let reader = MemoryJournal::on(store);
        let mut out = Vec::new();
        let mut cursors: Vec<(ShardId, u64)> = (0..shards).map(|s| (s, 0)).collect();
        let mut seen: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        loop {
            let page = match reader.read_stream(entity_type, &cursors, 100) {
                Ok(page) => page,
                Err(e) => {
                    out.push(format!("streams: reading {entity_type}'s stream: {e}"));
                    return out;
                }
            };
            if page.is_empty() {
                break;
            }
            for e in page {
                let Some((_, at)) = cursors.get_mut(e.shard as usize) else {
                    out.push(format!(
                        "streams: an event of shard {} not asked for",
                        e.shard
                    ));
                    return out;
                };
                if e.position <= *at {
                    out.push(format!(
                        "streams: shard {} went from position {at} back to {}",
                        e.shard, e.position
                    ));
                }
                *at = e.position;
                seen.entry(e.entity_id).or_default().push(e.event.seq_nr);
            }
        }
        for shard in 0..shards {
            for (ty, id) in reader.entities_in_shard(shard).unwrap_or_default() {
                if ty != entity_type {
                    continue;
                }
                let key = EntityKey::new(shard, ty.as_str(), id.as_str());
                let stored = reader.last_seq_nr(&key).unwrap_or(0);
                let streamed = seen.remove(&id).unwrap_or_default();
                if streamed != (1..=stored).collect::<Vec<u64>>() {
                    out.push(format!(
                        "streams: {key} holds events 1..={stored}, its stream gave seq-nrs {streamed:?}"
                    ));
                }
            }
        }
        for (id, seqs) in seen {
            out.push(format!(
                "streams: {entity_type}/{id} streamed {seqs:?} but holds no events"
            ));
        }
        out
    }

    /// Serves connections until the host stops.
    pub async fn serve(self: Arc<Self>) -> std::io::Result<()> {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", DB_PORT)).await?;
        loop {
            let (stream, _) = listener.accept().await?;
            let db = self.clone();
            tokio::spawn(async move { db.connection(stream).await });
        }
    }

    async fn connection(&self, mut stream: turmoil::net::TcpStream) {
        loop {
            let Ok(bytes) = read_frame(&mut stream).await else {
                return;
            };
            let Ok(request) = postcard::from_bytes::<Request>(&bytes) else {
                return;
            };
            // What the fault schedule does to this request.
            let (delay, reset_before, reset_after) = {
                let mut state = self.lock();
                state.report.requests += 1;
                if state.faults_on {
                    let f = self.faults;
                    let delay = state.rng.random_bool(f.latency).then(|| {
                        let ms = u64::try_from(f.max_latency.as_millis()).unwrap_or(1).max(1);
                        Duration::from_millis(state.rng.random_range(1..=ms))
                    });
                    let before = state.rng.random_bool(f.reset_before);
                    let after = !before && state.rng.random_bool(f.reset_after);
                    (delay, before, after)
                } else {
                    (None, false, false)
                }
            };
            if let Some(delay) = delay {
                self.lock().report.injected_latency += 1;
                tokio::time::sleep(delay).await;
            }
            if reset_before {
                self.lock().report.resets_before += 1;
                return;
            }
            if self.is_stalled(&request.node) {
                match &request.call {
                    Call::Append(appends) => {
                        while self.is_stalled(&request.node) {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        // Past the stall, the write stays in the network
                        // until its shard's lease has moved on (bounded): the
                        // zombie's case is a write that lands after the
                        // takeover, which a fenced append must refuse.
                        let bound = tokio::time::Instant::now() + 4 * self.ttl;
                        while !self.moved_on(appends) && tokio::time::Instant::now() < bound {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        self.trace
                            .line(format!("db late append of {} arrives", request.node));
                    }
                    Call::Claim(_) | Call::Renew(_) | Call::Release(_) => return,
                    _ => {}
                }
            }
            let answer = self.apply(&request.node, request.call);
            if reset_after {
                let mut state = self.lock();
                state.report.resets_after += 1;
                if let Answer::Appended(results) = &answer
                    && results.iter().any(Result::is_ok)
                {
                    state.report.ambiguous_commits += 1;
                    drop(state);
                    self.trace
                        .line(format!("db reset after commit for {}", request.node));
                }
                return;
            }
            let Ok(bytes) = postcard::to_allocvec(&answer) else {
                return;
            };
            if write_frame(&mut stream, &bytes).await.is_err() {
                return;
            }
        }
    }

    fn apply(&self, node: &str, call: Call) -> Answer {
        let now = now_ms();
        let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut state = self.lock();
        let store = state.store.clone();
        let handle = state
            .handles
            .entry(node.to_owned())
            .or_insert_with(|| Arc::new(MemoryJournal::on(store)))
            .clone();
        match call {
            Call::Claim(shards) => {
                let takeable: Vec<ShardId> = shards
                    .into_iter()
                    .filter(|s| {
                        state.leases.get(s).is_none_or(|l| {
                            l.owner.as_deref().is_none_or(|o| o == node) || l.expires_ms <= now
                        })
                    })
                    .collect();
                let tokens = handle.claim_shards(&takeable);
                if let Ok(tokens) = &tokens {
                    for t in tokens {
                        let previous = state.leases.insert(
                            t.shard,
                            Lease {
                                owner: Some(node.to_owned()),
                                epoch: t.epoch,
                                expires_ms: now.saturating_add(ttl),
                            },
                        );
                        if let Some(p) = &previous {
                            if p.epoch >= t.epoch {
                                state.report.violations.push(format!(
                                    "shard {} epoch went from {} to {} (claimed by {node})",
                                    t.shard, p.epoch, t.epoch
                                ));
                            }
                            if p.owner.as_deref().is_some_and(|o| o != node) {
                                state.report.takeovers += 1;
                            }
                        }
                        self.trace.line(format!(
                            "db claim shard {} epoch {} by {node}",
                            t.shard, t.epoch
                        ));
                    }
                }
                Answer::Tokens(tokens)
            }
            Call::Renew(tokens) => {
                let renewed = handle.renew_shards(&tokens);
                if let Ok(renewed) = &renewed {
                    for t in renewed {
                        if let Some(l) = state.leases.get_mut(&t.shard)
                            && l.epoch == t.epoch
                            && l.owner.as_deref() == Some(node)
                        {
                            l.expires_ms = now.saturating_add(ttl);
                        }
                    }
                }
                Answer::Tokens(renewed)
            }
            Call::Release(tokens) => {
                for t in &tokens {
                    if let Some(l) = state.leases.get_mut(&t.shard)
                        && l.epoch == t.epoch
                        && l.owner.as_deref() == Some(node)
                    {
                        l.owner = None;
                    }
                }
                Answer::Done(handle.release_shards(&tokens))
            }
            Call::Append(appends) => {
                // The epochs as presented, and the shards' current ones.
                let fences: Vec<FenceToken> = appends.iter().map(|a| a.fence).collect();
                let current: Vec<u64> = fences
                    .iter()
                    .map(|f| state.leases.get(&f.shard).map_or(0, |l| l.epoch))
                    .collect();
                let results = if self.broken == Broken::AppendSkipsEpochCheck {
                    // As if the fence were not checked: written through
                    // whichever handle holds the shard now.
                    let appends = appends
                        .into_iter()
                        .zip(&current)
                        .map(|(mut a, epoch)| {
                            a.fence.epoch = *epoch;
                            a
                        })
                        .collect();
                    let handles: Vec<Arc<MemoryJournal>> =
                        state.handles.values().cloned().collect();
                    unfenced_append(&handles, appends)
                } else {
                    handle.append(appends)
                };
                for ((fence, result), epoch) in fences.iter().zip(&results).zip(&current) {
                    if result.is_ok() && fence.epoch != *epoch {
                        let message = format!(
                            "{node}'s append to shard {} under epoch {} was written while the shard's epoch was {epoch}",
                            fence.shard, fence.epoch
                        );
                        state.report.violations.push(message);
                    }
                }
                for (fence, result) in fences.iter().zip(&results) {
                    self.trace.line(format!(
                        "db append by {node} shard {} epoch {}: {}",
                        fence.shard,
                        fence.epoch,
                        match result {
                            Ok(()) => "ok".to_owned(),
                            Err(e) => e.to_string(),
                        }
                    ));
                    match result {
                        Ok(()) => {
                            let writer = state
                                .writers
                                .entry((fence.shard, fence.epoch))
                                .or_insert_with(|| node.to_owned());
                            if writer != node {
                                let message = format!(
                                    "two nodes appended to shard {} under epoch {}: {writer} and {node}",
                                    fence.shard, fence.epoch
                                );
                                state.report.violations.push(message);
                            }
                        }
                        Err(AppendError::Fenced { .. }) => state.report.fenced_appends += 1,
                        Err(_) => {}
                    }
                }
                Answer::Appended(results)
            }
            Call::LastSeqNr(key) => Answer::SeqNr(handle.last_seq_nr(&key)),
            Call::ReadEvents(key, from, limit) => {
                Answer::Events(handle.read_events(&key, from, limit))
            }
            Call::ReadStream(entity_type, from, limit) => {
                Answer::Stream(handle.read_stream(&entity_type, &from, limit))
            }
            Call::SaveSnapshot(key, snapshot) => {
                Answer::Done(handle.save_snapshot(&key, &snapshot))
            }
            Call::LoadSnapshot(key) => Answer::Snapshot(handle.load_snapshot(&key)),
            Call::FindCommandIds(lookups) => {
                if self.broken == Broken::DedupForgetsKeys {
                    Answer::Found(Ok(vec![None; lookups.len()]))
                } else {
                    Answer::Found(handle.find_command_ids(&lookups))
                }
            }
            Call::ExpireCommandIds(fence, before, limit) => {
                Answer::Expired(handle.expire_command_ids(fence, before, limit))
            }
            Call::ReadOutbox(shard, after, limit) => {
                Answer::Outbox(handle.read_outbox(shard, after.as_ref(), limit))
            }
            Call::AckSends(fence, ids) => Answer::Acked(handle.ack_sends(fence, &ids)),
            Call::AnswerSends(fence, answers) => {
                Answer::Acked(handle.answer_sends(fence, &answers))
            }
            Call::ReadTimers(shard, after, limit) => Answer::Timers(handle.read_timers(
                shard,
                after.as_ref().map(|(key, name)| (key, name.as_str())),
                limit,
            )),
            Call::AckTimers(fence, fired) => Answer::Acked(handle.ack_timers(fence, &fired)),
        }
    }
}

/// The broken append: through whichever handle holds the shard now.
fn unfenced_append(
    handles: &[Arc<MemoryJournal>],
    appends: Vec<EntityAppend>,
) -> Vec<Result<(), AppendError>> {
    appends
        .into_iter()
        .map(|a| {
            let mut last = Err(AppendError::Fenced {
                shard: a.fence.shard,
                presented: a.fence.epoch,
                current: 0,
            });
            for h in handles {
                last = h.append(vec![a.clone()]).pop().unwrap_or(last);
                if last.is_ok() {
                    break;
                }
            }
            last
        })
        .collect()
}

async fn read_frame(stream: &mut turmoil::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let len = stream.read_u32().await?;
    let mut bytes = vec![0; len as usize];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

async fn write_frame(stream: &mut turmoil::net::TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    stream.write_u32(len).await?;
    stream.write_all(bytes).await?;
    stream.flush().await
}
