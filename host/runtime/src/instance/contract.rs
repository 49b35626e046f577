//! The contract versions a wasm instance may speak, behind one interface:
//! wasmtime bindings of every served `stead:entity` version (the current
//! `wit/` and the frozen `wit/frozen/*`), and enums that dispatch a call to
//! the bindings of the version the component was validated against.
//!
//! Invariants: a component is linked and called through exactly the
//! bindings of its [`ContractVersion`]; the host's imports are the same
//! behaviour in every version (only `log`); a version without sends or
//! timers yields none.

use wasmtime::Store;
use wasmtime::component::{HasSelf, Instance, InstancePre, Linker};

use stead_component::ContractVersion;
use stead_types::effects::{SendCommand, Timer, TimerChange};

use super::{CommandCall, CommandOutcome, GuestState, LogLevel, Rejection};
use crate::EntityInfo;

/// `stead:entity@0.1.0`, frozen.
mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../../wit/frozen/0.1.0",
        world: "entity",
    });

    /// The optional `replay` export (world `entity-with-replay`).
    pub(super) mod optional {
        wasmtime::component::bindgen!({
            path: "../../wit/frozen/0.1.0",
            world: "entity-with-replay",
        });
    }
}

/// `stead:entity@0.2.0`, current.
mod v0_2 {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "entity",
    });

    /// The optional `replay` export (world `entity-with-replay`).
    pub(super) mod optional {
        wasmtime::component::bindgen!({
            path: "../../wit",
            world: "entity-with-replay",
        });
    }
}

/// Defines the host's imports of `version` in `linker`.
pub(super) fn link(
    linker: &mut Linker<GuestState>,
    version: ContractVersion,
) -> wasmtime::Result<()> {
    match version {
        ContractVersion::V0_1_0 => {
            v0_1::Entity::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)
        }
        ContractVersion::V0_2_0 => {
            v0_2::Entity::add_to_linker::<GuestState, HasSelf<GuestState>>(linker, |s| s)
        }
    }
}

/// The host's imports of one version's bindings: the same `log` in every
/// version, its level mapped to the host's.
macro_rules! host_imports {
    ($version:ident) => {
        impl $version::stead::entity::types::Host for GuestState {}

        impl $version::stead::entity::host::Host for GuestState {
            fn log(&mut self, level: $version::stead::entity::types::LogLevel, message: String) {
                use $version::stead::entity::types::LogLevel as L;
                let level = match level {
                    L::Trace => LogLevel::Trace,
                    L::Debug => LogLevel::Debug,
                    L::Info => LogLevel::Info,
                    L::Warn => LogLevel::Warn,
                    L::Error => LogLevel::Error,
                };
                self.log(level, &message);
            }
        }
    };
}

host_imports!(v0_1);
host_imports!(v0_2);

/// The handler's export indices, looked up once per deployment.
pub(super) enum HandlerIndices {
    V0_1(v0_1::EntityIndices),
    V0_2(v0_2::EntityIndices),
}

/// The optional replay export's indices.
pub(super) enum ReplayIndices {
    V0_1(v0_1::optional::exports::stead::entity::replay::GuestIndices),
    V0_2(v0_2::optional::exports::stead::entity::replay::GuestIndices),
}

impl HandlerIndices {
    pub(super) fn new(
        pre: &InstancePre<GuestState>,
        version: ContractVersion,
    ) -> wasmtime::Result<Self> {
        Ok(match version {
            ContractVersion::V0_1_0 => HandlerIndices::V0_1(v0_1::EntityIndices::new(pre)?),
            ContractVersion::V0_2_0 => HandlerIndices::V0_2(v0_2::EntityIndices::new(pre)?),
        })
    }

    pub(super) fn load(
        &self,
        store: &mut Store<GuestState>,
        instance: &Instance,
    ) -> wasmtime::Result<Handler> {
        Ok(match self {
            HandlerIndices::V0_1(i) => Handler::V0_1(i.load(store, instance)?),
            HandlerIndices::V0_2(i) => Handler::V0_2(i.load(store, instance)?),
        })
    }
}

impl ReplayIndices {
    /// The indices when the component exports `replay`, else `None`.
    pub(super) fn new(
        pre: &InstancePre<GuestState>,
        version: ContractVersion,
    ) -> wasmtime::Result<Option<Self>> {
        let name = version.interface("replay");
        if pre.component().get_export_index(None, &name).is_none() {
            return Ok(None);
        }
        Ok(Some(match version {
            ContractVersion::V0_1_0 => ReplayIndices::V0_1(
                v0_1::optional::exports::stead::entity::replay::GuestIndices::new(pre)?,
            ),
            ContractVersion::V0_2_0 => ReplayIndices::V0_2(
                v0_2::optional::exports::stead::entity::replay::GuestIndices::new(pre)?,
            ),
        }))
    }

    pub(super) fn load(
        &self,
        store: &mut Store<GuestState>,
        instance: &Instance,
    ) -> wasmtime::Result<Replay> {
        Ok(match self {
            ReplayIndices::V0_1(i) => Replay::V0_1(i.load(store, instance)?),
            ReplayIndices::V0_2(i) => Replay::V0_2(i.load(store, instance)?),
        })
    }
}

/// An instance's bound handler export.
pub(super) enum Handler {
    V0_1(v0_1::Entity),
    V0_2(v0_2::Entity),
}

/// An instance's bound replay export.
pub(super) enum Replay {
    V0_1(v0_1::optional::exports::stead::entity::replay::Guest),
    V0_2(v0_2::optional::exports::stead::entity::replay::Guest),
}

/// Converts one version's `command-error` to the host's rejection.
macro_rules! rejection {
    ($error:expr, $ty:path) => {{
        use $ty as E;
        match $error {
            E::Rejected(m) => Rejection::Rejected(m),
            E::InvalidCommand(m) => Rejection::InvalidCommand(m),
            E::InvalidState(m) => Rejection::InvalidState(m),
        }
    }};
}

/// Builds one version's `command-context` from a call.
macro_rules! context {
    ($call:expr, $ty:path) => {{
        use $ty as C;
        C {
            entity_type: $call.entity_type.to_owned(),
            entity_id: $call.entity_id.to_owned(),
            seq_nr: $call.seq_nr,
            now_ms: $call.now_ms,
            command_id: $call.command_id.to_owned(),
        }
    }};
}

impl Handler {
    pub(super) fn describe(&self, store: &mut Store<GuestState>) -> wasmtime::Result<EntityInfo> {
        Ok(match self {
            Handler::V0_1(e) => {
                let i = e.stead_entity_handler().call_describe(store)?;
                EntityInfo {
                    name: i.name,
                    version: i.version,
                    snapshot_every: i.snapshot_every,
                }
            }
            Handler::V0_2(e) => {
                let i = e.stead_entity_handler().call_describe(store)?;
                EntityInfo {
                    name: i.name,
                    version: i.version,
                    snapshot_every: i.snapshot_every,
                }
            }
        })
    }

    pub(super) fn initial_state(
        &self,
        store: &mut Store<GuestState>,
        id: &str,
    ) -> wasmtime::Result<Vec<u8>> {
        match self {
            Handler::V0_1(e) => e.stead_entity_handler().call_initial_state(store, id),
            Handler::V0_2(e) => e.stead_entity_handler().call_initial_state(store, id),
        }
    }

    /// `handle-command`; the inner error is the guest's refusal.
    pub(super) fn handle_command(
        &self,
        store: &mut Store<GuestState>,
        call: &CommandCall<'_>,
        state: &[u8],
        command: &[u8],
    ) -> wasmtime::Result<Result<CommandOutcome, Rejection>> {
        Ok(match self {
            Handler::V0_1(e) => {
                let ctx = context!(call, v0_1::exports::stead::entity::handler::CommandContext);
                match e
                    .stead_entity_handler()
                    .call_handle_command(store, &ctx, state, command)?
                {
                    Ok(effects) => Ok(CommandOutcome {
                        events: effects.events,
                        state: effects.state,
                        reply: effects.reply,
                        sends: Vec::new(),
                        timers: Vec::new(),
                    }),
                    Err(error) => Err(rejection!(
                        error,
                        v0_1::exports::stead::entity::handler::CommandError
                    )),
                }
            }
            Handler::V0_2(e) => {
                let ctx = context!(call, v0_2::exports::stead::entity::handler::CommandContext);
                match e
                    .stead_entity_handler()
                    .call_handle_command(store, &ctx, state, command)?
                {
                    Ok(effects) => Ok(outcome_v0_2(effects)),
                    Err(error) => Err(rejection!(
                        error,
                        v0_2::exports::stead::entity::handler::CommandError
                    )),
                }
            }
        })
    }

    /// `apply-event`; the inner error is the guest's refusal.
    pub(super) fn apply_event(
        &self,
        store: &mut Store<GuestState>,
        state: &[u8],
        event: &[u8],
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        match self {
            Handler::V0_1(e) => e
                .stead_entity_handler()
                .call_apply_event(store, state, event),
            Handler::V0_2(e) => e
                .stead_entity_handler()
                .call_apply_event(store, state, event),
        }
    }

    /// `view`; the inner error is the guest's refusal.
    pub(super) fn view(
        &self,
        store: &mut Store<GuestState>,
        state: &[u8],
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        match self {
            Handler::V0_1(e) => e.stead_entity_handler().call_view(store, state),
            Handler::V0_2(e) => e.stead_entity_handler().call_view(store, state),
        }
    }
}

impl Replay {
    /// `apply-events`; the inner error is the guest's refusal.
    pub(super) fn apply_events(
        &self,
        store: &mut Store<GuestState>,
        state: &[u8],
        events: &[Vec<u8>],
    ) -> wasmtime::Result<Result<Vec<u8>, String>> {
        match self {
            Replay::V0_1(r) => r.call_apply_events(store, state, events),
            Replay::V0_2(r) => r.call_apply_events(store, state, events),
        }
    }
}

fn outcome_v0_2(effects: v0_2::exports::stead::entity::handler::Effects) -> CommandOutcome {
    use v0_2::stead::entity::types::TimerChange as Change;
    CommandOutcome {
        events: effects.events,
        state: effects.state,
        reply: effects.reply,
        sends: effects
            .sends
            .into_iter()
            .map(|s| SendCommand {
                entity_type: s.entity_type,
                entity_id: s.entity_id,
                command: s.command,
                on_accepted: s.on_accepted,
                on_refused: s.on_refused,
            })
            .collect(),
        timers: effects
            .timers
            .into_iter()
            .map(|t| match t {
                Change::Set(t) => TimerChange::Set(Timer {
                    name: t.name,
                    fire_at_ms: t.fire_at_ms,
                    command: t.command,
                }),
                Change::Cancel(name) => TimerChange::Cancel(name),
            })
            .collect(),
    }
}
