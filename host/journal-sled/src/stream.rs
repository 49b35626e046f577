//! Shard streams in sled: positions, their durable watermark, and reads.
//!
//! The events one batch appends to a shard get the shard's next positions,
//! in the order of the call, and **one** key records them, written in the
//! same batch: `shard 0x07 last-position`, whose value lists the batch's
//! runs of events in that shard (`type id first-seq count` each); the runs'
//! positions are contiguous and end at the key's. One key per shard per
//! batch, not per event: a key per event halved the engine's throughput.
//! Keyed by the *last* position, like event pages, a forward range from a
//! position starts at the entry holding it. Positions are assigned under
//! the shard's apply stripe, so they follow commit order.
//!
//! Invariant: a reader sees positions up to the shard's **durable
//! watermark** only, raised after the flush that made them durable. A
//! position applied but lost to a crash before its flush is never read, so
//! reusing it after the restart cannot make a cursor skip an event.
//!
//! A journal written before streams has entities but no stream entry in a
//! shard: its events get positions, one entry per entity in (type, id)
//! order, the first time the shard's stream is loaded (each entity's order
//! is kept; the order between entities of that history is not known).

use std::collections::HashMap;

use stead_journal::{EntityKey, JournalError, ShardId, StreamEvent};

use crate::keys;
use crate::{Store, hex, sled_error};

/// What the journal knows of one shard's stream.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShardStream {
    /// The last position assigned (applied, perhaps not yet durable).
    pub(crate) last: u64,
    /// The last position known durable: readers stop there.
    pub(crate) durable: u64,
}

/// The shards' streams, loaded on first use.
#[derive(Debug, Default)]
pub(crate) struct Streams {
    shards: HashMap<ShardId, ShardStream>,
}

/// A run of one entity's events in a batch entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) entity_type: String,
    pub(crate) entity_id: String,
    pub(crate) first_seq: u64,
    pub(crate) count: u32,
}

impl Streams {
    /// The stream of `shard` if loaded.
    pub(crate) fn get(&self, shard: ShardId) -> Option<ShardStream> {
        self.shards.get(&shard).copied()
    }

    /// Reads `shard`'s last position from the store (for an older journal,
    /// first giving its events positions: `true` then, and the caller makes
    /// that durable before [`Streams::insert`]). Everything the store held
    /// when it was opened is durable (the journal syncs at open), and the
    /// caller holds the shard's apply stripe, so nothing newer is there.
    pub(crate) fn read(store: &Store, shard: ShardId) -> Result<(u64, bool), JournalError> {
        let prefix = keys::section_prefix(shard, keys::SECTION_STREAM);
        if let Some(item) = store.journal.scan_prefix(&prefix).next_back() {
            let (k, _) = item.map_err(|e| sled_error("reading a stream position", e))?;
            return Ok((position_of(&k)?, false));
        }
        let entities = keys::section_prefix(shard, keys::SECTION_ENTITY);
        if store.journal.scan_prefix(&entities).next().is_none() {
            return Ok((0, false));
        }
        Ok((backfill(store, shard)?, true))
    }

    /// Caches a shard's stream read by [`Streams::read`] (durable).
    pub(crate) fn insert(&mut self, shard: ShardId, last: u64) {
        self.shards.entry(shard).or_insert(ShardStream {
            last,
            durable: last,
        });
    }

    /// Assigns the next `n` positions of a loaded `shard`; the last.
    pub(crate) fn assign(&mut self, shard: ShardId, n: u64) -> u64 {
        let s = self
            .shards
            .get_mut(&shard)
            .expect("a shard's stream is loaded before positions are assigned");
        s.last += n;
        s.last
    }

    /// Raises `shard`'s durable watermark to `position`.
    pub(crate) fn durable(&mut self, shard: ShardId, position: u64) {
        if let Some(s) = self.shards.get_mut(&shard) {
            s.durable = s.durable.max(position);
        }
    }

    /// Forgets every shard (the store was reopened: what was applied but
    /// not flushed may be gone).
    pub(crate) fn clear(&mut self) {
        self.shards.clear();
    }
}

fn position_of(key: &[u8]) -> Result<u64, JournalError> {
    match keys::decode(key) {
        Ok(keys::DecodedKey::Stream { position, .. }) => Ok(position),
        Ok(other) => Err(JournalError::Corrupt {
            key: hex(key),
            reason: format!("expected a stream key, found {other:?}"),
        }),
        Err(e) => Err(JournalError::Corrupt {
            key: hex(key),
            reason: e.0,
        }),
    }
}

/// The value of a batch entry: `runs:u32be` then each run's `type:str16
/// id:str16 first_seq:u64be count:u32be`.
pub(crate) fn encode_runs(runs: &[Run]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + runs.len() * 48);
    out.extend_from_slice(&(runs.len() as u32).to_be_bytes());
    for run in runs {
        for s in [&run.entity_type, &run.entity_id] {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out.extend_from_slice(&run.first_seq.to_be_bytes());
        out.extend_from_slice(&run.count.to_be_bytes());
    }
    out
}

fn decode_runs(bytes: &[u8], key: &[u8]) -> Result<Vec<Run>, JournalError> {
    let corrupt = || JournalError::Corrupt {
        key: hex(key),
        reason: "a malformed stream entry".into(),
    };
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], JournalError> {
        let end = at
            .checked_add(n)
            .filter(|e| *e <= bytes.len())
            .ok_or_else(corrupt)?;
        let out = &bytes[at..end];
        at = end;
        Ok(out)
    };
    let count = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt())?);
    let mut runs = Vec::with_capacity(count.min(4096) as usize);
    for _ in 0..count {
        let mut strs = Vec::with_capacity(2);
        for _ in 0..2 {
            let len = u16::from_be_bytes(take(2)?.try_into().map_err(|_| corrupt())?) as usize;
            let s = std::str::from_utf8(take(len)?).map_err(|_| corrupt())?;
            strs.push(s.to_owned());
        }
        let first_seq = u64::from_be_bytes(take(8)?.try_into().map_err(|_| corrupt())?);
        let n = u32::from_be_bytes(take(4)?.try_into().map_err(|_| corrupt())?);
        let entity_id = strs.pop().ok_or_else(corrupt)?;
        let entity_type = strs.pop().ok_or_else(corrupt)?;
        runs.push(Run {
            entity_type,
            entity_id,
            first_seq,
            count: n,
        });
    }
    if at != bytes.len() {
        return Err(corrupt());
    }
    Ok(runs)
}

/// The `(first position, entity id, first seq-nr, count)` runs of
/// `entity_type`'s events in `shard` after `after`, up to `upto` (the
/// durable watermark), at most `limit` events in all.
pub(crate) fn pointers(
    store: &Store,
    entity_type: &str,
    shard: ShardId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<(u64, String, u64, usize)>, JournalError> {
    if after >= upto || limit == 0 {
        return Ok(Vec::new());
    }
    let start = keys::stream_key(shard, after + 1);
    let end = keys::stream_key(shard, upto);
    let mut out = Vec::new();
    let mut left = limit;
    for item in store.journal.range(start..=end) {
        let (k, v) = item.map_err(|e| sled_error("reading a stream", e))?;
        let last = position_of(&k)?;
        let runs = decode_runs(&v, &k)?;
        let total: u64 = runs.iter().map(|r| u64::from(r.count)).sum();
        let mut position = (last + 1)
            .checked_sub(total)
            .ok_or_else(|| JournalError::Corrupt {
                key: hex(&k),
                reason: "a stream entry with more events than positions".into(),
            })?;
        for run in runs {
            let (first, n) = (position, u64::from(run.count));
            position += n;
            if run.entity_type != entity_type || first + n - 1 <= after {
                continue;
            }
            // Part of the run may be at or before `after`.
            let skip = after.saturating_sub(first - 1).min(n);
            let take = (n - skip).min(left as u64);
            if take == 0 {
                continue;
            }
            out.push((
                first + skip,
                run.entity_id,
                run.first_seq + skip,
                take as usize,
            ));
            left -= take as usize;
            if left == 0 {
                return Ok(out);
            }
        }
    }
    Ok(out)
}

/// Reads an entity's events (`Journal::read_events`).
pub(crate) type ReadEvents<'a> =
    dyn Fn(&EntityKey, u64, usize) -> Result<Vec<stead_journal::StoredEvent>, JournalError> + 'a;

/// Resolves runs to events, one read of each.
pub(crate) fn resolve(
    read: &ReadEvents<'_>,
    entity_type: &str,
    shard: ShardId,
    runs: Vec<(u64, String, u64, usize)>,
) -> Result<Vec<StreamEvent>, JournalError> {
    let mut out = Vec::new();
    for (position, id, first, n) in runs {
        let key = EntityKey::new(shard, entity_type, &id);
        let events = read(&key, first, n)?;
        if events.len() != n || events.first().map(|e| e.seq_nr) != Some(first) {
            return Err(JournalError::Corrupt {
                key: format!("{key}@{first}"),
                reason: format!(
                    "the stream points at {n} events from seq-nr {first}, the journal holds {}",
                    events.len()
                ),
            });
        }
        for (i, event) in events.into_iter().enumerate() {
            out.push(StreamEvent {
                shard,
                position: position + i as u64,
                entity_id: id.clone(),
                event,
            });
        }
    }
    Ok(out)
}

/// Gives positions to the events of a shard written before streams, one
/// entry per entity in (type, id) order, durably; returns the last one.
fn backfill(store: &Store, shard: ShardId) -> Result<u64, JournalError> {
    let mut batch = sled::Batch::default();
    let mut last = 0u64;
    let prefix = keys::section_prefix(shard, keys::SECTION_ENTITY);
    for item in store.journal.scan_prefix(&prefix) {
        let (k, _) = item.map_err(|e| sled_error("listing a shard's entities", e))?;
        let Ok(keys::DecodedKey::Entity(key)) = keys::decode(&k) else {
            return Err(JournalError::Corrupt {
                key: hex(&k),
                reason: "expected an entity key".into(),
            });
        };
        let n = crate::read_last_seq(store, &key)?;
        // Runs of at most u32::MAX events each.
        let mut from = 1u64;
        while from <= n {
            let count = (n - from + 1).min(u64::from(u32::MAX));
            last += count;
            let run = Run {
                entity_type: key.entity_type.clone(),
                entity_id: key.entity_id.clone(),
                first_seq: from,
                count: count as u32,
            };
            batch.insert(keys::stream_key(shard, last), encode_runs(&[run]));
            from += count;
        }
    }
    store
        .journal
        .apply_batch(batch)
        .map_err(|e| sled_error("giving an older shard's events stream positions", e))?;
    if last > 0 {
        tracing::info!(
            shard,
            events = last,
            "gave an older shard's events stream positions"
        );
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_round_trip_and_malformed_ones_are_corrupt() {
        let runs = vec![
            Run {
                entity_type: "account".into(),
                entity_id: "a-é".into(),
                first_seq: 7,
                count: 3,
            },
            Run {
                entity_type: "cart".into(),
                entity_id: String::new(),
                first_seq: 1,
                count: 1,
            },
        ];
        let bytes = encode_runs(&runs);
        assert_eq!(decode_runs(&bytes, b"k"), Ok(runs));
        for cut in [0, 3, 5, bytes.len() - 1] {
            assert!(decode_runs(&bytes[..cut], b"k").is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_runs(&longer, b"k").is_err());
    }
}
