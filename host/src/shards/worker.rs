//! A shard worker: one OS thread owning a set of shards and every active
//! entity in them.
//!
//! The loop takes a batch of queued requests, runs each command through the
//! guest (one pooled instance per entity type), appends every entity's new
//! events in one journal call (group commit across workers), then replies.
//! Views are answered after the batch's appends, so they never show state
//! that is not durable.
//!
//! Invariants:
//! - **One writer per entity**: only this thread touches its entities, in
//!   queue order; an entity's commands in one batch chain on each other's
//!   state and are appended as one run with one expected sequence number.
//! - **Acknowledged = durable**: a command's reply (even one that persisted
//!   nothing, which may depend on earlier commands of the batch) is sent only
//!   after its entity's append returned `Ok`.
//! - A failed append drops the entity from memory, so its next command
//!   recovers it from the journal; its commands in the batch fail.
//! - No task, instance or lock per entity: an active entity is its state,
//!   sequence numbers, dedup window and last-use time.

// foldhash: these maps are hit several times per command and keyed by
// caller-chosen ids (seeded, so collisions cannot be planned).
use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tracing::Span;

use super::entity::{ActivationError, ActiveEntity, activate};
use super::memory;
use super::{CommandError, CommandReply, WorkerStats};
use crate::config::{Limits, ShardOptions};
use crate::journal::{
    AppendError, EntityAppend, EntityKey, EventRecord, FenceToken, Journal, ShardId,
};
use crate::runtime::{Deployment, GuestFault, GuestInstance, Registry, Rejection};

/// A request to a worker.
pub(crate) enum Request {
    Command(CommandRequest),
    View(ViewRequest),
    /// Passivate every entity now (tests and benchmarks); replies how many.
    PassivateAll(oneshot::Sender<usize>),
    Stats(oneshot::Sender<WorkerStats>),
    /// The raw state bytes of an entity (the test harness reads them).
    State(ViewRequest),
    /// Appends events as if earlier commands had emitted them (the test
    /// harness's `given`); the entity is recovered from them next time.
    Seed(SeedRequest),
}

pub(crate) struct SeedRequest {
    pub(crate) key: EntityKey,
    pub(crate) events: Vec<Vec<u8>>,
    pub(crate) reply: oneshot::Sender<Result<u64, CommandError>>,
}

pub(crate) struct CommandRequest {
    pub(crate) key: EntityKey,
    pub(crate) command: Vec<u8>,
    pub(crate) command_id: String,
    pub(crate) reply: oneshot::Sender<Result<CommandReply, CommandError>>,
    /// Not started after this instant: the caller has given up or is about to.
    pub(crate) deadline: Instant,
    pub(crate) span: Span,
}

pub(crate) struct ViewRequest {
    pub(crate) key: EntityKey,
    pub(crate) reply: oneshot::Sender<Result<Vec<u8>, CommandError>>,
    pub(crate) span: Span,
}

/// Everything a worker needs, moved into its thread.
pub(crate) struct Worker {
    pub(crate) journal: Arc<dyn Journal>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) options: ShardOptions,
    pub(crate) limits: Limits,
    pub(crate) fences: HashMap<ShardId, FenceToken>,
    pub(crate) entities: HashMap<EntityKey, ActiveEntity>,
    pub(crate) instances: HashMap<String, GuestInstance>,
    /// Requests held back by the activation budget, first in the next batch.
    pub(crate) deferred: Vec<Request>,
    pub(crate) started: Instant,
    pub(crate) activations: u64,
    pub(crate) passivations: u64,
    pub(crate) deferred_total: u64,
    /// When non-zero, the clock commands see (ms since the Unix epoch).
    pub(crate) clock_override: Arc<AtomicU64>,
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

/// A command accepted by the guest, waiting for its entity's append.
struct Pending {
    key: EntityKey,
    reply_tx: oneshot::Sender<Result<CommandReply, CommandError>>,
    reply: Vec<u8>,
    seq_nr: u64,
    duplicate: bool,
    span: Span,
}

/// One entity's events staged in this batch.
struct Staged {
    expected_seq_nr: u64,
    events: Vec<EventRecord>,
}

impl Worker {
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        let sweep_every = (self.options.idle_timeout / 4).max(Duration::from_millis(50));
        let mut last_sweep = Instant::now();
        loop {
            // Deferred requests go first, in their order; wait for new ones
            // only when there are none.
            let mut batch = std::mem::take(&mut self.deferred);
            if batch.is_empty() {
                match rx.recv_timeout(sweep_every) {
                    Ok(request) => batch.push(request),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            if !batch.is_empty() {
                while batch.len() < self.options.max_batch {
                    match rx.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                self.process(batch);
            }
            if last_sweep.elapsed() >= sweep_every {
                self.passivate_idle();
                last_sweep = Instant::now();
            }
        }
    }

    fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn passivate_idle(&mut self) {
        let now = self.clock_ms();
        let idle = u64::try_from(self.options.idle_timeout.as_millis()).unwrap_or(u64::MAX);
        let before = self.entities.len();
        self.entities
            .retain(|_, e| now.saturating_sub(e.last_used_ms) < idle);
        let passivated = before - self.entities.len();
        if passivated > 0 {
            self.passivations += passivated as u64;
            tracing::debug!(
                passivated,
                active = self.entities.len(),
                "passivated idle entities"
            );
            if self.entities.is_empty() {
                self.entities = HashMap::new();
            } else if self.entities.capacity() > 4 * self.entities.len() {
                self.entities.shrink_to_fit();
            }
            if passivated >= memory::RELEASE_AFTER_PASSIVATIONS {
                memory::release_free_memory();
            }
        }
    }

    fn process(&mut self, batch: Vec<Request>) {
        let now_ms = match self.clock_override.load(Ordering::Relaxed) {
            0 => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            fixed => fixed,
        };
        let mut pending: Vec<Pending> = Vec::new();
        let mut staged: HashMap<EntityKey, Staged> = HashMap::new();
        let mut views: Vec<ViewRequest> = Vec::new();
        let mut states: Vec<ViewRequest> = Vec::new();
        let mut seeds: Vec<SeedRequest> = Vec::new();
        let mut budget = Activations {
            left: self.options.max_activations_per_batch.max(1),
            deferred: HashSet::new(),
        };
        for request in batch {
            match request {
                Request::Command(cmd) => {
                    if budget.defer(&cmd.key, &self.entities) {
                        self.deferred_total += 1;
                        self.deferred.push(Request::Command(cmd));
                        continue;
                    }
                    let span = cmd.span.clone();
                    let _enter = span.enter();
                    if Instant::now() >= cmd.deadline {
                        tracing::debug!("deadline passed in the queue: not executed");
                        let _ = cmd.reply.send(Err(CommandError::DeadlineExceeded(
                            "the command waited in the queue past its deadline and was not executed; it is safe to retry".into(),
                        )));
                        continue;
                    }
                    self.handle(cmd, now_ms, &mut pending, &mut staged);
                }
                Request::View(view) => {
                    if budget.defer(&view.key, &self.entities) {
                        self.deferred_total += 1;
                        self.deferred.push(Request::View(view));
                    } else {
                        views.push(view);
                    }
                }
                Request::State(req) => {
                    // After this batch's commits, like a view.
                    states.push(req);
                }
                Request::Seed(req) => seeds.push(req),
                Request::PassivateAll(tx) => {
                    let n = self.entities.len();
                    self.passivations += n as u64;
                    self.entities = HashMap::new();
                    if n >= memory::RELEASE_AFTER_PASSIVATIONS {
                        memory::release_free_memory();
                    }
                    let _ = tx.send(n);
                }
                Request::Stats(tx) => {
                    let _ = tx.send(WorkerStats {
                        active_entities: self.entities.len(),
                        activations: self.activations,
                        deferred: self.deferred_total,
                        passivations: self.passivations,
                    });
                }
            }
        }
        self.commit(pending, staged);
        for seed in seeds {
            let result = self.seed(&seed.key, seed.events);
            let _ = seed.reply.send(result);
        }
        for req in states {
            let result = self.state_of(&req.key);
            let _ = req.reply.send(result);
        }
        for view in views {
            let span = view.span.clone();
            let _enter = span.enter();
            let result = self.view(&view.key);
            let _ = view.reply.send(result);
        }
    }

    /// The live deployment of a type and an instance of it from the pool.
    fn instance_for(
        &mut self,
        entity_type: &str,
    ) -> Result<(Arc<Deployment>, GuestInstance), CommandError> {
        let deployment = self
            .registry
            .get(entity_type)
            .ok_or_else(|| CommandError::UnknownType(entity_type.to_owned()))?;
        let instance = match self.instances.remove(entity_type) {
            // A new deployment replaces pooled instances of the old one.
            Some(instance) if instance.deployment_hash == deployment.hash => instance,
            _ => deployment
                .instantiate()
                .map_err(|fault| CommandError::GuestFault {
                    entity_type: entity_type.to_owned(),
                    fault,
                })?,
        };
        Ok((deployment, instance))
    }

    /// Puts an instance back into the pool (only after a call that did not fault).
    fn release(&mut self, entity_type: &str, instance: GuestInstance) {
        self.instances.insert(entity_type.to_owned(), instance);
    }

    /// Makes sure `key` is in memory, recovering it if needed.
    fn ensure_active(
        &mut self,
        key: &EntityKey,
        instance: &mut GuestInstance,
    ) -> Result<(), CommandError> {
        if !self.entities.contains_key(key) {
            let entity = activate(
                self.journal.as_ref(),
                instance,
                key,
                self.options.dedup_window,
                false,
            )
            .map_err(|e| activation_error(key, e))?;
            self.activations += 1;
            tracing::debug!(seq_nr = entity.seq_nr, "activated");
            self.entities.insert(key.clone(), entity);
        }
        let now = self.clock_ms();
        if let Some(entity) = self.entities.get_mut(key) {
            entity.last_used_ms = now;
        }
        Ok(())
    }

    fn handle(
        &mut self,
        cmd: CommandRequest,
        now_ms: u64,
        pending: &mut Vec<Pending>,
        staged: &mut HashMap<EntityKey, Staged>,
    ) {
        let CommandRequest {
            key,
            command,
            command_id,
            reply,
            span,
            deadline: _,
        } = cmd;
        let (deployment, mut instance) = match self.instance_for(&key.entity_type) {
            Ok(found) => found,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if let Err(e) = self.ensure_active(&key, &mut instance) {
            // Activation faults discard the instance; journal errors keep it.
            if !matches!(e, CommandError::GuestFault { .. }) {
                self.release(&key.entity_type, instance);
            }
            let _ = reply.send(Err(e));
            return;
        }
        // Deduplication: a command id already persisted for this entity gets
        // the original reply and persists nothing.
        match self.find_duplicate(&key, &command_id, pending) {
            Ok(Some((seq_nr, original))) => {
                self.release(&key.entity_type, instance);
                tracing::debug!(seq_nr, "duplicate command id: original reply");
                pending.push(Pending {
                    key,
                    reply_tx: reply,
                    reply: original,
                    seq_nr,
                    duplicate: true,
                    span,
                });
                return;
            }
            Ok(None) => {}
            Err(e) => {
                self.release(&key.entity_type, instance);
                let _ = reply.send(Err(e));
                return;
            }
        }
        let Some(entity) = self.entities.get(&key) else {
            self.release(&key.entity_type, instance);
            let _ = reply.send(Err(CommandError::Internal(
                "entity vanished after activation".into(),
            )));
            return;
        };
        let seq_before = entity.seq_nr;
        let outcome = instance.handle_command(
            &key.entity_type,
            &key.entity_id,
            seq_before,
            now_ms,
            &command_id,
            &entity.state,
            &command,
        );
        let outcome = match outcome {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(rejection)) => {
                self.release(&key.entity_type, instance);
                let error = match rejection {
                    Rejection::Rejected(m) => CommandError::Rejected(m),
                    Rejection::InvalidCommand(m) => CommandError::InvalidCommand(m),
                    Rejection::InvalidState(m) => CommandError::GuestFault {
                        entity_type: key.entity_type.clone(),
                        fault: GuestFault::InvalidOutput(format!(
                            "the guest cannot decode this entity's state: {m}"
                        )),
                    },
                };
                tracing::debug!(error = %error, "command refused");
                let _ = reply.send(Err(error));
                return;
            }
            Err(fault) => {
                // The instance is dropped here: never reuse one that faulted.
                tracing::warn!(entity_type = %key.entity_type, entity_id = %key.entity_id, fault = %fault, "guest fault");
                let _ = reply.send(Err(CommandError::GuestFault {
                    entity_type: key.entity_type.clone(),
                    fault,
                }));
                return;
            }
        };
        if let Err(fault) =
            self.check_outcome(&outcome.events, &outcome.reply, outcome.state.as_deref())
        {
            self.release(&key.entity_type, instance);
            tracing::warn!(entity_type = %key.entity_type, entity_id = %key.entity_id, fault = %fault, "guest returned invalid effects");
            let _ = reply.send(Err(CommandError::GuestFault {
                entity_type: key.entity_type.clone(),
                fault,
            }));
            return;
        }
        // The new state: the guest's, or the fold of its events.
        let new_state = match outcome.state {
            Some(state) => state,
            None => {
                // Bounded: the command's events passed the per-command limits.
                let state = match instance.apply_events(
                    &key.entity_type,
                    &key.entity_id,
                    &entity.state,
                    &outcome.events,
                ) {
                    Ok(state) => state,
                    Err(fault) => {
                        let _ = reply.send(Err(CommandError::GuestFault {
                            entity_type: key.entity_type.clone(),
                            fault,
                        }));
                        return;
                    }
                };
                if state.len() > self.limits.max_state_bytes {
                    self.release(&key.entity_type, instance);
                    let _ = reply.send(Err(CommandError::GuestFault {
                        entity_type: key.entity_type.clone(),
                        fault: GuestFault::InvalidOutput(format!(
                            "state of {} bytes exceeds the limit of {}",
                            state.len(),
                            self.limits.max_state_bytes
                        )),
                    }));
                    return;
                }
                state
            }
        };
        self.release(&key.entity_type, instance);
        let _ = deployment;
        let n = outcome.events.len() as u64;
        let seq_after = seq_before + n;
        span.record("seq_nr", seq_after);
        if n > 0 {
            let entry = staged.entry(key.clone()).or_insert_with(|| Staged {
                expected_seq_nr: seq_before,
                events: Vec::new(),
            });
            let last = outcome.events.len() - 1;
            for (i, payload) in outcome.events.into_iter().enumerate() {
                entry.events.push(EventRecord {
                    command_id: command_id.clone(),
                    timestamp_ms: now_ms,
                    payload,
                    reply: (i == last).then(|| outcome.reply.clone()),
                });
            }
        }
        if let Some(entity) = self.entities.get_mut(&key) {
            entity.state = new_state;
            entity.seq_nr = seq_after;
            if n > 0 {
                entity
                    .dedup
                    .push(&command_id, seq_after, self.options.dedup_window);
            }
        }
        pending.push(Pending {
            key,
            reply_tx: reply,
            reply: outcome.reply,
            seq_nr: seq_after,
            duplicate: false,
            span,
        });
    }

    /// Looks the command id up in the entity's window; a hash match is
    /// confirmed against the stored event (or this batch's pending replies).
    fn find_duplicate(
        &self,
        key: &EntityKey,
        command_id: &str,
        pending: &[Pending],
    ) -> Result<Option<(u64, Vec<u8>)>, CommandError> {
        let Some(entity) = self.entities.get(key) else {
            return Ok(None);
        };
        for seq_nr in entity.dedup.candidates(command_id) {
            if seq_nr > entity.durable_seq_nr {
                // Persisted in this batch: its reply is pending here.
                if let Some(p) = pending
                    .iter()
                    .find(|p| !p.duplicate && p.key == *key && p.seq_nr == seq_nr)
                {
                    return Ok(Some((seq_nr, p.reply.clone())));
                }
                continue;
            }
            let events = self
                .journal
                .read_events(key, seq_nr, 1)
                .map_err(CommandError::Storage)?;
            if let Some(event) = events.first()
                && event.seq_nr == seq_nr
                && event.record.command_id == command_id
                && let Some(reply) = &event.record.reply
            {
                return Ok(Some((seq_nr, reply.clone())));
            }
        }
        Ok(None)
    }

    fn check_outcome(
        &self,
        events: &[Vec<u8>],
        reply: &[u8],
        state: Option<&[u8]>,
    ) -> Result<(), GuestFault> {
        let limits = &self.limits;
        if events.len() > limits.max_events_per_command {
            return Err(GuestFault::InvalidOutput(format!(
                "{} events exceed the limit of {} per command",
                events.len(),
                limits.max_events_per_command
            )));
        }
        for (i, event) in events.iter().enumerate() {
            if event.len() > limits.max_event_bytes {
                return Err(GuestFault::InvalidOutput(format!(
                    "event {i} of {} bytes exceeds the limit of {}",
                    event.len(),
                    limits.max_event_bytes
                )));
            }
            if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(event) {
                return Err(GuestFault::InvalidOutput(format!(
                    "event {i} is not JSON: {e}"
                )));
            }
        }
        if reply.len() > limits.max_reply_bytes {
            return Err(GuestFault::InvalidOutput(format!(
                "reply of {} bytes exceeds the limit of {}",
                reply.len(),
                limits.max_reply_bytes
            )));
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(reply) {
            return Err(GuestFault::InvalidOutput(format!("reply is not JSON: {e}")));
        }
        if let Some(state) = state
            && state.len() > limits.max_state_bytes
        {
            return Err(GuestFault::InvalidOutput(format!(
                "state of {} bytes exceeds the limit of {}",
                state.len(),
                limits.max_state_bytes
            )));
        }
        Ok(())
    }

    /// Appends the batch's events, then replies to its commands.
    fn commit(&mut self, pending: Vec<Pending>, staged: HashMap<EntityKey, Staged>) {
        let mut failed: HashMap<EntityKey, CommandError> = HashMap::new();
        if !staged.is_empty() {
            let mut appends = Vec::with_capacity(staged.len());
            for (key, s) in staged {
                let Some(fence) = self.fences.get(&key.shard).copied() else {
                    failed.insert(key.clone(), CommandError::NotOwner(key.shard));
                    continue;
                };
                appends.push(EntityAppend {
                    key,
                    expected_seq_nr: s.expected_seq_nr,
                    fence,
                    events: s.events,
                });
            }
            let keys: Vec<EntityKey> = appends.iter().map(|a| a.key.clone()).collect();
            let results = self.journal.append(appends);
            for (key, result) in keys.into_iter().zip(results) {
                match result {
                    Ok(()) => self.after_durable(&key),
                    Err(e) => {
                        tracing::warn!(entity = %key, error = %e, "append failed; entity dropped from memory");
                        failed.insert(key, append_error(e));
                    }
                }
            }
            for key in failed.keys() {
                self.entities.remove(key);
            }
        }
        for p in pending {
            let _enter = p.span.enter();
            let result = match failed.get(&p.key) {
                Some(error) => Err(error.clone()),
                None => Ok(CommandReply {
                    reply: p.reply,
                    seq_nr: p.seq_nr,
                    duplicate: p.duplicate,
                }),
            };
            let _ = p.reply_tx.send(result);
        }
    }

    /// Marks an entity's events durable and snapshots it per its policy.
    fn after_durable(&mut self, key: &EntityKey) {
        let Some(entity) = self.entities.get_mut(key) else {
            return;
        };
        entity.durable_seq_nr = entity.seq_nr;
        let Some(deployment) = self.registry.get(&key.entity_type) else {
            return;
        };
        let every = u64::from(deployment.info.snapshot_every);
        if every == 0 || entity.seq_nr - entity.snapshot_seq_nr < every {
            return;
        }
        let snapshot = crate::journal::SnapshotRecord {
            seq_nr: entity.seq_nr,
            version: deployment.hash.clone(),
            state: entity.state.clone(),
            dedup: entity.dedup.entries(),
        };
        match self.journal.save_snapshot(key, &snapshot) {
            Ok(()) => {
                entity.snapshot_seq_nr = entity.seq_nr;
                tracing::debug!(seq_nr = entity.seq_nr, "snapshot saved");
            }
            // A snapshot is an optimisation: recovery replays more instead.
            Err(e) => tracing::warn!(entity = %key, error = %e, "snapshot not saved"),
        }
    }

    fn seed(&mut self, key: &EntityKey, events: Vec<Vec<u8>>) -> Result<u64, CommandError> {
        self.entities.remove(key);
        let fence = *self
            .fences
            .get(&key.shard)
            .ok_or(CommandError::NotOwner(key.shard))?;
        let last = self
            .journal
            .last_seq_nr(key)
            .map_err(CommandError::Storage)?;
        let n = events.len() as u64;
        if n == 0 {
            return Ok(last);
        }
        let records = events
            .into_iter()
            .map(|payload| EventRecord {
                command_id: String::new(),
                timestamp_ms: 0,
                payload,
                reply: None,
            })
            .collect();
        let append = EntityAppend {
            key: key.clone(),
            expected_seq_nr: last,
            fence,
            events: records,
        };
        match self.journal.append(vec![append]).pop() {
            Some(Ok(())) => Ok(last + n),
            Some(Err(e)) => Err(append_error(e)),
            None => Err(CommandError::Internal(
                "the journal returned no result".into(),
            )),
        }
    }

    fn state_of(&mut self, key: &EntityKey) -> Result<Vec<u8>, CommandError> {
        let (_deployment, mut instance) = self.instance_for(&key.entity_type)?;
        let activated = self.ensure_active(key, &mut instance);
        if !matches!(activated, Err(CommandError::GuestFault { .. })) {
            self.release(&key.entity_type, instance);
        }
        activated?;
        self.entities
            .get(key)
            .map(|e| e.state.clone())
            .ok_or_else(|| CommandError::Internal("entity vanished after activation".into()))
    }

    fn view(&mut self, key: &EntityKey) -> Result<Vec<u8>, CommandError> {
        let (_deployment, mut instance) = self.instance_for(&key.entity_type)?;
        if let Err(e) = self.ensure_active(key, &mut instance) {
            if !matches!(e, CommandError::GuestFault { .. }) {
                self.release(&key.entity_type, instance);
            }
            return Err(e);
        }
        let state = match self.entities.get(key) {
            Some(entity) => &entity.state,
            None => {
                return Err(CommandError::Internal(
                    "entity vanished after activation".into(),
                ));
            }
        };
        match instance.view(&key.entity_type, &key.entity_id, state) {
            Ok(view) => {
                self.release(&key.entity_type, instance);
                if view.len() > self.limits.max_reply_bytes {
                    return Err(CommandError::GuestFault {
                        entity_type: key.entity_type.clone(),
                        fault: GuestFault::InvalidOutput(format!(
                            "view of {} bytes exceeds the limit of {}",
                            view.len(),
                            self.limits.max_reply_bytes
                        )),
                    });
                }
                Ok(view)
            }
            Err(fault) => Err(CommandError::GuestFault {
                entity_type: key.entity_type.clone(),
                fault,
            }),
        }
    }
}

fn activation_error(key: &EntityKey, e: ActivationError) -> CommandError {
    match e {
        ActivationError::Journal(e) => CommandError::Storage(e),
        ActivationError::Guest(fault) => CommandError::GuestFault {
            entity_type: key.entity_type.clone(),
            fault,
        },
        ActivationError::Gap { .. } => {
            CommandError::Storage(crate::journal::JournalError::Corrupt {
                key: key.to_string(),
                reason: e.to_string(),
            })
        }
    }
}

fn append_error(e: AppendError) -> CommandError {
    match e {
        AppendError::Conflict { .. } => CommandError::Conflict(e.to_string()),
        AppendError::Fenced { shard, .. } => CommandError::NotOwner(shard),
        AppendError::Invalid { .. } => CommandError::Internal(e.to_string()),
        AppendError::Storage(e) => CommandError::Storage(e),
    }
}
