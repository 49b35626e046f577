//! Any SDK entity run natively through the host's command path: the
//! yardstick of the built component, shared by `host/cli/benches/engine.rs` and
//! `tests/tests/wasm_equals_native.rs` (each includes this file by `#[path]`).

use std::marker::PhantomData;

use stead_runtime::{CommandOutcome, EntityInfo, NativeEntity, Rejection};
use stead_sdk::__private::abi::{self, RawError};
use stead_sdk::{Context, EventSourced};

/// `E`'s own code behind the same byte-level contract as its component.
pub(crate) struct Native<E>(PhantomData<fn() -> E>);

impl<E> Native<E> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<E: EventSourced> NativeEntity for Native<E> {
    fn describe(&self) -> EntityInfo {
        let info = abi::describe::<E>();
        EntityInfo {
            name: info.name.to_owned(),
            version: info.version.to_owned(),
            snapshot_every: info.snapshot_every,
        }
    }

    fn initial_state(&self, entity_id: &str) -> Vec<u8> {
        abi::initial_state::<E>(entity_id)
    }

    fn handle_command(
        &self,
        ctx: (&str, &str, u64, u64, &str),
        state: &[u8],
        command: &[u8],
    ) -> Result<CommandOutcome, Rejection> {
        let (ty, id, seq, now, cmd_id) = ctx;
        let ctx = Context::new(ty, id, seq, now, cmd_id);
        match abi::handle_command::<E>(&ctx, state, command) {
            Ok(e) => Ok(CommandOutcome::new(e.events, Some(e.state), e.reply)),
            Err(RawError::Rejected(m)) => Err(Rejection::Rejected(m)),
            Err(RawError::InvalidCommand(m)) => Err(Rejection::InvalidCommand(m)),
            Err(RawError::InvalidState(m)) => Err(Rejection::InvalidState(m)),
        }
    }

    fn apply_event(&self, state: &[u8], event: &[u8]) -> Result<Vec<u8>, String> {
        abi::apply_event::<E>(state, event)
    }

    fn apply_events(&self, state: &[u8], events: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        abi::apply_events::<E, _>(state, events)
    }

    fn view(&self, state: &[u8]) -> Result<Vec<u8>, String> {
        abi::view::<E>(state)
    }
}
