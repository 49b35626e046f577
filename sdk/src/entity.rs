//! The entity model: the [`EventSourced`] trait, the [`Context`] a handler
//! sees and the [`Effect`] it returns.
//!
//! Invariant: `handle` decides, `apply` changes. Only `apply` mutates the
//! entity, and it must be deterministic, because recovery replays every
//! persisted event through it.

use core::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// An event-sourced entity: its state is the fold of its events.
///
/// The type itself is the state. It is serialized with the compact state codec
/// ([`crate::codec::encode_state`]) between calls, so it must implement
/// `Serialize` and `Deserialize`; commands, events, replies and views are JSON.
pub trait EventSourced: Sized + Serialize + DeserializeOwned + 'static {
    /// The entity type name commands are routed by, e.g. `"account"`.
    /// Lowercase ASCII letters, digits, `-` and `_`.
    const TYPE_NAME: &'static str;
    /// The version of this entity logic, e.g. `"1.0.0"`.
    const VERSION: &'static str;
    /// Snapshot policy: the host saves the state after every this many
    /// events. `0` disables snapshots. Default: 100.
    const SNAPSHOT_EVERY: u32 = 100;

    /// A command, decoded from the JSON a caller sends.
    type Command: DeserializeOwned;
    /// An event, persisted as JSON.
    type Event: Serialize + DeserializeOwned;
    /// The reply to an accepted command, sent as JSON.
    type Reply: Serialize;
    /// A domain refusal; its `Display` text is what the caller sees.
    type Error: Display;
    /// The read model returned by `get`, sent as JSON.
    type View: Serialize;

    /// The state of an entity that has no events yet.
    fn initial(id: &str) -> Self;

    /// Decides what a command does: the events to persist and the reply, or
    /// a refusal. Must not depend on anything but `self`, `ctx` and `cmd`.
    fn handle(
        &self,
        ctx: &Context,
        cmd: Self::Command,
    ) -> Result<Effect<Self::Event, Self::Reply>, Self::Error>;

    /// Applies one event. Deterministic and total: it runs again for every
    /// event whenever the entity is recovered.
    fn apply(&mut self, event: &Self::Event);

    /// The read model of the current state.
    fn view(&self) -> Self::View;
}

/// What a command handler may know besides the state and the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    entity_type: String,
    entity_id: String,
    seq_nr: u64,
    now_ms: u64,
    command_id: String,
}

impl Context {
    /// Builds a context; the host (or the test kit) does this for every command.
    pub fn new(
        entity_type: impl Into<String>,
        entity_id: impl Into<String>,
        seq_nr: u64,
        now_ms: u64,
        command_id: impl Into<String>,
    ) -> Self {
        Self {
            entity_type: entity_type.into(),
            entity_id: entity_id.into(),
            seq_nr,
            now_ms,
            command_id: command_id.into(),
        }
    }

    /// The entity type the command was sent to.
    pub fn entity_type(&self) -> &str {
        &self.entity_type
    }

    /// The entity's id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The sequence number of the last persisted event (0 if none).
    pub fn seq_nr(&self) -> u64 {
        self.seq_nr
    }

    /// Milliseconds since the Unix epoch, as read by the host for this command.
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The command's id (the caller's idempotency key, or a generated one).
    pub fn command_id(&self) -> &str {
        &self.command_id
    }
}

/// The outcome of an accepted command: events to persist, then a reply.
///
/// ```ignore
/// Effect::reply(balance)                                  // nothing to persist
/// Effect::persist(Deposited { amount }).then_reply(balance)
/// Effect::persist_all(events).then_reply(summary)
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Effect<E, R> {
    events: Vec<E>,
    reply: R,
}

impl<E, R> Effect<E, R> {
    /// Persists nothing and replies `reply`.
    pub fn reply(reply: R) -> Self {
        Self {
            events: Vec::new(),
            reply,
        }
    }

    /// The events to persist, in order.
    pub fn events(&self) -> &[E] {
        &self.events
    }

    /// The reply.
    pub fn reply_value(&self) -> &R {
        &self.reply
    }

    /// Splits into events and reply.
    pub fn into_parts(self) -> (Vec<E>, R) {
        (self.events, self.reply)
    }
}

impl<E> Effect<E, ()> {
    /// Starts an effect that persists `event`; finish it with
    /// [`Persist::then_reply`].
    pub fn persist(event: E) -> Persist<E> {
        Persist {
            events: vec![event],
        }
    }

    /// Starts an effect that persists `events` in order (possibly none).
    pub fn persist_all(events: impl IntoIterator<Item = E>) -> Persist<E> {
        Persist {
            events: events.into_iter().collect(),
        }
    }
}

/// Events to persist, waiting for the reply that completes the [`Effect`].
#[derive(Debug, Clone, PartialEq)]
#[must_use = "an effect needs a reply: call `then_reply`"]
pub struct Persist<E> {
    events: Vec<E>,
}

impl<E> Persist<E> {
    /// Adds another event after the ones already there.
    pub fn and(mut self, event: E) -> Self {
        self.events.push(event);
        self
    }

    /// Completes the effect: the reply is sent once the events are durable.
    pub fn then_reply<R>(self, reply: R) -> Effect<E, R> {
        Effect {
            events: self.events,
            reply,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_builder_keeps_event_order_and_reply() {
        let effect = Effect::persist(1).and(2).and(3).then_reply("ok");
        assert_eq!(effect.events(), &[1, 2, 3]);
        assert_eq!(*effect.reply_value(), "ok");
    }

    #[test]
    fn reply_only_effect_persists_nothing() {
        let effect: Effect<u8, &str> = Effect::reply("done");
        assert!(effect.events().is_empty());
        assert_eq!(effect.into_parts(), (vec![], "done"));
    }

    #[test]
    fn persist_all_accepts_an_empty_list() {
        let effect = Effect::persist_all(Vec::<u8>::new()).then_reply(7);
        assert!(effect.events().is_empty());
    }
}
