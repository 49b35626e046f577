//! One guest instance: a wasmtime `Store` and the bound exports, with every
//! call under the CPU deadline and the memory limit.
//!
//! Invariant: after a call returns a [`GuestFault`] the instance must be
//! dropped (the owner does so); all other outcomes leave it reusable.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::{ResourceLimiter, Store};

use stead_types::config::Limits;

use super::{EPOCH_TICK, EntityInfo, Runtime};

mod contract;

use stead_component::ContractVersion;
use stead_types::effects::{SendCommand, TimerChange};
use wasmtime::component::{InstancePre, Linker};

use contract::{Handler, HandlerIndices, Replay, ReplayIndices};

/// A guest call that did not complete: the one command fails, the instance
/// is discarded, nothing else is affected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum GuestFault {
    #[error("the guest trapped: {0}")]
    Trap(String),
    #[error("the guest exceeded its CPU deadline of {0:?}")]
    Deadline(Duration),
    #[error("the guest exceeded its memory limit of {0} bytes")]
    MemoryLimit(usize),
    #[error("the guest returned invalid output: {0}")]
    InvalidOutput(String),
}

/// A command the guest refused (nothing is persisted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    Rejected(String),
    InvalidCommand(String),
    InvalidState(String),
}

/// What `handle-command` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    pub events: Vec<Vec<u8>>,
    pub state: Option<Vec<u8>>,
    pub reply: Vec<u8>,
    /// Commands to other entities (contract 0.2.0 and later; else empty).
    pub sends: Vec<SendCommand>,
    /// Timer changes (contract 0.2.0 and later; else empty).
    pub timers: Vec<TimerChange>,
}

impl CommandOutcome {
    /// Events, state and reply, with no sends or timers.
    pub fn new(events: Vec<Vec<u8>>, state: Option<Vec<u8>>, reply: Vec<u8>) -> Self {
        Self {
            events,
            state,
            reply,
            sends: Vec::new(),
            timers: Vec::new(),
        }
    }
}

/// A command's outcome once checked against the limits: events to persist,
/// the state after them (the guest's own, or the fold of its events) and
/// the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub events: Vec<Vec<u8>>,
    pub state: Vec<u8>,
    pub reply: Vec<u8>,
    /// Commands to deliver once the events are durable.
    pub sends: Vec<SendCommand>,
    /// Timer changes recorded with the events.
    pub timers: Vec<TimerChange>,
}

/// Who a command is for and when it runs: the guest's `command-context`.
#[derive(Debug, Clone, Copy)]
pub struct CommandCall<'a> {
    pub entity_type: &'a str,
    pub entity_id: &'a str,
    /// The entity's last sequence number before the command.
    pub seq_nr: u64,
    pub now_ms: u64,
    pub command_id: &'a str,
}

/// Per-store host data: limits and the identity used to tag guest logs.
pub(crate) struct GuestState {
    memory_limit: usize,
    table_limit: usize,
    memory_limit_hit: bool,
    log_budget: u32,
    log_lines_per_call: u32,
    entity_type: String,
    entity_id: String,
}

impl ResourceLimiter for GuestState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.memory_limit_hit = true;
            // An error traps the guest at once (rather than letting
            // `memory.grow` return -1, which guests turn into an abort that
            // looks like their own bug).
            return Err(wasmtime::Error::msg("memory limit reached"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_limit)
    }
}

/// A guest log line's severity, whichever contract version it came from.
#[derive(Debug, Clone, Copy)]
enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl GuestState {
    /// The host's `log` import: one line, tagged with the entity of the call
    /// in progress, within the call's budget.
    fn log(&mut self, level: LogLevel, message: &str) {
        if self.log_budget == 0 {
            return;
        }
        self.log_budget -= 1;
        use LogLevel as L;
        let (ty, id) = (self.entity_type.as_str(), self.entity_id.as_str());
        match level {
            L::Trace => {
                tracing::trace!(target: "stead::guest", entity_type = ty, entity_id = id, "{message}")
            }
            L::Debug => {
                tracing::debug!(target: "stead::guest", entity_type = ty, entity_id = id, "{message}")
            }
            L::Info => {
                tracing::info!(target: "stead::guest", entity_type = ty, entity_id = id, "{message}")
            }
            L::Warn => {
                tracing::warn!(target: "stead::guest", entity_type = ty, entity_id = id, "{message}")
            }
            L::Error => {
                tracing::error!(target: "stead::guest", entity_type = ty, entity_id = id, "{message}")
            }
        }
        if self.log_budget == 0 {
            tracing::warn!(target: "stead::guest", entity_type = ty, entity_id = id, "log budget of this call exhausted; further lines dropped");
        }
    }
}

/// What a deployment's instances are made of: imports resolved and export
/// indices looked up once.
pub(crate) struct WasmCode {
    pre: InstancePre<GuestState>,
    handler: HandlerIndices,
    /// Present when the component exports the optional `replay` interface.
    replay: Option<ReplayIndices>,
}

impl WasmCode {
    /// Links `component` (validated as `version`) to the host's imports of
    /// that version and looks its exports up.
    pub(super) fn new(
        engine: &wasmtime::Engine,
        component: &wasmtime::component::Component,
        version: ContractVersion,
    ) -> wasmtime::Result<Self> {
        let mut linker = Linker::<GuestState>::new(engine);
        contract::link(&mut linker, version)?;
        let pre = linker.instantiate_pre(component)?;
        let handler = HandlerIndices::new(&pre, version)?;
        let replay = ReplayIndices::new(&pre, version)?;
        Ok(Self {
            pre,
            handler,
            replay,
        })
    }

    /// Whether instances can fold many events per call.
    pub(super) fn has_replay(&self) -> bool {
        self.replay.is_some()
    }
}

/// A live wasm instance: a store and the bound exports.
pub(crate) struct WasmInstance {
    store: Store<GuestState>,
    bindings: Handler,
    replay: Option<Replay>,
    deadline_ticks: u64,
    /// The limits' source, and with `code` what to rebuild the instance from
    /// after a fault it recovers from itself (see
    /// [`GuestInstance::apply_events`]).
    runtime: Arc<Runtime>,
    code: Arc<WasmCode>,
}

impl WasmInstance {
    pub(super) fn new(runtime: &Arc<Runtime>, code: &Arc<WasmCode>) -> Result<Self, GuestFault> {
        let options = runtime.options();
        let state = GuestState {
            memory_limit: options.memory_limit,
            table_limit: options.table_limit,
            memory_limit_hit: false,
            log_budget: options.log_lines_per_call,
            log_lines_per_call: options.log_lines_per_call,
            entity_type: String::new(),
            entity_id: String::new(),
        };
        let mut store = Store::new(runtime.engine(), state);
        store.limiter(|s| s as &mut dyn ResourceLimiter);
        store.epoch_deadline_trap();
        // Capped (at ~170 years of ticks) so the engine's epoch plus the
        // deadline cannot overflow whatever `call_deadline` says.
        let ticks = options.call_deadline.as_micros() / EPOCH_TICK.as_micros();
        let deadline_ticks = u64::try_from(ticks).unwrap_or(u64::MAX).clamp(1, 1 << 40) + 1;
        store.set_epoch_deadline(deadline_ticks);
        let fault = |store: &Store<GuestState>, e| {
            classify(store, e, options.call_deadline, options.memory_limit)
        };
        let instance = code
            .pre
            .instantiate(&mut store)
            .map_err(|e| fault(&store, e))?;
        let bindings = code
            .handler
            .load(&mut store, &instance)
            .map_err(|e| fault(&store, e))?;
        let replay = match &code.replay {
            Some(indices) => Some(
                indices
                    .load(&mut store, &instance)
                    .map_err(|e| fault(&store, e))?,
            ),
            None => None,
        };
        Ok(Self {
            store,
            bindings,
            replay,
            deadline_ticks,
            runtime: runtime.clone(),
            code: code.clone(),
        })
    }

    /// Prepares the store for one call on behalf of an entity.
    fn begin(&mut self, entity_type: &str, entity_id: &str) {
        let data = self.store.data_mut();
        data.entity_type.clear();
        data.entity_type.push_str(entity_type);
        data.entity_id.clear();
        data.entity_id.push_str(entity_id);
        data.log_budget = data.log_lines_per_call;
        data.memory_limit_hit = false;
        self.store.set_epoch_deadline(self.deadline_ticks);
    }

    fn fault(&self, error: wasmtime::Error) -> GuestFault {
        classify(
            &self.store,
            error,
            self.runtime.options().call_deadline,
            self.store.data().memory_limit,
        )
    }

    fn describe(&mut self) -> Result<EntityInfo, GuestFault> {
        self.begin("", "");
        self.bindings
            .describe(&mut self.store)
            .map_err(|e| self.fault(e))
    }

    fn initial_state(&mut self, entity_type: &str, entity_id: &str) -> Result<Vec<u8>, GuestFault> {
        self.begin(entity_type, entity_id);
        self.bindings
            .initial_state(&mut self.store, entity_id)
            .map_err(|e| self.fault(e))
    }

    /// Runs `handle-command`. The outer error is a fault (discard the
    /// instance); the inner one is the guest's refusal.
    fn handle_command(
        &mut self,
        call: &CommandCall<'_>,
        state: &[u8],
        command: &[u8],
    ) -> Result<Result<CommandOutcome, Rejection>, GuestFault> {
        self.begin(call.entity_type, call.entity_id);
        self.bindings
            .handle_command(&mut self.store, call, state, command)
            .map_err(|e| self.fault(e))
    }

    /// Runs `apply-event`; a guest error is reported as invalid output.
    fn apply_event(
        &mut self,
        entity_type: &str,
        entity_id: &str,
        state: &[u8],
        event: &[u8],
    ) -> Result<Vec<u8>, GuestFault> {
        self.begin(entity_type, entity_id);
        self.bindings
            .apply_event(&mut self.store, state, event)
            .map_err(|e| self.fault(e))?
            .map_err(|m| GuestFault::InvalidOutput(format!("apply-event refused an event: {m}")))
    }

    /// Runs the optional `apply-events`. The outer error is a fault (discard
    /// the instance), the inner one the guest's refusal; `None` when the
    /// component does not export it.
    fn apply_events(
        &mut self,
        entity_type: &str,
        entity_id: &str,
        state: &[u8],
        events: &[Vec<u8>],
    ) -> Option<Result<Result<Vec<u8>, String>, GuestFault>> {
        // Checked before `begin` (which needs `&mut self`), borrowed after it.
        self.replay.as_ref()?;
        self.begin(entity_type, entity_id);
        let replay = self.replay.as_ref()?;
        Some(
            replay
                .apply_events(&mut self.store, state, events)
                .map_err(|e| self.fault(e)),
        )
    }

    /// Runs `view`; a guest error is reported as invalid output.
    fn view(
        &mut self,
        entity_type: &str,
        entity_id: &str,
        state: &[u8],
    ) -> Result<Vec<u8>, GuestFault> {
        self.begin(entity_type, entity_id);
        self.bindings
            .view(&mut self.store, state)
            .map_err(|e| self.fault(e))?
            .map_err(|m| GuestFault::InvalidOutput(format!("view failed: {m}")))
    }
}

fn classify(
    store: &Store<GuestState>,
    error: wasmtime::Error,
    deadline: Duration,
    memory_limit: usize,
) -> GuestFault {
    if store.data().memory_limit_hit {
        return GuestFault::MemoryLimit(memory_limit);
    }
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        if *trap == wasmtime::Trap::Interrupt {
            return GuestFault::Deadline(deadline);
        }
        return GuestFault::Trap(trap.to_string());
    }
    GuestFault::Trap(format!("{error:#}"))
}

/// Entity logic compiled into the host instead of a component: the
/// benchmarks' yardstick for the cost of wasm. It runs in the same command
/// path (workers, journal, dedup) with the same byte-level contract as the
/// `handler` interface, but without isolation, deadline or memory limit.
pub trait NativeEntity: Send + Sync + 'static {
    fn describe(&self) -> EntityInfo;
    fn initial_state(&self, entity_id: &str) -> Vec<u8>;
    /// `(entity type, entity id, seq-nr, now-ms, command id)`, state, command.
    fn handle_command(
        &self,
        ctx: (&str, &str, u64, u64, &str),
        state: &[u8],
        command: &[u8],
    ) -> Result<CommandOutcome, Rejection>;
    fn apply_event(&self, state: &[u8], event: &[u8]) -> Result<Vec<u8>, String>;
    /// The optional `apply-events`: by default, `apply_event` folded.
    fn apply_events(&self, state: &[u8], events: &[Vec<u8>]) -> Result<Vec<u8>, String> {
        events.iter().try_fold(state.to_vec(), |state, event| {
            self.apply_event(&state, event)
        })
    }
    fn view(&self, state: &[u8]) -> Result<Vec<u8>, String>;
}

enum Backend {
    Wasm(Box<WasmInstance>),
    Native(Arc<dyn NativeEntity>),
}

/// An instance of a deployment: a wasm instance, or native logic.
pub struct GuestInstance {
    backend: Backend,
    /// The deployment this instance belongs to (its component hash).
    pub deployment_hash: String,
}

impl GuestInstance {
    pub(super) fn wasm(instance: WasmInstance, deployment_hash: String) -> Self {
        Self {
            backend: Backend::Wasm(Box::new(instance)),
            deployment_hash,
        }
    }

    pub(super) fn native(entity: Arc<dyn NativeEntity>, deployment_hash: String) -> Self {
        Self {
            backend: Backend::Native(entity),
            deployment_hash,
        }
    }

    pub fn describe(&mut self) -> Result<EntityInfo, GuestFault> {
        match &mut self.backend {
            Backend::Wasm(w) => w.describe(),
            Backend::Native(n) => Ok(n.describe()),
        }
    }

    pub fn initial_state(
        &mut self,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Vec<u8>, GuestFault> {
        match &mut self.backend {
            Backend::Wasm(w) => w.initial_state(entity_type, entity_id),
            Backend::Native(n) => Ok(n.initial_state(entity_id)),
        }
    }

    /// Runs `handle-command`. The outer error is a fault (discard the
    /// instance); the inner one is the guest's refusal.
    pub fn handle_command(
        &mut self,
        call: CommandCall<'_>,
        state: &[u8],
        command: &[u8],
    ) -> Result<Result<CommandOutcome, Rejection>, GuestFault> {
        match &mut self.backend {
            Backend::Wasm(w) => w.handle_command(&call, state, command),
            Backend::Native(n) => Ok(n.handle_command(
                (
                    call.entity_type,
                    call.entity_id,
                    call.seq_nr,
                    call.now_ms,
                    call.command_id,
                ),
                state,
                command,
            )),
        }
    }

    /// Runs `handle-command` and checks what it returned against `limits`:
    /// event count and sizes, JSON events and reply, the state's size. When
    /// the guest returned no state, folds its events (bounded by the same
    /// limits). Output past a limit is [`GuestFault::InvalidOutput`]; the
    /// inner error is the guest's refusal.
    pub fn decide(
        &mut self,
        call: CommandCall<'_>,
        state: &[u8],
        command: &[u8],
        limits: &Limits,
    ) -> Result<Result<Decision, Rejection>, GuestFault> {
        let outcome = match self.handle_command(call, state, command)? {
            Ok(outcome) => outcome,
            Err(rejection) => return Ok(Err(rejection)),
        };
        check_effects(&outcome, limits)?;
        check_messages(&outcome, call.now_ms, limits)?;
        let state = match outcome.state {
            Some(state) => state,
            None => {
                let state =
                    self.apply_events(call.entity_type, call.entity_id, state, &outcome.events)?;
                check_state(&state, limits)?;
                state
            }
        };
        Ok(Ok(Decision {
            events: outcome.events,
            state,
            reply: outcome.reply,
            sends: outcome.sends,
            timers: outcome.timers,
        }))
    }

    /// Runs `view` and checks the view's size against `limits`.
    pub fn checked_view(
        &mut self,
        entity_type: &str,
        entity_id: &str,
        state: &[u8],
        limits: &Limits,
    ) -> Result<Vec<u8>, GuestFault> {
        let view = self.view(entity_type, entity_id, state)?;
        if view.len() > limits.max_reply_bytes {
            return Err(GuestFault::InvalidOutput(format!(
                "view of {} bytes exceeds the limit of {}",
                view.len(),
                limits.max_reply_bytes
            )));
        }
        Ok(view)
    }

    /// Runs `apply-event`; a guest error is reported as invalid output.
    pub fn apply_event(
        &mut self,
        entity_type: &str,
        entity_id: &str,
        state: &[u8],
        event: &[u8],
    ) -> Result<Vec<u8>, GuestFault> {
        match &mut self.backend {
            Backend::Wasm(w) => w.apply_event(entity_type, entity_id, state, event),
            Backend::Native(n) => n.apply_event(state, event).map_err(|m| {
                GuestFault::InvalidOutput(format!("apply-event refused an event: {m}"))
            }),
        }
    }

    /// Folds `events` into `state`: in one `apply-events` call when the
    /// component exports it, else one `apply-event` per event. A batch that
    /// fails in any way (refusal, trap, deadline, memory) is replayed event
    /// by event on a fresh instance, so the outcome of an error is exactly
    /// that of the per-event path: it names the event, and each event gets
    /// its own deadline. Callers bound `events` (count and bytes).
    pub fn apply_events(
        &mut self,
        entity_type: &str,
        entity_id: &str,
        state: &[u8],
        events: &[Vec<u8>],
    ) -> Result<Vec<u8>, GuestFault> {
        match &mut self.backend {
            Backend::Wasm(w) if events.len() > 1 => {
                match w.apply_events(entity_type, entity_id, state, events) {
                    None => {}
                    Some(Ok(Ok(state))) => return Ok(state),
                    Some(Ok(Err(refusal))) => tracing::warn!(
                        entity_type,
                        entity_id,
                        events = events.len(),
                        "apply-events refused a batch ({refusal}); replaying it event by event"
                    ),
                    Some(Err(fault)) => {
                        tracing::warn!(
                            entity_type,
                            entity_id,
                            events = events.len(),
                            "apply-events failed ({fault}); replaying the batch event by event"
                        );
                        **w = WasmInstance::new(&w.runtime, &w.code)?;
                    }
                }
            }
            Backend::Wasm(_) => {}
            Backend::Native(n) => {
                return n.apply_events(state, events).map_err(|m| {
                    GuestFault::InvalidOutput(format!("apply-events refused an event: {m}"))
                });
            }
        }
        let mut state = state.to_vec();
        for event in events {
            state = self.apply_event(entity_type, entity_id, &state, event)?;
        }
        Ok(state)
    }

    /// Runs `view`; a guest error is reported as invalid output.
    pub fn view(
        &mut self,
        entity_type: &str,
        entity_id: &str,
        state: &[u8],
    ) -> Result<Vec<u8>, GuestFault> {
        match &mut self.backend {
            Backend::Wasm(w) => w.view(entity_type, entity_id, state),
            Backend::Native(n) => n
                .view(state)
                .map_err(|m| GuestFault::InvalidOutput(format!("view failed: {m}"))),
        }
    }
}

/// Checks a guest's effects against the limits: what the host would persist
/// or send must be bounded and JSON.
fn check_effects(outcome: &CommandOutcome, limits: &Limits) -> Result<(), GuestFault> {
    let events = &outcome.events;
    if events.len() > limits.max_events_per_command {
        return Err(GuestFault::InvalidOutput(format!(
            "{} events exceed the limit of {} per command",
            events.len(),
            limits.max_events_per_command
        )));
    }
    for (i, event) in events.iter().enumerate() {
        if event.len() > limits.max_event_bytes {
            return Err(GuestFault::InvalidOutput(format!(
                "event {i} of {} bytes exceeds the limit of {}",
                event.len(),
                limits.max_event_bytes
            )));
        }
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(event) {
            return Err(GuestFault::InvalidOutput(format!(
                "event {i} is not JSON: {e}"
            )));
        }
    }
    let reply = &outcome.reply;
    if reply.len() > limits.max_reply_bytes {
        return Err(GuestFault::InvalidOutput(format!(
            "reply of {} bytes exceeds the limit of {}",
            reply.len(),
            limits.max_reply_bytes
        )));
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(reply) {
        return Err(GuestFault::InvalidOutput(format!("reply is not JSON: {e}")));
    }
    match &outcome.state {
        Some(state) => check_state(state, limits),
        None => Ok(()),
    }
}

/// Checks sends and timer changes against `limits`: they come with at
/// least one event, within the counts, each target a valid type and id,
/// each command JSON within the command size, each timer named and due
/// within the furthest delay from `now_ms`.
fn check_messages(
    outcome: &CommandOutcome,
    now_ms: u64,
    limits: &Limits,
) -> Result<(), GuestFault> {
    let (sends, timers) = (&outcome.sends, &outcome.timers);
    if sends.is_empty() && timers.is_empty() {
        return Ok(());
    }
    let invalid = |message: String| Err(GuestFault::InvalidOutput(message));
    if outcome.events.is_empty() {
        return invalid(format!(
            "{} sends and {} timer changes without an event: sends and timers are recorded \
             with the events that cause them, so persist an event with them",
            sends.len(),
            timers.len()
        ));
    }
    if sends.len() > limits.max_sends_per_command {
        return invalid(format!(
            "{} sends exceed the limit of {} per command",
            sends.len(),
            limits.max_sends_per_command
        ));
    }
    if timers.len() > limits.max_timers_per_command {
        return invalid(format!(
            "{} timer changes exceed the limit of {} per command",
            timers.len(),
            limits.max_timers_per_command
        ));
    }
    let command = |what: &str, bytes: &[u8]| -> Result<(), GuestFault> {
        if bytes.len() > limits.max_command_bytes {
            return invalid(format!(
                "{what} of {} bytes exceeds the command limit of {}",
                bytes.len(),
                limits.max_command_bytes
            ));
        }
        match serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            Ok(_) => Ok(()),
            Err(e) => invalid(format!("{what} is not JSON: {e}")),
        }
    };
    for (i, send) in sends.iter().enumerate() {
        if let Some(problem) = stead_types::ids::entity_type_problem(&send.entity_type) {
            return invalid(format!(
                "send {i} targets entity type {:?}, which {problem}",
                send.entity_type
            ));
        }
        if send.entity_id.is_empty() || send.entity_id.len() > limits.max_entity_id_bytes {
            return invalid(format!(
                "send {i} targets an entity id of {} bytes (1 to {} allowed)",
                send.entity_id.len(),
                limits.max_entity_id_bytes
            ));
        }
        command(&format!("send {i}'s command"), &send.command)?;
        if let Some(on_accepted) = &send.on_accepted {
            command(&format!("send {i}'s on-accepted command"), on_accepted)?;
        }
        if let Some(on_refused) = &send.on_refused {
            command(&format!("send {i}'s on-refused command"), on_refused)?;
        }
    }
    let latest = now_ms
        .saturating_add(u64::try_from(limits.max_timer_delay.as_millis()).unwrap_or(u64::MAX));
    for (i, change) in timers.iter().enumerate() {
        let name = change.name();
        if name.is_empty() || name.len() > stead_types::config::MAX_TIMER_NAME_BYTES {
            return invalid(format!(
                "timer change {i} names a timer of {} bytes (1 to {} allowed)",
                name.len(),
                stead_types::config::MAX_TIMER_NAME_BYTES
            ));
        }
        if let TimerChange::Set(timer) = change {
            if timer.fire_at_ms > latest {
                return invalid(format!(
                    "timer {name:?} fires at {} ms, {} s from now, past the limit of {} s ahead",
                    timer.fire_at_ms,
                    (timer.fire_at_ms - now_ms) / 1000,
                    limits.max_timer_delay.as_secs()
                ));
            }
            command(&format!("timer {name:?}'s command"), &timer.command)?;
        }
    }
    Ok(())
}

fn check_state(state: &[u8], limits: &Limits) -> Result<(), GuestFault> {
    if state.len() > limits.max_state_bytes {
        return Err(GuestFault::InvalidOutput(format!(
            "state of {} bytes exceeds the limit of {}",
            state.len(),
            limits.max_state_bytes
        )));
    }
    Ok(())
}
