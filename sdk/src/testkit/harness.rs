//! The wasm harness: a built component inside an embedded host node with a
//! temporary journal, behind the test kit's given/when/then API.
//!
//! Invariant: commands take the host's full path (shard worker, pooled guest
//! instance, durable journal append); what the kit reports (events, reply,
//! state) is read back from the node and its journal, not from the guest's
//! return values.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use stead_node::{Node, NodeConfig, NodeError, OutboxEvent, SettableClock};

use crate::__private::abi::{RawEffects, RawError};
use crate::entity::{Context, Send, TimerChange};

pub(super) struct WasmHost {
    node: Node,
    /// The wall time commands see: each `when` sets it from its context.
    clock: Arc<SettableClock>,
    entity_type: String,
    _dir: tempfile::TempDir,
}

impl WasmHost {
    pub(super) fn start(component: &Path, entity_type: &str) -> Self {
        let bytes = std::fs::read(component).unwrap_or_else(|e| {
            panic!(
                "the wasm harness cannot read {}: {e} (build the guest first: `cargo xtask build-guests`)",
                component.display()
            )
        });
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary journal: {e}"));
        let mut config = NodeConfig::new(dir.path());
        config.shard_count = 4;
        config.shards.workers = 1;
        // One compile per component across every kit and test run.
        config.compile_cache = Some(std::env::temp_dir().join("stead-harness-compile-cache"));
        let clock = Arc::new(SettableClock::new());
        // What a command sends or sets is read back from the outbox, never
        // delivered: the kit delivers it when a test says so.
        let node = Node::builder(config)
            .clock(clock.clone())
            .hold_deliveries()
            .open()
            .unwrap_or_else(|e| panic!("the embedded node does not open: {e}"));
        let info = node
            .deploy(&bytes)
            .unwrap_or_else(|e| panic!("{} does not deploy: {e}", component.display()));
        assert_eq!(
            info.name,
            entity_type,
            "{} implements `{}`, not `{entity_type}`",
            component.display(),
            info.name
        );
        Self {
            node,
            clock,
            entity_type: entity_type.to_owned(),
            _dir: dir,
        }
    }

    /// Appends `events` to the journal; returns the new last seq-nr.
    pub(super) fn seed(&mut self, entity_id: &str, events: Vec<Vec<u8>>) -> u64 {
        self.node
            .seed_events_blocking(&self.entity_type, entity_id, events)
            .unwrap_or_else(|e| panic!("given events were not stored: {e}"))
    }

    pub(super) fn send(&mut self, ctx: &Context, command: Vec<u8>) -> Result<RawEffects, RawError> {
        self.clock.set_wall_ms(Some(ctx.now_ms()));
        let id = ctx.entity_id();
        let before = ctx.seq_nr();
        let result = self.node.send_blocking(
            &self.entity_type,
            id,
            command,
            Some(ctx.command_id().to_owned()),
        );
        match result {
            Ok(reply) => {
                let events = self
                    .node
                    .events(&self.entity_type, id, before + 1, usize::MAX)
                    .unwrap_or_else(|e| panic!("events cannot be read back: {e}"));
                assert_eq!(
                    events.last().map_or(before, |e| e.seq_nr),
                    reply.seq_nr,
                    "the journal and the reply disagree on the sequence number"
                );
                let (sends, timers) = self.outbox_of(id);
                Ok(RawEffects {
                    events: events.into_iter().map(|e| e.record.payload).collect(),
                    state: self.state(id),
                    reply: reply.reply,
                    sends,
                    timers,
                })
            }
            Err(NodeError::Rejected(m)) => Err(RawError::Rejected(m)),
            Err(NodeError::InvalidCommand(m)) => Err(RawError::InvalidCommand(m)),
            Err(other) => panic!("the host failed the command: {other}"),
        }
    }

    /// The sends and timer changes the node's journal took with the
    /// entity's last append (the outbox events the node held back).
    fn outbox_of(&self, entity_id: &str) -> (Vec<Send>, Vec<TimerChange>) {
        let mut sends = Vec::new();
        let mut timers = Vec::new();
        for event in self.node.held_outbox_events() {
            let OutboxEvent::Committed {
                key,
                sends: s,
                timers: t,
                ..
            } = event
            else {
                continue;
            };
            if key.entity_type != self.entity_type || key.entity_id != entity_id {
                continue;
            }
            let json = |bytes: &[u8], what: &str| -> Value {
                serde_json::from_slice(bytes)
                    .unwrap_or_else(|e| panic!("the outbox holds a {what} that is not JSON: {e}"))
            };
            sends.extend(s.into_iter().map(|o| Send {
                entity_type: o.send.entity_type,
                entity_id: o.send.entity_id,
                command: json(&o.send.command, "sent command"),
                on_accepted: o.send.on_accepted.map(|c| json(&c, "on-accepted command")),
                on_refused: o.send.on_refused.map(|c| json(&c, "on-refused command")),
            }));
            timers.extend(t.into_iter().map(|w| match w.change {
                stead_node::effects::TimerChange::Set(timer) => TimerChange::Set {
                    name: timer.name,
                    fire_at_ms: timer.fire_at_ms,
                    command: json(&timer.command, "timer command"),
                },
                stead_node::effects::TimerChange::Cancel(name) => TimerChange::Cancel { name },
            }));
        }
        (sends, timers)
    }

    pub(super) fn state(&self, entity_id: &str) -> Vec<u8> {
        self.node
            .entity_state_blocking(&self.entity_type, entity_id)
            .unwrap_or_else(|e| panic!("state cannot be read: {e}"))
    }

    pub(super) fn view(&self, entity_id: &str) -> Vec<u8> {
        self.node
            .view_blocking(&self.entity_type, entity_id)
            .unwrap_or_else(|e| panic!("view failed: {e}"))
    }
}
