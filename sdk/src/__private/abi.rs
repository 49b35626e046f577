//! Byte-level entry points of an entity: the exact functions the wasm glue
//! exports, also called by the native test kit so both run the same code.
//!
//! Invariant: every function here is a pure function of its arguments. A
//! failure to encode a value the entity itself produced (a bug in the entity's
//! `Serialize` impls) panics, which becomes a trap for that one call in wasm.

use crate::codec::{self, CodecError};
use crate::entity::{Context, EventSourced, Send, TimerChange};

/// What `describe` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub name: &'static str,
    pub version: &'static str,
    pub snapshot_every: u32,
}

/// Accepted command, encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEffects {
    /// JSON events, in order.
    pub events: Vec<Vec<u8>>,
    /// State bytes after the events.
    pub state: Vec<u8>,
    /// JSON reply.
    pub reply: Vec<u8>,
    /// Commands to send, in order.
    pub sends: Vec<Send>,
    /// Timer changes, in order.
    pub timers: Vec<TimerChange>,
}

/// Refused command, as the WIT `command-error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawError {
    Rejected(String),
    InvalidCommand(String),
    InvalidState(String),
}

pub fn describe<E: EventSourced>() -> Info {
    Info {
        name: E::TYPE_NAME,
        version: E::VERSION,
        snapshot_every: E::SNAPSHOT_EVERY,
    }
}

pub fn initial_state<E: EventSourced>(id: &str) -> Vec<u8> {
    encode_state_or_panic(&E::initial(id))
}

pub fn handle_command<E: EventSourced>(
    ctx: &Context,
    state: &[u8],
    command: &[u8],
) -> Result<RawEffects, RawError> {
    let mut entity: E = codec::decode_state(state).map_err(|e| RawError::InvalidState(e.0))?;
    let command: E::Command =
        codec::decode_json(command).map_err(|e| RawError::InvalidCommand(e.0))?;
    let effect = entity
        .handle(ctx, command)
        .map_err(|e| RawError::Rejected(e.to_string()))?;
    let (events, reply, sends, timers) = effect.into_all_parts();
    let mut encoded = Vec::with_capacity(events.len());
    for event in &events {
        encoded.push(encode_or_panic("event", codec::encode_json(event)));
        entity.apply(event);
    }
    Ok(RawEffects {
        events: encoded,
        state: encode_state_or_panic(&entity),
        reply: encode_or_panic("reply", codec::encode_json(&reply)),
        sends,
        timers,
    })
}

pub fn apply_event<E: EventSourced>(state: &[u8], event: &[u8]) -> Result<Vec<u8>, String> {
    let mut entity: E = codec::decode_state(state).map_err(|e| e.0)?;
    let event: E::Event =
        codec::decode_json(event).map_err(|e| format!("event does not decode: {e}"))?;
    entity.apply(&event);
    Ok(encode_state_or_panic(&entity))
}

/// Folds `events` into `state`, decoding the state once and encoding it once:
/// the same result as [`apply_event`] per event, in a fraction of the calls.
/// An error names the index of the event that did not decode.
pub fn apply_events<E: EventSourced, B: AsRef<[u8]>>(
    state: &[u8],
    events: &[B],
) -> Result<Vec<u8>, String> {
    let mut entity: E = codec::decode_state(state).map_err(|e| e.0)?;
    for (index, event) in events.iter().enumerate() {
        let event: E::Event = codec::decode_json(event.as_ref())
            .map_err(|e| format!("event {index} does not decode: {e}"))?;
        entity.apply(&event);
    }
    Ok(encode_state_or_panic(&entity))
}

pub fn view<E: EventSourced>(state: &[u8]) -> Result<Vec<u8>, String> {
    let entity: E = codec::decode_state(state).map_err(|e| e.0)?;
    Ok(encode_or_panic("view", codec::encode_json(&entity.view())))
}

/// A JSON value's bytes (cannot fail: a `Value` always encodes).
pub fn json_bytes(value: &serde_json::Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

fn encode_state_or_panic<E: EventSourced>(entity: &E) -> Vec<u8> {
    encode_or_panic("state", codec::encode_state(entity))
}

fn encode_or_panic(what: &str, encoded: Result<Vec<u8>, CodecError>) -> Vec<u8> {
    match encoded {
        Ok(bytes) => bytes,
        Err(e) => panic!("entity {what} does not encode: {e}"),
    }
}
