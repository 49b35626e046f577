//! The side effects a guest returns besides its events: commands to send to
//! other entities (or itself) and changes to its durable timers. Plain data
//! from the guest's `effects` (contract 0.2.0 and later), checked against
//! the host's limits by the runtime before the engine sees them.
//!
//! Invariant: effects are data until the events they came with are
//! durable; nothing here performs anything.

use serde::{Deserialize, Serialize};

/// A command for another entity (or the sender itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SendCommand {
    /// The target's entity type.
    pub entity_type: String,
    /// The target's id.
    pub entity_id: String,
    /// The command, JSON.
    pub command: Vec<u8>,
    /// A command of the sender's own type (JSON), delivered to the sender
    /// once the target accepts `command`.
    pub on_accepted: Option<Vec<u8>>,
    /// A command of the sender's own type (JSON), delivered to the sender
    /// if the target refuses `command`.
    pub on_refused: Option<Vec<u8>>,
}

/// A durable timer of one entity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Timer {
    /// Unique within its entity; setting it again replaces it.
    pub name: String,
    /// When it fires, in ms since the Unix epoch on the host's clock.
    pub fire_at_ms: u64,
    /// The command (JSON) delivered to the entity when it fires.
    pub command: Vec<u8>,
}

/// A change to an entity's timers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimerChange {
    /// Sets (or replaces) the timer of its name.
    Set(Timer),
    /// Cancels the timer of this name, if one is set.
    Cancel(String),
}

impl TimerChange {
    /// The name of the timer it changes.
    pub fn name(&self) -> &str {
        match self {
            TimerChange::Set(timer) => &timer.name,
            TimerChange::Cancel(name) => name,
        }
    }
}
