//! The `transfer` saga under SIGKILL: a real `stead up` process on the
//! embedded journal runs transfers between accounts while it is killed at
//! random moments and restarted on the same data directory. Afterwards
//! every transfer that was started has ended (`completed`, `failed` or
//! `refunded`), the total of the balances never changed, and no message
//! took effect twice (each delivered command id appears once among an
//! account's events).
//!
//! The seed is printed; `STEAD_SAGA_SEED=<seed>` replays its schedule
//! (the kills land on other instructions each run: the process is real).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stead_tests::chaos::NodeProcess;
use stead_tests::chaos::client::{Client, Outcome, Reader};
use stead_tests::{guests_dir, stead_binary};

const ACCOUNTS: usize = 5;
const OPENING_BALANCE: u64 = 1_000;
/// Never opened: a deposit to it is refused, so a transfer to it refunds.
const NOBODY: &str = "nobody";
const ROUNDS: usize = 6;

fn account(i: usize) -> String {
    format!("acc-{i}")
}

fn deploy(node: &NodeProcess, guests: &Path) {
    for name in ["account", "transfer"] {
        let out = Command::new(stead_binary())
            .args(["deploy", "--addr", &format!("http://{}", node.grpc)])
            .arg(guests.join(format!("{name}.wasm")))
            .output()
            .expect("stead deploy");
        assert!(
            out.status.success(),
            "deploying {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Sends until acknowledged or refused (same id on every retry).
fn send_until_answered(
    node: &NodeProcess,
    entity_type: &str,
    id: &str,
    payload: &Value,
    key: &str,
) -> Outcome {
    let started = Instant::now();
    loop {
        let outcome = Client::http(&node.http).send(entity_type, id, payload, key);
        if !outcome.is_transient() {
            return outcome;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{key}: {outcome:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn transfers_under_sigkill_all_end_money_is_conserved_and_no_message_applies_twice() {
    let seed = std::env::var("STEAD_SAGA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("saga crash loop: seed {seed} (STEAD_SAGA_SEED={seed} replays the schedule)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let guests = guests_dir();
    let dir = tempfile::tempdir().expect("dir");
    let stead = stead_binary();
    let mut node = NodeProcess::start(&stead, dir.path()).expect("start");
    deploy(&node, &guests);
    for i in 0..ACCOUNTS {
        let id = account(i);
        for (key, payload) in [
            (format!("open-{id}"), json!({"open": {"owner": id}})),
            (
                format!("fund-{id}"),
                json!({"deposit": {"amount": OPENING_BALANCE}}),
            ),
        ] {
            let outcome = send_until_answered(&node, "account", &id, &payload, &key);
            assert!(
                matches!(outcome, Outcome::Acked { .. }),
                "{key}: {outcome:?}"
            );
        }
    }

    // Transfers started (acknowledged) or perhaps started (no answer).
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut in_doubt: BTreeSet<String> = BTreeSet::new();
    let mut next = 0usize;
    for round in 0..ROUNDS {
        let stop = Arc::new(AtomicBool::new(false));
        let http = node.http.clone();
        let mut load_rng = fastrand::Rng::with_seed(rng.u64(..));
        let first = next;
        let flag = stop.clone();
        let load = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut doubtful = Vec::new();
            let mut n = first;
            let mut client = Client::http(&http);
            while !flag.load(Ordering::Relaxed) {
                let id = format!("t-{n}");
                n += 1;
                let from = account(load_rng.usize(..ACCOUNTS));
                let to = if load_rng.u8(..8) == 0 {
                    NOBODY.to_owned()
                } else {
                    account(load_rng.usize(..ACCOUNTS))
                };
                if from == to {
                    continue;
                }
                let amount = load_rng.u64(1..=400);
                let payload = json!({"start": {"from": from, "to": to, "amount": amount}});
                match client.send("transfer", &id, &payload, &id) {
                    Outcome::Acked { .. } => acked.push(id),
                    Outcome::Refused { code, message } => {
                        panic!("starting {id} was refused: {code}: {message}")
                    }
                    Outcome::Unreachable(_) => {
                        doubtful.push(id);
                        break;
                    }
                }
            }
            (acked, doubtful, n)
        });
        std::thread::sleep(Duration::from_millis(rng.u64(150..900)));
        node.kill();
        stop.store(true, Ordering::Relaxed);
        let (acked, doubtful, n) = load.join().expect("load thread");
        eprintln!(
            "round {round}: {} transfers started, {} in doubt, then SIGKILL",
            acked.len(),
            doubtful.len()
        );
        started.extend(acked);
        in_doubt.extend(doubtful);
        next = n;
        node = NodeProcess::start(&stead, dir.path()).expect("restart");
    }

    // Every transfer ends once its messages are delivered.
    let reader = Reader::new(&node.http);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut endings: BTreeMap<String, usize> = BTreeMap::new();
    for id in started.iter().chain(&in_doubt) {
        loop {
            let view = reader.view("transfer", id).expect("view");
            let status = view["status"].as_str().unwrap_or_default().to_owned();
            match status.as_str() {
                "completed" | "failed" | "refunded" => {
                    *endings.entry(status).or_default() += 1;
                    break;
                }
                // Never started: only a start that got no answer.
                "new" if in_doubt.contains(id) => break,
                _ => {
                    assert!(
                        Instant::now() < deadline,
                        "transfer {id} has not ended: {view}"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    eprintln!("endings: {endings:?}");
    assert!(
        endings.get("completed").copied().unwrap_or(0) > 0,
        "no transfer completed: {endings:?}"
    );

    // Money is conserved, and each delivered command took effect once.
    let mut total = 0;
    for i in 0..ACCOUNTS {
        let id = account(i);
        total += reader.view("account", &id).expect("view")["balance"]
            .as_u64()
            .expect("balance");
        let events = reader.events("account", &id).expect("events");
        let mut seen = BTreeSet::new();
        for e in &events {
            assert!(
                seen.insert(e.command_id.clone()),
                "{id}: command {} applied twice: {events:?}",
                e.command_id
            );
        }
    }
    assert_eq!(
        total,
        ACCOUNTS as u64 * OPENING_BALANCE,
        "money was created or lost"
    );
    assert_eq!(
        reader.view("account", NOBODY).expect("view")["balance"],
        0,
        "the account never opened holds nothing"
    );
    node.stop().expect("clean stop");
}
