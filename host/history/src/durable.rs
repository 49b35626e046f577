//! The durability checker: holds the journal read after a run against the
//! account model and against what clients were told.
//!
//! What it proves, per entity:
//! - the journal's seq-nrs are exactly `1..=n`;
//! - no command id has two events (assumption: an account command persists
//!   exactly one event, so two events of one id mean it was applied twice;
//!   events with an empty id are not matched);
//! - replayed in order, every event is one the model persists in that state
//!   (a `withdrawn` beyond the balance, a second `opened`... are invalid);
//! - every `Ok` operation (duplicate or not) has its event at the seq-nr it
//!   was told, with its command id when it sent one, for its command, and
//!   the replayed balance after it is the one it was told;
//! - no `Failed` or `Rejected` operation persisted anything: an event with
//!   its command id is a violation, unless an `Ok` or `Unknown` operation
//!   of the same entity and id (a retry, or the original) explains it.
//!
//! `Unknown` operations may or may not be in the journal. Linearizability
//! is [`crate::check_linearizable`]'s question; the two checks together say
//! that what clients saw was both consistent and kept.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::{EntityRef, History, Outcome};
use crate::model::{ACCOUNT_TYPE, Account, Event};
use crate::{Violation, ViolationKind, describe};

/// One event as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct JournalEvent {
    pub seq_nr: u64,
    /// The id of the command that persisted it.
    pub command_id: String,
    /// The guest's JSON encoding of the event.
    pub event_json: String,
}

/// Every entity's events, as read from the journal after a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalDump {
    pub entities: BTreeMap<EntityRef, Vec<JournalEvent>>,
}

impl JournalDump {
    pub fn new() -> Self {
        JournalDump::default()
    }

    /// Adds one event of `entity` (in any order: the check sorts by seq-nr).
    pub fn push(&mut self, entity: EntityRef, event: JournalEvent) {
        self.entities.entry(entity).or_default().push(event);
    }

    /// `entity`'s events; empty if it has none.
    pub fn events(&self, entity: &EntityRef) -> &[JournalEvent] {
        self.entities.get(entity).map_or(&[], Vec::as_slice)
    }
}

/// What a successful durability check covered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurabilityReport {
    /// Entities in the journal.
    pub entities: usize,
    /// Events replayed.
    pub events: usize,
    /// `Ok` operations whose event was found.
    pub acknowledged: usize,
}

/// An entity's journal, replayed.
struct Replayed<'a> {
    /// Index `seq_nr - 1`: the event, its command id, the balance after it.
    events: Vec<(Event, &'a str, u64)>,
    ids: HashMap<&'a str, u64>,
}

/// Checks the journal after a run against the history of the run.
pub fn check_durable(
    history: &History,
    journal: &JournalDump,
) -> Result<DurabilityReport, Violation> {
    let mut replays = BTreeMap::new();
    let mut events = 0;
    for (entity, entity_events) in &journal.entities {
        replays.insert(entity, replay(entity, entity_events)?);
        events += entity_events.len();
    }
    // Ids some operation may have persisted: those of failed or refused
    // operations are only suspect when no such operation explains them.
    let may_apply: HashSet<(&EntityRef, &str)> = history
        .operations
        .iter()
        .filter(|o| matches!(o.outcome, Outcome::Ok { .. } | Outcome::Unknown { .. }))
        .filter_map(|o| Some((&o.entity, o.command_id.as_deref()?)))
        .collect();
    let mut acknowledged = 0;
    for (i, operation) in history.operations.iter().enumerate() {
        if operation.op.is_read() {
            continue;
        }
        let entity = &operation.entity;
        let violation = |kind, why: String| {
            Violation::new(
                entity,
                kind,
                vec![i],
                format!("{}: {why}", describe(history, i)),
            )
        };
        if entity.entity_type != ACCOUNT_TYPE {
            return Err(violation(
                ViolationKind::Malformed,
                "the checkers model only `account` entities".to_owned(),
            ));
        }
        let replayed = replays.get(entity);
        match &operation.outcome {
            Outcome::Ok {
                balance, seq_nr, ..
            } => {
                let Some(replayed) = replayed else {
                    return Err(violation(
                        ViolationKind::MissingEvent,
                        "the journal has no events of this entity".to_owned(),
                    ));
                };
                let Some((event, id, after)) = seq_nr
                    .checked_sub(1)
                    .and_then(|k| replayed.events.get(usize::try_from(k).ok()?))
                else {
                    return Err(violation(
                        ViolationKind::MissingEvent,
                        format!(
                            "acknowledged at seq-nr {seq_nr}, but the journal holds {} events",
                            replayed.events.len()
                        ),
                    ));
                };
                if let Some(own) = operation.command_id.as_deref()
                    && own != *id
                {
                    let why = match replayed.ids.get(own) {
                        Some(at) => {
                            format!("its event is at seq-nr {at}, not at the acknowledged {seq_nr}")
                        }
                        None => format!(
                            "no event has its command id; seq-nr {seq_nr} holds {event} of command id {id:?}"
                        ),
                    };
                    let kind = if replayed.ids.contains_key(own) {
                        ViolationKind::EventMismatch
                    } else {
                        ViolationKind::MissingEvent
                    };
                    return Err(violation(kind, why));
                }
                if event.command() != operation.op {
                    return Err(violation(
                        ViolationKind::EventMismatch,
                        format!(
                            "seq-nr {seq_nr} holds {event}, which {} does not persist",
                            operation.op
                        ),
                    ));
                }
                if after != balance {
                    return Err(violation(
                        ViolationKind::EventMismatch,
                        format!(
                            "replaying the journal to seq-nr {seq_nr} gives balance {after}, not the acknowledged {balance}"
                        ),
                    ));
                }
                acknowledged += 1;
            }
            Outcome::Failed { .. } | Outcome::Rejected { .. } => {
                if let (Some(replayed), Some(own)) = (replayed, operation.command_id.as_deref())
                    && !may_apply.contains(&(entity, own))
                    && let Some(at) = replayed.ids.get(own)
                {
                    return Err(violation(
                        ViolationKind::PersistedWithoutEffect,
                        format!(
                            "it was not applied, but seq-nr {at} holds an event of its command id"
                        ),
                    ));
                }
            }
            Outcome::Unknown { .. } | Outcome::Viewed { .. } => {}
        }
    }
    Ok(DurabilityReport {
        entities: journal.entities.len(),
        events,
        acknowledged,
    })
}

/// Checks an entity's journal on its own and replays it.
fn replay<'a>(entity: &EntityRef, events: &'a [JournalEvent]) -> Result<Replayed<'a>, Violation> {
    let violation = |kind, why: String| Violation::new(entity, kind, Vec::new(), why);
    if entity.entity_type != ACCOUNT_TYPE {
        return Err(violation(
            ViolationKind::Malformed,
            "the journal holds an entity that is not an account; the checkers model only accounts"
                .to_owned(),
        ));
    }
    let mut sorted: Vec<&JournalEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.seq_nr);
    let mut previous = 0;
    for event in &sorted {
        if event.seq_nr != previous + 1 {
            let why = if event.seq_nr == previous {
                format!("seq-nr {previous} appears twice")
            } else {
                format!(
                    "seq-nr {} follows {previous}: seq-nrs {}..={} are missing",
                    event.seq_nr,
                    previous + 1,
                    event.seq_nr - 1
                )
            };
            return Err(violation(ViolationKind::SeqNrGap, why));
        }
        previous = event.seq_nr;
    }
    let mut replayed = Replayed {
        events: Vec::with_capacity(sorted.len()),
        ids: HashMap::with_capacity(sorted.len()),
    };
    let mut account = Account::default();
    for journal_event in sorted {
        let seq_nr = journal_event.seq_nr;
        let id = journal_event.command_id.as_str();
        if !id.is_empty()
            && let Some(first) = replayed.ids.insert(id, seq_nr)
        {
            return Err(violation(
                ViolationKind::CommandIdRepeated,
                format!(
                    "command id {id:?} has events at seq-nrs {first} and {seq_nr}: an account command persists one event"
                ),
            ));
        }
        let event = Event::from_json(&journal_event.event_json).map_err(|e| {
            violation(
                ViolationKind::InvalidEvent,
                format!(
                    "seq-nr {seq_nr} holds {:?}, which is no account event: {e}",
                    journal_event.event_json
                ),
            )
        })?;
        let command = event.command();
        match account.handle(&command) {
            Some(Ok(persisted)) if persisted == event => {}
            refused => {
                let why = match refused {
                    Some(Err(rejection)) => rejection.to_string(),
                    _ => "it persists another event".to_owned(),
                };
                return Err(violation(
                    ViolationKind::InvalidEvent,
                    format!(
                        "seq-nr {seq_nr} holds {event}, but the account ({}, balance {}) refuses {command}: {why}",
                        account.status, account.balance
                    ),
                ));
            }
        }
        account.apply(&event);
        replayed.events.push((event, id, account.balance));
    }
    Ok(replayed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use proptest::prelude::*;

    fn event(seq_nr: u64, command_id: &str, event_json: &str) -> JournalEvent {
        JournalEvent {
            seq_nr,
            command_id: command_id.to_owned(),
            event_json: event_json.to_owned(),
        }
    }

    fn journal(events: Vec<JournalEvent>) -> JournalDump {
        let mut dump = JournalDump::new();
        for e in events {
            dump.push(EntityRef::account("a"), e);
        }
        dump
    }

    /// Account `a`: opened by ann, then 5 deposited, each acknowledged.
    fn run() -> (Builder, Vec<JournalEvent>) {
        let mut b = Builder::new();
        b.with_id("c1", 1, open("ann"), 0, 10, ok(0, 1));
        b.with_id("c2", 1, deposit(5), 20, 30, ok(5, 2));
        let events = vec![
            event(1, "c1", r#"{"opened":{"owner":"ann"}}"#),
            event(2, "c2", r#"{"deposited":{"amount":5}}"#),
        ];
        (b, events)
    }

    fn violation(b: &Builder, events: Vec<JournalEvent>) -> Violation {
        check_durable(&b.history, &journal(events)).expect_err("a violation")
    }

    #[test]
    fn a_journal_that_matches_the_history_is_durable() {
        let (mut b, events) = run();
        b.with_id("c2", 2, deposit(5), 40, 50, dup(5, 2));
        b.at(2, view(), 60, 70, viewed("ann", 5, "open"));
        let report = check_durable(&b.history, &journal(events)).expect("durable");
        assert_eq!(
            report,
            DurabilityReport {
                entities: 1,
                events: 2,
                acknowledged: 3
            }
        );
    }

    #[test]
    fn a_gap_in_seq_nrs_is_caught() {
        let (b, mut events) = run();
        events[1].seq_nr = 3;
        let v = violation(&b, events);
        assert_eq!(v.kind, ViolationKind::SeqNrGap);
        assert!(v.explanation.contains("2..=2 are missing"), "{v}");
    }

    #[test]
    fn a_repeated_seq_nr_is_caught() {
        let (b, mut events) = run();
        events.push(event(2, "c3", r#"{"deposited":{"amount":1}}"#));
        let v = violation(&b, events);
        assert_eq!(v.kind, ViolationKind::SeqNrGap);
        assert!(v.explanation.contains("appears twice"), "{v}");
    }

    #[test]
    fn events_out_of_order_in_the_dump_are_sorted() {
        let (b, mut events) = run();
        events.reverse();
        check_durable(&b.history, &journal(events)).expect("durable");
    }

    #[test]
    fn an_acknowledged_event_missing_from_the_journal_is_caught() {
        let (b, mut events) = run();
        events.pop();
        let v = violation(&b, events);
        assert_eq!(v.kind, ViolationKind::MissingEvent);
        assert_eq!(v.operations, vec![1]);
        // An entity with no events at all.
        let v = check_durable(&b.history, &JournalDump::new()).expect_err("a violation");
        assert_eq!(v.kind, ViolationKind::MissingEvent);
        assert_eq!(v.operations, vec![0]);
    }

    #[test]
    fn an_acknowledged_command_id_missing_from_the_journal_is_caught() {
        let (b, mut events) = run();
        events[1].command_id = "someone-else".to_owned();
        let v = violation(&b, events);
        assert_eq!(v.kind, ViolationKind::MissingEvent);
        assert!(v.explanation.contains("\"someone-else\""), "{v}");
    }

    #[test]
    fn an_event_at_another_seq_nr_than_acknowledged_is_caught() {
        let (mut b, mut events) = run();
        b.with_id("c3", 2, deposit(1), 40, 50, ok(6, 3));
        // c3 was persisted before c2, so c2's event is not where it was told.
        events[1] = event(2, "c3", r#"{"deposited":{"amount":1}}"#);
        events.push(event(3, "c2", r#"{"deposited":{"amount":5}}"#));
        let v = violation(&b, events);
        assert_eq!(v.kind, ViolationKind::EventMismatch);
        assert_eq!(v.operations, vec![1]);
    }

    #[test]
    fn an_acknowledged_balance_the_journal_contradicts_is_caught() {
        let (b, mut events) = run();
        events[1].event_json = r#"{"deposited":{"amount":6}}"#.to_owned();
        let v = violation(&b, events);
        assert_eq!(v.kind, ViolationKind::EventMismatch);
        let (mut b, events) = run();
        b.history.operations[1].outcome = ok(4, 2);
        assert_eq!(violation(&b, events).kind, ViolationKind::EventMismatch);
    }

    #[test]
    fn a_failed_command_that_persisted_is_caught() {
        let (mut b, mut events) = run();
        b.with_id("c3", 2, deposit(1), 40, 50, failed());
        events.push(event(3, "c3", r#"{"deposited":{"amount":1}}"#));
        let v = violation(&b, events);
        assert_eq!(v.kind, ViolationKind::PersistedWithoutEffect);
        assert_eq!(v.operations, vec![2]);
    }

    #[test]
    fn a_rejected_command_that_persisted_is_caught() {
        let (mut b, mut events) = run();
        b.with_id("c3", 2, withdraw(9), 40, 50, rejected("insufficient funds"));
        events.push(event(3, "c3", r#"{"withdrawn":{"amount":9}}"#));
        // The journal itself is invalid too; the replay finds that first.
        assert_eq!(violation(&b, events).kind, ViolationKind::InvalidEvent);
        let (mut b, mut events) = run();
        b.with_id("c3", 2, withdraw(1), 40, 50, rejected("insufficient funds"));
        events.push(event(3, "c3", r#"{"withdrawn":{"amount":1}}"#));
        assert_eq!(
            violation(&b, events).kind,
            ViolationKind::PersistedWithoutEffect
        );
    }

    #[test]
    fn a_failed_retry_of_an_applied_command_id_is_not_a_violation() {
        let (mut b, events) = run();
        b.with_id("c2", 2, deposit(5), 40, 50, failed());
        check_durable(&b.history, &journal(events)).expect("durable");
    }

    #[test]
    fn an_unknown_outcome_may_or_may_not_be_in_the_journal() {
        for persisted in [false, true] {
            let (mut b, mut events) = run();
            b.with_id("c3", 2, deposit(1), 40, 50, unknown());
            if persisted {
                events.push(event(3, "c3", r#"{"deposited":{"amount":1}}"#));
            }
            check_durable(&b.history, &journal(events)).expect("durable");
        }
    }

    #[test]
    fn a_command_id_persisted_twice_is_caught() {
        let (b, mut events) = run();
        events.push(event(3, "c2", r#"{"deposited":{"amount":5}}"#));
        let v = violation(&b, events);
        assert_eq!(v.kind, ViolationKind::CommandIdRepeated);
        assert!(v.to_string().contains("seq-nrs 2 and 3"), "{v}");
    }

    #[test]
    fn an_event_the_model_refuses_is_caught() {
        for bad in [
            r#"{"withdrawn":{"amount":6}}"#,
            r#"{"opened":{"owner":"bob"}}"#,
            r#"{"closed":{}}"#,
            r#"{"deposited":{"amount":0}}"#,
        ] {
            let (b, mut events) = run();
            events.push(event(3, "c3", bad));
            let v = violation(&b, events);
            assert_eq!(v.kind, ViolationKind::InvalidEvent, "{bad}");
            assert!(v.explanation.contains("seq-nr 3"), "{v}");
        }
    }

    #[test]
    fn an_undecodable_event_is_caught() {
        let (b, mut events) = run();
        events.push(event(3, "c3", r#"{"teleported":{}}"#));
        assert_eq!(violation(&b, events).kind, ViolationKind::InvalidEvent);
    }

    proptest! {
        #[test]
        fn the_journal_of_a_model_run_is_durable(plan in concurrent_plan(1..=60, 3, 8)) {
            let (history, journal) = plan.run();
            let report = check_durable(&history, &journal);
            prop_assert!(report.is_ok(), "{:?}", report.err().map(|v| v.to_string()));
        }

        #[test]
        fn a_lost_event_is_caught_unless_nobody_was_told(
            plan in concurrent_plan(1..=60, 3, 8),
            which in any::<prop::sample::Index>(),
        ) {
            let (history, mut journal) = plan.run();
            let entities: Vec<EntityRef> = journal.entities.keys().cloned().collect();
            prop_assume!(!entities.is_empty());
            let entity = &entities[which.index(entities.len())];
            let events = journal.entities.get_mut(entity).expect("listed");
            let k = which.index(events.len());
            let lost = events.remove(k);
            let was_last = k == events.len();
            let told = history.operations.iter().any(|o| {
                o.command_id.as_deref() == Some(lost.command_id.as_str())
                    && matches!(o.outcome, Outcome::Ok { .. })
            });
            let checked = check_durable(&history, &journal);
            prop_assert_eq!(checked.is_err(), !was_last || told, "{:?}", checked);
        }
    }
}
