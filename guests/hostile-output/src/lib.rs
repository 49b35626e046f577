//! A guest that returns what the host must refuse, written against the raw
//! bindings (the SDK would never produce it). The command bytes name the
//! misbehaviour: `not-json-event`, `too-many-events`, `huge-event`,
//! `huge-state`, `not-json-reply`; `ok` persists one valid event. Its optional
//! `apply-events` always traps, so the host must recover its entities through
//! `apply-event`, one event at a time. For tests only.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

#[cfg(target_arch = "wasm32")]
mod guest {
    use stead_sdk::__private::bindings::exports::stead::entity::handler::Guest;
    use stead_sdk::__private::bindings::exports::stead::entity::replay::Guest as ReplayGuest;
    use stead_sdk::__private::bindings::stead::entity::types::{
        CommandContext, CommandError, Effects, EntityInfo,
    };

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
            _ctx: CommandContext,
            state: Vec<u8>,
            command: Vec<u8>,
        ) -> Result<Effects, CommandError> {
            let ok = |events: Vec<Vec<u8>>, state: Option<Vec<u8>>, reply: &[u8]| {
                Ok(Effects {
                    events,
                    state,
                    reply: reply.to_vec(),
                })
            };
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
