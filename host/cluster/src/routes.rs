//! The routing table: for each shard, the member that says it holds it
//! (the highest lease epoch published wins) and the member it is placed on.
//! Made from a membership view by the controller at each change; read by
//! the router for every request that this node does not serve.
//!
//! Invariant: the table only says where to *try*. The node that receives a
//! forwarded request runs it only if it serves the shard then, so a stale
//! table costs a retry, never a wrong answer.

use std::collections::BTreeMap;

use stead_types::ShardId;

use crate::membership::{Member, MemberState};
use crate::placement;

/// Where a shard is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRoute {
    /// The member publishing the highest epoch of the shard's lease.
    pub holder: Option<Holder>,
    /// The ready member placement gives it to.
    pub placed: Option<String>,
}

/// A member holding a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub node_id: String,
    pub grpc: String,
    pub epoch: u64,
}

/// The cluster as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes {
    pub members: Vec<Member>,
    /// Indexed by shard.
    pub shards: Vec<ShardRoute>,
}

impl Routes {
    /// The table for `members` over `shard_count` shards.
    pub fn new(members: Vec<Member>, shard_count: u32) -> Self {
        let ready = ready_ids(&members);
        let mut shards: Vec<ShardRoute> = (0..shard_count)
            .map(|shard| ShardRoute {
                holder: None,
                placed: placement::owner(shard, &ready).map(str::to_owned),
            })
            .collect();
        for member in &members {
            for token in &member.shards {
                let Some(route) = shards.get_mut(token.shard as usize) else {
                    continue;
                };
                if route.holder.as_ref().is_none_or(|h| h.epoch < token.epoch) {
                    route.holder = Some(Holder {
                        node_id: member.node_id.clone(),
                        grpc: member.grpc.clone(),
                        epoch: token.epoch,
                    });
                }
            }
        }
        Self { members, shards }
    }

    pub fn route(&self, shard: ShardId) -> Option<&ShardRoute> {
        self.shards.get(shard as usize)
    }

    /// The shards placed on `node_id`.
    pub fn placed_on(&self, node_id: &str) -> Vec<ShardId> {
        self.shards
            .iter()
            .zip(0..)
            .filter(|(route, _)| route.placed.as_deref() == Some(node_id))
            .map(|(_, shard)| shard)
            .collect()
    }

    pub fn member(&self, node_id: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.node_id == node_id)
    }

    /// Shards per placed member, for status pages.
    pub fn placement_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for route in &self.shards {
            if let Some(placed) = &route.placed {
                *counts.entry(placed.clone()).or_default() += 1;
            }
        }
        counts
    }
}

/// The ids of the ready members.
pub fn ready_ids(members: &[Member]) -> Vec<String> {
    members
        .iter()
        .filter(|m| m.state == MemberState::Ready)
        .map(|m| m.node_id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use stead_types::FenceToken;

    use super::*;

    fn member(id: &str, state: MemberState, shards: &[(u32, u64)]) -> Member {
        Member {
            node_id: id.into(),
            generation: 1,
            grpc: format!("{id}:7400"),
            http: format!("{id}:7480"),
            state,
            shards: shards
                .iter()
                .map(|&(shard, epoch)| FenceToken { shard, epoch })
                .collect(),
        }
    }

    #[test]
    fn the_highest_published_epoch_is_the_holder_whoever_publishes_it_later() {
        let routes = Routes::new(
            vec![
                member("a", MemberState::Ready, &[(0, 3), (1, 1)]),
                member("b", MemberState::Ready, &[(0, 4)]),
            ],
            4,
        );
        let holder = |shard| routes.route(shard).and_then(|r| r.holder.clone());
        assert_eq!(
            holder(0).map(|h| (h.node_id, h.epoch)),
            Some(("b".into(), 4))
        );
        assert_eq!(holder(1).map(|h| h.node_id), Some("a".into()));
        assert_eq!(holder(2), None);
        assert_eq!(holder(9), None, "out of range is no route");
    }

    #[test]
    fn only_ready_members_are_placed_on() {
        let routes = Routes::new(
            vec![
                member("a", MemberState::Ready, &[]),
                member("b", MemberState::Joining, &[]),
                member("c", MemberState::Leaving, &[]),
            ],
            64,
        );
        assert_eq!(routes.placed_on("a").len(), 64);
        assert!(routes.placed_on("b").is_empty());
        assert!(routes.placed_on("c").is_empty());
        assert_eq!(routes.placement_counts().get("a"), Some(&64));
    }
}
