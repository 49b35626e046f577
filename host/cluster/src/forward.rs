//! Forwarding between nodes: the internal gRPC service `stead.cluster.v1.Peer`
//! ([`PeerService`], served on the node's gRPC port beside the public API)
//! and its client side ([`Peers`]: one HTTP/2 channel per peer, its
//! requests multiplexed, kept for the peer's lifetime).
//!
//! Invariants:
//! - A forwarded request runs on the receiving node or not at all: the
//!   service never forwards again, it answers `NotOwner` for a shard it
//!   does not serve (nothing ran), so a request cannot loop.
//! - An error crosses as the owner's own error (JSON of `NodeError`), so
//!   the client gets the same status from any node.
//! - [`ForwardError::Unsent`] means the request never reached the peer
//!   (connection refused): retrying it is always safe. Any other transport
//!   failure leaves the outcome unknown.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use stead_node::{CommandReply, Node, NodeError};
use tokio::io::{AsyncRead, AsyncWrite};
use tonic::transport::{Channel, Endpoint};

use crate::proto::peer_client::PeerClient;
use crate::proto::{self, peer_outcome::Outcome};

/// How a forwarded request failed to get an answer from its peer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// It never reached the peer: nothing ran there.
    #[error("peer {peer} unreachable: {reason}")]
    Unsent { peer: String, reason: String },
    /// It may have run: the connection failed or timed out after sending.
    #[error("peer {peer} failed during the request: {reason}")]
    Unknown { peer: String, reason: String },
}

/// A connection to a peer: any byte stream.
pub trait Connection: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Connection for T {}

/// A connection being opened.
pub type Dialing = Pin<Box<dyn Future<Output = std::io::Result<Box<dyn Connection>>> + Send>>;

/// Opens connections to peers: the network seam of forwarding (TCP in
/// production, [`TcpDialer`]; the simulator's network in simulation).
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `addr` (`host:port`).
    fn dial(&self, addr: &str) -> Dialing;
}

/// TCP with `TCP_NODELAY`: small requests must not wait for Nagle's
/// algorithm (without it one is held back up to 40 ms).
#[derive(Debug, Default, Clone, Copy)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, addr: &str) -> Dialing {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Box<dyn Connection>)
        })
    }
}

/// Clients of the other nodes, by gRPC address.
pub struct Peers {
    channels: Mutex<HashMap<String, PeerClient<Channel>>>,
    /// The longest a forwarded request may take.
    timeout: Duration,
    dialer: Arc<dyn Dialer>,
}

impl Peers {
    pub fn new(timeout: Duration, dialer: Arc<dyn Dialer>) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            timeout,
            dialer,
        }
    }

    fn client(&self, addr: &str) -> Result<PeerClient<Channel>, ForwardError> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(client) = channels.get(addr) {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ForwardError::Unsent {
                peer: addr.to_owned(),
                reason: format!("bad address: {e}"),
            })?
            .connect_timeout(Duration::from_secs(1))
            .timeout(self.timeout)
            // A peer that stops answering (frozen, cut off) is noticed in
            // about two seconds even while a request waits on it.
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(1))
            .keep_alive_while_idle(true);
        let dialer = self.dialer.clone();
        let target = addr.to_owned();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let dialing = dialer.dial(&target);
            async move { dialing.await.map(TokioIo::new) }
        });
        let client = PeerClient::new(endpoint.connect_with_connector_lazy(connector))
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        channels.insert(addr.to_owned(), client.clone());
        Ok(client)
    }

    /// Forgets the channels of peers no longer members.
    pub fn retain(&self, live: &[&str]) {
        self.channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|addr, _| live.contains(&addr.as_str()));
    }

    /// Runs a command on the peer at `addr`.
    pub async fn send(
        &self,
        addr: &str,
        entity_type: &str,
        entity_id: &str,
        command: Vec<u8>,
        command_id: Option<String>,
    ) -> Result<Result<CommandReply, NodeError>, ForwardError> {
        let mut client = self.client(addr)?;
        let request = proto::PeerSendRequest {
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
            command,
            command_id,
        };
        let outcome = client
            .send(request)
            .await
            .map_err(|s| transport_error(addr, &s))?
            .into_inner();
        Ok(match outcome.outcome {
            Some(Outcome::Reply(r)) => Ok(CommandReply {
                reply: r.reply,
                seq_nr: r.seq_nr,
                duplicate: r.duplicate,
            }),
            other => Err(outcome_error(addr, other)),
        })
    }

    /// Reads an entity's view on the peer at `addr`.
    pub async fn view(
        &self,
        addr: &str,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Result<Vec<u8>, NodeError>, ForwardError> {
        let mut client = self.client(addr)?;
        let request = proto::PeerViewRequest {
            entity_type: entity_type.to_owned(),
            entity_id: entity_id.to_owned(),
        };
        let outcome = client
            .view(request)
            .await
            .map_err(|s| transport_error(addr, &s))?
            .into_inner();
        Ok(match outcome.outcome {
            Some(Outcome::View(view)) => Ok(view),
            other => Err(outcome_error(addr, other)),
        })
    }
}

/// The error a peer answered, or what is wrong with its answer.
fn outcome_error(addr: &str, outcome: Option<Outcome>) -> NodeError {
    match outcome {
        Some(Outcome::ErrorJson(json)) => serde_json::from_str(&json).unwrap_or_else(|e| {
            NodeError::Internal(format!(
                "peer {addr} sent an unreadable error ({e}): {json}"
            ))
        }),
        _ => NodeError::Internal(format!("peer {addr} sent an answer of the wrong kind")),
    }
}

/// Whether a failed call reached the peer: a refused connection did not.
fn transport_error(addr: &str, status: &tonic::Status) -> ForwardError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    let mut refused = false;
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            )
        {
            refused = true;
            break;
        }
        source = e.source();
    }
    let reason = format!("{}: {}", status.code(), status.message());
    if refused {
        ForwardError::Unsent {
            peer: addr.to_owned(),
            reason,
        }
    } else {
        ForwardError::Unknown {
            peer: addr.to_owned(),
            reason,
        }
    }
}

/// The `Peer` service: runs forwarded requests on this node.
pub struct PeerService {
    node: Arc<Node>,
}

impl PeerService {
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// The tonic service, to add to the node's gRPC server.
    pub fn into_server(self) -> proto::peer_server::PeerServer<Self> {
        proto::peer_server::PeerServer::new(self)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX)
    }

    /// `NotOwner` unless this node serves the entity's shard now; then the
    /// entity is checked as the router checks it (a type deployed a moment
    /// ago elsewhere is looked up first).
    async fn check_served(&self, entity_type: &str, entity_id: &str) -> Result<(), NodeError> {
        let shard = self.node.shard_of(entity_type, entity_id);
        if !self.node.serves(shard) {
            return Err(NodeError::NotOwner(shard));
        }
        crate::known::known_entity(&self.node, entity_type, entity_id)
            .await
            .map(drop)
    }
}

fn error_outcome(error: &NodeError) -> proto::PeerOutcome {
    let json = serde_json::to_string(error).unwrap_or_else(|e| {
        // Cannot happen for this type; still an answer, never a panic.
        format!("{{\"Internal\":\"unencodable error: {e}\"}}")
    });
    proto::PeerOutcome {
        outcome: Some(Outcome::ErrorJson(json)),
    }
}

#[tonic::async_trait]
impl proto::peer_server::Peer for PeerService {
    async fn send(
        &self,
        request: tonic::Request<proto::PeerSendRequest>,
    ) -> Result<tonic::Response<proto::PeerOutcome>, tonic::Status> {
        let req = request.into_inner();
        let outcome = match self.check_served(&req.entity_type, &req.entity_id).await {
            Err(e) => Err(e),
            Ok(()) => {
                self.node
                    .send(
                        &req.entity_type,
                        &req.entity_id,
                        req.command,
                        req.command_id,
                    )
                    .await
            }
        };
        Ok(tonic::Response::new(match outcome {
            Ok(reply) => proto::PeerOutcome {
                outcome: Some(Outcome::Reply(proto::CommandReply {
                    reply: reply.reply,
                    seq_nr: reply.seq_nr,
                    duplicate: reply.duplicate,
                })),
            },
            Err(e) => error_outcome(&e),
        }))
    }

    async fn view(
        &self,
        request: tonic::Request<proto::PeerViewRequest>,
    ) -> Result<tonic::Response<proto::PeerOutcome>, tonic::Status> {
        let req = request.into_inner();
        let outcome = match self.check_served(&req.entity_type, &req.entity_id).await {
            Err(e) => Err(e),
            Ok(()) => self.node.view(&req.entity_type, &req.entity_id).await,
        };
        Ok(tonic::Response::new(match outcome {
            Ok(view) => proto::PeerOutcome {
                outcome: Some(Outcome::View(view)),
            },
            Err(e) => error_outcome(&e),
        }))
    }
}
