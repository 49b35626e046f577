//! Shard streams: the order subscriptions read events in.
//!
//! Every event appended to a shard gets a **position** in that shard's
//! stream, assigned by the backend in the order the appends commit. Readers
//! ([`crate::Journal::read_stream`]) page through one entity type's events
//! of many shards at once, each from its own position, so a subscription's
//! place is a [`Cursor`]: the last position it read in each shard.
//!
//! Invariants every backend keeps (the conformance suite checks them):
//! - positions in a shard only grow with commit order (gaps allowed), and a
//!   shard's positions continue past every earlier holder's;
//! - a reader sees only durable events, and once it has read position `p`
//!   of a shard no event ever appears there at a position `<= p`: a cursor
//!   never skips an event, and never sees one twice;
//! - an entity's events are in the stream in its seq-nr order.

use std::collections::BTreeMap;
use std::fmt;

use crate::{ShardId, StoredEvent};

/// An event as a stream reader gets it: its place in its shard's stream and
/// the entity it belongs to (the type is the one read).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamEvent {
    pub shard: ShardId,
    pub position: u64,
    pub entity_id: String,
    pub event: StoredEvent,
}

/// A reader's place in every shard's stream: the last position read in
/// each shard (0, the start, when absent). Its text form travels between
/// nodes and clients: any node of a cluster resumes from it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    positions: BTreeMap<ShardId, u64>,
}

/// A cursor's text that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid cursor `{text}`: {reason} (a cursor is what a stream handed out, e.g. `v1.3:17,40:2`)"
)]
pub struct CursorError {
    pub text: String,
    pub reason: String,
}

/// The prefix of the cursor's text form, so the form can change.
const CURSOR_V1: &str = "v1.";
/// The longest cursor text accepted (every shard of a large cluster fits).
pub const MAX_CURSOR_LEN: usize = 64 * 1024;

impl Cursor {
    /// The start of every shard.
    pub fn start() -> Self {
        Self::default()
    }

    /// The last position read in `shard`.
    pub fn position(&self, shard: ShardId) -> u64 {
        self.positions.get(&shard).copied().unwrap_or(0)
    }

    /// Records that `shard` was read up to `position` (never moves back).
    pub fn advance(&mut self, shard: ShardId, position: u64) {
        let at = self.positions.entry(shard).or_insert(0);
        *at = (*at).max(position);
    }

    /// The shards the cursor has a position in.
    pub fn shards(&self) -> impl Iterator<Item = ShardId> + '_ {
        self.positions.keys().copied()
    }

    /// `(shard, position)` for each of `shards`.
    pub fn positions(&self, shards: impl IntoIterator<Item = ShardId>) -> Vec<(ShardId, u64)> {
        shards.into_iter().map(|s| (s, self.position(s))).collect()
    }

    /// Decodes a cursor's text form (`v1.` then `shard:position` pairs
    /// separated by commas; an empty list is the start).
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        let error = |reason: &str| CursorError {
            text: text.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if text.len() > MAX_CURSOR_LEN {
            return Err(error("too long"));
        }
        let Some(pairs) = text.strip_prefix(CURSOR_V1) else {
            return Err(error("it does not start with `v1.`"));
        };
        let mut cursor = Self::default();
        for pair in pairs.split(',').filter(|p| !p.is_empty()) {
            let (shard, position) = pair
                .split_once(':')
                .ok_or_else(|| error("a pair is not `shard:position`"))?;
            let shard: ShardId = shard
                .parse()
                .map_err(|_| error("a shard is not a number"))?;
            let position: u64 = position
                .parse()
                .map_err(|_| error("a position is not a number"))?;
            if cursor.positions.insert(shard, position).is_some() {
                return Err(error("a shard appears twice"));
            }
        }
        Ok(cursor)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(CURSOR_V1)?;
        let mut first = true;
        for (shard, position) in self.positions.iter().filter(|(_, p)| **p > 0) {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{shard}:{position}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_through_its_text_and_never_moves_back() {
        let mut c = Cursor::start();
        assert_eq!(c.to_string(), "v1.");
        c.advance(3, 17);
        c.advance(40, 2);
        c.advance(3, 5);
        assert_eq!(c.to_string(), "v1.3:17,40:2");
        assert_eq!(Cursor::decode("v1.3:17,40:2"), Ok(c.clone()));
        assert_eq!(c.position(3), 17);
        assert_eq!(c.position(4), 0);
        assert_eq!(c.positions([3, 4]), vec![(3, 17), (4, 0)]);
        assert_eq!(Cursor::decode("v1."), Ok(Cursor::start()));
    }

    #[test]
    fn a_malformed_cursor_is_refused_naming_why() {
        for (text, why) in [
            ("3:17", "v1."),
            ("v1.3", "shard:position"),
            ("v1.x:1", "shard is not"),
            ("v1.1:-1", "position is not"),
            ("v1.1:1,1:2", "twice"),
        ] {
            let e = Cursor::decode(text).expect_err(text);
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
        assert!(Cursor::decode(&format!("v1.{}", "1".repeat(MAX_CURSOR_LEN))).is_err());
    }
}
