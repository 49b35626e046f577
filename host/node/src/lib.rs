//! [`Node`]: the engine on one machine, as a library. The servers, the CLI,
//! the test harness and later the cluster all drive it. It wires a journal
//! (any [`Journal`]: sled or in memory by [`JournalConfig`], or one handed
//! in with [`Node::builder`]), the wasm runtime and the shard engine, and
//! checks what callers hand it before anything is queued.
//!
//! A data directory holds:
//!
//! ```text
//! <data>/node.json        format version and shard count (fixed at creation)
//! <data>/journal/         the sled journal (when the config chooses it)
//! <data>/components/      deployed components and their compiled cache
//! ```
//!
//! Invariants: a command is acknowledged only once its events are durable;
//! the shard count of a data directory never changes; opening acquires every
//! shard (claims its lease), so a previous owner can no longer append,
//! unless the node is a cluster member (`acquire_all_at_open` off: the
//! cluster's controller acquires and releases its shards).

use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use stead_engine::{EngineParts, OsThreads, Shards, WorkerStats};
use stead_journal::{
    AsyncJournal, Cursor, DeploymentStore, EntityKey, FenceToken, Inline, Journal, MemoryJournal,
    ShardId, StoredEvent,
};
use stead_journal_postgres::PostgresJournal;
use stead_journal_sled::SledJournal;
use stead_runtime::{Registry, Runtime, RuntimeError};
use stead_types::Joiner;
use stead_types::shard::shard_of;

/// Every failure a caller of [`Node`] must tell apart: the engine's one
/// error type, mapped to statuses once at the API edge.
pub use stead_engine::Error as NodeError;
mod courier;
mod deployments;
mod dispatch;
mod submit;
mod subscription;

use courier::Courier;
use deployments::{Poller, SharedDeployments};
use dispatch::{DispatchSlot, LocalDispatch};
use submit::Submitter;

pub use courier::MessagingStats;
pub use dispatch::{Delivery, DeliveryFuture, Dispatch};
pub use submit::PendingReply;
pub use subscription::{SubscribedEvent, Subscription};

pub use stead_engine::{CommandReply, LeaseStatus, OutboxEvent};
pub use stead_journal::JournalError;
pub use stead_types::config::{JournalConfig, NodeConfig};
pub use stead_types::effects;
pub use stead_types::{Clock, SettableClock, Spawner, SystemClock};

const NODE_FORMAT: u32 = 1;

/// A deployed entity type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub name: String,
    pub version: String,
    pub snapshot_every: u32,
    /// SHA-256 of the component.
    pub hash: String,
    pub size: usize,
    /// Whether recovery folds many events per guest call (the component
    /// exports the optional `replay` interface; SDK-built ones do).
    pub batched_replay: bool,
    /// The contract version the component speaks (`0.1.0`, `0.2.0`), or
    /// `native` for logic compiled into the host.
    pub contract: String,
}

/// Counters of the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeStats {
    pub active_entities: usize,
    pub activations: u64,
    pub passivations: u64,
    /// Requests held back to a later batch by the activation budget.
    pub deferred: u64,
    /// Shards this node holds the lease of and serves.
    pub shards: usize,
}

#[derive(Serialize, Deserialize)]
struct NodeMeta {
    format: u32,
    shard_count: u32,
}

/// A running node over one data directory.
pub struct Node {
    config: NodeConfig,
    journal: Arc<dyn AsyncJournal>,
    registry: Arc<Registry>,
    /// With a shared journal: its deployment store and the poller that
    /// loads deploys made on other nodes.
    shared_deployments: Option<(Arc<SharedDeployments>, Poller)>,
    shards: Option<Shards>,
    /// Queues commands (the node's and the courier's local deliveries).
    submitter: Option<Submitter>,
    /// The dispatch the courier delivers through: this node, or the
    /// cluster's router once the node joins one.
    dispatch: Arc<DispatchSlot>,
    /// The courier's loop (stopped by dropping the sender) and counters.
    courier: Option<(flume::Sender<()>, Box<dyn Joiner>)>,
    messaging: Arc<courier::Counters>,
    /// With deliveries held (the test harness): the workers' outbox events,
    /// kept for the harness to read instead of delivered.
    #[cfg_attr(
        not(feature = "testing"),
        allow(dead_code, reason = "read by the testing feature's harness only")
    )]
    held: Option<flume::Receiver<OutboxEvent>>,
}

impl Node {
    /// Opens (or creates) the node's data directory with the journal its
    /// config chooses, starts its workers and acquires every shard. Reads no
    /// entity: recovery is lazy.
    pub fn open(config: NodeConfig) -> Result<Self, NodeError> {
        Self::builder(config).open()
    }

    /// A node with parts chosen by the caller (a journal, a clock).
    pub fn builder(config: NodeConfig) -> NodeBuilder {
        NodeBuilder {
            config,
            journal: None,
            clock: None,
            spawner: None,
            hold_deliveries: false,
        }
    }

    fn open_with(
        config: NodeConfig,
        journal: Option<Arc<dyn AsyncJournal>>,
        clock: Arc<dyn Clock>,
        spawner: Arc<dyn Spawner>,
        hold_deliveries: bool,
    ) -> Result<Self, NodeError> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| NodeError::Config(format!("{}: {e}", dir.display())))?;
        check_node_meta(dir, config.shard_count)?;
        let mut store: Option<Arc<dyn DeploymentStore>> = None;
        let journal: Arc<dyn AsyncJournal> = match (journal, &config.journal) {
            (Some(journal), _) => journal,
            (None, JournalConfig::Sled(options)) => Arc::new(Inline(Arc::new(
                SledJournal::open(&dir.join("journal"), options.clone())
                    .map_err(NodeError::Storage)?,
            ))),
            (None, JournalConfig::Memory) => Arc::new(Inline(Arc::new(MemoryJournal::new()))),
            (None, JournalConfig::Postgres(options)) => {
                let journal = Arc::new(
                    PostgresJournal::open(options.clone())
                        .map_err(|e| NodeError::Storage(e.into()))?,
                );
                journal
                    .check_shard_count(config.shard_count)
                    .map_err(|e| NodeError::Config(e.to_string()))?;
                store = Some(journal.clone());
                Arc::new(Inline(journal))
            }
        };
        let runtime = Runtime::new(config.engine.clone())
            .map_err(|e: RuntimeError| NodeError::Config(e.to_string()))?;
        let components = dir.join("components");
        let cache = config
            .compile_cache
            .clone()
            .unwrap_or_else(|| components.clone());
        let registry = Arc::new(Registry::open(runtime, &components, &cache)?);
        // With a shared store, the cluster's deploys win over the local cache.
        let shared = match store {
            Some(store) => {
                let shared = Arc::new(SharedDeployments::new(store, registry.clone()));
                shared.load_latest()?;
                let poller = Poller::start(shared.clone())
                    .map_err(|e| NodeError::Config(format!("starting the deploy poller: {e}")))?;
                Some((shared, poller))
            }
            None => None,
        };
        let (outbox, outbox_events) = flume::unbounded();
        let shards = Shards::start(EngineParts {
            journal: journal.clone(),
            registry: registry.clone(),
            clock: clock.clone(),
            spawner: spawner.clone(),
            outbox: Some(outbox),
            options: config.shards.clone(),
            limits: config.limits.clone(),
            lease_renew_interval: match &config.journal {
                JournalConfig::Postgres(options) => options.renew_interval,
                _ => stead_types::config::DEFAULT_LEASE_RENEW_INTERVAL,
            },
        })
        .map_err(|e| NodeError::Config(format!("starting shard workers: {e}")))?;
        let submitter = Submitter::new(
            registry.clone(),
            config.limits.clone(),
            config.shard_count,
            clock.clone(),
            shards.command_queue(),
        );
        let dispatch = Arc::new(DispatchSlot::default());
        dispatch.set(Some(Arc::new(LocalDispatch(submitter.clone()))));
        let messaging = Arc::new(courier::Counters::default());
        let (stop, stopped) = flume::bounded(1);
        let made = Courier::new(
            journal.clone(),
            clock.clone(),
            dispatch.clone(),
            messaging.clone(),
        );
        let (courier, held) = if hold_deliveries {
            (None, Some(outbox_events))
        } else {
            let joiner = spawner
                .spawn(
                    "stead-courier".into(),
                    Box::new(move || Box::pin(made.run(outbox_events, stopped))),
                )
                .map_err(|e| NodeError::Config(format!("starting the courier: {e}")))?;
            (Some((stop, joiner)), None)
        };
        let mut node = Self {
            config,
            journal,
            registry,
            shared_deployments: shared,
            shards: Some(shards),
            submitter: Some(submitter),
            dispatch,
            courier,
            messaging,
            held,
        };
        if node.config.acquire_all_at_open {
            let all: Vec<ShardId> = (0..node.config.shard_count).collect();
            if let Err(e) = node.shards()?.acquire(&all) {
                node.stop();
                return Err(e);
            }
        }
        tracing::info!(data_dir = %node.config.data_dir.display(), shards = node.config.shard_count, "node open");
        Ok(node)
    }

    /// Delivers this node's sends and timers through `dispatch` (a cluster
    /// member's router) instead of its own workers alone.
    pub fn set_dispatch(&self, dispatch: Arc<dyn Dispatch>) {
        self.dispatch.set(Some(dispatch));
    }

    /// With deliveries held ([`NodeBuilder::hold_deliveries`]): the outbox
    /// events of the appends since the last call, in order (what the
    /// journal's outbox received, as the guest's commands returned it).
    #[cfg(feature = "testing")]
    pub fn held_outbox_events(&self) -> Vec<OutboxEvent> {
        self.held
            .as_ref()
            .map(|rx| rx.try_iter().collect())
            .unwrap_or_default()
    }

    /// Delivers this node's sends and timers on its own workers again (a
    /// member that left its cluster).
    pub fn set_local_dispatch(&self) {
        if let Some(submitter) = &self.submitter {
            self.dispatch
                .set(Some(Arc::new(LocalDispatch(submitter.clone()))));
        }
    }

    /// The courier's counters: sends and timers delivered, pending, retried.
    pub fn messaging_stats(&self) -> MessagingStats {
        self.messaging.snapshot()
    }

    /// Stops the courier, then the workers (which stop once nothing can
    /// queue to them any more).
    fn stop(&mut self) {
        if let Some((stop, joiner)) = self.courier.take() {
            drop(stop);
            if !joiner.join() {
                tracing::error!("the courier panicked");
            }
        }
        self.dispatch.set(None);
        self.submitter = None;
        if let Some(shards) = self.shards.take() {
            shards.shutdown();
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Which journal the node uses, for people (no password).
    pub fn journal_description(&self) -> String {
        match &self.config.journal {
            JournalConfig::Sled(_) => format!(
                "sled (embedded) at {}",
                self.config.data_dir.join("journal").display()
            ),
            JournalConfig::Memory => "memory (lost at exit)".to_owned(),
            JournalConfig::Postgres(options) => {
                format!("postgres at {}", options.redacted_url())
            }
        }
    }

    /// How many shards the node wants and how many it serves now (holds a
    /// valid lease of). Fewer served than wanted: another node still holds
    /// some, or the journal could not be reached to renew them.
    pub fn lease_status(&self) -> LeaseStatus {
        self.shards
            .as_ref()
            .map_or(LeaseStatus { wanted: 0, held: 0 }, Shards::lease_status)
    }

    /// The leases this node serves now (held and valid), in shard order.
    pub fn served_shards(&self) -> Vec<FenceToken> {
        self.shards.as_ref().map_or_else(Vec::new, Shards::served)
    }

    /// Whether this node serves `shard` now: a request for it runs here.
    pub fn serves(&self, shard: ShardId) -> bool {
        self.shards.as_ref().is_some_and(|s| s.serves(shard))
    }

    /// The shards this node wants (acquired and not released), in order;
    /// some may still be held by another node.
    pub fn wanted_shards(&self) -> Vec<ShardId> {
        self.shards.as_ref().map_or_else(Vec::new, Shards::wanted)
    }

    /// Whether the journal is shared by several nodes (its leases expire,
    /// so shards can move between nodes): what a cluster needs.
    pub fn journal_shared(&self) -> bool {
        self.journal.lease_ttl().is_some()
    }

    /// The shard count of the node (and of its cluster).
    pub fn shard_count(&self) -> u32 {
        self.config.shard_count
    }

    /// Sets the observer told about every durable journal commit (metrics).
    pub fn set_commit_observer(&self, observer: Arc<dyn stead_journal::CommitObserver>) {
        self.journal.set_commit_observer(observer);
    }

    /// Starts serving `shards`: claims their leases (moving each epoch past
    /// every earlier holder's). Blocks until every worker has them.
    pub fn acquire_shards(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, NodeError> {
        self.check_shards(shards)?;
        self.shards()?.acquire(shards)
    }

    /// [`Node::acquire_shards`], awaited.
    pub async fn acquire_shards_async(
        &self,
        shards: &[ShardId],
    ) -> Result<Vec<FenceToken>, NodeError> {
        self.check_shards(shards)?;
        self.shards()?.acquire_async(shards).await
    }

    /// Stops serving `shards`: what was queued for them before finishes,
    /// their entities leave memory and their leases are released; later
    /// requests for them fail with `NotOwner`. Blocks until done.
    pub fn release_shards(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, NodeError> {
        self.check_shards(shards)?;
        self.shards()?.release(shards)
    }

    /// [`Node::release_shards`], awaited.
    pub async fn release_shards_async(
        &self,
        shards: &[ShardId],
    ) -> Result<Vec<FenceToken>, NodeError> {
        self.check_shards(shards)?;
        self.shards()?.release_async(shards).await
    }

    fn check_shards(&self, shards: &[ShardId]) -> Result<(), NodeError> {
        match shards.iter().find(|&&s| s >= self.config.shard_count) {
            Some(s) => Err(NodeError::Config(format!(
                "shard {s} does not exist: the node has {} shards",
                self.config.shard_count
            ))),
            None => Ok(()),
        }
    }

    /// The shard of an entity (whether or not its type is deployed).
    pub fn shard_of(&self, entity_type: &str, entity_id: &str) -> ShardId {
        shard_of(entity_type, entity_id, self.config.shard_count)
    }

    fn shards(&self) -> Result<&Shards, NodeError> {
        self.shards.as_ref().ok_or(NodeError::ShuttingDown)
    }

    /// Validates, compiles, describes and persists a component, then makes it
    /// live for its entity type. Blocks while compiling; call it from a
    /// blocking context (`spawn_blocking`) in async code.
    /// With a shared journal the deploy is stored in it first, and every
    /// node serving it loads the deploy within about a second.
    pub fn deploy(&self, bytes: &[u8]) -> Result<TypeInfo, NodeError> {
        let deployment = match &self.shared_deployments {
            None => self.registry.deploy(bytes)?,
            Some((shared, _)) => {
                let deployment = self.registry.prepare(bytes)?;
                shared.publish(&deployment, bytes)?;
                self.registry.install(&deployment, bytes)?;
                deployment
            }
        };
        tracing::info!(entity_type = %deployment.info.name, version = %deployment.info.version, hash = %deployment.hash, batched_replay = deployment.has_replay(), "deployed");
        Ok(type_info(&deployment))
    }

    /// Makes native entity logic live for its type, in memory only: the
    /// benchmarks' yardstick for the cost of wasm (no isolation, no limits).
    pub fn deploy_native(
        &self,
        entity: Arc<dyn stead_runtime::NativeEntity>,
    ) -> Result<TypeInfo, NodeError> {
        let deployment = self.registry.deploy_native(entity)?;
        Ok(type_info(&deployment))
    }

    /// With a shared journal: loads the deploys made on other nodes now,
    /// rather than at the next poll (a request for a type just deployed
    /// elsewhere), at most once per 100 ms whoever asks. Returns how many
    /// were loaded. Blocks on the database.
    pub fn refresh_deployments(&self) -> Result<usize, NodeError> {
        match &self.shared_deployments {
            Some((shared, _)) => shared.refresh(),
            None => Ok(0),
        }
    }

    /// The deployed entity types.
    pub fn types(&self) -> Vec<TypeInfo> {
        self.registry.list().iter().map(|d| type_info(d)).collect()
    }

    /// Checks that the type is deployed and the id valid; returns the
    /// entity's shard. (What every request is checked for before it is
    /// queued here or forwarded to the shard's owner.)
    pub fn check_entity(&self, entity_type: &str, entity_id: &str) -> Result<ShardId, NodeError> {
        self.entity_key(entity_type, entity_id).map(|k| k.shard)
    }

    fn entity_key(&self, entity_type: &str, entity_id: &str) -> Result<EntityKey, NodeError> {
        self.submitter()?.entity_key(entity_type, entity_id)
    }

    fn submitter(&self) -> Result<&Submitter, NodeError> {
        self.submitter.as_ref().ok_or(NodeError::ShuttingDown)
    }

    /// Sends a command; resolves once its events are durable (or it failed).
    /// With `command_id`, a retry of an already processed command returns the
    /// original reply and persists nothing.
    pub async fn send(
        &self,
        entity_type: &str,
        entity_id: &str,
        command: Vec<u8>,
        command_id: Option<String>,
    ) -> Result<CommandReply, NodeError> {
        self.submit(entity_type, entity_id, command, command_id)?
            .wait()
            .await
    }

    /// Queues a command without waiting for it: fails at once if the command
    /// is invalid or the worker's queue is full (`Overloaded`).
    pub fn submit(
        &self,
        entity_type: &str,
        entity_id: &str,
        command: Vec<u8>,
        command_id: Option<String>,
    ) -> Result<PendingReply, NodeError> {
        self.submitter()?
            .submit(entity_type, entity_id, command, command_id)
    }

    /// [`Node::send`] for synchronous callers (not from inside an async task).
    pub fn send_blocking(
        &self,
        entity_type: &str,
        entity_id: &str,
        command: Vec<u8>,
        command_id: Option<String>,
    ) -> Result<CommandReply, NodeError> {
        self.submit(entity_type, entity_id, command, command_id)?
            .wait_blocking()
    }

    /// The entity's view (its read model, JSON).
    pub async fn view(&self, entity_type: &str, entity_id: &str) -> Result<Vec<u8>, NodeError> {
        let rx = self.enqueue_view(entity_type, entity_id)?;
        rx.await.map_err(|_| NodeError::ShuttingDown)?
    }

    /// [`Node::view`] for synchronous callers.
    pub fn view_blocking(&self, entity_type: &str, entity_id: &str) -> Result<Vec<u8>, NodeError> {
        let rx = self.enqueue_view(entity_type, entity_id)?;
        rx.blocking_recv().map_err(|_| NodeError::ShuttingDown)?
    }

    fn enqueue_view(
        &self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<Vec<u8>, NodeError>>, NodeError> {
        let key = self.entity_key(entity_type, entity_id)?;
        let span =
            tracing::info_span!("view", entity_type = %key.entity_type, entity_id = %key.entity_id);
        self.shards()?.view(key, span)
    }

    /// The raw state bytes of an entity, recovering it if needed (for the
    /// test harness and debugging; only the guest can read them).
    #[cfg(feature = "testing")]
    pub fn entity_state_blocking(
        &self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Vec<u8>, NodeError> {
        let key = self.entity_key(entity_type, entity_id)?;
        let span = tracing::info_span!("state", entity_type = %key.entity_type, entity_id = %key.entity_id);
        let rx = self.shards()?.state(key, span)?;
        rx.blocking_recv().map_err(|_| NodeError::ShuttingDown)?
    }

    /// Appends events to an entity as if commands had emitted them, and
    /// returns its new last sequence number. For the test harness (`given`):
    /// production events only come from commands.
    #[cfg(feature = "testing")]
    pub fn seed_events_blocking(
        &self,
        entity_type: &str,
        entity_id: &str,
        events: Vec<Vec<u8>>,
    ) -> Result<u64, NodeError> {
        let key = self.entity_key(entity_type, entity_id)?;
        let rx = self.shards()?.seed(key, events)?;
        rx.blocking_recv().map_err(|_| NodeError::ShuttingDown)?
    }

    /// A subscription to every event of `entity_type` after `cursor` (a
    /// cursor's text, as [`Subscription::cursor`] gives it; `None`: from the
    /// start), in each shard's commit order, following new events.
    pub fn subscribe(
        &self,
        entity_type: &str,
        cursor: Option<&str>,
    ) -> Result<Subscription, NodeError> {
        if self.registry.get(entity_type).is_none() {
            return Err(NodeError::UnknownType(entity_type.to_owned()));
        }
        let cursor = match cursor {
            None => Cursor::start(),
            Some(text) => {
                Cursor::decode(text).map_err(|e| NodeError::InvalidCommand(e.to_string()))?
            }
        };
        let count = self.config.shard_count;
        if let Some(shard) = cursor.shards().find(|&s| s >= count) {
            return Err(NodeError::InvalidCommand(format!(
                "the cursor names shard {shard}; this cluster has {count} shards"
            )));
        }
        Ok(Subscription::new(
            self.journal.clone(),
            entity_type,
            count,
            cursor,
        ))
    }

    /// The entity's durable events with `seq_nr >= from`, at most `limit`.
    pub fn events(
        &self,
        entity_type: &str,
        entity_id: &str,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, NodeError> {
        let key = self.entity_key(entity_type, entity_id)?;
        futures_executor::block_on(self.journal.read_events(&key, from, limit))
            .map_err(NodeError::Storage)
    }

    /// Passivates every active entity now (their next request recovers them).
    pub async fn passivate_all(&self) -> Result<usize, NodeError> {
        let mut total = 0;
        for rx in self.shards()?.passivate_all() {
            total += rx.await.map_err(|_| NodeError::ShuttingDown)?;
        }
        Ok(total)
    }

    /// [`Node::passivate_all`] for synchronous callers.
    pub fn passivate_all_blocking(&self) -> Result<usize, NodeError> {
        let mut total = 0;
        for rx in self.shards()?.passivate_all() {
            total += rx.blocking_recv().map_err(|_| NodeError::ShuttingDown)?;
        }
        Ok(total)
    }

    /// The node's counters, summed over workers.
    pub async fn stats(&self) -> Result<NodeStats, NodeError> {
        let mut total = NodeStats::default();
        for rx in self.shards()?.stats() {
            let s: WorkerStats = rx.await.map_err(|_| NodeError::ShuttingDown)?;
            total.active_entities += s.active_entities;
            total.activations += s.activations;
            total.passivations += s.passivations;
            total.deferred += s.deferred;
            total.shards += s.shards;
        }
        Ok(total)
    }

    /// [`Node::stats`] for synchronous callers.
    pub fn stats_blocking(&self) -> Result<NodeStats, NodeError> {
        let mut total = NodeStats::default();
        for rx in self.shards()?.stats() {
            let s: WorkerStats = rx.blocking_recv().map_err(|_| NodeError::ShuttingDown)?;
            total.active_entities += s.active_entities;
            total.activations += s.activations;
            total.passivations += s.passivations;
            total.deferred += s.deferred;
            total.shards += s.shards;
        }
        Ok(total)
    }

    /// Stops the workers after the queued requests, releasing every shard
    /// lease (so another node may take the shards at once, not after their
    /// ttl), then closes the journal.
    pub fn shutdown(mut self) {
        if let Some(shards) = &self.shards {
            let all: Vec<ShardId> = (0..self.config.shard_count).collect();
            if let Err(e) = shards.release(&all) {
                tracing::warn!(error = %e, "releasing the shards at shutdown failed; they are free once their leases expire");
            }
        }
        self.stop();
        tracing::info!("node stopped");
    }
}

/// Opens a [`Node`] with parts chosen by the caller.
pub struct NodeBuilder {
    config: NodeConfig,
    journal: Option<Arc<dyn AsyncJournal>>,
    clock: Option<Arc<dyn Clock>>,
    spawner: Option<Arc<dyn Spawner>>,
    hold_deliveries: bool,
}

impl NodeBuilder {
    /// Keeps sends and timers in the journal without delivering them, and
    /// the workers' outbox events for [`Node::held_outbox_events`] (the
    /// test harness asserts on what a command sent, and delivers it itself).
    #[cfg(feature = "testing")]
    pub fn hold_deliveries(mut self) -> Self {
        self.hold_deliveries = true;
        self
    }

    /// Uses `journal` instead of the one the config chooses.
    pub fn journal(mut self, journal: Arc<dyn Journal>) -> Self {
        self.journal = Some(Arc::new(Inline(journal)));
        self
    }

    /// Uses a journal reached through futures (the simulator's database).
    pub fn async_journal(mut self, journal: Arc<dyn AsyncJournal>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Runs the node's loops with `spawner` instead of one OS thread each
    /// (the simulator runs them as tasks of a simulated host).
    pub fn spawner(mut self, spawner: Arc<dyn Spawner>) -> Self {
        self.spawner = Some(spawner);
        self
    }

    /// Uses `clock` for commands' `now-ms` and entities' idle times.
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    pub fn open(self) -> Result<Node, NodeError> {
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        let spawner = self.spawner.unwrap_or_else(|| Arc::new(OsThreads));
        Node::open_with(
            self.config,
            self.journal,
            clock,
            spawner,
            self.hold_deliveries,
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

fn type_info(d: &stead_runtime::Deployment) -> TypeInfo {
    TypeInfo {
        name: d.info.name.clone(),
        version: d.info.version.clone(),
        snapshot_every: d.info.snapshot_every,
        hash: d.hash.clone(),
        size: d.size,
        batched_replay: d.has_replay(),
        contract: d
            .contract
            .map_or_else(|| "native".to_owned(), |v| v.as_str().to_owned()),
    }
}

/// Creates `node.json` on first open; refuses a different shard count later.
fn check_node_meta(dir: &Path, shard_count: u32) -> Result<(), NodeError> {
    if shard_count == 0 {
        return Err(NodeError::Config("shard count must be at least 1".into()));
    }
    let path = dir.join("node.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let meta: NodeMeta = serde_json::from_slice(&bytes)
                .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))?;
            if meta.format != NODE_FORMAT {
                return Err(NodeError::Config(format!(
                    "{} has data format {}, this build reads format {NODE_FORMAT}",
                    path.display(),
                    meta.format
                )));
            }
            if meta.shard_count != shard_count {
                return Err(NodeError::Config(format!(
                    "the data directory was created with {} shards; it cannot be opened with {shard_count} \
                     (changing the count would move every entity to another shard)",
                    meta.shard_count
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let meta = NodeMeta {
                format: NODE_FORMAT,
                shard_count,
            };
            let bytes =
                serde_json::to_vec_pretty(&meta).map_err(|e| NodeError::Config(e.to_string()))?;
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes)
                .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|e| NodeError::Config(format!("{}: {e}", path.display())))
        }
        Err(e) => Err(NodeError::Config(format!("{}: {e}", path.display()))),
    }
}
