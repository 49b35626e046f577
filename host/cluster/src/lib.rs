//! The cluster: which node should hold which shard, and (as the cluster
//! issue proceeds) who the members are and how a request reaches the
//! shard's holder.
//!
//! The leases in the journal decide who *may* write a shard; the cluster
//! decides who *should* hold it. [`membership`] is who is alive and what
//! each member says of itself (chitchat gossip); [`placement`] is the pure
//! part: rendezvous hashing of shards over the ready members, the same on
//! every node.

pub mod membership;
pub mod placement;
