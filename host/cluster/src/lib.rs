//! The cluster: who the members are, which node should hold which shard,
//! and how a request reaches the node that holds it.
//!
//! The leases in the journal decide who *may* write a shard; the cluster
//! decides who *should* hold it and where to send requests:
//! - [`membership`]: who is alive and what each member says of itself
//!   (chitchat gossip with a phi-accrual failure detector);
//! - [`placement`]: rendezvous hashing of shards over the ready members,
//!   the same on every node;
//! - [`routes`]: the routing table made from a membership view;
//! - `controller`: acquires the shards placed on this node, releases the
//!   others, publishes what it serves;
//! - [`forward`]: the node-to-node gRPC service and its clients;
//! - [`router`]: runs a request here or on the shard's holder, waiting
//!   (bounded) while the shard moves.
//!
//! [`Cluster`] ties them to a [`Node`]: `start` joins, `leave` departs
//! gracefully (shards released, not left to expire).

mod controller;
pub mod forward;
mod known;
pub mod membership;
pub mod placement;
pub mod router;
pub mod routes;

#[cfg(test)]
mod tests;

pub mod proto;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use stead_node::Node;
use tokio::sync::watch;

use controller::{Controller, Phase};
use forward::{PeerService, Peers};
use membership::{MemberState, Membership, MembershipConfig, MembershipError};
use router::{Forwarding, Router};
use routes::Routes;

/// Default pause between two rounds of the controller.
pub const DEFAULT_REBALANCE_INTERVAL: Duration = Duration::from_millis(250);
/// Default most shards acquired, and most released, per round.
pub const DEFAULT_REBALANCE_BATCH: usize = 64;
/// Default longest time a node cut off from most members keeps serving.
pub const DEFAULT_ISOLATION_BOUND: Duration = Duration::from_secs(5);
/// Default longest wait of a request for a moving shard.
pub const DEFAULT_FORWARD_WAIT: Duration = Duration::from_secs(5);

/// How a node takes part in a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub membership: MembershipConfig,
    pub rebalance_interval: Duration,
    pub rebalance_batch: usize,
    pub forward_wait: Duration,
    /// The longest a forwarded request may take.
    pub forward_timeout: Duration,
    /// How long a starting node listens to gossip before it says it is
    /// ready (so it learns the members before placement counts it).
    pub settle: Duration,
    /// How long a node cut off from most members keeps serving.
    pub isolation_bound: Duration,
}

impl ClusterConfig {
    /// Defaults around `membership`.
    pub fn new(membership: MembershipConfig) -> Self {
        let settle = membership.gossip_interval * 5;
        Self {
            membership,
            rebalance_interval: DEFAULT_REBALANCE_INTERVAL,
            rebalance_batch: DEFAULT_REBALANCE_BATCH,
            forward_wait: DEFAULT_FORWARD_WAIT,
            forward_timeout: Duration::from_secs(30),
            settle,
            isolation_bound: DEFAULT_ISOLATION_BOUND,
        }
    }
}

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error("the cluster needs a journal shared by its nodes (PostgreSQL); this node has {0}")]
    NotShared(String),
}

/// This node's part in the cluster.
pub struct Cluster {
    node: Arc<Node>,
    membership: Arc<Membership>,
    forwarding: Arc<Forwarding>,
    phase: watch::Sender<Phase>,
    controller: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    gossip_interval: Duration,
    isolated: Arc<std::sync::atomic::AtomicBool>,
}

/// One member in [`ClusterStatus`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MemberStatus {
    pub node_id: String,
    pub state: String,
    pub grpc: String,
    pub http: String,
    /// Shards it says it holds.
    pub shards_held: usize,
    /// Shards placement gives it.
    pub shards_placed: usize,
}

/// One shard in [`ClusterStatus`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ShardStatus {
    pub shard: u32,
    pub holder: Option<String>,
    pub epoch: Option<u64>,
    pub placed: Option<String>,
}

/// The cluster as this node sees it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ClusterStatus {
    pub node_id: String,
    pub members: Vec<MemberStatus>,
    pub shards: Vec<ShardStatus>,
}

impl Cluster {
    /// Joins the cluster over UDP gossip: this node opens holding no shard
    /// (the node must be opened with `acquire_all_at_open` off) and claims
    /// those placed on it once it is a ready member.
    pub async fn start(node: Arc<Node>, config: ClusterConfig) -> Result<Self, ClusterError> {
        Self::start_with_transport(node, config, &chitchat::transport::UdpTransport).await
    }

    /// [`Cluster::start`] with gossip over `transport` (chitchat's
    /// in-process channels in tests, where links can be cut).
    pub async fn start_with_transport(
        node: Arc<Node>,
        config: ClusterConfig,
        transport: &dyn chitchat::transport::Transport,
    ) -> Result<Self, ClusterError> {
        Self::start_on(node, config, transport, Arc::new(forward::TcpDialer)).await
    }

    /// [`Cluster::start`] on the network given: gossip over `transport`,
    /// forwarding over the connections `dialer` opens (the simulator's).
    pub async fn start_on(
        node: Arc<Node>,
        config: ClusterConfig,
        transport: &dyn chitchat::transport::Transport,
        dialer: Arc<dyn forward::Dialer>,
    ) -> Result<Self, ClusterError> {
        if !node.journal_shared() {
            return Err(ClusterError::NotShared(node.journal_description()));
        }
        let gossip_interval = config.membership.gossip_interval;
        let membership = Arc::new(Membership::start(config.membership.clone(), transport).await?);
        let (routes_tx, routes_rx) = watch::channel(Arc::new(Routes::new(
            membership.members(),
            node.shard_count(),
        )));
        let forwarding = Arc::new(Forwarding {
            node_id: config.membership.node_id.clone(),
            routes: routes_rx,
            peers: Peers::new(config.forward_timeout, dialer),
            wait: config.forward_wait,
            counters: Arc::default(),
        });
        let (phase, phase_rx) = watch::channel(Phase::Joining);
        let isolated = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let controller = Controller {
            node: node.clone(),
            membership: membership.clone(),
            routes: routes_tx,
            interval: config.rebalance_interval,
            batch: config.rebalance_batch.max(1),
            settle: config.settle,
            isolation_bound: config.isolation_bound,
            isolated: isolated.clone(),
        };
        let phase_tx = phase.clone();
        let controller = tokio::spawn(controller.run(phase_rx, phase_tx));
        // Sends and timers go where their target is served, like requests.
        node.set_dispatch(Arc::new(router::RouterDispatch::new(
            &node,
            forwarding.clone(),
        )));
        tracing::info!(node_id = %config.membership.node_id, gossip = %config.membership.gossip_listen, seeds = ?config.membership.seeds, "joining the cluster");
        Ok(Self {
            node,
            membership,
            forwarding,
            phase,
            controller: std::sync::Mutex::new(Some(controller)),
            gossip_interval,
            isolated,
        })
    }

    /// What this node's router did since it joined.
    pub fn routing_counters(&self) -> Arc<router::RoutingCounters> {
        self.forwarding.counters.clone()
    }

    /// Where the API sends requests.
    pub fn router(&self) -> Router {
        Router::clustered(self.node.clone(), self.forwarding.clone())
    }

    /// The node-to-node service, for the node's gRPC server.
    pub fn peer_service(&self) -> forward::PeerService {
        PeerService::new(self.node.clone())
    }

    pub fn node_id(&self) -> &str {
        self.membership.node_id()
    }

    /// Ready: a ready member serving every shard placed on it.
    pub fn readiness(&self) -> Result<(), String> {
        match *self.phase.borrow() {
            Phase::Joining => return Err("joining the cluster".into()),
            Phase::Leaving | Phase::Stopped => return Err("leaving the cluster".into()),
            Phase::Ready => {}
        }
        if self.is_isolated() {
            return Err("cut off from most of the cluster's members: serving nothing until a majority is reachable".into());
        }
        let routes = self.forwarding.routes.borrow().clone();
        if routes
            .member(self.node_id())
            .is_none_or(|m| m.state != MemberState::Ready)
        {
            return Err("not yet seen as a ready member by its own gossip".into());
        }
        let placed = routes.placed_on(self.node_id());
        let missing = placed.iter().filter(|&&s| !self.node.serves(s)).count();
        if missing > 0 {
            return Err(format!(
                "serving {} of the {} shards placed on this node: the others are still held by other nodes (moving, or their leases not yet expired)",
                placed.len() - missing,
                placed.len()
            ));
        }
        Ok(())
    }

    /// Whether this node is cut off from most members past the bound (it
    /// serves nothing then).
    pub fn is_isolated(&self) -> bool {
        self.isolated.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Members, their states and each shard's holder and placement.
    pub fn status(&self) -> ClusterStatus {
        let routes = self.forwarding.routes.borrow().clone();
        let placed = routes.placement_counts();
        let members = routes
            .members
            .iter()
            .map(|m| MemberStatus {
                node_id: m.node_id.clone(),
                state: m.state.to_string(),
                grpc: m.grpc.clone(),
                http: m.http.clone(),
                shards_held: m.shards.len(),
                shards_placed: placed.get(&m.node_id).copied().unwrap_or(0),
            })
            .collect();
        let shards = routes
            .shards
            .iter()
            .zip(0..)
            .map(|(route, shard)| ShardStatus {
                shard,
                holder: route.holder.as_ref().map(|h| h.node_id.clone()),
                epoch: route.holder.as_ref().map(|h| h.epoch),
                placed: route.placed.clone(),
            })
            .collect();
        ClusterStatus {
            node_id: self.node_id().to_owned(),
            members,
            shards,
        }
    }

    /// Leaves gracefully: says `leaving` (peers place its shards elsewhere
    /// and send it nothing new), waits a few gossip rounds for them to hear
    /// it, releases every shard (commands queued for them finish first, so
    /// none is lost and the new owners claim at once, without waiting for a
    /// ttl), publishes that it holds none, and stops gossiping.
    pub async fn leave(&self) {
        if *self.phase.borrow() == Phase::Stopped {
            return;
        }
        self.phase.send_replace(Phase::Leaving);
        self.membership.set_state(MemberState::Leaving).await;
        tracing::info!("leaving the cluster");
        tokio::time::sleep(self.gossip_interval * 3).await;
        let wanted = self.node.wanted_shards();
        match self.node.release_shards_async(&wanted).await {
            Ok(_) => tracing::info!(shards = wanted.len(), "released every shard"),
            Err(e) => {
                tracing::warn!(error = %e, "releasing shards at leave failed; they move once their leases expire")
            }
        }
        self.membership.set_shards(&[]).await;
        tokio::time::sleep(self.gossip_interval * 2).await;
        self.phase.send_replace(Phase::Stopped);
        let controller = self
            .controller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(controller) = controller {
            let _ = controller.await;
        }
        self.membership.shutdown();
        self.node.set_local_dispatch();
        tracing::info!("left the cluster");
    }
}
