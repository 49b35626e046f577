//! The history format: what clients saw of the commands they sent, one
//! [`Operation`] per logical command, and its JSON-lines encoding.
//!
//! Invariants:
//! - An operation is one logical command from one client: retries under the
//!   same command id are one operation, invoked at the first attempt and
//!   completed at the definitive answer.
//! - Times are in one monotone unit shared by every client of a history;
//!   only their order matters. Two windows overlap unless one completes
//!   strictly before the other is invoked.
//! - The encoding is one JSON object per line, fields in declaration order,
//!   operations in recording order: writing the history read from a file
//!   gives the same bytes.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, BufRead, Write};

use serde::{Deserialize, Serialize};

/// The entity type the model describes; the checkers refuse others.
pub const ACCOUNT_TYPE: &str = "account";

/// The entity an operation addresses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EntityRef {
    pub entity_type: String,
    pub id: String,
}

impl EntityRef {
    pub fn new(entity_type: impl Into<String>, id: impl Into<String>) -> Self {
        EntityRef {
            entity_type: entity_type.into(),
            id: id.into(),
        }
    }

    /// An entity of type `account`, the one the checkers model.
    pub fn account(id: impl Into<String>) -> Self {
        EntityRef::new(ACCOUNT_TYPE, id)
    }
}

impl fmt::Display for EntityRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.entity_type, self.id)
    }
}

/// An account operation: one of its commands, or a read of its view.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    Open { owner: String },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
    Close,
    View,
}

impl Op {
    /// The account's JSON command (`{"deposit":{"amount":5}}`), or `None`
    /// for a view, which is a read and no command.
    pub fn command_json(&self) -> Option<String> {
        let json = match self {
            Op::Open { owner } => serde_json::json!({ "open": { "owner": owner } }),
            Op::Deposit { amount } => serde_json::json!({ "deposit": { "amount": amount } }),
            Op::Withdraw { amount } => serde_json::json!({ "withdraw": { "amount": amount } }),
            Op::Close => serde_json::json!({ "close": {} }),
            Op::View => return None,
        };
        Some(json.to_string())
    }

    /// Whether this is a read (a view) rather than a command.
    pub fn is_read(&self) -> bool {
        matches!(self, Op::View)
    }

    /// The operation an account command's JSON encodes (the inverse of
    /// [`Op::command_json`]); `None` for anything else.
    pub fn from_command_json(command: &serde_json::Value) -> Option<Op> {
        let map = command.as_object().filter(|m| m.len() == 1)?;
        let (name, body) = map.iter().next()?;
        let amount = || body.get("amount")?.as_u64();
        Some(match name.as_str() {
            "open" => Op::Open {
                owner: body.get("owner")?.as_str()?.to_owned(),
            },
            "deposit" => Op::Deposit { amount: amount()? },
            "withdraw" => Op::Withdraw { amount: amount()? },
            "close" => Op::Close,
            _ => return None,
        })
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Open { owner } => write!(f, "open({owner:?})"),
            Op::Deposit { amount } => write!(f, "deposit({amount})"),
            Op::Withdraw { amount } => write!(f, "withdraw({amount})"),
            Op::Close => f.write_str("close"),
            Op::View => f.write_str("view"),
        }
    }
}

/// What the client finally learned of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Accepted: the balance after it and the entity's seq-nr after it.
    /// `duplicate`: the host answered from an earlier application of the
    /// same command id (its original reply and seq-nr) and persisted nothing.
    Ok {
        balance: u64,
        seq_nr: u64,
        duplicate: bool,
    },
    /// Refused by the guest: a no-op read at some point of its window, whose
    /// reason must fit the state there.
    Rejected { reason: String },
    /// The view a `View` returned; `status` is `new`, `open` or `closed`.
    Viewed {
        owner: Option<String>,
        balance: u64,
        status: String,
    },
    /// Definitely not applied (invalid command, refused before running).
    Failed { reason: String },
    /// Maybe applied, maybe not, maybe later: timeouts, resets, a 503 after
    /// the send. The window never closes.
    Unknown { reason: String },
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok {
                balance,
                seq_nr,
                duplicate,
            } => {
                write!(f, "ok balance {balance} seq-nr {seq_nr}")?;
                if *duplicate {
                    f.write_str(" (duplicate)")?;
                }
                Ok(())
            }
            Outcome::Rejected { reason } => write!(f, "rejected {reason:?}"),
            Outcome::Viewed {
                owner,
                balance,
                status,
            } => {
                let owner = owner.as_deref().unwrap_or("-");
                write!(f, "viewed {status} owner {owner:?} balance {balance}")
            }
            Outcome::Failed { reason } => write!(f, "failed {reason:?}"),
            Outcome::Unknown { reason } => write!(f, "unknown {reason:?}"),
        }
    }
}

impl Outcome {
    /// An accepted command's outcome from the account's JSON reply
    /// (`{"balance":5}`); `None` if the reply carries no balance.
    pub fn accepted(reply: &serde_json::Value, seq_nr: u64, duplicate: bool) -> Option<Outcome> {
        Some(Outcome::Ok {
            balance: reply.get("balance")?.as_u64()?,
            seq_nr,
            duplicate,
        })
    }

    /// A view's outcome from the account's JSON view
    /// (`{"owner":"ann","balance":5,"status":"open"}`, owner `null` before
    /// it opens); `None` if it is not one.
    pub fn viewed_json(view: &serde_json::Value) -> Option<Outcome> {
        let owner = match view.get("owner")? {
            serde_json::Value::Null => None,
            owner => Some(owner.as_str()?.to_owned()),
        };
        Some(Outcome::Viewed {
            owner,
            balance: view.get("balance")?.as_u64()?,
            status: view.get("status")?.as_str()?.to_owned(),
        })
    }
}

/// One logical command (or read) from one client, and what it learned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Operation {
    pub client: u64,
    pub entity: EntityRef,
    /// The id the client sent (every retry sends the same); `None` when the
    /// host chose one.
    #[serde(default)]
    pub command_id: Option<String>,
    pub op: Op,
    pub invoked_at: u64,
    /// When the definitive answer came; `None` only for `Unknown`.
    #[serde(default)]
    pub completed_at: Option<u64>,
    pub outcome: Outcome,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} {}", self.client, self.op)?;
        if let Some(id) = &self.command_id {
            write!(f, " id {id:?}")?;
        }
        write!(f, " [{}..", self.invoked_at)?;
        match self.completed_at {
            Some(at) => write!(f, "{at}]")?,
            None => f.write_str("]")?,
        }
        write!(f, " -> {}", self.outcome)
    }
}

/// An error reading or completing a history.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("reading the history: {0}")]
    Io(#[from] io::Error),
    #[error("history line {line}: {source}")]
    Parse {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("no operation {0} in the history")]
    NoSuchOperation(usize),
}

/// Operations in recording order; an index into `operations` is how
/// reports and violations name an operation (`#3`). Its one encoding is
/// JSON lines ([`History::write_jsonl`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    pub operations: Vec<Operation>,
}

/// What an invoked operation says until it is completed: a client that
/// never completes it (it crashed, the run ended) left its fate unknown.
const NOT_COMPLETED: &str = "no answer recorded";

impl History {
    pub fn new() -> Self {
        History::default()
    }

    /// Adds a finished operation; returns its index.
    pub fn push(&mut self, operation: Operation) -> usize {
        self.operations.push(operation);
        self.operations.len() - 1
    }

    /// Records a send; the operation stays `Unknown` until
    /// [`History::record_complete`]. Returns its index.
    pub fn record_invoke(
        &mut self,
        client: u64,
        entity: EntityRef,
        command_id: Option<String>,
        op: Op,
        at: u64,
    ) -> usize {
        self.push(Operation {
            client,
            entity,
            command_id,
            op,
            invoked_at: at,
            completed_at: None,
            outcome: Outcome::Unknown {
                reason: NOT_COMPLETED.to_owned(),
            },
        })
    }

    /// Records the definitive answer to operation `index`.
    pub fn record_complete(
        &mut self,
        index: usize,
        at: u64,
        outcome: Outcome,
    ) -> Result<(), HistoryError> {
        let operation = self
            .operations
            .get_mut(index)
            .ok_or(HistoryError::NoSuchOperation(index))?;
        operation.completed_at = Some(at);
        operation.outcome = outcome;
        Ok(())
    }

    /// The indexes of each entity's operations, in recording order.
    pub fn by_entity(&self) -> BTreeMap<&EntityRef, Vec<usize>> {
        let mut entities: BTreeMap<&EntityRef, Vec<usize>> = BTreeMap::new();
        for (i, operation) in self.operations.iter().enumerate() {
            entities.entry(&operation.entity).or_default().push(i);
        }
        entities
    }

    /// Writes one JSON object per line. Each line is one `write_all`, so
    /// an unbuffered writer costs one call per operation.
    pub fn write_jsonl(&self, mut out: impl Write) -> io::Result<()> {
        let mut line = Vec::with_capacity(256);
        for operation in &self.operations {
            line.clear();
            serde_json::to_writer(&mut line, operation)?;
            line.push(b'\n');
            out.write_all(&line)?;
        }
        out.flush()
    }

    /// Reads what [`History::write_jsonl`] wrote; blank lines are skipped.
    pub fn read_jsonl(input: impl BufRead) -> Result<History, HistoryError> {
        let mut history = History::new();
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let operation = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
                line: i + 1,
                source,
            })?;
            history.operations.push(operation);
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut history = History::new();
        let a = EntityRef::account("a1");
        let open = history.record_invoke(
            1,
            a.clone(),
            Some("c-1".into()),
            Op::Open {
                owner: "ann \"the\" owner".into(),
            },
            10,
        );
        let deposit = history.record_invoke(2, a.clone(), None, Op::Deposit { amount: 5 }, 12);
        history
            .record_complete(
                open,
                20,
                Outcome::Ok {
                    balance: 0,
                    seq_nr: 1,
                    duplicate: false,
                },
            )
            .expect("recorded");
        history
            .record_complete(
                deposit,
                25,
                Outcome::Rejected {
                    reason: "account is not open".into(),
                },
            )
            .expect("recorded");
        history.record_invoke(3, a.clone(), Some("c-3".into()), Op::Close, 30);
        history.push(Operation {
            client: 1,
            entity: a,
            command_id: None,
            op: Op::View,
            invoked_at: 40,
            completed_at: Some(41),
            outcome: Outcome::Viewed {
                owner: Some("ann".into()),
                balance: 0,
                status: "open".into(),
            },
        });
        history.push(Operation {
            client: 4,
            entity: EntityRef::account("a2"),
            command_id: Some("c-4".into()),
            op: Op::Withdraw { amount: 0 },
            invoked_at: 50,
            completed_at: Some(60),
            outcome: Outcome::Failed {
                reason: "invalid command".into(),
            },
        });
        history
    }

    #[test]
    fn jsonl_round_trip_is_byte_identical() {
        let history = sample();
        let mut first = Vec::new();
        history.write_jsonl(&mut first).expect("written");
        let read = History::read_jsonl(first.as_slice()).expect("read");
        assert_eq!(read, history);
        let mut second = Vec::new();
        read.write_jsonl(&mut second).expect("written");
        assert_eq!(first, second);
    }

    #[test]
    fn the_encoding_is_pinned() {
        let mut out = Vec::new();
        sample().write_jsonl(&mut out).expect("written");
        let text = String::from_utf8(out).expect("utf-8");
        let first = text.lines().next().expect("a line");
        assert_eq!(
            first,
            r#"{"client":1,"entity":{"entity_type":"account","id":"a1"},"command_id":"c-1","op":{"kind":"open","owner":"ann \"the\" owner"},"invoked_at":10,"completed_at":20,"outcome":{"kind":"ok","balance":0,"seq_nr":1,"duplicate":false}}"#
        );
        assert_eq!(text.lines().count(), 5);
    }

    #[test]
    fn an_invoked_operation_never_completed_is_unknown() {
        let history = sample();
        let close = &history.operations[2];
        assert_eq!(close.completed_at, None);
        assert!(matches!(close.outcome, Outcome::Unknown { .. }));
    }

    #[test]
    fn completing_a_missing_operation_is_an_error() {
        let mut history = History::new();
        let error = history
            .record_complete(3, 1, Outcome::Unknown { reason: "x".into() })
            .expect_err("no operation 3");
        assert!(matches!(error, HistoryError::NoSuchOperation(3)));
    }

    #[test]
    fn a_bad_line_is_named_by_its_number() {
        let mut out = Vec::new();
        sample().write_jsonl(&mut out).expect("written");
        out.extend_from_slice(b"\n{\"client\":1}\n");
        match History::read_jsonl(out.as_slice()) {
            Err(HistoryError::Parse { line, .. }) => assert_eq!(line, 7),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn commands_use_the_account_encoding() {
        let cases = [
            (
                Op::Open {
                    owner: "a\"b".into(),
                },
                Some(r#"{"open":{"owner":"a\"b"}}"#),
            ),
            (
                Op::Deposit { amount: 5 },
                Some(r#"{"deposit":{"amount":5}}"#),
            ),
            (
                Op::Withdraw { amount: 7 },
                Some(r#"{"withdraw":{"amount":7}}"#),
            ),
            (Op::Close, Some(r#"{"close":{}}"#)),
            (Op::View, None),
        ];
        for (op, json) in cases {
            assert_eq!(op.command_json().as_deref(), json, "{op}");
            if let Some(json) = json {
                let value: serde_json::Value = serde_json::from_str(json).expect("json");
                assert_eq!(Op::from_command_json(&value), Some(op.clone()), "{json}");
            }
        }
        for other in [
            r#"{"deposit":{"amount":-1}}"#,
            r#"{"deposit":{}}"#,
            r#"{"add_item":{"sku":"tea"}}"#,
            r#"{"open":{"owner":"a"},"close":{}}"#,
            r#""close""#,
        ] {
            let value: serde_json::Value = serde_json::from_str(other).expect("json");
            assert_eq!(Op::from_command_json(&value), None, "{other}");
        }
    }

    #[test]
    fn replies_and_views_read_as_outcomes() {
        let reply = serde_json::json!({"balance": 7});
        assert_eq!(
            Outcome::accepted(&reply, 3, true),
            Some(Outcome::Ok {
                balance: 7,
                seq_nr: 3,
                duplicate: true
            })
        );
        assert_eq!(Outcome::accepted(&serde_json::json!({}), 3, false), None);
        let new = serde_json::json!({"owner": null, "balance": 0, "status": "new"});
        assert_eq!(
            Outcome::viewed_json(&new),
            Some(Outcome::Viewed {
                owner: None,
                balance: 0,
                status: "new".into()
            })
        );
        let open = serde_json::json!({"owner": "ann", "balance": 5, "status": "open"});
        assert_eq!(
            Outcome::viewed_json(&open),
            Some(Outcome::Viewed {
                owner: Some("ann".into()),
                balance: 5,
                status: "open".into()
            })
        );
        assert_eq!(
            Outcome::viewed_json(&serde_json::json!({"items": []})),
            None
        );
    }
}
