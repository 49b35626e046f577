//! A guest that returns what the host must refuse, written against the raw
//! bindings (the SDK would never produce it). The command bytes name the
//! misbehaviour: `not-json-event`, `too-many-events`, `huge-event`,
//! `huge-state`, `not-json-reply`, and for sends and timers `send-no-event`,
//! `too-many-sends`, `send-bad-type`, `send-empty-id`, `send-not-json`,
//! `refusal-not-json`, `acceptance-not-json`, `too-many-timers`,
//! `timer-no-name`, `timer-too-far`, `timer-not-json`; `ok` persists one valid event. Its optional
//! `apply-events` always traps, so the host must recover its entities through
//! `apply-event`, one event at a time. For tests only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[cfg(target_arch = "wasm32")]
mod guest {
    use stead_sdk::__private::bindings::exports::stead::entity::handler::Guest;
    use stead_sdk::__private::bindings::exports::stead::entity::replay::Guest as ReplayGuest;
    use stead_sdk::__private::bindings::stead::entity::types::{
        CommandContext, CommandError, Effects, EntityInfo, Send, Timer, TimerChange,
    };

    fn send(entity_type: &str, command: &[u8], on_refused: Option<&[u8]>) -> Send {
        Send {
            entity_type: entity_type.into(),
            entity_id: "t".into(),
            command: command.to_vec(),
            on_accepted: None,
            on_refused: on_refused.map(<[u8]>::to_vec),
        }
    }

    fn timer(name: &str, fire_at_ms: u64, command: &[u8]) -> TimerChange {
        TimerChange::Set(Timer {
            name: name.into(),
            fire_at_ms,
            command: command.to_vec(),
        })
    }

    pub struct Output;

    impl Guest for Output {
        fn describe() -> EntityInfo {
            EntityInfo {
                name: "hostile-output".into(),
                version: "0.1.0".into(),
                snapshot_every: 0,
            }
        }

        fn initial_state(_id: String) -> Vec<u8> {
            Vec::new()
        }

        fn handle_command(
            ctx: CommandContext,
            state: Vec<u8>,
            command: Vec<u8>,
        ) -> Result<Effects, CommandError> {
            let ok = |events: Vec<Vec<u8>>, state: Option<Vec<u8>>, reply: &[u8]| {
                Ok(Effects {
                    events,
                    state,
                    reply: reply.to_vec(),
                    sends: Vec::new(),
                    timers: Vec::new(),
                })
            };
            let messages = |events: usize, sends: Vec<Send>, timers: Vec<TimerChange>| {
                Ok(Effects {
                    events: vec![b"{}".to_vec(); events],
                    state: None,
                    reply: b"{}".to_vec(),
                    sends,
                    timers,
                })
            };
            let good = |n| send("account", b"{\"deposit\":{\"amount\":1}}", None);
            let later = ctx.now_ms + 1000;
            match command.as_slice() {
                b"ok" => ok(vec![b"{\"ok\":true}".to_vec()], Some(state), b"{}"),
                b"not-json-event" => ok(vec![b"\xff\xfe not json".to_vec()], None, b"{}"),
                b"too-many-events" => ok(vec![b"{}".to_vec(); 1000], None, b"{}"),
                b"huge-event" => {
                    let mut event = b"\"".to_vec();
                    event.extend(std::iter::repeat_n(b'x', 512 * 1024));
                    event.push(b'"');
                    ok(vec![event], None, b"{}")
                }
                b"huge-state" => ok(vec![b"{}".to_vec()], Some(vec![0u8; 8 << 20]), b"{}"),
                b"not-json-reply" => ok(vec![], None, b"<html>"),
                b"send-no-event" => messages(0, vec![good(0)], vec![]),
                b"too-many-sends" => messages(1, (0..33).map(good).collect(), vec![]),
                b"send-bad-type" => messages(1, vec![send("Not A Type", b"{}", None)], vec![]),
                b"send-empty-id" => {
                    let mut bad = good(0);
                    bad.entity_id.clear();
                    messages(1, vec![bad], vec![])
                }
                b"send-not-json" => messages(1, vec![send("account", b"{oops", None)], vec![]),
                b"refusal-not-json" => {
                    messages(1, vec![send("account", b"{}", Some(b"nope"))], vec![])
                }
                b"acceptance-not-json" => {
                    let mut bad = good(0);
                    bad.on_accepted = Some(b"{".to_vec());
                    messages(1, vec![bad], vec![])
                }
                b"too-many-timers" => messages(
                    1,
                    vec![],
                    (0..33).map(|_| timer("t", later, b"{}")).collect(),
                ),
                b"timer-no-name" => messages(1, vec![], vec![timer("", later, b"{}")]),
                b"timer-too-far" => messages(1, vec![], vec![timer("t", u64::MAX, b"{}")]),
                b"timer-not-json" => messages(1, vec![], vec![timer("t", later, b"[")]),
                b"send-ok" => messages(1, vec![good(0)], vec![]),
                b"timer-ok" => messages(1, vec![], vec![timer("t", later, b"{}")]),
                other => Err(CommandError::InvalidCommand(format!(
                    "unknown misbehaviour {:?}",
                    String::from_utf8_lossy(other)
                ))),
            }
        }

        fn apply_event(state: Vec<u8>, _event: Vec<u8>) -> Result<Vec<u8>, String> {
            Ok(state)
        }

        fn view(_state: Vec<u8>) -> Result<Vec<u8>, String> {
            Ok(b"{}".to_vec())
        }
    }

    impl ReplayGuest for Output {
        fn apply_events(_state: Vec<u8>, _events: Vec<Vec<u8>>) -> Result<Vec<u8>, String> {
            panic!("hostile-output never folds a batch")
        }
    }

    stead_sdk::__private::bindings::__stead_export_entity_world!(
        Output with_types_in stead_sdk::__private::bindings
    );
}
