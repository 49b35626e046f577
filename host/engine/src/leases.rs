//! Shard leases held by this node: how long each may still be served, and
//! the keeper loop that renews them and claims the shards wanted.
//!
//! A lease is served only while it is **valid**: until `sent + ttl -
//! margin` on the monotonic clock, where `sent` is when the claim or the
//! last successful renewal was *sent* (the database starts its ttl later,
//! so the holder always stops first). The margin ([`margin`]) covers clock
//! rate drift and a late scheduler. Workers check validity before running a
//! request and again before answering a read, so no read is answered from
//! memory after another node could have claimed the shard; a write needs no
//! such check, since its append is fenced by the journal itself.
//!
//! The keeper ([`run_keeper`]), started only for journals whose leases
//! expire, every renewal interval:
//! 1. renews every held lease in one journal call; a lease the journal says
//!    is lost, or one whose validity ran out (the journal unreachable for
//!    too long), is dropped: its worker forgets the shard's entities;
//! 2. claims the shards wanted but not held (through their workers, as
//!    [`crate::Shards::acquire`] does): shards another node held come back
//!    once that node's lease expired, and a node cut off from the journal
//!    takes its shards back when it is reachable again.
//!
//! Embedded journals (leases that never expire) have no keeper: a lease is
//! valid until released.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use stead_journal::{AsyncJournal, FenceToken, ShardId};
use stead_types::Clock;

use crate::request::Request;

/// A lease held by a worker, shared with the keeper.
#[derive(Debug, Clone)]
pub(crate) struct HeldLease {
    pub(crate) token: FenceToken,
    /// Monotonic ms until which the shard may be served; `u64::MAX` for a
    /// lease that never expires, 0 once lost.
    pub(crate) valid_until: Arc<AtomicU64>,
}

impl HeldLease {
    pub(crate) fn new(token: FenceToken, valid_until: u64) -> Self {
        Self {
            token,
            valid_until: Arc::new(AtomicU64::new(valid_until)),
        }
    }

    pub(crate) fn is_valid(&self, now_ms: u64) -> bool {
        now_ms < self.valid_until.load(Ordering::Acquire)
    }
}

/// The safety margin a holder stops serving before its lease's ttl ends.
pub(crate) fn margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(50)).min(ttl / 2)
}

/// Until when a lease claimed or renewed by a request sent at `sent_ms`
/// may be served.
pub(crate) fn valid_until(sent_ms: u64, ttl: Option<Duration>) -> u64 {
    match ttl {
        None => u64::MAX,
        Some(ttl) => {
            let usable = ttl.saturating_sub(margin(ttl));
            sent_ms.saturating_add(u64::try_from(usable.as_millis()).unwrap_or(u64::MAX))
        }
    }
}

/// The leases held by every worker and the shards the node wants.
#[derive(Debug, Default)]
pub(crate) struct LeaseBoard {
    held: Mutex<HashMap<ShardId, HeldLease>>,
    wanted: Mutex<BTreeSet<ShardId>>,
}

impl LeaseBoard {
    fn held(&self) -> MutexGuard<'_, HashMap<ShardId, HeldLease>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wanted(&self) -> MutexGuard<'_, BTreeSet<ShardId>> {
        self.wanted.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn insert(&self, lease: HeldLease) {
        self.held().insert(lease.token.shard, lease);
    }

    /// Forgets the lease of `token` (if it is still the one held).
    pub(crate) fn remove(&self, token: FenceToken) {
        let mut held = self.held();
        if held.get(&token.shard).is_some_and(|l| l.token == token) {
            held.remove(&token.shard);
        }
    }

    pub(crate) fn want(&self, shards: &[ShardId]) {
        self.wanted().extend(shards.iter().copied());
    }

    pub(crate) fn unwant(&self, shards: &[ShardId]) {
        let mut wanted = self.wanted();
        for shard in shards {
            wanted.remove(shard);
        }
    }

    /// (shards wanted, shards held with a valid lease) at `now_ms`.
    pub(crate) fn status(&self, now_ms: u64) -> (usize, usize) {
        let wanted = self.wanted().len();
        let valid = self.held().values().filter(|l| l.is_valid(now_ms)).count();
        (wanted, valid)
    }

    /// The tokens of every lease held.
    pub(crate) fn tokens(&self) -> Vec<FenceToken> {
        self.held().values().map(|l| l.token).collect()
    }

    /// The tokens of the leases valid now, in shard order.
    pub(crate) fn valid_tokens(&self, now_ms: u64) -> Vec<FenceToken> {
        let mut tokens: Vec<FenceToken> = self
            .held()
            .values()
            .filter(|l| l.is_valid(now_ms))
            .map(|l| l.token)
            .collect();
        tokens.sort_unstable_by_key(|t| t.shard);
        tokens
    }

    /// Whether `shard`'s lease is held and valid now.
    pub(crate) fn serves(&self, shard: ShardId, now_ms: u64) -> bool {
        self.held().get(&shard).is_some_and(|l| l.is_valid(now_ms))
    }

    /// The shards wanted, in order.
    pub(crate) fn wanted_shards(&self) -> Vec<ShardId> {
        self.wanted().iter().copied().collect()
    }

    fn snapshot(&self) -> Vec<HeldLease> {
        self.held().values().cloned().collect()
    }

    /// Wanted shards without a valid lease.
    fn missing(&self, now_ms: u64) -> Vec<ShardId> {
        let held = self.held();
        self.wanted()
            .iter()
            .filter(|s| !held.get(s).is_some_and(|l| l.is_valid(now_ms)))
            .copied()
            .collect()
    }
}

/// What the keeper thread works with.
pub(crate) struct Keeper {
    pub(crate) journal: Arc<dyn AsyncJournal>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) board: Arc<LeaseBoard>,
    pub(crate) senders: Vec<flume::Sender<Request>>,
    pub(crate) ttl: Duration,
    pub(crate) interval: Duration,
}

/// Renews and claims until `stop`'s sender is dropped (see the module docs).
pub(crate) async fn run_keeper(keeper: Keeper, stop: flume::Receiver<()>) {
    let mut renew_failing = false;
    while idle(&stop, keeper.interval).await {
        renew_failing = keeper.renew(renew_failing).await;
        keeper.claim_missing().await;
    }
}

/// Waits `period`; `false` once `stop` says to stop (a message, or its
/// sender dropped).
pub(crate) async fn idle(stop: &flume::Receiver<()>, period: Duration) -> bool {
    tokio::time::timeout(period, stop.recv_async())
        .await
        .is_err()
}

impl Keeper {
    /// Renews every held lease; returns whether renewing failed (logged
    /// once per outage, not every interval).
    async fn renew(&self, was_failing: bool) -> bool {
        let held = self.board.snapshot();
        if held.is_empty() {
            return false;
        }
        let tokens: Vec<FenceToken> = held.iter().map(|l| l.token).collect();
        let sent = self.clock.mono_ms();
        let failing = match self.journal.renew_shards(&tokens).await {
            Ok(renewed) => {
                let until = valid_until(sent, Some(self.ttl));
                for lease in &held {
                    if renewed.contains(&lease.token) {
                        lease.valid_until.fetch_max(until, Ordering::AcqRel);
                    } else {
                        tracing::warn!(
                            shard = lease.token.shard,
                            epoch = lease.token.epoch,
                            "lease lost to another node; shard dropped"
                        );
                        lease.valid_until.store(0, Ordering::Release);
                    }
                }
                if was_failing {
                    tracing::info!(leases = renewed.len(), "lease renewal works again");
                }
                false
            }
            Err(e) => {
                if !was_failing {
                    tracing::warn!(error = %e, "renewing shard leases failed; shards stop being served when their leases run out");
                }
                true
            }
        };
        // Leases lost or run out: their workers forget the shards now,
        // rather than at their next request.
        let now = self.clock.mono_ms();
        let lapsed: Vec<&HeldLease> = held.iter().filter(|l| !l.is_valid(now)).collect();
        if !lapsed.is_empty() && failing {
            tracing::warn!(
                count = lapsed.len(),
                "shard leases ran out before they could be renewed; those shards are no longer served here"
            );
        }
        for lease in lapsed {
            let worker = stead_types::shard::worker_of(lease.token.shard, self.senders.len());
            let _ = self.senders[worker].try_send(Request::Lapse(lease.token));
        }
        failing
    }

    /// Claims the wanted shards held by nobody valid, through their workers.
    async fn claim_missing(&self) {
        let missing = self.board.missing(self.clock.mono_ms());
        if missing.is_empty() {
            return;
        }
        match crate::lease_requests(&self.senders, &missing, |shards, reply| {
            Request::Acquire(crate::request::LeaseRequest { shards, reply })
        })
        .await
        {
            Ok(tokens) if !tokens.is_empty() => {
                tracing::info!(
                    claimed = tokens.len(),
                    wanted = missing.len(),
                    "claimed shards"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "claiming shards failed; retried next interval"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_served_for_less_than_its_ttl_from_when_the_request_was_sent() {
        let ttl = Duration::from_secs(2);
        let until = valid_until(10_000, Some(ttl));
        assert!(until < 12_000, "{until}");
        assert!(
            until >= 11_500,
            "the margin is a fraction of the ttl: {until}"
        );
        assert_eq!(valid_until(10_000, None), u64::MAX);
        let tiny = valid_until(0, Some(Duration::from_millis(60)));
        assert!(tiny > 0 && tiny < 60, "{tiny}");
    }

    #[test]
    fn missing_shards_are_the_wanted_ones_without_a_valid_lease() {
        let board = LeaseBoard::default();
        board.want(&[1, 2, 3]);
        board.insert(HeldLease::new(FenceToken { shard: 1, epoch: 1 }, 100));
        board.insert(HeldLease::new(FenceToken { shard: 2, epoch: 1 }, 10));
        assert_eq!(board.missing(50), vec![2, 3]);
        assert_eq!(board.status(50), (3, 1));
        board.remove(FenceToken { shard: 1, epoch: 2 });
        assert_eq!(
            board.missing(50),
            vec![2, 3],
            "another epoch is not removed"
        );
        board.remove(FenceToken { shard: 1, epoch: 1 });
        assert_eq!(board.missing(50), vec![1, 2, 3]);
    }
}
