//! The `stead` binary as a process, over real gRPC: every method, each error
//! code, health and reflection; and the CLI's output and exit codes.

mod support;

use serde_json::{Value, json};
use stead_api::proto::admin_client::AdminClient;
use stead_api::proto::entities_client::EntitiesClient;
use stead_api::proto::{
    DeployRequest, GetRequest, ListTypesRequest, NodeInfoRequest, SendRequest, StreamEventsRequest,
};
use support::{StartedNode, cli, guest_path};
use tonic::Code;

fn send_req(ty: &str, id: &str, json: &str, command_id: &str) -> SendRequest {
    SendRequest {
        entity_type: ty.into(),
        entity_id: id.into(),
        command_json: json.into(),
        command_id: command_id.into(),
    }
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grpc_method_and_error_code() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start(dir.path());
    let mut admin = AdminClient::connect(node.grpc_url())
        .await
        .expect("connect");
    let mut entities = EntitiesClient::connect(node.grpc_url())
        .await
        .expect("connect");

    // Deploy: valid, then invalid bytes refused with INVALID_ARGUMENT.
    for guest in ["account", "hostile_trap"] {
        let component = std::fs::read(guest_path(guest)).expect("component");
        let deployed = admin
            .deploy(DeployRequest { component })
            .await
            .expect("deploy")
            .into_inner();
        assert!(deployed.entity_type.is_some_and(|t| t.sha256.len() == 64));
    }
    let refused = admin
        .deploy(DeployRequest {
            component: b"not wasm at all".to_vec(),
        })
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("not a WebAssembly binary"),
        "{}",
        refused.message()
    );
    let types = admin
        .list_types(ListTypesRequest {})
        .await
        .expect("types")
        .into_inner()
        .types;
    let names: Vec<_> = types.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, vec!["account", "hostile-trap"]);

    // Send, dedup by command id, get, stream events.
    let r = entities
        .send(send_req(
            "account",
            "g-1",
            r#"{"open":{"owner":"grace"}}"#,
            "",
        ))
        .await
        .expect("open")
        .into_inner();
    assert_eq!(
        (parse(&r.reply_json), r.seq_nr, r.duplicate),
        (json!({"balance": 0}), 1, false)
    );
    let r = entities
        .send(send_req(
            "account",
            "g-1",
            r#"{"deposit":{"amount":5}}"#,
            "d-1",
        ))
        .await
        .expect("dep")
        .into_inner();
    assert_eq!((r.seq_nr, r.duplicate), (2, false));
    let r = entities
        .send(send_req(
            "account",
            "g-1",
            r#"{"deposit":{"amount":5}}"#,
            "d-1",
        ))
        .await
        .expect("dup")
        .into_inner();
    assert_eq!(
        (parse(&r.reply_json), r.seq_nr, r.duplicate),
        (json!({"balance": 5}), 2, true)
    );
    let view = entities
        .get(GetRequest {
            entity_type: "account".into(),
            entity_id: "g-1".into(),
        })
        .await
        .expect("get");
    assert_eq!(
        parse(&view.into_inner().view_json),
        json!({"owner": "grace", "balance": 5, "status": "open"})
    );
    let mut stream = entities
        .stream_events(StreamEventsRequest {
            entity_type: "account".into(),
            entity_id: "g-1".into(),
            from_seq_nr: 1,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await.expect("event") {
        events.push((event.seq_nr, parse(&event.event_json), event.command_id));
    }
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1],
        (2, json!({"deposited": {"amount": 5}}), "d-1".to_string())
    );

    // A long history streams in pages.
    for _ in 0..300 {
        entities
            .send(send_req(
                "account",
                "g-1",
                r#"{"deposit":{"amount":1}}"#,
                "",
            ))
            .await
            .expect("dep");
    }
    let mut stream = entities
        .stream_events(StreamEventsRequest {
            entity_type: "account".into(),
            entity_id: "g-1".into(),
            from_seq_nr: 10,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut seqs = Vec::new();
    while let Some(event) = stream.message().await.expect("event") {
        seqs.push(event.seq_nr);
    }
    assert_eq!(seqs, (10..=302).collect::<Vec<u64>>());

    // Errors and their codes (plus the `stead-error` metadata).
    let cases = [
        (
            send_req("nope", "x", "{}", ""),
            Code::NotFound,
            "unknown_type",
        ),
        (
            send_req("account", "", "{}", ""),
            Code::InvalidArgument,
            "invalid_id",
        ),
        (
            send_req("account", "g-1", r#"{"fly":{}}"#, ""),
            Code::InvalidArgument,
            "invalid_command",
        ),
        (
            send_req("account", "g-1", r#"{"withdraw":{"amount":9999}}"#, ""),
            Code::FailedPrecondition,
            "rejected",
        ),
        (
            send_req("hostile-trap", "t", r#"{"boom":{}}"#, ""),
            Code::Internal,
            "guest_fault",
        ),
    ];
    for (request, code, stead_error) in cases {
        let status = entities.send(request).await.expect_err("error");
        assert_eq!(status.code(), code, "{}", status.message());
        assert_eq!(
            status
                .metadata()
                .get("stead-error")
                .and_then(|v| v.to_str().ok()),
            Some(stead_error)
        );
    }
    let status = entities
        .get(GetRequest {
            entity_type: "nope".into(),
            entity_id: "x".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);

    let info = admin
        .node_info(NodeInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!((info.shard_count, info.workers), (16, 2));
    assert_eq!(info.shards_held, 16, "a single node holds every shard");
    assert!(
        info.journal.starts_with("sled (embedded) at ") && info.journal.ends_with("journal"),
        "{}",
        info.journal
    );
    assert!(info.active_entities >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_services_and_health_says_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start(dir.path());
    let channel = tonic::transport::Endpoint::from_shared(node.grpc_url())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "stead.v1.Entities", "stead.v1.Admin"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection")
        .into_inner();
    let response = responses
        .message()
        .await
        .expect("message")
        .expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "stead.v1.Entities",
        "stead.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
}

#[test]
fn the_cli_talks_to_a_node_and_fails_with_one_line_reasons() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = StartedNode::start(dir.path());
    let addr = node.grpc_url();
    let account = guest_path("account");
    let run = |args: &[&str]| {
        let mut all = vec!["--addr", addr.as_str()];
        all.extend_from_slice(args);
        cli(&all)
    };

    let (ok, out, _) = run(&["deploy", account.to_str().expect("path")]);
    assert!(ok && out.starts_with("deployed account 0.1.0"), "{out}");
    assert!(
        out.contains("contract 0.2.0"),
        "the contract it speaks: {out}"
    );
    let (ok, out, _) = run(&["send", "account", "c-1", r#"{"open":{"owner":"ada"}}"#]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), r#"{"balance":0}  (seq-nr 1)"#);
    let (ok, out, _) = run(&[
        "--json",
        "send",
        "account",
        "c-1",
        r#"{"deposit":{"amount":100}}"#,
        "--id",
        "k1",
    ]);
    assert!(ok);
    assert_eq!(
        parse(&out),
        json!({"reply": {"balance": 100}, "seq_nr": 2, "duplicate": false})
    );
    let (ok, out, _) = run(&[
        "send",
        "account",
        "c-1",
        r#"{"deposit":{"amount":100}}"#,
        "--id",
        "k1",
    ]);
    assert!(ok && out.contains("duplicate: original reply"), "{out}");
    let (ok, out, _) = run(&["--json", "get", "account", "c-1"]);
    assert!(ok);
    assert_eq!(
        parse(&out),
        json!({"owner": "ada", "balance": 100, "status": "open"})
    );
    let (ok, out, _) = run(&["events", "account", "c-1", "--from", "2"]);
    assert!(ok);
    assert_eq!(out.trim(), r#"2  {"deposited":{"amount":100}}"#);
    let (ok, out, _) = run(&["types"]);
    assert!(
        ok && out.lines().nth(1).is_some_and(|l| l.starts_with("account")),
        "{out}"
    );
    let (ok, out, _) = run(&["--json", "types"]);
    assert!(ok && parse(&out)[0]["name"] == "account");

    // Errors: non-zero exit, one line on stderr naming the reason.
    for (args, reason) in [
        (
            vec!["send", "account", "c-1", r#"{"withdraw":{"amount":1000}}"#],
            "rejected: insufficient funds",
        ),
        (
            vec!["send", "nope", "x", "{}"],
            "unknown entity type `nope`",
        ),
        (vec!["send", "account", "c-1", "{"], "invalid command"),
        (vec!["get", "nope", "x"], "unknown entity type"),
        (
            vec!["deploy", "/nonexistent.wasm"],
            "reading /nonexistent.wasm",
        ),
    ] {
        let (ok, out, err) = run(&args);
        assert!(!ok, "{args:?} succeeded: {out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with("stead: error: ") && err.contains(reason),
            "{args:?}: {err}"
        );
    }
    drop(node);
    let (ok, _, err) = cli(&["--addr", "http://127.0.0.1:1", "types"]);
    assert!(!ok);
    assert!(
        err.contains("node unreachable at http://127.0.0.1:1"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn stead_build_builds_a_guest_crate_and_prints_the_component() {
    let out_dir = tempfile::tempdir().expect("tempdir");
    let guest = support::root().join("guests/account");
    let (ok, out, err) = cli(&[
        "build",
        guest.to_str().expect("path"),
        "--out",
        out_dir.path().to_str().expect("path"),
        "--target-dir",
        support::root()
            .join("target/wasm-build")
            .to_str()
            .expect("path"),
        "--json",
    ]);
    assert!(ok, "{err}");
    let built = parse(out.lines().next().expect("a line"));
    assert_eq!(built["name"], "account");
    let path = std::path::PathBuf::from(built["path"].as_str().expect("path"));
    assert_eq!(path, out_dir.path().join("account.wasm"));
    stead_component::validate(&std::fs::read(&path).expect("file")).expect("a valid component");
    let (ok, _, err) = cli(&["build", "/nonexistent-crate"]);
    assert!(!ok && err.contains("does not exist"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_resource_exhausted_over_grpc() {
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
    let mut admin = AdminClient::connect(node.grpc_url())
        .await
        .expect("connect");
    let component = std::fs::read(guest_path("hostile_loop")).expect("component");
    admin
        .deploy(DeployRequest { component })
        .await
        .expect("deploy");
    let client = EntitiesClient::connect(node.grpc_url())
        .await
        .expect("connect");
    let calls = (0..12).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move {
            client
                .send(send_req(
                    "hostile-loop",
                    &format!("e{i}"),
                    r#"{"spin":{}}"#,
                    "",
                ))
                .await
                .expect_err("no spin succeeds")
        })
    });
    let mut codes = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        let status = call.await.expect("task");
        if status.code() == Code::ResourceExhausted {
            assert_eq!(
                status
                    .metadata()
                    .get("stead-error")
                    .and_then(|v| v.to_str().ok()),
                Some("overloaded")
            );
        }
        codes.push(status.code());
    }
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    assert!(codes.contains(&Code::Internal), "{codes:?}");
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Code::ResourceExhausted | Code::Internal)),
        "{codes:?}"
    );
}

#[test]
fn logs_are_json_lines_with_the_flag() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stead"))
        .args([
            "up",
            "--grpc",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--shards",
            "4",
            "--log-format",
            "json",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .env("STEAD_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("stead starts");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut ready)
        .expect("ready");
    assert!(ready.starts_with("stead ready: "), "{ready}");
    let _ = child.kill();
    let out = child.wait_with_output().expect("output");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert!(!lines.is_empty(), "no log lines");
    for line in lines {
        let value: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            value.get("level").is_some() && value.get("fields").is_some(),
            "{line}"
        );
    }
}
