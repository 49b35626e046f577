//! [`Router`]: where the API sends commands and views. Alone, a node runs
//! them itself; in a cluster, a request whose shard this node does not
//! serve goes to the node that does ([`crate::forward`]), and while the
//! shard is moving (released, its owner dead and its lease not yet
//! expired, or claimed but not yet published) the request waits, up to
//! `wait`, then fails with `ShardMoving` (503 / UNAVAILABLE + Retry-After).
//!
//! Invariants:
//! - A request is retried only when it cannot have run (`NotOwner`,
//!   `LeaseLapsed`, `ShardMoving`, a peer that refused the connection) or
//!   when it carries the client's command id, whose deduplication holds on
//!   every node (the journal's index): so a retry never applies a command
//!   twice. The latter covers a journal failure under a lease this node
//!   has lost since (it was frozen past its ttl). A command without an id whose owner failed mid-request gets an
//!   error saying its outcome is unknown.
//! - The entity is checked here first (type deployed, id valid): a request
//!   that cannot succeed anywhere is answered at once, not forwarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stead_node::{CommandReply, Delivery, DeliveryFuture, Dispatch, JournalError, Node, NodeError};
use stead_types::ShardId;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::forward::{ForwardError, Peers};
use crate::routes::Routes;

/// The pause between attempts while a shard moves: short at first (a
/// release is followed by a claim within milliseconds), then longer.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(100);

/// Runs requests where their shard is served.
#[derive(Clone)]
pub struct Router {
    node: Arc<Node>,
    cluster: Option<Arc<Forwarding>>,
}

/// What routing needs of the cluster.
pub(crate) struct Forwarding {
    pub(crate) node_id: String,
    pub(crate) routes: watch::Receiver<Arc<Routes>>,
    pub(crate) peers: Peers,
    /// How long a request waits for a moving shard.
    pub(crate) wait: Duration,
    pub(crate) counters: Arc<RoutingCounters>,
}

/// What the router did, counted since the node joined.
#[derive(Debug, Default)]
pub struct RoutingCounters {
    /// Requests sent to another node.
    pub forwarded: AtomicU64,
    /// Attempts retried because the shard was moving (not served where
    /// tried, its holder gone, or nobody holding it yet).
    pub retried_while_moving: AtomicU64,
    /// Requests answered `ShardMoving` after waiting the whole `wait`.
    pub gave_up_moving: AtomicU64,
}

impl RoutingCounters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where one attempt should go.
enum Target {
    Here,
    Peer(String),
    /// Nobody to try now; the reason says why.
    Nobody(String),
}

impl Router {
    /// A node alone: every request runs here.
    pub fn local(node: Arc<Node>) -> Self {
        Self {
            node,
            cluster: None,
        }
    }

    pub(crate) fn clustered(node: Arc<Node>, forwarding: Arc<Forwarding>) -> Self {
        Self {
            node,
            cluster: Some(forwarding),
        }
    }

    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// Runs a command on the node serving its entity's shard.
    pub async fn send(
        &self,
        entity_type: &str,
        entity_id: &str,
        command: Vec<u8>,
        command_id: Option<String>,
    ) -> Result<CommandReply, NodeError> {
        let Some(cluster) = &self.cluster else {
            return self
                .node
                .send(entity_type, entity_id, command, command_id)
                .await;
        };
        let shard = crate::known::known_entity(&self.node, entity_type, entity_id).await?;
        let has_id = command_id.is_some();
        let give_up = Instant::now() + cluster.wait;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let why = match self.target(cluster, shard) {
                Target::Here => {
                    match self
                        .node
                        .send(entity_type, entity_id, command.clone(), command_id.clone())
                        .await
                    {
                        Err(e) if moved(&e) => e.to_string(),
                        // The journal failed under a lease this node has
                        // since lost (it was frozen or cut off): the shard
                        // is elsewhere now, and the client's id makes a
                        // retry there safe. With the lease still held, the
                        // database is down: that answer goes to the client.
                        Err(e @ NodeError::Storage(JournalError::Unavailable(_)))
                            if has_id && !self.node.serves(shard) =>
                        {
                            e.to_string()
                        }
                        outcome => return outcome,
                    }
                }
                Target::Peer(addr) => {
                    RoutingCounters::add(&cluster.counters.forwarded);
                    let forward = cluster.peers.send(
                        &addr,
                        entity_type,
                        entity_id,
                        command.clone(),
                        command_id.clone(),
                    );
                    match until_gone(cluster, &addr, forward).await {
                        Ok(Err(e)) if moved(&e) => e.to_string(),
                        Ok(outcome) => return outcome,
                        Err(e @ ForwardError::Unsent { .. }) => e.to_string(),
                        Err(e @ ForwardError::Unknown { .. }) if has_id => e.to_string(),
                        Err(e) => {
                            return Err(NodeError::DeadlineExceeded(format!(
                                "{e}; the command may have been applied: send it with an idempotency key (command id) to retry it safely"
                            )));
                        }
                    }
                }
                Target::Nobody(why) => why,
            };
            if Instant::now() + backoff > give_up {
                RoutingCounters::add(&cluster.counters.gave_up_moving);
                return Err(moving(shard, &why));
            }
            RoutingCounters::add(&cluster.counters.retried_while_moving);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Reads an entity's view on the node serving its shard.
    pub async fn view(&self, entity_type: &str, entity_id: &str) -> Result<Vec<u8>, NodeError> {
        let Some(cluster) = &self.cluster else {
            return self.node.view(entity_type, entity_id).await;
        };
        let shard = crate::known::known_entity(&self.node, entity_type, entity_id).await?;
        let give_up = Instant::now() + cluster.wait;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let why = match self.target(cluster, shard) {
                Target::Here => match self.node.view(entity_type, entity_id).await {
                    Err(e) if moved(&e) => e.to_string(),
                    outcome => return outcome,
                },
                // A view changes nothing: any failure may be retried.
                Target::Peer(addr) => {
                    RoutingCounters::add(&cluster.counters.forwarded);
                    let view = cluster.peers.view(&addr, entity_type, entity_id);
                    match until_gone(cluster, &addr, view).await {
                        Ok(Err(e)) if moved(&e) => e.to_string(),
                        Ok(outcome) => return outcome,
                        Err(e) => e.to_string(),
                    }
                }
                Target::Nobody(why) => why,
            };
            if Instant::now() + backoff > give_up {
                RoutingCounters::add(&cluster.counters.gave_up_moving);
                return Err(moving(shard, &why));
            }
            RoutingCounters::add(&cluster.counters.retried_while_moving);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn target(&self, cluster: &Forwarding, shard: ShardId) -> Target {
        if self.node.serves(shard) {
            return Target::Here;
        }
        let routes = cluster.routes.borrow();
        let Some(route) = routes.route(shard) else {
            return Target::Nobody(format!("shard {shard} does not exist"));
        };
        // The holder published by gossip; if none (or only this node, whose
        // lease is not valid now), the member it is placed on, which serves
        // it as soon as it has claimed it.
        if let Some(holder) = &route.holder
            && holder.node_id != cluster.node_id
        {
            return Target::Peer(holder.grpc.clone());
        }
        match &route.placed {
            Some(placed) if *placed == cluster.node_id => {
                Target::Nobody("it is placed on this node, which has not claimed it yet".into())
            }
            Some(placed) => match routes.member(placed) {
                Some(member) => Target::Peer(member.grpc.clone()),
                None => Target::Nobody(format!("its member {placed} is gone")),
            },
            None => Target::Nobody("no member of the cluster is ready".into()),
        }
    }
}

/// The courier's dispatch on a cluster member: a delivery runs where its
/// target is served, through the router, on the runtime the cluster started
/// on (the courier's own loop drives no network I/O). It holds the node
/// weakly: the node owns its courier, which owns this.
pub(crate) struct RouterDispatch {
    node: std::sync::Weak<Node>,
    forwarding: Arc<Forwarding>,
    runtime: tokio::runtime::Handle,
}

impl RouterDispatch {
    /// Must be made on the runtime that serves the cluster.
    pub(crate) fn new(node: &Arc<Node>, forwarding: Arc<Forwarding>) -> Self {
        Self {
            node: Arc::downgrade(node),
            forwarding,
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

impl Dispatch for RouterDispatch {
    fn dispatch(&self, d: Delivery) -> DeliveryFuture {
        let Some(node) = self.node.upgrade() else {
            return Box::pin(std::future::ready(Err(NodeError::ShuttingDown)));
        };
        let router = Router::clustered(node, self.forwarding.clone());
        let task = self.runtime.spawn(async move {
            router
                .send(&d.entity_type, &d.entity_id, d.command, Some(d.command_id))
                .await
        });
        Box::pin(async move {
            task.await.unwrap_or_else(|e| {
                Err(NodeError::Internal(format!("a delivery task failed: {e}")))
            })
        })
    }
}

/// Runs `forward` unless the peer at `addr` leaves the membership first
/// (declared dead: a frozen or partitioned node holds its connections open
/// without answering). The abandoned request took effect before the peer
/// stopped (a retry with its command id finds it), or it never will: by the
/// time another node serves the shard, the peer's lease has run out, which
/// it checks before running anything, and its journal appends are fenced.
async fn until_gone<T>(
    cluster: &Forwarding,
    addr: &str,
    forward: impl std::future::Future<Output = Result<T, ForwardError>>,
) -> Result<T, ForwardError> {
    let mut routes = cluster.routes.clone();
    let gone = async move {
        loop {
            if !routes
                .borrow_and_update()
                .members
                .iter()
                .any(|m| m.grpc == addr)
            {
                return;
            }
            if routes.changed().await.is_err() {
                // No more views: never resolve, let the request finish.
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        outcome = forward => outcome,
        () = gone => Err(ForwardError::Unknown {
            peer: addr.to_owned(),
            reason: "it left the cluster (declared dead) before answering".into(),
        }),
    }
}

/// Errors that say the request did not run because the shard is not
/// served where it was tried.
fn moved(e: &NodeError) -> bool {
    matches!(
        e,
        NodeError::NotOwner(_) | NodeError::LeaseLapsed(_) | NodeError::ShardMoving { .. }
    )
}

fn moving(shard: ShardId, why: &str) -> NodeError {
    NodeError::ShardMoving {
        shard,
        reason: format!("no node served it in time (last: {why})"),
    }
}
