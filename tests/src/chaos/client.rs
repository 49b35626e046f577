//! The chaos load's clients: the node's HTTP and gRPC APIs, as a user's
//! service would call them, behind one blocking interface.
//!
//! Every outcome is classified for the ledger: acknowledged (with reply,
//! sequence number and duplicate flag), refused with a status (a client
//! error the load must never cause, or `overloaded`, which is transient), or
//! unreachable (the node died mid-request: the outcome is unknown).

use std::time::Duration;

use grpc_client::proto::SendRequest;
use grpc_client::proto::entities_client::EntitiesClient;
use serde_json::Value;

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    Acked {
        reply: Value,
        seq_nr: u64,
        duplicate: bool,
    },
    /// The node answered with an error (`code` is the API's error code).
    Refused { code: String, message: String },
    /// No answer: connection refused or reset, or a timeout.
    Unreachable(String),
}

impl Outcome {
    /// Refusals that say nothing was done and a retry may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Outcome::Refused { code, .. } => {
                code == "overloaded" || code == "unavailable" || code == "journal_unavailable"
            }
            Outcome::Unreachable(_) => true,
            Outcome::Acked { .. } => false,
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one protocol.
pub enum Client {
    Http {
        agent: ureq::Agent,
        base: String,
    },
    Grpc {
        runtime: tokio::runtime::Runtime,
        client: EntitiesClient<tonic::transport::Channel>,
    },
}

impl Client {
    pub fn http(addr: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            .build()
            .into();
        Client::Http {
            agent,
            base: format!("http://{addr}"),
        }
    }

    /// One HTTP/2 connection to the node's gRPC port.
    pub fn grpc(addr: &str) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?;
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(5));
        let channel = runtime
            .block_on(endpoint.connect())
            .map_err(|e| format!("gRPC connect to {addr}: {e}"))?;
        Ok(Client::Grpc {
            runtime,
            client: EntitiesClient::new(channel),
        })
    }

    pub fn protocol(&self) -> &'static str {
        match self {
            Client::Http { .. } => "http",
            Client::Grpc { .. } => "grpc",
        }
    }

    /// Sends `payload` to `entity_type/id` under `command_id`.
    pub fn send(
        &mut self,
        entity_type: &str,
        id: &str,
        payload: &Value,
        command_id: &str,
    ) -> Outcome {
        match self {
            Client::Http { agent, base } => {
                let url = format!("{base}/v1/entities/{entity_type}/{id}");
                let response = agent
                    .post(&url)
                    .header("idempotency-key", command_id)
                    .header("content-type", "application/json")
                    .send(payload.to_string().as_bytes());
                let mut response = match response {
                    Ok(r) => r,
                    Err(e) => return Outcome::Unreachable(e.to_string()),
                };
                let status = response.status().as_u16();
                let header = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let seq_nr = header("stead-seq-nr").and_then(|v| v.parse().ok());
                let duplicate = header("stead-duplicate").as_deref() == Some("true");
                let body: Value = match response.body_mut().read_json() {
                    Ok(v) => v,
                    Err(e) => return Outcome::Unreachable(format!("reading the body: {e}")),
                };
                match (status, seq_nr) {
                    (200, Some(seq_nr)) => Outcome::Acked {
                        reply: body,
                        seq_nr,
                        duplicate,
                    },
                    _ => Outcome::Refused {
                        code: body["error"]["code"]
                            .as_str()
                            .unwrap_or("no error code")
                            .to_owned(),
                        message: format!("HTTP {status}: {body}"),
                    },
                }
            }
            Client::Grpc { runtime, client } => {
                let request = SendRequest {
                    entity_type: entity_type.to_owned(),
                    entity_id: id.to_owned(),
                    command_json: payload.to_string(),
                    command_id: command_id.to_owned(),
                };
                match runtime.block_on(client.send(request)) {
                    Ok(response) => {
                        let response = response.into_inner();
                        match serde_json::from_str(&response.reply_json) {
                            Ok(reply) => Outcome::Acked {
                                reply,
                                seq_nr: response.seq_nr,
                                duplicate: response.duplicate,
                            },
                            Err(e) => Outcome::Refused {
                                code: "bad reply".into(),
                                message: format!(
                                    "reply is not JSON ({e}): {}",
                                    response.reply_json
                                ),
                            },
                        }
                    }
                    Err(status) => grpc_outcome(&status),
                }
            }
        }
    }
}

/// Transport failures (the node is gone) against the node's own answers.
fn grpc_outcome(status: &tonic::Status) -> Outcome {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
            Outcome::Unreachable(format!("{:?}: {}", status.code(), status.message()))
        }
        Code::ResourceExhausted => Outcome::Refused {
            code: "overloaded".into(),
            message: status.message().to_owned(),
        },
        code => Outcome::Refused {
            code: format!("{code:?}"),
            message: status.message().to_owned(),
        },
    }
}

/// The reads the checker makes (over HTTP).
pub struct Reader {
    agent: ureq::Agent,
    base: String,
}

/// One event as the node lists it.
#[derive(Debug, Clone)]
pub struct ListedEvent {
    pub seq_nr: u64,
    pub event: Value,
    pub command_id: String,
}

impl Reader {
    pub fn new(addr: &str) -> Self {
        Self::with_timeout(addr, TIMEOUT)
    }

    /// A reader whose requests give up after `timeout`.
    pub fn with_timeout(addr: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into();
        Self {
            agent,
            base: format!("http://{addr}"),
        }
    }

    /// `GET path`, its body as JSON (an error unless 200).
    pub fn get_json(&self, path: &str) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let mut response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let body: Value = response
            .body_mut()
            .read_json()
            .map_err(|e| format!("GET {url}: body: {e}"))?;
        if status != 200 {
            return Err(format!("GET {url}: HTTP {status}: {body}"));
        }
        Ok(body)
    }

    /// Every event of an entity, from sequence number 1.
    pub fn events(&self, entity_type: &str, id: &str) -> Result<Vec<ListedEvent>, String> {
        let mut events = Vec::new();
        loop {
            let from = events.len() + 1;
            let page = self.get_json(&format!(
                "/v1/entities/{entity_type}/{id}/events?from={from}&limit=1000"
            ))?;
            let listed = page["events"]
                .as_array()
                .ok_or_else(|| format!("no events array in {page}"))?;
            for e in listed {
                events.push(ListedEvent {
                    seq_nr: e["seq_nr"]
                        .as_u64()
                        .ok_or_else(|| format!("no seq_nr in {e}"))?,
                    event: e["event"].clone(),
                    command_id: e["command_id"].as_str().unwrap_or_default().to_owned(),
                });
            }
            if listed.len() < 1000 {
                return Ok(events);
            }
        }
    }

    pub fn view(&self, entity_type: &str, id: &str) -> Result<Value, String> {
        self.get_json(&format!("/v1/entities/{entity_type}/{id}"))
    }
}
