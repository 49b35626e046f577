//! The entity model: the [`EventSourced`] trait, the [`Context`] a handler
//! sees and the [`Effect`] it returns, with the commands it sends and the
//! timers it sets.
//!
//! Invariants: `handle` decides, `apply` changes. Only `apply` mutates the
//! entity, and it must be deterministic, because recovery replays every
//! persisted event through it. Sends and timers are data in the effect,
//! and only an effect that persists events carries them (they are built on
//! [`Persist`]): the host records them with those events and acts on them
//! once the events are durable.

use core::fmt::Display;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

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
    sends: Vec<Send>,
    timers: Vec<TimerChange>,
}

/// A command this entity sends to another entity (or to itself): the host
/// delivers it after the events are durable, retrying until the target
/// accepts or refuses it, under a command id derived from where it came
/// from, so it takes effect once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    /// The target's entity type.
    pub entity_type: String,
    /// The target's id.
    pub entity_id: String,
    /// The command, as JSON.
    pub command: Value,
    /// A command of the sender's own type the host delivers back to the
    /// sender once the target accepts `command` (how a saga learns a step
    /// is done).
    pub on_accepted: Option<Value>,
    /// A command of the sender's own type the host delivers back to the
    /// sender if the target refuses `command` (how a saga compensates).
    pub on_refused: Option<Value>,
}

/// A change to this entity's durable timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerChange {
    /// Sets (or replaces) the timer `name`: at `fire_at_ms` (ms since the
    /// Unix epoch, on the host's clock) the host delivers `command` to this
    /// entity. A time already past fires at once.
    Set {
        name: String,
        fire_at_ms: u64,
        command: Value,
    },
    /// Cancels the timer `name`, if one is set.
    Cancel { name: String },
}

/// A command's JSON, or a panic: the entity's own `Serialize` impl failed,
/// which is a bug in the entity (a trap for that one call in wasm).
fn to_json(what: &str, value: &impl Serialize) -> Value {
    match serde_json::to_value(value) {
        Ok(json) => json,
        Err(e) => panic!("{what} does not encode: {e}"),
    }
}

impl<E, R> Effect<E, R> {
    /// Persists nothing and replies `reply`.
    pub fn reply(reply: R) -> Self {
        Self {
            events: Vec::new(),
            reply,
            sends: Vec::new(),
            timers: Vec::new(),
        }
    }

    /// The events to persist, in order.
    pub fn events(&self) -> &[E] {
        &self.events
    }

    /// The commands to send, in order.
    pub fn sends(&self) -> &[Send] {
        &self.sends
    }

    /// The timer changes, in order.
    pub fn timers(&self) -> &[TimerChange] {
        &self.timers
    }

    /// The reply.
    pub fn reply_value(&self) -> &R {
        &self.reply
    }

    /// Splits into events and reply.
    pub fn into_parts(self) -> (Vec<E>, R) {
        (self.events, self.reply)
    }

    /// Splits into events, reply, sends and timer changes.
    pub fn into_all_parts(self) -> (Vec<E>, R, Vec<Send>, Vec<TimerChange>) {
        (self.events, self.reply, self.sends, self.timers)
    }
}

impl<E> Effect<E, ()> {
    /// Starts an effect that persists `event`; finish it with
    /// [`Persist::then_reply`].
    pub fn persist(event: E) -> Persist<E> {
        Persist::new(vec![event])
    }

    /// Starts an effect that persists `events` in order (possibly none; an
    /// effect without events must not send or set timers, and the host
    /// fails a command whose effect does).
    pub fn persist_all(events: impl IntoIterator<Item = E>) -> Persist<E> {
        Persist::new(events.into_iter().collect())
    }
}

/// Events to persist, with the commands to send and the timer changes they
/// cause, waiting for the reply that completes the [`Effect`].
#[derive(Debug, Clone, PartialEq)]
#[must_use = "an effect needs a reply: call `then_reply`"]
pub struct Persist<E> {
    events: Vec<E>,
    sends: Vec<Send>,
    timers: Vec<TimerChange>,
}

impl<E> Persist<E> {
    fn new(events: Vec<E>) -> Self {
        Self {
            events,
            sends: Vec::new(),
            timers: Vec::new(),
        }
    }

    /// Adds another event after the ones already there.
    pub fn and(mut self, event: E) -> Self {
        self.events.push(event);
        self
    }

    /// Sends `command` to the entity `id` of type `T` once the events are
    /// durable; a refusal by the target is final (logged and counted).
    pub fn send<T: EventSourced>(self, id: impl Into<String>, command: T::Command) -> Self
    where
        T::Command: Serialize,
    {
        self.send_to(T::TYPE_NAME, id, &command)
    }

    /// [`Persist::send`], and if the target refuses the command, the host
    /// delivers `on_refused` (a command of this entity) back to this entity.
    pub fn send_or<T: EventSourced>(
        self,
        id: impl Into<String>,
        command: T::Command,
        on_refused: &impl Serialize,
    ) -> Self
    where
        T::Command: Serialize,
    {
        let on_refused = Some(to_json("an on-refused command", on_refused));
        self.push_send(T::TYPE_NAME, id.into(), &command, None, on_refused)
    }

    /// Sends `command` to the entity `id` of type `T` and hears back: the
    /// host delivers `on_accepted` (a command of this entity) to this
    /// entity once the target accepts, or `on_refused` if it refuses. The
    /// steps of a saga: `ask` the next step, continue on its answer.
    pub fn ask<T: EventSourced>(
        self,
        id: impl Into<String>,
        command: T::Command,
        on_accepted: &impl Serialize,
        on_refused: &impl Serialize,
    ) -> Self
    where
        T::Command: Serialize,
    {
        let on_accepted = Some(to_json("an on-accepted command", on_accepted));
        let on_refused = Some(to_json("an on-refused command", on_refused));
        self.push_send(T::TYPE_NAME, id.into(), &command, on_accepted, on_refused)
    }

    /// Sends `command` (any JSON-serializable value) to the entity `id` of
    /// type `entity_type`: for targets whose Rust type this crate does not
    /// know.
    pub fn send_to(
        self,
        entity_type: impl Into<String>,
        id: impl Into<String>,
        command: &impl Serialize,
    ) -> Self {
        self.push_send(entity_type, id.into(), command, None, None)
    }

    /// [`Persist::ask`] to an entity of type `entity_type` whose Rust type
    /// this crate does not know (its command is any JSON-serializable
    /// value): a saga's step towards another crate's entity.
    pub fn ask_to(
        self,
        entity_type: impl Into<String>,
        id: impl Into<String>,
        command: &impl Serialize,
        on_accepted: &impl Serialize,
        on_refused: &impl Serialize,
    ) -> Self {
        let on_accepted = Some(to_json("an on-accepted command", on_accepted));
        let on_refused = Some(to_json("an on-refused command", on_refused));
        self.push_send(entity_type, id.into(), command, on_accepted, on_refused)
    }

    /// The one place a send is added: every builder above ends here.
    fn push_send(
        mut self,
        entity_type: impl Into<String>,
        entity_id: String,
        command: &impl Serialize,
        on_accepted: Option<Value>,
        on_refused: Option<Value>,
    ) -> Self {
        self.sends.push(Send {
            entity_type: entity_type.into(),
            entity_id,
            command: to_json("a sent command", command),
            on_accepted,
            on_refused,
        });
        self
    }

    /// Sets (or replaces) this entity's timer `name` to deliver `command`
    /// to it at `fire_at_ms` (ms since the Unix epoch, e.g.
    /// `ctx.now_ms() + 15 * 60_000`).
    pub fn set_timer(
        mut self,
        name: impl Into<String>,
        fire_at_ms: u64,
        command: &impl Serialize,
    ) -> Self {
        self.timers.push(TimerChange::Set {
            name: name.into(),
            fire_at_ms,
            command: to_json("a timer's command", command),
        });
        self
    }

    /// Cancels this entity's timer `name`, if one is set.
    pub fn cancel_timer(mut self, name: impl Into<String>) -> Self {
        self.timers.push(TimerChange::Cancel { name: name.into() });
        self
    }

    /// Completes the effect: the reply is sent once the events are durable.
    pub fn then_reply<R>(self, reply: R) -> Effect<E, R> {
        Effect {
            events: self.events,
            reply,
            sends: self.sends,
            timers: self.timers,
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
    fn sends_and_timers_keep_their_order_and_encode_as_json() {
        let effect = Effect::persist(1)
            .send_to(
                "account",
                "b",
                &serde_json::json!({"deposit": {"amount": 5}}),
            )
            .set_timer("expire", 1_000, &"expire")
            .send_to("account", "c", &7)
            .cancel_timer("remind")
            .then_reply("ok");
        let (events, reply, sends, timers) = effect.into_all_parts();
        assert_eq!((events, reply), (vec![1], "ok"));
        assert_eq!(sends.len(), 2);
        assert_eq!(sends[0].entity_id, "b");
        assert_eq!(
            sends[0].command,
            serde_json::json!({"deposit": {"amount": 5}})
        );
        assert_eq!(sends[1].command, serde_json::json!(7));
        assert_eq!(
            timers,
            vec![
                TimerChange::Set {
                    name: "expire".into(),
                    fire_at_ms: 1_000,
                    command: serde_json::json!("expire")
                },
                TimerChange::Cancel {
                    name: "remind".into()
                }
            ]
        );
    }

    #[test]
    fn persist_all_accepts_an_empty_list() {
        let effect = Effect::persist_all(Vec::<u8>::new()).then_reply(7);
        assert!(effect.events().is_empty());
    }
}
