//! Real `stead up` processes on a real PostgreSQL journal: a frozen holder
//! is fenced by the node that takes its shards (and not one of its events
//! lands after the claim), a database restart under load costs 503s and no
//! acknowledged command, and a deploy on one node reaches the other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stead_node::{JournalConfig, Node, NodeError, SettableClock};
use stead_postgres_testing as pg;
use stead_tests::chaos::NodeProcess;
use stead_tests::chaos::client::{Client, Outcome, Reader};
use stead_tests::{guest, guests_dir, stead_binary, test_config};
use stead_types::config::PostgresOptions;

fn start(data: &std::path::Path, url: &str, node_id: &str) -> NodeProcess {
    let args: Vec<String> = ["--journal", url, "--node-id", node_id]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    NodeProcess::start_with(&stead_binary(), data, &args).expect("start a node")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `/readyz`'s status code.
fn ready(node: &NodeProcess) -> u16 {
    agent()
        .get(&format!("http://{}/readyz", node.http))
        .call()
        .map_or(0, |r| r.status().as_u16())
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

fn signal(node: &NodeProcess, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &node.pid().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

fn deposit(client: &mut Client, id: &str, command_id: &str) -> Outcome {
    client.send(
        "account",
        id,
        &json!({"deposit": {"amount": 1}}),
        command_id,
    )
}

#[test]
fn a_frozen_holder_is_fenced_by_the_next_and_none_of_its_events_lands_after_the_claim() {
    let db = pg::database().expect("database");
    let url = db.url();
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let a = start(dirs[0].path(), &url, "node-a");
    a.deploy(&guests_dir()).expect("deploy on a");
    let mut client_a = Client::http(&a.http);
    for id in ["x", "y"] {
        let opened = client_a.send(
            "account",
            id,
            &json!({"open": {"owner": "ada"}}),
            &format!("a-open-{id}"),
        );
        assert!(matches!(opened, Outcome::Acked { .. }), "{opened:?}");
    }
    let b = start(dirs[1].path(), &url, "node-b");
    assert_eq!(ready(&b), 503, "b serves nothing while a holds every shard");

    // A client keeps writing to a until it is frozen, and after.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, sent, http) = (stop.clone(), sent.clone(), a.http.clone());
        std::thread::spawn(move || {
            let mut client = Client::http(&http);
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = sent.fetch_add(1, Ordering::Relaxed);
                outcomes.push(deposit(&mut client, "y", &format!("a-{n}")));
            }
            outcomes
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    signal(&a, "-STOP");
    let frozen = Instant::now();
    let takeover = wait_until("b takes every shard", Duration::from_secs(10), || {
        ready(&b) == 200
    });
    eprintln!("b ready {takeover:?} after a was frozen");
    assert!(
        frozen.elapsed() >= Duration::from_millis(1500),
        "b claimed before a's lease could expire"
    );

    // What the table holds at b's claim: a's events must all be below.
    let mut sql = db.client().expect("client");
    let last_at_claim: i64 = sql
        .query_one(
            "SELECT COALESCE(MAX(seq_nr), 0) FROM stead_events WHERE entity_type = 'account' AND entity_id = 'y'",
            &[],
        )
        .expect("query")
        .get(0);
    let mut client_b = Client::http(&b.http);
    let on_b = deposit(&mut client_b, "x", "b-1");
    assert!(
        matches!(on_b, Outcome::Acked { .. }),
        "b serves a's entity: {on_b:?}"
    );

    signal(&a, "-CONT");
    let thawed = Instant::now();
    // a refuses at once: its lease ran out while it was frozen.
    let mut probe = Client::http(&a.http);
    wait_until(
        "a refuses x",
        Duration::from_millis(500),
        || matches!(deposit(&mut probe, "x", "a-probe"), Outcome::Refused { ref code, .. } if code == "unavailable"),
    );
    eprintln!("a refused {:?} after it was resumed", thawed.elapsed());
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let outcomes = writer.join().expect("writer");
    let late: i64 = sql
        .query_one(
            "SELECT count(*) FROM stead_events
             WHERE entity_type = 'account' AND entity_id = 'y' AND command_id LIKE 'a-%' AND seq_nr > $1",
            &[&last_at_claim],
        )
        .expect("query")
        .get(0);
    assert_eq!(
        late, 0,
        "an event of the frozen node landed after the claim"
    );
    let probes: i64 = sql
        .query_one(
            "SELECT count(*) FROM stead_events WHERE command_id = 'a-probe'",
            &[],
        )
        .expect("query")
        .get(0);
    assert_eq!(probes, 0);
    // Every write a acknowledged is in the table, and nothing else of its.
    let acked: Vec<String> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Outcome::Acked { .. }))
        .map(|(n, _)| format!("a-{n}"))
        .collect();
    let stored: Vec<String> = sql
        .query(
            "SELECT command_id FROM stead_events
             WHERE entity_type = 'account' AND entity_id = 'y' AND command_id LIKE 'a-%' AND command_id <> 'a-open-y'
             ORDER BY seq_nr",
            &[],
        )
        .expect("query")
        .iter()
        .map(|r| r.get(0))
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "acknowledged {id} is missing");
    }
    assert!(
        !acked.is_empty(),
        "a acknowledged writes before it was frozen"
    );
    // b serves y with every event, a's included.
    let view = Reader::new(&b.http)
        .view("account", "y")
        .expect("view on b");
    assert_eq!(view["balance"], json!(stored.len()), "{view}");
}

#[test]
fn a_database_restart_under_load_gives_503s_and_loses_no_acknowledged_command() {
    let server = pg::Server::start().expect("own server");
    let db = server.database().expect("database");
    let dir = tempfile::tempdir().expect("dir");
    let node = start(dir.path(), &db.url(), "node");
    node.deploy(&guests_dir()).expect("deploy");
    let ids: Vec<String> = (0..8).map(|i| format!("acc-{i}")).collect();
    let mut opener = Client::http(&node.http);
    for id in &ids {
        let opened = opener.send(
            "account",
            id,
            &json!({"open": {"owner": "ada"}}),
            &format!("open-{id}"),
        );
        assert!(matches!(opened, Outcome::Acked { .. }), "{opened:?}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Each client owns one entity and retries a command whose outcome it
    // does not know under the same id until it is acknowledged, as a user's
    // service would.
    let clients: Vec<_> = ids
        .iter()
        .map(|id| {
            let (stop, http, id) = (stop.clone(), node.http.clone(), id.clone());
            std::thread::spawn(move || {
                let mut client = Client::http(&http);
                let (mut acked, mut unavailable) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let command_id = format!("{id}-{acked}");
                    loop {
                        match deposit(&mut client, &id, &command_id) {
                            Outcome::Acked { .. } => break,
                            refused @ Outcome::Refused { .. } if refused.is_transient() => {
                                unavailable += 1
                            }
                            Outcome::Refused { code, message } => panic!("{code}: {message}"),
                            Outcome::Unreachable(_) => unavailable += 1,
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    acked += 1;
                }
                (id, acked, unavailable)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    server.stop().expect("stop postgres");
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ready(&node), 503, "not ready while the database is down");
    server.start_again().expect("start postgres");
    let back = wait_until("the node serves again", Duration::from_secs(15), || {
        ready(&node) == 200
    });
    eprintln!("ready {back:?} after the database came back");
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    let mut total_unavailable = 0;
    let mut acked_by_entity = BTreeMap::new();
    for client in clients {
        let (id, acked, unavailable) = client.join().expect("client");
        total_unavailable += unavailable;
        acked_by_entity.insert(id, acked);
    }
    assert!(total_unavailable > 0, "the outage was seen by the clients");
    let reader = Reader::new(&node.http);
    let mut sql = db.client().expect("client");
    for (id, acked) in &acked_by_entity {
        let view: Value = reader.view("account", id).expect("view");
        assert_eq!(view["balance"], json!(acked), "{id}: {view}");
        let (events, distinct): (i64, i64) = {
            let row = sql
                .query_one(
                    "SELECT count(*), count(DISTINCT command_id) FROM stead_events
                     WHERE entity_type = 'account' AND entity_id = $1",
                    &[id],
                )
                .expect("query");
            (row.get(0), row.get(1))
        };
        assert_eq!(
            events,
            i64::try_from(*acked).expect("count") + 1,
            "{id}: one event per command, the open included"
        );
        assert_eq!(distinct, events, "{id}: no command applied twice");
    }
}

#[test]
fn a_deploy_on_one_node_is_served_by_the_other_within_about_a_second() {
    let db = pg::database().expect("database");
    let dirs = [
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    ];
    let a = start(dirs[0].path(), &db.url(), "node-a");
    let b = start(dirs[1].path(), &db.url(), "node-b");
    a.deploy(&guests_dir()).expect("deploy on a");
    let deployed = Instant::now();
    let types = || {
        agent()
            .get(&format!("http://{}/v1/types", b.http))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
            .map(|v| v.to_string())
            .unwrap_or_default()
    };
    let took = wait_until("b loads the deploy", Duration::from_secs(3), || {
        types().contains("account") && types().contains("cart")
    });
    eprintln!("b loaded the deploy {took:?} after it was made on a");
    assert!(deployed.elapsed() < Duration::from_secs(3));
    // A node started later loads it from the database too.
    drop(a);
    let c_dir = tempfile::tempdir().expect("dir");
    let c = start(c_dir.path(), &db.url(), "node-c");
    assert!(
        agent()
            .get(&format!("http://{}/v1/types", c.http))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<Value>().ok())
            .is_some_and(|v| v.to_string().contains("account")),
        "a node started later serves the stored deploys"
    );
}

#[test]
fn a_lease_that_ran_out_is_not_served_from_memory_and_is_claimed_back_when_renewable() {
    let db = pg::database().expect("database");
    let dir = tempfile::tempdir().expect("dir");
    let clock = Arc::new(SettableClock::new());
    let mut config = test_config(dir.path());
    config.journal = JournalConfig::Postgres(PostgresOptions::new(db.url(), "node"));
    let node = Node::builder(config)
        .clock(clock.clone())
        .open()
        .expect("open");
    node.deploy(&guest("account")).expect("deploy");
    let send = |cmd: &str| node.send_blocking("account", "acc", cmd.as_bytes().to_vec(), None);
    send(r#"{"open":{"owner":"ada"}}"#).expect("open");
    send(r#"{"deposit":{"amount":5}}"#).expect("deposit");
    let shard = node.shard_of("account", "acc");
    let epoch = |sql: &mut postgres::Client| -> i64 {
        sql.query_one(
            "SELECT epoch FROM stead_leases WHERE shard = $1",
            &[&i64::from(shard)],
        )
        .expect("lease row")
        .get(0)
    };
    let mut sql = db.client().expect("client");
    let before = epoch(&mut sql);

    // As if the process had been paused past its lease: nothing is served
    // from memory, not even a read.
    clock.advance_mono_ms(10_000);
    assert_eq!(
        node.view_blocking("account", "acc"),
        Err(NodeError::LeaseLapsed(shard))
    );
    // The journal is reachable: the keeper claims the shard back (a new
    // epoch) and the entity is recovered from the journal.
    wait_until("the shard is served again", Duration::from_secs(5), || {
        node.view_blocking("account", "acc").is_ok()
    });
    let view: Value =
        serde_json::from_slice(&node.view_blocking("account", "acc").expect("view")).expect("json");
    assert_eq!(view["balance"], json!(5));
    assert!(epoch(&mut sql) > before, "claimed back under a new epoch");
    node.shutdown();
}
