//! Subscriptions of the `stead` binary as a process: server-sent events
//! over real HTTP resumed from their `id:` after a SIGKILL and restart, the
//! CLI's `stead subscribe` (gRPC `Subscribe`) stopped and resumed from the
//! cursor it printed, each seeing every event once; precise errors.

mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};

use serde_json::Value;
use support::{StartedNode, cli, guest_path, http};

const ACCOUNTS: usize = 5;

fn deploy_account(node: &StartedNode) {
    let path = guest_path("account");
    let (ok, out, err) = cli(&[
        "--addr",
        &node.grpc_url(),
        "deploy",
        path.to_str().expect("path"),
    ]);
    assert!(ok, "deploy failed: {out}{err}");
}

fn post(node: &StartedNode, id: &str, body: &str) {
    let response = http()
        .post(node.url(&format!("/v1/entities/account/{id}")))
        .header("content-type", "application/json")
        .send(body)
        .expect("request");
    assert_eq!(response.status().as_u16(), 200, "{id}: {body}");
}

/// Reads `n` SSE events from `/v1/streams/account?cursor=`; returns their
/// data and the last `id:` seen.
fn sse(node: &StartedNode, cursor: Option<&str>, n: usize) -> (Vec<Value>, Option<String>) {
    let mut request = http().get(node.url("/v1/streams/account"));
    if let Some(cursor) = cursor {
        request = request.query("cursor", cursor);
    }
    let response = request.call().expect("stream");
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"))
    );
    let mut lines = BufReader::new(response.into_body().into_reader()).lines();
    let (mut events, mut last_id) = (Vec::new(), None);
    while events.len() < n {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("the stream ended after {} events", events.len()))
            .expect("line");
        if let Some(data) = line.strip_prefix("data: ") {
            events.push(serde_json::from_str(data).expect("JSON data"));
        } else if let Some(id) = line.strip_prefix("id: ") {
            last_id = Some(id.to_owned());
        }
    }
    // The id that ends the page comes after its data line.
    if let Some(Ok(line)) = lines.next()
        && let Some(id) = line.strip_prefix("id: ")
    {
        last_id = Some(id.to_owned());
    }
    (events, last_id)
}

fn keys(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .map(|e| {
            (
                e["entity_id"].as_str().expect("id").to_owned(),
                e["seq_nr"].as_u64().expect("seq_nr"),
            )
        })
        .collect()
}

#[test]
fn server_sent_events_resume_from_their_id_after_a_sigkill_and_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start(dir.path());
    deploy_account(&node);
    for i in 0..ACCOUNTS {
        post(&node, &format!("a{i}"), r#"{"open":{"owner":"ann"}}"#);
        post(&node, &format!("a{i}"), r#"{"deposit":{"amount":5}}"#);
    }
    let (first, id) = sse(&node, None, 2 * ACCOUNTS);
    let id = id.expect("the page's last event carries the cursor");
    assert!(id.starts_with("v1."), "{id}");
    assert_eq!(first[0]["event"]["opened"]["owner"], "ann", "{first:?}");
    node.kill();

    let node = StartedNode::start(dir.path());
    for i in 0..ACCOUNTS {
        post(&node, &format!("a{i}"), r#"{"deposit":{"amount":7}}"#);
    }
    let (rest, _) = sse(&node, Some(&id), ACCOUNTS);
    let mut expected: Vec<(String, u64)> = (0..ACCOUNTS).map(|i| (format!("a{i}"), 3)).collect();
    let mut got = keys(&rest);
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "only the events after the cursor");
    assert!(rest.iter().all(|e| e["event"]["deposited"]["amount"] == 7));

    // Precise errors before the stream starts.
    let unknown = http()
        .get(node.url("/v1/streams/nope"))
        .call()
        .expect("request");
    assert_eq!(unknown.status().as_u16(), 404);
    let bad = http()
        .get(node.url("/v1/streams/account"))
        .query("cursor", "17")
        .call()
        .expect("request");
    assert_eq!(bad.status().as_u16(), 400);
}

#[test]
fn stead_subscribe_stops_prints_its_cursor_and_resumes_exactly_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start(dir.path());
    deploy_account(&node);
    for i in 0..ACCOUNTS {
        post(&node, &format!("b{i}"), r#"{"open":{"owner":"bo"}}"#);
        for _ in 0..3 {
            post(&node, &format!("b{i}"), r#"{"deposit":{"amount":1}}"#);
        }
    }
    let addr = node.grpc_url();
    let subscribe = |extra: &[&str]| {
        let mut args = vec!["--addr", &addr, "--json", "subscribe", "account"];
        args.extend_from_slice(extra);
        let (ok, out, err) = cli(&args);
        assert!(ok, "{out}{err}");
        let events: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect();
        let cursor = err
            .lines()
            .find_map(|l| l.strip_prefix("cursor: "))
            .expect("the cursor on stderr")
            .to_owned();
        (events, cursor)
    };
    let (first, cursor) = subscribe(&["--count", "7"]);
    assert_eq!(first.len(), 7);
    let (rest, _) = subscribe(&["--cursor", &cursor, "--count", "13"]);
    let mut all = keys(&first);
    all.extend(keys(&rest));
    let distinct: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), 20);
    assert_eq!(distinct.len(), 20, "no event twice: {all:?}");
    for i in 0..ACCOUNTS {
        let seqs: Vec<u64> = all
            .iter()
            .filter(|(id, _)| *id == format!("b{i}"))
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(seqs, vec![1, 2, 3, 4], "b{i} in seq-nr order");
    }
    let (ok, _, err) = cli(&["--addr", &addr, "subscribe", "nope", "--count", "1"]);
    assert!(!ok && err.contains("nope"), "{err}");
}
