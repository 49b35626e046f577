//! Node configuration: every tunable with its documented default.

use std::path::PathBuf;
use std::time::Duration;

use crate::journal::sled::SledOptions;
use crate::runtime::EngineOptions;

/// Default number of shards. Fixed for the life of a data directory.
pub const DEFAULT_SHARD_COUNT: u32 = 256;

/// Everything a [`crate::node::Node`] is opened with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the journal, deployed components and node metadata live.
    pub data_dir: PathBuf,
    /// Number of shards entities are spread over. Default 256. Persisted in
    /// the data directory at creation; opening with another count is refused,
    /// because it would move every entity to another shard.
    pub shard_count: u32,
    pub engine: EngineOptions,
    pub shards: ShardOptions,
    pub limits: Limits,
    pub journal: SledOptions,
    /// Where compiled components are cached (`<sha256>.cwasm`). Default
    /// (`None`): `<data_dir>/components`. Nodes may share one cache.
    pub compile_cache: Option<PathBuf>,
}

impl NodeConfig {
    /// Defaults for everything, in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            shard_count: DEFAULT_SHARD_COUNT,
            engine: EngineOptions::default(),
            shards: ShardOptions::default(),
            limits: Limits::default(),
            journal: SledOptions::default(),
            compile_cache: None,
        }
    }
}

/// How shard workers run.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// Worker threads; each owns the shards `s` with `s % workers == index`.
    /// Default: the number of CPUs (at least 1).
    pub workers: usize,
    /// Commands a worker may have queued before new ones are refused with
    /// `overloaded`. Default 4096.
    pub queue_depth: usize,
    /// Most requests a worker takes into one batch. Default 512.
    pub max_batch: usize,
    /// An entity without commands for this long is passivated (its memory
    /// freed; it is recovered from the journal on its next command).
    /// Default 2 minutes.
    pub idle_timeout: Duration,
    /// Commands per entity whose ids are remembered for deduplication.
    /// Default 64.
    pub dedup_window: usize,
    /// Most entities a worker recovers from the journal in one batch.
    /// Commands and views for further inactive entities wait for the next
    /// batch, so a restart followed by a rush of traffic to many entities
    /// recovers them at a bounded rate while active entities keep being
    /// served (at most `workers` activations run at once). Default 64.
    pub max_activations_per_batch: usize,
}

impl Default for ShardOptions {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map_or(1, usize::from),
            queue_depth: 4096,
            max_batch: 512,
            idle_timeout: Duration::from_secs(120),
            dedup_window: 64,
            max_activations_per_batch: 64,
        }
    }
}

/// Size limits on what callers and guests may hand the host.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest command, in bytes. Default 1 MiB.
    pub max_command_bytes: usize,
    /// Longest entity id, in bytes. Default 256.
    pub max_entity_id_bytes: usize,
    /// Longest caller-supplied command id, in bytes. Default 128.
    pub max_command_id_bytes: usize,
    /// Most events one command may emit. Default 100.
    pub max_events_per_command: usize,
    /// Largest event, in bytes. Default 256 KiB.
    pub max_event_bytes: usize,
    /// Largest reply or view, in bytes. Default 1 MiB.
    pub max_reply_bytes: usize,
    /// Largest entity state, in bytes. Default 4 MiB.
    pub max_state_bytes: usize,
    /// How long a command may wait for its outcome. One still queued at its
    /// deadline is not executed (`deadline exceeded`, safe to retry); a
    /// caller that stops waiting later is told the outcome is unknown.
    /// Default 10 s.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_command_bytes: 1024 * 1024,
            max_entity_id_bytes: 256,
            max_command_id_bytes: 128,
            max_events_per_command: 100,
            max_event_bytes: 256 * 1024,
            max_reply_bytes: 1024 * 1024,
            max_state_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
        }
    }
}
