//! The sweeper loop: forgets the journal's index entries of caller-given
//! command ids older than the dedup horizon, in every shard this node holds.
//!
//! It runs beside the workers, never on them: on a shared journal an expiry
//! is a transaction per shard, and a worker that did them would stall its
//! commands for every shard it holds (the p99 of a PostgreSQL run showed
//! it every 30 s). The journal checks each shard's fence, so a shard that
//! moved meanwhile is refused, not swept.
//!
//! Invariant: at most [`EXPIRED_PER_SWEEP`] entries per sweep, so a backlog
//! is worked off over several sweeps and never floods the journal.

use std::sync::Arc;
use std::time::Duration;

use stead_journal::{AsyncJournal, FenceToken};
use stead_types::Clock;

use crate::leases::LeaseBoard;

/// Most command-id index entries one sweep expires.
pub(crate) const EXPIRED_PER_SWEEP: usize = 10_000;

/// What the sweeper works with.
pub(crate) struct Sweeper {
    pub(crate) journal: Arc<dyn AsyncJournal>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) board: Arc<LeaseBoard>,
    pub(crate) horizon: Duration,
    pub(crate) every: Duration,
}

/// Sweeps every `every` until `stop`'s sender is dropped.
pub(crate) async fn run_sweeper(sweeper: Sweeper, stop: flume::Receiver<()>) {
    while crate::leases::idle(&stop, sweeper.every).await {
        sweeper.sweep().await;
    }
}

impl Sweeper {
    async fn sweep(&self) {
        let horizon = u64::try_from(self.horizon.as_millis()).unwrap_or(u64::MAX);
        let Some(before_ms) = self.clock.wall_ms().checked_sub(horizon) else {
            return;
        };
        let mut budget = EXPIRED_PER_SWEEP;
        let tokens: Vec<FenceToken> = self.board.tokens();
        for fence in tokens {
            if budget == 0 {
                break;
            }
            match self
                .journal
                .expire_command_ids(fence, before_ms, budget)
                .await
            {
                Ok(expired) => budget -= expired.min(budget),
                Err(e) => {
                    tracing::debug!(shard = fence.shard, error = %e, "expiring command ids failed; retried at the next sweep");
                }
            }
        }
        let expired = EXPIRED_PER_SWEEP - budget;
        if expired > 0 {
            tracing::debug!(expired, "expired command ids past the dedup horizon");
        }
    }
}
