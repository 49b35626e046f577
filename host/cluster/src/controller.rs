//! The controller: makes this node hold the shards placement gives it.
//!
//! At every membership change and every `interval`, it rebuilds the routing
//! table ([`Routes`]) from the members' gossip, and, while this node is a
//! ready member:
//! - acquires the shards placed on it that it does not want yet (a claim
//!   succeeds once the shard is free: released by its holder, or its lease
//!   expired), and claims again those placed on it but not served;
//! - releases the shards it wants but are placed elsewhere (their new
//!   owner is ready, or placement would not name it);
//!
//! at most `batch` shards of each per round, so a join or a leave moves
//! shards gradually and recovery (lazy, per entity) never stampedes. It
//! then publishes the leases it serves.
//!
//! A node cut off from most of the members it knows (reaching at most half
//! of three or more) for longer than `isolation_bound` releases every
//! shard and takes none until it reaches a majority again: the majority's
//! members take its shards at once instead of failing requests to a node
//! they cannot reach, and it says so in its log, `/readyz` and metrics.
//!
//! Invariants:
//! - Nothing is released on a view in which this node itself is not a ready
//!   member (a view that is still forming, or this node leaving): a
//!   partial view may make this node want too much (its claims fail while
//!   others hold valid leases), never give up what it serves.
//! - The journal's leases, not this loop, decide who may write: a wrong or
//!   stale view costs availability, never safety.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use stead_node::Node;
use stead_types::{FenceToken, ShardId};
use tokio::sync::watch;

use crate::membership::{MemberState, Membership};
use crate::routes::Routes;

/// What the controller is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Learning the members before taking any shard.
    Joining,
    /// Holding the shards placed on this node.
    Ready,
    /// Giving its shards up: no acquire, no release (the leave does it).
    Leaving,
    /// Stopped.
    Stopped,
}

pub(crate) struct Controller {
    pub(crate) node: Arc<Node>,
    pub(crate) membership: Arc<Membership>,
    pub(crate) routes: watch::Sender<Arc<Routes>>,
    pub(crate) interval: Duration,
    pub(crate) batch: usize,
    /// How long a new node listens to gossip before it says it is ready.
    pub(crate) settle: Duration,
    /// How long a node may be cut off from most of the members before it
    /// stops serving.
    pub(crate) isolation_bound: Duration,
    /// Set while this node is cut off past the bound and serves nothing.
    pub(crate) isolated: Arc<std::sync::atomic::AtomicBool>,
}

impl Controller {
    pub(crate) async fn run(
        self,
        mut phase: watch::Receiver<Phase>,
        phase_tx: watch::Sender<Phase>,
    ) {
        let mut members = self.membership.watch();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = tokio::time::Instant::now();
        let mut published: Option<Vec<FenceToken>> = None;
        let mut cut_off_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                changed = members.changed() => if changed.is_err() { return },
                changed = phase.changed() => if changed.is_err() { return },
            }
            let now = *phase.borrow_and_update();
            if now == Phase::Stopped {
                return;
            }
            let routes = Arc::new(Routes::new(
                members.borrow_and_update().clone(),
                self.node.shard_count(),
            ));
            self.routes.send_if_modified(|old| {
                let changed = **old != *routes;
                if changed {
                    *old = routes.clone();
                }
                changed
            });
            if now == Phase::Joining && started.elapsed() >= self.settle {
                self.membership.set_state(MemberState::Ready).await;
                phase_tx.send_if_modified(|p| {
                    let joining = *p == Phase::Joining;
                    if joining {
                        *p = Phase::Ready;
                    }
                    joining
                });
                tracing::info!(
                    members = routes.members.len(),
                    "joined the cluster as a ready member"
                );
            }
            if now == Phase::Ready && !self.check_isolation(&mut cut_off_since).await {
                self.rebalance(&routes).await;
            }
            let served = self.node.served_shards();
            if published.as_ref() != Some(&served) {
                self.membership.set_shards(&served).await;
                published = Some(served);
            }
        }
    }

    /// Whether this node is cut off from most of the members for longer
    /// than the bound; on crossing it, gives up every shard (so the
    /// majority can take them over without waiting for lease expiry), and
    /// serves again once it reaches a majority.
    async fn check_isolation(&self, since: &mut Option<tokio::time::Instant>) -> bool {
        use std::sync::atomic::Ordering;
        let census = self.membership.census().await;
        if !census.cut_off() {
            if since.take().is_some() && self.isolated.swap(false, Ordering::Relaxed) {
                tracing::warn!(
                    reachable = census.reachable,
                    known = census.known,
                    "reaches a majority of the cluster again: serving again"
                );
            }
            return false;
        }
        let started = *since.get_or_insert_with(|| {
            tracing::warn!(reachable = census.reachable, known = census.known, bound = ?self.isolation_bound, "cut off from most of the cluster's members; stops serving if this lasts");
            tokio::time::Instant::now()
        });
        if started.elapsed() < self.isolation_bound {
            return false;
        }
        if !self.isolated.swap(true, Ordering::Relaxed) {
            tracing::error!(
                reachable = census.reachable,
                known = census.known,
                "cut off from most of the cluster's members for longer than {:?}: releasing every shard and serving nothing until a majority is reachable",
                self.isolation_bound
            );
        }
        let wanted = self.node.wanted_shards();
        if !wanted.is_empty() {
            match self.node.release_shards_async(&wanted).await {
                Ok(released) => {
                    tracing::warn!(shards = released.len(), "released every shard (cut off)")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "releasing shards failed; they stop being served when their leases run out")
                }
            }
        }
        true
    }

    /// One round of acquiring and releasing (see the module docs).
    async fn rebalance(&self, routes: &Routes) {
        let me = self.membership.node_id();
        if routes
            .member(me)
            .is_none_or(|m| m.state != MemberState::Ready)
        {
            return;
        }
        let placed: BTreeSet<ShardId> = routes.placed_on(me).into_iter().collect();
        let wanted: BTreeSet<ShardId> = self.node.wanted_shards().into_iter().collect();
        let served: BTreeSet<ShardId> = self
            .node
            .served_shards()
            .into_iter()
            .map(|t| t.shard)
            .collect();
        // New shards first, then those wanted but not yet claimed (their
        // holder died or is releasing them: claim as soon as they are free).
        let mut acquire: Vec<ShardId> = placed.difference(&wanted).copied().collect();
        acquire.extend(
            placed
                .intersection(&wanted)
                .filter(|s| !served.contains(s))
                .copied(),
        );
        acquire.truncate(self.batch);
        let release: Vec<ShardId> = wanted
            .difference(&placed)
            .copied()
            .take(self.batch)
            .collect();
        if !release.is_empty() {
            match self.node.release_shards_async(&release).await {
                Ok(_) => {
                    tracing::info!(
                        shards = release.len(),
                        "released shards placed on other members"
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "releasing shards failed; retried next round")
                }
            }
        }
        if !acquire.is_empty() {
            match self.node.acquire_shards_async(&acquire).await {
                Ok(tokens) if !tokens.is_empty() => {
                    tracing::info!(shards = tokens.len(), "claimed shards placed on this node");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "claiming shards failed; retried next round")
                }
            }
        }
    }
}
