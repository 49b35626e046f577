//! Benchmarks against a running node: HTTP with `wrk` (and the no-op route
//! as its yardstick), gRPC with a Rust client, and one hot entity driven
//! sequentially (against one durable journal flush on the same disk).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tonic::transport::Channel;

use super::{Figure, Latencies, ms, progress};
use stead_api::proto::SendRequest;
use stead_api::proto::entities_client::EntitiesClient;
use stead_journal::{CommandIdRecord, EntityAppend, EntityKey, EventRecord, Journal};
use stead_journal_sled::{SledJournal, SledOptions};

/// The workload: an entity type, how to create its entities and the command
/// each request sends.
#[derive(Debug, Clone)]
pub struct Workload {
    pub entity_type: String,
    /// Entity ids are `bench-0 .. bench-{entities-1}`.
    pub entities: usize,
    /// Sent once to each entity first (e.g. `{"open":{"owner":"bench"}}`).
    pub setup: Option<String>,
    /// Sent by every request (e.g. `{"deposit":{"amount":1}}`).
    pub command: String,
}

async fn channel(addr: &str) -> Result<Channel> {
    tonic::transport::Endpoint::from_shared(addr.to_owned())
        .with_context(|| format!("invalid address {addr}"))?
        .connect()
        .await
        .with_context(|| format!("node unreachable at {addr}"))
}

fn request(w: &Workload, id: usize, json: &str) -> SendRequest {
    SendRequest {
        entity_type: w.entity_type.clone(),
        entity_id: format!("bench-{id}"),
        command_json: json.to_owned(),
        command_id: String::new(),
    }
}

/// Sends the setup command to every entity (idempotent: a second setup of
/// the same entity is allowed to be rejected).
pub async fn prepare(grpc: &str, w: &Workload) -> Result<()> {
    let Some(setup) = &w.setup else {
        return Ok(());
    };
    progress(&format!(
        "preparing {} {} entities",
        w.entities, w.entity_type
    ));
    let client = EntitiesClient::new(channel(grpc).await?);
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let (mut client, next, w, setup) = (client.clone(), next.clone(), w.clone(), setup.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let id = next.fetch_add(1, Ordering::Relaxed) as usize;
                if id >= w.entities {
                    return Ok::<(), anyhow::Error>(());
                }
                match client.send(request(&w, id, &setup)).await {
                    Ok(_) => {}
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {}
                    Err(s) => bail!("setup of bench-{id} failed: {s}"),
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

const WRK_SCRIPT: &str = r#"
local entities = __ENTITIES__
local path_prefix = "__PREFIX__"
local body = [[__BODY__]]
local keyed = __KEYED__
local headers = { ["Content-Type"] = "application/json" }
local next_tid = 0
setup = function(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
end
local counter = 0
request = function()
  local path = path_prefix
  if entities > 0 then
    path = path_prefix .. "bench-" .. math.random(0, entities - 1)
  end
  if keyed then
    -- A new key per request, unique per thread and run: every command is
    -- looked up and indexed, none is a duplicate.
    counter = counter + 1
    headers["Idempotency-Key"] = "__RUN__-" .. tid .. "-" .. counter
  end
  return wrk.format("POST", path, headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("STEAD_RESULT %d %d %d %d %d %d\n",
    summary.requests, e.connect + e.read + e.write + e.status + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
"#;

/// One wrk run: (requests/s, p50, p99, p99.9, errors).
fn wrk(
    http: &str,
    prefix: &str,
    entities: usize,
    body: &str,
    keyed: bool,
    connections: usize,
    duration: Duration,
) -> Result<(f64, Latencies, u64)> {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let script = WRK_SCRIPT
        .replace("__ENTITIES__", &entities.to_string())
        .replace("__PREFIX__", prefix)
        .replace("__BODY__", body)
        .replace("__KEYED__", if keyed { "true" } else { "false" })
        .replace("__RUN__", &format!("{run:x}"));
    let dir = tempfile::tempdir().context("temporary directory")?;
    let path = dir.path().join("stead.lua");
    std::fs::write(&path, script).context("writing the wrk script")?;
    let out = Command::new("wrk")
        .arg("-t2")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("-s")
        .arg(&path)
        .arg(format!("http://{http}"))
        .output()
        .context("running wrk (install it: apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("STEAD_RESULT"))
        .with_context(|| {
            format!(
                "wrk printed no result: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let n: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let [requests, errors, duration_us, p50, p99, p999] = n[..] else {
        bail!("unexpected wrk result {line}");
    };
    let rps = requests as f64 / (duration_us as f64 / 1e6);
    let us = Duration::from_micros;
    Ok((
        rps,
        Latencies {
            p50: us(p50),
            p99: us(p99),
            p999: us(p999),
            // wrk reports no maximum here; p99.9 is the worst it gives.
            max: us(p999),
            count: requests as usize,
        },
        errors,
    ))
}

/// HTTP ingress with wrk: persisted commands, then the no-op route.
pub async fn http(
    grpc: &str,
    http: &str,
    w: &Workload,
    connections: usize,
    duration: Duration,
    postgres: Option<&str>,
) -> Result<Vec<Figure>> {
    prepare(grpc, w).await?;
    progress(&format!(
        "wrk: {connections} connections, {}s of `{}` over {} entities",
        duration.as_secs(),
        w.command,
        w.entities
    ));
    let prefix = format!("/v1/entities/{}/", w.entity_type);
    let (rps, lat, errors) = wrk(
        http,
        &prefix,
        w.entities,
        &w.command,
        false,
        connections,
        duration,
    )?;
    progress(&format!(
        "wrk: the same load with a new Idempotency-Key on every request ({}s)",
        duration.as_secs()
    ));
    let (keyed_rps, keyed_lat, keyed_errors) = wrk(
        http,
        &prefix,
        w.entities,
        &w.command,
        true,
        connections,
        duration,
    )?;
    progress(&format!(
        "wrk: the same load on the no-op route ({}s)",
        duration.as_secs()
    ));
    let (noop_rps, noop_lat, _) = wrk(http, "/v1/noop", 0, "{}", false, connections, duration)?;
    let ratio = rps / noop_rps;
    // On PostgreSQL the targets are the shared journal's (issue 16); on the
    // embedded journal, the single node's.
    let (scenario, throughput, p99_target) = match postgres {
        None => (
            "http",
            Figure::new("http", "persisted commands/s", rps, "req/s")
                .against("no-op route", noop_rps, "req/s")
                .target(">= 0.5x no-op", ratio >= 0.5),
            (Duration::from_millis(10), "< 10 ms"),
        ),
        Some(_) => (
            "http-postgres",
            Figure::new("http-postgres", "persisted commands/s", rps, "req/s")
                .against("no-op route", noop_rps, "req/s")
                .target(">= 10,000/s", rps >= 10_000.0),
            (Duration::from_millis(20), "< 20 ms"),
        ),
    };
    let index_bytes = match postgres {
        None => (
            "index bytes per key (entry + expiry list entry, 36-byte key)",
            index_bytes_per_key(&w.entity_type) as f64,
        ),
        Some(url) => (
            "index bytes per key (table + indexes / rows)",
            postgres_index_bytes_per_key(url).await?,
        ),
    };
    Ok(vec![
        throughput,
        Figure::new(scenario, "p50", ms(lat.p50), "ms").against(
            "no-op p50",
            ms(noop_lat.p50),
            "ms",
        ),
        Figure::new(scenario, "p99", ms(lat.p99), "ms")
            .against("no-op p99", ms(noop_lat.p99), "ms")
            .target(p99_target.1, lat.p99 < p99_target.0),
        Figure::new(scenario, "p99.9", ms(lat.p999), "ms").against(
            "no-op p99.9",
            ms(noop_lat.p999),
            "ms",
        ),
        Figure::new(scenario, "errors", errors as f64, "req"),
        Figure::new(
            scenario,
            "persisted commands/s, Idempotency-Key on each",
            keyed_rps,
            "req/s",
        )
        .against("without keys", rps, "req/s")
        .target("within 10%", keyed_rps >= 0.9 * rps),
        Figure::new(
            scenario,
            "p99, Idempotency-Key on each",
            ms(keyed_lat.p99),
            "ms",
        )
        .against("without keys", ms(lat.p99), "ms"),
        Figure::new(scenario, index_bytes.0, index_bytes.1, "bytes"),
        Figure::new(scenario, "errors, keyed", keyed_errors as f64, "req"),
    ])
}

/// A client of the journal's database, for the benchmarks' yardsticks.
async fn postgres_client(url: &str) -> Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("connecting to the benchmark's PostgreSQL")?;
    tokio::spawn(connection);
    Ok(client)
}

/// The idempotency index's size per key on PostgreSQL.
async fn postgres_index_bytes_per_key(url: &str) -> Result<f64> {
    let client = postgres_client(url).await?;
    let row = client
        .query_one(
            "SELECT pg_total_relation_size('stead_command_ids')::float8,
                    (SELECT count(*) FROM stead_command_ids)::float8",
            &[],
        )
        .await?;
    let (bytes, rows): (f64, f64) = (row.get(0), row.get(1));
    Ok(if rows > 0.0 { bytes / rows } else { 0.0 })
}

/// The cost of one PostgreSQL commit of one small row: the yardstick of a
/// command on the shared journal.
pub async fn postgres_commit(url: &str, rounds: usize) -> Result<Latencies> {
    let client = postgres_client(url).await?;
    client
        .batch_execute("CREATE TEMP TABLE stead_commit_probe (id bigint, payload bytea)")
        .await?;
    let statement = client
        .prepare("INSERT INTO stead_commit_probe VALUES ($1, $2)")
        .await?;
    let payload = br#"{"deposited":{"amount":1}}"#.to_vec();
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds as i64 {
        let started = Instant::now();
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&i, &payload];
        client.execute(&statement, &params).await?;
        samples.push(started.elapsed());
    }
    Ok(Latencies::of(samples))
}

fn index_bytes_per_key(entity_type: &str) -> usize {
    let key = EntityKey::new(0, entity_type, "bench-12345");
    let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let record = CommandIdRecord {
        command_id: id.to_owned(),
        seq_nr: 1,
        at_ms: 0,
        digest: [0; 32],
        refusal: None,
    };
    stead_journal_sled::keys::command_key(&key, id).len()
        + stead_journal::record::encode_command_id(&record).len()
        + stead_journal_sled::keys::encode_expiry_list(&[(
            key.entity_type.clone(),
            key.entity_id.clone(),
            id.to_owned(),
        )])
        .len()
        - 4
}

/// gRPC with a Rust client: `concurrency` requests in flight over
/// `connections` HTTP/2 connections.
pub async fn grpc(
    grpc: &str,
    w: &Workload,
    connections: usize,
    concurrency: usize,
    duration: Duration,
) -> Result<Vec<Figure>> {
    grpc_over(
        &[grpc.to_owned()],
        w,
        connections,
        concurrency,
        duration,
        None,
    )
    .await
}

/// [`grpc`] with its connections spread over several nodes (each gets
/// `connections`), e.g. every member of a cluster. With `only`, the
/// clients of node `i` send only to the entities `only[i]` (e.g. those it
/// holds, so that nothing is forwarded).
pub async fn grpc_over(
    nodes: &[String],
    w: &Workload,
    connections: usize,
    concurrency: usize,
    duration: Duration,
    only: Option<&[Vec<usize>]>,
) -> Result<Vec<Figure>> {
    let first = nodes.first().context("no node to send to")?;
    prepare(first, w).await?;
    progress(&format!(
        "gRPC: {concurrency} in flight over {connections} connections to each of {} node(s), {}s",
        nodes.len(),
        duration.as_secs()
    ));
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        for node in nodes {
            clients.push(EntitiesClient::new(channel(node).await?));
        }
    }
    let deadline = Instant::now() + duration;
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (mut client, w, errors) = (
            clients[t % clients.len()].clone(),
            w.clone(),
            errors.clone(),
        );
        // Clients were made node after node: this one talks to `node`.
        let node = (t % clients.len()) % nodes.len();
        let ids: Option<Vec<usize>> = only
            .and_then(|only| only.get(node).cloned())
            .filter(|ids| !ids.is_empty());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut n = t;
            while Instant::now() < deadline {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let pick = n >> 33;
                let id = match &ids {
                    Some(ids) => ids[pick % ids.len()],
                    None => pick % w.entities.max(1),
                };
                let started = Instant::now();
                match client.send(request(&w, id, &w.command)).await {
                    Ok(_) => samples.push(started.elapsed()),
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            samples
        }));
    }
    let started = Instant::now();
    let mut samples = Vec::new();
    for t in tasks {
        samples.extend(t.await.context("client task")?);
    }
    let elapsed = started.elapsed().max(duration);
    let rps = samples.len() as f64 / elapsed.as_secs_f64();
    let lat = Latencies::of(samples);
    Ok(vec![
        Figure::new("grpc", "persisted commands/s", rps, "req/s"),
        Figure::new("grpc", "p50", ms(lat.p50), "ms"),
        Figure::new("grpc", "p99", ms(lat.p99), "ms"),
        Figure::new("grpc", "p99.9", ms(lat.p999), "ms"),
        Figure::new(
            "grpc",
            "errors",
            errors.load(Ordering::Relaxed) as f64,
            "req",
        ),
    ])
}

/// The cost of one durable flush of one small batch on the disk of `dir`:
/// the median of `rounds` single-event appends to a fresh sled journal.
pub fn durable_flush(dir: &Path, rounds: usize) -> Result<Latencies> {
    let tmp = tempfile::tempdir_in(dir)
        .with_context(|| format!("temporary directory in {}", dir.display()))?;
    let journal = SledJournal::open(tmp.path(), SledOptions::default())?;
    let fence = journal.claim_shards(&[0])?[0];
    let key = EntityKey::new(0, "flush", "probe");
    let mut samples = Vec::with_capacity(rounds);
    for seq in 0..rounds as u64 {
        let append = EntityAppend {
            key: key.clone(),
            expected_seq_nr: seq,
            fence,
            events: vec![EventRecord {
                command_id: format!("c{seq}"),
                timestamp_ms: 0,
                payload: br#"{"deposited":{"amount":1}}"#.to_vec(),
                reply: Some(br#"{"balance":1}"#.to_vec()),
            }],
            command_ids: Vec::new(),
            sends: Vec::new(),
            timers: Vec::new(),
        };
        let started = Instant::now();
        let result = journal.append(vec![append]);
        samples.push(started.elapsed());
        if let Some(Err(e)) = result.into_iter().next() {
            bail!("flush probe failed: {e}");
        }
    }
    Ok(Latencies::of(samples))
}

/// One entity, one connection, one command at a time, beside one durable
/// flush of the embedded journal, or (`postgres`) one PostgreSQL commit.
pub async fn hot(
    grpc: &str,
    w: &Workload,
    duration: Duration,
    flush_dir: &Path,
    postgres: Option<&str>,
) -> Result<Vec<Figure>> {
    let one = Workload {
        entities: 1,
        ..w.clone()
    };
    prepare(grpc, &one).await?;
    progress(&format!(
        "hot entity: sequential commands for {}s",
        duration.as_secs()
    ));
    let mut client = EntitiesClient::new(channel(grpc).await?);
    let deadline = Instant::now() + duration;
    let mut samples = Vec::new();
    while Instant::now() < deadline {
        let started = Instant::now();
        client
            .send(request(&one, 0, &one.command))
            .await
            .context("hot entity command")?;
        samples.push(started.elapsed());
    }
    let lat = Latencies::of(samples);
    let (scenario, yardstick, flush) = match postgres {
        None => {
            progress("durable flush of one small batch on the same disk (200 rounds)");
            let flush = tokio::task::spawn_blocking({
                let dir = flush_dir.to_owned();
                move || durable_flush(&dir, 200)
            })
            .await??;
            ("hot", "durable flush", flush)
        }
        Some(url) => {
            progress("one PostgreSQL commit of one small row (200 rounds)");
            (
                "hot-postgres",
                "PostgreSQL commit",
                postgres_commit(url, 200).await?,
            )
        }
    };
    let ratio = lat.p50.as_secs_f64() / flush.p50.as_secs_f64();
    let p50 = Figure::new(scenario, "round trip p50", ms(lat.p50), "ms").against(
        &format!("{yardstick} p50"),
        ms(flush.p50),
        "ms",
    );
    // The embedded journal's target; on PostgreSQL the commit is the
    // yardstick only (a command there also crosses to the committer and
    // makes two round trips).
    let p50 = match postgres {
        None => p50.target("<= 2x flush", ratio <= 2.0),
        Some(_) => p50,
    };
    Ok(vec![
        p50,
        Figure::new(scenario, "round trip p99", ms(lat.p99), "ms").against(
            &format!("{yardstick} p99"),
            ms(flush.p99),
            "ms",
        ),
        Figure::new(scenario, "commands", lat.count as f64, "cmd"),
    ])
}
