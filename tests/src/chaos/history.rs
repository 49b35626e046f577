//! The real-process tests' side of the one history format: client threads
//! record every `account` operation they send into a shared [`Recorder`],
//! in the format the deterministic simulator records
//! ([`stead_history::History`]), and a run ends with the same checkers the
//! simulator runs ([`check_history`]): linearizability of each entity's
//! history, and durability of every acknowledgement in the journal read
//! back through a node's HTTP API.
//!
//! Invariants:
//! - Times are microseconds since the recorder was made, read from one
//!   monotonic clock shared by every thread, so real-time order between
//!   clients holds.
//! - One logical command is one operation: a client retrying under one
//!   command id records it once, invoked at its first attempt. A later,
//!   separate retry of an acknowledged id (to prove it is deduplicated) is
//!   its own operation, which the checkers merge with the original by id.
//! - Only `account` operations are recorded: the model the checkers hold
//!   the node to is the account's.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::Value;
use stead_history::{
    EntityRef, History, JournalDump, JournalEvent, Op, Operation, Outcome, check_durable,
    check_linearizable,
};

use super::client::{Outcome as Sent, Reader};

/// The history of one run, shared by its client threads.
pub struct Recorder {
    started: Instant,
    history: Mutex<History>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            history: Mutex::new(History::new()),
        }
    }

    /// Now, in the history's unit (µs since the recorder was made).
    pub fn now(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records a finished (or abandoned: `Unknown`) operation.
    pub fn record(&self, operation: Operation) {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(operation);
    }

    /// Records account command `command` (JSON) sent under `command_id` by
    /// `client`, invoked at `invoked_at`, with the answer `answer`: an
    /// acknowledgement becomes `Ok`, any other answer `Unknown` (the
    /// real-process loads only give up on commands whose fate they do not
    /// know). Returns an error for a command or reply that is no account's.
    pub fn record_command(
        &self,
        client: u64,
        id: &str,
        command: &Value,
        command_id: &str,
        invoked_at: u64,
        answer: &Sent,
    ) -> Result<(), String> {
        let op = Op::from_command_json(command)
            .ok_or_else(|| format!("{command} is not an account command"))?;
        let (completed_at, outcome) = match answer {
            Sent::Acked {
                reply,
                seq_nr,
                duplicate,
            } => (
                Some(self.now()),
                Outcome::accepted(reply, *seq_nr, *duplicate)
                    .ok_or_else(|| format!("account {id}: reply {reply} has no balance"))?,
            ),
            other => (
                None,
                Outcome::Unknown {
                    reason: format!("{other:?}"),
                },
            ),
        };
        self.record(Operation {
            client,
            entity: EntityRef::account(id),
            command_id: Some(command_id.to_owned()),
            op,
            invoked_at,
            completed_at,
            outcome,
        });
        Ok(())
    }

    /// Reads account `id`'s view through `reader` and records the read.
    pub fn record_view(&self, client: u64, reader: &Reader, id: &str) -> Result<Value, String> {
        let invoked_at = self.now();
        let view = reader.view("account", id)?;
        let outcome = Outcome::viewed_json(&view)
            .ok_or_else(|| format!("account {id}: {view} is not an account's view"))?;
        self.record(Operation {
            client,
            entity: EntityRef::account(id),
            command_id: None,
            op: Op::View,
            invoked_at,
            completed_at: Some(self.now()),
            outcome,
        });
        Ok(view)
    }

    /// A copy of the history so far.
    pub fn history(&self) -> History {
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// What [`check_history`] covered.
#[derive(Debug, Clone, Default)]
pub struct HistoryChecked {
    /// Operations in the history.
    pub operations: usize,
    /// Of those, acknowledged ones whose event was found in the journal.
    pub acknowledged: usize,
    /// Entities judged linearizable.
    pub entities: usize,
    /// Search nodes the linearizability checker explored.
    pub states_explored: u64,
    /// Events read back from the journal and replayed.
    pub events: usize,
}

impl std::fmt::Display for HistoryChecked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} operations on {} accounts linearizable ({} search states), {} acknowledgements found among {} journal events",
            self.operations, self.entities, self.states_explored, self.acknowledged, self.events
        )
    }
}

/// Every event of the accounts `ids`, read through the node at `http`.
pub fn dump_accounts<'a>(
    http: &str,
    ids: impl IntoIterator<Item = &'a str>,
) -> Result<JournalDump, String> {
    let reader = Reader::new(http);
    let mut dump = JournalDump::new();
    for id in ids {
        for event in reader.events("account", id)? {
            dump.push(
                EntityRef::account(id),
                JournalEvent {
                    seq_nr: event.seq_nr,
                    command_id: event.command_id,
                    event_json: event.event.to_string(),
                },
            );
        }
    }
    Ok(dump)
}

/// Runs the simulator's checkers on a real run: the history must be
/// linearizable (conclusively: an entity over the search budget fails the
/// check) and the journal `dump` must hold every acknowledgement. On a
/// violation the history is written to `keep` (when given) and the error
/// names the file, so the run can be examined.
pub fn check_history(
    history: &History,
    dump: &JournalDump,
    keep: Option<&Path>,
) -> Result<HistoryChecked, String> {
    let judged = check_linearizable(history)
        .map_err(|v| v.to_string())
        .and_then(|report| {
            let inconclusive: Vec<String> = report.inconclusive().map(|e| e.to_string()).collect();
            if inconclusive.is_empty() {
                Ok(report)
            } else {
                Err(format!(
                    "the linearizability search ran out of budget on {inconclusive:?}"
                ))
            }
        })
        .and_then(|report| {
            check_durable(history, dump)
                .map(|durable| (report, durable))
                .map_err(|v| v.to_string())
        });
    match judged {
        Ok((linearizable, durable)) => Ok(HistoryChecked {
            operations: history.operations.len(),
            acknowledged: durable.acknowledged,
            entities: linearizable.entities.len(),
            states_explored: linearizable.states_explored(),
            events: durable.events,
        }),
        Err(why) => {
            let kept = keep.and_then(|path| write_history(history, path).ok());
            Err(match kept {
                Some(path) => format!("{why} (history of the run: {})", path.display()),
                None => why,
            })
        }
    }
}

/// Writes `history` as JSON lines to `path`.
pub fn write_history(history: &History, path: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    history
        .write_jsonl(std::io::BufWriter::new(file))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(balance: u64, seq_nr: u64, duplicate: bool) -> Sent {
        Sent::Acked {
            reply: serde_json::json!({ "balance": balance }),
            seq_nr,
            duplicate,
        }
    }

    fn event(seq_nr: u64, command_id: &str, json: &str) -> JournalEvent {
        JournalEvent {
            seq_nr,
            command_id: command_id.into(),
            event_json: json.into(),
        }
    }

    /// Two commands and a retry of the first, as the crash loop records
    /// them, with the journal that holds them.
    fn run() -> (Recorder, JournalDump) {
        let recorder = Recorder::new();
        let open = serde_json::json!({"open": {"owner": "ann"}});
        let deposit = serde_json::json!({"deposit": {"amount": 5}});
        let t = recorder.now();
        recorder
            .record_command(1, "a", &open, "c1", t, &acked(0, 1, false))
            .expect("recorded");
        let t = recorder.now();
        recorder
            .record_command(1, "a", &deposit, "c2", t, &acked(5, 2, false))
            .expect("recorded");
        let t = recorder.now();
        recorder
            .record_command(2, "a", &open, "c1", t, &acked(0, 1, true))
            .expect("recorded");
        let mut dump = JournalDump::new();
        dump.push(
            EntityRef::account("a"),
            event(1, "c1", r#"{"opened":{"owner":"ann"}}"#),
        );
        dump.push(
            EntityRef::account("a"),
            event(2, "c2", r#"{"deposited":{"amount":5}}"#),
        );
        (recorder, dump)
    }

    #[test]
    fn a_consistent_run_passes_both_checkers() {
        let (recorder, dump) = run();
        let checked = check_history(&recorder.history(), &dump, None).expect("consistent");
        assert_eq!(checked.operations, 3);
        assert_eq!(checked.acknowledged, 3);
        assert_eq!(checked.events, 2);
    }

    #[test]
    fn a_lost_acknowledged_event_fails_and_the_history_is_kept() {
        let (recorder, mut dump) = run();
        dump.entities
            .values_mut()
            .for_each(|events| events.truncate(1));
        let dir = tempfile::tempdir().expect("tempdir");
        let keep = dir.path().join("history.jsonl");
        let error = check_history(&recorder.history(), &dump, Some(&keep)).expect_err("lost");
        assert!(error.contains("acknowledged event missing"), "{error}");
        assert!(error.contains("history.jsonl"), "{error}");
        let kept = History::read_jsonl(std::io::BufReader::new(
            std::fs::File::open(&keep).expect("kept"),
        ))
        .expect("readable");
        assert_eq!(kept, recorder.history());
    }

    #[test]
    fn a_stale_reply_is_not_linearizable() {
        let (recorder, dump) = run();
        // A later deposit acknowledged with the balance before the first.
        let t = recorder.now();
        recorder
            .record_command(
                1,
                "a",
                &serde_json::json!({"deposit": {"amount": 1}}),
                "c3",
                t,
                &acked(1, 3, false),
            )
            .expect("recorded");
        let error = check_history(&recorder.history(), &dump, None).expect_err("stale");
        assert!(error.contains("not linearizable"), "{error}");
    }

    #[test]
    fn a_command_that_is_no_accounts_is_refused() {
        let recorder = Recorder::new();
        let cart = serde_json::json!({"add_item": {"sku": "tea", "quantity": 1}});
        assert!(
            recorder
                .record_command(1, "c", &cart, "x", 0, &acked(0, 1, false))
                .is_err()
        );
    }
}
