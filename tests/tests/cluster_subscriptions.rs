//! Subscriptions across a cluster of real `stead up` processes on
//! PostgreSQL: a subscriber on one node sees the events of every shard,
//! whichever node holds it; when that node is killed (SIGKILL), the cursor
//! it handed out resumes on another node with the next event: nothing
//! skipped, nothing twice.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stead_postgres_testing as pg;
use stead_tests::chaos::client::{Client, Outcome, Reader};
use stead_tests::cluster::LocalCluster;
use stead_tests::{guests_dir, stead_binary};

const ACCOUNTS: usize = 30;

fn send_ok(http: &str, id: &str, payload: &Value, key: &str) {
    let started = Instant::now();
    loop {
        match Client::http(http).send("account", id, payload, key) {
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

/// Reads `n` events of `/v1/streams/account` from `http`; returns
/// (entity id, seq-nr) of each and the cursor that ended the last page.
fn sse(http: &str, cursor: Option<&str>, n: usize) -> (Vec<(String, u64)>, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let mut request = agent.get(format!("http://{http}/v1/streams/account"));
    if let Some(cursor) = cursor {
        request = request.query("cursor", cursor);
    }
    let response = request.call().expect("stream");
    let mut lines = BufReader::new(response.into_body().into_reader()).lines();
    let (mut events, mut last_id) = (Vec::new(), None);
    while events.len() < n {
        let line = lines.next().expect("the stream goes on").expect("line");
        if let Some(data) = line.strip_prefix("data: ") {
            let e: Value = serde_json::from_str(data).expect("JSON data");
            events.push((
                e["entity_id"].as_str().expect("id").to_owned(),
                e["seq_nr"].as_u64().expect("seq_nr"),
            ));
        } else if let Some(id) = line.strip_prefix("id: ") {
            last_id = Some(id.to_owned());
        }
    }
    // The id that ends a page follows its last data line.
    if let Some(Ok(line)) = lines.next()
        && let Some(id) = line.strip_prefix("id: ")
    {
        last_id = Some(id.to_owned());
    }
    (events, last_id)
}

#[test]
fn a_cursor_from_a_killed_node_resumes_on_another_with_every_event_once() {
    let db = pg::database().expect("database");
    let mut cluster = LocalCluster::new(&stead_binary(), &db.url(), 3, &[]).expect("slots");
    cluster.start_all().expect("start");
    cluster
        .wait_settled(Duration::from_secs(30))
        .expect("the cluster settles");
    let first = cluster.node(0).expect("node 1");
    let out = Command::new(stead_binary())
        .args(["deploy", "--addr", &format!("http://{}", first.grpc)])
        .arg(guests_dir().join("account.wasm"))
        .output()
        .expect("stead deploy");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let https: Vec<String> = (0..3)
        .map(|i| cluster.node(i).expect("running").http.clone())
        .collect();
    let started = Instant::now();
    for http in &https {
        while !Reader::new(http)
            .get_json("/v1/types")
            .is_ok_and(|t| t.to_string().contains("\"account\""))
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the deploy did not reach {http}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Written through every node, so every node holds some of the shards.
    for i in 0..ACCOUNTS {
        let id = format!("acc-{i}");
        let entry = &https[i % 3];
        send_ok(
            entry,
            &id,
            &json!({"open": {"owner": "ann"}}),
            &format!("open-{id}"),
        );
        send_ok(
            entry,
            &id,
            &json!({"deposit": {"amount": 5}}),
            &format!("a-{id}"),
        );
    }

    // Node 2 streams every shard's events, then dies.
    let (seen, cursor) = sse(&https[1], None, 2 * ACCOUNTS);
    let cursor = cursor.expect("the page's last event carries the cursor");
    cluster.kill(1);
    for i in 0..ACCOUNTS {
        let id = format!("acc-{i}");
        send_ok(
            &https[0],
            &id,
            &json!({"deposit": {"amount": 7}}),
            &format!("b-{id}"),
        );
    }
    // Node 3 resumes from node 2's cursor.
    let (rest, _) = sse(&https[2], Some(&cursor), ACCOUNTS);

    let expected_first: BTreeSet<(String, u64)> = (0..ACCOUNTS)
        .flat_map(|i| [(format!("acc-{i}"), 1), (format!("acc-{i}"), 2)])
        .collect();
    assert_eq!(seen.len(), 2 * ACCOUNTS);
    assert_eq!(
        seen.iter().cloned().collect::<BTreeSet<_>>(),
        expected_first,
        "every shard's events, each once"
    );
    let expected_rest: BTreeSet<(String, u64)> =
        (0..ACCOUNTS).map(|i| (format!("acc-{i}"), 3)).collect();
    assert_eq!(rest.len(), ACCOUNTS);
    assert_eq!(
        rest.iter().cloned().collect::<BTreeSet<_>>(),
        expected_rest,
        "only the events after the cursor, each once"
    );
}
