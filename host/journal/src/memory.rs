//! [`MemoryJournal`]: the journal contract held in memory, for unit tests of
//! the layers above and for benchmarks that measure everything but the
//! store. Never for production: nothing survives the process.
//!
//! A [`MemoryStore`] is the "database"; a [`MemoryJournal`] is one handle on
//! it (one node's connection). Leases are per handle, as they are per
//! opening of the sled journal: a new handle on the same store holds no
//! shard until it claims one, and a claim through another handle fences the
//! earlier holder. This is what lets the conformance suite "reopen" it.
//!
//! Invariants: every method takes the one store lock, so an append of many
//! entities is atomic per entity and ordered with every other call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use stead_types::effects::{SendCommand, Timer, TimerChange};

use crate::{
    Answer, AppendError, CommandIdRecord, CommitObserver, EntityAppend, EntityKey, EventRecord,
    FenceToken, FiredTimer, Journal, JournalError, PendingSend, PendingTimer, SendId, ShardId,
    SnapshotRecord, StoredEvent, StreamEvent,
};

/// The shared state behind [`MemoryJournal`] handles.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    /// Ordered, so a shard's entities list in key order as sled's do.
    events: BTreeMap<EntityKey, Vec<EventRecord>>,
    snapshots: HashMap<EntityKey, SnapshotRecord>,
    command_ids: BTreeMap<(EntityKey, String), CommandIdRecord>,
    /// Each shard's lease epoch (its last claim's).
    leases: HashMap<ShardId, u64>,
    outbox: BTreeMap<SendId, (SendCommand, Option<Answer>)>,
    /// (entity, timer name) -> (seq-nr that set it, timer).
    timers: BTreeMap<(EntityKey, String), (u64, Timer)>,
    /// Shard streams: (type, shard, position) -> (entity id, seq-nr).
    streams: BTreeMap<(String, ShardId, u64), (String, u64)>,
    /// Each shard's last stream position.
    positions: HashMap<ShardId, u64>,
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        // Every change is made in single steps under the lock: a panic
        // elsewhere leaves the store consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One handle on a [`MemoryStore`].
pub struct MemoryJournal {
    store: Arc<MemoryStore>,
    /// The epochs this handle claimed and still holds.
    held: Mutex<HashMap<ShardId, u64>>,
    observer: OnceLock<Arc<dyn CommitObserver>>,
}

impl MemoryJournal {
    /// A journal on a store of its own.
    pub fn new() -> Self {
        Self::on(MemoryStore::new())
    }

    /// A new handle on `store`, holding no lease.
    pub fn on(store: Arc<MemoryStore>) -> Self {
        Self {
            store,
            held: Mutex::new(HashMap::new()),
            observer: OnceLock::new(),
        }
    }

    fn held(&self) -> MutexGuard<'_, HashMap<ShardId, u64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store {
    /// Refuses a token unless this handle holds the shard's current lease
    /// under it.
    fn check_fence(
        &self,
        held: &HashMap<ShardId, u64>,
        fence: FenceToken,
    ) -> Result<(), AppendError> {
        let lease = self.leases.get(&fence.shard).copied().unwrap_or(0);
        let held_epoch = held.get(&fence.shard).copied();
        if held_epoch != Some(lease) || fence.epoch != lease {
            return Err(AppendError::Fenced {
                shard: fence.shard,
                presented: fence.epoch,
                current: if held_epoch.is_some() { lease } else { 0 },
            });
        }
        Ok(())
    }
}

impl Default for MemoryJournal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal for MemoryJournal {
    fn set_commit_observer(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.observer.set(observer);
    }

    fn claim_shards(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, JournalError> {
        let mut store = self.store.lock();
        let mut held = self.held();
        Ok(shards
            .iter()
            .map(|&shard| {
                let epoch = store.leases.get(&shard).copied().unwrap_or(0) + 1;
                store.leases.insert(shard, epoch);
                held.insert(shard, epoch);
                FenceToken { shard, epoch }
            })
            .collect())
    }

    fn renew_shards(&self, tokens: &[FenceToken]) -> Result<Vec<FenceToken>, JournalError> {
        let store = self.store.lock();
        let held = self.held();
        Ok(tokens
            .iter()
            .filter(|t| {
                held.get(&t.shard) == Some(&t.epoch) && store.leases.get(&t.shard) == Some(&t.epoch)
            })
            .copied()
            .collect())
    }

    fn lease_ttl(&self) -> Option<std::time::Duration> {
        None
    }

    fn release_shards(&self, tokens: &[FenceToken]) -> Result<(), JournalError> {
        let mut held = self.held();
        for token in tokens {
            if held.get(&token.shard) == Some(&token.epoch) {
                held.remove(&token.shard);
            }
        }
        Ok(())
    }

    fn append(&self, appends: Vec<EntityAppend>) -> Vec<Result<(), AppendError>> {
        let started = Instant::now();
        let mut store = self.store.lock();
        let held = self.held();
        let results: Vec<_> = appends
            .into_iter()
            .map(|append| {
                append.check()?;
                store.check_fence(&held, append.fence)?;
                let key = append.key;
                let events = store.events.entry(key.clone()).or_default();
                let actual = events.len() as u64;
                if append.expected_seq_nr != actual {
                    return Err(AppendError::Conflict {
                        key,
                        expected: append.expected_seq_nr,
                        actual,
                    });
                }
                let n = append.events.len() as u64;
                events.extend(append.events);
                let last = store.positions.entry(key.shard).or_insert(0);
                let first = *last + 1;
                *last += n;
                for (position, seq_nr) in (first..).zip(actual + 1..=actual + n) {
                    store.streams.insert(
                        (key.entity_type.clone(), key.shard, position),
                        (key.entity_id.clone(), seq_nr),
                    );
                }
                for record in append.command_ids {
                    store
                        .command_ids
                        .insert((key.clone(), record.command_id.clone()), record);
                }
                for send in append.sends {
                    let id = SendId {
                        source: key.clone(),
                        seq_nr: send.seq_nr,
                        index: send.index,
                    };
                    store.outbox.insert(id, (send.send, None));
                }
                for write in append.timers {
                    match write.change {
                        TimerChange::Set(timer) => {
                            store
                                .timers
                                .insert((key.clone(), timer.name.clone()), (write.seq_nr, timer));
                        }
                        TimerChange::Cancel(name) => {
                            store.timers.remove(&(key.clone(), name));
                        }
                    }
                }
                Ok(())
            })
            .collect();
        drop(held);
        drop(store);
        if let Some(observer) = self.observer.get() {
            let entities = results.iter().filter(|r| r.is_ok()).count();
            if entities > 0 {
                observer.committed(entities, started.elapsed());
            }
        }
        results
    }

    fn last_seq_nr(&self, key: &EntityKey) -> Result<u64, JournalError> {
        Ok(self
            .store
            .lock()
            .events
            .get(key)
            .map_or(0, |e| e.len() as u64))
    }

    fn read_events(
        &self,
        key: &EntityKey,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        let store = self.store.lock();
        let Some(events) = store.events.get(key) else {
            return Ok(Vec::new());
        };
        let skip = usize::try_from(from.saturating_sub(1)).unwrap_or(usize::MAX);
        Ok(events
            .iter()
            .zip(1u64..)
            .skip(skip)
            .take(limit)
            .map(|(record, seq_nr)| StoredEvent {
                seq_nr,
                record: record.clone(),
            })
            .collect())
    }

    fn save_snapshot(
        &self,
        key: &EntityKey,
        snapshot: &SnapshotRecord,
    ) -> Result<(), JournalError> {
        self.store
            .lock()
            .snapshots
            .insert(key.clone(), snapshot.clone());
        Ok(())
    }

    fn load_snapshot(&self, key: &EntityKey) -> Result<Option<SnapshotRecord>, JournalError> {
        Ok(self.store.lock().snapshots.get(key).cloned())
    }

    fn read_stream(
        &self,
        entity_type: &str,
        from: &[(ShardId, u64)],
        limit: usize,
    ) -> Result<Vec<StreamEvent>, JournalError> {
        let store = self.store.lock();
        let mut out = Vec::new();
        for &(shard, after) in from {
            let start = (entity_type.to_owned(), shard, after.saturating_add(1));
            let end = (entity_type.to_owned(), shard, u64::MAX);
            for ((_, _, position), (id, seq_nr)) in store.streams.range(start..=end).take(limit) {
                let key = EntityKey::new(shard, entity_type, id);
                let record = store
                    .events
                    .get(&key)
                    .and_then(|e| e.get(usize::try_from(*seq_nr).ok()?.checked_sub(1)?))
                    .cloned()
                    .ok_or_else(|| JournalError::Corrupt {
                        key: format!("{key}@{seq_nr}"),
                        reason: "the stream points at a missing event".into(),
                    })?;
                out.push(StreamEvent {
                    shard,
                    position: *position,
                    entity_id: id.clone(),
                    event: StoredEvent {
                        seq_nr: *seq_nr,
                        record,
                    },
                });
            }
        }
        Ok(out)
    }

    fn entities_in_shard(&self, shard: ShardId) -> Result<Vec<(String, String)>, JournalError> {
        Ok(self
            .store
            .lock()
            .events
            .iter()
            .filter(|(key, events)| key.shard == shard && !events.is_empty())
            .map(|(key, _)| (key.entity_type.clone(), key.entity_id.clone()))
            .collect())
    }

    fn find_command_id(
        &self,
        key: &EntityKey,
        command_id: &str,
    ) -> Result<Option<CommandIdRecord>, JournalError> {
        Ok(self
            .store
            .lock()
            .command_ids
            .get(&(key.clone(), command_id.to_owned()))
            .cloned())
    }

    fn expire_command_ids(
        &self,
        fence: FenceToken,
        before_ms: u64,
        limit: usize,
    ) -> Result<usize, AppendError> {
        let mut store = self.store.lock();
        store.check_fence(&self.held(), fence)?;
        let mut expired: Vec<(u64, (EntityKey, String))> = store
            .command_ids
            .iter()
            .filter(|((key, _), record)| key.shard == fence.shard && record.at_ms < before_ms)
            .map(|(k, record)| (record.at_ms, k.clone()))
            .collect();
        expired.sort();
        expired.truncate(limit);
        for (_, k) in &expired {
            store.command_ids.remove(k);
        }
        Ok(expired.len())
    }

    fn read_outbox(
        &self,
        shard: ShardId,
        after: Option<&SendId>,
        limit: usize,
    ) -> Result<Vec<PendingSend>, JournalError> {
        let store = self.store.lock();
        Ok(store
            .outbox
            .iter()
            .filter(|(id, _)| id.source.shard == shard && after.is_none_or(|a| *id > a))
            .take(limit)
            .map(|(id, (send, answer))| PendingSend {
                id: id.clone(),
                send: send.clone(),
                answer: *answer,
            })
            .collect())
    }

    fn answer_sends(
        &self,
        fence: FenceToken,
        answers: &[(SendId, Answer)],
    ) -> Result<(), AppendError> {
        let mut store = self.store.lock();
        store.check_fence(&self.held(), fence)?;
        for (id, answer) in answers
            .iter()
            .filter(|(id, _)| id.source.shard == fence.shard)
        {
            if let Some((_, slot @ None)) = store.outbox.get_mut(id) {
                *slot = Some(*answer);
            }
        }
        Ok(())
    }

    fn ack_sends(&self, fence: FenceToken, ids: &[SendId]) -> Result<(), AppendError> {
        let mut store = self.store.lock();
        store.check_fence(&self.held(), fence)?;
        for id in ids.iter().filter(|id| id.source.shard == fence.shard) {
            store.outbox.remove(id);
        }
        Ok(())
    }

    fn read_timers(
        &self,
        shard: ShardId,
        after: Option<(&EntityKey, &str)>,
        limit: usize,
    ) -> Result<Vec<PendingTimer>, JournalError> {
        let store = self.store.lock();
        Ok(store
            .timers
            .iter()
            .filter(|((key, name), _)| {
                key.shard == shard && after.is_none_or(|(k, n)| (key, name.as_str()) > (k, n))
            })
            .take(limit)
            .map(|((key, _), (seq_nr, timer))| PendingTimer {
                key: key.clone(),
                seq_nr: *seq_nr,
                timer: timer.clone(),
            })
            .collect())
    }

    fn ack_timers(&self, fence: FenceToken, fired: &[FiredTimer]) -> Result<(), AppendError> {
        let mut store = self.store.lock();
        store.check_fence(&self.held(), fence)?;
        for f in fired.iter().filter(|f| f.key.shard == fence.shard) {
            let slot = (f.key.clone(), f.name.clone());
            if store
                .timers
                .get(&slot)
                .is_some_and(|(seq, _)| *seq == f.seq_nr)
            {
                store.timers.remove(&slot);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    #[test]
    fn the_memory_journal_passes_the_conformance_suite() {
        // "Reopening" a directory is a new handle on that directory's store.
        let stores: Mutex<HashMap<PathBuf, Arc<MemoryStore>>> = Mutex::new(HashMap::new());
        crate::conformance::run_all(&|dir: &Path| {
            let mut stores = stores.lock().unwrap_or_else(|p| p.into_inner());
            let store = stores.entry(dir.to_owned()).or_default();
            MemoryJournal::on(store.clone())
        });
    }
}
