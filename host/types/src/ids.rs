//! The identities every layer shares: shards, entities and the fence token
//! that proves a shard's lease.
//!
//! Invariant: an [`EntityKey`]'s shard is always
//! [`crate::shard::shard_of`] of its type and id under the node's shard
//! count; the key is built only where that count is known.

use std::fmt;

/// Shard index, `0 .. shard_count`.
pub type ShardId = u32;

/// Why `name` is not a valid entity type name, or `None` if it is: 1 to 64
/// lowercase ASCII letters, digits, `-` and `_`.
pub fn entity_type_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 64 {
        return Some("must be 1 to 64 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
    {
        return Some("only lowercase ASCII letters, digits, `-` and `_` are allowed");
    }
    None
}

/// The identity of an entity in the journal.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct EntityKey {
    pub shard: ShardId,
    pub entity_type: String,
    pub entity_id: String,
}

impl EntityKey {
    pub fn new(
        shard: ShardId,
        entity_type: impl Into<String>,
        entity_id: impl Into<String>,
    ) -> Self {
        Self {
            shard,
            entity_type: entity_type.into(),
            entity_id: entity_id.into(),
        }
    }
}

impl fmt::Display for EntityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{} (shard {})",
            self.entity_type, self.entity_id, self.shard
        )
    }
}

/// Proof of holding a shard's lease: the shard and the lease's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FenceToken {
    pub shard: ShardId,
    pub epoch: u64,
}
