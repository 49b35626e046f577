//! Stored record formats, versioned from the first byte.
//!
//! ```text
//! event    = 0x01 flags:u8 timestamp_ms:u64be command_id:str16 payload:bytes32 [reply:bytes32]
//!            flags bit 0: this is the last event of its command and carries the reply
//! snapshot = 0x01 seq_nr:u64be version:str16 state:bytes32 dedup_count:u32be (command_id_hash:u64be seq_nr:u64be)*
//! entity   = 0x01 reserved:u64be (0; the last seq-nr is the entity's last event key)
//! page     = 0x02 first_seq:u64be count:u32be (len:u32be event)*count
//! send     = 0x01 type:str16 id:str16 command:bytes32 flags:u8 [on_accepted:bytes32] [on_refused:bytes32]
//! timer    = 0x01 seq_nr:u64be fire_at_ms:u64be command:bytes32
//! str16    = len:u16be utf8 ; bytes32 = len:u32be bytes
//! ```
//!
//! A **page** holds consecutive events of one entity under one key, so an
//! append writes one value instead of one per event (see `super::keys`).
//! Journals written before pages hold one `event` per key; a reader takes
//! such a value as a page of one event ([`split_stored`]).
//!
//! Invariant: a decoder refuses unknown versions, unknown flags, truncation
//! and trailing bytes; it never panics on any input.

use stead_types::effects::SendCommand;

use crate::outbox::Answer;

/// The record format version written by this build.
pub const FORMAT_V1: u8 = 1;
/// The first byte of an event page.
pub const PAGE_V1: u8 = 2;
/// The first byte of a command-id entry that holds a refusal.
pub const REFUSAL_V1: u8 = 2;
const PAGE_HEADER: usize = 13;
/// The smallest encoded event: version, flags, timestamp, two empty lengths.
const MIN_EVENT_BYTES: usize = 16;
const FLAG_LAST: u8 = 0b1;

/// One persisted event and what deduplication needs from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    /// The id of the command that emitted the event.
    pub command_id: String,
    /// When the command was handled (host clock, ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// The event as the guest encoded it (JSON).
    pub payload: Vec<u8>,
    /// On the last event of a command: the command's reply, so a retry with
    /// the same command id gets the original reply after a restart.
    pub reply: Option<Vec<u8>>,
}

/// A saved state of an entity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotRecord {
    /// The sequence number of the last event folded into `state`.
    pub seq_nr: u64,
    /// The version of the component that wrote the state.
    pub version: String,
    /// The guest's state bytes.
    pub state: Vec<u8>,
    /// The deduplication window at `seq_nr`: hashes of command ids and the
    /// sequence number of each command's last event (where its id and reply
    /// are stored, so a hash match is confirmed against the event).
    pub dedup: Vec<(u64, u64)>,
}

/// A command id a caller gave, indexed so that a retry is recognised for
/// the whole dedup horizon, however many commands came in between.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandIdRecord {
    pub command_id: String,
    /// The sequence number of the command's last event, which stores the
    /// command id and its reply.
    pub seq_nr: u64,
    /// When the command was handled (host clock, ms since the Unix epoch).
    pub at_ms: u64,
    /// SHA-256 of the command's bytes: a retry must carry the same command.
    pub digest: [u8; 32],
    /// The entity's refusal of the command, which persisted no event: a
    /// retry (or a late copy of the command) gets the same refusal instead
    /// of running again. `seq_nr` is then the entity's last seq-nr when it
    /// refused.
    pub refusal: Option<Refusal>,
}

/// A command's refusal as the index keeps it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Refusal {
    /// The entity's domain rejection (its message).
    Rejected(String),
    /// The command did not decode for the entity (serde's message).
    InvalidCommand(String),
}

/// A record that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed journal record: {0}")]
pub struct RecordError(pub String);

impl EventRecord {
    /// Bytes [`Self::encode`] produces.
    pub fn encoded_len(&self) -> usize {
        let reply_len = self.reply.as_ref().map_or(0, |r| 4 + r.len());
        12 + self.command_id.len() + 4 + self.payload.len() + reply_len
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.push(FORMAT_V1);
        out.push(if self.reply.is_some() { FLAG_LAST } else { 0 });
        out.extend_from_slice(&self.timestamp_ms.to_be_bytes());
        put_str16(out, &self.command_id);
        put_bytes32(out, &self.payload);
        if let Some(reply) = &self.reply {
            put_bytes32(out, reply);
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes);
        r.version()?;
        let flags = r.u8()?;
        if flags & !FLAG_LAST != 0 {
            return Err(RecordError(format!("unknown event flags {flags:#04x}")));
        }
        let timestamp_ms = r.u64()?;
        let command_id = r.str16()?;
        let payload = r.bytes32()?;
        let reply = if flags & FLAG_LAST != 0 {
            Some(r.bytes32()?)
        } else {
            None
        };
        r.end()?;
        Ok(Self {
            command_id,
            timestamp_ms,
            payload,
            reply,
        })
    }
}

impl SnapshotRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(32 + self.version.len() + self.state.len() + self.dedup.len() * 24);
        out.push(FORMAT_V1);
        out.extend_from_slice(&self.seq_nr.to_be_bytes());
        put_str16(&mut out, &self.version);
        put_bytes32(&mut out, &self.state);
        let count = u32::try_from(self.dedup.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for (hash, seq_nr) in self.dedup.iter().take(count as usize) {
            out.extend_from_slice(&hash.to_be_bytes());
            out.extend_from_slice(&seq_nr.to_be_bytes());
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut r = Reader::new(bytes);
        r.version()?;
        let seq_nr = r.u64()?;
        let version = r.str16()?;
        let state = r.bytes32()?;
        let count = r.u32()? as usize;
        // Each entry takes 16 bytes: refuse counts the input cannot hold
        // before allocating for them.
        if count > r.remaining() / 16 {
            return Err(RecordError(format!(
                "dedup count {count} exceeds the record"
            )));
        }
        let mut dedup = Vec::with_capacity(count);
        for _ in 0..count {
            let hash = r.u64()?;
            dedup.push((hash, r.u64()?));
        }
        r.end()?;
        Ok(Self {
            seq_nr,
            version,
            state,
            dedup,
        })
    }
}

/// An event page being built: events appended in place, header kept current.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageBuf {
    bytes: Vec<u8>,
}

impl PageBuf {
    /// An empty page whose first event will have `first_seq`.
    pub fn new(first_seq: u64) -> Self {
        let mut bytes = Vec::with_capacity(256);
        bytes.push(PAGE_V1);
        bytes.extend_from_slice(&first_seq.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        Self { bytes }
    }

    /// A stored page to append to. Checks the header only: its events are
    /// checked when read ([`split_stored`]).
    pub fn from_stored(stored: &[u8], spare: usize) -> Result<Self, RecordError> {
        if stored.first() != Some(&PAGE_V1) || stored.len() < PAGE_HEADER {
            return Err(RecordError("not an event page".into()));
        }
        let mut bytes = Vec::with_capacity(stored.len() + spare);
        bytes.extend_from_slice(stored);
        let page = Self { bytes };
        if page.count() == 0 {
            return Err(RecordError("an empty event page".into()));
        }
        page.first_seq()
            .checked_add(u64::from(page.count()) - 1)
            .ok_or_else(|| RecordError("page sequence numbers overflow".into()))?;
        Ok(page)
    }

    pub fn first_seq(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.bytes[1..9]);
        u64::from_be_bytes(b)
    }

    pub fn count(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes[9..13]);
        u32::from_be_bytes(b)
    }

    /// The sequence number of the last event (`first_seq - 1` when empty).
    pub fn last_seq(&self) -> u64 {
        self.first_seq()
            .saturating_add(u64::from(self.count()))
            .saturating_sub(1)
    }

    /// Encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    pub fn push(&mut self, event: &EventRecord) {
        let len = u32::try_from(event.encoded_len())
            .expect("events are bounded far below 4 GiB by limits");
        self.bytes.reserve(4 + len as usize);
        self.bytes.extend_from_slice(&len.to_be_bytes());
        event.encode_into(&mut self.bytes);
        let count = self.count() + 1;
        self.bytes[9..13].copy_from_slice(&count.to_be_bytes());
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// The encoded events stored under one event key, with the first one's
/// sequence number: a page, or a single event record written before pages
/// (which has the sequence number `key_seq`, the key's).
pub fn split_stored(bytes: &[u8], key_seq: u64) -> Result<(u64, Vec<&[u8]>), RecordError> {
    match bytes.first() {
        Some(&FORMAT_V1) => Ok((key_seq, vec![bytes])),
        Some(&PAGE_V1) => {
            let mut r = Reader::new(bytes);
            r.u8()?;
            let first_seq = r.u64()?;
            let count = r.u32()? as usize;
            // Each entry takes at least 4 + 16 bytes (length, smallest
            // event): refuse counts the input cannot hold before allocating.
            if count == 0 || count > r.remaining() / (4 + MIN_EVENT_BYTES) {
                return Err(RecordError(format!(
                    "page count {count} does not fit the page"
                )));
            }
            let mut events = Vec::with_capacity(count);
            for _ in 0..count {
                let len = r.u32()? as usize;
                events.push(r.take(len)?);
            }
            r.end()?;
            Ok((first_seq, events))
        }
        Some(v) => Err(RecordError(format!("unknown record format version {v}"))),
        None => Err(RecordError("an empty record".into())),
    }
}

/// Encodes an entity index entry (its last sequence number).
pub fn encode_entity(last_seq_nr: u64) -> [u8; 9] {
    let mut out = [0u8; 9];
    out[0] = FORMAT_V1;
    out[1..].copy_from_slice(&last_seq_nr.to_be_bytes());
    out
}

/// Encodes a command-id index entry (the id itself is in its key).
///
/// `0x01 seq_nr at_ms digest`, or with a refusal `0x02 seq_nr at_ms digest
/// kind:u8 message:str16` (kind 1 rejected, 2 invalid command).
pub fn encode_command_id(record: &CommandIdRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(49);
    out.push(if record.refusal.is_some() {
        REFUSAL_V1
    } else {
        FORMAT_V1
    });
    out.extend_from_slice(&record.seq_nr.to_be_bytes());
    out.extend_from_slice(&record.at_ms.to_be_bytes());
    out.extend_from_slice(&record.digest);
    match &record.refusal {
        None => {}
        Some(Refusal::Rejected(m)) => {
            out.push(1);
            put_str16(&mut out, m);
        }
        Some(Refusal::InvalidCommand(m)) => {
            out.push(2);
            put_str16(&mut out, m);
        }
    }
    out
}

/// Decodes a command-id index entry of `command_id`.
pub fn decode_command_id(command_id: &str, bytes: &[u8]) -> Result<CommandIdRecord, RecordError> {
    let mut r = Reader::new(bytes);
    let refused = match r.u8()? {
        FORMAT_V1 => false,
        REFUSAL_V1 => true,
        v => return Err(RecordError(format!("unknown record format version {v}"))),
    };
    let seq_nr = r.u64()?;
    let at_ms = r.u64()?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(r.take(32)?);
    let refusal = if refused {
        Some(match r.u8()? {
            1 => Refusal::Rejected(r.str16()?),
            2 => Refusal::InvalidCommand(r.str16()?),
            k => return Err(RecordError(format!("unknown refusal kind {k}"))),
        })
    } else {
        None
    };
    r.end()?;
    Ok(CommandIdRecord {
        command_id: command_id.to_owned(),
        seq_nr,
        at_ms,
        digest,
        refusal,
    })
}

/// Decodes an entity index entry.
pub fn decode_entity(bytes: &[u8]) -> Result<u64, RecordError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let seq = r.u64()?;
    r.end()?;
    Ok(seq)
}

/// Encodes a pending send's value (its id is in its key):
/// `0x01 type:str16 id:str16 command:bytes32 flags:u8 [on_accepted:bytes32]
/// [on_refused:bytes32]`, flags bit 0: on-accepted present, bit 1:
/// on-refused present, bit 2: answered, bit 3: the answer was a refusal.
pub fn encode_send(send: &SendCommand, answer: Option<Answer>) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(16 + send.entity_type.len() + send.entity_id.len() + send.command.len());
    out.push(FORMAT_V1);
    put_str16(&mut out, &send.entity_type);
    put_str16(&mut out, &send.entity_id);
    put_bytes32(&mut out, &send.command);
    let flags = u8::from(send.on_accepted.is_some())
        | (u8::from(send.on_refused.is_some()) << 1)
        | match answer {
            None => 0,
            Some(Answer::Accepted) => 0b0100,
            Some(Answer::Refused) => 0b1100,
        };
    out.push(flags);
    for extra in [&send.on_accepted, &send.on_refused].into_iter().flatten() {
        put_bytes32(&mut out, extra);
    }
    out
}

/// Decodes [`encode_send`]'s value.
pub fn decode_send(bytes: &[u8]) -> Result<(SendCommand, Option<Answer>), RecordError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let entity_type = r.str16()?;
    let entity_id = r.str16()?;
    let command = r.bytes32()?;
    let flags = r.u8()?;
    if flags & !0b1111 != 0 || flags & 0b1100 == 0b1000 {
        return Err(RecordError(format!("unknown send flags {flags:#04x}")));
    }
    let answer = match flags & 0b1100 {
        0b0100 => Some(Answer::Accepted),
        0b1100 => Some(Answer::Refused),
        _ => None,
    };
    let on_accepted = (flags & 0b01 != 0).then(|| r.bytes32()).transpose()?;
    let on_refused = (flags & 0b10 != 0).then(|| r.bytes32()).transpose()?;
    r.end()?;
    let send = SendCommand {
        entity_type,
        entity_id,
        command,
        on_accepted,
        on_refused,
    };
    Ok((send, answer))
}

/// Encodes a timer's value (its entity and name are in its key):
/// `0x01 seq_nr:u64be fire_at_ms:u64be command:bytes32`.
pub fn encode_timer(seq_nr: u64, fire_at_ms: u64, command: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(21 + command.len());
    out.push(FORMAT_V1);
    out.extend_from_slice(&seq_nr.to_be_bytes());
    out.extend_from_slice(&fire_at_ms.to_be_bytes());
    put_bytes32(&mut out, command);
    out
}

/// Decodes [`encode_timer`]'s value: (seq-nr, fire-at, command).
pub fn decode_timer(bytes: &[u8]) -> Result<(u64, u64, Vec<u8>), RecordError> {
    let mut r = Reader::new(bytes);
    r.version()?;
    let seq_nr = r.u64()?;
    let fire_at_ms = r.u64()?;
    let command = r.bytes32()?;
    r.end()?;
    Ok((seq_nr, fire_at_ms, command))
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    // Command ids and versions are bounded far below 64 KiB by validation;
    // a longer refusal message is cut at a character boundary.
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let bytes = &s.as_bytes()[..end];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    let len = u32::try_from(b.len()).expect("payloads are bounded far below 4 GiB by limits");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if n > self.remaining() {
            return Err(RecordError(format!(
                "truncated: need {n} bytes at offset {}, {} left",
                self.pos,
                self.remaining()
            )));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4)?);
        Ok(u32::from_be_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    fn version(&mut self) -> Result<(), RecordError> {
        match self.u8()? {
            FORMAT_V1 => Ok(()),
            v => Err(RecordError(format!("unknown record format version {v}"))),
        }
    }

    fn str16(&mut self) -> Result<String, RecordError> {
        let len = {
            let b = self.take(2)?;
            u16::from_be_bytes([b[0], b[1]]) as usize
        };
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| RecordError(format!("non-UTF-8 string: {e}")))
    }

    fn bytes32(&mut self) -> Result<Vec<u8>, RecordError> {
        let len = self.u32()? as usize;
        Ok(self.take(len)?.to_vec())
    }

    fn end(&self) -> Result<(), RecordError> {
        if self.pos == self.bytes.len() {
            Ok(())
        } else {
            Err(RecordError(format!("{} trailing bytes", self.remaining())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_and_timers_round_trip_and_refuse_garbage() {
        for (accepted, refused) in [
            (None, None),
            (Some(b"{}".to_vec()), None),
            (None, Some(b"[1]".to_vec())),
            (Some(b"1".to_vec()), Some(b"2".to_vec())),
        ] {
            let send = SendCommand {
                entity_type: "account".into(),
                entity_id: "b".into(),
                command: br#"{"deposit":{"amount":5}}"#.to_vec(),
                on_accepted: accepted,
                on_refused: refused,
            };
            for answer in [None, Some(Answer::Accepted), Some(Answer::Refused)] {
                let bytes = encode_send(&send, answer);
                assert_eq!(decode_send(&bytes), Ok((send.clone(), answer)));
                for cut in 0..bytes.len() {
                    assert!(decode_send(&bytes[..cut]).is_err());
                }
            }
        }
        let timer = encode_timer(7, 1_700_000_000_000, b"{\"expire\":{}}");
        assert_eq!(
            decode_timer(&timer),
            Ok((7, 1_700_000_000_000, b"{\"expire\":{}}".to_vec()))
        );
        assert!(decode_timer(&timer[..timer.len() - 1]).is_err());
        let mut trailing = timer.clone();
        trailing.push(0);
        assert!(decode_timer(&trailing).is_err());
    }

    fn event(reply: Option<&[u8]>) -> EventRecord {
        EventRecord {
            command_id: "cmd-1".into(),
            timestamp_ms: 1_700_000_000_000,
            payload: br#"{"deposited":{"amount":5}}"#.to_vec(),
            reply: reply.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn event_records_roundtrip_with_and_without_reply() {
        for e in [
            event(None),
            event(Some(b"{\"balance\":5}")),
            event(Some(b"")),
        ] {
            assert_eq!(EventRecord::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn snapshot_records_roundtrip() {
        let s = SnapshotRecord {
            seq_nr: 100,
            version: "0.1.0".into(),
            state: vec![1, 2, 3],
            dedup: vec![(1, 99), (u64::MAX, 100)],
        };
        assert_eq!(SnapshotRecord::decode(&s.encode()), Ok(s));
    }

    #[test]
    fn entity_entries_roundtrip() {
        assert_eq!(decode_entity(&encode_entity(77)), Ok(77));
        assert!(decode_entity(&[FORMAT_V1, 0]).is_err());
    }

    #[test]
    fn every_truncation_of_a_record_is_refused_without_panicking() {
        let bytes = event(Some(b"r")).encode();
        for n in 0..bytes.len() {
            assert!(
                EventRecord::decode(&bytes[..n]).is_err(),
                "prefix of {n} bytes decoded"
            );
        }
        let s = SnapshotRecord {
            seq_nr: 1,
            version: "v".into(),
            state: vec![9; 10],
            dedup: vec![(5, 1)],
        }
        .encode();
        for n in 0..s.len() {
            assert!(SnapshotRecord::decode(&s[..n]).is_err());
        }
    }

    #[test]
    fn unknown_versions_flags_and_trailing_bytes_are_refused() {
        let mut bytes = event(None).encode();
        bytes[0] = 2;
        assert!(
            EventRecord::decode(&bytes)
                .unwrap_err()
                .0
                .contains("version 2")
        );
        let mut bytes = event(None).encode();
        bytes[1] = 0x80;
        assert!(EventRecord::decode(&bytes).unwrap_err().0.contains("flags"));
        let mut bytes = event(None).encode();
        bytes.push(0);
        assert!(
            EventRecord::decode(&bytes)
                .unwrap_err()
                .0
                .contains("trailing")
        );
    }

    #[test]
    fn a_page_holds_its_events_in_order_and_appends_in_place() {
        let mut page = PageBuf::new(41);
        assert!(page.is_empty());
        page.push(&event(None));
        page.push(&event(Some(b"{}")));
        assert_eq!(
            (page.first_seq(), page.count(), page.last_seq()),
            (41, 2, 42)
        );
        let mut reopened = PageBuf::from_stored(page.as_bytes(), 0).expect("page");
        reopened.push(&event(None));
        let (first, raw) = split_stored(reopened.as_bytes(), u64::MAX).expect("split");
        assert_eq!(first, 41);
        let decoded: Vec<EventRecord> = raw
            .iter()
            .map(|r| EventRecord::decode(r).expect("event"))
            .collect();
        assert_eq!(decoded, vec![event(None), event(Some(b"{}")), event(None)]);
    }

    #[test]
    fn a_single_event_record_reads_as_a_page_of_one_at_its_key() {
        let bytes = event(None).encode();
        assert_eq!(split_stored(&bytes, 7), Ok((7, vec![&bytes[..]])));
    }

    #[test]
    fn malformed_pages_are_refused_without_panicking() {
        let mut page = PageBuf::new(1);
        page.push(&event(Some(b"r")));
        page.push(&event(None));
        let bytes = page.as_bytes().to_vec();
        for n in 0..bytes.len() {
            assert!(split_stored(&bytes[..n], 1).is_err(), "prefix of {n} bytes");
        }
        let mut huge = bytes.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            split_stored(&huge, 1)
                .unwrap_err()
                .0
                .contains("does not fit")
        );
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(split_stored(&trailing, 1).is_err());
        assert!(split_stored(&[9], 1).unwrap_err().0.contains("version 9"));
        assert!(PageBuf::from_stored(PageBuf::new(5).as_bytes(), 0).is_err());
        assert!(PageBuf::from_stored(&event(None).encode(), 0).is_err());
        let mut overflow = PageBuf::new(u64::MAX);
        overflow.push(&event(None));
        overflow.push(&event(None));
        assert!(PageBuf::from_stored(overflow.as_bytes(), 0).is_err());
    }

    #[test]
    fn a_huge_dedup_count_is_refused_before_allocating() {
        let mut bytes = vec![FORMAT_V1];
        bytes.extend_from_slice(&1u64.to_be_bytes());
        bytes.extend_from_slice(&0u16.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            SnapshotRecord::decode(&bytes)
                .unwrap_err()
                .0
                .contains("exceeds")
        );
    }
}
