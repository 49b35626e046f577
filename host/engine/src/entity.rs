//! An active entity: its state bytes, sequence numbers and dedup window, and
//! how it is recovered from the journal (activation).
//!
//! Invariant: `seq_nr` is the last event folded into `state`; between batches
//! it equals `durable_seq_nr` (the worker never exposes undurable state
//! outside a batch). The dedup window holds only commands whose events are
//! in the journal, with the sequence number of their last event, where the
//! command id and reply are stored.

use std::collections::VecDeque;

use stead_journal::{AsyncJournal, EntityKey, JournalError, SnapshotRecord};
use stead_runtime::{GuestFault, GuestInstance};
use stead_types::shard::command_id_hash;

/// Events read per journal call during activation, and at most this many
/// folded per guest call.
const REPLAY_CHUNK: usize = 1024;
/// At most this many payload bytes folded per guest call (the guest holds
/// them all in its linear memory at once).
const REPLAY_BATCH_BYTES: usize = 1 << 20;

/// Remembered commands: `(hash of command id, seq-nr of its last event)`.
#[derive(Debug, Default, Clone)]
pub(crate) struct DedupWindow {
    entries: VecDeque<(u64, u64)>,
}

impl DedupWindow {
    pub(crate) fn from_entries(entries: Vec<(u64, u64)>, capacity: usize) -> Self {
        let mut window = Self {
            entries: entries.into(),
        };
        window.trim(capacity);
        window
    }

    pub(crate) fn push(&mut self, command_id: &str, seq_nr: u64, capacity: usize) {
        if self.entries.capacity() == 0 {
            // Most entities stay active with few commands: room for one entry
            // (16 bytes) instead of the default first growth to four.
            self.entries.reserve_exact(1);
        }
        self.entries
            .push_back((command_id_hash(command_id), seq_nr));
        self.trim(capacity);
    }

    fn trim(&mut self, capacity: usize) {
        while self.entries.len() > capacity {
            self.entries.pop_front();
        }
        if self.entries.is_empty() {
            // Give back the allocation of a window that had entries once.
            self.entries = VecDeque::new();
        }
    }

    /// Sequence numbers of remembered commands whose id hashes like
    /// `command_id`, newest first (the caller confirms against the journal).
    pub(crate) fn candidates(&self, command_id: &str) -> impl Iterator<Item = u64> + '_ {
        let hash = command_id_hash(command_id);
        self.entries
            .iter()
            .rev()
            .filter(move |(h, _)| *h == hash)
            .map(|(_, seq)| *seq)
    }

    pub(crate) fn entries(&self) -> Vec<(u64, u64)> {
        self.entries.iter().copied().collect()
    }
}

/// An entity in a worker's memory.
#[derive(Debug)]
pub(crate) struct ActiveEntity {
    pub(crate) state: Vec<u8>,
    pub(crate) seq_nr: u64,
    pub(crate) durable_seq_nr: u64,
    pub(crate) snapshot_seq_nr: u64,
    pub(crate) dedup: DedupWindow,
    /// Worker clock (ms since the worker started) of the last use.
    pub(crate) last_used_ms: u64,
}

/// Why an entity could not be activated.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ActivationError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Guest(#[from] GuestFault),
    #[error("journal gap in {key}: expected seq-nr {expected}, found {found}")]
    Gap {
        key: EntityKey,
        expected: u64,
        found: u64,
    },
}

/// Recovers an entity: latest snapshot (unless `ignore_snapshot`), then the
/// later events folded in batches (`apply-events`, or `apply-event` per event
/// for components without it), reading only this entity's range.
pub(crate) async fn activate(
    journal: &dyn AsyncJournal,
    instance: &mut GuestInstance,
    key: &EntityKey,
    dedup_capacity: usize,
    ignore_snapshot: bool,
) -> Result<ActiveEntity, ActivationError> {
    let snapshot = if ignore_snapshot {
        None
    } else {
        journal.load_snapshot(key).await?
    };
    let (mut state, mut seq_nr, mut dedup, snapshot_seq_nr) = match snapshot {
        Some(SnapshotRecord {
            seq_nr,
            state,
            dedup,
            ..
        }) => (
            state,
            seq_nr,
            DedupWindow::from_entries(dedup, dedup_capacity),
            seq_nr,
        ),
        None => (
            instance.initial_state(&key.entity_type, &key.entity_id)?,
            0,
            DedupWindow::default(),
            0,
        ),
    };
    let mut batch: Vec<Vec<u8>> = Vec::new();
    let mut batch_bytes = 0;
    loop {
        let events = journal.read_events(key, seq_nr + 1, REPLAY_CHUNK).await?;
        let done = events.len() < REPLAY_CHUNK;
        for event in events {
            if event.seq_nr != seq_nr + 1 {
                return Err(ActivationError::Gap {
                    key: key.clone(),
                    expected: seq_nr + 1,
                    found: event.seq_nr,
                });
            }
            seq_nr = event.seq_nr;
            if event.record.reply.is_some() {
                dedup.push(&event.record.command_id, seq_nr, dedup_capacity);
            }
            if !batch.is_empty() && batch_bytes + event.record.payload.len() > REPLAY_BATCH_BYTES {
                state = fold(instance, key, &state, &mut batch)?;
                batch_bytes = 0;
            }
            batch_bytes += event.record.payload.len();
            batch.push(event.record.payload);
        }
        if !batch.is_empty() {
            state = fold(instance, key, &state, &mut batch)?;
            batch_bytes = 0;
        }
        if done {
            break;
        }
    }
    Ok(ActiveEntity {
        state,
        seq_nr,
        durable_seq_nr: seq_nr,
        snapshot_seq_nr,
        dedup,
        last_used_ms: 0,
    })
}

/// Folds (and empties) one batch of event payloads into `state`.
fn fold(
    instance: &mut GuestInstance,
    key: &EntityKey,
    state: &[u8],
    batch: &mut Vec<Vec<u8>>,
) -> Result<Vec<u8>, GuestFault> {
    let state = instance.apply_events(&key.entity_type, &key.entity_id, state, batch);
    batch.clear();
    state
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dedup_window_keeps_the_newest_entries_up_to_its_capacity() {
        let mut w = DedupWindow::default();
        for i in 0..10u64 {
            w.push(&format!("c{i}"), i + 1, 4);
        }
        assert_eq!(w.entries().len(), 4);
        assert_eq!(w.candidates("c9").collect::<Vec<_>>(), vec![10]);
        assert_eq!(w.candidates("c6").collect::<Vec<_>>(), vec![7]);
        assert_eq!(w.candidates("c5").count(), 0, "evicted");
    }

    #[test]
    fn a_window_restored_from_a_snapshot_is_trimmed_to_capacity() {
        let w = DedupWindow::from_entries((0..10).map(|i| (i, i)).collect(), 3);
        assert_eq!(w.entries(), vec![(7, 7), (8, 8), (9, 9)]);
    }
}
