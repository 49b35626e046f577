//! `stead up`: a node and its servers in one process, configured by flags
//! (each also an environment variable), until SIGINT or SIGTERM.
//!
//! Invariant: the token, the exposure and the TLS files are checked before
//! anything is opened or bound.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;

use stead_api::auth::{AdminAuth, TOKEN_ENV, check_exposure, read_token};
use stead_api::tls::TlsConfig;
use stead_node::Node;
use stead_types::config::{self as defaults, NodeConfig};

use super::parse::{
    MAX_CALL_DEADLINE_MS, MAX_IDLE_TIMEOUT_SECS, MAX_MEMORY_LIMIT_MIB, MAX_REQUEST_TIMEOUT_MS,
    at_least_one, horizon, up_to,
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
    /// Shard count; fixed when the data directory is created.
    #[arg(long, env = "STEAD_SHARDS", default_value_t = defaults::DEFAULT_SHARD_COUNT, value_parser = at_least_one::<u32>)]
    shards: u32,
    /// Shard worker threads. Default: the number of CPUs.
    #[arg(long, env = "STEAD_WORKERS", value_parser = at_least_one::<usize>)]
    workers: Option<usize>,
    /// Commands a shard worker may have queued before refusing new ones
    /// (`overloaded`).
    #[arg(long, env = "STEAD_QUEUE_DEPTH", default_value_t = defaults::DEFAULT_QUEUE_DEPTH, value_parser = at_least_one::<usize>)]
    queue_depth: usize,
    /// CPU deadline of one guest call, in milliseconds.
    #[arg(long, env = "STEAD_CALL_DEADLINE_MS", default_value_t = millis(defaults::DEFAULT_CALL_DEADLINE), value_parser = up_to(MAX_CALL_DEADLINE_MS))]
    call_deadline_ms: u64,
    /// Memory limit of a guest instance, in MiB.
    #[arg(long, env = "STEAD_MEMORY_LIMIT_MIB", default_value_t = defaults::DEFAULT_MEMORY_LIMIT_MIB, value_parser = up_to(MAX_MEMORY_LIMIT_MIB))]
    memory_limit_mib: usize,
    /// Commands per entity whose ids are kept in memory: the fast path of
    /// deduplication (older ids are found in the journal's index).
    #[arg(long, env = "STEAD_DEDUP_WINDOW", default_value_t = defaults::DEFAULT_DEDUP_WINDOW, value_parser = at_least_one::<usize>)]
    dedup_window: usize,
    /// How long a command id given by a client (HTTP `Idempotency-Key`,
    /// gRPC/CLI command id) is recognised after its command: a retry within
    /// it gets the original reply, however many commands came in between.
    /// Seconds, or a number with s, m, h or d.
    #[arg(long, env = "STEAD_DEDUP_HORIZON", default_value = DEFAULT_DEDUP_HORIZON_TEXT, value_parser = horizon)]
    dedup_horizon: std::time::Duration,
    /// Idle time after which an entity is passivated, in seconds.
    #[arg(long, env = "STEAD_IDLE_TIMEOUT_SECS", default_value_t = defaults::DEFAULT_IDLE_TIMEOUT.as_secs(), value_parser = up_to(MAX_IDLE_TIMEOUT_SECS))]
    idle_timeout_secs: u64,
    /// Largest command accepted, in bytes.
    #[arg(long, env = "STEAD_MAX_COMMAND_BYTES", default_value_t = defaults::DEFAULT_MAX_COMMAND_BYTES, value_parser = at_least_one::<usize>)]
    max_command_bytes: usize,
    /// Longest entity id, in bytes (UTF-8 without control characters).
    #[arg(long, env = "STEAD_MAX_ENTITY_ID_BYTES", default_value_t = defaults::DEFAULT_MAX_ENTITY_ID_BYTES, value_parser = at_least_one::<usize>)]
    max_entity_id_bytes: usize,
    /// Most events one command may emit.
    #[arg(long, env = "STEAD_MAX_EVENTS_PER_COMMAND", default_value_t = defaults::DEFAULT_MAX_EVENTS_PER_COMMAND, value_parser = at_least_one::<usize>)]
    max_events_per_command: usize,
    /// Largest event a guest may emit, in bytes.
    #[arg(long, env = "STEAD_MAX_EVENT_BYTES", default_value_t = defaults::DEFAULT_MAX_EVENT_BYTES, value_parser = at_least_one::<usize>)]
    max_event_bytes: usize,
    /// Largest entity state, in bytes.
    #[arg(long, env = "STEAD_MAX_STATE_BYTES", default_value_t = defaults::DEFAULT_MAX_STATE_BYTES, value_parser = at_least_one::<usize>)]
    max_state_bytes: usize,
    /// How long a command may wait for its outcome, in milliseconds; one
    /// still queued at its deadline is not executed.
    #[arg(long, env = "STEAD_REQUEST_TIMEOUT_MS", default_value_t = millis(defaults::DEFAULT_REQUEST_TIMEOUT), value_parser = up_to(MAX_REQUEST_TIMEOUT_MS))]
    request_timeout_ms: u64,
    /// Most entities a shard worker recovers from the journal per batch
    /// (recovery after a restart is rate-limited, never a stampede).
    #[arg(long, env = "STEAD_MAX_ACTIVATIONS_PER_BATCH", default_value_t = defaults::DEFAULT_MAX_ACTIVATIONS_PER_BATCH, value_parser = at_least_one::<usize>)]
    max_activations_per_batch: usize,
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
}

/// `stead_types::config::DEFAULT_DEDUP_HORIZON` as the flag spells it (a
/// test keeps the two equal).
pub(crate) const DEFAULT_DEDUP_HORIZON_TEXT: &str = "24h";

/// A default duration in whole milliseconds, as the flags take it.
fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
    init_logging(args.log_format);
    let mut config = NodeConfig::new(&args.data_dir);
    config.shard_count = args.shards;
    if let Some(workers) = args.workers {
        config.shards.workers = workers;
    }
    config.shards.queue_depth = args.queue_depth;
    config.engine.call_deadline = std::time::Duration::from_millis(args.call_deadline_ms);
    config.engine.memory_limit = args.memory_limit_mib * 1024 * 1024;
    config.shards.max_activations_per_batch = args.max_activations_per_batch;
    let limits = &mut config.limits;
    limits.max_command_bytes = args.max_command_bytes;
    limits.max_entity_id_bytes = args.max_entity_id_bytes;
    limits.max_events_per_command = args.max_events_per_command;
    limits.max_event_bytes = args.max_event_bytes;
    limits.max_state_bytes = args.max_state_bytes;
    limits.request_timeout = std::time::Duration::from_millis(args.request_timeout_ms);
    config.shards.idle_timeout = std::time::Duration::from_secs(args.idle_timeout_secs);
    config.shards.dedup_horizon = args.dedup_horizon;
    config.shards.dedup_window = args.dedup_window;
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
        let state = stead_api::ApiState::with_auth(node.clone(), auth);
        let listeners = stead_api::Listeners::bind(args.grpc, args.http).await?;
        let grpc_addr = listeners.grpc.local_addr().context("gRPC address")?;
        let http_addr = listeners.http.local_addr().context("HTTP address")?;
        // The line scripts and tests wait for (stdout; logs go to stderr).
        let tls_note = if tls.is_some() { " tls=on" } else { "" };
        println!(
            "stead ready: grpc={grpc_addr} http={http_addr}{tls_note} data={}",
            args.data_dir.display()
        );
        tracing::info!(%grpc_addr, %http_addr, tls = tls.is_some(), admin_token = state.auth.is_required(), "serving");
        stead_api::serve(state, listeners, tls.as_ref(), shutdown_signal()).await?;
        tracing::info!("shutting down");
        match Arc::try_unwrap(node) {
            Ok(node) => tokio::task::spawn_blocking(move || node.shutdown())
                .await
                .context("stopping the node")?,
            Err(node) => drop(node),
        }
        Ok(())
    })
}

async fn shutdown_signal() {
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
