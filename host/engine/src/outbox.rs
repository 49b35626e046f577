//! What the workers tell the node's delivery loop (the courier, in the
//! node crate) about their shards' outboxes: which leases they hold, and
//! each durable append's sends and timer changes.
//!
//! Invariants:
//! - Events of one shard come from its one worker, in the order things
//!   happened there: `Acquired` before the shard's commits under that
//!   lease, `Dropped` after its last.
//! - `Committed` is sent only once the append is durable (the journal
//!   returned `Ok` for that entity), so nothing is delivered for events
//!   that could still be lost.
//! - Sending never blocks a worker (an unbounded channel that the courier
//!   drains at once; what it keeps per shard is bounded by the journal's
//!   outbox, which it can reread).

use stead_journal::{EntityKey, FenceToken, OutboxSend, TimerWrite};

/// An event of the shards' outboxes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxEvent {
    /// These leases were claimed: their shards' pending sends and timers
    /// (in the journal) are this node's to deliver now.
    Acquired(Vec<FenceToken>),
    /// This lease is held no more (released, run out, or lost): its
    /// shard's deliveries stop here; the next holder reads them again.
    Dropped(FenceToken),
    /// An append under `fence` that carried sends or timer changes failed
    /// with an unknown outcome (the store could not say whether it wrote
    /// it): they may be in the outbox without a `Committed`, so the shard's
    /// outbox is read again.
    Unsure(FenceToken),
    /// One entity's append under `fence` is durable: its sends and timer
    /// changes, in order.
    Committed {
        fence: FenceToken,
        key: EntityKey,
        sends: Vec<OutboxSend>,
        timers: Vec<TimerWrite>,
    },
}

/// Where the workers send [`OutboxEvent`]s.
pub type OutboxSender = flume::Sender<OutboxEvent>;
