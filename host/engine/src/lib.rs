//! The shard engine: where entities live while active.
//!
//! Every entity belongs to one shard ([`stead_types::shard::shard_of`], a
//! fixed count per data directory), every shard to one worker thread
//! ([`stead_types::shard::worker_of`]). A worker owns its shards' active
//! entities outright (see [`worker`]), so there is exactly one writer per
//! entity and no lock per entity.
//!
//! Shards move: [`Shards::acquire`] has each shard's worker claim the
//! shard's lease ([`FenceToken`]) and serve it from then on;
//! [`Shards::release`] has it stop taking the shard's commands, finish the
//! ones queued before the release, drop the shard's entities and release
//! the lease. Every append carries the lease's token, so a shard's previous
//! holder can never write once another has claimed it. A request for a shard
//! its worker does not hold fails with [`Error::NotOwner`] before it runs.
//!
//! Recovery ([`entity::activate`]) is lazy: an entity is read back (latest
//! snapshot + later events, its own key range only) at its first command or
//! view after an acquire or a passivation. Acquiring reads no entity.
//!
//! A worker's batch goes through three steps, each in its own module:
//! [`worker`] (the loop, the batch, leases and passivation), `worker::invoke`
//! (guest calls through the instance pool) and `worker::commit` (the
//! group-committed append, then the replies).

pub(crate) mod entity;
mod error;
pub(crate) mod leases;
pub(crate) mod memory;
pub mod outbox;
mod request;
mod spawn;
pub(crate) mod sweeper;
pub(crate) mod worker;

use std::sync::Arc;

use tokio::sync::oneshot;

use leases::LeaseBoard;
use request::{CommandRequest, LeaseRequest, LeaseResult, Request, ViewRequest};
use stead_journal::{AsyncJournal, EntityKey, FenceToken, ShardId};
use stead_runtime::Registry;
use stead_types::config::{Limits, ShardOptions};
use stead_types::shard::worker_of;
use stead_types::{Clock, Joiner, Spawner};
use worker::Worker;

pub use error::Error;
pub use outbox::{OutboxEvent, OutboxSender};
pub use request::{CommandReply, WorkerStats};
pub use spawn::OsThreads;

/// What the workers share.
pub struct EngineParts {
    pub journal: Arc<dyn AsyncJournal>,
    pub registry: Arc<Registry>,
    pub clock: Arc<dyn Clock>,
    /// Where the workers, the keeper and the sweeper run ([`OsThreads`] in
    /// production).
    pub spawner: Arc<dyn Spawner>,
    pub options: ShardOptions,
    pub limits: Limits,
    /// How often held leases are renewed, when the journal's expire.
    pub lease_renew_interval: std::time::Duration,
    /// Where the workers report their outboxes (the node's courier); `None`
    /// when nothing delivers sends and timers.
    pub outbox: Option<OutboxSender>,
}

/// How many shards the node wants and how many it serves (holds a valid
/// lease of) right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseStatus {
    pub wanted: usize,
    pub held: usize,
}

/// The workers and the routing to them.
pub struct Shards {
    senders: Vec<flume::Sender<Request>>,
    workers: Vec<Box<dyn Joiner>>,
    board: Arc<LeaseBoard>,
    clock: Arc<dyn Clock>,
    /// The lease keeper (when the journal's leases expire) and the
    /// command-id sweeper; dropping a sender stops its loop.
    helpers: Vec<(&'static str, flume::Sender<()>, Box<dyn Joiner>)>,
}

impl Shards {
    /// Starts the workers, holding no shard yet.
    pub fn start(parts: EngineParts) -> std::io::Result<Self> {
        let workers = parts.options.workers.max(1);
        let board = Arc::new(LeaseBoard::default());
        let mut senders = Vec::with_capacity(workers);
        let mut joiners = Vec::with_capacity(workers);
        for index in 0..workers {
            let (tx, rx) = flume::bounded(parts.options.queue_depth.max(1));
            let (journal, registry, clock, board) = (
                parts.journal.clone(),
                parts.registry.clone(),
                parts.clock.clone(),
                board.clone(),
            );
            let (options, limits) = (parts.options.clone(), parts.limits.clone());
            let outbox = parts.outbox.clone();
            // The worker is made where it runs: its instances stay there.
            let joiner = parts.spawner.spawn(
                format!("stead-shard-worker-{index}"),
                Box::new(move || {
                    let worker = Worker::new(journal, registry, clock, board, options, limits);
                    Box::pin(worker.with_outbox(outbox).run(rx))
                }),
            )?;
            senders.push(tx);
            joiners.push(joiner);
        }
        let mut helpers = Vec::new();
        if let Some(ttl) = parts.journal.lease_ttl() {
            let (stop, stopped) = flume::bounded(1);
            let keeper = leases::Keeper {
                journal: parts.journal.clone(),
                clock: parts.clock.clone(),
                board: board.clone(),
                senders: senders.clone(),
                ttl,
                interval: parts.lease_renew_interval.min(ttl / 2),
            };
            let joiner = parts.spawner.spawn(
                "stead-lease-keeper".into(),
                Box::new(move || Box::pin(leases::run_keeper(keeper, stopped))),
            )?;
            helpers.push(("lease keeper", stop, joiner));
        }
        let (stop, stopped) = flume::bounded(1);
        let sweeper = sweeper::Sweeper {
            journal: parts.journal.clone(),
            clock: parts.clock.clone(),
            board: board.clone(),
            horizon: parts.options.dedup_horizon,
            every: (parts.options.idle_timeout / 4).max(std::time::Duration::from_millis(50)),
        };
        let joiner = parts.spawner.spawn(
            "stead-command-id-sweeper".into(),
            Box::new(move || Box::pin(sweeper::run_sweeper(sweeper, stopped))),
        )?;
        helpers.push(("sweeper", stop, joiner));
        Ok(Self {
            senders,
            workers: joiners,
            board,
            clock: parts.clock,
            helpers,
        })
    }

    /// How many shards are wanted and how many are served now.
    pub fn lease_status(&self) -> LeaseStatus {
        let (wanted, held) = self.board.status(self.clock.mono_ms());
        LeaseStatus { wanted, held }
    }

    /// The leases served now (held and valid), in shard order.
    pub fn served(&self) -> Vec<FenceToken> {
        self.board.valid_tokens(self.clock.mono_ms())
    }

    /// Whether this node serves `shard` now (holds a valid lease of it).
    pub fn serves(&self, shard: ShardId) -> bool {
        self.board.serves(shard, self.clock.mono_ms())
    }

    /// The shards wanted (acquired and not released), in order.
    pub fn wanted(&self) -> Vec<ShardId> {
        self.board.wanted_shards()
    }

    fn submit(&self, shard: ShardId, request: Request) -> Result<(), Error> {
        submit(&self.senders, shard, request)
    }

    /// A handle that queues commands to the workers without the rest of
    /// `Shards` (the node's courier delivers through one). The workers stop
    /// only once every handle is dropped.
    pub fn command_queue(&self) -> CommandQueue {
        CommandQueue {
            senders: self.senders.clone(),
        }
    }

    /// Has each shard's worker claim its lease and serve it; blocks until
    /// every worker answered (see [`Shards::acquire_async`]).
    pub fn acquire(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, Error> {
        futures_executor::block_on(self.acquire_async(shards))
    }

    /// Has each shard's worker claim its lease and serve it, once every
    /// worker answered. Returns the tokens in the order of `shards`; a shard
    /// another node holds is left out, and (with a journal whose leases
    /// expire) claimed later, once that node's lease has expired.
    pub async fn acquire_async(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, Error> {
        self.board.want(shards);
        let mut tokens = lease_requests(&self.senders, shards, |shards, reply| {
            Request::Acquire(LeaseRequest { shards, reply })
        })
        .await?;
        let order: std::collections::HashMap<ShardId, usize> =
            shards.iter().enumerate().map(|(i, s)| (*s, i)).collect();
        tokens.sort_by_key(|t| order.get(&t.shard).copied().unwrap_or(usize::MAX));
        Ok(tokens)
    }

    /// Has each shard's worker stop serving it; blocks until every worker
    /// answered (see [`Shards::release_async`]).
    pub fn release(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, Error> {
        futures_executor::block_on(self.release_async(shards))
    }

    /// Has each shard's worker stop serving it: commands queued before the
    /// release finish (and their events are durable), later ones fail with
    /// [`Error::NotOwner`], the shard's entities leave memory and its lease
    /// is released. Returns, once every worker answered, the tokens
    /// released (shards not held are skipped).
    pub async fn release_async(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, Error> {
        self.board.unwant(shards);
        lease_requests(&self.senders, shards, |shards, reply| {
            Request::Release(LeaseRequest { shards, reply })
        })
        .await
    }

    /// Queues a command; the receiver yields its outcome once durable. With
    /// a `digest` (of a caller-given id's command) the id is recognised for
    /// the dedup horizon.
    pub fn command(
        &self,
        key: EntityKey,
        command: Vec<u8>,
        command_id: String,
        digest: Option<[u8; 32]>,
        deadline_ms: u64,
        span: tracing::Span,
    ) -> Result<oneshot::Receiver<Result<CommandReply, Error>>, Error> {
        queue_command(
            &self.senders,
            key,
            command,
            command_id,
            digest,
            deadline_ms,
            span,
        )
    }

    /// Queues a view request.
    pub fn view(
        &self,
        key: EntityKey,
        span: tracing::Span,
    ) -> Result<oneshot::Receiver<Result<Vec<u8>, Error>>, Error> {
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

    /// Queues a read of an entity's raw state bytes (test harnesses).
    #[cfg(feature = "testing")]
    pub fn state(
        &self,
        key: EntityKey,
        span: tracing::Span,
    ) -> Result<oneshot::Receiver<Result<Vec<u8>, Error>>, Error> {
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
    #[cfg(feature = "testing")]
    pub fn seed(
        &self,
        key: EntityKey,
        events: Vec<Vec<u8>>,
    ) -> Result<oneshot::Receiver<Result<u64, Error>>, Error> {
        let (tx, rx) = oneshot::channel();
        let shard = key.shard;
        self.submit(
            shard,
            Request::Seed(request::SeedRequest {
                key,
                events,
                reply: tx,
            }),
        )?;
        Ok(rx)
    }

    /// Asks every worker to passivate all its entities; receivers yield counts.
    pub fn passivate_all(&self) -> Vec<oneshot::Receiver<usize>> {
        self.broadcast(Request::PassivateAll)
    }

    /// Asks every worker for its counters.
    pub fn stats(&self) -> Vec<oneshot::Receiver<WorkerStats>> {
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
        for (name, stop, joiner) in self.helpers {
            drop(stop);
            if !joiner.join() {
                tracing::error!("the {name} panicked");
            }
        }
        drop(self.senders);
        for joiner in self.workers {
            if !joiner.join() {
                tracing::error!("a shard worker panicked");
            }
        }
    }
}

/// Queues commands to the workers (see [`Shards::command_queue`]).
#[derive(Clone)]
pub struct CommandQueue {
    senders: Vec<flume::Sender<Request>>,
}

impl CommandQueue {
    /// [`Shards::command`].
    pub fn command(
        &self,
        key: EntityKey,
        command: Vec<u8>,
        command_id: String,
        digest: Option<[u8; 32]>,
        deadline_ms: u64,
        span: tracing::Span,
    ) -> Result<oneshot::Receiver<Result<CommandReply, Error>>, Error> {
        queue_command(
            &self.senders,
            key,
            command,
            command_id,
            digest,
            deadline_ms,
            span,
        )
    }
}

fn queue_command(
    senders: &[flume::Sender<Request>],
    key: EntityKey,
    command: Vec<u8>,
    command_id: String,
    digest: Option<[u8; 32]>,
    deadline_ms: u64,
    span: tracing::Span,
) -> Result<oneshot::Receiver<Result<CommandReply, Error>>, Error> {
    let (tx, rx) = oneshot::channel();
    let shard = key.shard;
    submit(
        senders,
        shard,
        Request::Command(CommandRequest {
            key,
            command,
            command_id,
            digest,
            reply: tx,
            deadline_ms,
            span,
        }),
    )?;
    Ok(rx)
}

/// Queues `request` on its shard's worker, never waiting for room.
fn submit(
    senders: &[flume::Sender<Request>],
    shard: ShardId,
    request: Request,
) -> Result<(), Error> {
    match senders[worker_of(shard, senders.len())].try_send(request) {
        Ok(()) => Ok(()),
        Err(flume::TrySendError::Full(_)) => Err(Error::Overloaded(format!(
            "the worker of shard {shard} has its queue full; retry later"
        ))),
        Err(flume::TrySendError::Disconnected(_)) => Err(Error::ShuttingDown),
    }
}

/// Sends each worker its part of `shards` and gathers the answers.
pub(crate) async fn lease_requests(
    senders: &[flume::Sender<Request>],
    shards: &[ShardId],
    make: impl Fn(Vec<ShardId>, flume::Sender<LeaseResult>) -> Request,
) -> Result<Vec<FenceToken>, Error> {
    let workers = senders.len();
    let mut per_worker: Vec<Vec<ShardId>> = vec![Vec::new(); workers];
    for &shard in shards {
        per_worker[worker_of(shard, workers)].push(shard);
    }
    let (tx, rx) = flume::unbounded();
    let mut asked = 0;
    for (sender, part) in senders.iter().zip(per_worker) {
        if part.is_empty() {
            continue;
        }
        // Waits for room: a lease change must not be lost to a full queue.
        sender
            .send_async(make(part, tx.clone()))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        asked += 1;
    }
    drop(tx);
    let mut tokens = Vec::with_capacity(shards.len());
    let mut first_error = None;
    for _ in 0..asked {
        match rx.recv_async().await.map_err(|_| Error::ShuttingDown)? {
            Ok(mut t) => tokens.append(&mut t),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(tokens),
    }
}
