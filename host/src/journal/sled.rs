//! The embedded journal backend on sled 0.34, with group commit.
//!
//! One sled tree holds every key of [`super::keys`]; a second holds shard
//! leases (epochs). An append's writes for all its entities go into one sled
//! `Batch`, which sled applies atomically (a crash shows all of it or none).
//!
//! **Group commit** (leader/follower): an appender queues its request; if no
//! commit is in progress it becomes the leader, takes every queued request,
//! checks fences and expected sequence numbers, applies one batch and makes it
//! durable, then wakes the followers with their results. Requests that arrive
//! meanwhile wait for the next leader, so concurrent appends share one flush.
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
//! Invariant: the leader is the only writer of events and entity entries, so
//! reading an entity's last sequence number and writing after it cannot race.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::keys;
use super::record::{self, EventRecord, SnapshotRecord};
use super::{
    AppendError, CommitObserver, EntityAppend, EntityKey, FenceToken, Journal, JournalError,
    ShardId, StoredEvent,
};

/// Tuning of the sled backend.
#[derive(Debug, Clone)]
pub struct SledOptions {
    /// sled's page cache size in bytes. Default 256 MiB.
    pub cache_capacity: u64,
    /// Whether commits wait for `fdatasync` (durable against power loss).
    /// Default true; false is for benchmarks that measure the store without
    /// the disk, never for production.
    pub sync: bool,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 256 * 1024 * 1024,
            sync: true,
        }
    }
}

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
    commit: Mutex<CommitState>,
    committed: Condvar,
    observer: OnceLock<Arc<dyn CommitObserver>>,
}

/// An open sled store.
struct Store {
    db: sled::Db,
    journal: sled::Tree,
    leases: sled::Tree,
    db_file: File,
}

impl Store {
    fn open(dir: &Path, options: &SledOptions) -> Result<Self, JournalError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_capacity)
            .open()
            .map_err(|e| sled_error("opening the journal", e))?;
        let journal = db
            .open_tree("journal")
            .map_err(|e| sled_error("opening the journal tree", e))?;
        let leases = db
            .open_tree("leases")
            .map_err(|e| sled_error("opening the lease tree", e))?;
        let db_file =
            File::open(dir.join("db")).map_err(|e| io_error("opening sled's db file", &e))?;
        Ok(Self {
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

#[derive(Default)]
struct CommitState {
    queue: Vec<(u64, Vec<EntityAppend>)>,
    results: HashMap<u64, Vec<Result<(), AppendError>>>,
    next_ticket: u64,
    leader_active: bool,
    last_sync: Option<SystemTime>,
}

impl SledJournal {
    /// Opens (or creates) the journal in `dir`.
    pub fn open(dir: &Path, options: SledOptions) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("creating the journal directory", &e))?;
        let store = Store::open(dir, &options)?;
        Ok(Self {
            dir: dir.to_owned(),
            store: RwLock::new(Some(store)),
            failed: Mutex::new(None),
            blobs_dir: dir.join("blobs"),
            options,
            epochs: Mutex::new(HashMap::new()),
            commit: Mutex::new(CommitState::default()),
            committed: Condvar::new(),
            observer: OnceLock::new(),
        })
    }

    /// Sets the observer told about every durable commit (once).
    pub fn set_observer(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.observer.set(observer);
    }

    fn lock_commit(&self) -> MutexGuard<'_, CommitState> {
        // A panic while holding the lock leaves the state consistent (every
        // field is updated in single steps), so poisoning is ignored.
        self.commit.lock().unwrap_or_else(|p| p.into_inner())
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
    /// module docs); otherwise fails fast with the failure. Called by the
    /// commit leader only, so no append runs meanwhile.
    fn recover(&self) -> Result<(), JournalError> {
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
        let mut store = self.store.write().unwrap_or_else(|p| p.into_inner());
        // sled locks its files: the old store must be gone before the new opens.
        drop(store.take());
        match Store::open(&self.dir, &self.options) {
            Ok(reopened) => {
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
                File::open(entry.path())
                    .and_then(|f| f.sync_all())
                    .map_err(|e| io_error("fsync of a sled blob", &e))?;
                synced_any = true;
            }
        }
        if synced_any {
            File::open(&self.blobs_dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error("fsync of the blobs directory", &e))?;
        }
        Ok(())
    }

    /// The leader's work: one batch, one durable flush, a result per append.
    fn commit_group(
        &self,
        group: &[(u64, Vec<EntityAppend>)],
        last_sync: Option<SystemTime>,
    ) -> Vec<Vec<Result<(), AppendError>>> {
        let failed = |e: JournalError| {
            group
                .iter()
                .map(|(_, appends)| vec![Err(AppendError::Storage(e.clone())); appends.len()])
                .collect()
        };
        if let Err(e) = self.recover() {
            return failed(e);
        }
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        let Some(store) = guard.as_ref() else {
            return failed(JournalError::Closed);
        };
        let epochs = self.lock_epochs().clone();
        let mut batch = sled::Batch::default();
        // Last sequence numbers as this group leaves them.
        let mut overlay: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut results: Vec<Vec<Result<(), AppendError>>> = Vec::with_capacity(group.len());
        for (_, appends) in group {
            let mut out = Vec::with_capacity(appends.len());
            for append in appends {
                out.push(self.stage(store, append, &epochs, &mut overlay, &mut batch));
            }
            results.push(out);
        }
        let staged = results.iter().flatten().filter(|r| r.is_ok()).count();
        if staged > 0 {
            let started = std::time::Instant::now();
            let outcome = self.note(
                store
                    .journal
                    .apply_batch(batch)
                    .map_err(|e| sled_error("writing the journal batch", e))
                    .and_then(|()| self.make_durable(store, last_sync)),
            );
            if outcome.is_ok()
                && let Some(observer) = self.observer.get()
            {
                observer.committed(staged, started.elapsed());
            }
            if let Err(e) = outcome {
                for r in results.iter_mut().flatten() {
                    if r.is_ok() {
                        *r = Err(AppendError::Storage(e.clone()));
                    }
                }
            }
        }
        results
    }

    fn stage(
        &self,
        store: &Store,
        append: &EntityAppend,
        epochs: &HashMap<ShardId, u64>,
        overlay: &mut HashMap<Vec<u8>, u64>,
        batch: &mut sled::Batch,
    ) -> Result<(), AppendError> {
        let key = &append.key;
        if append.events.is_empty() {
            return Err(AppendError::Invalid {
                key: key.clone(),
                reason: "no events".into(),
            });
        }
        if append.fence.shard != key.shard {
            return Err(AppendError::Invalid {
                key: key.clone(),
                reason: format!("fence token is for shard {}", append.fence.shard),
            });
        }
        let current = epochs.get(&key.shard).copied().unwrap_or(0);
        if append.fence.epoch != current || current == 0 {
            return Err(AppendError::Fenced {
                shard: key.shard,
                presented: append.fence.epoch,
                current,
            });
        }
        let entity_key = keys::entity_key(key);
        let actual = match overlay.get(&entity_key) {
            Some(seq) => *seq,
            None => read_last_seq(store, key)?,
        };
        if actual != append.expected_seq_nr {
            return Err(AppendError::Conflict {
                key: key.clone(),
                expected: append.expected_seq_nr,
                actual,
            });
        }
        let mut seq = actual;
        for event in &append.events {
            seq += 1;
            batch.insert(keys::event_key(key, seq), event.encode());
        }
        if actual == 0 {
            // The index entry is written once, when the entity is created:
            // rewriting it per append would double sled's work per command.
            batch.insert(entity_key.clone(), &record::encode_entity(0)[..]);
        }
        overlay.insert(entity_key, seq);
        Ok(())
    }
}

/// The sequence number of the entity's last event: its last event key.
fn read_last_seq(store: &Store, key: &EntityKey) -> Result<u64, JournalError> {
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
    fn claim_shards(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, JournalError> {
        let tokens = self.with_store(|store| self.note(claim(self, store, shards)))?;
        let mut epochs = self.lock_epochs();
        for token in &tokens {
            epochs.insert(token.shard, token.epoch);
        }
        Ok(tokens)
    }

    fn append(&self, appends: Vec<EntityAppend>) -> Vec<Result<(), AppendError>> {
        let mut state = self.lock_commit();
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queue.push((ticket, appends));
        loop {
            if let Some(results) = state.results.remove(&ticket) {
                return results;
            }
            if state.leader_active {
                state = self
                    .committed
                    .wait(state)
                    .unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Become the leader for everything queued so far.
            state.leader_active = true;
            let group = std::mem::take(&mut state.queue);
            let last_sync = state.last_sync;
            drop(state);
            let started = SystemTime::now();
            // A panic in the store must not leave `leader_active` set, which
            // would block every later append: it fails this group instead.
            let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.commit_group(&group, last_sync)
            }))
            .unwrap_or_else(|_| {
                let error =
                    AppendError::Storage(JournalError::Io("the journal commit panicked".into()));
                group
                    .iter()
                    .map(|(_, appends)| vec![Err(error.clone()); appends.len()])
                    .collect()
            });
            state = self.lock_commit();
            // Blob files written before `started` were synced by this commit.
            state.last_sync = Some(started);
            for ((ticket, _), result) in group.into_iter().zip(results) {
                state.results.insert(ticket, result);
            }
            state.leader_active = false;
            self.committed.notify_all();
        }
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
        let start = keys::event_key(key, from.max(1));
        let end = keys::event_key(key, u64::MAX);
        self.with_store(|store| {
            let mut out = Vec::new();
            for item in store.journal.range(start..=end).take(limit) {
                let (k, v) = item.map_err(|e| sled_error("reading events", e))?;
                let seq_nr = match keys::decode(&k) {
                    Ok(keys::DecodedKey::Event(_, seq)) => seq,
                    Ok(other) => {
                        return Err(JournalError::Corrupt {
                            key: hex(&k),
                            reason: format!("expected an event key, found {other:?}"),
                        });
                    }
                    Err(e) => {
                        return Err(JournalError::Corrupt {
                            key: hex(&k),
                            reason: e.0,
                        });
                    }
                };
                let record = EventRecord::decode(&v).map_err(|e| JournalError::Corrupt {
                    key: hex(&k),
                    reason: e.0,
                })?;
                out.push(StoredEvent { seq_nr, record });
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

    #[test]
    fn the_sled_journal_passes_the_conformance_suite() {
        super::super::conformance::run_all(&|dir: &Path| open(dir));
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
                            events: vec![super::super::conformance::event("c", b"{}")],
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
}
