//! The check run at every start of the crash loop: each entity's journal,
//! view and replies against its ledger and the independent model, commands
//! in doubt resolved by a retry, acknowledged ids retried (see the parent
//! module's docs for what it proves). Account commands, retries and views
//! go into the run's history.

use super::client::{Client, Outcome, Reader};
use super::history::Recorder;
use super::model::{self, Kind, Ledger, Sent};
use super::{NodeProcess, record_acked};

/// What a check covered.
#[derive(Debug, Default)]
pub(super) struct Checked {
    pub events: u64,
    pub retries: u64,
    pub retries_past_window: u64,
    pub in_doubt_persisted: u64,
}

/// Checks every entity against its ledger (see the module docs), resolving
/// commands in doubt by retrying them; `threads` checkers run in parallel.
pub(super) fn check(
    node: &NodeProcess,
    ledgers: &mut [Ledger],
    threads: usize,
    recorder: &Recorder,
) -> Result<Checked, String> {
    let chunk = ledgers.len().div_ceil(threads.max(1)).max(1);
    let results: Vec<Result<Checked, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = ledgers
            .chunks_mut(chunk)
            .enumerate()
            .map(|(i, part)| {
                let (http, grpc) = (node.http.clone(), node.grpc.clone());
                scope.spawn(move || {
                    let reader = Reader::new(&http);
                    let mut client = if i % 2 == 0 {
                        Client::http(&http)
                    } else {
                        Client::grpc(&grpc)?
                    };
                    let mut checked = Checked::default();
                    let checker = Checker {
                        reader: &reader,
                        recorder,
                        // Checkers are clients of the history too, numbered
                        // after the load's.
                        client: 1_000 + i as u64,
                    };
                    for ledger in part {
                        check_entity(&checker, &mut client, ledger, &mut checked)?;
                    }
                    Ok(checked)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a checker panicked".into()))
            })
            .collect()
    });
    let mut total = Checked::default();
    for result in results {
        let c = result?;
        total.events += c.events;
        total.retries += c.retries;
        total.retries_past_window += c.retries_past_window;
        total.in_doubt_persisted += c.in_doubt_persisted;
    }
    Ok(total)
}

/// What a checker thread reads with and records into.
struct Checker<'a> {
    reader: &'a Reader,
    recorder: &'a Recorder,
    client: u64,
}

fn check_entity(
    checker: &Checker<'_>,
    client: &mut Client,
    ledger: &mut Ledger,
    checked: &mut Checked,
) -> Result<(), String> {
    let reader = checker.reader;
    let (ty, id) = (ledger.kind.type_name(), ledger.id.clone());
    let who = format!("{ty} {id}");
    let events = reader.events(ty, &id)?;
    checked.events += events.len() as u64;
    let acked = ledger.acked.len();
    let extra = events.len().checked_sub(acked).ok_or_else(|| {
        format!(
            "{who}: {acked} commands were acknowledged but the journal holds {} events: acknowledged commands were lost",
            events.len()
        )
    })?;
    if extra > usize::from(ledger.in_doubt.is_some()) {
        return Err(format!(
            "{who}: the journal holds {} events, {acked} acknowledged and {} in doubt: an event was duplicated or invented ({:?})",
            events.len(),
            usize::from(ledger.in_doubt.is_some()),
            events
                .iter()
                .skip(acked)
                .map(|e| &e.command_id)
                .collect::<Vec<_>>()
        ));
    }
    // The journal, event by event, against the ledger and the model.
    let mut model = model::Model::default();
    for (i, event) in events.iter().enumerate() {
        let seq = i as u64 + 1;
        if event.seq_nr != seq {
            return Err(format!(
                "{who}: event {i} has seq-nr {}, expected {seq} (gap or disorder)",
                event.seq_nr
            ));
        }
        let (command_id, payload) = match ledger.acked.get(i) {
            Some(a) => (&a.command_id, &a.payload),
            None => match &ledger.in_doubt {
                Some(s) => (&s.command_id, &s.payload),
                None => return Err(format!("{who}: event {seq} has no command")),
            },
        };
        if &event.command_id != command_id {
            return Err(format!(
                "{who}: event {seq} belongs to command {}, the client's command {seq} was {command_id}",
                event.command_id
            ));
        }
        let expected = model.expected_event(ledger.kind, payload)?;
        if event.event != expected {
            return Err(format!(
                "{who}: event {seq} is {}, command {payload} must emit {expected}",
                event.event
            ));
        }
        model.apply(ledger.kind, &event.event)?;
        if let Some(a) = ledger.acked.get(i) {
            let reply = model.expected_reply(ledger.kind);
            if a.reply != reply {
                return Err(format!(
                    "{who}: command {command_id} was answered {} but the fold to its event gives {reply}",
                    a.reply
                ));
            }
        }
    }
    // Resolve the command in doubt: a retry is a duplicate exactly when its
    // event was found.
    if let Some(sent) = ledger.in_doubt.take() {
        let persisted = extra == 1;
        let outcome = client.send(ty, &id, &sent.payload, &sent.command_id);
        record_acked(checker.recorder, checker.client, ledger, &sent, &outcome)?;
        match outcome {
            Outcome::Acked {
                reply,
                seq_nr,
                duplicate,
            } => {
                if duplicate != persisted {
                    return Err(format!(
                        "{who}: retry of in-doubt command {} says duplicate={duplicate}, but its event is {}in the journal",
                        sent.command_id,
                        if persisted { "" } else { "not " }
                    ));
                }
                checked.in_doubt_persisted += u64::from(persisted);
                ledger.acknowledge(sent, reply, seq_nr, duplicate)?;
            }
            other => {
                return Err(format!(
                    "{who}: retry of in-doubt command {} failed: {other:?}",
                    sent.command_id
                ));
            }
        }
    }
    if ledger.acked.is_empty() {
        return Ok(());
    }
    let view = match ledger.kind {
        Kind::Account => checker.recorder.record_view(checker.client, reader, &id)?,
        Kind::Cart => reader.view(ty, &id)?,
    };
    let expected = ledger.model.expected_view(ledger.kind);
    if view != expected {
        return Err(format!(
            "{who}: the view is {view}, the fold of its events gives {expected}"
        ));
    }
    // Retry the last acknowledged command (in the node's dedup window) and
    // the oldest (past the window of 2 the nodes run with when the entity
    // took more: found through the journal's command-id index).
    let retried: Vec<_> = match (ledger.acked.first(), ledger.acked.last()) {
        (Some(first), Some(last)) if ledger.acked.len() > 1 => vec![last.clone(), first.clone()],
        (_, Some(last)) => vec![last.clone()],
        _ => Vec::new(),
    };
    for (i, acked) in retried.into_iter().enumerate() {
        let retry = Sent {
            command_id: acked.command_id.clone(),
            payload: acked.payload.clone(),
            invoked_at: checker.recorder.now(),
        };
        let outcome = client.send(ty, &id, &retry.payload, &retry.command_id);
        record_acked(checker.recorder, checker.client, ledger, &retry, &outcome)?;
        match outcome {
            Outcome::Acked {
                reply,
                seq_nr,
                duplicate: true,
            } if reply == acked.reply && seq_nr == acked.seq_nr => {
                checked.retries += 1;
                if i == 1 && ledger.acked.len() > 2 {
                    checked.retries_past_window += 1;
                }
            }
            other => {
                return Err(format!(
                    "{who}: retry of acknowledged command {} (seq-nr {}, reply {}) gave {other:?}",
                    acked.command_id, acked.seq_nr, acked.reply
                ));
            }
        }
    }
    Ok(())
}
