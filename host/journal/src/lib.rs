//! The event journal: the only durable state of entities.
//!
//! [`Journal`] is the storage trait every backend implements (the embedded
//! sled backend in the `stead-journal-sled` crate, the in-memory one in
//! [`memory`]; a shared backend for clusters later), and [`conformance`]
//! (feature `conformance`) is the suite every backend must pass: named cases
//! plus a model-based property test, through one entry point.
//!
//! An entity is named by its type and id; its shard is derived from them
//! (and kept beside its events), so one type and id never appear under two
//! shards. A backend may key entities by type and id alone.
//!
//! Guarantees of every backend (the suite checks them):
//! - **Ordering**: an entity's events have sequence numbers 1, 2, 3, ... with
//!   no gaps; [`Journal::read_events`] returns them in that order.
//! - **Expected sequence numbers**: an append names the entity's last sequence
//!   number as the writer believes it; on mismatch it fails with
//!   [`AppendError::Conflict`] and writes nothing for that entity.
//! - **Fencing**: an append carries the [`FenceToken`] of the shard's lease;
//!   a token that is not the shard's current one fails with
//!   [`AppendError::Fenced`]. A stale owner can never write.
//! - **Leases**: a shared backend's leases expire ([`Journal::lease_ttl`])
//!   unless renewed ([`Journal::renew_shards`]); a claim takes only shards
//!   that are free, released, expired or already this journal's.
//! - **Atomicity**: one entity's events of one append are all written or none.
//! - **Durable on success**: when `append` returns `Ok` for an entity, its
//!   events survive a crash and a power loss. Concurrent appends share one
//!   durable flush (group commit).
//! - **Command ids**: the command ids an append indexes are written in the
//!   same atomic step as its events (both or neither); one is found by
//!   [`Journal::find_command_id`] until the shard's holder expires it. A
//!   refused command's id is indexed with its refusal by an append without
//!   events, fenced and sequence-checked like any other.
//! - **Outbox**: an append's sends and timer changes ([`outbox`]) are
//!   written in the same atomic step as its events; they stay until the
//!   shard's holder acknowledges them (fenced), across reopens and claims.
//! - **Streams**: every event appended gets a position in its shard's
//!   stream, in commit order, in the same atomic step ([`stream`]);
//!   [`Journal::read_stream`] reads durable events only, and nothing ever
//!   appears behind a position read.
//!
//! A shared backend also keeps the deployed components
//! ([`DeploymentStore`]), so every node serves the same versions.
//!
//! The engine awaits the journal through [`AsyncJournal`]: a blocking
//! backend runs inline ([`Inline`]), a networked one answers when it can.
//!
//! The journal knows nothing of wasm, shards' workers or commands' meaning.

pub mod asynchronous;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod memory;
pub mod outbox;
pub mod record;
pub mod stream;

use std::sync::Arc;

pub use asynchronous::{AsyncJournal, BoxFuture, Inline};
pub use memory::{MemoryJournal, MemoryStore};
pub use outbox::{Answer, FiredTimer, OutboxSend, PendingSend, PendingTimer, SendId, TimerWrite};
pub use record::{CommandIdRecord, EventRecord, Refusal, SnapshotRecord};
pub use stead_types::{EntityKey, FenceToken, ShardId};
pub use stream::{Cursor, CursorError, StreamEvent};

/// Events to append to one entity.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EntityAppend {
    pub key: EntityKey,
    /// The entity's last sequence number as the writer knows it (0 if none).
    pub expected_seq_nr: u64,
    /// The fence token of the entity's shard.
    pub fence: FenceToken,
    /// Events, persisted as `expected_seq_nr + 1, + 2, ...`. Not empty.
    pub events: Vec<EventRecord>,
    /// Caller-given command ids of these events' commands, indexed in the
    /// same atomic write; each `seq_nr` is one of this append's events.
    pub command_ids: Vec<CommandIdRecord>,
    /// Sends of these events' commands, written in the same atomic step
    /// (the outbox); each `seq_nr` is one of this append's events.
    pub sends: Vec<OutboxSend>,
    /// Timer changes of these events' commands, applied in order in the
    /// same atomic step.
    pub timers: Vec<TimerWrite>,
}

impl EntityAppend {
    /// Checks what every backend refuses as `Invalid` (before the fence and
    /// the sequence number): no events, another shard's fence, an indexed
    /// command id outside this append's events.
    pub fn check(&self) -> Result<(), AppendError> {
        let invalid = |reason: String| {
            Err(AppendError::Invalid {
                key: self.key.clone(),
                reason,
            })
        };
        // An append without events only records refusals (nothing else
        // may go without the events that cause it).
        let refusals_only = !self.command_ids.is_empty()
            && self.command_ids.iter().all(|c| c.refusal.is_some())
            && self.sends.is_empty()
            && self.timers.is_empty();
        if self.events.is_empty() && !refusals_only {
            return invalid("no events".into());
        }
        if self.fence.shard != self.key.shard {
            return invalid(format!("fence token is for shard {}", self.fence.shard));
        }
        let last = self.expected_seq_nr + self.events.len() as u64;
        // A refusal is recorded at the entity's last seq-nr when it refused.
        if let Some(c) = self.command_ids.iter().find(|c| {
            let below = match c.refusal {
                Some(_) => false,
                None => c.seq_nr <= self.expected_seq_nr,
            };
            below || c.seq_nr > last || c.command_id.is_empty()
        }) {
            return invalid(format!(
                "command id `{}` indexed at seq-nr {} outside the appended {}..={last}",
                c.command_id,
                c.seq_nr,
                self.expected_seq_nr + 1
            ));
        }
        let outside = |seq_nr: u64| seq_nr <= self.expected_seq_nr || seq_nr > last;
        if let Some(send) = self.sends.iter().find(|s| outside(s.seq_nr)) {
            return invalid(format!(
                "send {} at seq-nr {} outside the appended {}..={last}",
                send.index,
                send.seq_nr,
                self.expected_seq_nr + 1
            ));
        }
        let mut ids: Vec<(u64, u32)> = self.sends.iter().map(|s| (s.seq_nr, s.index)).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return invalid(format!("two sends at seq-nr {} index {}", w[0].0, w[0].1));
        }
        if let Some(t) = self
            .timers
            .iter()
            .find(|t| outside(t.seq_nr) || t.change.name().is_empty())
        {
            return invalid(format!(
                "timer change `{}` at seq-nr {} (outside the appended {}..={last}, or unnamed)",
                t.change.name(),
                t.seq_nr,
                self.expected_seq_nr + 1
            ));
        }
        Ok(())
    }

    /// Events only: no command id indexed, no send, no timer.
    pub fn events(
        key: EntityKey,
        expected_seq_nr: u64,
        fence: FenceToken,
        events: Vec<EventRecord>,
    ) -> Self {
        Self {
            key,
            expected_seq_nr,
            fence,
            events,
            command_ids: Vec::new(),
            sends: Vec::new(),
            timers: Vec::new(),
        }
    }
}

/// An event as stored, with its sequence number.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    pub seq_nr: u64,
    pub record: EventRecord,
}

/// Why one entity's append was refused. Nothing was written for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum AppendError {
    #[error("sequence conflict on {key}: expected last seq-nr {expected}, journal has {actual}")]
    Conflict {
        key: EntityKey,
        expected: u64,
        actual: u64,
    },
    #[error(
        "fenced: shard {shard} is held under epoch {current}, the append carried epoch {presented}"
    )]
    Fenced {
        shard: ShardId,
        presented: u64,
        current: u64,
    },
    #[error("invalid append to {key}: {reason}")]
    Invalid { key: EntityKey, reason: String },
    #[error(transparent)]
    Storage(#[from] JournalError),
}

/// A failure of the store itself (serde: it crosses nodes when a request
/// is forwarded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum JournalError {
    #[error("journal storage failure: {0}")]
    Io(String),
    #[error("the storage is full: {0}")]
    Full(String),
    #[error("corrupt journal record at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("the journal is closed")]
    Closed,
    /// The store cannot be reached (a database down or out of reach): the
    /// outcome of a write in flight is unknown; nothing acknowledged is lost.
    #[error("the journal is unavailable: {0}")]
    Unavailable(String),
}

/// Told about every durable commit (for metrics).
pub trait CommitObserver: Send + Sync + 'static {
    /// A commit of `entities` entities' appends became durable in `elapsed`.
    fn committed(&self, entities: usize, elapsed: std::time::Duration);
}

/// The storage contract of the event journal (see the module docs).
///
/// Methods block the calling thread (they are called from shard worker
/// threads, never from async tasks).
pub trait Journal: Send + Sync + 'static {
    /// Sets the observer told about every durable commit (the first one set
    /// stays: it is read on every commit without a lock).
    fn set_commit_observer(&self, observer: Arc<dyn CommitObserver>);

    /// Takes the leases of `shards` for this node, durably: each epoch moves
    /// past every earlier holder's, whose appends are refused from now on.
    /// A shard another live node holds (a lease not yet expired) is skipped:
    /// the answer has a token for each shard claimed, in the order asked.
    fn claim_shards(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, JournalError>;

    /// Renews the leases of `tokens` this journal holds; returns the ones
    /// still held (renewed). A token missing from the answer is lost: another
    /// node claimed the shard (or it was released), and appends under it are
    /// refused.
    fn renew_shards(&self, tokens: &[FenceToken]) -> Result<Vec<FenceToken>, JournalError>;

    /// How long a lease lasts after a successful claim or renewal, measured
    /// from when the request was sent; `None` when leases never expire (an
    /// embedded journal that only one node opens).
    fn lease_ttl(&self) -> Option<std::time::Duration>;

    /// Gives up the leases of `tokens` (those this journal still holds under
    /// that epoch; others are ignored): appends under them are refused from
    /// now on, and the epoch stays, so the next claim moves past it.
    fn release_shards(&self, tokens: &[FenceToken]) -> Result<(), JournalError>;

    /// Appends events of many entities; the result for each entity is at the
    /// same index. Entities succeed or fail independently; the successful
    /// ones are durable when this returns.
    fn append(&self, appends: Vec<EntityAppend>) -> Vec<Result<(), AppendError>>;

    /// The last sequence number of an entity (0 if it has no events).
    fn last_seq_nr(&self, key: &EntityKey) -> Result<u64, JournalError>;

    /// An entity's events with `seq_nr >= from`, in order, at most `limit`.
    fn read_events(
        &self,
        key: &EntityKey,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, JournalError>;

    /// Saves a snapshot of an entity, replacing its previous one. A snapshot
    /// is an optimisation: it need not be durable before this returns.
    fn save_snapshot(&self, key: &EntityKey, snapshot: &SnapshotRecord)
    -> Result<(), JournalError>;

    /// The latest snapshot of an entity, if any.
    fn load_snapshot(&self, key: &EntityKey) -> Result<Option<SnapshotRecord>, JournalError>;

    /// At most `limit` events of `entity_type` from each shard of `from`,
    /// those with a position after the one given, in position order (the
    /// shard's commit order, see [`stream`]); the shards one after the
    /// other, in the order asked. Only durable events are read.
    fn read_stream(
        &self,
        entity_type: &str,
        from: &[(ShardId, u64)],
        limit: usize,
    ) -> Result<Vec<StreamEvent>, JournalError>;

    /// The `(entity type, entity id)` of every entity with events in `shard`.
    fn entities_in_shard(&self, shard: ShardId) -> Result<Vec<(String, String)>, JournalError>;

    /// The index entry of a caller-given command id of an entity, if one
    /// was appended and has not expired.
    fn find_command_id(
        &self,
        key: &EntityKey,
        command_id: &str,
    ) -> Result<Option<CommandIdRecord>, JournalError>;

    /// [`Journal::find_command_id`] of many ids at once, answers in the
    /// order asked (a shared backend answers in one round trip).
    fn find_command_ids(
        &self,
        lookups: &[(EntityKey, String)],
    ) -> Result<Vec<Option<CommandIdRecord>>, JournalError> {
        lookups
            .iter()
            .map(|(key, command_id)| self.find_command_id(key, command_id))
            .collect()
    }

    /// Removes at most `limit` command-id entries of the fenced shard with
    /// `at_ms < before_ms`, oldest first; returns how many. Only the holder
    /// of the shard's lease may (`Fenced` otherwise). The events keep their
    /// command ids: only the index forgets.
    fn expire_command_ids(
        &self,
        fence: FenceToken,
        before_ms: u64,
        limit: usize,
    ) -> Result<usize, AppendError>;

    /// At most `limit` pending sends of `shard` after `after` (from the
    /// first when `None`), in [`SendId`] order: its source entity in the
    /// backend's own order, then seq-nr and index. Paging with the last id
    /// read visits every send once.
    fn read_outbox(
        &self,
        shard: ShardId,
        after: Option<&SendId>,
        limit: usize,
    ) -> Result<Vec<PendingSend>, JournalError>;

    /// Removes the sends `ids` of the fenced shard from its outbox (ids
    /// no longer there are ignored). Only the holder of the shard's lease
    /// may (`Fenced` otherwise).
    fn ack_sends(&self, fence: FenceToken, ids: &[SendId]) -> Result<(), AppendError>;

    /// Records the targets' answers to pending sends of the fenced shard,
    /// durably when this returns; a send already answered keeps its first
    /// answer, one no longer pending is ignored. Only the holder of the
    /// shard's lease may (`Fenced` otherwise).
    fn answer_sends(
        &self,
        fence: FenceToken,
        answers: &[(SendId, Answer)],
    ) -> Result<(), AppendError>;

    /// At most `limit` timers of `shard` after the timer `after` names
    /// (entity, timer name), in that order (the entity in the backend's own
    /// order). Paging with the last one read visits every timer once.
    fn read_timers(
        &self,
        shard: ShardId,
        after: Option<(&EntityKey, &str)>,
        limit: usize,
    ) -> Result<Vec<PendingTimer>, JournalError>;

    /// Removes the fired timers of the fenced shard that are still set
    /// under the seq-nr they fired with (a timer set again since stays).
    /// Only the holder of the shard's lease may (`Fenced` otherwise).
    fn ack_timers(&self, fence: FenceToken, fired: &[FiredTimer]) -> Result<(), AppendError>;
}

/// A component as a shared deployment store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDeployment {
    /// Increases with every deploy, in commit order: a node loads those past
    /// the last it saw.
    pub seq: u64,
    pub type_name: String,
    /// Hex SHA-256 of `component`, checked when loaded.
    pub sha256: String,
    pub component: Vec<u8>,
}

/// Deployed components kept beside a shared journal, so that every node of
/// a cluster serves the same versions. (An embedded journal has none: its
/// node keeps its components in its data directory.)
pub trait DeploymentStore: Send + Sync + 'static {
    /// Stores a deploy; returns its sequence number.
    fn publish(&self, type_name: &str, sha256: &str, component: &[u8])
    -> Result<u64, JournalError>;

    /// The latest deployment of every type.
    fn latest(&self) -> Result<Vec<StoredDeployment>, JournalError>;

    /// Deployments with `seq > after`, in order.
    fn since(&self, after: u64) -> Result<Vec<StoredDeployment>, JournalError>;
}
