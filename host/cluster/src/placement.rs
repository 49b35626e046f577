//! Shard placement: which ready member should hold each shard.
//!
//! Rendezvous (highest random weight) hashing: a shard goes to the member
//! with the highest `weight(member, shard)`. Every node computes the same
//! placement from the same member set, with no coordination, and a join or a
//! leave moves only the shards it must: a member that leaves gives up exactly
//! its own shards (each to its next-highest member), and one that joins takes
//! about `1/n` of the shards, from everyone.
//!
//! Invariants (tested below): deterministic for a member set, independent of
//! the set's order; every shard is placed when any member is ready; removing
//! a member moves only that member's shards; adding one moves shards only to
//! it.

use std::collections::BTreeMap;

use stead_types::ShardId;

/// The weight of `member` for `shard`: FNV-1a of the member id, mixed with
/// the shard by SplitMix64's finaliser (a stable function: part of the
/// cluster's behaviour, never of a process's random seed).
pub fn weight(member: &str, shard: ShardId) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.as_bytes() {
        h ^= u64::from(*byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = h ^ u64::from(shard).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The member that should hold `shard`, if any member is ready. Ties (equal
/// weights) go to the smallest id, so the answer never depends on order.
pub fn owner(shard: ShardId, members: &[String]) -> Option<&str> {
    members
        .iter()
        .map(|m| (weight(m, shard), std::cmp::Reverse(m.as_str())))
        .max()
        .map(|(_, std::cmp::Reverse(m))| m)
}

/// The placement of shards `0..shard_count` over `members`: member -> its
/// shards, in order. Empty when no member is ready.
pub fn place(shard_count: u32, members: &[String]) -> BTreeMap<String, Vec<ShardId>> {
    let mut placed: BTreeMap<String, Vec<ShardId>> = BTreeMap::new();
    for shard in 0..shard_count {
        if let Some(member) = owner(shard, members) {
            placed.entry(member.to_owned()).or_default().push(shard);
        }
    }
    placed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn owners(shard_count: u32, m: &[String]) -> Vec<Option<String>> {
        (0..shard_count)
            .map(|s| owner(s, m).map(str::to_owned))
            .collect()
    }

    #[test]
    fn placement_is_the_same_whatever_the_order_of_the_members() {
        let a = members(&["node-a", "node-b", "node-c"]);
        let b = members(&["node-c", "node-a", "node-b"]);
        assert_eq!(owners(256, &a), owners(256, &b));
        assert_eq!(place(256, &a), place(256, &b));
    }

    #[test]
    fn every_shard_is_placed_and_spread_about_evenly() {
        let m = members(&["node-a", "node-b", "node-c"]);
        let placed = place(256, &m);
        assert_eq!(placed.values().map(Vec::len).sum::<usize>(), 256);
        for (member, shards) in &placed {
            assert!(
                (50..=120).contains(&shards.len()),
                "{member} holds {} of 256 shards",
                shards.len()
            );
        }
        assert!(place(256, &[]).is_empty(), "no member, no placement");
    }

    #[test]
    fn a_leave_moves_only_the_shards_of_the_member_that_left() {
        let before = members(&["node-a", "node-b", "node-c", "node-d"]);
        let after = members(&["node-a", "node-b", "node-d"]);
        for (shard, (was, is)) in owners(256, &before)
            .into_iter()
            .zip(owners(256, &after))
            .enumerate()
        {
            if was.as_deref() != Some("node-c") {
                assert_eq!(was, is, "shard {shard} moved though its owner stayed");
            }
        }
    }

    #[test]
    fn a_join_moves_shards_only_to_the_member_that_joined() {
        let before = members(&["node-a", "node-b", "node-c"]);
        let after = members(&["node-a", "node-b", "node-c", "node-d"]);
        let mut moved = 0;
        for (was, is) in owners(256, &before).into_iter().zip(owners(256, &after)) {
            if was != is {
                assert_eq!(is.as_deref(), Some("node-d"));
                moved += 1;
            }
        }
        assert!(
            (30..=100).contains(&moved),
            "{moved} of 256 moved to the new member"
        );
    }
}
