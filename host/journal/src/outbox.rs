//! The outbox: the sends and timers of an entity's commands as the journal
//! keeps them, beside the events that caused them.
//!
//! An [`EntityAppend`](crate::EntityAppend) carries its commands' sends
//! ([`OutboxSend`]) and timer changes ([`TimerWrite`]) and the journal
//! writes them in the same atomic step as the events (all or nothing). A
//! send stays pending until the holder of its shard acknowledges it
//! ([`crate::Journal::ack_sends`]); a timer stays until it is cancelled,
//! replaced, or acknowledged as fired under the seq-nr that set it
//! ([`crate::Journal::ack_timers`]).
//!
//! Invariants:
//! - A send's id ([`SendId`]: source entity, seq-nr of its command's last
//!   event, index among that command's sends) is unique and never reused:
//!   seq-nrs only grow, so the command id derived from it names one send.
//! - A timer is named within its entity: setting a name again replaces it
//!   (and its `seq_nr`), so an acknowledgement of an earlier firing never
//!   removes the timer set again since.
//! - Acknowledgements and answers are fenced like appends: a node that lost
//!   the shard cannot remove or answer what the next holder must deliver.
//! - An answer, once recorded, never changes (a second one is ignored).

use stead_types::effects::{SendCommand, Timer, TimerChange};

use crate::EntityKey;

/// A send as an append carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxSend {
    /// The seq-nr of the last event of the command that sent it (one of the
    /// append's events).
    pub seq_nr: u64,
    /// Its index among that command's sends.
    pub index: u32,
    pub send: SendCommand,
}

/// A timer change as an append carries it; an append's changes apply in
/// order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TimerWrite {
    /// The seq-nr of the last event of the command that made the change.
    pub seq_nr: u64,
    pub change: TimerChange,
}

/// Where a send came from: unique, and the origin of its command id.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct SendId {
    pub source: EntityKey,
    pub seq_nr: u64,
    pub index: u32,
}

/// A target's final answer to a send, recorded before the sender hears
/// it: once recorded, a later delivery of the same send (after a crash or a
/// failover) goes straight to the sender's `on-accepted` or `on-refused`
/// command, so a refusal stays a refusal even if the target would accept
/// the command now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Answer {
    Accepted,
    Refused,
}

/// A send not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingSend {
    pub id: SendId,
    pub send: SendCommand,
    /// The target's answer, once recorded ([`crate::Journal::answer_sends`]).
    pub answer: Option<Answer>,
}

/// A timer set and not yet cancelled, replaced or acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingTimer {
    pub key: EntityKey,
    /// The seq-nr of the last event of the command that set it.
    pub seq_nr: u64,
    pub timer: Timer,
}

/// A timer that fired, as it was set: acknowledging it removes the timer
/// only if it was not set again since (another `seq_nr`).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct FiredTimer {
    pub key: EntityKey,
    pub name: String,
    pub seq_nr: u64,
}

impl PendingTimer {
    /// This timer, once fired.
    pub fn fired(&self) -> FiredTimer {
        FiredTimer {
            key: self.key.clone(),
            name: self.timer.name.clone(),
            seq_nr: self.seq_nr,
        }
    }
}
