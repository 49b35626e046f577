//! Histories of what clients saw, and the checkers that judge them: the one
//! format the deterministic cluster simulator and the real-process chaos
//! tests both record, so one set of checkers serves both.
//!
//! # The format
//! A [`History`] is a list of [`Operation`]s, one per logical command a
//! client sent to an `account` entity (or a view it read): who sent it, the
//! entity, the command id, the [`Op`], when it was invoked and completed
//! (any monotone unit shared by all clients), and the [`Outcome`]:
//! `Ok` (accepted: balance and seq-nr after it, and whether the host
//! answered it as a duplicate), `Rejected` (the guest refused it),
//! `Viewed`, `Failed` (definitely not applied) or `Unknown` (maybe applied,
//! now or any time later). A client that retries under one command id
//! records one operation: invoked at the first attempt, completed at the
//! definitive answer. Its outcome is what the client may conclude from all
//! attempts: if an earlier attempt's fate is unknown (it may still be
//! delivered) and the last one is rejected or failed, record `Unknown`.
//! Histories are stored as JSON lines; writing a history read back gives the
//! same bytes.
//!
//! # What the checkers prove
//! - [`check_linearizable`]: for each entity, some total order of its
//!   operations respects real time (an operation completed before another
//!   was invoked comes first) and, run through the sequential account
//!   [`model`], gives every acknowledged reply, rejection and view that was
//!   observed, with each acknowledged seq-nr equal to the number of events
//!   before and including it. `Unknown` operations may take effect at any
//!   point after their invocation or never; `Failed` ones never. One
//!   command id takes effect at most once: its `Ok` answers (original and
//!   duplicates) share one effect and must agree. The search is bounded per
//!   entity; an entity over budget is reported inconclusive, not passed.
//! - [`check_durable`]: the journal read after the run is a valid account
//!   history (seq-nrs `1..=n`, one event per command id, every event one the
//!   model would persist in that state), every acknowledged operation's
//!   event is in it at the seq-nr and with the balance it was acknowledged
//!   with, and no operation that was refused or failed persisted anything.
//!
//! Every checker returns a report or the first [`Violation`] it finds, which
//! names the entity, the operations (by index into
//! [`History::operations`]) and why, in words.

mod durable;
mod history;
mod linearizable;
pub mod model;

#[cfg(test)]
mod testing;

use std::fmt;

pub use durable::{DurabilityReport, JournalDump, JournalEvent, check_durable};
pub use history::{EntityRef, History, HistoryError, Op, Operation, Outcome};
pub use linearizable::{
    CheckOptions, DEFAULT_MAX_STATES_PER_ENTITY, EntityReport, LinearizabilityReport,
    check_linearizable, check_linearizable_with,
};

/// A history or journal that breaks a guarantee.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{entity}: {kind}: {explanation}")]
pub struct Violation {
    pub entity: EntityRef,
    pub kind: ViolationKind,
    /// The operations involved, as indexes into [`History::operations`].
    pub operations: Vec<usize>,
    /// Why, naming the operations (`#3 client 2 deposit(5) ...`) and the
    /// state that contradicts them.
    pub explanation: String,
}

/// Which guarantee a [`Violation`] breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// The history cannot be judged: an outcome that does not fit its
    /// operation, an unrecognised rejection reason, a completion before the
    /// invocation, an entity that is not an account.
    Malformed,
    /// No order of the entity's operations explains what clients saw.
    NotLinearizable,
    /// Two operations under one command id were both applied (neither was
    /// answered as a duplicate).
    AppliedTwice,
    /// Answers to one command id disagree, or a duplicate was reported
    /// before the command could have been applied.
    DuplicateMismatch,
    /// The journal's seq-nrs are not `1..=n`.
    SeqNrGap,
    /// The journal holds two events of one command id.
    CommandIdRepeated,
    /// The journal holds an event the account would never persist, or one
    /// it cannot decode.
    InvalidEvent,
    /// An acknowledged operation's event is not in the journal.
    MissingEvent,
    /// The journal's event at an acknowledged seq-nr is not the one
    /// acknowledged (another command, another id, another balance).
    EventMismatch,
    /// A refused or failed operation's command id has an event.
    PersistedWithoutEffect,
}

impl fmt::Display for ViolationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ViolationKind::Malformed => "malformed history",
            ViolationKind::NotLinearizable => "not linearizable",
            ViolationKind::AppliedTwice => "one command id applied twice",
            ViolationKind::DuplicateMismatch => "duplicate answer mismatch",
            ViolationKind::SeqNrGap => "journal seq-nrs not contiguous",
            ViolationKind::CommandIdRepeated => "command id persisted twice",
            ViolationKind::InvalidEvent => "invalid journal event",
            ViolationKind::MissingEvent => "acknowledged event missing",
            ViolationKind::EventMismatch => "journal contradicts an acknowledgement",
            ViolationKind::PersistedWithoutEffect => "refused or failed command persisted",
        })
    }
}

impl Violation {
    fn new(
        entity: &EntityRef,
        kind: ViolationKind,
        operations: Vec<usize>,
        explanation: impl Into<String>,
    ) -> Self {
        Violation {
            entity: entity.clone(),
            kind,
            operations,
            explanation: explanation.into(),
        }
    }
}

/// `#3 client 2 deposit(5) [10..20] -> ok ...`: how explanations name an
/// operation.
fn describe(history: &History, index: usize) -> String {
    match history.operations.get(index) {
        Some(operation) => format!("#{index} {operation}"),
        None => format!("#{index}"),
    }
}
