//! The examples in `examples/` work against a real node: the curl script and
//! the Rust gRPC client.

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
