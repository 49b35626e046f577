//! Key layout of the journal in an ordered key-value store.
//!
//! ```text
//! key     = shard:u32be section:u8 type:str id:str [seq:u64be]
//! str     = len:u16be bytes
//! section = 0x00 entity (index entry, written when the entity is created)
//!         | 0x01 events (key has seq: the last event's of the page under it,
//!                        or TAIL for the entity's open page; value: a page
//!                        of EventRecords, or one EventRecord in journals
//!                        written before pages)
//!         | 0x02 snapshot (value: SnapshotRecord)
//!         | 0x03 command id: key ends in command_id:str (value: its
//!                        CommandIdRecord: seq-nr, time, digest)
//!         | 0x05 outbox: key ends in seq:u64be index:u32be (value: a pending
//!                        send, `record::encode_send`)
//!         | 0x06 timer: key ends in name:str (value: seq-nr that set it,
//!                        fire-at, command: `record::encode_timer`)
//! stream  = shard:u32be 0x07 position:u64be (value: the runs of events
//!           one batch appended to the shard, their positions ending at the
//!           key's; see `stream`): one key per shard per batch, not per event
//! expiry  = shard:u32be 0x04 at_ms:u64be unique:u64be (value: the list of
//!           (type, id, command id) one append indexed in the shard at that
//!           time): one key per shard per append, not per command (keys of
//!           one time written per command made one sled leaf a hot spot),
//!           in the order they expire, so a sweep reads only what it removes
//! ```
//!
//! An entity's newest events are in its **tail** page (seq = [`TAIL`]); an
//! append rewrites the tail, and when the tail is full it is sealed under the
//! sequence number of its last event. Keying sealed pages by their *last*
//! sequence number lets a forward range read from `event_key(from)` start at
//! the page holding `from`.
//!
//! Invariants: all keys of one shard form one contiguous range (the shard is
//! the prefix), so a shard can be scanned or handed over as a unit; the
//! events of one entity are one contiguous range ordered by sequence number
//! (big-endian), so recovery reads exactly that entity's events and no
//! others; the entity section lists a shard's entities without touching its
//! events.

use stead_journal::{EntityKey, ShardId};

pub const SECTION_ENTITY: u8 = 0x00;
pub const SECTION_EVENT: u8 = 0x01;
pub const SECTION_SNAPSHOT: u8 = 0x02;
pub const SECTION_COMMAND: u8 = 0x03;
pub const SECTION_EXPIRY: u8 = 0x04;
pub const SECTION_OUTBOX: u8 = 0x05;
pub const SECTION_TIMER: u8 = 0x06;
pub const SECTION_STREAM: u8 = 0x07;

/// The sequence number in the key of an entity's tail page.
pub const TAIL: u64 = u64::MAX;

/// Longest entity type or id the key format holds.
pub const MAX_KEY_STR: usize = u16::MAX as usize;

/// A key that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed journal key: {0}")]
pub struct KeyError(pub String);

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Callers validate lengths before building keys; truncating here would
    // alias two entities, so refuse loudly instead (never reached by input).
    let len =
        u16::try_from(s.len()).expect("entity type/id length is validated before keys are built");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `shard section`: the prefix of a section of a shard.
pub fn section_prefix(shard: ShardId, section: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(5);
    out.extend_from_slice(&shard.to_be_bytes());
    out.push(section);
    out
}

/// `shard section type id`: the prefix shared by an entity's keys of a section.
pub fn entity_prefix(key: &EntityKey, section: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.entity_type.len() + key.entity_id.len() + 8);
    out.extend_from_slice(&key.shard.to_be_bytes());
    out.push(section);
    push_str(&mut out, &key.entity_type);
    push_str(&mut out, &key.entity_id);
    out
}

/// The key of an entity's index entry (lists the entities of a shard).
pub fn entity_key(key: &EntityKey) -> Vec<u8> {
    entity_prefix(key, SECTION_ENTITY)
}

/// The key of an entity's snapshot.
pub fn snapshot_key(key: &EntityKey) -> Vec<u8> {
    entity_prefix(key, SECTION_SNAPSHOT)
}

/// The key of the event page whose last event is `seq_nr` ([`TAIL`]: the
/// entity's open page).
pub fn event_key(key: &EntityKey, seq_nr: u64) -> Vec<u8> {
    let mut out = entity_prefix(key, SECTION_EVENT);
    out.extend_from_slice(&seq_nr.to_be_bytes());
    out
}

/// The key of an entity's index entry of a caller-given command id.
pub fn command_key(key: &EntityKey, command_id: &str) -> Vec<u8> {
    let mut out = entity_prefix(key, SECTION_COMMAND);
    push_str(&mut out, command_id);
    out
}

/// The key of a pending send: its source entity, the seq-nr of its
/// command's last event and its index among that command's sends.
pub fn outbox_key(key: &EntityKey, seq_nr: u64, index: u32) -> Vec<u8> {
    let mut out = entity_prefix(key, SECTION_OUTBOX);
    out.extend_from_slice(&seq_nr.to_be_bytes());
    out.extend_from_slice(&index.to_be_bytes());
    out
}

/// The key of an entity's timer of `name`.
pub fn timer_key(key: &EntityKey, name: &str) -> Vec<u8> {
    let mut out = entity_prefix(key, SECTION_TIMER);
    push_str(&mut out, name);
    out
}

/// The key of the batch entry of `shard`'s stream whose last position is
/// `position`.
pub fn stream_key(shard: ShardId, position: u64) -> Vec<u8> {
    let mut out = section_prefix(shard, SECTION_STREAM);
    out.extend_from_slice(&position.to_be_bytes());
    out
}

/// The key of one append's expiry list in `shard`: its time and a number
/// unique to the append.
pub fn expiry_key(shard: ShardId, at_ms: u64, unique: u64) -> Vec<u8> {
    let mut out = section_prefix(shard, SECTION_EXPIRY);
    out.extend_from_slice(&at_ms.to_be_bytes());
    out.extend_from_slice(&unique.to_be_bytes());
    out
}

/// One entry of an expiry list: an entity's type and id and a command id.
pub type ExpiryEntry = (String, String, String);

/// Encodes an expiry list (`count:u32be` then `type id command_id` strs).
pub fn encode_expiry_list(entries: &[ExpiryEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * 48);
    let count = u32::try_from(entries.len()).expect("an append indexes far fewer than 2^32 ids");
    out.extend_from_slice(&count.to_be_bytes());
    for (entity_type, entity_id, command_id) in entries {
        push_str(&mut out, entity_type);
        push_str(&mut out, entity_id);
        push_str(&mut out, command_id);
    }
    out
}

/// Decodes an expiry list, refusing anything malformed or with trailing bytes.
pub fn decode_expiry_list(bytes: &[u8]) -> Result<Vec<ExpiryEntry>, KeyError> {
    let mut r = Reader { bytes, pos: 0 };
    let count = u32::from_be_bytes(r.array::<4>()?) as usize;
    // Each entry takes at least 6 bytes: a claimed count past that is refused
    // before allocating for it.
    if count > bytes.len() / 6 {
        return Err(KeyError(format!(
            "{count} entries cannot fit in {} bytes",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        out.push((r.string()?, r.string()?, r.string()?));
    }
    if r.pos != bytes.len() {
        return Err(KeyError(format!("{} trailing bytes", bytes.len() - r.pos)));
    }
    Ok(out)
}

/// A decoded key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodedKey {
    Entity(EntityKey),
    Event(EntityKey, u64),
    Snapshot(EntityKey),
    Command(EntityKey, String),
    Outbox(EntityKey, u64, u32),
    Timer(EntityKey, String),
    Expiry {
        shard: ShardId,
        at_ms: u64,
        unique: u64,
    },
    Stream {
        shard: ShardId,
        position: u64,
    },
}

/// Decodes any journal key, refusing anything malformed or with trailing bytes.
pub fn decode(bytes: &[u8]) -> Result<DecodedKey, KeyError> {
    let mut r = Reader { bytes, pos: 0 };
    let shard = u32::from_be_bytes(r.array::<4>()?);
    let section = r.array::<1>()?[0];
    if section == SECTION_EXPIRY {
        let at_ms = u64::from_be_bytes(r.array::<8>()?);
        let unique = u64::from_be_bytes(r.array::<8>()?);
        if r.pos != bytes.len() {
            return Err(KeyError(format!("{} trailing bytes", bytes.len() - r.pos)));
        }
        return Ok(DecodedKey::Expiry {
            shard,
            at_ms,
            unique,
        });
    }
    if section == SECTION_STREAM {
        let position = u64::from_be_bytes(r.array::<8>()?);
        if r.pos != bytes.len() {
            return Err(KeyError(format!("{} trailing bytes", bytes.len() - r.pos)));
        }
        return Ok(DecodedKey::Stream { shard, position });
    }
    let entity_type = r.string()?;
    let entity_id = r.string()?;
    let key = EntityKey {
        shard,
        entity_type,
        entity_id,
    };
    let decoded = match section {
        SECTION_COMMAND => DecodedKey::Command(key, r.string()?),
        SECTION_ENTITY => DecodedKey::Entity(key),
        SECTION_SNAPSHOT => DecodedKey::Snapshot(key),
        SECTION_EVENT => DecodedKey::Event(key, u64::from_be_bytes(r.array::<8>()?)),
        SECTION_OUTBOX => {
            let seq_nr = u64::from_be_bytes(r.array::<8>()?);
            DecodedKey::Outbox(key, seq_nr, u32::from_be_bytes(r.array::<4>()?))
        }
        SECTION_TIMER => DecodedKey::Timer(key, r.string()?),
        other => return Err(KeyError(format!("unknown section {other:#04x}"))),
    };
    if r.pos != bytes.len() {
        return Err(KeyError(format!("{} trailing bytes", bytes.len() - r.pos)));
    }
    Ok(decoded)
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], KeyError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| KeyError(format!("truncated at byte {}", self.pos)))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], KeyError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn string(&mut self) -> Result<String, KeyError> {
        let len = u16::from_be_bytes(self.array::<2>()?) as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| KeyError(format!("non-UTF-8 string: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(shard: u32, t: &str, id: &str) -> EntityKey {
        EntityKey::new(shard, t, id)
    }

    #[test]
    fn every_key_kind_roundtrips() {
        let k = key(7, "account", "acc-1");
        assert_eq!(decode(&entity_key(&k)), Ok(DecodedKey::Entity(k.clone())));
        assert_eq!(
            decode(&snapshot_key(&k)),
            Ok(DecodedKey::Snapshot(k.clone()))
        );
        assert_eq!(
            decode(&event_key(&k, 42)),
            Ok(DecodedKey::Event(k.clone(), 42))
        );
        assert_eq!(
            decode(&command_key(&k, "key-1")),
            Ok(DecodedKey::Command(k.clone(), "key-1".into()))
        );
        assert_eq!(
            decode(&outbox_key(&k, 42, 3)),
            Ok(DecodedKey::Outbox(k.clone(), 42, 3))
        );
        assert_eq!(
            decode(&timer_key(&k, "expire")),
            Ok(DecodedKey::Timer(k.clone(), "expire".into()))
        );
        assert_eq!(
            decode(&expiry_key(7, 1_700_000_000_000, 9)),
            Ok(DecodedKey::Expiry {
                shard: 7,
                at_ms: 1_700_000_000_000,
                unique: 9
            })
        );
        let list = vec![
            ("account".to_owned(), "acc-1".to_owned(), "key-1".to_owned()),
            ("t".to_owned(), "".to_owned(), "é".to_owned()),
        ];
        assert_eq!(decode_expiry_list(&encode_expiry_list(&list)), Ok(list));
        assert!(decode_expiry_list(&[0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn a_shards_expiry_keys_sort_by_time() {
        let keys = [
            expiry_key(2, 5, 9),
            expiry_key(2, 6, 1),
            expiry_key(2, 256, 0),
        ];
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert!(
            keys.iter()
                .all(|k| k.starts_with(&section_prefix(2, SECTION_EXPIRY)))
        );
    }

    #[test]
    fn events_of_an_entity_sort_by_sequence_number() {
        let k = key(1, "t", "e");
        let keys: Vec<Vec<u8>> = [1u64, 2, 255, 256, 70_000]
            .iter()
            .map(|s| event_key(&k, *s))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
    }

    #[test]
    fn a_shard_is_one_contiguous_range() {
        let a = event_key(&key(3, "zzz", "zzz"), u64::MAX);
        let b = entity_key(&key(4, "", ""));
        let c = snapshot_key(&key(3, "a", "a"));
        assert!(a < b && c < b);
        assert!(a.starts_with(&3u32.to_be_bytes()) && c.starts_with(&3u32.to_be_bytes()));
    }

    #[test]
    fn an_entity_whose_id_extends_another_does_not_share_its_event_range() {
        let short = entity_prefix(&key(0, "t", "ab"), SECTION_EVENT);
        let long = event_key(&key(0, "t", "abc"), 1);
        assert!(!long.starts_with(&short));
    }

    #[test]
    fn malformed_keys_are_refused() {
        assert!(decode(&[]).is_err());
        assert!(
            decode(&[0, 0, 0, 1, 9, 0, 0, 0, 0])
                .unwrap_err()
                .0
                .contains("section")
        );
        let mut k = event_key(&key(0, "t", "e"), 1);
        k.push(0);
        assert!(decode(&k).unwrap_err().0.contains("trailing"));
        assert!(
            decode(&[0, 0, 0, 1, 0, 0, 5, b'a'])
                .unwrap_err()
                .0
                .contains("truncated")
        );
        assert!(
            decode(&[0, 0, 0, 1, 0, 0, 1, 0xff, 0, 0])
                .unwrap_err()
                .0
                .contains("UTF-8")
        );
    }
}
