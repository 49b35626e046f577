//! A shard worker: one loop (an OS thread of its own in production) owning the shards it holds the lease of and
//! every active entity in them.
//!
//! The loop takes a batch of queued requests, runs each command through the
//! guest ([`invoke`]), appends every entity's new events in one journal
//! call and then replies ([`commit`]). Views are answered after the
//! batch's appends, so they never show state that is not durable.
//!
//! Invariants:
//! - **One writer per entity**: only this thread touches its entities, in
//!   queue order; an entity's commands in one batch chain on each other's
//!   state and are appended as one run with one expected sequence number.
//! - **Acknowledged = durable**: a command's reply (even one that persisted
//!   nothing, which may depend on earlier commands of the batch) is sent only
//!   after its entity's append returned `Ok`.
//! - **Only held shards are served**: a request for a shard without a lease
//!   here fails with `NotOwner` before it runs. A release is a barrier: what
//!   was queued before it is committed first, then the shard's entities
//!   leave memory and the lease is released.
//! - A failed append drops the entity from memory, so its next command
//!   recovers it from the journal; its commands in the batch fail.
//! - No task, instance or lock per entity: an active entity is its state,
//!   sequence numbers, dedup window and last-use time.

// foldhash: these maps are hit several times per command and keyed by
// caller-chosen ids (seeded, so collisions cannot be planned).
use foldhash::{HashMap, HashSet, HashSetExt};
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument;

use stead_journal::{AsyncJournal, EntityKey, FenceToken, ShardId};
use stead_runtime::Registry;
use stead_types::Clock;
use stead_types::config::{Limits, ShardOptions};

use crate::Error;
use crate::entity::ActiveEntity;
use crate::leases::{self, HeldLease, LeaseBoard};
use crate::memory;
use crate::outbox::{OutboxEvent, OutboxSender};
use crate::request::{LeaseResult, Request, WorkerStats};

mod commit;
mod invoke;

use commit::Batch;
use invoke::InstancePool;

/// Everything a worker owns, created where it runs.
pub(crate) struct Worker {
    pub(crate) journal: Arc<dyn AsyncJournal>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: ShardOptions,
    pub(crate) limits: Limits,
    /// The leases this worker holds: the shards it serves while valid.
    pub(crate) fences: HashMap<ShardId, HeldLease>,
    /// Every worker's leases, for the keeper that renews them.
    board: Arc<LeaseBoard>,
    pub(crate) entities: HashMap<EntityKey, ActiveEntity>,
    pub(crate) pool: InstancePool,
    /// Requests held back by the activation budget, first in the next batch.
    deferred: Vec<Request>,
    pub(crate) activations: u64,
    passivations: u64,
    deferred_total: u64,
    /// The node's courier, told of leases and durable sends and timers.
    pub(crate) outbox: Option<OutboxSender>,
}

/// The activation budget of one batch: past it, requests for entities not
/// in memory wait for the next batch, and so does every later request for
/// an entity already held back (an entity's requests stay in order).
struct Activations {
    left: usize,
    deferred: HashSet<EntityKey>,
}

impl Activations {
    /// Whether the request for `key` waits for the next batch; otherwise it
    /// takes one activation from the budget if `key` is not in memory.
    fn defer(&mut self, key: &EntityKey, active: &HashMap<EntityKey, ActiveEntity>) -> bool {
        if self.deferred.contains(key) {
            return true;
        }
        if active.contains_key(key) {
            return false;
        }
        if self.left == 0 {
            self.deferred.insert(key.clone());
            return true;
        }
        // Several requests of one entity in a batch count it once: the
        // first activates it, the rest find it in memory.
        self.left -= 1;
        false
    }
}

impl Worker {
    pub(crate) fn new(
        journal: Arc<dyn AsyncJournal>,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        board: Arc<LeaseBoard>,
        options: ShardOptions,
        limits: Limits,
    ) -> Self {
        Self {
            journal,
            registry,
            clock,
            options,
            limits,
            fences: HashMap::default(),
            board,
            entities: HashMap::default(),
            pool: InstancePool::default(),
            deferred: Vec::new(),
            activations: 0,
            passivations: 0,
            deferred_total: 0,
            outbox: None,
        }
    }

    pub(crate) fn with_outbox(mut self, outbox: Option<OutboxSender>) -> Self {
        self.outbox = outbox;
        self
    }

    /// Tells the courier (if any); it never blocks.
    pub(crate) fn tell(&self, event: OutboxEvent) {
        if let Some(outbox) = &self.outbox {
            let _ = outbox.send(event);
        }
    }

    pub(crate) async fn run(mut self, rx: flume::Receiver<Request>) {
        let sweep_every = (self.options.idle_timeout / 4).max(Duration::from_millis(50));
        let sweep_every_ms = u64::try_from(sweep_every.as_millis()).unwrap_or(u64::MAX);
        let mut last_sweep = self.mono_ms();
        loop {
            // Deferred requests go first, in their order; wait for new ones
            // only when there are none.
            let mut batch = std::mem::take(&mut self.deferred);
            if batch.is_empty() {
                match tokio::time::timeout(sweep_every, rx.recv_async()).await {
                    Ok(Ok(request)) => batch.push(request),
                    Err(_elapsed) => {}
                    Ok(Err(flume::RecvError::Disconnected)) => return,
                }
            }
            if !batch.is_empty() {
                while batch.len() < self.options.max_batch {
                    match rx.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                self.process(batch).await;
            }
            if self.mono_ms().saturating_sub(last_sweep) >= sweep_every_ms {
                self.passivate_idle();
                last_sweep = self.mono_ms();
            }
        }
    }

    /// The monotonic time entities' last use is measured in.
    pub(crate) fn mono_ms(&self) -> u64 {
        self.clock.mono_ms()
    }

    fn passivate_idle(&mut self) {
        let now = self.mono_ms();
        let idle = u64::try_from(self.options.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let before = self.entities.len();
        self.entities
            .retain(|_, e| now.saturating_sub(e.last_used_ms) < idle);
        self.after_passivation(before - self.entities.len());
    }

    /// Counts passivated entities and gives memory back after many.
    fn after_passivation(&mut self, passivated: usize) {
        if passivated == 0 {
            return;
        }
        self.passivations += passivated as u64;
        tracing::debug!(
            passivated,
            active = self.entities.len(),
            "passivated entities"
        );
        if self.entities.is_empty() {
            self.entities = HashMap::default();
        } else if self.entities.capacity() > 4 * self.entities.len() {
            self.entities.shrink_to_fit();
        }
        if passivated >= memory::RELEASE_AFTER_PASSIVATIONS {
            memory::release_free_memory();
        }
    }

    async fn process(&mut self, requests: Vec<Request>) {
        let mut batch = Batch::new(self.clock.wall_ms());
        self.prefetch_command_ids(&requests, &mut batch).await;
        let mut budget = Activations {
            left: self.options.max_activations_per_batch.max(1),
            deferred: HashSet::new(),
        };
        let mut requests = requests.into_iter();
        while let Some(request) = requests.next() {
            match request {
                Request::Command(cmd) => {
                    if let Err(e) = self.serving(cmd.key.shard) {
                        let _ = cmd.reply.send(Err(e));
                        continue;
                    }
                    if budget.defer(&cmd.key, &self.entities) {
                        self.deferred_total += 1;
                        self.deferred.push(Request::Command(cmd));
                        continue;
                    }
                    let span = cmd.span.clone();
                    if self.mono_ms() >= cmd.deadline_ms {
                        span.in_scope(|| {
                            tracing::debug!("deadline passed in the queue: not executed");
                        });
                        let _ = cmd.reply.send(Err(Error::DeadlineExceeded(
                            "the command waited in the queue past its deadline and was not executed; it is safe to retry".into(),
                        )));
                        continue;
                    }
                    self.handle(cmd, &mut batch).instrument(span).await;
                }
                Request::View(view) => {
                    if let Err(e) = self.serving(view.key.shard) {
                        let _ = view.reply.send(Err(e));
                    } else if budget.defer(&view.key, &self.entities) {
                        self.deferred_total += 1;
                        self.deferred.push(Request::View(view));
                    } else {
                        batch.views.push(view);
                    }
                }
                #[cfg(feature = "testing")]
                Request::State(req) => batch.states.push(req),
                #[cfg(feature = "testing")]
                Request::Seed(req) => batch.seeds.push(req),
                Request::Lapse(token) => self.lapse(token),
                Request::Acquire(req) => {
                    let result = self.acquire(&req.shards).await;
                    let _ = req.reply.send(result);
                }
                Request::Release(req) => {
                    if !budget.deferred.is_empty() {
                        // Requests held back by the budget were queued before
                        // the release: it waits for them, and so does
                        // everything after it, to keep the queue's order.
                        self.deferred.push(Request::Release(req));
                        self.deferred.extend(requests);
                        break;
                    }
                    // A barrier: what came before it is committed first.
                    let done = std::mem::replace(&mut batch, Batch::new(self.clock.wall_ms()));
                    self.finish(done).await;
                    let result = self.release(&req.shards).await;
                    let _ = req.reply.send(result);
                }
                Request::PassivateAll(tx) => {
                    let n = self.entities.len();
                    self.entities = HashMap::default();
                    self.after_passivation(n);
                    let _ = tx.send(n);
                }
                Request::Stats(tx) => {
                    let _ = tx.send(WorkerStats {
                        active_entities: self.entities.len(),
                        activations: self.activations,
                        deferred: self.deferred_total,
                        passivations: self.passivations,
                        shards: self.fences.len(),
                    });
                }
            }
        }
        self.finish(batch).await;
    }

    /// Whether this worker may serve `shard` now: it holds the lease and the
    /// lease is still valid. A lease found run out is dropped here.
    pub(crate) fn serving(&mut self, shard: ShardId) -> Result<FenceToken, Error> {
        let lease = self.fences.get(&shard).ok_or(Error::NotOwner(shard))?;
        if lease.is_valid(self.mono_ms()) {
            return Ok(lease.token);
        }
        let token = lease.token;
        self.lapse(token);
        Err(Error::LeaseLapsed(shard))
    }

    /// Stops serving the shard of `token` (if still held under that
    /// epoch) without releasing it: its lease ran out or was lost, so
    /// another node may hold it. Its entities leave memory.
    fn lapse(&mut self, token: FenceToken) {
        if self.fences.get(&token.shard).map(|l| l.token) != Some(token) {
            return;
        }
        self.fences.remove(&token.shard);
        self.board.remove(token);
        self.tell(OutboxEvent::Dropped(token));
        let before = self.entities.len();
        self.entities.retain(|key, _| key.shard != token.shard);
        self.after_passivation(before - self.entities.len());
        tracing::warn!(
            shard = token.shard,
            epoch = token.epoch,
            "stopped serving a shard whose lease ran out or was lost"
        );
    }

    /// Looks up, in one journal call, the caller-given command ids of the
    /// batch that its entities' windows cannot answer (the entity is not in
    /// memory, or the id is not among its window's candidates): new keys
    /// then cost no round trip each. A failed lookup is left to the
    /// per-command path, which reports it.
    async fn prefetch_command_ids(&self, requests: &[Request], batch: &mut Batch) {
        let lookups: Vec<(EntityKey, String)> = requests
            .iter()
            .filter_map(|r| match r {
                Request::Command(cmd) if cmd.digest.is_some() => Some(cmd),
                _ => None,
            })
            .filter(|cmd| {
                self.entities
                    .get(&cmd.key)
                    .is_none_or(|e| e.dedup.candidates(&cmd.command_id).next().is_none())
            })
            .map(|cmd| (cmd.key.clone(), cmd.command_id.clone()))
            // Ordered and without repeats (the same call on every run).
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if lookups.is_empty() {
            return;
        }
        match self.journal.find_command_ids(&lookups).await {
            Ok(found) => batch.indexed = lookups.into_iter().zip(found).collect(),
            Err(e) => tracing::debug!(error = %e, "prefetching command ids failed"),
        }
    }

    /// Claims the leases of `shards` and serves them from now on.
    async fn acquire(&mut self, shards: &[ShardId]) -> LeaseResult {
        let sent = self.mono_ms();
        let tokens = self
            .journal
            .claim_shards(shards)
            .await
            .map_err(Error::Storage)?;
        let valid_until = leases::valid_until(sent, self.journal.lease_ttl());
        for token in &tokens {
            let lease = HeldLease::new(*token, valid_until);
            self.board.insert(lease.clone());
            // The shard's entities in memory stay only if this claim directly
            // follows this worker's own lease (epoch + 1): any other claim in
            // between (another node took the shard, maybe wrote, released it)
            // moved the epoch further, and they are stale.
            let previous = self.fences.insert(token.shard, lease);
            if let Some(old) = &previous {
                self.tell(OutboxEvent::Dropped(old.token));
            }
            if previous.is_none_or(|old| old.token.epoch + 1 != token.epoch) {
                let before = self.entities.len();
                self.entities.retain(|key, _| key.shard != token.shard);
                self.after_passivation(before - self.entities.len());
            }
        }
        if !tokens.is_empty() {
            tracing::info!(shards = tokens.len(), "shards acquired");
            self.tell(OutboxEvent::Acquired(tokens.clone()));
        }
        Ok(tokens)
    }

    /// Stops serving `shards`: drops their entities and releases the leases.
    async fn release(&mut self, shards: &[ShardId]) -> LeaseResult {
        let tokens: Vec<FenceToken> = shards
            .iter()
            .filter_map(|shard| self.fences.remove(shard))
            .map(|lease| lease.token)
            .collect();
        if tokens.is_empty() {
            return Ok(tokens);
        }
        for token in &tokens {
            self.board.remove(*token);
            self.tell(OutboxEvent::Dropped(*token));
        }
        let released: HashSet<ShardId> = tokens.iter().map(|t| t.shard).collect();
        let before = self.entities.len();
        self.entities
            .retain(|key, _| !released.contains(&key.shard));
        self.after_passivation(before - self.entities.len());
        self.journal
            .release_shards(&tokens)
            .await
            .map_err(Error::Storage)?;
        tracing::info!(shards = tokens.len(), "shards released");
        Ok(tokens)
    }
}
