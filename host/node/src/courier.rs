//! The courier: this node's delivery loop for the sends and timers of the
//! shards it serves (one loop per node, beside the workers, never on them).
//!
//! It learns from the workers ([`OutboxEvent`]) which leases they hold and
//! what each durable append sent or set. When a shard is acquired it reads
//! the shard's pending sends and timers from the journal (what an earlier
//! holder left: a restart, a failover), buffering the shard's new commits
//! until that read is in, then applies them on top in order. It hands each
//! send to the [`Dispatch`] (this node, or the cluster's router) under a
//! command id derived from its origin, retries with backoff until the
//! target accepts or refuses, delivers the sender's `on-accepted` or
//! `on-refused` command back to it the same way, and then acknowledges the
//! send in the journal under the shard's fence. A timer fires once the
//! node's wall clock reaches its time: its command goes to its own entity,
//! then the timer is acknowledged (removed unless set again since).
//!
//! Invariants:
//! - **Only after durability**: what it delivers is in the journal (read at
//!   acquire, or told by a worker after the append returned `Ok`).
//! - **At least once, one effect**: a delivery is repeated until answered,
//!   always under the same command id, which the target deduplicates (the
//!   journal's index holds it for the dedup horizon, on every node). An
//!   acknowledgement lost to a crash only repeats a delivery.
//! - **Only the holder delivers**: a shard's deliveries stop when its lease
//!   is dropped here; answers that come back for a lease no longer held are
//!   ignored, and acknowledgements are fenced by the journal.
//! - **Never early**: a timer fires when `clock.wall_ms() >= fire_at`, late
//!   by at most [`POLL`] (plus queueing) while the node is healthy.
//! - **Bounded work**: at most [`MAX_IN_FLIGHT`] deliveries at once; what
//!   waits is in memory per shard held (as the journal's outbox is).

mod deliver;
mod ids;
mod stats;

pub(crate) use stats::Counters;
pub use stats::MessagingStats;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};

use stead_engine::OutboxEvent;
use stead_journal::{
    Answer, AppendError, AsyncJournal, EntityKey, FenceToken, FiredTimer, JournalError, OutboxSend,
    PendingSend, PendingTimer, SendId, ShardId, TimerWrite,
};
use stead_types::Clock;
use stead_types::effects::{SendCommand, TimerChange};

use crate::dispatch::DispatchSlot;
use crate::{CommandReply, NodeError};

/// Most deliveries in flight at once.
pub(crate) const MAX_IN_FLIGHT: usize = 256;
/// Sends or timers read per journal call when a shard is acquired.
const PAGE: usize = 1024;
/// The longest the loop sleeps without looking at the wall clock (a timer
/// is late by at most this while the node is healthy).
pub(crate) const POLL: Duration = Duration::from_millis(50);
/// The pause before reading an acquired shard's outbox again after a
/// failed read.
const RELOAD_AFTER: Duration = Duration::from_secs(1);

/// A delivery the loop can start.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Job {
    Send(SendId),
    /// (entity, timer name).
    Timer(EntityKey, String),
}

impl Job {
    fn shard(&self) -> ShardId {
        match self {
            Job::Send(id) => id.source.shard,
            Job::Timer(key, _) => key.shard,
        }
    }
}

/// A shard served here, as the courier knows it.
struct ShardState {
    fence: FenceToken,
    /// While its outbox is being read: the commits told meanwhile, applied
    /// in order once the read is in.
    buffered: Option<Vec<Committed>>,
    /// Reads of its outbox started; only the latest one's answer counts.
    reads: u64,
}

/// One durable append's sends and timer changes.
struct Committed {
    key: EntityKey,
    sends: Vec<OutboxSend>,
    timers: Vec<TimerWrite>,
}

/// Where a send is in its delivery (see [`deliver`]).
#[derive(Debug, Clone)]
enum Phase {
    /// To its target.
    Target,
    /// The target's answer, being made durable before the sender hears it.
    Recording { command: Vec<u8>, answer: Answer },
    /// The sender's command for that answer, back to the sender.
    Back { command: Vec<u8>, answer: Answer },
}

struct SendState {
    send: SendCommand,
    phase: Phase,
    attempts: u32,
    in_flight: bool,
}

struct TimerState {
    seq_nr: u64,
    fire_at_ms: u64,
    command: Vec<u8>,
    attempts: u32,
    in_flight: bool,
}

/// What finished in the loop's futures.
enum Done {
    Loaded {
        fence: FenceToken,
        read: u64,
        result: Result<(Vec<PendingSend>, Vec<PendingTimer>), JournalError>,
    },
    Reload(FenceToken, u64),
    Delivered {
        job: Job,
        fence: FenceToken,
        /// The timer's seq-nr (for a timer), as it fired.
        seq_nr: u64,
        outcome: Result<CommandReply, NodeError>,
    },
    Recorded {
        ids: Vec<SendId>,
        fence: FenceToken,
        result: Result<(), AppendError>,
    },
    Acked {
        fence: FenceToken,
        result: Result<(), AppendError>,
    },
}

type DoneFuture = Pin<Box<dyn Future<Output = Done> + Send>>;

/// The loop's state (see the module docs).
pub(crate) struct Courier {
    journal: Arc<dyn AsyncJournal>,
    clock: Arc<dyn Clock>,
    dispatch: Arc<DispatchSlot>,
    counters: Arc<Counters>,
    shards: HashMap<ShardId, ShardState>,
    sends: BTreeMap<SendId, SendState>,
    timers: BTreeMap<(EntityKey, String), TimerState>,
    /// Timers by when they fire (wall ms).
    due: BTreeSet<(u64, EntityKey, String)>,
    ready: VecDeque<Job>,
    /// Deliveries waiting for their backoff (monotonic ms).
    retries: BTreeSet<(u64, Job)>,
    in_flight: FuturesUnordered<DoneFuture>,
    deliveries_in_flight: usize,
    /// Acknowledgements to write, per lease.
    acks: Vec<(FenceToken, Ack)>,
}

enum Ack {
    Send(SendId),
    Timer(FiredTimer),
}

impl Courier {
    pub(crate) fn new(
        journal: Arc<dyn AsyncJournal>,
        clock: Arc<dyn Clock>,
        dispatch: Arc<DispatchSlot>,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            journal,
            clock,
            dispatch,
            counters,
            shards: HashMap::new(),
            sends: BTreeMap::new(),
            timers: BTreeMap::new(),
            due: BTreeSet::new(),
            ready: VecDeque::new(),
            retries: BTreeSet::new(),
            in_flight: FuturesUnordered::new(),
            deliveries_in_flight: 0,
            acks: Vec::new(),
        }
    }

    /// Runs until `stop`'s sender is dropped (or the workers are gone).
    pub(crate) async fn run(
        mut self,
        events: flume::Receiver<OutboxEvent>,
        stop: flume::Receiver<()>,
    ) {
        loop {
            while let Ok(event) = events.try_recv() {
                self.on_event(event);
            }
            self.promote();
            self.start_deliveries();
            self.flush_acks();
            self.publish();
            let sleep = self.next_wake();
            tokio::select! {
                biased;
                _ = stop.recv_async() => return,
                event = events.recv_async() => match event {
                    Ok(event) => self.on_event(event),
                    Err(_) => return,
                },
                Some(done) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.on_done(done);
                    // Everything else already done too, so that the next
                    // round batches the answers and acks it gives.
                    while let Some(Some(done)) = self.in_flight.next().now_or_never() {
                        self.on_done(done);
                    }
                }
                () = tokio::time::sleep(sleep) => {}
            }
        }
    }

    fn on_event(&mut self, event: OutboxEvent) {
        match event {
            OutboxEvent::Acquired(tokens) => {
                for fence in tokens {
                    tracing::debug!(
                        shard = fence.shard,
                        epoch = fence.epoch,
                        "lease acquired: reading its outbox"
                    );
                    self.drop_shard(fence.shard);
                    self.shards.insert(
                        fence.shard,
                        ShardState {
                            fence,
                            buffered: Some(Vec::new()),
                            reads: 0,
                        },
                    );
                    self.reread(fence);
                }
            }
            OutboxEvent::Unsure(fence) => {
                // An append whose outcome is unknown may have written
                // sends and timers no one told: read the outbox again.
                if self.current(fence) {
                    tracing::debug!(
                        shard = fence.shard,
                        epoch = fence.epoch,
                        "an append's outcome is unknown: reading the outbox again"
                    );
                    self.reread(fence);
                }
            }
            OutboxEvent::Dropped(fence) => {
                tracing::debug!(shard = fence.shard, epoch = fence.epoch, "lease dropped");
                if self
                    .shards
                    .get(&fence.shard)
                    .is_some_and(|s| s.fence == fence)
                {
                    self.drop_shard(fence.shard);
                }
            }
            OutboxEvent::Committed {
                fence,
                key,
                sends,
                timers,
            } => {
                let commit = Committed { key, sends, timers };
                match self.shards.get_mut(&fence.shard) {
                    Some(state) if state.fence == fence => match &mut state.buffered {
                        Some(buffered) => buffered.push(commit),
                        None => self.apply(fence, commit),
                    },
                    // Not served here under that lease (it moved on since):
                    // the journal keeps them for the holder.
                    _ => tracing::debug!(
                        shard = fence.shard,
                        epoch = fence.epoch,
                        entity = %commit.key,
                        "sends and timers of a lease not served here: left to the holder"
                    ),
                }
            }
        }
    }

    /// Starts a new read of the shard's outbox; the shard's new commits
    /// wait for it (and for no earlier one).
    fn reread(&mut self, fence: FenceToken) {
        let Some(state) = self.shards.get_mut(&fence.shard) else {
            return;
        };
        state.reads += 1;
        state.buffered.get_or_insert_with(Vec::new);
        let read = state.reads;
        self.load(fence, read, Duration::ZERO);
    }

    /// Reads the shard's pending sends and timers (after `delay`).
    fn load(&mut self, fence: FenceToken, read: u64, delay: Duration) {
        let journal = self.journal.clone();
        self.in_flight.push(Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
                return Done::Reload(fence, read);
            }
            let result = read_pending(journal.as_ref(), fence.shard).await;
            Done::Loaded {
                fence,
                read,
                result,
            }
        }));
    }

    /// Whether `read` is the shard's latest read under `fence`.
    fn latest_read(&self, fence: FenceToken, read: u64) -> bool {
        self.shards
            .get(&fence.shard)
            .is_some_and(|s| s.fence == fence && s.reads == read)
    }

    /// Forgets everything of `shard` (its lease is gone or replaced).
    fn drop_shard(&mut self, shard: ShardId) {
        if self.shards.remove(&shard).is_none() {
            return;
        }
        self.sends.retain(|id, _| id.source.shard != shard);
        self.timers.retain(|(key, _), _| key.shard != shard);
        self.due.retain(|(_, key, _)| key.shard != shard);
        self.ready.retain(|job| job.shard() != shard);
        self.retries.retain(|(_, job)| job.shard() != shard);
        self.acks.retain(|(fence, _)| fence.shard != shard);
    }

    fn current(&self, fence: FenceToken) -> bool {
        self.shards
            .get(&fence.shard)
            .is_some_and(|s| s.fence == fence)
    }

    /// A send to deliver: from its target, or (its answer recorded) from
    /// the sender's command for that answer.
    fn add_send(
        &mut self,
        fence: FenceToken,
        id: SendId,
        send: SendCommand,
        answer: Option<Answer>,
    ) {
        if self.sends.contains_key(&id) {
            return;
        }
        let phase = match answer {
            None => Phase::Target,
            Some(answer) => {
                let command = match answer {
                    Answer::Accepted => send.on_accepted.clone(),
                    Answer::Refused => send.on_refused.clone(),
                };
                match command {
                    Some(command) => Phase::Back { command, answer },
                    // Nothing to hear back (never recorded so): done.
                    None => {
                        self.acks.push((fence, Ack::Send(id)));
                        return;
                    }
                }
            }
        };
        self.sends.insert(
            id.clone(),
            SendState {
                send,
                phase,
                attempts: 0,
                in_flight: false,
            },
        );
        self.ready.push_back(Job::Send(id));
    }

    fn set_timer(
        &mut self,
        key: EntityKey,
        seq_nr: u64,
        name: String,
        fire_at_ms: u64,
        command: Vec<u8>,
    ) {
        self.cancel_timer(&key, &name);
        self.due.insert((fire_at_ms, key.clone(), name.clone()));
        self.timers.insert(
            (key, name),
            TimerState {
                seq_nr,
                fire_at_ms,
                command,
                attempts: 0,
                in_flight: false,
            },
        );
    }

    fn cancel_timer(&mut self, key: &EntityKey, name: &str) {
        let slot = (key.clone(), name.to_owned());
        if let Some(old) = self.timers.remove(&slot) {
            self.due.remove(&(old.fire_at_ms, slot.0, slot.1));
        }
    }

    /// Applies one durable append's sends and timer changes.
    fn apply(&mut self, fence: FenceToken, commit: Committed) {
        let Committed { key, sends, timers } = commit;
        for send in sends {
            let id = SendId {
                source: key.clone(),
                seq_nr: send.seq_nr,
                index: send.index,
            };
            self.add_send(fence, id, send.send, None);
        }
        for write in timers {
            match write.change {
                TimerChange::Set(timer) => self.set_timer(
                    key.clone(),
                    write.seq_nr,
                    timer.name,
                    timer.fire_at_ms,
                    timer.command,
                ),
                TimerChange::Cancel(name) => self.cancel_timer(&key, &name),
            }
        }
    }

    /// Moves what is due to the ready queue: timers whose time has come on
    /// the wall clock, retries whose backoff is over.
    fn promote(&mut self) {
        let wall = self.clock.wall_ms();
        while let Some((fire_at, _, _)) = self.due.first() {
            if *fire_at > wall {
                break;
            }
            if let Some((_, key, name)) = self.due.pop_first() {
                self.ready.push_back(Job::Timer(key, name));
            }
        }
        let mono = self.clock.mono_ms();
        while let Some((at, _)) = self.retries.first() {
            if *at > mono {
                break;
            }
            if let Some((_, job)) = self.retries.pop_first() {
                self.ready.push_back(job);
            }
        }
    }

    /// The shard's pending sends and timers are in: they go first, then the
    /// commits told meanwhile, in order.
    fn loaded(
        &mut self,
        fence: FenceToken,
        read: u64,
        result: Result<(Vec<PendingSend>, Vec<PendingTimer>), JournalError>,
    ) {
        if !self.latest_read(fence, read) {
            return;
        }
        match result {
            Ok((sends, timers)) => {
                if !sends.is_empty() || !timers.is_empty() {
                    tracing::info!(
                        shard = fence.shard,
                        sends = sends.len(),
                        timers = timers.len(),
                        "resuming the shard's pending sends and timers"
                    );
                }
                for pending in sends {
                    self.add_send(fence, pending.id, pending.send, pending.answer);
                }
                for t in timers {
                    self.set_timer(
                        t.key,
                        t.seq_nr,
                        t.timer.name,
                        t.timer.fire_at_ms,
                        t.timer.command,
                    );
                }
                let buffered = self
                    .shards
                    .get_mut(&fence.shard)
                    .and_then(|s| s.buffered.take())
                    .unwrap_or_default();
                for commit in buffered {
                    self.apply(fence, commit);
                }
            }
            Err(e) => {
                tracing::warn!(shard = fence.shard, error = %e, "reading the shard's outbox failed; retried in a second");
                self.load(fence, read, RELOAD_AFTER);
            }
        }
    }

    /// Writes the acknowledgements gathered, one journal call per lease.
    fn flush_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let mut by_fence: Vec<(FenceToken, Vec<SendId>, Vec<FiredTimer>)> = Vec::new();
        for (fence, ack) in self.acks.drain(..) {
            let slot = match by_fence.iter().position(|(f, ..)| *f == fence) {
                Some(i) => i,
                None => {
                    by_fence.push((fence, Vec::new(), Vec::new()));
                    by_fence.len() - 1
                }
            };
            match ack {
                Ack::Send(id) => by_fence[slot].1.push(id),
                Ack::Timer(fired) => by_fence[slot].2.push(fired),
            }
        }
        for (fence, sends, fired) in by_fence {
            let journal = self.journal.clone();
            self.in_flight.push(Box::pin(async move {
                let mut result = Ok(());
                if !sends.is_empty() {
                    result = journal.ack_sends(fence, &sends).await;
                }
                if result.is_ok() && !fired.is_empty() {
                    result = journal.ack_timers(fence, &fired).await;
                }
                Done::Acked { fence, result }
            }));
        }
    }

    fn publish(&self) {
        let c = &self.counters;
        c.pending_sends
            .store(self.sends.len() as u64, Ordering::Relaxed);
        c.pending_timers
            .store(self.timers.len() as u64, Ordering::Relaxed);
    }

    /// How long the loop may sleep: until the next timer or retry is due,
    /// at most [`POLL`].
    fn next_wake(&self) -> Duration {
        let mut wake = POLL;
        if let Some((fire_at, _, _)) = self.due.first() {
            let wall = self.clock.wall_ms();
            wake = wake.min(Duration::from_millis(fire_at.saturating_sub(wall)));
        }
        if let Some((at, _)) = self.retries.first() {
            let mono = self.clock.mono_ms();
            wake = wake.min(Duration::from_millis(at.saturating_sub(mono)));
        }
        wake
    }
}

/// Every pending send and timer of `shard`, a page at a time.
async fn read_pending(
    journal: &dyn AsyncJournal,
    shard: ShardId,
) -> Result<(Vec<PendingSend>, Vec<PendingTimer>), JournalError> {
    let mut sends: Vec<PendingSend> = Vec::new();
    loop {
        let after = sends.last().map(|s| s.id.clone());
        let page = journal.read_outbox(shard, after.as_ref(), PAGE).await?;
        let full = page.len() == PAGE;
        sends.extend(page);
        if !full {
            break;
        }
    }
    let mut timers: Vec<PendingTimer> = Vec::new();
    loop {
        let after = timers.last().map(|t| (t.key.clone(), t.timer.name.clone()));
        let page = journal
            .read_timers(shard, after.as_ref().map(|(k, n)| (k, n.as_str())), PAGE)
            .await?;
        let full = page.len() == PAGE;
        timers.extend(page);
        if !full {
            break;
        }
    }
    Ok((sends, timers))
}
