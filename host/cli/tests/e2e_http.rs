//! The `stead` binary as a process, over real HTTP: every route, every error
//! status, the `Idempotency-Key` dedup, metrics, and a SIGKILL under
//! concurrent load with idempotency keys.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{StartedNode, cli, guest_path, http};

fn body_json(mut response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().expect("body");
    let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, value)
}

fn post(
    node: &StartedNode,
    path: &str,
    body: &str,
    key: Option<&str>,
) -> ureq::http::Response<ureq::Body> {
    let mut request = http()
        .post(node.url(path))
        .header("content-type", "application/json");
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send(body).expect("request")
}

fn deploy(node: &StartedNode, guest: &str) {
    let path = guest_path(guest);
    let (ok, out, err) = cli(&[
        "--addr",
        &node.grpc_url(),
        "deploy",
        path.to_str().expect("path"),
    ]);
    assert!(ok, "deploy failed: {out}{err}");
}

#[test]
fn every_http_route_and_error_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start(dir.path());
    let agent = http();
    assert_eq!(
        agent
            .get(node.url("/healthz"))
            .call()
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        agent
            .get(node.url("/readyz"))
            .call()
            .expect("readyz")
            .status(),
        200
    );
    deploy(&node, "account");
    deploy(&node, "hostile_trap");

    // Commands, replies and sequence numbers.
    let response = post(
        &node,
        "/v1/entities/account/acc-1",
        r#"{"open":{"owner":"ada"}}"#,
        None,
    );
    assert_eq!(response.headers()["stead-seq-nr"], "1");
    assert_eq!(body_json(response), (200, json!({"balance": 0})));
    let (status, reply) = body_json(post(
        &node,
        "/v1/entities/account/acc-1",
        r#"{"deposit":{"amount":100}}"#,
        None,
    ));
    assert_eq!((status, reply), (200, json!({"balance": 100})));

    // Idempotency-Key: the retry gets the original reply and persists nothing.
    let first = post(
        &node,
        "/v1/entities/account/acc-1",
        r#"{"withdraw":{"amount":30}}"#,
        Some("w-1"),
    );
    assert_eq!(first.headers()["stead-duplicate"], "false");
    assert_eq!(body_json(first), (200, json!({"balance": 70})));
    let retry = post(
        &node,
        "/v1/entities/account/acc-1",
        r#"{"withdraw":{"amount":30}}"#,
        Some("w-1"),
    );
    assert_eq!(retry.headers()["stead-duplicate"], "true");
    assert_eq!(retry.headers()["stead-seq-nr"], "3");
    assert_eq!(body_json(retry), (200, json!({"balance": 70})));

    // View, events, types.
    let (status, view) = body_json(
        agent
            .get(node.url("/v1/entities/account/acc-1"))
            .call()
            .expect("get"),
    );
    assert_eq!(
        (status, view),
        (
            200,
            json!({"owner": "ada", "balance": 70, "status": "open"})
        )
    );
    let (status, events) = body_json(
        agent
            .get(node.url("/v1/entities/account/acc-1/events?from=2"))
            .call()
            .expect("events"),
    );
    assert_eq!(status, 200);
    let events = events["events"].as_array().expect("array").clone();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0]["seq_nr"], 2);
    assert_eq!(events[0]["event"], json!({"deposited": {"amount": 100}}));
    assert_eq!(events[1]["command_id"], "w-1");
    let (_, types) = body_json(agent.get(node.url("/v1/types")).call().expect("types"));
    let names: Vec<&str> = types["types"]
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, vec!["account", "hostile-trap"]);

    // Each error case with its status and code.
    let cases = [
        ("/v1/entities/nope/x", "{}", 404, "unknown_type"),
        (
            "/v1/entities/account/acc-1",
            r#"{"withdraw":{"amount":1000}}"#,
            409,
            "rejected",
        ),
        (
            "/v1/entities/account/acc-1",
            r#"{"fly":{}}"#,
            400,
            "invalid_command",
        ),
        (
            "/v1/entities/account/acc-1",
            "not json",
            400,
            "invalid_command",
        ),
        (
            "/v1/entities/hostile-trap/t",
            r#"{"boom":{}}"#,
            500,
            "guest_fault",
        ),
    ];
    for (path, body, want_status, want_code) in cases {
        let (status, error) = body_json(post(&node, path, body, None));
        assert_eq!(status, want_status, "{path} {body}: {error}");
        assert_eq!(error["error"]["code"], want_code, "{path} {body}: {error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let long_id = format!("/v1/entities/account/{}", "x".repeat(300));
    let (status, error) = body_json(post(&node, &long_id, "{}", None));
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_id"))
    );
    let (status, error) = body_json(
        agent
            .get(node.url("/v1/entities/nope/x"))
            .call()
            .expect("get"),
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("unknown_type"))
    );
    let (status, _) = body_json(agent.get(node.url("/v2/whatever")).call().expect("get"));
    assert_eq!(status, 404);

    // Metrics count what happened.
    let text = agent
        .get(node.url("/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    for needle in [
        r#"stead_commands_total{entity_type="account",outcome="ok"}"#,
        r#"stead_commands_total{entity_type="account",outcome="rejected"} 1"#,
        r#"stead_guest_faults_total{entity_type="hostile-trap"} 1"#,
        "stead_command_duration_seconds_bucket",
        "stead_journal_flush_duration_seconds_count",
        "stead_journal_batch_entities_bucket",
        "stead_active_entities",
        "stead_activations_total",
        "stead_passivations_total",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    let status = node.terminate();
    assert!(status.success(), "clean shutdown on SIGTERM: {status}");
}

#[test]
fn overload_is_503_with_retry_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start_with(
        dir.path(),
        &[
            "--workers",
            "1",
            "--queue-depth",
            "2",
            "--call-deadline-ms",
            "200",
        ],
    );
    deploy(&node, "hostile_loop");
    // One worker with a queue of 2, busy 200 ms per spinning command: eight
    // concurrent clients must overflow it.
    let node = Arc::new(node);
    let statuses = Arc::new(Mutex::new(HashMap::<u16, usize>::new()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let node = node.clone();
            let statuses = statuses.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                while started.elapsed() < Duration::from_secs(2) {
                    let response = post(
                        &node,
                        &format!("/v1/entities/hostile-loop/e{t}"),
                        r#"{"spin":{}}"#,
                        None,
                    );
                    let status = response.status().as_u16();
                    if status == 503 {
                        assert_eq!(response.headers()["retry-after"], "1");
                        let (_, error) = body_json(response);
                        assert_eq!(error["error"]["code"], "overloaded");
                    }
                    *statuses.lock().expect("lock").entry(status).or_default() += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    let statuses = statuses.lock().expect("lock").clone();
    // Spinning commands that ran are guest faults (500); the overflow is 503.
    assert!(
        statuses.keys().all(|s| *s == 500 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.get(&500).copied().unwrap_or(0) > 0, "{statuses:?}");
    assert!(statuses.get(&503).copied().unwrap_or(0) > 0, "{statuses:?}");
}

#[test]
fn sigkill_under_http_load_loses_no_acknowledged_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start(dir.path());
    deploy(&node, "account");
    const ACCOUNTS: usize = 20;
    for a in 0..ACCOUNTS {
        let (status, _) = body_json(post(
            &node,
            &format!("/v1/entities/account/a{a}"),
            r#"{"open":{"owner":"load"}}"#,
            None,
        ));
        assert_eq!(status, 200);
    }
    let pid = node.child.id().to_string();
    let node = Arc::new(node);
    let acked = Arc::new(Mutex::new(Vec::<(usize, String, u64)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let (node, acked, stop) = (node.clone(), acked.clone(), stop.clone());
            std::thread::spawn(move || {
                let agent = http();
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let account = (t * 3 + n) % ACCOUNTS;
                    let amount = (n % 5 + 1) as u64;
                    let key = format!("t{t}-n{n}");
                    let result = agent
                        .post(node.url(&format!("/v1/entities/account/a{account}")))
                        .header("Idempotency-Key", &key)
                        .send(format!(r#"{{"deposit":{{"amount":{amount}}}}}"#).as_str());
                    match result {
                        Ok(response) if response.status() == 200 => {
                            acked.lock().expect("lock").push((account, key, amount));
                        }
                        _ => return, // the node died
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in threads {
        t.join().expect("thread");
    }
    drop(node); // reaps the killed process
    let acked = acked.lock().expect("lock").clone();
    assert!(
        acked.len() > 50,
        "only {} commands acknowledged before the kill",
        acked.len()
    );

    let node = StartedNode::start(dir.path());
    let agent = http();
    let mut expected_min = [0u64; ACCOUNTS];
    for (account, _, amount) in &acked {
        expected_min[*account] += amount;
    }
    for (a, min) in expected_min.iter().enumerate() {
        let (_, view) = body_json(
            agent
                .get(node.url(&format!("/v1/entities/account/a{a}")))
                .call()
                .expect("view"),
        );
        let (_, events) = body_json(
            agent
                .get(node.url(&format!("/v1/entities/account/a{a}/events")))
                .call()
                .expect("events"),
        );
        let deposited: u64 = events["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["event"]["deposited"]["amount"].as_u64())
            .sum();
        let balance = view["balance"].as_u64().expect("balance");
        assert_eq!(
            balance, deposited,
            "a{a}: the view is the fold of the events"
        );
        assert!(
            balance >= *min,
            "a{a}: balance {balance} < acknowledged deposits {min}"
        );
    }
    // A sample of acknowledged keys: retried with their command, they are
    // duplicates (with another command they would be refused: 422).
    for (account, key, amount) in acked.iter().rev().take(20) {
        let response = post(
            &node,
            &format!("/v1/entities/account/a{account}"),
            &format!(r#"{{"deposit":{{"amount":{amount}}}}}"#),
            Some(key),
        );
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["stead-duplicate"], "true", "{key}");
    }
}

#[test]
fn limit_flags_bound_commands_and_ids_with_precise_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start_with(
        dir.path(),
        &[
            "--max-command-bytes",
            "64",
            "--max-entity-id-bytes",
            "8",
            "--request-timeout-ms",
            "5000",
            "--max-activations-per-batch",
            "4",
        ],
    );
    deploy(&node, "account");
    let (status, body) = body_json(post(
        &node,
        "/v1/entities/account/a1",
        &format!(r#"{{"open":{{"owner":"{}"}}}}"#, "x".repeat(80)),
        None,
    ));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_command")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeds the limit of 64 bytes")),
        "{body}"
    );
    let (status, body) = body_json(post(
        &node,
        "/v1/entities/account/much-too-long",
        r#"{"open":{"owner":"ada"}}"#,
        None,
    ));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_id")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("exceeds the limit of 8")),
        "{body}"
    );
    // Within the limits everything works, and nothing refused was persisted.
    let (status, body) = body_json(post(
        &node,
        "/v1/entities/account/a1",
        r#"{"open":{"owner":"ada"}}"#,
        None,
    ));
    assert_eq!(status, 200, "{body}");
    let events = http()
        .get(node.url("/v1/entities/account/a1/events?limit=1000000000"))
        .call()
        .expect("events");
    let (status, body) = body_json(events);
    assert_eq!(status, 200);
    assert_eq!(body["events"].as_array().map(Vec::len), Some(1), "{body}");
}

#[test]
fn an_idempotency_key_holds_past_the_window_and_a_sigkill_and_a_reused_key_is_422() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start(dir.path());
    deploy(&node, "account");
    let path = "/v1/entities/account/keyed";
    let deposit = r#"{"deposit":{"amount":1000}}"#;
    assert_eq!(
        body_json(post(&node, path, r#"{"open":{"owner":"ada"}}"#, None)).0,
        200
    );
    let first = post(&node, path, deposit, Some("dep-1000"));
    let seq = first.headers()["stead-seq-nr"]
        .to_str()
        .expect("seq")
        .to_owned();
    assert_eq!(body_json(first), (200, json!({"balance": 1000})));
    // Far more commands than the in-memory window (64) holds.
    for _ in 0..100 {
        let (status, _) = body_json(post(&node, path, r#"{"deposit":{"amount":1}}"#, None));
        assert_eq!(status, 200);
    }
    let retry = post(&node, path, deposit, Some("dep-1000"));
    assert_eq!(retry.headers()["stead-duplicate"], "true");
    assert_eq!(retry.headers()["stead-seq-nr"], seq.as_str());
    assert_eq!(body_json(retry), (200, json!({"balance": 1000})));

    let (status, error) = body_json(post(
        &node,
        path,
        r#"{"withdraw":{"amount":1}}"#,
        Some("dep-1000"),
    ));
    assert_eq!(status, 422);
    assert_eq!(error["error"]["code"], "idempotency_key_reused");

    node.kill();
    let node = StartedNode::start(dir.path());
    let retry = post(&node, path, deposit, Some("dep-1000"));
    assert_eq!(retry.headers()["stead-duplicate"], "true");
    assert_eq!(body_json(retry), (200, json!({"balance": 1000})));
    let (_, view) = body_json(http().get(node.url(path)).call().expect("get"));
    assert_eq!(view["balance"], 1100, "the deposit was applied once");
}
