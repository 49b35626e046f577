//! Node configuration: every tunable, with its default as a named constant
//! so the CLI's flags and the structs' `Default` cannot drift apart.
//!
//! Pure data: nothing here opens, starts or validates anything; the crate
//! that owns a part checks its options when it starts.

use std::path::PathBuf;
use std::time::Duration;

/// Default number of shards. Fixed for the life of a data directory.
pub const DEFAULT_SHARD_COUNT: u32 = 256;
/// Default queue depth of a shard worker.
pub const DEFAULT_QUEUE_DEPTH: usize = 4096;
/// Default most requests in one worker batch.
pub const DEFAULT_MAX_BATCH: usize = 512;
/// Default idle time before an entity is passivated.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default dedup window (commands with events remembered per entity).
pub const DEFAULT_DEDUP_WINDOW: usize = 64;
/// Default time a caller-given command id is recognised after its command.
pub const DEFAULT_DEDUP_HORIZON: Duration = Duration::from_secs(24 * 3600);
/// Default most activations per worker batch.
pub const DEFAULT_MAX_ACTIVATIONS_PER_BATCH: usize = 64;

/// Default longest command, in bytes.
pub const DEFAULT_MAX_COMMAND_BYTES: usize = 1024 * 1024;
/// Default longest entity id, in bytes.
pub const DEFAULT_MAX_ENTITY_ID_BYTES: usize = 256;
/// Default longest caller-supplied command id, in bytes.
pub const DEFAULT_MAX_COMMAND_ID_BYTES: usize = 128;
/// Default most events one command may emit.
pub const DEFAULT_MAX_EVENTS_PER_COMMAND: usize = 100;
/// Default largest event, in bytes.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 256 * 1024;
/// Default largest reply or view, in bytes.
pub const DEFAULT_MAX_REPLY_BYTES: usize = 1024 * 1024;
/// Default largest entity state, in bytes.
pub const DEFAULT_MAX_STATE_BYTES: usize = 4 * 1024 * 1024;
/// Default request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default most sends one command may return.
pub const DEFAULT_MAX_SENDS_PER_COMMAND: usize = 32;
/// Default most timer changes one command may return.
pub const DEFAULT_MAX_TIMERS_PER_COMMAND: usize = 32;
/// Default furthest a timer may be set ahead of the host's clock (a year).
pub const DEFAULT_MAX_TIMER_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest timer name, in bytes.
pub const MAX_TIMER_NAME_BYTES: usize = 128;

/// Default CPU deadline of one guest call.
pub const DEFAULT_CALL_DEADLINE: Duration = Duration::from_millis(100);
/// Default linear memory limit of a guest instance, in MiB.
pub const DEFAULT_MEMORY_LIMIT_MIB: usize = 64;
/// Default table elements an instance may grow to.
pub const DEFAULT_TABLE_LIMIT: usize = 100_000;
/// Default log lines one guest call may write.
pub const DEFAULT_LOG_LINES_PER_CALL: u32 = 100;

/// Default sled page cache, in bytes.
pub const DEFAULT_SLED_CACHE_BYTES: u64 = 256 * 1024 * 1024;
/// How long a shard lease in a shared journal lasts without renewal.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(2);
/// How often a node renews the shard leases it holds.
pub const DEFAULT_LEASE_RENEW_INTERVAL: Duration = Duration::from_millis(500);
/// Connections a node keeps to a PostgreSQL journal.
pub const DEFAULT_POSTGRES_POOL_SIZE: usize = 16;
/// How long a PostgreSQL journal waits for a connection or an answer before
/// failing the request as unavailable.
pub const DEFAULT_POSTGRES_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a node is opened with.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where the journal (when embedded), deployed components and node
    /// metadata live.
    pub data_dir: PathBuf,
    /// Number of shards entities are spread over. Default 256. Persisted in
    /// the data directory at creation; opening with another count is refused,
    /// because it would move every entity to another shard.
    pub shard_count: u32,
    pub engine: EngineOptions,
    pub shards: ShardOptions,
    pub limits: Limits,
    /// Which journal the node opens. Default: sled in `<data_dir>/journal`.
    pub journal: JournalConfig,
    /// Where compiled components are cached (`<sha256>.cwasm`). Default
    /// (`None`): `<data_dir>/components`. Nodes may share one cache.
    pub compile_cache: Option<PathBuf>,
    /// Whether opening claims every shard (a node alone). A member of a
    /// cluster opens holding none: the cluster's placement tells it which
    /// to claim.
    pub acquire_all_at_open: bool,
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
            journal: JournalConfig::default(),
            compile_cache: None,
            acquire_all_at_open: true,
        }
    }
}

/// The journal backend a node opens.
#[derive(Debug, Clone)]
pub enum JournalConfig {
    /// The embedded sled journal in `<data_dir>/journal`.
    Sled(SledOptions),
    /// An in-memory journal: lost when the node closes. For tests and
    /// benchmarks that measure everything but the store; never production.
    Memory,
    /// A PostgreSQL database shared by the nodes of a cluster.
    Postgres(PostgresOptions),
}

/// The PostgreSQL journal: where it is, who this node is to it, and its
/// leases' timing.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user[:password]@host:port/database`.
    pub url: String,
    /// The owner name of this node's leases. A node that restarts under the
    /// same id takes its leases back at once; under a new one it waits for
    /// them to expire.
    pub node_id: String,
    /// How long a lease lasts without renewal (on the database's clock).
    pub lease_ttl: Duration,
    /// How often held leases are renewed; well under `lease_ttl`.
    pub renew_interval: Duration,
    pub pool_size: usize,
    /// The longest wait for a connection or for one transaction.
    pub timeout: Duration,
}

impl PostgresOptions {
    pub fn new(url: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            node_id: node_id.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
            renew_interval: DEFAULT_LEASE_RENEW_INTERVAL,
            pool_size: DEFAULT_POSTGRES_POOL_SIZE,
            timeout: DEFAULT_POSTGRES_TIMEOUT,
        }
    }

    /// The URL with any password replaced by `***`, for logs and errors.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

/// A database URL with its password (between `:` and `@` after the scheme)
/// replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.redacted_url())
            .field("node_id", &self.node_id)
            .field("lease_ttl", &self.lease_ttl)
            .field("renew_interval", &self.renew_interval)
            .field("pool_size", &self.pool_size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        JournalConfig::Sled(SledOptions::default())
    }
}

/// Tuning of the sled backend.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled's page cache size in bytes. Default 256 MiB.
    pub cache_capacity: u64,
    /// Whether commits wait for `fdatasync` (durable against power loss).
    /// Default true; false is for benchmarks that measure the store without
    /// the disk, never for production.
    pub sync: bool,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            cache_capacity: DEFAULT_SLED_CACHE_BYTES,
            sync: true,
        }
    }
}

/// Limits every guest call runs under.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// CPU deadline of one guest call. Default 100 ms.
    pub call_deadline: Duration,
    /// Linear memory an instance may grow to, in bytes. Default 64 MiB.
    pub memory_limit: usize,
    /// Table elements an instance may grow to. Default 100,000.
    pub table_limit: usize,
    /// Log lines one guest call may write before the rest are dropped.
    /// Default 100.
    pub log_lines_per_call: u32,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            call_deadline: DEFAULT_CALL_DEADLINE,
            memory_limit: DEFAULT_MEMORY_LIMIT_MIB * 1024 * 1024,
            table_limit: DEFAULT_TABLE_LIMIT,
            log_lines_per_call: DEFAULT_LOG_LINES_PER_CALL,
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
    /// Commands per entity whose ids are remembered in memory: the fast
    /// path of deduplication. Default 64.
    pub dedup_window: usize,
    /// How long a caller-given command id (an idempotency key) is
    /// recognised after its command was acknowledged, however many commands
    /// the entity took since; its index entry is removed after that.
    /// Default 24 hours.
    pub dedup_horizon: Duration,
    /// Most entities a worker recovers from the journal in one batch.
    /// Commands and views for further inactive entities wait for the next
    /// batch, so a restart followed by a rush of traffic to many entities
    /// recovers them at a bounded rate while active entities keep being
    /// served (at most `workers` activations run at once). Default 64.
    pub max_activations_per_batch: usize,
}

impl ShardOptions {
    /// The default worker count: one per CPU.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, usize::from)
    }
}

impl Default for ShardOptions {
    fn default() -> Self {
        Self {
            workers: Self::default_workers(),
            queue_depth: DEFAULT_QUEUE_DEPTH,
            max_batch: DEFAULT_MAX_BATCH,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            dedup_horizon: DEFAULT_DEDUP_HORIZON,
            max_activations_per_batch: DEFAULT_MAX_ACTIVATIONS_PER_BATCH,
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
    /// Most sends to other entities one command may return. Default 32.
    pub max_sends_per_command: usize,
    /// Most timer changes one command may return. Default 32.
    pub max_timers_per_command: usize,
    /// Furthest ahead of the host's clock a timer may be set. Default a
    /// year; one set in the past fires at once.
    pub max_timer_delay: Duration,
    /// How long a command may wait for its outcome. One still queued at its
    /// deadline is not executed (`deadline exceeded`, safe to retry); a
    /// caller that stops waiting later is told the outcome is unknown.
    /// Default 10 s.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_command_bytes: DEFAULT_MAX_COMMAND_BYTES,
            max_entity_id_bytes: DEFAULT_MAX_ENTITY_ID_BYTES,
            max_command_id_bytes: DEFAULT_MAX_COMMAND_ID_BYTES,
            max_events_per_command: DEFAULT_MAX_EVENTS_PER_COMMAND,
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_reply_bytes: DEFAULT_MAX_REPLY_BYTES,
            max_state_bytes: DEFAULT_MAX_STATE_BYTES,
            max_sends_per_command: DEFAULT_MAX_SENDS_PER_COMMAND,
            max_timers_per_command: DEFAULT_MAX_TIMERS_PER_COMMAND,
            max_timer_delay: DEFAULT_MAX_TIMER_DELAY,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn a_database_password_never_reaches_a_log() {
        assert_eq!(
            redact_url("postgres://ada:s3cret@db:5432/stead"),
            "postgres://ada:***@db:5432/stead"
        );
        assert_eq!(
            redact_url("postgres://ada@db:5432/stead"),
            "postgres://ada@db:5432/stead"
        );
        assert_eq!(redact_url("postgres://db/stead"), "postgres://db/stead");
        assert_eq!(
            redact_url("postgres://a:b:c@db/x?sslmode=require"),
            "postgres://a:***@db/x?sslmode=require"
        );
    }
}
