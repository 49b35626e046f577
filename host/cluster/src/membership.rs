//! Cluster membership and failure detection: chitchat (Quickwit's gossip,
//! with its phi-accrual-style detector) behind a small interface.
//!
//! Each node publishes, as gossip key-values: its gRPC and HTTP addresses,
//! its state ([`MemberState`]: joining, ready, leaving) and the shards it
//! holds with their epochs. [`Membership::watch`] gives the live members
//! (self included), one entry per node id: a node that restarts gets a new,
//! higher generation, and its older incarnation is ignored.
//!
//! Invariants:
//! - Liveness is each node's local view (gossip heartbeats); a member is
//!   placed on only when it says `ready`, and the journal's leases, not
//!   membership, decide who may write: a wrong view costs availability,
//!   never safety.
//! - There is no leave message in chitchat: a leaving node publishes
//!   `leaving` and keeps gossiping for a few intervals before it stops, so
//!   peers place its shards elsewhere without waiting for the detector.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::Transport;
use chitchat::{
    ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState, ProtocolVersion,
    spawn_chitchat,
};
use stead_types::FenceToken;
use tokio::sync::watch;

const KEY_GRPC: &str = "grpc";
const KEY_HTTP: &str = "http";
const KEY_STATE: &str = "state";
const KEY_SHARDS: &str = "shards";

/// What a member says it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemberState {
    /// Started, not yet serving: placement ignores it.
    Joining,
    /// Serving: shards are placed on it.
    Ready,
    /// Going away: its shards are placed elsewhere.
    Leaving,
}

impl MemberState {
    fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Ready => "ready",
            MemberState::Leaving => "leaving",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "joining" => Some(MemberState::Joining),
            "ready" => Some(MemberState::Ready),
            "leaving" => Some(MemberState::Leaving),
            _ => None,
        }
    }
}

impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A live member as gossip shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub node_id: String,
    /// Higher for each start of the node.
    pub generation: u64,
    /// The address other nodes and clients reach its gRPC API at.
    pub grpc: String,
    pub http: String,
    pub state: MemberState,
    /// The shards it holds, with their lease epochs, in shard order.
    pub shards: Vec<FenceToken>,
}

/// What [`Membership::census`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Live members, this node included.
    pub reachable: usize,
    /// Live members and those dead without leaving.
    pub known: usize,
}

impl Census {
    /// Cut off from most of the cluster: with three or more known members,
    /// reaching at most half of them. (With two, neither side is a
    /// majority: the leases alone keep them safe.)
    pub fn cut_off(&self) -> bool {
        self.known >= 3 && self.reachable * 2 <= self.known
    }
}

/// How a node joins the gossip.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub node_id: String,
    /// Nodes of different clusters never gossip together.
    pub cluster_id: String,
    /// Where gossip (UDP) listens.
    pub gossip_listen: SocketAddr,
    /// Where peers send gossip to this node.
    pub gossip_advertise: SocketAddr,
    /// `host:port` of nodes to contact first (names are re-resolved).
    pub seeds: Vec<String>,
    pub gossip_interval: Duration,
    /// A member silent for about this many mean heartbeat intervals is
    /// declared dead.
    pub phi_threshold: f64,
    pub grpc_advertise: String,
    pub http_advertise: String,
    /// Higher at each start of the node, so peers tell a restarted node
    /// from its earlier life. Default: nanoseconds since the epoch when the
    /// config was made.
    pub generation: u64,
}

impl MembershipConfig {
    /// Defaults for detection within about a second and a half: gossip
    /// every 200 ms, phi 6 with a prior of one interval.
    pub fn new(node_id: impl Into<String>, gossip: SocketAddr) -> Self {
        Self {
            node_id: node_id.into(),
            cluster_id: "stead".into(),
            gossip_listen: gossip,
            gossip_advertise: gossip,
            seeds: Vec::new(),
            gossip_interval: Duration::from_millis(200),
            phi_threshold: 6.0,
            grpc_advertise: String::new(),
            generation: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            http_advertise: String::new(),
        }
    }
}

/// Why gossip could not start.
#[derive(Debug, thiserror::Error)]
#[error("starting gossip on {addr}: {reason}")]
pub struct MembershipError {
    pub addr: SocketAddr,
    pub reason: String,
}

/// This node's part in the gossip; stopped by [`Membership::shutdown`] or
/// when dropped.
pub struct Membership {
    handle: ChitchatHandle,
    members: watch::Receiver<Vec<Member>>,
    node_id: String,
    watcher: tokio::task::JoinHandle<()>,
}

impl Membership {
    /// Starts gossiping as `joining`, over `transport` (chitchat's UDP in
    /// production, its in-process channels in tests).
    pub async fn start(
        config: MembershipConfig,
        transport: &dyn Transport,
    ) -> Result<Self, MembershipError> {
        let chitchat_id = ChitchatId::new(
            config.node_id.clone(),
            config.generation,
            config.gossip_advertise,
        );
        let failure_detector_config = FailureDetectorConfig {
            phi_threshold: config.phi_threshold,
            // The prior is one gossip interval: with chitchat's default of
            // 5 s, a new member's death would go unseen for many seconds.
            initial_interval: config.gossip_interval,
            sampling_window_size: 100,
            max_interval: Duration::from_secs(2),
            // A crashed node that never comes back counts toward the
            // majority this long (see `census`).
            dead_node_grace_period: Duration::from_secs(60),
        };
        let chitchat_config = ChitchatConfig {
            chitchat_id,
            cluster_id: config.cluster_id.clone(),
            gossip_interval: config.gossip_interval,
            listen_addr: config.gossip_listen,
            seed_nodes: config.seeds.clone(),
            failure_detector_config,
            marked_for_deletion_grace_period: Duration::from_secs(60),
            catchup_callback: None,
            extra_liveness_predicate: Some(Box::new(|state: &NodeState| {
                state.contains_key(KEY_GRPC) && state.contains_key(KEY_STATE)
            })),
            protocol_version: ProtocolVersion::V0,
        };
        let initial = vec![
            (KEY_GRPC.to_owned(), config.grpc_advertise.clone()),
            (KEY_HTTP.to_owned(), config.http_advertise.clone()),
            (
                KEY_STATE.to_owned(),
                MemberState::Joining.as_str().to_owned(),
            ),
            (KEY_SHARDS.to_owned(), String::new()),
        ];
        let handle = spawn_chitchat(chitchat_config, initial, transport)
            .await
            .map_err(|e| MembershipError {
                addr: config.gossip_listen,
                reason: format!("{e:#}"),
            })?;
        let mut live = handle
            .with_chitchat(|chitchat| chitchat.live_nodes_watcher())
            .await;
        let (tx, members) = watch::channel(members_of(&live.borrow_and_update()));
        let watcher = tokio::spawn(async move {
            while live.changed().await.is_ok() {
                let now = members_of(&live.borrow_and_update());
                tx.send_if_modified(|old| {
                    let changed = *old != now;
                    if changed {
                        *old = now;
                    }
                    changed
                });
            }
        });
        Ok(Self {
            handle,
            members,
            node_id: config.node_id,
            watcher,
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Publishes this node's state.
    pub async fn set_state(&self, state: MemberState) {
        self.handle
            .with_chitchat(|c| c.self_node_state().set(KEY_STATE, state.as_str()))
            .await;
    }

    /// Publishes the shards this node holds.
    pub async fn set_shards(&self, shards: &[FenceToken]) {
        let text = encode_shards(shards);
        self.handle
            .with_chitchat(|c| c.self_node_state().set(KEY_SHARDS, &text))
            .await;
    }

    /// How many nodes this one reaches, of those it knows: the live
    /// members, and the dead ones that did not leave gracefully (a node
    /// that said `leaving` before it went is not missed), counted by node
    /// id. Dead nodes are forgotten after chitchat's grace period.
    pub async fn census(&self) -> Census {
        self.handle
            .with_chitchat(|c| {
                let live: std::collections::BTreeSet<String> =
                    c.live_nodes().map(|id| id.node_id.to_string()).collect();
                let mut known = live.clone();
                for id in c.dead_nodes() {
                    let left = c
                        .node_state(id)
                        .and_then(|s| s.get(KEY_STATE))
                        .is_some_and(|s| s == MemberState::Leaving.as_str());
                    if !left {
                        known.insert(id.node_id.to_string());
                    }
                }
                Census {
                    reachable: live.len(),
                    known: known.len(),
                }
            })
            .await
    }

    /// The live members now (self included), by node id.
    pub fn members(&self) -> Vec<Member> {
        self.members.borrow().clone()
    }

    /// The live members, updated when one joins, leaves, dies or changes
    /// what it publishes.
    pub fn watch(&self) -> watch::Receiver<Vec<Member>> {
        self.members.clone()
    }

    /// Stops gossiping (peers then see this node die, unless it said
    /// `leaving` first).
    pub fn shutdown(&self) {
        self.watcher.abort();
        if let Err(e) = self.handle.initiate_shutdown() {
            tracing::warn!(error = %e, "stopping gossip");
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.watcher.abort();
        // Already stopped when `shutdown` was called: nothing to say.
        let _ = self.handle.initiate_shutdown();
    }
}

/// One member per node id, the highest generation's, in node-id order;
/// members that publish no known state are left out.
fn members_of(live: &BTreeMap<ChitchatId, NodeState>) -> Vec<Member> {
    let mut by_id: BTreeMap<&str, Member> = BTreeMap::new();
    for (id, state) in live {
        let Some(member_state) = state.get(KEY_STATE).and_then(MemberState::parse) else {
            continue;
        };
        let member = Member {
            node_id: id.node_id.to_string(),
            generation: id.generation_id,
            grpc: state.get(KEY_GRPC).unwrap_or_default().to_owned(),
            http: state.get(KEY_HTTP).unwrap_or_default().to_owned(),
            state: member_state,
            shards: decode_shards(state.get(KEY_SHARDS).unwrap_or_default()),
        };
        match by_id.get(&*id.node_id) {
            Some(known) if known.generation >= member.generation => {}
            _ => {
                by_id.insert(&id.node_id, member);
            }
        }
    }
    by_id.into_values().collect()
}

/// `shard:epoch` pairs, comma-separated (about 2 KiB for 256 shards: one
/// datagram carries it).
fn encode_shards(shards: &[FenceToken]) -> String {
    let mut sorted = shards.to_vec();
    sorted.sort_unstable_by_key(|t| t.shard);
    sorted
        .iter()
        .map(|t| format!("{}:{}", t.shard, t.epoch))
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`encode_shards`]; malformed pairs are skipped (a peer's
/// bug must not stop this node from reading the rest).
fn decode_shards(text: &str) -> Vec<FenceToken> {
    text.split(',')
        .filter_map(|pair| {
            let (shard, epoch) = pair.split_once(':')?;
            Some(FenceToken {
                shard: shard.parse().ok()?,
                epoch: epoch.parse().ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
