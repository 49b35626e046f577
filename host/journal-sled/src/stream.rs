//! Shard streams in sled: positions, their durable watermark, and reads.
//!
//! Each event appended gets the next position of its shard, written in the
//! same batch as the event: a stream key `shard 0x07 type position` whose
//! value points at the event (`id:str16 seq:u64be`), and the shard's last
//! position under `shard 0x08`. Positions are assigned under the shard's
//! apply stripe, so they follow commit order.
//!
//! Invariant: a reader sees positions up to the shard's **durable
//! watermark** only, raised after the flush that made them durable. A
//! position applied but lost to a crash before its flush is never read, so
//! reusing it after the restart cannot make a cursor skip an event.
//!
//! A journal written before streams has no `0x08` key for a shard: its
//! events are given positions in (type, id, seq-nr) order the first time
//! the shard's stream is loaded (each entity's order is kept; the order
//! between entities of that history is not known).

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
        match store
            .journal
            .get(keys::position_key(shard))
            .map_err(|e| sled_error("reading a stream position", e))?
        {
            Some(v) => Ok((decode_u64(&v, &keys::position_key(shard))?, false)),
            None => Ok((backfill(store, shard)?, true)),
        }
    }

    /// Caches a shard's stream read by [`Streams::read`] (durable).
    pub(crate) fn insert(&mut self, shard: ShardId, last: u64) {
        self.shards.entry(shard).or_insert(ShardStream {
            last,
            durable: last,
        });
    }

    /// Assigns the next `n` positions of a loaded `shard`; the first.
    pub(crate) fn assign(&mut self, shard: ShardId, n: u64) -> u64 {
        let s = self
            .shards
            .get_mut(&shard)
            .expect("a shard's stream is loaded before positions are assigned");
        let first = s.last + 1;
        s.last += n;
        first
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

/// The value of a stream key: the event's entity id and seq-nr.
pub(crate) fn encode_pointer(entity_id: &str, seq_nr: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(2 + entity_id.len() + 8);
    out.extend_from_slice(&(entity_id.len() as u16).to_be_bytes());
    out.extend_from_slice(entity_id.as_bytes());
    out.extend_from_slice(&seq_nr.to_be_bytes());
    out
}

fn decode_pointer(bytes: &[u8], key: &[u8]) -> Result<(String, u64), JournalError> {
    let corrupt = |reason: &str| JournalError::Corrupt {
        key: hex(key),
        reason: reason.to_owned(),
    };
    let len = bytes
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| corrupt("a stream pointer without its id"))?;
    if bytes.len() != 2 + len + 8 {
        return Err(corrupt("a stream pointer of the wrong length"));
    }
    let id = std::str::from_utf8(&bytes[2..2 + len])
        .map_err(|_| corrupt("a stream pointer's id is not UTF-8"))?;
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&bytes[2 + len..]);
    Ok((id.to_owned(), u64::from_be_bytes(seq)))
}

fn decode_u64(bytes: &[u8], key: &[u8]) -> Result<u64, JournalError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| JournalError::Corrupt {
        key: hex(key),
        reason: "a stream position is not 8 bytes".into(),
    })?;
    Ok(u64::from_be_bytes(array))
}

/// The pointers of `entity_type`'s events in `shard` after `after`, up to
/// `upto` (the durable watermark), at most `limit`.
pub(crate) fn pointers(
    store: &Store,
    entity_type: &str,
    shard: ShardId,
    after: u64,
    upto: u64,
    limit: usize,
) -> Result<Vec<(u64, String, u64)>, JournalError> {
    if after >= upto || limit == 0 {
        return Ok(Vec::new());
    }
    let start = keys::stream_key(entity_type, shard, after + 1);
    let end = keys::stream_key(entity_type, shard, upto);
    let mut out = Vec::new();
    for item in store.journal.range(start..=end).take(limit) {
        let (k, v) = item.map_err(|e| sled_error("reading a stream", e))?;
        let position = match keys::decode(&k) {
            Ok(keys::DecodedKey::Stream { position, .. }) => position,
            Ok(other) => {
                return Err(JournalError::Corrupt {
                    key: hex(&k),
                    reason: format!("expected a stream key, found {other:?}"),
                });
            }
            Err(e) => {
                return Err(JournalError::Corrupt {
                    key: hex(&k),
                    reason: e.0,
                });
            }
        };
        let (id, seq_nr) = decode_pointer(&v, &k)?;
        out.push((position, id, seq_nr));
    }
    Ok(out)
}

/// Reads an entity's events (`Journal::read_events`).
pub(crate) type ReadEvents<'a> =
    dyn Fn(&EntityKey, u64, usize) -> Result<Vec<stead_journal::StoredEvent>, JournalError> + 'a;

/// Resolves pointers to events, reading each run of one entity's
/// consecutive events at once.
pub(crate) fn resolve(
    read: &ReadEvents<'_>,
    entity_type: &str,
    shard: ShardId,
    pointers: Vec<(u64, String, u64)>,
) -> Result<Vec<StreamEvent>, JournalError> {
    let mut out = Vec::with_capacity(pointers.len());
    let mut i = 0;
    while i < pointers.len() {
        let (_, id, first) = &pointers[i];
        let mut run = 1;
        while let Some((_, next_id, seq)) = pointers.get(i + run)
            && next_id == id
            && *seq == first + run as u64
        {
            run += 1;
        }
        let key = EntityKey::new(shard, entity_type, id);
        let events = read(&key, *first, run)?;
        if events.len() != run {
            return Err(JournalError::Corrupt {
                key: format!("{key}@{first}"),
                reason: format!(
                    "the stream points at {run} events from seq-nr {first}, the journal holds {}",
                    events.len()
                ),
            });
        }
        for (event, (position, id, _)) in events.into_iter().zip(&pointers[i..i + run]) {
            out.push(StreamEvent {
                shard,
                position: *position,
                entity_id: id.clone(),
                event,
            });
        }
        i += run;
    }
    Ok(out)
}

/// Gives positions to the events of a shard written before streams, in
/// (type, id, seq-nr) order, durably; returns the last one.
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
        for seq_nr in 1..=n {
            last += 1;
            batch.insert(
                keys::stream_key(&key.entity_type, shard, last),
                encode_pointer(&key.entity_id, seq_nr),
            );
        }
    }
    batch.insert(keys::position_key(shard), &last.to_be_bytes()[..]);
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
