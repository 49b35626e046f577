//! The messages between the [`crate::Shards`] handle and its workers, and
//! what comes back: requests, [`CommandReply`], [`WorkerStats`].
//!
//! Invariant: every request carries its own reply channel, and a worker
//! answers each request exactly once (dropping the sender, at shutdown, is
//! the only other outcome the caller sees).

use tokio::sync::oneshot;
use tracing::Span;

use stead_journal::{EntityKey, FenceToken, ShardId};

use crate::Error;

/// The answer to an accepted command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandReply {
    /// The guest's JSON reply.
    pub reply: Vec<u8>,
    /// The entity's sequence number after the command.
    pub seq_nr: u64,
    /// True when the command id had been processed before and this is the
    /// original reply (nothing was persisted this time).
    pub duplicate: bool,
}

/// Counters of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub active_entities: usize,
    pub activations: u64,
    pub passivations: u64,
    /// Requests held back to a later batch by the activation budget.
    pub deferred: u64,
    /// Shards this worker holds the lease of.
    pub shards: usize,
}

/// A request to a worker.
pub(crate) enum Request {
    Command(CommandRequest),
    View(ViewRequest),
    /// Claim these shards' leases and serve them.
    Acquire(LeaseRequest),
    /// Stop serving these shards and release their leases.
    Release(LeaseRequest),
    /// The keeper found this lease lost or run out: stop serving its shard
    /// (without releasing it) and drop its entities.
    Lapse(FenceToken),
    /// Passivate every entity now (tests and benchmarks); replies how many.
    PassivateAll(oneshot::Sender<usize>),
    Stats(oneshot::Sender<WorkerStats>),
    /// The raw state bytes of an entity (the test harness reads them).
    #[cfg(feature = "testing")]
    State(ViewRequest),
    /// Appends events as if earlier commands had emitted them (the test
    /// harness's `given`); the entity is recovered from them next time.
    #[cfg(feature = "testing")]
    Seed(SeedRequest),
}

#[cfg(feature = "testing")]
pub(crate) struct SeedRequest {
    pub(crate) key: EntityKey,
    pub(crate) events: Vec<Vec<u8>>,
    pub(crate) reply: oneshot::Sender<Result<u64, Error>>,
}

pub(crate) struct CommandRequest {
    pub(crate) key: EntityKey,
    pub(crate) command: Vec<u8>,
    pub(crate) command_id: String,
    /// SHA-256 of the command when the caller gave its id: the id is then
    /// indexed, and a retry must carry the same command.
    pub(crate) digest: Option<[u8; 32]>,
    pub(crate) reply: oneshot::Sender<Result<CommandReply, Error>>,
    /// Not started once the node's monotonic clock reads this (ms): the
    /// caller has given up or is about to.
    pub(crate) deadline_ms: u64,
    pub(crate) span: Span,
}

pub(crate) struct ViewRequest {
    pub(crate) key: EntityKey,
    pub(crate) reply: oneshot::Sender<Result<Vec<u8>, Error>>,
    pub(crate) span: Span,
}

pub(crate) struct LeaseRequest {
    pub(crate) shards: Vec<ShardId>,
    pub(crate) reply: flume::Sender<LeaseResult>,
}

/// A worker's answer to an acquire or a release.
pub(crate) type LeaseResult = Result<Vec<FenceToken>, Error>;
