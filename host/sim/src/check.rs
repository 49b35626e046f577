//! The checks after a run: the history against the journal as the
//! database holds it (`stead_history::check_durable`), each entity's
//! history for linearizability (`stead_history::check_linearizable`), and
//! liveness: once everything healed, every operation got an answer (an
//! operation recorded `Unknown` with a completion time got one: a refusal
//! after an unanswered attempt, which may still take effect).

use std::collections::BTreeMap;

use stead_history::{EntityRef, History, JournalDump, JournalEvent, Outcome};
use stead_journal::{EntityKey, StoredEvent};

/// Every violation found, as sentences.
pub fn check(history: &History, journal: &BTreeMap<EntityKey, Vec<StoredEvent>>) -> Vec<String> {
    let mut violations = Vec::new();
    for op in &history.operations {
        if let (Outcome::Unknown { reason }, None) = (&op.outcome, op.completed_at) {
            violations.push(format!(
                "liveness: client {}'s {:?} on {} (key {}) never completed after the faults healed (last: {reason})",
                op.client,
                op.op,
                op.entity.id,
                op.command_id.as_deref().unwrap_or("-")
            ));
        }
    }
    let dump = JournalDump {
        entities: journal
            .iter()
            .map(|(key, events)| {
                (
                    EntityRef {
                        entity_type: key.entity_type.clone(),
                        id: key.entity_id.clone(),
                    },
                    events
                        .iter()
                        .map(|e| JournalEvent {
                            seq_nr: e.seq_nr,
                            command_id: e.record.command_id.clone(),
                            event_json: String::from_utf8_lossy(&e.record.payload).into_owned(),
                        })
                        .collect(),
                )
            })
            .collect(),
    };
    if let Err(v) = stead_history::check_durable(history, &dump) {
        violations.push(format!("durability: {v}"));
    }
    if let Err(v) = stead_history::check_linearizable(history) {
        violations.push(format!("linearizability: {v}"));
    }
    violations
}
