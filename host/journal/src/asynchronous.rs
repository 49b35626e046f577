//! [`AsyncJournal`]: the journal as the engine talks to it, through
//! futures.
//!
//! The backends implement the blocking [`Journal`] (and its conformance
//! suite); the engine's loops await an [`AsyncJournal`]. [`Inline`] turns
//! any blocking journal into one: each call runs at once, on the calling
//! loop's own thread (what a shard worker always did), and its future is
//! ready. A journal reached over a network it does not own (the simulator's
//! database, on its own simulated host) implements this trait directly, so
//! a loop waiting for it lets the others run.
//!
//! Invariant: both faces mean the same contract (see the crate docs);
//! awaiting a call is the only difference.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::{
    Answer, AppendError, CommandIdRecord, CommitObserver, EntityAppend, EntityKey, FenceToken,
    FiredTimer, Journal, JournalError, PendingSend, PendingTimer, SendId, ShardId, SnapshotRecord,
    StoredEvent, StreamEvent,
};

/// A boxed future borrowing the journal and the call's arguments.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The [`Journal`] contract, awaited (see [`Journal`] for each method).
pub trait AsyncJournal: Send + Sync + 'static {
    fn set_commit_observer(&self, observer: Arc<dyn CommitObserver>);

    fn lease_ttl(&self) -> Option<Duration>;

    fn claim_shards<'a>(
        &'a self,
        shards: &'a [ShardId],
    ) -> BoxFuture<'a, Result<Vec<FenceToken>, JournalError>>;

    fn renew_shards<'a>(
        &'a self,
        tokens: &'a [FenceToken],
    ) -> BoxFuture<'a, Result<Vec<FenceToken>, JournalError>>;

    fn release_shards<'a>(
        &'a self,
        tokens: &'a [FenceToken],
    ) -> BoxFuture<'a, Result<(), JournalError>>;

    fn append(&self, appends: Vec<EntityAppend>) -> BoxFuture<'_, Vec<Result<(), AppendError>>>;

    fn last_seq_nr<'a>(&'a self, key: &'a EntityKey) -> BoxFuture<'a, Result<u64, JournalError>>;

    fn read_events<'a>(
        &'a self,
        key: &'a EntityKey,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, JournalError>>;

    fn read_stream<'a>(
        &'a self,
        entity_type: &'a str,
        from: &'a [(ShardId, u64)],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StreamEvent>, JournalError>>;

    fn save_snapshot<'a>(
        &'a self,
        key: &'a EntityKey,
        snapshot: &'a SnapshotRecord,
    ) -> BoxFuture<'a, Result<(), JournalError>>;

    fn load_snapshot<'a>(
        &'a self,
        key: &'a EntityKey,
    ) -> BoxFuture<'a, Result<Option<SnapshotRecord>, JournalError>>;

    fn find_command_ids<'a>(
        &'a self,
        lookups: &'a [(EntityKey, String)],
    ) -> BoxFuture<'a, Result<Vec<Option<CommandIdRecord>>, JournalError>>;

    fn expire_command_ids(
        &self,
        fence: FenceToken,
        before_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<usize, AppendError>>;

    fn read_outbox<'a>(
        &'a self,
        shard: ShardId,
        after: Option<&'a SendId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingSend>, JournalError>>;

    fn ack_sends<'a>(
        &'a self,
        fence: FenceToken,
        ids: &'a [SendId],
    ) -> BoxFuture<'a, Result<(), AppendError>>;

    fn answer_sends<'a>(
        &'a self,
        fence: FenceToken,
        answers: &'a [(SendId, Answer)],
    ) -> BoxFuture<'a, Result<(), AppendError>>;

    fn read_timers<'a>(
        &'a self,
        shard: ShardId,
        after: Option<(&'a EntityKey, &'a str)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingTimer>, JournalError>>;

    fn ack_timers<'a>(
        &'a self,
        fence: FenceToken,
        fired: &'a [FiredTimer],
    ) -> BoxFuture<'a, Result<(), AppendError>>;
}

/// A blocking [`Journal`] as an [`AsyncJournal`]: every call runs when it
/// is made, on the caller's thread; the future it returns is ready.
pub struct Inline(pub Arc<dyn Journal>);

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl AsyncJournal for Inline {
    fn set_commit_observer(&self, observer: Arc<dyn CommitObserver>) {
        self.0.set_commit_observer(observer);
    }

    fn lease_ttl(&self) -> Option<Duration> {
        self.0.lease_ttl()
    }

    fn claim_shards<'a>(
        &'a self,
        shards: &'a [ShardId],
    ) -> BoxFuture<'a, Result<Vec<FenceToken>, JournalError>> {
        ready(self.0.claim_shards(shards))
    }

    fn renew_shards<'a>(
        &'a self,
        tokens: &'a [FenceToken],
    ) -> BoxFuture<'a, Result<Vec<FenceToken>, JournalError>> {
        ready(self.0.renew_shards(tokens))
    }

    fn release_shards<'a>(
        &'a self,
        tokens: &'a [FenceToken],
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        ready(self.0.release_shards(tokens))
    }

    fn append(&self, appends: Vec<EntityAppend>) -> BoxFuture<'_, Vec<Result<(), AppendError>>> {
        ready(self.0.append(appends))
    }

    fn last_seq_nr<'a>(&'a self, key: &'a EntityKey) -> BoxFuture<'a, Result<u64, JournalError>> {
        ready(self.0.last_seq_nr(key))
    }

    fn read_events<'a>(
        &'a self,
        key: &'a EntityKey,
        from: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StoredEvent>, JournalError>> {
        ready(self.0.read_events(key, from, limit))
    }

    fn read_stream<'a>(
        &'a self,
        entity_type: &'a str,
        from: &'a [(ShardId, u64)],
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<StreamEvent>, JournalError>> {
        ready(self.0.read_stream(entity_type, from, limit))
    }

    fn save_snapshot<'a>(
        &'a self,
        key: &'a EntityKey,
        snapshot: &'a SnapshotRecord,
    ) -> BoxFuture<'a, Result<(), JournalError>> {
        ready(self.0.save_snapshot(key, snapshot))
    }

    fn load_snapshot<'a>(
        &'a self,
        key: &'a EntityKey,
    ) -> BoxFuture<'a, Result<Option<SnapshotRecord>, JournalError>> {
        ready(self.0.load_snapshot(key))
    }

    fn find_command_ids<'a>(
        &'a self,
        lookups: &'a [(EntityKey, String)],
    ) -> BoxFuture<'a, Result<Vec<Option<CommandIdRecord>>, JournalError>> {
        ready(self.0.find_command_ids(lookups))
    }

    fn expire_command_ids(
        &self,
        fence: FenceToken,
        before_ms: u64,
        limit: usize,
    ) -> BoxFuture<'_, Result<usize, AppendError>> {
        ready(self.0.expire_command_ids(fence, before_ms, limit))
    }

    fn read_outbox<'a>(
        &'a self,
        shard: ShardId,
        after: Option<&'a SendId>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingSend>, JournalError>> {
        ready(self.0.read_outbox(shard, after, limit))
    }

    fn ack_sends<'a>(
        &'a self,
        fence: FenceToken,
        ids: &'a [SendId],
    ) -> BoxFuture<'a, Result<(), AppendError>> {
        ready(self.0.ack_sends(fence, ids))
    }

    fn answer_sends<'a>(
        &'a self,
        fence: FenceToken,
        answers: &'a [(SendId, Answer)],
    ) -> BoxFuture<'a, Result<(), AppendError>> {
        ready(self.0.answer_sends(fence, answers))
    }

    fn read_timers<'a>(
        &'a self,
        shard: ShardId,
        after: Option<(&'a EntityKey, &'a str)>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<PendingTimer>, JournalError>> {
        ready(self.0.read_timers(shard, after, limit))
    }

    fn ack_timers<'a>(
        &'a self,
        fence: FenceToken,
        fired: &'a [FiredTimer],
    ) -> BoxFuture<'a, Result<(), AppendError>> {
        ready(self.0.ack_timers(fence, fired))
    }
}
