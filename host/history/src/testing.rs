//! Test helpers: terse builders of operations, and plans that run random
//! operations through the model to make histories (and their journals)
//! that are correct by construction.

use proptest::collection::SizeRange;
use proptest::prelude::*;

use crate::durable::{JournalDump, JournalEvent};
use crate::history::{EntityRef, History, Op, Operation, Outcome};
use crate::model::Account;

pub(crate) fn open(owner: &str) -> Op {
    Op::Open {
        owner: owner.to_owned(),
    }
}

pub(crate) fn deposit(amount: u64) -> Op {
    Op::Deposit { amount }
}

pub(crate) fn withdraw(amount: u64) -> Op {
    Op::Withdraw { amount }
}

pub(crate) fn close() -> Op {
    Op::Close
}

pub(crate) fn view() -> Op {
    Op::View
}

pub(crate) fn ok(balance: u64, seq_nr: u64) -> Outcome {
    Outcome::Ok {
        balance,
        seq_nr,
        duplicate: false,
    }
}

pub(crate) fn dup(balance: u64, seq_nr: u64) -> Outcome {
    Outcome::Ok {
        balance,
        seq_nr,
        duplicate: true,
    }
}

pub(crate) fn rejected(reason: &str) -> Outcome {
    Outcome::Rejected {
        reason: reason.to_owned(),
    }
}

pub(crate) fn viewed(owner: &str, balance: u64, status: &str) -> Outcome {
    Outcome::Viewed {
        owner: Some(owner.to_owned()),
        balance,
        status: status.to_owned(),
    }
}

pub(crate) fn viewed_new() -> Outcome {
    Outcome::Viewed {
        owner: None,
        balance: 0,
        status: "new".to_owned(),
    }
}

pub(crate) fn unknown() -> Outcome {
    Outcome::Unknown {
        reason: "timed out".to_owned(),
    }
}

pub(crate) fn failed() -> Outcome {
    Outcome::Failed {
        reason: "invalid command".to_owned(),
    }
}

/// Builds a history of account `a`.
pub(crate) struct Builder {
    pub(crate) history: History,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            history: History::new(),
        }
    }

    pub(crate) fn operation(
        &self,
        client: u64,
        op: Op,
        invoked_at: u64,
        completed_at: u64,
        outcome: Outcome,
    ) -> Operation {
        Operation {
            client,
            entity: EntityRef::account("a"),
            command_id: None,
            op,
            invoked_at,
            completed_at: Some(completed_at),
            outcome,
        }
    }

    /// An operation without a command id; returns its index.
    pub(crate) fn at(
        &mut self,
        client: u64,
        op: Op,
        from: u64,
        to: u64,
        outcome: Outcome,
    ) -> usize {
        let operation = self.operation(client, op, from, to, outcome);
        self.history.push(operation)
    }

    /// An operation with command id `id`; returns its index.
    pub(crate) fn with_id(
        &mut self,
        id: &str,
        client: u64,
        op: Op,
        from: u64,
        to: u64,
        outcome: Outcome,
    ) -> usize {
        let operation = Operation {
            command_id: Some(id.to_owned()),
            ..self.operation(client, op, from, to, outcome)
        };
        self.history.push(operation)
    }
}

/// What becomes of a planned operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fate {
    /// Runs, and the client learns the outcome.
    Answered,
    /// Runs, but the client never learns: `Unknown`.
    Unanswered,
    /// Never runs, and the client cannot tell: `Unknown`.
    Lost,
    /// Never runs, and the client knows: `Failed`.
    Failed,
    /// Runs and is answered; if accepted, another client then sends the
    /// same command id and is answered as a duplicate.
    Retried,
}

#[derive(Debug, Clone)]
pub(crate) struct Step {
    entity: usize,
    op: Op,
    /// How far the window reaches before and after the moment it runs.
    before: u64,
    after: u64,
    fate: Fate,
}

/// Operations run through the model one at a time, in order; windows are
/// then widened around the moment each ran, so the run order is always a
/// valid linearization.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    clients: u64,
    steps: Vec<Step>,
}

impl Plan {
    /// The history clients would see, and the journal the run leaves.
    /// Step `i` runs at `1000 + 100 i` and has command id `c{i}`.
    pub(crate) fn run(&self) -> (History, JournalDump) {
        let entities = self
            .steps
            .iter()
            .map(|s| s.entity)
            .max()
            .map_or(0, |e| e + 1);
        let mut accounts = vec![(Account::default(), 0u64); entities];
        let mut history = History::new();
        let mut journal = JournalDump::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = 1_000 + 100 * i as u64;
            let entity = EntityRef::account(format!("a{}", step.entity));
            let command_id = (!step.op.is_read()).then(|| format!("c{i}"));
            let (account, seq_nr) = &mut accounts[step.entity];
            let outcome = match step.fate {
                Fate::Lost => unknown(),
                Fate::Failed => failed(),
                Fate::Answered | Fate::Unanswered | Fate::Retried => {
                    let outcome = match account.handle(&step.op) {
                        None => account.viewed(),
                        Some(Err(rejection)) => Outcome::Rejected {
                            reason: rejection.to_string(),
                        },
                        Some(Ok(event)) => {
                            account.apply(&event);
                            *seq_nr += 1;
                            journal.push(
                                entity.clone(),
                                JournalEvent {
                                    seq_nr: *seq_nr,
                                    command_id: command_id.clone().unwrap_or_default(),
                                    event_json: event.to_json(),
                                },
                            );
                            ok(account.balance, *seq_nr)
                        }
                    };
                    if step.fate == Fate::Unanswered {
                        unknown()
                    } else {
                        outcome
                    }
                }
            };
            let retry = match outcome {
                Outcome::Ok {
                    balance, seq_nr, ..
                } if step.fate == Fate::Retried => Some(Operation {
                    client: (i as u64 + 1) % self.clients,
                    entity: entity.clone(),
                    command_id: command_id.clone(),
                    op: step.op.clone(),
                    invoked_at: at - step.before / 2,
                    completed_at: Some(at + step.after + 10),
                    outcome: dup(balance, seq_nr),
                }),
                _ => None,
            };
            history.push(Operation {
                client: i as u64 % self.clients,
                entity,
                command_id,
                op: step.op.clone(),
                invoked_at: at - step.before,
                completed_at: (step.fate != Fate::Lost).then_some(at + step.after),
                outcome,
            });
            history.operations.extend(retry);
        }
        (history, journal)
    }
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![12 => 0..20u64, 1 => Just(u64::MAX)]
}

pub(crate) fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => prop::sample::select(vec!["ann", "bob", "", " "]).prop_map(open),
        6 => amount().prop_map(deposit),
        5 => amount().prop_map(withdraw),
        1 => Just(Op::Close),
        3 => Just(Op::View),
    ]
}

/// Each entity is opened first (so most plans have accepted commands to
/// check), then `steps` follow.
fn opened_then(entities: usize, clients: u64, steps: Vec<Step>) -> Plan {
    let opens = (0..entities).map(|entity| Step {
        entity,
        op: open("ann"),
        before: 0,
        after: 50,
        fate: Fate::Answered,
    });
    Plan {
        clients,
        steps: opens.chain(steps).collect(),
    }
}

/// One client, one operation at a time, every answer known (or a clean
/// failure).
pub(crate) fn sequential_plan(
    size: impl Into<SizeRange>,
    entities: usize,
) -> impl Strategy<Value = Plan> {
    let fate = prop_oneof![9 => Just(Fate::Answered), 1 => Just(Fate::Failed)];
    prop::collection::vec((0..entities, arb_op(), fate), size).prop_map(move |steps| {
        let steps = steps
            .into_iter()
            .map(|(entity, op, fate)| Step {
                entity,
                op,
                before: 0,
                after: 50,
                fate,
            })
            .collect();
        opened_then(entities, 1, steps)
    })
}

/// `clients` concurrent clients: windows reach up to `50 * clients` before
/// and after the moment they ran (runs are 100 apart, so about `clients`
/// overlap), and some outcomes are unknown or failed.
pub(crate) fn concurrent_plan(
    size: impl Into<SizeRange>,
    entities: usize,
    clients: u64,
) -> impl Strategy<Value = Plan> {
    let spread = 50 * clients;
    let fate = prop_oneof![
        16 => Just(Fate::Answered),
        1 => Just(Fate::Unanswered),
        1 => Just(Fate::Lost),
        1 => Just(Fate::Failed),
        1 => Just(Fate::Retried),
    ];
    let step = (0..entities, arb_op(), 0..=spread, 0..=spread, fate);
    prop::collection::vec(step, size).prop_map(move |steps| {
        let steps = steps
            .into_iter()
            .map(|(entity, op, before, after, fate)| Step {
                entity,
                op,
                before,
                after,
                fate,
            })
            .collect();
        opened_then(entities, clients, steps)
    })
}
