//! `stead up`: a node and its servers in one process, configured by flags
//! (each also an environment variable), until SIGINT or SIGTERM.
//!
//! Invariant: the token, the exposure and the TLS files are checked before
//! anything is opened or bound.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use stead_api::auth::{AdminAuth, TOKEN_ENV, check_exposure, read_token};
use stead_api::tls::TlsConfig;
use stead_node::Node;
use stead_types::config::{self as defaults, JournalConfig, NodeConfig, PostgresOptions};

use super::parse::{
    MAX_CALL_DEADLINE_MS, MAX_IDLE_TIMEOUT_SECS, MAX_MEMORY_LIMIT_MIB, MAX_REQUEST_TIMEOUT_MS,
    horizon, journal, lease_time, nonzero_u32, nonzero_up_to_u64, nonzero_up_to_usize,
    nonzero_usize, nz_u32, nz_u64, nz_usize,
};

#[derive(clap::Args)]
pub(crate) struct UpArgs {
    /// Data directory (journal, components).
    #[arg(long, env = "STEAD_DATA_DIR", default_value = ".stead")]
    data_dir: PathBuf,
    /// gRPC listen address.
    #[arg(long, env = "STEAD_GRPC", default_value = "127.0.0.1:7400")]
    grpc: SocketAddr,
    /// HTTP listen address.
    #[arg(long, env = "STEAD_HTTP", default_value = "127.0.0.1:7480")]
    http: SocketAddr,
    /// The journal: `sled`, embedded in the data directory (the default), or
    /// a PostgreSQL database shared by the nodes of a cluster,
    /// `postgres://user[:password]@host:port/database` (tables created at
    /// first start).
    #[arg(long, env = "STEAD_JOURNAL", default_value = "sled", value_parser = journal, hide_env_values = true)]
    journal: String,
    /// This node's name in a shared journal's shard leases. A node that
    /// restarts under the same id takes its shards back at once; under
    /// another it waits for their leases to expire. Default: the host name
    /// and a random suffix, new at each start.
    #[arg(long, env = "STEAD_NODE_ID")]
    node_id: Option<String>,
    /// How long a shard lease in a shared journal lasts without renewal
    /// (on the database's clock): a dead node's shards move after it.
    /// Milliseconds, or a number with ms or s.
    #[arg(long, env = "STEAD_LEASE_TTL", default_value = "2s", value_parser = lease_time)]
    lease_ttl: std::time::Duration,
    /// How often a node renews its shard leases; under half the ttl.
    #[arg(long, env = "STEAD_LEASE_RENEW_INTERVAL", default_value = "500ms", value_parser = lease_time)]
    lease_renew_interval: std::time::Duration,
    /// Shard count; fixed when the data directory is created.
    #[arg(long, env = "STEAD_SHARDS", default_value_t = nz_u32(defaults::DEFAULT_SHARD_COUNT), value_parser = nonzero_u32)]
    shards: NonZeroU32,
    /// Shard worker threads. Default: the number of CPUs.
    #[arg(long, env = "STEAD_WORKERS", value_parser = nonzero_usize)]
    workers: Option<NonZeroUsize>,
    /// Commands a shard worker may have queued before refusing new ones
    /// (`overloaded`).
    #[arg(long, env = "STEAD_QUEUE_DEPTH", default_value_t = nz_usize(defaults::DEFAULT_QUEUE_DEPTH), value_parser = nonzero_usize)]
    queue_depth: NonZeroUsize,
    /// CPU deadline of one guest call, in milliseconds.
    #[arg(long, env = "STEAD_CALL_DEADLINE_MS", default_value_t = millis(defaults::DEFAULT_CALL_DEADLINE), value_parser = nonzero_up_to_u64(MAX_CALL_DEADLINE_MS))]
    call_deadline_ms: NonZeroU64,
    /// Memory limit of a guest instance, in MiB.
    #[arg(long, env = "STEAD_MEMORY_LIMIT_MIB", default_value_t = nz_usize(defaults::DEFAULT_MEMORY_LIMIT_MIB), value_parser = nonzero_up_to_usize(MAX_MEMORY_LIMIT_MIB))]
    memory_limit_mib: NonZeroUsize,
    /// Commands per entity whose ids are kept in memory: the fast path of
    /// deduplication (older ids are found in the journal's index).
    #[arg(long, env = "STEAD_DEDUP_WINDOW", default_value_t = nz_usize(defaults::DEFAULT_DEDUP_WINDOW), value_parser = nonzero_usize)]
    dedup_window: NonZeroUsize,
    /// How long a command id given by a client (HTTP `Idempotency-Key`,
    /// gRPC/CLI command id) is recognised after its command: a retry within
    /// it gets the original reply, however many commands came in between.
    /// Seconds, or a number with s, m, h or d.
    #[arg(long, env = "STEAD_DEDUP_HORIZON", default_value = DEFAULT_DEDUP_HORIZON_TEXT, value_parser = horizon)]
    dedup_horizon: std::time::Duration,
    /// Idle time after which an entity is passivated, in seconds.
    #[arg(long, env = "STEAD_IDLE_TIMEOUT_SECS", default_value_t = nz_u64(defaults::DEFAULT_IDLE_TIMEOUT.as_secs()), value_parser = nonzero_up_to_u64(MAX_IDLE_TIMEOUT_SECS))]
    idle_timeout_secs: NonZeroU64,
    /// Largest command accepted, in bytes.
    #[arg(long, env = "STEAD_MAX_COMMAND_BYTES", default_value_t = nz_usize(defaults::DEFAULT_MAX_COMMAND_BYTES), value_parser = nonzero_usize)]
    max_command_bytes: NonZeroUsize,
    /// Longest entity id, in bytes (UTF-8 without control characters).
    #[arg(long, env = "STEAD_MAX_ENTITY_ID_BYTES", default_value_t = nz_usize(defaults::DEFAULT_MAX_ENTITY_ID_BYTES), value_parser = nonzero_usize)]
    max_entity_id_bytes: NonZeroUsize,
    /// Most events one command may emit.
    #[arg(long, env = "STEAD_MAX_EVENTS_PER_COMMAND", default_value_t = nz_usize(defaults::DEFAULT_MAX_EVENTS_PER_COMMAND), value_parser = nonzero_usize)]
    max_events_per_command: NonZeroUsize,
    /// Largest event a guest may emit, in bytes.
    #[arg(long, env = "STEAD_MAX_EVENT_BYTES", default_value_t = nz_usize(defaults::DEFAULT_MAX_EVENT_BYTES), value_parser = nonzero_usize)]
    max_event_bytes: NonZeroUsize,
    /// Largest entity state, in bytes.
    #[arg(long, env = "STEAD_MAX_STATE_BYTES", default_value_t = nz_usize(defaults::DEFAULT_MAX_STATE_BYTES), value_parser = nonzero_usize)]
    max_state_bytes: NonZeroUsize,
    /// Most commands to other entities one command may send.
    #[arg(long, env = "STEAD_MAX_SENDS_PER_COMMAND", default_value_t = nz_usize(defaults::DEFAULT_MAX_SENDS_PER_COMMAND), value_parser = nonzero_usize)]
    max_sends_per_command: NonZeroUsize,
    /// Most timer changes one command may make.
    #[arg(long, env = "STEAD_MAX_TIMERS_PER_COMMAND", default_value_t = nz_usize(defaults::DEFAULT_MAX_TIMERS_PER_COMMAND), value_parser = nonzero_usize)]
    max_timers_per_command: NonZeroUsize,
    /// Furthest ahead of the node's clock a guest may set a timer (a timer
    /// further out fails its command). Seconds, or a number with s, m, h
    /// or d.
    #[arg(long, env = "STEAD_MAX_TIMER_DELAY", default_value = DEFAULT_MAX_TIMER_DELAY_TEXT, value_parser = horizon)]
    max_timer_delay: std::time::Duration,
    /// How long a command may wait for its outcome, in milliseconds; one
    /// still queued at its deadline is not executed.
    #[arg(long, env = "STEAD_REQUEST_TIMEOUT_MS", default_value_t = millis(defaults::DEFAULT_REQUEST_TIMEOUT), value_parser = nonzero_up_to_u64(MAX_REQUEST_TIMEOUT_MS))]
    request_timeout_ms: NonZeroU64,
    /// Most entities a shard worker recovers from the journal per batch
    /// (recovery after a restart is rate-limited, never a stampede).
    #[arg(long, env = "STEAD_MAX_ACTIVATIONS_PER_BATCH", default_value_t = nz_usize(defaults::DEFAULT_MAX_ACTIVATIONS_PER_BATCH), value_parser = nonzero_usize)]
    max_activations_per_batch: NonZeroUsize,
    /// File holding the admin token that admin calls (gRPC `Admin`, HTTP
    /// `POST /v1/components`) must present as `Authorization: Bearer
    /// <token>`: whitespace trimmed, at least 16 bytes. `STEAD_ADMIN_TOKEN`
    /// holds the token itself (the file wins). Required when --grpc or
    /// --http is not a loopback address.
    #[arg(long, env = "STEAD_ADMIN_TOKEN_FILE", value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// PEM certificate chain: serve gRPC and HTTP over TLS (with --tls-key).
    #[arg(
        long,
        env = "STEAD_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "STEAD_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Log format.
    #[arg(long, env = "STEAD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Cluster membership (needs a PostgreSQL journal).
#[derive(clap::Args)]
pub(crate) struct ClusterArgs {
    /// Join a cluster: the gossip addresses (`host:port`, UDP) of nodes to
    /// contact first, comma-separated; names are resolved again
    /// periodically. The first node may name itself. Without it, the node
    /// runs alone and holds every shard.
    #[arg(long, env = "STEAD_SEEDS", value_delimiter = ',', num_args = 1..)]
    seeds: Option<Vec<String>>,
    /// Where gossip (UDP) listens. Default: the --grpc address (UDP and TCP
    /// ports do not collide).
    #[arg(long, env = "STEAD_GOSSIP")]
    gossip: Option<SocketAddr>,
    /// The host (name or IP) other nodes and clients reach this node at.
    /// Default: the IP of --grpc, which must then not be 0.0.0.0 or ::.
    #[arg(long, env = "STEAD_ADVERTISE")]
    advertise: Option<String>,
    /// Nodes of different clusters never gossip together.
    #[arg(long, env = "STEAD_CLUSTER_ID", default_value = "stead")]
    cluster_id: String,
    /// How often a node gossips; a silent node is declared dead after
    /// about 6 intervals.
    #[arg(long, env = "STEAD_GOSSIP_INTERVAL", default_value = "200ms", value_parser = lease_time)]
    gossip_interval: std::time::Duration,
    /// Pause between two rounds of rebalancing (claiming the shards placed
    /// on this node, releasing the others).
    #[arg(long, env = "STEAD_REBALANCE_INTERVAL", default_value = "250ms", value_parser = lease_time)]
    rebalance_interval: std::time::Duration,
    /// Most shards claimed, and most released, per round.
    #[arg(long, env = "STEAD_REBALANCE_BATCH", default_value_t = nz_usize(stead_cluster::DEFAULT_REBALANCE_BATCH), value_parser = nonzero_usize)]
    rebalance_batch: NonZeroUsize,
    /// How long a request waits for a shard that is moving between nodes
    /// before it fails with 503 / UNAVAILABLE.
    #[arg(long, env = "STEAD_FORWARD_WAIT", default_value = "5s", value_parser = lease_time)]
    forward_wait: std::time::Duration,
    /// How long a node cut off from most of the cluster's members (three or
    /// more) keeps serving before it releases every shard and serves
    /// nothing until it reaches a majority again.
    #[arg(long, env = "STEAD_ISOLATION_BOUND", default_value = "5s", value_parser = lease_time)]
    isolation_bound: std::time::Duration,
}

/// `stead_types::config::DEFAULT_DEDUP_HORIZON` as the flag spells it (a
/// test keeps the two equal).
pub(crate) const DEFAULT_DEDUP_HORIZON_TEXT: &str = "24h";
/// `DEFAULT_MAX_TIMER_DELAY` as the flag writes it.
pub(crate) const DEFAULT_MAX_TIMER_DELAY_TEXT: &str = "365d";

/// A default duration in whole milliseconds, as the flags take it.
fn millis(d: std::time::Duration) -> NonZeroU64 {
    nz_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STEAD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: escape codes in a log file or
    // a collector are noise, and formatting them costs on every span.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub(crate) fn up(args: UpArgs, token_file: Option<PathBuf>) -> Result<()> {
    // Refused before anything is opened or bound.
    let token_file = args.admin_token_file.clone().or(token_file);
    let token = read_token(token_file.as_deref(), std::env::var_os(TOKEN_ENV))?;
    let auth = AdminAuth::from_token(token.as_deref());
    check_exposure(&auth, &[("--grpc", args.grpc), ("--http", args.http)])?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsConfig::load(cert, key)?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    if args.lease_renew_interval * 2 > args.lease_ttl {
        bail!(
            "--lease-renew-interval ({:?}) must be at most half of --lease-ttl ({:?}), so one late renewal does not lose the shards",
            args.lease_renew_interval,
            args.lease_ttl
        );
    }
    init_logging(args.log_format);
    let config = node_config(&args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("stead-api")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let node = tokio::task::spawn_blocking(move || Node::open(config))
            .await
            .context("opening the node")?
            .with_context(|| format!("opening the data directory {}", args.data_dir.display()))?;
        let node = Arc::new(node);
        let listeners = stead_api::Listeners::bind(args.grpc, args.http).await?;
        let grpc_addr = listeners.grpc.local_addr().context("gRPC address")?;
        let http_addr = listeners.http.local_addr().context("HTTP address")?;
        let cluster = match cluster_config(&args, node.config(), grpc_addr, http_addr)? {
            Some(config) => Some(Arc::new(
                stead_cluster::Cluster::start(node.clone(), config)
                    .await
                    .context("joining the cluster")?,
            )),
            None => None,
        };
        let state = match &cluster {
            Some(cluster) => stead_api::ApiState::clustered(node.clone(), auth, cluster.clone()),
            None => stead_api::ApiState::with_auth(node.clone(), auth),
        };
        // The line scripts and tests wait for (stdout; logs go to stderr).
        let tls_note = if tls.is_some() { " tls=on" } else { "" };
        let cluster_note = match &cluster {
            Some(cluster) => format!(" node={}", cluster.node_id()),
            None => String::new(),
        };
        println!(
            "stead ready: grpc={grpc_addr} http={http_addr}{tls_note}{cluster_note} data={}",
            args.data_dir.display()
        );
        tracing::info!(%grpc_addr, %http_addr, tls = tls.is_some(), admin_token = state.auth.is_required(), journal = %node.journal_description(), "serving");
        // A member leaves before its servers stop: its shards are released
        // (queued commands finish) while peers can still reach it.
        let leaving = cluster.clone();
        let stop = async move {
            shutdown_signal().await;
            if let Some(cluster) = leaving {
                cluster.leave().await;
            }
        };
        stead_api::serve(state, listeners, tls.as_ref(), stop).await?;
        drop(cluster);
        tracing::info!("shutting down");
        // A delivery still in flight on this runtime holds the node for a
        // moment (the courier's cluster dispatch): wait for it, briefly.
        let mut node = node;
        let give_up = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match Arc::try_unwrap(node) {
                Ok(node) => {
                    tokio::task::spawn_blocking(move || node.shutdown())
                        .await
                        .context("stopping the node")?;
                    break;
                }
                Err(shared) if std::time::Instant::now() < give_up => {
                    node = shared;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(shared) => {
                    tracing::warn!("the node is still in use at exit; its leases expire instead of being released");
                    drop(shared);
                    break;
                }
            }
        }
        Ok(())
    })
}

/// The node's configuration from the flags.
fn node_config(args: &UpArgs) -> NodeConfig {
    let mut config = NodeConfig::new(&args.data_dir);
    config.shard_count = args.shards.get();
    if let Some(workers) = args.workers {
        config.shards.workers = workers.get();
    }
    config.shards.queue_depth = args.queue_depth.get();
    config.engine.call_deadline = std::time::Duration::from_millis(args.call_deadline_ms.get());
    config.engine.memory_limit = args.memory_limit_mib.get() * 1024 * 1024;
    config.shards.max_activations_per_batch = args.max_activations_per_batch.get();
    let limits = &mut config.limits;
    limits.max_command_bytes = args.max_command_bytes.get();
    limits.max_entity_id_bytes = args.max_entity_id_bytes.get();
    limits.max_events_per_command = args.max_events_per_command.get();
    limits.max_event_bytes = args.max_event_bytes.get();
    limits.max_state_bytes = args.max_state_bytes.get();
    limits.max_sends_per_command = args.max_sends_per_command.get();
    limits.max_timers_per_command = args.max_timers_per_command.get();
    limits.max_timer_delay = args.max_timer_delay;
    limits.request_timeout = std::time::Duration::from_millis(args.request_timeout_ms.get());
    config.shards.idle_timeout = std::time::Duration::from_secs(args.idle_timeout_secs.get());
    config.shards.dedup_horizon = args.dedup_horizon;
    config.shards.dedup_window = args.dedup_window.get();
    if args.journal != "sled" {
        let node_id = args.node_id.clone().unwrap_or_else(default_node_id);
        let mut options = PostgresOptions::new(&args.journal, node_id);
        options.lease_ttl = args.lease_ttl;
        options.renew_interval = args.lease_renew_interval;
        config.journal = JournalConfig::Postgres(options);
    }
    // A member holds only what placement gives it.
    config.acquire_all_at_open = args.cluster.seeds.is_none();
    config
}

/// The cluster's configuration from the flags, when the node joins one.
fn cluster_config(
    args: &UpArgs,
    config: &NodeConfig,
    grpc: SocketAddr,
    http: SocketAddr,
) -> Result<Option<stead_cluster::ClusterConfig>> {
    let cluster = &args.cluster;
    let Some(seeds) = &cluster.seeds else {
        return Ok(None);
    };
    let JournalConfig::Postgres(options) = &config.journal else {
        bail!(
            "--seeds makes the node a cluster member, which needs a journal shared by the nodes: give --journal postgres://..."
        );
    };
    if args.tls_cert.is_some() {
        bail!(
            "TLS between cluster members is not supported yet: run a cluster without --tls-cert, behind a TLS-terminating proxy or on a private network"
        );
    }
    let advertise = match &cluster.advertise {
        Some(host) => host.clone(),
        None if grpc.ip().is_unspecified() => bail!(
            "--grpc listens on {grpc}: give --advertise with the host other nodes reach this one at"
        ),
        None => grpc.ip().to_string(),
    };
    let gossip = cluster.gossip.unwrap_or(grpc);
    let gossip_advertise = if gossip.ip().is_unspecified() || cluster.advertise.is_some() {
        let host = format!("{advertise}:{}", gossip.port());
        std::net::ToSocketAddrs::to_socket_addrs(&host)
            .with_context(|| format!("resolving --advertise {advertise}"))?
            .next()
            .with_context(|| format!("--advertise {advertise} resolves to no address"))?
    } else {
        gossip
    };
    let join = |host: &str, port: u16| {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    };
    let mut membership =
        stead_cluster::membership::MembershipConfig::new(options.node_id.clone(), gossip);
    membership.gossip_advertise = gossip_advertise;
    membership.cluster_id = cluster.cluster_id.clone();
    membership.seeds = seeds.iter().filter(|s| !s.is_empty()).cloned().collect();
    membership.gossip_interval = cluster.gossip_interval;
    membership.grpc_advertise = join(&advertise, grpc.port());
    membership.http_advertise = join(&advertise, http.port());
    let mut config = stead_cluster::ClusterConfig::new(membership);
    config.rebalance_interval = cluster.rebalance_interval;
    config.rebalance_batch = cluster.rebalance_batch.get();
    config.forward_wait = cluster.forward_wait;
    config.isolation_bound = cluster.isolation_bound;
    Ok(Some(config))
}

/// The host name and a random suffix (new at each start).
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{:x}{nanos:08x}", std::process::id())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Up {
        #[command(flatten)]
        args: UpArgs,
    }

    #[test]
    fn every_flag_default_is_the_librarys_default() {
        let up = Up::try_parse_from(["up"]).expect("the defaults parse");
        let from_flags = node_config(&up.args);
        let library = NodeConfig::new(&up.args.data_dir);
        assert_eq!(from_flags.shard_count, library.shard_count);
        assert_eq!(
            format!("{:?}", from_flags.engine),
            format!("{:?}", library.engine)
        );
        assert_eq!(
            format!("{:?}", from_flags.shards),
            format!("{:?}", library.shards)
        );
        assert_eq!(
            format!("{:?}", from_flags.limits),
            format!("{:?}", library.limits)
        );
        assert!(matches!(from_flags.journal, JournalConfig::Sled(_)));
        let pg = Up::try_parse_from(["up", "--journal", "postgres://u@h/d"]).expect("parse");
        let JournalConfig::Postgres(options) = node_config(&pg.args).journal else {
            panic!("a postgres URL chooses the PostgreSQL journal");
        };
        let library = PostgresOptions::new("postgres://u@h/d", "x");
        assert_eq!(options.lease_ttl, library.lease_ttl);
        assert_eq!(options.renew_interval, library.renew_interval);
        assert!(Up::try_parse_from(["up", "--journal", "mysql://h/d"]).is_err());
        assert!(Up::try_parse_from(["up", "--lease-ttl", "5ms"]).is_err());
    }
}
