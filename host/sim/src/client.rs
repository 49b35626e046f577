//! The simulation's clients: each sends account commands with idempotency
//! keys to the nodes' public gRPC API over the simulated network, retries
//! an unknown outcome with the same key (on another node), and records
//! every operation in the shared history the checkers read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use stead_api::proto::entities_client::EntitiesClient;
use stead_api::proto::{GetRequest, SendRequest};
use stead_history::{EntityRef, History, Op, Operation, Outcome};
use tonic::transport::{Channel, Endpoint};

use crate::node::GRPC_PORT;
use crate::trace::Trace;

/// What one client does.
#[derive(Clone)]
pub struct ClientSpec {
    pub id: u64,
    pub seed: u64,
    pub nodes: Vec<String>,
    pub accounts: Vec<String>,
    /// No new operation starts after this (simulated time).
    pub stop_at: Duration,
    /// An operation still without an answer now is recorded as unknown.
    pub give_up_at: Duration,
}

fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One answer to one attempt.
enum Attempt {
    Final(Outcome),
    /// Nothing definite: retry with the same key.
    Unknown(String),
}

struct Channels {
    by_node: HashMap<String, EntitiesClient<Channel>>,
}

impl Channels {
    fn client(&mut self, node: &str) -> Result<EntitiesClient<Channel>, String> {
        if let Some(client) = self.by_node.get(node) {
            return Ok(client.clone());
        }
        let addr = format!("{}:{GRPC_PORT}", turmoil::lookup(node));
        let target = addr.clone();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let target = target.clone();
            async move {
                turmoil::net::TcpStream::connect(target.as_str())
                    .await
                    .map(TokioIo::new)
            }
        });
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(4));
        let client = EntitiesClient::new(endpoint.connect_with_connector_lazy(connector));
        self.by_node.insert(node.to_owned(), client.clone());
        Ok(client)
    }
}

/// Runs the client until `stop_at`, then finishes its last operation.
pub async fn run(spec: ClientSpec, history: Arc<Mutex<History>>, trace: Trace) -> turmoil::Result {
    let mut rng = SmallRng::seed_from_u64(spec.seed);
    let mut channels = Channels {
        by_node: HashMap::new(),
    };
    let mut node = rng.random_range(0..spec.nodes.len());
    let mut n = 0u64;
    while now() < spec.stop_at {
        n += 1;
        // Now and then another node, as a load balancer spreads a client's
        // requests: every node's faults then meet client traffic.
        if rng.random_range(0..4) == 0 {
            node = rng.random_range(0..spec.nodes.len());
        }
        let account = spec.accounts[rng.random_range(0..spec.accounts.len())].clone();
        let op = match rng.random_range(0..100) {
            0..8 => Op::Open {
                owner: format!("owner-{}", spec.id),
            },
            8..55 => Op::Deposit {
                amount: rng.random_range(1..=100),
            },
            55..80 => Op::Withdraw {
                amount: rng.random_range(1..=120),
            },
            _ => Op::View,
        };
        let command_id = op.command_json().map(|_| format!("c{}-{n}", spec.id));
        let invoked = now();
        let mut outcome = Outcome::Unknown {
            reason: "never answered".into(),
        };
        // An attempt without an answer may still take effect later (its
        // request held somewhere), so a refusal after one is no proof that
        // the command never ran.
        let mut unanswered_attempt = false;
        let mut answered = false;
        loop {
            if now() >= spec.give_up_at {
                break;
            }
            let attempt = attempt(
                &mut channels,
                &spec.nodes[node],
                &account,
                &op,
                command_id.as_deref(),
            )
            .await;
            match attempt {
                Attempt::Final(o) => {
                    answered = true;
                    outcome = match o {
                        Outcome::Rejected { reason } | Outcome::Failed { reason }
                            if unanswered_attempt && command_id.is_some() =>
                        {
                            Outcome::Unknown {
                                reason: format!("refused after an unanswered attempt: {reason}"),
                            }
                        }
                        o => o,
                    };
                    break;
                }
                Attempt::Unknown(reason) => {
                    unanswered_attempt = true;
                    outcome = Outcome::Unknown { reason };
                    // Another node next time, after a pause.
                    node = (node + 1) % spec.nodes.len();
                    let pause = rng.random_range(20..200);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
        }
        let completed = now();
        trace.line(format!(
            "client {} via {} {} {:?} key {} -> {}",
            spec.id,
            spec.nodes[node],
            account,
            op,
            command_id.as_deref().unwrap_or("-"),
            describe(&outcome)
        ));
        let operation = Operation {
            client: spec.id,
            entity: EntityRef {
                entity_type: "account".into(),
                id: account,
            },
            command_id,
            op,
            invoked_at: nanos(invoked),
            completed_at: answered.then(|| nanos(completed)),
            outcome,
        };
        history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .operations
            .push(operation);
        let think = rng.random_range(0..50);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    Ok(())
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Ok {
            balance,
            seq_nr,
            duplicate,
        } => format!(
            "ok balance {balance} seq {seq_nr}{}",
            if *duplicate { " dup" } else { "" }
        ),
        Outcome::Rejected { reason } => format!("rejected {reason}"),
        Outcome::Viewed {
            balance, status, ..
        } => format!("view {status} {balance}"),
        Outcome::Failed { reason } => format!("failed {reason}"),
        Outcome::Unknown { reason } => format!("unknown {reason}"),
    }
}

async fn attempt(
    channels: &mut Channels,
    node: &str,
    account: &str,
    op: &Op,
    command_id: Option<&str>,
) -> Attempt {
    let mut client = match channels.client(node) {
        Ok(c) => c,
        Err(e) => return Attempt::Unknown(e),
    };
    match op.command_json() {
        Some(command) => {
            let request = SendRequest {
                entity_type: "account".into(),
                entity_id: account.to_owned(),
                command_json: command,
                command_id: command_id.unwrap_or_default().to_owned(),
            };
            match client.send(request).await {
                Ok(reply) => {
                    let reply = reply.into_inner();
                    match serde_json::from_str::<serde_json::Value>(&reply.reply_json)
                        .ok()
                        .and_then(|v| Outcome::accepted(&v, reply.seq_nr, reply.duplicate))
                    {
                        Some(outcome) => Attempt::Final(outcome),
                        None => Attempt::Final(Outcome::Failed {
                            reason: format!("unreadable reply {}", reply.reply_json),
                        }),
                    }
                }
                Err(status) => classify(&status),
            }
        }
        None => {
            let request = GetRequest {
                entity_type: "account".into(),
                entity_id: account.to_owned(),
            };
            match client.get(request).await {
                Ok(view) => {
                    let json = view.into_inner().view_json;
                    match serde_json::from_str::<serde_json::Value>(&json)
                        .ok()
                        .and_then(|v| Outcome::viewed_json(&v))
                    {
                        Some(outcome) => Attempt::Final(outcome),
                        None => Attempt::Final(Outcome::Failed {
                            reason: format!("unreadable view {json}"),
                        }),
                    }
                }
                Err(status) => classify(&status),
            }
        }
    }
}

/// What a gRPC error says of the command: refused by the entity (a final
/// answer), invalid (never ran), or unknown (retry with the same key).
fn classify(status: &tonic::Status) -> Attempt {
    use tonic::Code;
    let message = status.message().to_owned();
    match status.code() {
        Code::FailedPrecondition if message.contains("different command") => {
            Attempt::Final(Outcome::Failed { reason: message })
        }
        Code::FailedPrecondition => Attempt::Final(Outcome::Rejected { reason: message }),
        Code::InvalidArgument | Code::NotFound => {
            Attempt::Final(Outcome::Failed { reason: message })
        }
        code => Attempt::Unknown(format!("{code:?}: {message}")),
    }
}
