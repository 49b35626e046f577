//! The messaging workload: one client runs `transfer` sagas between
//! accounts of its own (never touched by the other clients, whose account
//! histories the linearizability checker reads), through the public gRPC
//! API of random nodes, some started at once and some scheduled on a
//! durable timer; then it waits for every transfer to end. What it started
//! is checked against the journal after the run ([`check`]):
//!
//! - every transfer that was started ends (`credited`, `debit_refused` or
//!   `refunded` is its last event) once the faults healed;
//! - each transfer started once (its `started` event, a timer's firing
//!   included, appears once);
//! - money is conserved: the accounts' balances, folded from their events,
//!   sum to what they were funded with, and the account never opened holds
//!   nothing;
//! - no delivery took effect twice: a command id appears at most once among
//!   an account's events.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use stead_api::proto::entities_client::EntitiesClient;
use stead_api::proto::{GetRequest, SendRequest};
use stead_journal::{EntityKey, StoredEvent};
use tonic::transport::Channel;

use crate::clock::EPOCH_MS;
use crate::node::GRPC_PORT;
use crate::trace::Trace;

/// The saga's accounts, funded with [`OPENING`] each.
pub const ACCOUNTS: [&str; 3] = ["s1", "s2", "s3"];
/// Never opened: a credit to it is refused, so its transfers refund.
pub const NOBODY: &str = "s-none";
pub const OPENING: u64 = 1_000;

/// What the saga client is given.
#[derive(Clone)]
pub struct SagaSpec {
    pub seed: u64,
    pub nodes: Vec<String>,
    pub stop_at: Duration,
    pub give_up_at: Duration,
}

/// What the saga client did, for the checks.
#[derive(Debug, Default)]
pub struct SagaLog {
    /// Every account was opened and funded (acknowledged).
    pub funded: bool,
    /// Transfers whose start (or schedule) was acknowledged.
    pub started: Vec<String>,
    /// Transfers whose start got no answer: they may or may not exist.
    pub in_doubt: Vec<String>,
    /// Transfers seen ended through the API before the run was over.
    pub ended: usize,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

/// The keys of every entity the saga touches, for the journal's dump.
pub fn keys(log: &SagaLog, shards: u32) -> Vec<EntityKey> {
    let key =
        |t: &str, id: &str| EntityKey::new(stead_types::shard::shard_of(t, id, shards), t, id);
    ACCOUNTS
        .iter()
        .chain([&NOBODY])
        .map(|a| key("account", a))
        .chain(
            log.started
                .iter()
                .chain(&log.in_doubt)
                .map(|t| key("transfer", t)),
        )
        .collect()
}

struct Api {
    by_node: HashMap<String, EntitiesClient<Channel>>,
}

impl Api {
    fn client(&mut self, node: &str) -> Result<EntitiesClient<Channel>, String> {
        if let Some(c) = self.by_node.get(node) {
            return Ok(c.clone());
        }
        let addr = format!("{}:{GRPC_PORT}", turmoil::lookup(node));
        let target = addr.clone();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let target = target.clone();
            async move {
                turmoil::net::TcpStream::connect(target.as_str())
                    .await
                    .map(hyper_util::rt::TokioIo::new)
            }
        });
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(4));
        let client = EntitiesClient::new(endpoint.connect_with_connector_lazy(connector));
        self.by_node.insert(node.to_owned(), client.clone());
        Ok(client)
    }
}

/// Sends until the command is answered (on another node after each
/// unanswered attempt) or `give_up_at`: `Some(true)` accepted,
/// `Some(false)` refused, `None` never answered.
async fn send(
    api: &mut Api,
    spec: &SagaSpec,
    rng: &mut SmallRng,
    (entity_type, id): (&str, &str),
    command: &Value,
    key: &str,
) -> Option<bool> {
    let mut node = rng.random_range(0..spec.nodes.len());
    while now() < spec.give_up_at {
        let request = SendRequest {
            entity_type: entity_type.to_owned(),
            entity_id: id.to_owned(),
            command_json: command.to_string(),
            command_id: key.to_owned(),
        };
        let answer = match api.client(&spec.nodes[node]) {
            Ok(mut client) => client.send(request).await,
            Err(e) => Err(tonic::Status::unavailable(e)),
        };
        match answer {
            Ok(_) => return Some(true),
            Err(s) if s.code() == tonic::Code::FailedPrecondition => return Some(false),
            Err(s) if s.code() == tonic::Code::InvalidArgument => return Some(false),
            Err(_) => {
                node = (node + 1) % spec.nodes.len();
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
            }
        }
    }
    None
}

/// The transfer's status through the API, if a node answers.
async fn status(api: &mut Api, node: &str, id: &str) -> Option<String> {
    let request = GetRequest {
        entity_type: "transfer".into(),
        entity_id: id.to_owned(),
    };
    let view = api.client(node).ok()?.get(request).await.ok()?;
    let view: Value = serde_json::from_str(&view.into_inner().view_json).ok()?;
    view["status"].as_str().map(str::to_owned)
}

/// Runs the saga client (see the module docs).
pub async fn run(spec: SagaSpec, log: Arc<Mutex<SagaLog>>, trace: Trace) -> turmoil::Result {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let mut api = Api {
        by_node: HashMap::new(),
    };
    let mut funded = true;
    for account in ACCOUNTS {
        for (key, command) in [
            (
                format!("open-{account}"),
                json!({"open": {"owner": account}}),
            ),
            (
                format!("fund-{account}"),
                json!({"deposit": {"amount": OPENING}}),
            ),
        ] {
            let answer = send(
                &mut api,
                &spec,
                &mut rng,
                ("account", account),
                &command,
                &key,
            )
            .await;
            funded &= answer == Some(true);
        }
    }
    lock(&log).funded = funded;
    let mut n = 0u64;
    while funded && now() < spec.stop_at {
        n += 1;
        let id = format!("x{n}");
        let from = ACCOUNTS[rng.random_range(0..ACCOUNTS.len())];
        let to = match rng.random_range(0..=ACCOUNTS.len()) {
            i if i == ACCOUNTS.len() => NOBODY,
            i => ACCOUNTS[i],
        };
        if from == to {
            continue;
        }
        let amount = rng.random_range(1..=600u64);
        let command = if rng.random_range(0..3) == 0 {
            let elapsed = u64::try_from(now().as_millis()).unwrap_or(0);
            let at_ms = EPOCH_MS + elapsed + rng.random_range(0..3_000);
            json!({"schedule": {"from": from, "to": to, "amount": amount, "at_ms": at_ms}})
        } else {
            json!({"start": {"from": from, "to": to, "amount": amount}})
        };
        let answer = send(&mut api, &spec, &mut rng, ("transfer", &id), &command, &id).await;
        trace.line(format!("saga {id} {command} -> {answer:?}"));
        {
            let mut log = lock(&log);
            match answer {
                // Refused, the transfer was started all the same: the only
                // refusal a start gets is "already started", after an
                // unanswered attempt that took effect.
                Some(_) => log.started.push(id),
                None => log.in_doubt.push(id),
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
    }
    // Every transfer ends once its messages are delivered.
    let started = lock(&log).started.clone();
    let mut ended = 0;
    for id in &started {
        while now() < spec.give_up_at {
            let node = &spec.nodes[rng.random_range(0..spec.nodes.len())];
            let status = status(&mut api, node, id).await;
            if matches!(status.as_deref(), Some("completed" | "failed" | "refunded")) {
                ended += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    lock(&log).ended = ended;
    Ok(())
}

fn lock(log: &Mutex<SagaLog>) -> std::sync::MutexGuard<'_, SagaLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

fn event_name(event: &StoredEvent) -> String {
    serde_json::from_slice::<Value>(&event.record.payload)
        .ok()
        .and_then(|v| v.as_object().and_then(|o| o.keys().next().cloned()))
        .unwrap_or_default()
}

/// The saga's invariants against the journal (see the module docs).
pub fn check(log: &SagaLog, journal: &BTreeMap<EntityKey, Vec<StoredEvent>>) -> Vec<String> {
    let mut violations = Vec::new();
    let events_of = |t: &str, id: &str| -> &[StoredEvent] {
        journal
            .iter()
            .find(|(k, _)| k.entity_type == t && k.entity_id == id)
            .map_or(&[][..], |(_, e)| e.as_slice())
    };
    for id in log.started.iter().chain(&log.in_doubt) {
        let events = events_of("transfer", id);
        let names: Vec<String> = events.iter().map(event_name).collect();
        let starts = names.iter().filter(|n| *n == "started").count();
        let last = names.last().map_or("", String::as_str);
        let maybe = log.in_doubt.contains(id) && names.is_empty();
        if !maybe && !matches!(last, "credited" | "debit_refused" | "refunded") {
            violations.push(format!(
                "messaging: transfer {id} did not end once healed: its events are {names:?}"
            ));
        }
        if starts > 1 {
            violations.push(format!(
                "messaging: transfer {id} started {starts} times: {names:?}"
            ));
        }
    }
    if log.funded {
        let mut total: i128 = 0;
        for account in ACCOUNTS.iter().chain([&NOBODY]) {
            let events = events_of("account", account);
            let mut seen = BTreeSet::new();
            for e in events {
                if !seen.insert(e.record.command_id.clone()) {
                    violations.push(format!(
                        "messaging: command {} took effect twice on account {account}",
                        e.record.command_id
                    ));
                }
                let v: Value = serde_json::from_slice(&e.record.payload).unwrap_or_default();
                if let Some(amount) = v["deposited"]["amount"].as_u64() {
                    total += i128::from(amount);
                }
                if let Some(amount) = v["withdrawn"]["amount"].as_u64() {
                    total -= i128::from(amount);
                }
            }
            if *account == NOBODY && !events.is_empty() {
                violations.push(format!(
                    "messaging: the account never opened has events: {events:?}"
                ));
            }
        }
        let funded = i128::from(OPENING) * ACCOUNTS.len() as i128;
        if total != funded {
            violations.push(format!(
                "messaging: money is not conserved: the accounts hold {total}, they were funded with {funded}"
            ));
        }
    }
    if !violations.is_empty() {
        violations.push(dump(journal));
    }
    violations
}

/// Writes the saga's journal (one line per event) to a file, for the
/// reader of a violation; says where.
fn dump(journal: &BTreeMap<EntityKey, Vec<StoredEvent>>) -> String {
    let mut text = String::new();
    for (key, events) in journal {
        for e in events {
            text.push_str(&format!(
                "{}/{} {} {} {}\n",
                key.entity_type,
                key.entity_id,
                e.seq_nr,
                e.record.command_id,
                String::from_utf8_lossy(&e.record.payload)
            ));
        }
    }
    let path = std::env::temp_dir().join(format!(
        "stead-sim-saga-{}-{}.txt",
        std::process::id(),
        turmoil::sim_elapsed().map_or(0, |d| d.as_millis())
    ));
    match std::fs::write(&path, text) {
        Ok(()) => format!("messaging: the saga's journal is in {}", path.display()),
        Err(e) => format!("messaging: the saga's journal could not be written: {e}"),
    }
}
