//! Reliable messaging across a cluster of real `stead up` processes on
//! PostgreSQL: sends between entities on different nodes go through the
//! router, and when the node holding a shard is killed (SIGKILL), the node
//! that takes the shard over resumes its pending sends and fires its
//! timers, on time and once.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stead_postgres_testing as pg;
use stead_tests::chaos::client::{Client, Outcome, Reader};
use stead_tests::cluster::LocalCluster;
use stead_tests::{guests_dir, stead_binary};
use stead_types::shard::shard_of;

/// The shard count `NodeProcess` starts nodes with.
const SHARDS: u32 = 16;
const ACCOUNTS: usize = 4;
const OPENING_BALANCE: u64 = 1_000;

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

fn send_ok(http: &str, entity_type: &str, id: &str, payload: &Value, key: &str) {
    let started = Instant::now();
    loop {
        match Client::http(http).send(entity_type, id, payload, key) {
            Outcome::Acked { .. } => return,
            outcome if outcome.is_transient() => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{key}: {outcome:?}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            outcome => panic!("{key}: {outcome:?}"),
        }
    }
}

#[test]
fn a_killed_holders_pending_sends_and_timers_are_delivered_by_the_node_that_takes_its_shards() {
    let db = pg::database().expect("database");
    let mut cluster = LocalCluster::new(&stead_binary(), &db.url(), 2, &[]).expect("slots");
    cluster.start_all().expect("start");
    cluster
        .wait_settled(Duration::from_secs(30))
        .expect("the cluster settles");
    let guests = guests_dir();
    let first = cluster.node(0).expect("node 1");
    for name in ["account", "transfer"] {
        let out = Command::new(stead_binary())
            .args(["deploy", "--addr", &format!("http://{}", first.grpc)])
            .arg(guests.join(format!("{name}.wasm")))
            .output()
            .expect("stead deploy");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let entry = first.http.clone();
    // The deploys reach the other node through the journal.
    let started = Instant::now();
    for i in cluster.running() {
        let http = cluster.node(i).expect("running").http.clone();
        while !Reader::new(&http)
            .get_json("/v1/types")
            .is_ok_and(|t| t.to_string().contains("\"transfer\""))
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "deploys did not reach node {i}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let account = |i: usize| format!("acc-{i}");
    for i in 0..ACCOUNTS {
        let id = account(i);
        send_ok(
            &entry,
            "account",
            &id,
            &json!({"open": {"owner": id}}),
            &format!("open-{id}"),
        );
        send_ok(
            &entry,
            "account",
            &id,
            &json!({"deposit": {"amount": OPENING_BALANCE}}),
            &format!("fund-{id}"),
        );
    }

    // Transfers whose own shard the victim holds: their timers and sends
    // are in its outbox when it dies.
    let victim_id = cluster
        .holder(0, u64::from(shard_of("transfer", "x-0", SHARDS)))
        .expect("a holder");
    let victim = cluster.index_of(&victim_id).expect("known");
    let survivor = 1 - victim;
    let on_victim: Vec<String> = (0..200)
        .map(|n| format!("x-{n}"))
        .filter(|id| {
            cluster
                .holder(0, u64::from(shard_of("transfer", id, SHARDS)))
                .as_deref()
                == Some(victim_id.as_str())
        })
        .take(8)
        .collect();
    assert!(on_victim.len() >= 4, "{on_victim:?}");
    let due = now_ms() + 3_000;
    let (scheduled, immediate) = on_victim.split_at(on_victim.len() / 2);
    for (n, id) in scheduled.iter().enumerate() {
        let payload = json!({"schedule": {
            "from": account(n % ACCOUNTS), "to": account((n + 1) % ACCOUNTS),
            "amount": 10, "at_ms": due,
        }});
        send_ok(&entry, "transfer", id, &payload, id);
    }
    // Sends in flight when the victim dies (some may be delivered before).
    for (n, id) in immediate.iter().enumerate() {
        let payload = json!({"start": {
            "from": account((n + 2) % ACCOUNTS), "to": account((n + 3) % ACCOUNTS), "amount": 7,
        }});
        send_ok(&entry, "transfer", id, &payload, id);
    }
    let killed = Instant::now();
    cluster.kill(victim);

    let reader = Reader::new(&cluster.node(survivor).expect("survivor").http);
    let deadline = Instant::now() + Duration::from_secs(60);
    for id in &on_victim {
        loop {
            let view = reader.view("transfer", id);
            if let Ok(v) = &view
                && v["status"] == "completed"
            {
                if scheduled.contains(id) {
                    let began = v["began_at_ms"].as_u64().expect("began");
                    assert!(began >= due, "{id} began at {began}, due at {due}");
                }
                break;
            }
            assert!(Instant::now() < deadline, "{id}: {view:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!(
        "every transfer of the killed node's shards completed {:?} after the SIGKILL",
        killed.elapsed()
    );
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
                "{id}: {} applied twice",
                e.command_id
            );
        }
    }
    assert_eq!(total, ACCOUNTS as u64 * OPENING_BALANCE);
}
