//! The embedded journal backend on sled 0.34, with group commit.
//!
//! One sled tree holds every key of [`keys`]; a second holds shard
//! leases (epochs). An append's writes for all its entities go into one sled
//! `Batch`, which sled applies atomically (a crash shows all of it or none).
//!
//! **Apply, then share a flush.** An append checks fences and expected
//! sequence numbers and applies its writes to sled (in memory) under the
//! locks of its shards' stripes, so appends of different shards apply in
//! parallel on all cores. It then waits for a flush that started after its
//! apply (leader/follower group commit): if none is running it becomes the
//! leader and flushes everything applied so far; appends applied meanwhile
//! wait for the next flush. So the CPU work of a commit is parallel and only
//! the disk's flush is serial, shared by every append that waits for it.
//!
//! **Durable means durable.** sled's `flush()` on Linux ends in
//! `sync_file_range`, which flushes neither the device's write cache nor file
//! metadata, and sled writes large values to `blobs/` files without syncing
//! them. After `flush()` this backend therefore calls `fdatasync` on sled's
//! `db` file and `fsync` on every blob file created since the last commit
//! (and on the `blobs/` directory itself). A durable commit costs: sled's
//! `pwrite`s and `sync_file_range`, one `fdatasync(db)`, one `getdents` of
//! `blobs/` (usually empty) — shared by every append of the group.
//!
//! **A failed write poisons sled** (it keeps the first I/O error, ENOSPC
//! included, and refuses every later write, while reads go on working). The
//! journal then fails appends fast with that error and, at most once per
//! [`REOPEN_INTERVAL`] and only when the disk has [`REOPEN_MIN_FREE_BYTES`]
//! free, reopens the store: sled recovers what was durable, and appends
//! resume. A write that failed may or may not be in the reopened store (its
//! caller was told it failed and retries with its command id); an entity
//! whose memory disagrees with the reopened store gets a `Conflict` on its
//! next append and is recovered again.
//!
//! Invariants: an entity's last sequence number is read and written after
//! under its shard's stripe lock, so two appends to it cannot interleave; an
//! append is reported durable only by a flush that started after its apply,
//! succeeded, and wrote to the same opened store (a reopen in between fails
//! it: the write may be lost).
//!
//! tidy: long file: apply, group flush and reopen-after-failure share one
//! store handle and its locks; split, each piece would need the others'
//! internals. About a fifth of it is its tests.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

pub mod keys;
mod stream;

pub use stead_types::config::SledOptions;

use stead_journal::record::{self, CommandIdRecord, EventRecord, PageBuf, SnapshotRecord};
use stead_journal::{
    Answer, AppendError, CommitObserver, EntityAppend, EntityKey, FenceToken, FiredTimer, Journal,
    JournalError, PendingSend, PendingTimer, SendId, ShardId, StoredEvent, StreamEvent,
};
use stead_types::effects::{Timer, TimerChange};

/// How long an open waits for the lock of a store this process just closed.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// After a failed write, how often reopening the store is tried.
pub const REOPEN_INTERVAL: Duration = Duration::from_secs(1);
/// Free space the journal's file system needs before a reopen is tried
/// (sled writes a new log segment and its config when it opens).
pub const REOPEN_MIN_FREE_BYTES: u64 = 4 * 1024 * 1024;

/// The sled journal. Cheap to share behind an `Arc`.
pub struct SledJournal {
    dir: PathBuf,
    /// `None` only between a failed reopen and the next successful one.
    store: RwLock<Option<Store>>,
    /// Set when sled reported a write failure: the store must be reopened.
    failed: Mutex<Option<Failure>>,
    blobs_dir: PathBuf,
    options: SledOptions,
    /// Current lease epoch of each shard claimed by this process.
    epochs: Mutex<HashMap<ShardId, u64>>,
    /// Held while an append checks and applies its entities (see the module docs).
    stripes: Vec<Mutex<()>>,
    /// Openings of the store so far.
    generations: AtomicU64,
    /// Makes each append's expiry keys unique (seeded with the time of the
    /// opening, so a later opening never reuses one).
    expiry_unique: AtomicU64,
    flush: Mutex<FlushState>,
    flushed: Condvar,
    observer: OnceLock<Arc<dyn CommitObserver>>,
    /// The shards' stream positions (lock order: stripes, then this).
    streams: Mutex<stream::Streams>,
}

/// An open sled store.
struct Store {
    /// Which opening of the store this is (a reopen gets a new one).
    generation: u64,
    db: sled::Db,
    journal: sled::Tree,
    leases: sled::Tree,
    db_file: File,
}

impl Store {
    fn open(dir: &Path, options: &SledOptions, generation: u64) -> Result<Self, JournalError> {
        // sled's I/O threads may still hold a just-dropped store's files for
        // a moment (its file lock included): a reopen waits for them.
        let give_up = Instant::now() + LOCK_WAIT;
        let db = loop {
            match sled::Config::new()
                .path(dir)
                .cache_capacity(options.cache_capacity)
                .open()
            {
                // sled reports the lock as `Other` with the OS error in the text.
                Err(sled::Error::Io(e))
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < give_up =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                result => break result.map_err(|e| sled_error("opening the journal", e))?,
            }
        };
        let journal = db
            .open_tree("journal")
            .map_err(|e| sled_error("opening the journal tree", e))?;
        let leases = db
            .open_tree("leases")
            .map_err(|e| sled_error("opening the lease tree", e))?;
        let db_file =
            File::open(dir.join("db")).map_err(|e| io_error("opening sled's db file", &e))?;
        Ok(Self {
            generation,
            db,
            journal,
            leases,
            db_file,
        })
    }
}

/// A write failure and when the store was last (re)opened after it.
struct Failure {
    error: JournalError,
    last_attempt: Instant,
}

/// Stripes of apply locks; a shard's stripe is `shard % APPLY_STRIPES`.
const APPLY_STRIPES: usize = 64;

/// The group flush: flushes are numbered and finish in order.
#[derive(Default)]
struct FlushState {
    /// Flushes started; flush `n` covers every write applied before it started.
    started: u64,
    /// Flushes finished.
    done: u64,
    /// The newest flush that failed, with its error.
    last_failure: Option<(u64, JournalError)>,
    /// The store generation the newest finished flush made durable.
    done_generation: u64,
    /// When the newest successful flush started (blob files older than that
    /// are synced).
    last_sync: Option<SystemTime>,
}

impl SledJournal {
    /// Opens (or creates) the journal in `dir`.
    pub fn open(dir: &Path, options: SledOptions) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("creating the journal directory", &e))?;
        let store = Store::open(dir, &options, 1)?;
        let journal = Self {
            dir: dir.to_owned(),
            store: RwLock::new(Some(store)),
            failed: Mutex::new(None),
            blobs_dir: dir.join("blobs"),
            options,
            epochs: Mutex::new(HashMap::new()),
            stripes: (0..APPLY_STRIPES).map(|_| Mutex::new(())).collect(),
            generations: AtomicU64::new(1),
            expiry_unique: AtomicU64::new(
                SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            ),
            flush: Mutex::new(FlushState::default()),
            flushed: Condvar::new(),
            observer: OnceLock::new(),
            streams: Mutex::new(stream::Streams::default()),
        };
        // What a crash left written but unsynced is made durable before any
        // of it is read as a stream (a position read must never be lost).
        journal.with_store(|store| journal.make_durable(store, None))?;
        Ok(journal)
    }

    fn lock_streams(&self) -> MutexGuard<'_, stream::Streams> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `shard`'s stream, loaded if needed; the caller holds its stripe.
    fn shard_stream(
        &self,
        store: &Store,
        shard: ShardId,
    ) -> Result<stream::ShardStream, JournalError> {
        let loaded = self.lock_streams().get(shard);
        if let Some(s) = loaded {
            return Ok(s);
        }
        let (last, backfilled) = stream::Streams::read(store, shard)?;
        if backfilled {
            self.note(self.make_durable(store, None))?;
        }
        let mut streams = self.lock_streams();
        streams.insert(shard, last);
        streams
            .get(shard)
            .ok_or_else(|| JournalError::Io("a stream vanished while loaded".into()))
    }

    fn lock_stripe(&self, shard: ShardId) -> MutexGuard<'_, ()> {
        self.stripes[shard as usize % APPLY_STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn lock_flush(&self) -> MutexGuard<'_, FlushState> {
        // A panic while holding the lock leaves the state consistent (every
        // field is updated in single steps), so poisoning is ignored.
        self.flush.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_epochs(&self) -> MutexGuard<'_, HashMap<ShardId, u64>> {
        self.epochs.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_failed(&self) -> MutexGuard<'_, Option<Failure>> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the open store (reads go on after a write failure).
    fn with_store<T>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        match guard.as_ref() {
            Some(store) => f(store),
            None => Err(self
                .lock_failed()
                .as_ref()
                .map_or(JournalError::Closed, |f| f.error.clone())),
        }
    }

    /// Remembers a write failure of `result`: sled refuses writes from now on.
    fn note<T>(&self, result: Result<T, JournalError>) -> Result<T, JournalError> {
        if let Err(error) = &result
            && matches!(error, JournalError::Io(_) | JournalError::Full(_))
        {
            let mut failed = self.lock_failed();
            if failed.is_none() {
                tracing::error!(%error, "journal write failed; appends fail until the store is reopened");
                *failed = Some(Failure {
                    error: error.clone(),
                    last_attempt: Instant::now(),
                });
            }
        }
        result
    }

    /// After a write failure, reopens the store when it may succeed (see the
    /// module docs); otherwise fails fast with the failure. Appends applied
    /// to the old store and not yet flushed fail (their flush sees a new
    /// generation).
    fn recover(&self) -> Result<(), JournalError> {
        {
            let mut failed = self.lock_failed();
            let Some(failure) = failed.as_mut() else {
                return Ok(());
            };
            if failure.last_attempt.elapsed() < REOPEN_INTERVAL {
                return Err(failure.error.clone());
            }
            failure.last_attempt = Instant::now();
            let free = nix::sys::statvfs::statvfs(&self.dir)
                .map(|s| s.blocks_available() * s.fragment_size())
                .unwrap_or(0);
            if free < REOPEN_MIN_FREE_BYTES {
                failure.error = JournalError::Full(format!(
                    "the journal's file system has {free} bytes free; writes resume when {REOPEN_MIN_FREE_BYTES} are"
                ));
                return Err(failure.error.clone());
            }
        }
        // Lock order everywhere: the store, then `failed` (appliers note
        // failures while holding the store).
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        let mut failed = self.lock_failed();
        let Some(failure) = failed.as_mut() else {
            return Ok(()); // reopened meanwhile by another append
        };
        // sled locks its files: the old store must be gone before the new opens.
        drop(store.take());
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        // What was applied but not flushed may be gone: positions reload.
        self.lock_streams().clear();
        match Store::open(&self.dir, &self.options, generation) {
            Ok(reopened) => {
                if let Err(e) = self.make_durable(&reopened, None) {
                    failure.error = e.clone();
                    return Err(e);
                }
                *store = Some(reopened);
                *failed = None;
                tracing::info!("journal store reopened after a write failure; appends resume");
                Ok(())
            }
            Err(e) => {
                failure.error = e.clone();
                Err(e)
            }
        }
    }

    /// Makes everything sled has written durable (see the module docs).
    fn make_durable(&self, store: &Store, since: Option<SystemTime>) -> Result<(), JournalError> {
        store
            .db
            .flush()
            .map_err(|e| sled_error("flushing the journal", e))?;
        if !self.options.sync {
            return Ok(());
        }
        store
            .db_file
            .sync_data()
            .map_err(|e| io_error("fdatasync of the journal", &e))?;
        self.sync_new_blobs(since)
    }

    fn sync_new_blobs(&self, since: Option<SystemTime>) -> Result<(), JournalError> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("listing sled blobs", &e)),
        };
        let mut synced_any = false;
        for entry in entries.flatten() {
            let is_new = match (since, entry.metadata().and_then(|m| m.modified())) {
                (Some(since), Ok(modified)) => modified >= since,
                _ => true,
            };
            if is_new {
                match File::open(entry.path()).and_then(|f| f.sync_all()) {
                    Ok(()) => synced_any = true,
                    // Removed since the listing: sled replaced the value, so
                    // nothing durable refers to that blob any more.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("fsync of a sled blob", &e)),
                }
            }
        }
        if synced_any {
            File::open(&self.blobs_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("fsync of the blobs directory", &e))?;
        }
        Ok(())
    }

    /// Checks and applies `appends` to sled (not yet durable). Returns a
    /// result per append and, if any was applied, the store generation and
    /// the last stream position it assigned in each shard.
    fn apply(&self, appends: &[EntityAppend]) -> (Vec<Result<(), AppendError>>, Option<Applied>) {
        let failed = |e: JournalError| {
            let results = appends
                .iter()
                .map(|_| Err(AppendError::Storage(e.clone())))
                .collect();
            (results, None)
        };
        if let Err(e) = self.recover() {
            return failed(e);
        }
        let mut stripes: Vec<usize> = appends
            .iter()
            .map(|a| a.key.shard as usize % APPLY_STRIPES)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        // Always taken in ascending order: no deadlock between appends.
        let _held: Vec<MutexGuard<'_, ()>> = stripes
            .iter()
            .map(|&i| self.stripes[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        let Some(store) = guard.as_ref() else {
            return failed(JournalError::Closed);
        };
        // Every shard's stream loaded before anything is staged: a load
        // that fails fails the whole call, never events without positions.
        let mut shards: Vec<ShardId> = appends.iter().map(|a| a.key.shard).collect();
        shards.sort_unstable();
        shards.dedup();
        for &shard in &shards {
            if let Err(e) = self.shard_stream(store, shard) {
                return failed(e);
            }
        }
        let epochs = self.lock_epochs().clone();
        let mut batch = sled::Batch::default();
        // Entities' tail pages as this append leaves them.
        let mut tails: foldhash::HashMap<Vec<u8>, Tail> = foldhash::HashMap::default();
        // The command ids indexed, per shard and time: one expiry list each.
        let mut expiring: BTreeMap<(ShardId, u64), Vec<keys::ExpiryEntry>> = BTreeMap::new();
        let mut results: Vec<Result<(), AppendError>> = appends
            .iter()
            .map(|append| {
                self.stage(store, append, &epochs, &mut tails, &mut batch)?;
                for record in &append.command_ids {
                    expiring
                        .entry((append.key.shard, record.at_ms))
                        .or_default()
                        .push((
                            append.key.entity_type.clone(),
                            append.key.entity_id.clone(),
                            record.command_id.clone(),
                        ));
                }
                Ok(())
            })
            .collect();
        if !results.iter().any(Result::is_ok) {
            return (results, None);
        }
        // Stream positions, in the order of the call (stripes held): the
        // runs of each shard under one key.
        let mut runs: BTreeMap<ShardId, Vec<stream::Run>> = BTreeMap::new();
        for (append, result) in appends.iter().zip(results.iter_mut()) {
            if result.is_err() || append.events.is_empty() {
                continue;
            }
            runs.entry(append.key.shard).or_default().push(stream::Run {
                entity_type: append.key.entity_type.clone(),
                entity_id: append.key.entity_id.clone(),
                first_seq: append.expected_seq_nr + 1,
                count: u32::try_from(append.events.len()).unwrap_or(u32::MAX),
            });
        }
        let mut positions: BTreeMap<ShardId, u64> = BTreeMap::new();
        {
            let mut streams = self.lock_streams();
            for (shard, runs) in &runs {
                let n: u64 = runs.iter().map(|r| u64::from(r.count)).sum();
                let last = streams.assign(*shard, n);
                batch.insert(keys::stream_key(*shard, last), stream::encode_runs(runs));
                positions.insert(*shard, last);
            }
        }
        for ((shard, at_ms), entries) in expiring {
            let unique = self.expiry_unique.fetch_add(1, Ordering::Relaxed);
            batch.insert(
                keys::expiry_key(shard, at_ms, unique),
                keys::encode_expiry_list(&entries),
            );
        }
        for (key, tail) in tails {
            if tail.dirty
                && let Some(page) = tail.page
            {
                batch.insert(key, page.as_bytes());
            }
        }
        if let Err(e) = self.note(
            store
                .journal
                .apply_batch(batch)
                .map_err(|e| sled_error("writing the journal batch", e)),
        ) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(AppendError::Storage(e.clone()));
            }
            return (results, None);
        }
        (
            results,
            Some(Applied {
                generation: store.generation,
                positions,
            }),
        )
    }

    /// Waits until a flush that started after this call made the store
    /// durable; leads that flush if none is running.
    fn wait_durable(&self, applied_generation: u64) -> Result<(), JournalError> {
        let mut state = self.lock_flush();
        let needed = state.started + 1;
        loop {
            if state.done >= needed {
                if let Some((failed, error)) = &state.last_failure
                    && *failed >= needed
                {
                    return Err(error.clone());
                }
                if state.done_generation != applied_generation {
                    return Err(JournalError::Io(
                        "the journal store was reopened before this write was flushed".into(),
                    ));
                }
                return Ok(());
            }
            if state.started > state.done {
                state = self.flushed.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            state.started += 1;
            let id = state.started;
            let since = state.last_sync;
            drop(state);
            let started = SystemTime::now();
            // A panic in the store must not leave a flush running forever,
            // which would block every later append: it fails this flush.
            let (generation, result) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.flush_store(since)))
                    .unwrap_or_else(|_| {
                        (
                            0,
                            Err(JournalError::Io("the journal flush panicked".into())),
                        )
                    });
            state = self.lock_flush();
            state.done = id;
            state.done_generation = generation;
            match result {
                // Blob files written before `started` were synced by this flush.
                Ok(()) => state.last_sync = Some(started),
                Err(e) => state.last_failure = Some((id, e)),
            }
            self.flushed.notify_all();
        }
    }

    /// One durable flush of the open store: its generation and the outcome.
    fn flush_store(&self, since: Option<SystemTime>) -> (u64, Result<(), JournalError>) {
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        let Some(store) = guard.as_ref() else {
            return (0, Err(JournalError::Closed));
        };
        if let Some(failure) = self.lock_failed().as_ref() {
            return (store.generation, Err(failure.error.clone()));
        }
        (store.generation, self.note(self.make_durable(store, since)))
    }

    /// Refuses `fence` unless this opening holds the shard under it.
    fn check_fence(&self, fence: FenceToken) -> Result<(), AppendError> {
        let current = self.lock_epochs().get(&fence.shard).copied().unwrap_or(0);
        if fence.epoch != current || current == 0 {
            return Err(AppendError::Fenced {
                shard: fence.shard,
                presented: fence.epoch,
                current,
            });
        }
        Ok(())
    }

    /// Removes `keys` of the fenced shard (not flushed: a removal lost to
    /// a crash only repeats a delivery, which the target deduplicates).
    fn remove_fenced(
        &self,
        fence: FenceToken,
        keys: Vec<Vec<u8>>,
        what: &'static str,
    ) -> Result<(), AppendError> {
        self.check_fence(fence)?;
        if keys.is_empty() {
            return Ok(());
        }
        self.recover()?;
        let _stripe = self.stripes[fence.shard as usize % APPLY_STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.with_store(|store| {
            let mut batch = sled::Batch::default();
            for k in keys {
                batch.remove(k);
            }
            self.note(
                store
                    .journal
                    .apply_batch(batch)
                    .map_err(|e| sled_error(what, e)),
            )
        })?;
        Ok(())
    }

    fn stage(
        &self,
        store: &Store,
        append: &EntityAppend,
        epochs: &HashMap<ShardId, u64>,
        tails: &mut foldhash::HashMap<Vec<u8>, Tail>,
        batch: &mut sled::Batch,
    ) -> Result<(), AppendError> {
        let key = &append.key;
        append.check()?;
        let current = epochs.get(&key.shard).copied().unwrap_or(0);
        if append.fence.epoch != current || current == 0 {
            return Err(AppendError::Fenced {
                shard: key.shard,
                presented: append.fence.epoch,
                current,
            });
        }
        let tail_key = keys::event_key(key, keys::TAIL);
        let tail = match tails.entry(tail_key) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let tail = load_tail(store, key, e.key())?;
                e.insert(tail)
            }
        };
        if tail.last_seq != append.expected_seq_nr {
            return Err(AppendError::Conflict {
                key: key.clone(),
                expected: append.expected_seq_nr,
                actual: tail.last_seq,
            });
        }
        for record in &append.command_ids {
            batch.insert(
                keys::command_key(key, &record.command_id),
                &record::encode_command_id(record)[..],
            );
        }
        if append.events.is_empty() {
            // Refusals only (`check`): no page, no entity entry.
            return Ok(());
        }
        let mut page = tail
            .page
            .take()
            .unwrap_or_else(|| PageBuf::new(tail.last_seq + 1));
        for event in &append.events {
            if !page.is_empty() && (page.count() >= PAGE_MAX_EVENTS || page.len() >= PAGE_MAX_BYTES)
            {
                // Sealed under its last event's sequence number; the next
                // events open a new page. All in this batch: atomic.
                batch.insert(keys::event_key(key, page.last_seq()), page.as_bytes());
                page = PageBuf::new(page.last_seq() + 1);
            }
            page.push(event);
        }
        for send in &append.sends {
            batch.insert(
                keys::outbox_key(key, send.seq_nr, send.index),
                record::encode_send(&send.send, None),
            );
        }
        for write in &append.timers {
            // A batch keeps the last write of a key: changes apply in order.
            match &write.change {
                TimerChange::Set(timer) => batch.insert(
                    keys::timer_key(key, &timer.name),
                    record::encode_timer(write.seq_nr, timer.fire_at_ms, &timer.command),
                ),
                TimerChange::Cancel(name) => batch.remove(keys::timer_key(key, name)),
            }
        }
        if tail.last_seq == 0 {
            // The index entry is written once, when the entity is created:
            // rewriting it per append would double sled's work per command.
            batch.insert(keys::entity_key(key), &record::encode_entity(0)[..]);
        }
        tail.last_seq = page.last_seq();
        tail.page = Some(page);
        tail.dirty = true;
        Ok(())
    }
}

/// Events an append adds to a tail page before it is sealed: a tail is
/// rewritten on every append, so it stays small; sealed pages make replay
/// read one value per page instead of one per event. Small in unit tests, so
/// the model test seals pages all the time.
const PAGE_MAX_EVENTS: u32 = if cfg!(test) { 3 } else { 16 };
/// A tail page at least this large (bytes) is sealed before the next append.
const PAGE_MAX_BYTES: usize = 2048;

/// An entity's tail page during a commit.
/// What one apply wrote.
struct Applied {
    generation: u64,
    /// The last stream position assigned in each shard.
    positions: BTreeMap<ShardId, u64>,
}

struct Tail {
    /// `None`: the entity has no tail page (new, or written before pages).
    page: Option<PageBuf>,
    last_seq: u64,
    /// Changed by this group: written with the batch.
    dirty: bool,
}

/// Reads an entity's tail page and last sequence number.
fn load_tail(store: &Store, key: &EntityKey, tail_key: &[u8]) -> Result<Tail, JournalError> {
    match store
        .journal
        .get(tail_key)
        .map_err(|e| sled_error("reading a tail page", e))?
    {
        Some(bytes) => {
            let page = PageBuf::from_stored(&bytes, 256).map_err(|e| JournalError::Corrupt {
                key: hex(tail_key),
                reason: e.0,
            })?;
            Ok(Tail {
                last_seq: page.last_seq(),
                page: Some(page),
                dirty: false,
            })
        }
        None => Ok(Tail {
            page: None,
            last_seq: read_last_sealed_seq(store, key)?,
            dirty: false,
        }),
    }
}

/// The sequence number of the entity's last event.
fn read_last_seq(store: &Store, key: &EntityKey) -> Result<u64, JournalError> {
    let tail_key = keys::event_key(key, keys::TAIL);
    Ok(load_tail(store, key, &tail_key)?.last_seq)
}

/// For an entity without a tail page: the last sequence number of its sealed
/// pages or single events (0 if none). A reverse scan, paid once per entity:
/// after its first append under pages the entity has a tail.
fn read_last_sealed_seq(store: &Store, key: &EntityKey) -> Result<u64, JournalError> {
    let first = keys::event_key(key, 0);
    let last = keys::event_key(key, u64::MAX);
    match store.journal.range(first..=last).next_back() {
        None => Ok(0),
        Some(item) => {
            let (k, _) = item.map_err(|e| sled_error("reading the last event", e))?;
            match keys::decode(&k) {
                Ok(keys::DecodedKey::Event(_, seq)) => Ok(seq),
                Ok(other) => Err(JournalError::Corrupt {
                    key: hex(&k),
                    reason: format!("expected an event key, found {other:?}"),
                }),
                Err(e) => Err(JournalError::Corrupt {
                    key: hex(&k),
                    reason: e.0,
                }),
            }
        }
    }
}

impl Journal for SledJournal {
    fn set_commit_observer(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.observer.set(observer);
    }

    fn renew_shards(&self, tokens: &[FenceToken]) -> Result<Vec<FenceToken>, JournalError> {
        // One node opens the store: a lease lasts until released or claimed
        // again by this opening.
        let epochs = self.lock_epochs();
        Ok(tokens
            .iter()
            .filter(|t| epochs.get(&t.shard) == Some(&t.epoch))
            .copied()
            .collect())
    }

    fn lease_ttl(&self) -> Option<std::time::Duration> {
        None
    }

    fn release_shards(&self, tokens: &[FenceToken]) -> Result<(), JournalError> {
        // The epoch stays durable: the next claim moves past it. Only this
        // opening's hold is dropped, so its appends under it are refused.
        let mut epochs = self.lock_epochs();
        for token in tokens {
            if epochs.get(&token.shard) == Some(&token.epoch) {
                epochs.remove(&token.shard);
            }
        }
        Ok(())
    }

    fn claim_shards(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, JournalError> {
        let tokens = self.with_store(|store| self.note(claim(self, store, shards)))?;
        let mut epochs = self.lock_epochs();
        for token in &tokens {
            epochs.insert(token.shard, token.epoch);
        }
        Ok(tokens)
    }

    fn append(&self, appends: Vec<EntityAppend>) -> Vec<Result<(), AppendError>> {
        let started = Instant::now();
        let (mut results, applied) = self.apply(&appends);
        let Some(applied) = applied else {
            return results;
        };
        match self.wait_durable(applied.generation) {
            Ok(()) => {
                let mut streams = self.lock_streams();
                for (shard, position) in applied.positions {
                    streams.durable(shard, position);
                }
                drop(streams);
                if let Some(observer) = self.observer.get() {
                    let entities = results.iter().filter(|r| r.is_ok()).count();
                    observer.committed(entities, started.elapsed());
                }
            }
            Err(e) => {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(AppendError::Storage(e.clone()));
                }
            }
        }
        results
    }

    fn last_seq_nr(&self, key: &EntityKey) -> Result<u64, JournalError> {
        self.with_store(|store| read_last_seq(store, key))
    }

    fn read_events(
        &self,
        key: &EntityKey,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        let from = from.max(1);
        let start = keys::event_key(key, from);
        let end = keys::event_key(key, keys::TAIL);
        self.with_store(|store| {
            let mut out = Vec::new();
            let corrupt = |k: &[u8], reason: String| JournalError::Corrupt {
                key: hex(k),
                reason,
            };
            // The sequence number the next event must have, once known.
            let mut next: Option<u64> = None;
            for item in store.journal.range(start..=end) {
                if out.len() >= limit {
                    break;
                }
                let (k, v) = item.map_err(|e| sled_error("reading events", e))?;
                let key_seq = match keys::decode(&k) {
                    Ok(keys::DecodedKey::Event(_, seq)) => seq,
                    Ok(other) => {
                        return Err(corrupt(
                            &k,
                            format!("expected an event key, found {other:?}"),
                        ));
                    }
                    Err(e) => return Err(corrupt(&k, e.0)),
                };
                let (first_seq, raw) =
                    record::split_stored(&v, key_seq).map_err(|e| corrupt(&k, e.0))?;
                let last_seq = first_seq
                    .checked_add(raw.len() as u64 - 1)
                    .filter(|_| first_seq > 0)
                    .ok_or_else(|| corrupt(&k, format!("page starts at {first_seq}")))?;
                if key_seq != keys::TAIL && last_seq != key_seq {
                    return Err(corrupt(
                        &k,
                        format!("a page ending at {last_seq} is stored under {key_seq}"),
                    ));
                }
                if let Some(expected) = next
                    && first_seq != expected
                {
                    return Err(corrupt(
                        &k,
                        format!("expected event {expected}, the page starts at {first_seq}"),
                    ));
                }
                next = last_seq.checked_add(1);
                for (i, bytes) in raw.into_iter().enumerate() {
                    let seq_nr = first_seq + i as u64;
                    if seq_nr < from {
                        continue;
                    }
                    if out.len() >= limit {
                        break;
                    }
                    let record = EventRecord::decode(bytes).map_err(|e| corrupt(&k, e.0))?;
                    out.push(StoredEvent { seq_nr, record });
                }
            }
            Ok(out)
        })
    }

    fn save_snapshot(
        &self,
        key: &EntityKey,
        snapshot: &SnapshotRecord,
    ) -> Result<(), JournalError> {
        self.with_store(|store| {
            self.note(
                store
                    .journal
                    .insert(keys::snapshot_key(key), snapshot.encode())
                    .map_err(|e| sled_error("saving a snapshot", e)),
            )
        })?;
        Ok(())
    }

    fn load_snapshot(&self, key: &EntityKey) -> Result<Option<SnapshotRecord>, JournalError> {
        let k = keys::snapshot_key(key);
        self.with_store(|store| {
            match store
                .journal
                .get(&k)
                .map_err(|e| sled_error("loading a snapshot", e))?
            {
                None => Ok(None),
                Some(bytes) => {
                    SnapshotRecord::decode(&bytes)
                        .map(Some)
                        .map_err(|e| JournalError::Corrupt {
                            key: hex(&k),
                            reason: e.0,
                        })
                }
            }
        })
    }

    fn read_stream(
        &self,
        entity_type: &str,
        from: &[(ShardId, u64)],
        limit: usize,
    ) -> Result<Vec<StreamEvent>, JournalError> {
        let mut out = Vec::new();
        for &(shard, after) in from {
            let loaded = self.lock_streams().get(shard);
            let durable = match loaded {
                Some(s) => s.durable,
                None => {
                    let _stripe = self.lock_stripe(shard);
                    self.with_store(|store| self.shard_stream(store, shard))?
                        .durable
                }
            };
            let pointers = self.with_store(|store| {
                stream::pointers(store, entity_type, shard, after, durable, limit)
            })?;
            out.extend(stream::resolve(
                &|key, from, n| self.read_events(key, from, n),
                entity_type,
                shard,
                pointers,
            )?);
        }
        Ok(out)
    }

    fn entities_in_shard(&self, shard: ShardId) -> Result<Vec<(String, String)>, JournalError> {
        self.with_store(|store| {
            let mut out = Vec::new();
            for item in store
                .journal
                .scan_prefix(keys::section_prefix(shard, keys::SECTION_ENTITY))
            {
                let (k, _) = item.map_err(|e| sled_error("listing entities", e))?;
                match keys::decode(&k) {
                    Ok(keys::DecodedKey::Entity(key)) => {
                        out.push((key.entity_type, key.entity_id));
                    }
                    Ok(other) => {
                        return Err(JournalError::Corrupt {
                            key: hex(&k),
                            reason: format!("expected an entity key, found {other:?}"),
                        });
                    }
                    Err(e) => {
                        return Err(JournalError::Corrupt {
                            key: hex(&k),
                            reason: e.0,
                        });
                    }
                }
            }
            Ok(out)
        })
    }

    fn find_command_id(
        &self,
        key: &EntityKey,
        command_id: &str,
    ) -> Result<Option<CommandIdRecord>, JournalError> {
        let k = keys::command_key(key, command_id);
        self.with_store(|store| {
            match store
                .journal
                .get(&k)
                .map_err(|e| sled_error("reading a command id", e))?
            {
                None => Ok(None),
                Some(bytes) => record::decode_command_id(command_id, &bytes)
                    .map(Some)
                    .map_err(|e| JournalError::Corrupt {
                        key: hex(&k),
                        reason: e.0,
                    }),
            }
        })
    }

    fn expire_command_ids(
        &self,
        fence: FenceToken,
        before_ms: u64,
        limit: usize,
    ) -> Result<usize, AppendError> {
        self.check_fence(fence)?;
        self.recover()?;
        // Under the shard's stripe: no append of the shard interleaves.
        let _stripe = self.stripes[fence.shard as usize % APPLY_STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let expired = self.with_store(|store| {
            let start = keys::section_prefix(fence.shard, keys::SECTION_EXPIRY);
            let mut end = start.clone();
            end.extend_from_slice(&before_ms.to_be_bytes());
            let mut batch = sled::Batch::default();
            // Entries removed; entries of an id indexed again later (with a
            // newer time) are dropped from the list but are not removed.
            let (mut expired, mut changed) = (0, false);
            // An id indexed twice at one time is listed twice: removed once.
            let mut removed: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
            for item in store.journal.range(start..end) {
                if expired >= limit {
                    break;
                }
                let (k, v) = item.map_err(|e| sled_error("listing expired command ids", e))?;
                let corrupt = |reason: String| JournalError::Corrupt {
                    key: hex(&k),
                    reason,
                };
                let Ok(keys::DecodedKey::Expiry { at_ms, .. }) = keys::decode(&k) else {
                    return Err(corrupt("expected an expiry key".into()));
                };
                let mut entries = keys::decode_expiry_list(&v).map_err(|e| corrupt(e.0))?;
                while expired < limit
                    && let Some((entity_type, entity_id, command_id)) = entries.pop()
                {
                    let key = EntityKey::new(fence.shard, entity_type, entity_id);
                    let command_key = keys::command_key(&key, &command_id);
                    let indexed = store
                        .journal
                        .get(&command_key)
                        .map_err(|e| sled_error("reading a command id", e))?;
                    if let Some(bytes) = indexed
                        && record::decode_command_id(&command_id, &bytes)
                            .is_ok_and(|r| r.at_ms == at_ms)
                        && removed.insert(command_key.clone())
                    {
                        batch.remove(command_key);
                        expired += 1;
                    }
                }
                // A list the limit cut short keeps the rest for the next sweep.
                if entries.is_empty() {
                    batch.remove(k);
                } else {
                    batch.insert(k, keys::encode_expiry_list(&entries));
                }
                changed = true;
            }
            if changed {
                self.note(
                    store
                        .journal
                        .apply_batch(batch)
                        .map_err(|e| sled_error("expiring command ids", e)),
                )?;
            }
            Ok(expired)
        })?;
        Ok(expired)
    }

    fn read_outbox(
        &self,
        shard: ShardId,
        after: Option<&SendId>,
        limit: usize,
    ) -> Result<Vec<PendingSend>, JournalError> {
        let prefix = keys::section_prefix(shard, keys::SECTION_OUTBOX);
        let start = match after.filter(|a| a.source.shard == shard) {
            Some(a) => after_key(keys::outbox_key(&a.source, a.seq_nr, a.index)),
            None => prefix.clone(),
        };
        self.with_store(|store| {
            let mut out = Vec::new();
            for item in store.journal.range(start..).take(limit) {
                let (k, v) = item.map_err(|e| sled_error("reading the outbox", e))?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let corrupt = |reason: String| JournalError::Corrupt {
                    key: hex(&k),
                    reason,
                };
                let Ok(keys::DecodedKey::Outbox(source, seq_nr, index)) = keys::decode(&k) else {
                    return Err(corrupt("expected an outbox key".into()));
                };
                let (send, answer) = record::decode_send(&v).map_err(|e| corrupt(e.0))?;
                out.push(PendingSend {
                    id: SendId {
                        source,
                        seq_nr,
                        index,
                    },
                    send,
                    answer,
                });
            }
            Ok(out)
        })
    }

    fn ack_sends(&self, fence: FenceToken, ids: &[SendId]) -> Result<(), AppendError> {
        let keys = ids
            .iter()
            .filter(|id| id.source.shard == fence.shard)
            .map(|id| keys::outbox_key(&id.source, id.seq_nr, id.index))
            .collect();
        self.remove_fenced(fence, keys, "acknowledging sends")
    }

    fn answer_sends(
        &self,
        fence: FenceToken,
        answers: &[(SendId, Answer)],
    ) -> Result<(), AppendError> {
        self.check_fence(fence)?;
        self.recover()?;
        let generation = {
            // Under the shard's stripe: the read and the rewrite of each
            // send do not interleave with an ack or another answer.
            let _stripe = self.stripes[fence.shard as usize % APPLY_STRIPES]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            self.with_store(|store| {
                let mut batch = sled::Batch::default();
                let mut changed = false;
                for (id, answer) in answers
                    .iter()
                    .filter(|(id, _)| id.source.shard == fence.shard)
                {
                    let k = keys::outbox_key(&id.source, id.seq_nr, id.index);
                    let Some(bytes) = store
                        .journal
                        .get(&k)
                        .map_err(|e| sled_error("reading a send", e))?
                    else {
                        continue;
                    };
                    let (send, None) =
                        record::decode_send(&bytes).map_err(|e| JournalError::Corrupt {
                            key: hex(&k),
                            reason: e.0,
                        })?
                    else {
                        continue;
                    };
                    batch.insert(k, record::encode_send(&send, Some(*answer)));
                    changed = true;
                }
                if !changed {
                    return Ok(None);
                }
                self.note(
                    store
                        .journal
                        .apply_batch(batch)
                        .map_err(|e| sled_error("answering sends", e)),
                )?;
                Ok(Some(store.generation))
            })?
        };
        // Durable before the sender hears the answer, as an append is.
        if let Some(generation) = generation {
            self.wait_durable(generation)?;
        }
        Ok(())
    }

    fn read_timers(
        &self,
        shard: ShardId,
        after: Option<(&EntityKey, &str)>,
        limit: usize,
    ) -> Result<Vec<PendingTimer>, JournalError> {
        let prefix = keys::section_prefix(shard, keys::SECTION_TIMER);
        let start = match after.filter(|(key, _)| key.shard == shard) {
            Some((key, name)) => after_key(keys::timer_key(key, name)),
            None => prefix.clone(),
        };
        self.with_store(|store| {
            let mut out = Vec::new();
            for item in store.journal.range(start..).take(limit) {
                let (k, v) = item.map_err(|e| sled_error("reading timers", e))?;
                if !k.starts_with(&prefix) {
                    break;
                }
                let corrupt = |reason: String| JournalError::Corrupt {
                    key: hex(&k),
                    reason,
                };
                let Ok(keys::DecodedKey::Timer(key, name)) = keys::decode(&k) else {
                    return Err(corrupt("expected a timer key".into()));
                };
                let (seq_nr, fire_at_ms, command) =
                    record::decode_timer(&v).map_err(|e| corrupt(e.0))?;
                out.push(PendingTimer {
                    key,
                    seq_nr,
                    timer: Timer {
                        name,
                        fire_at_ms,
                        command,
                    },
                });
            }
            Ok(out)
        })
    }

    fn ack_timers(&self, fence: FenceToken, fired: &[FiredTimer]) -> Result<(), AppendError> {
        self.check_fence(fence)?;
        self.recover()?;
        // Under the shard's stripe: no append of the shard (which may set
        // the timer again) interleaves between the read and the removal.
        let _stripe = self.stripes[fence.shard as usize % APPLY_STRIPES]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.with_store(|store| {
            let mut batch = sled::Batch::default();
            let mut changed = false;
            for f in fired.iter().filter(|f| f.key.shard == fence.shard) {
                let k = keys::timer_key(&f.key, &f.name);
                let current = store
                    .journal
                    .get(&k)
                    .map_err(|e| sled_error("reading a timer", e))?;
                if let Some(bytes) = current
                    && record::decode_timer(&bytes).is_ok_and(|(seq_nr, ..)| seq_nr == f.seq_nr)
                {
                    batch.remove(k);
                    changed = true;
                }
            }
            if changed {
                self.note(
                    store
                        .journal
                        .apply_batch(batch)
                        .map_err(|e| sled_error("acknowledging timers", e)),
                )?;
            }
            Ok(())
        })?;
        Ok(())
    }
}

/// The smallest key after `key` (a range starting there skips `key`).
fn after_key(mut key: Vec<u8>) -> Vec<u8> {
    key.push(0);
    key
}

/// Moves the leases of `shards` one epoch on, durably.
fn claim(
    journal: &SledJournal,
    store: &Store,
    shards: &[ShardId],
) -> Result<Vec<FenceToken>, JournalError> {
    let mut batch = sled::Batch::default();
    let mut tokens = Vec::with_capacity(shards.len());
    for &shard in shards {
        let previous = match store
            .leases
            .get(shard.to_be_bytes())
            .map_err(|e| sled_error("reading a lease", e))?
        {
            None => 0,
            Some(bytes) => record::decode_entity(&bytes).map_err(|e| JournalError::Corrupt {
                key: format!("lease of shard {shard}"),
                reason: e.0,
            })?,
        };
        let epoch = previous + 1;
        batch.insert(&shard.to_be_bytes()[..], &record::encode_entity(epoch)[..]);
        tokens.push(FenceToken { shard, epoch });
    }
    store
        .leases
        .apply_batch(batch)
        .map_err(|e| sled_error("writing leases", e))?;
    journal.make_durable(store, None)?;
    Ok(tokens)
}

fn sled_error(what: &str, e: sled::Error) -> JournalError {
    match e {
        sled::Error::Io(io) => io_error(what, &io),
        sled::Error::Corruption { at, .. } => JournalError::Corrupt {
            key: format!("{at:?}"),
            reason: format!("sled reports corruption while {what}"),
        },
        other => JournalError::Io(format!("{what}: {other}")),
    }
}

fn io_error(what: &str, e: &std::io::Error) -> JournalError {
    // ENOSPC and EDQUOT: the disk or the quota is full (sled rewraps OS
    // errors, keeping only their kind).
    if matches!(e.raw_os_error(), Some(28) | Some(122))
        || matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
    {
        JournalError::Full(format!("{what}: {e}"))
    } else {
        JournalError::Io(format!("{what}: {e}"))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &Path) -> SledJournal {
        SledJournal::open(dir, SledOptions::default()).expect("journal opens")
    }

    /// A journal on a fresh directory (kept alive by the guard) owning
    /// shard 0, and the fence of that claim.
    fn fresh() -> (tempfile::TempDir, SledJournal, FenceToken) {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = open(dir.path());
        let fence = journal.claim_shards(&[0]).expect("claim")[0];
        (dir, journal, fence)
    }

    #[test]
    fn the_sled_journal_passes_the_conformance_suite() {
        stead_journal::conformance::run_all(&|dir: &Path| open(dir));
    }

    #[test]
    fn concurrent_appends_of_many_entities_all_land_and_share_flushes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let journal = std::sync::Arc::new(open(dir.path()));
        let fence = journal.claim_shards(&[0]).expect("claim")[0];
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let journal = journal.clone();
                std::thread::spawn(move || {
                    for seq in 0..20u64 {
                        let key = EntityKey::new(0, "t", format!("e{t}"));
                        let r = journal.append(vec![EntityAppend {
                            key,
                            expected_seq_nr: seq,
                            fence,
                            events: vec![stead_journal::conformance::event("c", b"{}")],
                            command_ids: Vec::new(),
                            sends: Vec::new(),
                            timers: Vec::new(),
                        }]);
                        assert_eq!(r, vec![Ok(())]);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        for t in 0..8 {
            let key = EntityKey::new(0, "t", format!("e{t}"));
            assert_eq!(journal.last_seq_nr(&key), Ok(20));
        }
    }

    fn ev(n: u64) -> EventRecord {
        stead_journal::conformance::event(&format!("c{n}"), format!("{{\"n\":{n}}}").as_bytes())
    }

    /// Appends `sizes` batches to one entity, the events numbered from 1.
    fn append_runs(journal: &SledJournal, key: &EntityKey, fence: FenceToken, sizes: &[u64]) {
        let mut seq = journal.last_seq_nr(key).expect("last seq");
        for &n in sizes {
            let events = (seq + 1..=seq + n).map(ev).collect();
            let r = journal.append(vec![EntityAppend {
                key: key.clone(),
                expected_seq_nr: seq,
                fence,
                events,
                command_ids: Vec::new(),
                sends: Vec::new(),
                timers: Vec::new(),
            }]);
            assert_eq!(r, vec![Ok(())]);
            seq += n;
        }
    }

    fn assert_reads(journal: &SledJournal, key: &EntityKey, total: u64) {
        for from in 0..=total + 2 {
            for limit in [1usize, 3, 17, 1000] {
                let got: Vec<u64> = journal
                    .read_events(key, from, limit)
                    .expect("read")
                    .into_iter()
                    .map(|e| {
                        assert_eq!(e.record, ev(e.seq_nr), "event {}", e.seq_nr);
                        e.seq_nr
                    })
                    .collect();
                let want: Vec<u64> = (from.max(1)..=total).take(limit).collect();
                assert_eq!(got, want, "from {from} limit {limit}");
            }
        }
    }

    #[test]
    fn events_spanning_sealed_pages_read_back_from_any_position_before_and_after_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = EntityKey::new(0, "t", "e");
        let sizes = [1, 1, 5, 15, 1, 16, 40, 2, 1, 3];
        let total: u64 = sizes.iter().sum();
        {
            let journal = open(dir.path());
            let fence = journal.claim_shards(&[0]).expect("claim")[0];
            append_runs(&journal, &key, fence, &sizes);
            assert_eq!(journal.last_seq_nr(&key), Ok(total));
            assert_reads(&journal, &key, total);
        }
        let journal = open(dir.path());
        let fence = journal.claim_shards(&[0]).expect("claim")[0];
        assert_eq!(journal.last_seq_nr(&key), Ok(total));
        assert_reads(&journal, &key, total);
        append_runs(&journal, &key, fence, &[20]);
        assert_reads(&journal, &key, total + 20);
    }

    #[test]
    fn a_journal_written_one_event_per_key_is_read_and_appended_to() {
        let key = EntityKey::new(0, "t", "old");
        let (_dir, journal, fence) = fresh();
        {
            // The layout before pages: one EventRecord under each seq-nr.
            let guard = journal.store.read().expect("lock");
            let store = guard.as_ref().expect("store");
            for seq in 1..=5 {
                store
                    .journal
                    .insert(keys::event_key(&key, seq), ev(seq).encode())
                    .expect("insert");
            }
            store
                .journal
                .insert(keys::entity_key(&key), &record::encode_entity(0)[..])
                .expect("insert");
        }
        assert_eq!(journal.last_seq_nr(&key), Ok(5));
        assert_reads(&journal, &key, 5);
        let stale = journal.append(vec![EntityAppend {
            key: key.clone(),
            expected_seq_nr: 0,
            fence,
            events: vec![ev(1)],
            command_ids: Vec::new(),
            sends: Vec::new(),
            timers: Vec::new(),
        }]);
        assert!(matches!(
            stale[0],
            Err(AppendError::Conflict { actual: 5, .. })
        ));
        append_runs(&journal, &key, fence, &[1, 20, 3]);
        assert_reads(&journal, &key, 29);
        assert_eq!(
            journal.entities_in_shard(0),
            Ok(vec![("t".to_owned(), "old".to_owned())])
        );
        // Written before streams: the shard's first append gave the older
        // events positions first, and the new ones follow.
        let stream = journal.read_stream("t", &[(0, 0)], 100).expect("stream");
        assert_eq!(
            stream
                .iter()
                .map(|e| (e.position, e.event.seq_nr))
                .collect::<Vec<_>>(),
            (1..=29).map(|n| (n, n)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_damaged_page_is_reported_as_corrupt_not_misread() {
        let key = EntityKey::new(0, "t", "e");
        let (_dir, journal, fence) = fresh();
        append_runs(&journal, &key, fence, &[16, 2]);
        let guard = journal.store.read().expect("lock");
        let store = guard.as_ref().expect("store");
        let sealed = keys::event_key(&key, u64::from(PAGE_MAX_EVENTS));
        let mut bytes = store
            .journal
            .get(&sealed)
            .expect("get")
            .expect("sealed page")
            .to_vec();
        // Claims to start at 2: its last event would be one past its key's.
        bytes[1..9].copy_from_slice(&2u64.to_be_bytes());
        store.journal.insert(&sealed, bytes).expect("insert");
        drop(guard);
        let err = journal.read_events(&key, 1, 100).unwrap_err();
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err:?}");
        let guard = journal.store.read().expect("lock");
        let store = guard.as_ref().expect("store");
        store
            .journal
            .insert(keys::event_key(&key, keys::TAIL), &[record::PAGE_V1, 0][..])
            .expect("insert");
        drop(guard);
        assert!(matches!(
            journal.last_seq_nr(&key),
            Err(JournalError::Corrupt { .. })
        ));
    }

    #[test]
    fn replacing_values_that_sled_keeps_in_blob_files_does_not_fail_later_commits() {
        // Values over sled's blob threshold (128 KiB) go to files of their
        // own, removed when the value is replaced: a commit must not trip on
        // a blob that vanished between listing and syncing.
        let key = EntityKey::new(0, "t", "big");
        let (_dir, journal, fence) = fresh();
        for round in 0..6u64 {
            let snapshot = SnapshotRecord {
                seq_nr: round,
                version: "v".into(),
                state: vec![round as u8; 200 * 1024],
                dedup: Vec::new(),
            };
            journal.save_snapshot(&key, &snapshot).expect("snapshot");
            append_runs(&journal, &key, fence, &[1]);
        }
        assert_eq!(journal.last_seq_nr(&key), Ok(6));
    }
}
