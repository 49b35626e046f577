//! A node process killed with SIGKILL while commands are in flight loses no
//! acknowledged command: after a restart every acknowledged command's event
//! is in the journal exactly once, sequence numbers run from 1 without gaps,
//! each entity's state is the fold of its events, and retries of
//! acknowledged command ids are answered as duplicates.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stead_tests::{guest, json, open_node, root};

const ENTITIES: u64 = 40;

struct Ack {
    entity: String,
    command_id: String,
    seq_nr: u64,
    amount: u64,
}

/// Runs the child until it acknowledged at least `min_acks` commands (then a
/// little longer), kills it with SIGKILL and returns what it acknowledged.
fn run_and_kill(dir: &std::path::Path, round: u32, min_acks: usize) -> Vec<Ack> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_crash-child"))
        .arg(dir)
        .arg(root().join("target/guests/account.wasm"))
        .arg(ENTITIES.to_string())
        .arg(round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("child starts");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            match line {
                Ok(line) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    let mut acks = Vec::new();
    let started = Instant::now();
    let mut kill_at: Option<Instant> = None;
    loop {
        if let Some(at) = kill_at
            && Instant::now() >= at
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child made no progress"
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(5)) {
            let parts: Vec<&str> = line.split(' ').collect();
            if let ["ack", entity, command_id, seq, amount] = parts[..] {
                acks.push(Ack {
                    entity: entity.to_owned(),
                    command_id: command_id.to_owned(),
                    seq_nr: seq.parse().expect("seq"),
                    amount: amount.parse().expect("amount"),
                });
            }
        }
        if kill_at.is_none() && acks.len() >= min_acks {
            // Kill at a moment that varies with the round, mid-load.
            kill_at = Some(Instant::now() + Duration::from_millis(u64::from(round) * 37 % 200));
        }
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    // Lines the child printed before it died are acknowledged too.
    drop(reader.join());
    while let Ok(line) = rx.try_recv() {
        let parts: Vec<&str> = line.split(' ').collect();
        if let ["ack", entity, command_id, seq, amount] = parts[..] {
            acks.push(Ack {
                entity: entity.to_owned(),
                command_id: command_id.to_owned(),
                seq_nr: seq.parse().expect("seq"),
                amount: amount.parse().expect("amount"),
            });
        }
    }
    acks
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_command() {
    guest("account"); // builds the guests
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all_acks: Vec<Ack> = Vec::new();
    for round in 1..=3 {
        let acks = run_and_kill(dir.path(), round, 300);
        assert!(acks.len() >= 300, "round {round}: only {} acks", acks.len());
        all_acks.extend(acks);
        let events = verify(dir.path(), &all_acks);
        eprintln!(
            "round {round}: killed; {} acknowledged so far, {events} events verified",
            all_acks.len()
        );
    }
}

fn verify(dir: &std::path::Path, acks: &[Ack]) -> usize {
    let mut total_events = 0;
    let node = open_node(dir, |_| {});
    let mut by_entity: HashMap<&str, Vec<&Ack>> = HashMap::new();
    for ack in acks {
        by_entity.entry(&ack.entity).or_default().push(ack);
    }
    for e in 0..ENTITIES {
        let id = format!("acc-{e}");
        let events = node.events("account", &id, 1, usize::MAX).expect("events");
        total_events += events.len();
        let mut seen = HashSet::new();
        let mut balance = 0u64;
        for (i, event) in events.iter().enumerate() {
            assert_eq!(
                event.seq_nr,
                i as u64 + 1,
                "{id}: sequence numbers contiguous from 1"
            );
            assert!(
                seen.insert(event.record.command_id.clone()),
                "{id}: command {} persisted twice",
                event.record.command_id
            );
            if let Some(amount) = json(&event.record.payload)["deposited"]["amount"].as_u64() {
                balance += amount;
            }
        }
        let view = json(&node.view_blocking("account", &id).expect("view"));
        assert_eq!(
            view["balance"], balance,
            "{id}: state equals the fold of its events"
        );
        for ack in by_entity.get(id.as_str()).into_iter().flatten() {
            let event = events
                .get(ack.seq_nr as usize - 1)
                .unwrap_or_else(|| panic!("{id}: acknowledged seq-nr {} lost", ack.seq_nr));
            assert_eq!(
                event.record.command_id, ack.command_id,
                "{id}: acknowledged event at seq-nr {}",
                ack.seq_nr
            );
        }
    }
    // Retries of acknowledged commands (with their command, whether or not
    // still in the entity's in-memory window: the journal's command-id index
    // holds the rest) are duplicates with their seq-nr.
    let mut retried = 0;
    for ack in acks.iter().rev().step_by(7) {
        let reply = node
            .send_blocking(
                "account",
                &ack.entity,
                format!(r#"{{"deposit":{{"amount":{}}}}}"#, ack.amount).into_bytes(),
                Some(ack.command_id.clone()),
            )
            .expect("retry");
        assert!(
            reply.duplicate,
            "{}: retry of {} was persisted again",
            ack.entity, ack.command_id
        );
        assert_eq!(reply.seq_nr, ack.seq_nr);
        retried += 1;
    }
    assert!(retried > 10, "only {retried} retries checked");
    node.shutdown();
    total_events
}
