//! The examples in `examples/` work against a real node: the curl script,
//! the Rust gRPC client, and the PostgreSQL projection kept from a
//! subscription.

mod support;

use support::{StartedNode, cli, guest_path};

fn node_with_account() -> (tempfile::TempDir, StartedNode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start(dir.path());
    let path = guest_path("account");
    let (ok, out, err) = cli(&[
        "--addr",
        &node.grpc_url(),
        "deploy",
        path.to_str().expect("path"),
    ]);
    assert!(ok, "{out}{err}");
    (dir, node)
}

#[test]
fn the_curl_example_runs_against_a_node() {
    let (_dir, node) = node_with_account();
    let out = std::process::Command::new("bash")
        .arg(support::root().join("examples/http-client.sh"))
        .arg(format!("http://{}", node.http))
        .env("ACCOUNT_ID", "curl-test")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        r#"open:            200 {"balance":0}"#,
        r#"deposit:         200 {"balance":100}"#,
        r#"deposit (retry): 200 {"balance":100}"#,
        r#"withdraw 500:    409 {"error":{"code":"rejected""#,
        r#"view:            {"owner":"curl","balance":100,"status":"open"}"#,
        r#""command_id":"dep-1""#,
        r#"types:           {"types":[{"#,
        r#""name":"account""#,
    ] {
        assert!(
            stdout.contains(expected),
            "{expected} missing from:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_grpc_client_example_runs_against_a_node() {
    let (_dir, node) = node_with_account();
    let summary = grpc_client::run(&node.grpc_url(), "grpc-test")
        .await
        .expect("the example runs");
    assert_eq!(summary.balance, 40);
    assert!(summary.retry_was_duplicate);
    assert!(
        summary.overdraft_error.starts_with("FailedPrecondition"),
        "{}",
        summary.overdraft_error
    );
    assert_eq!(
        summary.events,
        vec![
            r#"{"opened":{"owner":"grpc"}}"#,
            r#"{"deposited":{"amount":40}}"#
        ]
    );
}

#[test]
fn the_projection_example_keeps_balances_per_owner_and_resumes_from_its_stored_cursor() {
    let (_dir, node) = node_with_account();
    let db = stead_postgres_testing::database().expect("database");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let http = support::http();
    let send = |id: &str, body: &str| {
        let response = http
            .post(node.url(&format!("/v1/entities/account/{id}")))
            .header("content-type", "application/json")
            .send(body)
            .expect("request");
        assert_eq!(response.status().as_u16(), 200, "{id}: {body}");
    };
    // ann: two accounts, bo: one; 3 opens + 4 deposits + 1 withdrawal.
    for (id, owner) in [("p1", "ann"), ("p2", "ann"), ("p3", "bo")] {
        send(id, &format!(r#"{{"open":{{"owner":"{owner}"}}}}"#));
        send(id, r#"{"deposit":{"amount":100}}"#);
    }
    send("p1", r#"{"withdraw":{"amount":30}}"#);
    send("p3", r#"{"deposit":{"amount":5}}"#);
    let first = rt
        .block_on(projection::run(&node.grpc_url(), &db.url(), Some(8)))
        .expect("the projection runs");
    assert_eq!(first.applied, 8);
    // More commands while it is stopped; the next run resumes after the 8th.
    send("p2", r#"{"deposit":{"amount":1}}"#);
    let second = rt
        .block_on(projection::run(&node.grpc_url(), &db.url(), Some(1)))
        .expect("the projection resumes");
    assert_eq!(second.applied, 1, "the new event");
    assert_ne!(first.cursor, second.cursor);
    let mut client = db.client().expect("client");
    let owners: Vec<(String, i64, i64)> = client
        .query(
            "SELECT owner, balance, accounts FROM projection_owners ORDER BY owner",
            &[],
        )
        .expect("query")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        owners,
        vec![("ann".to_owned(), 171, 2), ("bo".to_owned(), 105, 1)],
        "every event applied once across the two runs"
    );
}
