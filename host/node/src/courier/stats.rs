//! The courier's counters ([`MessagingStats`]): what it delivered, what was
//! refused, what it retried, and what is pending on the shards served here.
//!
//! Invariant: counters only grow (since the node started); the gauges are
//! published by the loop after each round, so when they read zero every
//! counter is up to date.

use std::sync::atomic::{AtomicU64, Ordering};

/// The courier's counters (since the node started) and gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessagingStats {
    /// Sends their target accepted.
    pub sends_accepted: u64,
    /// Sends their target refused (a final answer).
    pub sends_refused: u64,
    /// `on-accepted` / `on-refused` commands delivered to their sender.
    pub replies_delivered: u64,
    /// Of those, the ones the sender itself refused.
    pub replies_refused: u64,
    /// Timers fired (their command answered, accepted or refused).
    pub timers_fired: u64,
    /// Of those, the ones whose entity refused the command.
    pub timers_refused: u64,
    /// Deliveries tried again after no answer.
    pub retries: u64,
    /// Sends not yet acknowledged, on the shards served here.
    pub pending_sends: u64,
    /// Timers set, on the shards served here.
    pub pending_timers: u64,
}

/// [`MessagingStats`], shared between the loop and the node.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) sends_accepted: AtomicU64,
    pub(crate) sends_refused: AtomicU64,
    pub(crate) replies_delivered: AtomicU64,
    pub(crate) replies_refused: AtomicU64,
    pub(crate) timers_fired: AtomicU64,
    pub(crate) timers_refused: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) pending_sends: AtomicU64,
    pub(crate) pending_timers: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> MessagingStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MessagingStats {
            sends_accepted: get(&self.sends_accepted),
            sends_refused: get(&self.sends_refused),
            replies_delivered: get(&self.replies_delivered),
            replies_refused: get(&self.replies_refused),
            timers_fired: get(&self.timers_fired),
            timers_refused: get(&self.timers_refused),
            retries: get(&self.retries),
            pending_sends: get(&self.pending_sends),
            pending_timers: get(&self.pending_timers),
        }
    }
}
