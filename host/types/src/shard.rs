//! Entity -> shard -> worker.
//!
//! `shard = fnv1a64(entity_type ++ [0xff] ++ entity_id) mod shard_count`:
//! 64-bit FNV-1a (offset basis `0xcbf29ce484222325`, prime `0x100000001b3`)
//! over the type's bytes, one `0xff` byte (never part of UTF-8, so no two
//! (type, id) pairs hash the same input), then the id's bytes. The function
//! is part of the on-disk format: changing it moves entities to other shards.

use crate::ids::ShardId;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a of `bytes`, continuing from `hash`.
pub fn fnv1a64(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// The shard of an entity.
pub fn shard_of(entity_type: &str, entity_id: &str, shard_count: u32) -> ShardId {
    let h = fnv1a64(FNV_OFFSET, entity_type.as_bytes());
    let h = fnv1a64(h, &[0xff]);
    let h = fnv1a64(h, entity_id.as_bytes());
    (h % u64::from(shard_count.max(1))) as ShardId
}

/// A stable 64-bit hash of a command id (for the deduplication window).
pub fn command_id_hash(command_id: &str) -> u64 {
    fnv1a64(FNV_OFFSET, command_id.as_bytes())
}

/// The worker that owns `shard`.
pub fn worker_of(shard: ShardId, workers: usize) -> usize {
    shard as usize % workers.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        assert_eq!(fnv1a64(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shard_assignment_is_stable_across_releases() {
        // Pinned values: a change here moves stored entities to other shards.
        assert_eq!(
            shard_of("account", "acc-1", 256),
            shard_of("account", "acc-1", 256)
        );
        let pinned: Vec<u32> = ["a", "b", "acc-1", "cart-9"]
            .iter()
            .map(|id| shard_of("account", id, 256))
            .collect();
        assert_eq!(pinned, vec![168, 193, 80, 241]);
    }

    #[test]
    fn type_and_id_boundaries_do_not_collide() {
        assert_ne!(shard_of("ab", "c", u32::MAX), shard_of("a", "bc", u32::MAX));
    }

    #[test]
    fn entities_spread_over_all_shards() {
        let mut seen = vec![0u32; 16];
        for i in 0..1600 {
            seen[shard_of("account", &format!("acc-{i}"), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }
}
