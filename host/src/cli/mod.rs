//! The `stead` command line: `up` runs a node; client commands talk to a
//! node over gRPC (TLS for `https://` addresses; the admin token on admin
//! calls when given); `build` turns a guest crate into a component.
//!
//! The binary's edge: errors are `anyhow` here and become one line on stderr
//! and exit code 1 (2 for usage errors, from clap).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::api::auth::{AdminAuth, TOKEN_ENV, check_exposure, read_token};
use crate::api::proto;
use crate::api::tls::TlsConfig;
use crate::component::build::{BuildRequest, build};
use crate::{Node, NodeConfig};

#[derive(Parser)]
#[command(
    name = "stead",
    version,
    about = "Stateful entities as WebAssembly components, run as if they were stateless"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// gRPC address of the node, for client commands.
    #[arg(
        long,
        global = true,
        env = "STEAD_ADDR",
        default_value = "http://127.0.0.1:7400"
    )]
    addr: String,
    /// File holding the admin token, sent on admin calls (deploy, types,
    /// info); `STEAD_ADMIN_TOKEN` holds the token itself (the file wins).
    /// For `up`: the same as --admin-token-file.
    #[arg(
        long,
        global = true,
        env = "STEAD_ADMIN_TOKEN_FILE",
        value_name = "FILE"
    )]
    token_file: Option<PathBuf>,
    /// PEM certificate of a private CA to trust for an `https://` address
    /// (default: the system's roots).
    #[arg(long, global = true, env = "STEAD_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node on embedded defaults (Ctrl-C or SIGTERM stops it cleanly).
    Up(UpArgs),
    /// Deploy a component (.wasm) to the node.
    Deploy {
        /// The component file, e.g. target/guests/account.wasm.
        file: PathBuf,
    },
    /// Send a JSON command to an entity.
    Send {
        /// Entity type, e.g. account.
        #[arg(value_name = "TYPE")]
        entity_type: String,
        /// Entity id, e.g. acc-1.
        #[arg(value_name = "ID")]
        entity_id: String,
        /// The command, e.g. '{"deposit":{"amount":100}}'.
        #[arg(value_name = "JSON")]
        command: String,
        /// Command id (idempotency key): a retry with the same id returns the
        /// original reply and persists nothing.
        #[arg(long = "id", value_name = "CMD_ID")]
        command_id: Option<String>,
    },
    /// Show an entity's view.
    Get {
        #[arg(value_name = "TYPE")]
        entity_type: String,
        #[arg(value_name = "ID")]
        entity_id: String,
    },
    /// List an entity's persisted events.
    Events {
        #[arg(value_name = "TYPE")]
        entity_type: String,
        #[arg(value_name = "ID")]
        entity_id: String,
        /// First sequence number to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
    },
    /// List the deployed entity types.
    Types,
    /// Show the node's version, data directory, shards and load.
    Info,
    /// Measure a node: throughput, latency, memory, recovery (see BENCHMARKS.md).
    Bench(BenchArgs),
    /// Build a guest crate into a validated component.
    Build {
        /// The guest crate (or workspace of guest crates). Default: `.`.
        path: Option<PathBuf>,
        /// Where to write `<name>.wasm`. Default: `<path>/target/stead`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Cargo target directory of the wasm build. Default:
        /// `<path>/target/stead-wasm`.
        #[arg(long)]
        target_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct BenchArgs {
    #[command(subcommand)]
    scenario: BenchScenario,
    /// Entity type of the workload.
    #[arg(long = "type", global = true, default_value = "account")]
    entity_type: String,
    /// Sent once to each entity before measuring.
    #[arg(long, global = true, default_value = r#"{"open":{"owner":"bench"}}"#)]
    setup: String,
    /// Sent by every measured request.
    #[arg(long, global = true, default_value = r#"{"deposit":{"amount":1}}"#)]
    command: String,
    /// Seconds each network measurement runs.
    #[arg(long, global = true, default_value_t = 20)]
    duration: u64,
    /// Directory on the disk to measure (flush yardstick, in-process nodes).
    #[arg(long, global = true, default_value_os_t = std::env::temp_dir())]
    work_dir: PathBuf,
}

#[derive(Subcommand)]
enum BenchScenario {
    /// HTTP ingress with wrk, beside the no-op route (a running node).
    Http {
        /// HTTP address of the node.
        #[arg(long, default_value = "127.0.0.1:7480")]
        http: String,
        #[arg(long, default_value_t = 10_000)]
        entities: usize,
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// gRPC with many requests in flight over a few connections (a running node).
    Grpc {
        #[arg(long, default_value_t = 10_000)]
        entities: usize,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// One entity, one connection, sequential; beside one durable flush.
    Hot,
    /// In process: commands/s through shards, wasm and journal.
    Engine {
        #[arg(long)]
        component: PathBuf,
        #[arg(long, default_value_t = 200_000)]
        commands: usize,
        #[arg(long, default_value_t = 10_000)]
        entities: usize,
        /// Shard worker threads of the in-process node (default: one per core,
        /// as `stead up`).
        #[arg(long, value_parser = at_least_one::<usize>)]
        workers: Option<usize>,
    },
    /// In process: RSS per active entity, and after passivation.
    Memory {
        #[arg(long)]
        component: PathBuf,
        #[arg(long, default_value_t = 1_000_000)]
        entities: usize,
    },
    /// In process: activation of a long history; restart over many entities.
    Recovery {
        #[arg(long)]
        component: PathBuf,
        #[arg(long, default_value_t = 10_000)]
        events: usize,
        #[arg(long, default_value_t = 100_000)]
        entities: usize,
        #[arg(long, default_value_t = 1_000)]
        sample: usize,
    },
}

#[derive(clap::Args)]
struct UpArgs {
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
    #[arg(long, env = "STEAD_SHARDS", default_value_t = crate::config::DEFAULT_SHARD_COUNT, value_parser = at_least_one::<u32>)]
    shards: u32,
    /// Shard worker threads. Default: the number of CPUs.
    #[arg(long, env = "STEAD_WORKERS", value_parser = at_least_one::<usize>)]
    workers: Option<usize>,
    /// Commands a shard worker may have queued before refusing new ones
    /// (`overloaded`).
    #[arg(long, env = "STEAD_QUEUE_DEPTH", default_value_t = 4096, value_parser = at_least_one::<usize>)]
    queue_depth: usize,
    /// CPU deadline of one guest call, in milliseconds.
    #[arg(long, env = "STEAD_CALL_DEADLINE_MS", default_value_t = 100, value_parser = up_to(MAX_CALL_DEADLINE_MS))]
    call_deadline_ms: u64,
    /// Memory limit of a guest instance, in MiB.
    #[arg(long, env = "STEAD_MEMORY_LIMIT_MIB", default_value_t = 64, value_parser = up_to(MAX_MEMORY_LIMIT_MIB))]
    memory_limit_mib: usize,
    /// Idle time after which an entity is passivated, in seconds.
    #[arg(long, env = "STEAD_IDLE_TIMEOUT_SECS", default_value_t = 120, value_parser = up_to(MAX_IDLE_TIMEOUT_SECS))]
    idle_timeout_secs: u64,
    /// Largest command accepted, in bytes.
    #[arg(long, env = "STEAD_MAX_COMMAND_BYTES", default_value_t = 1024 * 1024, value_parser = at_least_one::<usize>)]
    max_command_bytes: usize,
    /// Longest entity id, in bytes (UTF-8 without control characters).
    #[arg(long, env = "STEAD_MAX_ENTITY_ID_BYTES", default_value_t = 256, value_parser = at_least_one::<usize>)]
    max_entity_id_bytes: usize,
    /// Most events one command may emit.
    #[arg(long, env = "STEAD_MAX_EVENTS_PER_COMMAND", default_value_t = 100, value_parser = at_least_one::<usize>)]
    max_events_per_command: usize,
    /// Largest event a guest may emit, in bytes.
    #[arg(long, env = "STEAD_MAX_EVENT_BYTES", default_value_t = 256 * 1024, value_parser = at_least_one::<usize>)]
    max_event_bytes: usize,
    /// Largest entity state, in bytes.
    #[arg(long, env = "STEAD_MAX_STATE_BYTES", default_value_t = 4 * 1024 * 1024, value_parser = at_least_one::<usize>)]
    max_state_bytes: usize,
    /// How long a command may wait for its outcome, in milliseconds; one
    /// still queued at its deadline is not executed.
    #[arg(long, env = "STEAD_REQUEST_TIMEOUT_MS", default_value_t = 10_000, value_parser = up_to(MAX_REQUEST_TIMEOUT_MS))]
    request_timeout_ms: u64,
    /// Most entities a shard worker recovers from the journal per batch
    /// (recovery after a restart is rate-limited, never a stampede).
    #[arg(long, env = "STEAD_MAX_ACTIVATIONS_PER_BATCH", default_value_t = 64, value_parser = at_least_one::<usize>)]
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

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Runs the command line; the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stead: error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Build {
        path,
        out,
        target_dir,
    } = &cli.command
    {
        return build_command(path.clone(), out.clone(), target_dir.clone(), cli.json);
    }
    if let Command::Up(args) = cli.command {
        return up(args, cli.token_file);
    }
    if let Command::Bench(args) = cli.command {
        return bench(args, &cli.addr, cli.json);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(client(cli))
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

fn up(args: UpArgs, token_file: Option<PathBuf>) -> Result<()> {
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
        let state = crate::api::ApiState::with_auth(node.clone(), auth);
        let listeners = crate::api::Listeners::bind(args.grpc, args.http).await?;
        let grpc_addr = listeners.grpc.local_addr().context("gRPC address")?;
        let http_addr = listeners.http.local_addr().context("HTTP address")?;
        // The line scripts and tests wait for (stdout; logs go to stderr).
        let tls_note = if tls.is_some() { " tls=on" } else { "" };
        println!(
            "stead ready: grpc={grpc_addr} http={http_addr}{tls_note} data={}",
            args.data_dir.display()
        );
        tracing::info!(%grpc_addr, %http_addr, tls = tls.is_some(), admin_token = state.auth.is_required(), "serving");
        crate::api::serve(state, listeners, tls.as_ref(), shutdown_signal()).await?;
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

fn build_command(
    path: Option<PathBuf>,
    out: Option<PathBuf>,
    target_dir: Option<PathBuf>,
    json: bool,
) -> Result<()> {
    let crate_dir = path.unwrap_or_else(|| PathBuf::from("."));
    let crate_dir = crate_dir
        .canonicalize()
        .with_context(|| format!("{} does not exist", crate_dir.display()))?;
    let request = BuildRequest {
        target_dir: target_dir.unwrap_or_else(|| crate_dir.join("target/stead-wasm")),
        out_dir: out.unwrap_or_else(|| crate_dir.join("target/stead")),
        crate_dir,
        show_cargo_output: !json,
    };
    let built = build(&request, &mut |line| eprintln!("stead: {line}"))?;
    for component in &built {
        if json {
            println!(
                "{}",
                serde_json::json!({"name": component.name, "path": component.path, "size_bytes": component.size})
            );
        } else {
            println!("{} ({} bytes)", component.path.display(), component.size);
        }
    }
    Ok(())
}

/// A channel to `addr`: TLS for `https://`, trusting `ca_cert` if given,
/// else the system's roots.
async fn connect(addr: &str, ca_cert: Option<&Path>) -> Result<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let mut endpoint = Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("invalid node address {addr}"))?;
    let https = endpoint.uri().scheme_str() == Some("https");
    let tls = match (https, ca_cert) {
        (true, Some(path)) => {
            Some(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read_ca_cert(path)?)))
        }
        (true, None) => Some(ClientTlsConfig::new().with_native_roots()),
        (false, Some(_)) => bail!("--ca-cert needs an https:// address, not {addr}"),
        (false, None) => None,
    };
    if let Some(tls) = tls {
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| anyhow!("TLS for {addr}: {}", source_chain(&e)))?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| anyhow!("node unreachable at {addr}: {}", source_chain(&e)))
}

/// A CA certificate file, refused unless it holds PEM certificates.
fn read_ca_cert(path: &Path) -> Result<Vec<u8>> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(path)
        .with_context(|| format!("reading the CA certificate {}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            anyhow!(
                "the CA certificate {} is not valid PEM: {e}",
                path.display()
            )
        })?;
    if certs.is_empty() {
        bail!(
            "the CA certificate {} holds no PEM `CERTIFICATE` section",
            path.display()
        );
    }
    Ok(pem)
}

async fn client(cli: Cli) -> Result<()> {
    let addr = cli.addr.clone();
    let token = read_token(cli.token_file.as_deref(), std::env::var_os(TOKEN_ENV))?;
    let authorization = token
        .map(|t| tonic::metadata::MetadataValue::try_from(format!("Bearer {t}")))
        .transpose()
        .context("the admin token does not fit a header")?;
    let channel = connect(&addr, cli.ca_cert.as_deref()).await?;
    let mut entities = proto::entities_client::EntitiesClient::new(channel.clone());
    // The token goes with admin calls only.
    let mut admin = proto::admin_client::AdminClient::with_interceptor(
        channel,
        move |mut request: tonic::Request<()>| {
            if let Some(value) = &authorization {
                request
                    .metadata_mut()
                    .insert("authorization", value.clone());
            }
            Ok(request)
        },
    )
    .max_encoding_message_size(crate::api::MAX_COMPONENT_BYTES);
    let json = cli.json;
    match cli.command {
        Command::Deploy { file } => {
            let component =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let response = admin
                .deploy(proto::DeployRequest { component })
                .await
                .map_err(status_error)?
                .into_inner();
            let t = response
                .entity_type
                .ok_or_else(|| anyhow!("the node answered no entity type"))?;
            if json {
                println!("{}", type_json(&t));
            } else {
                println!(
                    "deployed {} {} ({} bytes, sha256 {}, snapshot every {} events)",
                    t.name,
                    t.version,
                    t.size_bytes,
                    &t.sha256[..t.sha256.len().min(12)],
                    t.snapshot_every
                );
            }
        }
        Command::Send {
            entity_type,
            entity_id,
            command,
            command_id,
        } => {
            let response = entities
                .send(proto::SendRequest {
                    entity_type,
                    entity_id,
                    command_json: command,
                    command_id: command_id.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                let reply: serde_json::Value = serde_json::from_str(&response.reply_json)
                    .unwrap_or(serde_json::Value::String(response.reply_json));
                println!(
                    "{}",
                    serde_json::json!({"reply": reply, "seq_nr": response.seq_nr, "duplicate": response.duplicate})
                );
            } else {
                // Verbatim, in the entity's own field order.
                let note = if response.duplicate {
                    ", duplicate: original reply"
                } else {
                    ""
                };
                println!(
                    "{}  (seq-nr {}{note})",
                    response.reply_json, response.seq_nr
                );
            }
        }
        Command::Get {
            entity_type,
            entity_id,
        } => {
            let response = entities
                .get(proto::GetRequest {
                    entity_type,
                    entity_id,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            // Verbatim, in the entity's own field order.
            println!("{}", response.view_json);
        }
        Command::Events {
            entity_type,
            entity_id,
            from,
        } => {
            let mut stream = entities
                .stream_events(proto::StreamEventsRequest {
                    entity_type,
                    entity_id,
                    from_seq_nr: from,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut count = 0;
            while let Some(event) = stream.message().await.map_err(status_error)? {
                count += 1;
                if json {
                    let payload: serde_json::Value = serde_json::from_str(&event.event_json)
                        .unwrap_or(serde_json::Value::String(event.event_json));
                    println!(
                        "{}",
                        serde_json::json!({"seq_nr": event.seq_nr, "event": payload, "command_id": event.command_id, "timestamp_ms": event.timestamp_ms})
                    );
                } else {
                    println!("{:>6}  {}", event.seq_nr, event.event_json);
                }
            }
            if !json && count == 0 {
                println!("(no events)");
            }
        }
        Command::Types => {
            let types = admin
                .list_types(proto::ListTypesRequest {})
                .await
                .map_err(status_error)?
                .into_inner()
                .types;
            if json {
                println!(
                    "{}",
                    serde_json::Value::Array(types.iter().map(type_json).collect())
                );
            } else if types.is_empty() {
                println!("(no entity types deployed)");
            } else {
                println!(
                    "{:<20} {:<10} {:>10}  {:>9}  SHA256",
                    "TYPE", "VERSION", "BYTES", "SNAPSHOT"
                );
                for t in types {
                    println!(
                        "{:<20} {:<10} {:>10}  {:>9}  {}",
                        t.name,
                        t.version,
                        t.size_bytes,
                        t.snapshot_every,
                        &t.sha256[..t.sha256.len().min(12)]
                    );
                }
            }
        }
        Command::Info => {
            let info = admin
                .node_info(proto::NodeInfoRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                println!(
                    "{}",
                    serde_json::json!({"version": info.version, "data_dir": info.data_dir, "shard_count": info.shard_count, "workers": info.workers, "active_entities": info.active_entities, "uptime_ms": info.uptime_ms})
                );
            } else {
                println!("stead {} at {addr}", info.version);
                println!("  data dir:        {}", info.data_dir);
                println!("  shards/workers:  {}/{}", info.shard_count, info.workers);
                println!("  active entities: {}", info.active_entities);
                println!("  uptime:          {:.1}s", info.uptime_ms as f64 / 1000.0);
            }
        }
        Command::Up(_) | Command::Build { .. } | Command::Bench(_) => {
            bail!("handled before connecting")
        }
    }
    Ok(())
}

fn bench(args: BenchArgs, addr: &str, json: bool) -> Result<()> {
    use crate::bench::{inprocess, network};
    let duration = std::time::Duration::from_secs(args.duration.max(1));
    let workload = |entities| network::Workload {
        entity_type: args.entity_type.clone(),
        entities,
        setup: (!args.setup.is_empty()).then(|| args.setup.clone()),
        command: args.command.clone(),
    };
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the async runtime")
    };
    let figures = match args.scenario {
        BenchScenario::Http {
            http,
            entities,
            connections,
        } => runtime()?.block_on(network::http(
            addr,
            &http,
            &workload(entities),
            connections,
            duration,
        ))?,
        BenchScenario::Grpc {
            entities,
            connections,
            concurrency,
        } => runtime()?.block_on(network::grpc(
            addr,
            &workload(entities),
            connections,
            concurrency,
            duration,
        ))?,
        BenchScenario::Hot => {
            runtime()?.block_on(network::hot(addr, &workload(1), duration, &args.work_dir))?
        }
        BenchScenario::Engine {
            component,
            commands,
            entities,
            workers,
        } => inprocess::engine(&args.work_dir, &component, commands, entities, workers)?,
        BenchScenario::Memory {
            component,
            entities,
        } => inprocess::memory(&args.work_dir, &component, entities)?,
        BenchScenario::Recovery {
            component,
            events,
            entities,
            sample,
        } => inprocess::recovery(&args.work_dir, &component, events, entities, sample)?,
    };
    if json {
        println!("{}", serde_json::to_string(&figures)?);
    } else {
        for figure in &figures {
            println!("{}", figure.line());
        }
    }
    Ok(())
}

fn type_json(t: &proto::EntityType) -> serde_json::Value {
    serde_json::json!({"name": t.name, "version": t.version, "snapshot_every": t.snapshot_every, "sha256": t.sha256, "size_bytes": t.size_bytes})
}

/// A gRPC status as one line: `rejected: insufficient funds ...`.
fn status_error(status: tonic::Status) -> anyhow::Error {
    let code = status
        .metadata()
        .get("stead-error")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:?}", status.code()).to_lowercase());
    if status.code() == tonic::Code::Unavailable && status.metadata().get("stead-error").is_none() {
        return anyhow!("node unavailable: {}", status.message());
    }
    if status.code() == tonic::Code::Unauthenticated {
        return anyhow!(
            "unauthenticated: {} (give the admin token with --token-file FILE or {TOKEN_ENV})",
            status.message()
        );
    }
    if status.code() == tonic::Code::Unknown && status.metadata().get("stead-error").is_none() {
        // A transport failure, e.g. a plain-text client on a TLS port.
        let detail = chain_from(
            status.message().to_owned(),
            std::error::Error::source(&status),
        );
        return anyhow!("no gRPC answer from the node: {detail}");
    }
    let message = status.message();
    // Node errors already start with their kind ("rejected: ..."); do not repeat it.
    if message.starts_with(&code) || message.starts_with(&code.replace('_', " ")) {
        anyhow!("{message}")
    } else {
        anyhow!("{code}: {message}")
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    chain_from(e.to_string(), e.source())
}

/// `out` followed by the texts of `source` and its sources.
fn chain_from(mut out: String, mut source: Option<&dyn std::error::Error>) -> String {
    while let Some(s) = source {
        // Some errors repeat their source in their own text.
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Parses a count or duration that must be at least 1: a zero is refused
/// with an error naming the flag, instead of being silently raised.
fn at_least_one<T>(text: &str) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + From<u8>,
    T::Err: std::fmt::Display,
{
    let value: T = text.trim().parse().map_err(|e: T::Err| e.to_string())?;
    if value < T::from(1) {
        return Err("must be at least 1".into());
    }
    Ok(value)
}

/// Upper bounds of the durations and sizes `stead up` takes: far above any
/// sensible setting, and low enough that deadlines computed from them
/// (`now + 2 * timeout`, epoch ticks, bytes) cannot overflow.
const MAX_CALL_DEADLINE_MS: u64 = 3_600_000; // 1 hour of CPU for one guest call
const MAX_IDLE_TIMEOUT_SECS: u64 = 365 * 24 * 3600; // 1 year
const MAX_REQUEST_TIMEOUT_MS: u64 = 24 * 3_600_000; // 1 day
const MAX_MEMORY_LIMIT_MIB: usize = 1 << 20; // 1 TiB

/// A parser for a value from 1 to `max`, each bound named in its error.
fn up_to<T>(max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
where
    T: std::str::FromStr + PartialOrd + From<u8> + std::fmt::Display + Copy + Send + Sync + 'static,
    T::Err: std::fmt::Display,
{
    move |text| {
        let value = at_least_one::<T>(text)?;
        if value > max {
            return Err(format!("must be at most {max}"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("stead").chain(args.iter().copied()))
    }

    #[test]
    fn a_zero_count_or_duration_is_refused_naming_its_flag() {
        for flag in [
            "--shards",
            "--workers",
            "--queue-depth",
            "--call-deadline-ms",
            "--memory-limit-mib",
            "--idle-timeout-secs",
            "--max-command-bytes",
            "--request-timeout-ms",
            "--max-activations-per-batch",
        ] {
            let err = match parse(&["up", flag, "0"]) {
                Ok(_) => panic!("{flag} 0 was accepted"),
                Err(e) => e,
            };
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{flag}"
            );
            let text = err.to_string();
            assert!(
                text.contains(flag) && text.contains("must be at least 1"),
                "{flag}: {text}"
            );
        }
    }

    #[test]
    fn a_duration_or_limit_that_could_overflow_is_refused() {
        let refused = |flag: &str, value: &str, max: &str| {
            let err = parse(&["up", flag, value]).err();
            assert!(
                err.is_some_and(|e| e.to_string().contains(&format!("must be at most {max}"))),
                "{flag} {value}"
            );
            assert!(parse(&["up", flag, max]).is_ok(), "{flag} {max}");
        };
        refused("--memory-limit-mib", "1048577", "1048576");
        refused("--memory-limit-mib", "18446744073709551615", "1048576");
        refused("--request-timeout-ms", "18446744073709551615", "86400000");
        refused("--call-deadline-ms", "3600001", "3600000");
        refused("--idle-timeout-secs", "18446744073709551615", "31536000");
    }

    #[test]
    fn the_defaults_and_positive_values_parse() {
        assert!(parse(&["up"]).is_ok());
        assert!(parse(&["up", "--workers", "1", "--queue-depth", "1"]).is_ok());
        let engine = |workers| {
            parse(&[
                "bench",
                "engine",
                "--component",
                "a.wasm",
                "--workers",
                workers,
            ])
        };
        assert!(engine("2").is_ok());
        assert!(
            matches!(engine("0"), Err(e) if e.kind() == clap::error::ErrorKind::ValueValidation)
        );
    }
}
