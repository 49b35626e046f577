//! Shards: where entities live while active.
//!
//! Every entity belongs to one shard ([`router::shard_of`], a fixed count per
//! data directory), every shard to one worker thread ([`router::worker_of`]).
//! A worker owns its shards' active entities outright (see [`worker`]), so
//! there is exactly one writer per entity and no lock per entity. A shard is
//! held under a lease ([`crate::journal::FenceToken`]) claimed at start; every
//! append carries it, so a shard can later be handed to another node as a
//! unit.
//!
//! Recovery ([`entity::activate`]) is lazy: an entity is read back (latest
//! snapshot + later events, its own key range only) at its first command or
//! view after a start or a passivation. A start therefore reads no entity.

pub(crate) mod entity;
pub(crate) mod memory;
pub mod router;
pub(crate) mod worker;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::config::{Limits, ShardOptions};
use crate::journal::{EntityKey, FenceToken, Journal, JournalError, ShardId};
use crate::runtime::{GuestFault, Registry};
use worker::{CommandRequest, Request, SeedRequest, ViewRequest, Worker};

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

/// Why a command or view failed. In every case the entity's state and
/// journal are as they were before the request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown entity type `{0}`")]
    UnknownType(String),
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("rejected: {0}")]
    Rejected(String),
    #[error("guest fault in `{entity_type}`: {fault}")]
    GuestFault {
        entity_type: String,
        fault: GuestFault,
    },
    #[error("overloaded: {0}")]
    Overloaded(String),
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error(transparent)]
    Storage(JournalError),
    #[error("conflicting write: {0}")]
    Conflict(String),
    #[error("this node does not own shard {0}")]
    NotOwner(ShardId),
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
}

/// Counters of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStats {
    pub active_entities: usize,
    pub activations: u64,
    pub passivations: u64,
    /// Requests held back to a later batch by the activation budget.
    pub deferred: u64,
}

/// The workers and the routing to them.
pub struct Shards {
    shard_count: u32,
    senders: Vec<SyncSender<Request>>,
    threads: Vec<JoinHandle<()>>,
}

impl Shards {
    /// Starts the workers, each owning the shards routed to it under `fences`.
    pub fn start(
        journal: Arc<dyn Journal>,
        registry: Arc<Registry>,
        options: ShardOptions,
        limits: Limits,
        shard_count: u32,
        fences: Vec<FenceToken>,
        clock_override: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let workers = options.workers.max(1);
        let mut senders = Vec::with_capacity(workers);
        let mut threads = Vec::with_capacity(workers);
        for index in 0..workers {
            let (tx, rx) = std::sync::mpsc::sync_channel(options.queue_depth.max(1));
            let owned: foldhash::HashMap<ShardId, FenceToken> = fences
                .iter()
                .filter(|f| router::worker_of(f.shard, workers) == index)
                .map(|f| (f.shard, *f))
                .collect();
            let worker = Worker {
                journal: journal.clone(),
                registry: registry.clone(),
                options: options.clone(),
                limits: limits.clone(),
                fences: owned,
                entities: foldhash::HashMap::default(),
                instances: foldhash::HashMap::default(),
                deferred: Vec::new(),
                started: Instant::now(),
                activations: 0,
                passivations: 0,
                deferred_total: 0,
                clock_override: clock_override.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("stead-shard-worker-{index}"))
                .spawn(move || worker.run(rx))?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Self {
            shard_count,
            senders,
            threads,
        })
    }

    pub fn shard_count(&self) -> u32 {
        self.shard_count
    }

    fn sender(&self, shard: ShardId) -> &SyncSender<Request> {
        &self.senders[router::worker_of(shard, self.senders.len())]
    }

    fn submit(&self, shard: ShardId, request: Request) -> Result<(), CommandError> {
        match self.sender(shard).try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(CommandError::Overloaded(format!(
                "the worker of shard {shard} has its queue full; retry later"
            ))),
            Err(TrySendError::Disconnected(_)) => Err(CommandError::ShuttingDown),
        }
    }

    /// Queues a command; the receiver yields its outcome once durable.
    pub(crate) fn command(
        &self,
        key: EntityKey,
        command: Vec<u8>,
        command_id: String,
        deadline: Instant,
        span: tracing::Span,
    ) -> Result<oneshot::Receiver<Result<CommandReply, CommandError>>, CommandError> {
        let (tx, rx) = oneshot::channel();
        let shard = key.shard;
        self.submit(
            shard,
            Request::Command(CommandRequest {
                key,
                command,
                command_id,
                reply: tx,
                deadline,
                span,
            }),
        )?;
        Ok(rx)
    }

    /// Queues a view request.
    pub(crate) fn view(
        &self,
        key: EntityKey,
        span: tracing::Span,
    ) -> Result<oneshot::Receiver<Result<Vec<u8>, CommandError>>, CommandError> {
        let (tx, rx) = oneshot::channel();
        let shard = key.shard;
        self.submit(
            shard,
            Request::View(ViewRequest {
                key,
                reply: tx,
                span,
            }),
        )?;
        Ok(rx)
    }

    /// Queues a read of an entity's raw state bytes.
    pub(crate) fn state(
        &self,
        key: EntityKey,
        span: tracing::Span,
    ) -> Result<oneshot::Receiver<Result<Vec<u8>, CommandError>>, CommandError> {
        let (tx, rx) = oneshot::channel();
        let shard = key.shard;
        self.submit(
            shard,
            Request::State(ViewRequest {
                key,
                reply: tx,
                span,
            }),
        )?;
        Ok(rx)
    }

    /// Queues raw events to append to an entity (the harness's `given`).
    pub(crate) fn seed(
        &self,
        key: EntityKey,
        events: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<u64, CommandError>>, CommandError> {
        let (tx, rx) = oneshot::channel();
        let shard = key.shard;
        self.submit(
            shard,
            Request::Seed(SeedRequest {
                key,
                events,
                reply: tx,
            }),
        )?;
        Ok(rx)
    }

    /// Asks every worker to passivate all its entities; receivers yield counts.
    pub(crate) fn passivate_all(&self) -> Vec<oneshot::Receiver<usize>> {
        self.broadcast(Request::PassivateAll)
    }

    /// Asks every worker for its counters.
    pub(crate) fn stats(&self) -> Vec<oneshot::Receiver<WorkerStats>> {
        self.broadcast(Request::Stats)
    }

    fn broadcast<T>(
        &self,
        make: impl Fn(oneshot::Sender<T>) -> Request,
    ) -> Vec<oneshot::Receiver<T>> {
        self.senders
            .iter()
            .filter_map(|s| {
                let (tx, rx) = oneshot::channel();
                // A blocking send: control requests must not be lost to a full queue.
                s.send(make(tx)).ok().map(|()| rx)
            })
            .collect()
    }

    /// Stops the workers after they finish what is queued.
    pub fn shutdown(self) {
        drop(self.senders);
        for thread in self.threads {
            if thread.join().is_err() {
                tracing::error!("a shard worker panicked");
            }
        }
    }
}
