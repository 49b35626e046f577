//! The client commands (`deploy`, `send`, `get`, `events`, `types`,
//! `info`): one gRPC call each to a node, its answer as text or JSON.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

use stead_api::auth::{TOKEN_ENV, read_token};
use stead_api::proto;

use super::{Cli, ClusterCommand, Command};

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

pub(crate) async fn client(cli: Cli) -> Result<()> {
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
    .max_encoding_message_size(stead_api::MAX_COMPONENT_BYTES);
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
                    "deployed {} {} ({} bytes, sha256 {}, snapshot every {} events, contract {})",
                    t.name,
                    t.version,
                    t.size_bytes,
                    &t.sha256[..t.sha256.len().min(12)],
                    t.snapshot_every,
                    t.contract
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
        Command::Subscribe {
            entity_type,
            cursor,
            count,
        } => {
            let mut at = match &cursor {
                Some(text) => stead_journal::Cursor::decode(text)?,
                None => stead_journal::Cursor::start(),
            };
            let mut stream = entities
                .subscribe(proto::SubscribeRequest {
                    entity_type,
                    cursor: cursor.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut seen = 0u64;
            let ctrl_c = tokio::signal::ctrl_c();
            tokio::pin!(ctrl_c);
            while count.is_none_or(|n| seen < n) {
                let event = tokio::select! {
                    next = stream.message() => match next.map_err(status_error)? {
                        Some(event) => event,
                        None => break,
                    },
                    _ = &mut ctrl_c => break,
                };
                seen += 1;
                // Exact: the cursor after every event, whatever the stream's.
                at.advance(event.shard, event.position);
                if json {
                    let payload: serde_json::Value = serde_json::from_str(&event.event_json)
                        .unwrap_or(serde_json::Value::String(event.event_json));
                    println!(
                        "{}",
                        serde_json::json!({
                            "entity_id": event.entity_id,
                            "seq_nr": event.seq_nr,
                            "shard": event.shard,
                            "position": event.position,
                            "timestamp_ms": event.timestamp_ms,
                            "event": payload,
                        })
                    );
                } else {
                    println!(
                        "{}  #{}  {}",
                        event.entity_id, event.seq_nr, event.event_json
                    );
                }
            }
            eprintln!("cursor: {at}");
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
                    "{:<20} {:<10} {:>10}  {:>9}  {:<8}  SHA256",
                    "TYPE", "VERSION", "BYTES", "SNAPSHOT", "CONTRACT"
                );
                for t in types {
                    println!(
                        "{:<20} {:<10} {:>10}  {:>9}  {:<8}  {}",
                        t.name,
                        t.version,
                        t.size_bytes,
                        t.snapshot_every,
                        t.contract,
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
                    serde_json::json!({"version": info.version, "data_dir": info.data_dir, "shard_count": info.shard_count, "workers": info.workers, "shards_held": info.shards_held, "journal": info.journal, "active_entities": info.active_entities, "uptime_ms": info.uptime_ms})
                );
            } else {
                println!("stead {} at {addr}", info.version);
                println!("  data dir:        {}", info.data_dir);
                println!("  journal:         {}", info.journal);
                println!("  shards/workers:  {}/{}", info.shard_count, info.workers);
                println!("  shards held:     {}", info.shards_held);
                println!("  active entities: {}", info.active_entities);
                println!("  uptime:          {:.1}s", info.uptime_ms as f64 / 1000.0);
            }
        }
        Command::Cluster(ClusterCommand::Status) => {
            let status = admin
                .cluster_status(proto::ClusterStatusRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            print_cluster(&status, json);
        }
        Command::Up(_)
        | Command::Build { .. }
        | Command::Bench(_)
        | Command::Cluster(ClusterCommand::Up(_)) => {
            bail!("handled before connecting")
        }
    }
    Ok(())
}

fn print_cluster(status: &proto::ClusterStatusResponse, json: bool) {
    if json {
        let members: Vec<_> = status
            .members
            .iter()
            .map(|m| serde_json::json!({"node_id": m.node_id, "state": m.state, "grpc": m.grpc, "http": m.http, "shards_held": m.shards_held, "shards_placed": m.shards_placed}))
            .collect();
        let shards: Vec<_> = status
            .shards
            .iter()
            .map(|s| serde_json::json!({"shard": s.shard, "holder": (!s.holder.is_empty()).then_some(&s.holder), "epoch": s.epoch, "placed": (!s.placed.is_empty()).then_some(&s.placed)}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"node_id": status.node_id, "members": members, "shards": shards})
        );
        return;
    }
    println!("cluster as {} sees it:", status.node_id);
    println!(
        "  {:<16} {:<8} {:<22} {:<22} {:>5} {:>6}",
        "NODE", "STATE", "GRPC", "HTTP", "HELD", "PLACED"
    );
    for m in &status.members {
        println!(
            "  {:<16} {:<8} {:<22} {:<22} {:>5} {:>6}",
            m.node_id, m.state, m.grpc, m.http, m.shards_held, m.shards_placed
        );
    }
    let moving: Vec<String> = status
        .shards
        .iter()
        .filter(|s| s.holder != s.placed)
        .map(|s| {
            let holder = if s.holder.is_empty() {
                "nobody"
            } else {
                &s.holder
            };
            format!("{} ({holder} -> {})", s.shard, s.placed)
        })
        .collect();
    if moving.is_empty() {
        println!("  every shard is held by the node it is placed on");
    } else {
        let shown = moving.len().min(8);
        let more = if moving.len() > shown { ", ..." } else { "" };
        println!(
            "  {} shards moving: {}{more}",
            moving.len(),
            moving[..shown].join(", ")
        );
    }
}

fn type_json(t: &proto::EntityType) -> serde_json::Value {
    serde_json::json!({"name": t.name, "version": t.version, "snapshot_every": t.snapshot_every, "sha256": t.sha256, "size_bytes": t.size_bytes, "contract": t.contract})
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
