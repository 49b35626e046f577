//! The given/when/then test kit: runs an entity natively under `cargo test`.
//!
//! ```ignore
//! TestKit::<Account>::new("acc-1")
//!     .given([AccountEvent::Opened { owner: "ada".into() }])
//!     .when(AccountCommand::Deposit { amount: 100 })
//!     .expect_events(&[AccountEvent::Deposited { amount: 100 }])
//!     .expect_reply(&Balance { balance: 100 });
//! ```
//!
//! Commands go through the same byte-level path as in the wasm component
//! (JSON command decoding, state codec, event encoding), so a test here also
//! proves that the entity's encodings work. Failures panic with both sides
//! printed as JSON.
//!
//! **Sends and timers**: [`Outcome::expect_sends`] and
//! [`Outcome::expect_timers`] assert what a command sends and which timers
//! it changes; the kit keeps the entity's pending timers, and
//! [`TestKit::fire_timer`] delivers one as the host would at its time.
//! [`TestKit::deliver`] hands a send to the kit of its target, and
//! [`TestKit::deliver_refusal`] hands the sender its `on_refused` command.
//!
//! **The wasm harness** (feature `harness`): the same tests can drive the
//! built component instead, inside an embedded host node with a temporary
//! journal, so the artifact that ships is the one tested. Either construct
//! a kit with [`TestKit::with_component`], or set `STEAD_TESTKIT_COMPONENTS`
//! to a directory of components and every [`TestKit::new`] loads
//! `<dir>/<type name, '-' as '_'>.wasm`. Commands then travel the host's
//! full path: shard worker, guest call, durable journal append.

use core::fmt::Debug;

use serde::Serialize;
use serde_json::Value;

use crate::__private::abi::{self, RawError};
use crate::codec;
use crate::entity::{Context, EventSourced, Send, TimerChange};
use crate::log::{self, Level};

#[cfg(feature = "harness")]
mod harness;

/// Where commands run.
enum Backend {
    /// In this process, through the SDK's byte-level entry points.
    Native { state: Vec<u8> },
    /// In the built component, inside an embedded host node.
    #[cfg(feature = "harness")]
    Wasm(Box<harness::WasmHost>),
}

/// Environment variable naming a directory of built components: when set
/// (and the feature `harness` is on), [`TestKit::new`] runs the component.
pub const COMPONENTS_ENV: &str = "STEAD_TESTKIT_COMPONENTS";

/// A single entity under test, with its state and sequence number.
pub struct TestKit<E: EventSourced> {
    entity_id: String,
    backend: Backend,
    seq_nr: u64,
    now_ms: u64,
    commands_sent: u64,
    /// Timers set and not yet fired or cancelled: name -> (fire at, command).
    timers: std::collections::BTreeMap<String, (u64, Value)>,
    _entity: core::marker::PhantomData<E>,
}

impl<E: EventSourced> TestKit<E> {
    /// A fresh entity with id `entity_id` and no events: native, or in the
    /// built component when [`COMPONENTS_ENV`] is set (feature `harness`).
    pub fn new(entity_id: &str) -> Self {
        #[cfg(feature = "harness")]
        if let Some(dir) = std::env::var_os(COMPONENTS_ENV) {
            let file = format!("{}.wasm", E::TYPE_NAME.replace('-', "_"));
            return Self::with_component(std::path::Path::new(&dir).join(file), entity_id);
        }
        Self::with_backend(
            entity_id,
            Backend::Native {
                state: abi::initial_state::<E>(entity_id),
            },
        )
    }

    /// A fresh entity run by the component at `path` in an embedded node
    /// with a temporary journal.
    #[cfg(feature = "harness")]
    pub fn with_component(path: impl AsRef<std::path::Path>, entity_id: &str) -> Self {
        let host = harness::WasmHost::start(path.as_ref(), E::TYPE_NAME);
        Self::with_backend(entity_id, Backend::Wasm(Box::new(host)))
    }

    fn with_backend(entity_id: &str, backend: Backend) -> Self {
        Self {
            entity_id: entity_id.to_owned(),
            backend,
            seq_nr: 0,
            now_ms: 1_700_000_000_000,
            commands_sent: 0,
            timers: std::collections::BTreeMap::new(),
            _entity: core::marker::PhantomData,
        }
    }

    /// Whether commands run in the built component (the wasm harness).
    pub fn is_wasm(&self) -> bool {
        !matches!(self.backend, Backend::Native { .. })
    }

    /// Applies past events, as recovery would: each is encoded to JSON and
    /// the lot folded through `apply` by the component's `apply-events` entry
    /// point (in the harness: appended to the journal, then recovered by the
    /// component).
    pub fn given(mut self, events: impl IntoIterator<Item = E::Event>) -> Self {
        let encoded: Vec<Vec<u8>> = events
            .into_iter()
            .map(|event| {
                codec::encode_json(&event)
                    .unwrap_or_else(|e| panic!("given event does not encode: {e}"))
            })
            .collect();
        match &mut self.backend {
            Backend::Native { state } => {
                *state = abi::apply_events::<E, _>(state, &encoded)
                    .unwrap_or_else(|e| panic!("given events do not apply: {e}"));
                self.seq_nr += encoded.len() as u64;
            }
            #[cfg(feature = "harness")]
            Backend::Wasm(host) => {
                self.seq_nr = host.seed(&self.entity_id, encoded);
            }
        }
        self
    }

    /// Sets the clock the next commands see as `ctx.now_ms()`.
    pub fn at_time(mut self, now_ms: u64) -> Self {
        self.now_ms = now_ms;
        self
    }

    /// Sends a typed command (encoded to JSON first, as a caller would).
    pub fn when(&mut self, command: E::Command) -> Outcome<E>
    where
        E::Command: Serialize,
    {
        let bytes =
            codec::encode_json(&command).unwrap_or_else(|e| panic!("command does not encode: {e}"));
        self.send(bytes)
    }

    /// Sends a command as JSON text, exactly as a caller would type it.
    pub fn when_json(&mut self, json: &str) -> Outcome<E> {
        self.send(json.as_bytes().to_vec())
    }

    /// Delivers `send` (from another entity's [`Outcome::sends`]) to this
    /// entity, as the host would. Panics if it is addressed to another
    /// entity.
    #[track_caller]
    pub fn deliver(&mut self, send: &Send) -> Outcome<E> {
        if send.entity_type != E::TYPE_NAME || send.entity_id != self.entity_id {
            panic!(
                "the send is for {} {}, this kit runs {} {}",
                send.entity_type,
                send.entity_id,
                E::TYPE_NAME,
                self.entity_id
            );
        }
        self.send(send.command.to_string().into_bytes())
    }

    /// Delivers the `on_accepted` command of `send` back to this entity (its
    /// sender), as the host does once the target accepts the send. Panics
    /// if the send declared none.
    #[track_caller]
    pub fn deliver_acceptance(&mut self, send: &Send) -> Outcome<E> {
        let Some(command) = &send.on_accepted else {
            panic!(
                "the send to {} {} declared no on-accepted command",
                send.entity_type, send.entity_id
            );
        };
        self.send(command.to_string().into_bytes())
    }

    /// Delivers the `on_refused` command of `send` back to this entity (its
    /// sender), as the host does when the target refuses the send. Panics
    /// if the send declared none.
    #[track_caller]
    pub fn deliver_refusal(&mut self, send: &Send) -> Outcome<E> {
        let Some(command) = &send.on_refused else {
            panic!(
                "the send to {} {} declared no on-refused command",
                send.entity_type, send.entity_id
            );
        };
        self.send(command.to_string().into_bytes())
    }

    /// The timers set and not yet fired or cancelled, by name: when each
    /// fires and its command.
    pub fn pending_timers(&self) -> &std::collections::BTreeMap<String, (u64, Value)> {
        &self.timers
    }

    /// Fires the pending timer `name` as the host would: the clock moves to
    /// its time (if later) and its command is delivered. Panics if no timer
    /// of that name is pending.
    #[track_caller]
    pub fn fire_timer(&mut self, name: &str) -> Outcome<E> {
        let Some((fire_at_ms, command)) = self.timers.remove(name) else {
            panic!(
                "no timer {name:?} is pending (pending: {:?})",
                self.timers.keys().collect::<Vec<_>>()
            );
        };
        self.now_ms = self.now_ms.max(fire_at_ms);
        self.send(command.to_string().into_bytes())
    }

    fn send(&mut self, command: Vec<u8>) -> Outcome<E> {
        self.commands_sent += 1;
        let ctx = Context::new(
            E::TYPE_NAME,
            self.entity_id.clone(),
            self.seq_nr,
            self.now_ms,
            format!("test-{}", self.commands_sent),
        );
        let command_text = String::from_utf8_lossy(&command).into_owned();
        let (result, logs) = match &mut self.backend {
            Backend::Native { state } => {
                let _ = log::take();
                let result = abi::handle_command::<E>(&ctx, state, &command);
                let logs = log::take();
                if let Ok(effects) = &result {
                    *state = effects.state.clone();
                }
                (result, logs)
            }
            #[cfg(feature = "harness")]
            Backend::Wasm(host) => (host.send(&ctx, command), Vec::new()),
        };
        if let Ok(effects) = &result {
            self.seq_nr += effects.events.len() as u64;
            for change in &effects.timers {
                match change {
                    TimerChange::Set {
                        name,
                        fire_at_ms,
                        command,
                    } => {
                        self.timers
                            .insert(name.clone(), (*fire_at_ms, command.clone()));
                    }
                    TimerChange::Cancel { name } => {
                        self.timers.remove(name);
                    }
                }
            }
        }
        Outcome {
            command: command_text,
            result,
            state: self.state(),
            seq_nr: self.seq_nr,
            logs,
        }
    }

    fn state_bytes(&self) -> Vec<u8> {
        match &self.backend {
            Backend::Native { state } => state.clone(),
            #[cfg(feature = "harness")]
            Backend::Wasm(host) => host.state(&self.entity_id),
        }
    }

    /// The entity's current state.
    pub fn state(&self) -> E {
        decode_state::<E>(&self.state_bytes())
    }

    /// The entity's current view, as JSON.
    pub fn view(&self) -> Value {
        let bytes = match &self.backend {
            Backend::Native { state } => {
                abi::view::<E>(state).unwrap_or_else(|e| panic!("view does not encode: {e}"))
            }
            #[cfg(feature = "harness")]
            Backend::Wasm(host) => host.view(&self.entity_id),
        };
        parse_json(&bytes, "view")
    }

    /// The sequence number of the last event (0 if none).
    pub fn seq_nr(&self) -> u64 {
        self.seq_nr
    }
}

/// What one command did. Assertion methods panic with a readable message and
/// return `&Self`, so they chain.
pub struct Outcome<E: EventSourced> {
    command: String,
    result: Result<abi::RawEffects, RawError>,
    state: E,
    seq_nr: u64,
    logs: Vec<(Level, String)>,
}

impl<E: EventSourced> Outcome<E> {
    /// The emitted events, decoded. Panics if the command was refused.
    pub fn events(&self) -> Vec<E::Event> {
        self.accepted()
            .events
            .iter()
            .map(|bytes| {
                codec::decode_json(bytes).unwrap_or_else(|e| panic!("event does not decode: {e}"))
            })
            .collect()
    }

    /// Asserts that exactly `expected` were emitted, in order.
    #[track_caller]
    pub fn expect_events(&self, expected: &[E::Event]) -> &Self {
        let actual: Vec<Value> = self
            .accepted()
            .events
            .iter()
            .map(|bytes| parse_json(bytes, "event"))
            .collect();
        let expected: Vec<Value> = expected.iter().map(to_json).collect();
        if actual != expected {
            panic!(
                "command {} emitted unexpected events\n  expected: {}\n    actual: {}",
                self.command,
                Value::Array(expected),
                Value::Array(actual)
            );
        }
        self
    }

    /// Asserts that the command was accepted and emitted no events.
    #[track_caller]
    pub fn expect_no_events(&self) -> &Self {
        self.expect_events(&[])
    }

    /// The commands the command sends, in order. Panics if it was refused.
    pub fn sends(&self) -> &[Send] {
        &self.accepted().sends
    }

    /// Asserts that exactly `expected` are sent, in order.
    #[track_caller]
    pub fn expect_sends(&self, expected: &[Send]) -> &Self {
        let actual = self.sends();
        if actual != expected {
            panic!(
                "command {} sent unexpected commands\n  expected: {expected:?}\n    actual: {actual:?}",
                self.command
            );
        }
        self
    }

    /// Asserts that the command sent `command` to entity `id` of type `T`
    /// (among its sends).
    #[track_caller]
    pub fn expect_send<T: EventSourced>(&self, id: &str, command: &T::Command) -> &Self
    where
        T::Command: Serialize,
    {
        let command = to_json(command);
        let found = self
            .sends()
            .iter()
            .any(|s| s.entity_type == T::TYPE_NAME && s.entity_id == id && s.command == command);
        if !found {
            panic!(
                "command {} did not send {command} to {} {id}; it sent {:?}",
                self.command,
                T::TYPE_NAME,
                self.sends()
            );
        }
        self
    }

    /// The timer changes the command makes, in order. Panics if it was
    /// refused.
    pub fn timers(&self) -> &[TimerChange] {
        &self.accepted().timers
    }

    /// Asserts that exactly `expected` timer changes are made, in order.
    #[track_caller]
    pub fn expect_timers(&self, expected: &[TimerChange]) -> &Self {
        let actual = self.timers();
        if actual != expected {
            panic!(
                "command {} changed timers unexpectedly\n  expected: {expected:?}\n    actual: {actual:?}",
                self.command
            );
        }
        self
    }

    /// Asserts that the command sets timer `name` to fire at `fire_at_ms`
    /// with `command` (among its timer changes).
    #[track_caller]
    pub fn expect_timer(&self, name: &str, fire_at_ms: u64, command: &impl Serialize) -> &Self {
        let expected = TimerChange::Set {
            name: name.to_owned(),
            fire_at_ms,
            command: to_json(command),
        };
        if !self.timers().contains(&expected) {
            panic!(
                "command {} did not set {expected:?}; its timer changes: {:?}",
                self.command,
                self.timers()
            );
        }
        self
    }

    /// The reply, as JSON. Panics if the command was refused.
    pub fn reply_json(&self) -> Value {
        parse_json(&self.accepted().reply, "reply")
    }

    /// Asserts the reply equals `expected` (compared as JSON).
    #[track_caller]
    pub fn expect_reply<R: Serialize + Debug>(&self, expected: &R) -> &Self {
        let actual = self.reply_json();
        let expected = to_json(expected);
        if actual != expected {
            panic!(
                "command {} gave an unexpected reply\n  expected: {expected}\n    actual: {actual}",
                self.command
            );
        }
        self
    }

    /// The state after the command (unchanged if it was refused).
    pub fn state(&self) -> &E {
        &self.state
    }

    /// Runs assertions on the state after the command.
    #[track_caller]
    pub fn expect_state(&self, check: impl FnOnce(&E)) -> &Self {
        check(&self.state);
        self
    }

    /// The sequence number after the command.
    pub fn seq_nr(&self) -> u64 {
        self.seq_nr
    }

    /// The lines the entity logged while handling the command.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// The refusal, if any.
    pub fn error(&self) -> Option<&RawError> {
        self.result.as_ref().err()
    }

    /// Asserts the entity rejected the command with exactly `message`.
    #[track_caller]
    pub fn expect_rejected(&self, message: &str) -> &Self {
        match &self.result {
            Err(RawError::Rejected(m)) if m == message => self,
            other => panic!(
                "command {} was expected to be rejected with {message:?}, but {}",
                self.command,
                describe_result(other)
            ),
        }
    }

    /// Asserts the command did not decode, with a decoder message containing
    /// `fragment`.
    #[track_caller]
    pub fn expect_invalid_command(&self, fragment: &str) -> &Self {
        match &self.result {
            Err(RawError::InvalidCommand(m)) if m.contains(fragment) => self,
            other => panic!(
                "command {} was expected to be invalid (message containing {fragment:?}), but {}",
                self.command,
                describe_result(other)
            ),
        }
    }

    #[track_caller]
    fn accepted(&self) -> &abi::RawEffects {
        match &self.result {
            Ok(effects) => effects,
            Err(e) => panic!(
                "command {} was expected to be accepted, but {}",
                self.command,
                describe_result(&Err(e.clone()))
            ),
        }
    }
}

fn describe_result(result: &Result<abi::RawEffects, RawError>) -> String {
    match result {
        Ok(effects) => {
            let events: Vec<Value> = effects
                .events
                .iter()
                .map(|b| parse_json(b, "event"))
                .collect();
            format!(
                "it was accepted with events {} and reply {}",
                Value::Array(events),
                parse_json(&effects.reply, "reply")
            )
        }
        Err(RawError::Rejected(m)) => format!("it was rejected: {m:?}"),
        Err(RawError::InvalidCommand(m)) => format!("it was an invalid command: {m:?}"),
        Err(RawError::InvalidState(m)) => format!("the state did not decode: {m:?}"),
    }
}

fn decode_state<E: EventSourced>(bytes: &[u8]) -> E {
    codec::decode_state(bytes).unwrap_or_else(|e| panic!("state does not decode: {e}"))
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| panic!("value does not encode as JSON: {e}"))
}

fn parse_json(bytes: &[u8], what: &str) -> Value {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "{what} is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

#[cfg(test)]
mod tests {
    //! The kit tested on a tiny counter entity, including its failure messages.
    use super::*;
    use crate::Effect;
    use serde::Deserialize;

    #[derive(Default, Serialize, Deserialize)]
    struct Counter {
        n: u32,
    }

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Cmd {
        Add {
            by: u32,
        },
        Peek {},
        /// Adds `by` here and sends the same to `to`, refunding itself if
        /// `to` refuses.
        Share {
            to: String,
            by: u32,
        },
        /// Adds `by` at `to`, and 10 here once it did (1 if it refused).
        Ask {
            to: String,
            by: u32,
        },
        /// Adds 1 at `at`.
        Remind {
            at: u64,
        },
        Forget {},
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Ev {
        Added { by: u32 },
    }

    impl EventSourced for Counter {
        const TYPE_NAME: &'static str = "counter";
        const VERSION: &'static str = "0.0.1";
        type Command = Cmd;
        type Event = Ev;
        type Reply = u32;
        type Error = String;
        type View = u32;

        fn initial(_id: &str) -> Self {
            Counter::default()
        }

        fn handle(&self, ctx: &Context, cmd: Cmd) -> Result<Effect<Ev, u32>, String> {
            crate::log::info(&format!("seq {}", ctx.seq_nr()));
            match cmd {
                Cmd::Add { by: 0 } => Err("nothing to add".into()),
                Cmd::Add { by } => Ok(Effect::persist(Ev::Added { by }).then_reply(self.n + by)),
                Cmd::Peek {} => Ok(Effect::reply(self.n)),
                Cmd::Share { to, by } => Ok(Effect::persist(Ev::Added { by })
                    .send_or::<Counter>(to, Cmd::Add { by }, &Cmd::Add { by: 1 })
                    .then_reply(self.n + by)),
                Cmd::Ask { to, by } => Ok(Effect::persist(Ev::Added { by: 0 })
                    .ask::<Counter>(
                        to,
                        Cmd::Add { by },
                        &Cmd::Add { by: 10 },
                        &Cmd::Add { by: 1 },
                    )
                    .then_reply(self.n)),
                Cmd::Remind { at } => Ok(Effect::persist(Ev::Added { by: 0 })
                    .set_timer("remind", at, &Cmd::Add { by: 1 })
                    .then_reply(self.n)),
                Cmd::Forget {} => Ok(Effect::persist(Ev::Added { by: 0 })
                    .cancel_timer("remind")
                    .then_reply(self.n)),
            }
        }

        fn apply(&mut self, event: &Ev) {
            match event {
                Ev::Added { by } => self.n += by,
            }
        }

        fn view(&self) -> u32 {
            self.n
        }
    }

    #[test]
    fn a_send_is_asserted_and_delivered_to_its_target_and_a_refusal_to_its_sender() {
        let mut a = TestKit::<Counter>::new("a");
        let mut b = TestKit::<Counter>::new("b");
        let shared = a.when(Cmd::Share {
            to: "b".into(),
            by: 3,
        });
        shared.expect_send::<Counter>("b", &Cmd::Add { by: 3 });
        shared.expect_sends(&[Send {
            entity_type: "counter".into(),
            entity_id: "b".into(),
            command: serde_json::json!({"add": {"by": 3}}),
            on_accepted: None,
            on_refused: Some(serde_json::json!({"add": {"by": 1}})),
        }]);
        let send = shared.sends()[0].clone();
        b.deliver(&send).expect_reply(&3);
        a.deliver_refusal(&send).expect_reply(&4);
        let no_acceptance = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.deliver_acceptance(&send);
        }));
        assert!(no_acceptance.is_err(), "send_or declares no on-accepted");
        let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            a.deliver(&send);
        }));
        assert!(wrong.is_err(), "a send for b is not delivered to a");
    }

    #[test]
    fn an_ask_hears_back_on_acceptance_and_on_refusal() {
        let mut a = TestKit::<Counter>::new("a");
        let asked = a.when(Cmd::Ask {
            to: "b".into(),
            by: 0,
        });
        let send = asked.sends()[0].clone();
        assert_eq!(
            send.on_accepted,
            Some(serde_json::json!({"add": {"by": 10}}))
        );
        // The target refuses an add of 0: the sender hears of it.
        TestKit::<Counter>::new("b")
            .deliver(&send)
            .expect_rejected("nothing to add");
        a.deliver_refusal(&send).expect_reply(&1);
        a.deliver_acceptance(&send).expect_reply(&11);
    }

    #[test]
    fn a_timer_is_asserted_kept_pending_fired_at_its_time_and_cancelled() {
        let mut kit = TestKit::<Counter>::new("c").at_time(1_000);
        kit.when(Cmd::Remind { at: 5_000 })
            .expect_timer("remind", 5_000, &Cmd::Add { by: 1 });
        assert_eq!(kit.pending_timers().len(), 1);
        kit.fire_timer("remind").expect_reply(&1);
        assert!(kit.pending_timers().is_empty(), "a fired timer is gone");
        kit.when(Cmd::Remind { at: 9_000 });
        kit.when(Cmd::Forget {})
            .expect_timers(&[TimerChange::Cancel {
                name: "remind".into(),
            }]);
        assert!(kit.pending_timers().is_empty(), "a cancelled timer is gone");
        let missing = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            kit.fire_timer("remind");
        }));
        assert!(missing.is_err(), "no timer to fire");
    }

    #[test]
    fn apply_events_equals_apply_event_folded_and_names_the_event_that_fails() {
        let state = abi::initial_state::<Counter>("c");
        let events: Vec<Vec<u8>> = (1..=5)
            .map(|by| format!(r#"{{"added":{{"by":{by}}}}}"#).into_bytes())
            .collect();
        let folded = events.iter().fold(state.clone(), |s, e| {
            abi::apply_event::<Counter>(&s, e).expect("applies")
        });
        assert_eq!(abi::apply_events::<Counter, _>(&state, &events), Ok(folded));
        assert_eq!(
            abi::apply_events::<Counter, Vec<u8>>(&state, &[]),
            Ok(state.clone()),
            "no events: the state unchanged"
        );
        let mut bad = events.clone();
        bad[3] = b"{\"nope\":{}}".to_vec();
        let err = abi::apply_events::<Counter, _>(&state, &bad).expect_err("refused");
        assert!(err.starts_with("event 3 does not decode"), "{err}");
        let err = abi::apply_events::<Counter, _>(b"\xff", &events).expect_err("bad state");
        assert!(!err.is_empty());
    }

    #[test]
    fn given_events_then_command_emits_events_reply_and_new_state() {
        let mut kit = TestKit::<Counter>::new("c").given([Ev::Added { by: 2 }]);
        kit.when(Cmd::Add { by: 3 })
            .expect_events(&[Ev::Added { by: 3 }])
            .expect_reply(&5)
            .expect_state(|s| assert_eq!(s.n, 5));
        assert_eq!(kit.seq_nr(), 2);
        assert_eq!(kit.view(), serde_json::json!(5));
    }

    #[test]
    fn handler_sees_the_sequence_number_and_its_logs_are_captured() {
        let mut kit = TestKit::<Counter>::new("c").given([Ev::Added { by: 1 }]);
        let outcome = kit.when(Cmd::Peek {});
        outcome.expect_no_events();
        assert_eq!(outcome.logs(), &[(Level::Info, "seq 1".to_string())]);
    }

    #[test]
    fn rejection_keeps_state_and_sequence_number() {
        let mut kit = TestKit::<Counter>::new("c").given([Ev::Added { by: 1 }]);
        kit.when(Cmd::Add { by: 0 })
            .expect_rejected("nothing to add")
            .expect_state(|s| assert_eq!(s.n, 1));
        assert_eq!(kit.seq_nr(), 1);
    }

    #[test]
    fn malformed_json_is_an_invalid_command_with_the_decoder_message() {
        let mut kit = TestKit::<Counter>::new("c");
        kit.when_json(r#"{"multiply":{"by":2}}"#)
            .expect_invalid_command("unknown variant `multiply`");
        kit.when_json("not json").expect_invalid_command("expected");
    }

    #[test]
    #[should_panic(expected = "emitted unexpected events")]
    fn wrong_expected_events_fail_with_a_readable_message() {
        TestKit::<Counter>::new("c")
            .when(Cmd::Add { by: 1 })
            .expect_events(&[Ev::Added { by: 2 }]);
    }

    #[test]
    #[should_panic(expected = "was expected to be rejected with \"x\", but it was accepted")]
    fn expecting_a_rejection_of_an_accepted_command_fails() {
        TestKit::<Counter>::new("c")
            .when(Cmd::Add { by: 1 })
            .expect_rejected("x");
    }

    #[test]
    #[should_panic(expected = "was expected to be accepted, but it was rejected")]
    fn expecting_events_of_a_rejected_command_fails() {
        TestKit::<Counter>::new("c")
            .when(Cmd::Add { by: 0 })
            .expect_no_events();
    }
}
