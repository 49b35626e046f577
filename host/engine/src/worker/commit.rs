//! The end of a worker's batch: one journal append for every entity that
//! has new events or refusals to record, then the replies, snapshots and
//! the batch's reads.
//!
//! Invariants: a reply leaves only after its entity's append returned `Ok`
//! (or with that append's error); an entity whose append failed leaves
//! memory, so its next request recovers it from the journal; views and
//! state reads are answered after the append, never from undurable state;
//! a reply not backed by a successful append of its entity (a view, a
//! command that persisted nothing) leaves only while the shard's lease is
//! still valid.

use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use tokio::sync::oneshot;
use tracing::{Instrument, Span};

use stead_journal::{
    AppendError, CommandIdRecord, EntityAppend, EntityKey, EventRecord, OutboxSend, SnapshotRecord,
    TimerWrite,
};
use stead_runtime::Deployment;

use super::Worker;
use crate::Error;
use crate::outbox::OutboxEvent;
use crate::request::{CommandReply, ViewRequest};

/// What one batch has gathered for its end.
pub(crate) struct Batch {
    /// The wall time commands of this batch see (`now-ms`), also stored as
    /// their events' timestamp.
    pub(crate) now_ms: u64,
    pub(crate) pending: Vec<Pending>,
    pub(crate) staged: HashMap<EntityKey, Staged>,
    pub(crate) views: Vec<ViewRequest>,
    /// The journal's index entries of the caller-given command ids of this
    /// batch, fetched in one call before it runs (a shared journal answers
    /// each lookup with a round trip); `None`: not in the index.
    pub(crate) indexed: HashMap<(EntityKey, String), Option<CommandIdRecord>>,
    #[cfg(feature = "testing")]
    pub(crate) states: Vec<ViewRequest>,
    #[cfg(feature = "testing")]
    pub(crate) seeds: Vec<crate::request::SeedRequest>,
}

impl Batch {
    pub(crate) fn new(now_ms: u64) -> Self {
        Self {
            now_ms,
            pending: Vec::new(),
            staged: HashMap::new(),
            views: Vec::new(),
            indexed: HashMap::new(),
            #[cfg(feature = "testing")]
            states: Vec::new(),
            #[cfg(feature = "testing")]
            seeds: Vec::new(),
        }
    }
}

/// A command accepted by the guest, waiting for its entity's append.
pub(crate) struct Pending {
    pub(crate) key: EntityKey,
    pub(crate) reply_tx: oneshot::Sender<Result<CommandReply, Error>>,
    pub(crate) reply: Vec<u8>,
    pub(crate) seq_nr: u64,
    pub(crate) duplicate: bool,
    /// The entity refused the command: this error is the reply, once the
    /// refusal is recorded with the entity's append.
    pub(crate) refused: Option<Error>,
    /// The command's digest when its id is the caller's.
    pub(crate) digest: Option<[u8; 32]>,
    pub(crate) span: Span,
}

/// One entity's events staged in this batch.
pub(crate) struct Staged {
    pub(crate) expected_seq_nr: u64,
    pub(crate) events: Vec<EventRecord>,
    /// Caller-given command ids of these events, indexed with them.
    pub(crate) command_ids: Vec<CommandIdRecord>,
    /// Sends of these events' commands (the outbox), written with them.
    pub(crate) sends: Vec<OutboxSend>,
    /// Timer changes of these events' commands, in order.
    pub(crate) timers: Vec<TimerWrite>,
    /// The deployment that produced the events: its snapshot policy and
    /// version apply once they are durable.
    pub(crate) deployment: Arc<Deployment>,
}

impl Worker {
    /// Appends the batch's events, replies to its commands, then answers
    /// its reads.
    pub(crate) async fn finish(&mut self, batch: Batch) {
        self.commit(batch.pending, batch.staged).await;
        #[cfg(feature = "testing")]
        {
            for seed in batch.seeds {
                let result = self.seed(&seed.key, seed.events).await;
                let _ = seed.reply.send(result);
            }
            for req in batch.states {
                let result = self.state_of(&req.key).await;
                let _ = req.reply.send(result);
            }
        }
        for view in batch.views {
            let span = view.span.clone();
            let result = match self.serving(view.key.shard) {
                Ok(_) => self.view(&view.key).instrument(span).await,
                Err(e) => Err(e),
            };
            let _ = view.reply.send(result);
        }
    }

    /// Appends the staged events of every entity in one journal call, then
    /// replies to the pending commands.
    async fn commit(&mut self, pending: Vec<Pending>, staged: HashMap<EntityKey, Staged>) {
        let mut failed: HashMap<EntityKey, Error> = HashMap::new();
        // Entities whose append succeeded: the journal's fence proved the
        // lease theirs at commit, so their replies need no other check.
        let mut appended: HashSet<EntityKey> = HashSet::new();
        if !staged.is_empty() {
            let mut appends = Vec::with_capacity(staged.len());
            let mut deployments = Vec::with_capacity(staged.len());
            // What the courier is told once each entity's append is durable.
            let mut outgoing = Vec::with_capacity(staged.len());
            // In key order, not the map's: the journal sees the same call
            // for the same batch on every run (the simulator replays seeds).
            let mut staged: Vec<(EntityKey, Staged)> = staged.into_iter().collect();
            staged.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (key, s) in staged {
                let Some(fence) = self.fences.get(&key.shard).map(|l| l.token) else {
                    failed.insert(key.clone(), Error::NotOwner(key.shard));
                    continue;
                };
                deployments.push((key.clone(), s.deployment));
                let messages = !s.sends.is_empty() || !s.timers.is_empty();
                outgoing.push(messages.then(|| OutboxEvent::Committed {
                    fence,
                    key: key.clone(),
                    sends: s.sends.clone(),
                    timers: s.timers.clone(),
                }));
                appends.push(EntityAppend {
                    key,
                    expected_seq_nr: s.expected_seq_nr,
                    fence,
                    events: s.events,
                    command_ids: s.command_ids,
                    sends: s.sends,
                    timers: s.timers,
                });
            }
            let results = self.journal.append(appends).await;
            for (((key, deployment), result), event) in
                deployments.into_iter().zip(results).zip(outgoing)
            {
                match result {
                    Ok(()) => {
                        if let Some(event) = event {
                            self.tell(event);
                        }
                        self.after_durable(&key, &deployment).await;
                        appended.insert(key);
                    }
                    Err(e) => {
                        if let (
                            Some(OutboxEvent::Committed { fence, .. }),
                            AppendError::Storage(_),
                        ) = (&event, &e)
                        {
                            self.tell(OutboxEvent::Unsure(*fence));
                        }
                        tracing::warn!(entity = %key, error = %e, "append failed; entity dropped from memory");
                        failed.insert(key, Error::from(e));
                    }
                }
            }
            for key in failed.keys() {
                self.entities.remove(key);
            }
        }
        for p in pending {
            let _enter = p.span.enter();
            // A reply that persisted nothing is a read of memory: only
            // while the lease is still valid.
            let unfenced = if appended.contains(&p.key) {
                None
            } else {
                self.serving(p.key.shard).err()
            };
            let result = match failed
                .get(&p.key)
                .or(unfenced.as_ref())
                .or(p.refused.as_ref())
            {
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
    async fn after_durable(&mut self, key: &EntityKey, deployment: &Deployment) {
        let journal = self.journal.clone();
        let Some(entity) = self.entities.get_mut(key) else {
            return;
        };
        entity.durable_seq_nr = entity.seq_nr;
        let every = u64::from(deployment.info.snapshot_every);
        if every == 0 || entity.seq_nr - entity.snapshot_seq_nr < every {
            return;
        }
        let snapshot = SnapshotRecord {
            seq_nr: entity.seq_nr,
            version: deployment.hash.clone(),
            state: entity.state.clone(),
            dedup: entity.dedup.entries(),
        };
        match journal.save_snapshot(key, &snapshot).await {
            Ok(()) => {
                entity.snapshot_seq_nr = entity.seq_nr;
                tracing::debug!(seq_nr = entity.seq_nr, "snapshot saved");
            }
            // A snapshot is an optimisation: recovery replays more instead.
            Err(e) => tracing::warn!(entity = %key, error = %e, "snapshot not saved"),
        }
    }

    /// Appends `events` to an entity as if commands had emitted them.
    #[cfg(feature = "testing")]
    async fn seed(&mut self, key: &EntityKey, events: Vec<Vec<u8>>) -> Result<u64, Error> {
        self.entities.remove(key);
        let fence = self.serving(key.shard)?;
        let last = self
            .journal
            .last_seq_nr(key)
            .await
            .map_err(Error::Storage)?;
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
            command_ids: Vec::new(),
            sends: Vec::new(),
            timers: Vec::new(),
        };
        match self.journal.append(vec![append]).await.pop() {
            Some(Ok(())) => Ok(last + n),
            Some(Err(e)) => Err(Error::from(e)),
            None => Err(Error::Internal("the journal returned no result".into())),
        }
    }
}
