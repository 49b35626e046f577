//! The `stead` binary as a process: the admin token (gRPC `Admin` and HTTP
//! `POST /v1/components` need it, entity calls do not; no token, no listening
//! beyond loopback) and TLS on both servers with a certificate made at run
//! time.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use stead_api::proto::admin_client::AdminClient;
use stead_api::proto::entities_client::EntitiesClient;
use stead_api::proto::{DeployRequest, ListTypesRequest, NodeInfoRequest, SendRequest};
use support::{StartedNode, cli, cli_with_env, guest_path, http, up_expecting_exit};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

const TOKEN: &str = "s3cret-admin-token-0123456789";

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn send_req(ty: &str, id: &str, json: &str) -> SendRequest {
    SendRequest {
        entity_type: ty.into(),
        entity_id: id.into(),
        command_json: json.into(),
        command_id: String::new(),
    }
}

fn with_bearer<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("metadata value"),
    );
    request
}

fn post_component(
    agent: &ureq::Agent,
    url: &str,
    authorization: Option<&str>,
    component: &[u8],
) -> (u16, Option<String>, Value) {
    let mut request = agent.post(url);
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    let mut response = request.send(component).expect("response");
    let www = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().expect("ASCII").to_owned());
    let body = response.body_mut().read_to_string().expect("body");
    (response.status().as_u16(), www, parse(&body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_admin_calls_need_it_on_grpc_and_http_and_entity_calls_do_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    // Whitespace around the token is trimmed.
    std::fs::write(&token_file, format!("  {TOKEN}\n")).expect("token file");
    let wrong_file = dir.path().join("wrong-token");
    std::fs::write(&wrong_file, "not-the-admin-token-at-all").expect("token file");
    let node = StartedNode::start_with(
        &dir.path().join("data"),
        &["--admin-token-file", path_str(&token_file)],
    );
    let addr = node.grpc_url();
    let account = guest_path("account");
    let component = std::fs::read(&account).expect("component");

    // The CLI: no token, a wrong one, the right one (file, then environment).
    let deploy = ["--addr", addr.as_str(), "deploy", path_str(&account)];
    let (ok, out, err) = cli(&deploy);
    assert!(!ok, "deployed without a token: {out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("stead: error: unauthenticated: missing admin token"),
        "{err}"
    );
    let (ok, _, err) = cli(&[&deploy[..], &["--token-file", path_str(&wrong_file)]].concat());
    assert!(
        !ok && err.contains("unauthenticated: wrong admin token"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
    let (ok, out, err) = cli(&[&deploy[..], &["--token-file", path_str(&token_file)]].concat());
    assert!(
        ok && out.starts_with("deployed account 0.1.0"),
        "{out}{err}"
    );
    let (ok, out, err) = cli_with_env(
        &["--addr", addr.as_str(), "--json", "types"],
        &[("STEAD_ADMIN_TOKEN", TOKEN)],
    );
    assert!(ok && parse(&out)[0]["name"] == "account", "{out}{err}");
    let (ok, _, err) = cli(&["--addr", addr.as_str(), "info"]);
    assert!(!ok && err.contains("unauthenticated"), "{err}");

    // Entity commands need no token.
    let (ok, out, err) = cli(&[
        "--addr",
        addr.as_str(),
        "send",
        "account",
        "t-1",
        r#"{"open":{"owner":"ada"}}"#,
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"balance":0}  (seq-nr 1)"#);

    // gRPC directly: every Admin method, missing vs. wrong vs. right.
    let mut admin = AdminClient::connect(addr.clone()).await.expect("connect");
    let status = admin
        .list_types(ListTypesRequest {})
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("missing"), "{}", status.message());
    let status = admin
        .node_info(with_bearer(NodeInfoRequest {}, "wrong-token-0123456789"))
        .await
        .expect_err("wrong token");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(status.message().contains("wrong"), "{}", status.message());
    let status = admin
        .deploy(DeployRequest {
            component: component.clone(),
        })
        .await
        .expect_err("no token");
    assert_eq!(status.code(), Code::Unauthenticated);
    admin
        .node_info(with_bearer(NodeInfoRequest {}, TOKEN))
        .await
        .expect("info with the token");
    let mut entities = EntitiesClient::connect(addr.clone())
        .await
        .expect("connect");
    let reply = entities
        .send(send_req("account", "t-1", r#"{"deposit":{"amount":7}}"#))
        .await
        .expect("an entity command without a token")
        .into_inner();
    assert_eq!(parse(&reply.reply_json), json!({"balance": 7}));

    // Health stays open.
    let channel = Endpoint::from_shared(addr.clone())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "stead.v1.Admin".into(),
        })
        .await
        .expect("health without a token")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // HTTP deploy: no token, wrong token, not a bearer token, right token.
    let agent = http();
    let url = node.url("/v1/components");
    for (authorization, reason) in [
        (None, "missing admin token"),
        (Some("Bearer wrong-token-0123456789"), "wrong admin token"),
        (
            Some(format!("Basic {TOKEN}")).as_deref(),
            "not a bearer token",
        ),
    ] {
        let (status, www, body) = post_component(&agent, &url, authorization, &component);
        assert_eq!(status, 401, "{authorization:?}: {body}");
        assert!(
            www.as_deref().is_some_and(|v| v.starts_with("Bearer")),
            "{www:?}"
        );
        assert_eq!(body["error"]["code"], "unauthenticated", "{body}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(reason), "{message}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let (status, _, body) = post_component(&agent, &url, Some(&bearer), &component);
    assert_eq!(status, 200, "{body}");
    let types = parse(
        &agent
            .get(node.url("/v1/types"))
            .call()
            .expect("types")
            .body_mut()
            .read_to_string()
            .expect("body"),
    );
    assert_eq!(body, types["types"][0], "like a /v1/types item");
    assert_eq!(body["name"], "account");
    assert_eq!(body["sha256"].as_str().map(str::len), Some(64));
    let (status, _, body) = post_component(&agent, &url, Some(&bearer), b"not wasm at all");
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "deploy_refused");

    // Entity routes over HTTP need no token.
    let mut response = agent
        .post(node.url("/v1/entities/account/t-1"))
        .send(r#"{"deposit":{"amount":3}}"#)
        .expect("send");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        parse(&response.body_mut().read_to_string().expect("body")),
        json!({"balance": 10})
    );
}

#[test]
fn without_a_token_the_node_refuses_to_listen_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, addr, other_flag) in [
        ("--http", "0.0.0.0:0", "--grpc"),
        ("--grpc", "[::]:0", "--http"),
    ] {
        let data = dir.path().join("data");
        let (status, out, err) = up_expecting_exit(
            &[
                flag,
                addr,
                other_flag,
                "127.0.0.1:0",
                "--data-dir",
                path_str(&data),
            ],
            &[],
        );
        assert!(!status.success(), "started on {addr}: {out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!(
                "stead: error: refusing to listen on {addr} ({flag}) without an admin token"
            )) && err.contains("beyond loopback the admin API requires one"),
            "{err}"
        );
        // Refused before binding and before opening the data directory.
        assert!(out.is_empty(), "{out}");
        assert!(!data.exists(), "the data directory was created");
    }
}

#[test]
fn unusable_tokens_are_refused_and_a_token_allows_listening_beyond_loopback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let base = ["--data-dir", path_str(&data)];
    for (env_token, reason) in [
        ("   ", "the admin token from STEAD_ADMIN_TOKEN is empty"),
        ("short-token", "is 11 bytes long; it must be at least 16"),
    ] {
        let (status, _, err) = up_expecting_exit(&base, &[("STEAD_ADMIN_TOKEN", env_token)]);
        assert!(!status.success());
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(reason), "{err}");
    }
    let missing = dir.path().join("no-such-token-file");
    let (status, _, err) = up_expecting_exit(
        &[&base[..], &["--admin-token-file", path_str(&missing)]].concat(),
        &[],
    );
    assert!(!status.success());
    assert!(
        err.contains(&format!(
            "cannot read the admin token file {}",
            missing.display()
        )),
        "{err}"
    );

    // The token from the environment unlocks 0.0.0.0 (probed over loopback).
    let node = StartedNode::start_with_env(
        &data,
        &["--http", "0.0.0.0:0"],
        &[("STEAD_ADMIN_TOKEN", TOKEN)],
    );
    assert_eq!(node.http.ip().to_string(), "0.0.0.0", "{}", node.ready);
    let agent = http();
    let healthz = format!("http://127.0.0.1:{}/healthz", node.http.port());
    let response = agent.get(&healthz).call().expect("healthz");
    assert_eq!(response.status().as_u16(), 200);
    let (status, _, body) = post_component(
        &agent,
        &format!("http://127.0.0.1:{}/v1/components", node.http.port()),
        None,
        b"no token",
    );
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthenticated"))
    );
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as
/// `cert.pem` and `key.pem` in `dir`.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("certificate");
    let cert_pem = certified.cert.pem();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, &cert_pem).expect("cert.pem");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("key.pem");
    (cert, key, cert_pem)
}

fn https_agent(ca_pem: &str) -> ureq::Agent {
    let ca = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).expect("PEM");
    ureq::Agent::config_builder()
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
                .build(),
        )
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_certificate_grpc_http_and_the_cli_speak_tls_and_plain_text_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, ca_pem) = self_signed(dir.path());
    let node = StartedNode::start_with(
        &dir.path().join("data"),
        &["--tls-cert", path_str(&cert), "--tls-key", path_str(&key)],
    );
    assert!(node.ready.contains(" tls=on "), "{}", node.ready);

    // gRPC over TLS, trusting the certificate.
    let channel = Endpoint::from_shared(node.grpc_tls_url())
        .expect("url")
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca_pem)))
        .expect("TLS config")
        .connect()
        .await
        .expect("TLS connect");
    let component = std::fs::read(guest_path("account")).expect("component");
    AdminClient::new(channel.clone())
        .deploy(DeployRequest { component })
        .await
        .expect("deploy over TLS");
    let reply = EntitiesClient::new(channel)
        .send(send_req("account", "s-1", r#"{"open":{"owner":"ada"}}"#))
        .await
        .expect("send over TLS")
        .into_inner();
    assert_eq!(
        (parse(&reply.reply_json), reply.seq_nr),
        (json!({"balance": 0}), 1)
    );

    // Plain-text gRPC on the TLS port fails: the connection or the call.
    let plain_failed = tokio::time::timeout(Duration::from_secs(20), async {
        match EntitiesClient::connect(node.grpc_url()).await {
            Err(_) => true,
            Ok(mut client) => client
                .send(send_req("account", "s-1", r#"{"deposit":{"amount":1}}"#))
                .await
                .is_err(),
        }
    })
    .await
    .unwrap_or(true);
    assert!(plain_failed, "plain-text gRPC worked on the TLS port");

    // HTTPS with the certificate trusted; plain HTTP on the same port fails.
    let agent = https_agent(&ca_pem);
    let mut response = agent
        .get(node.tls_url("/v1/entities/account/s-1"))
        .call()
        .expect("HTTPS view");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        parse(&response.body_mut().read_to_string().expect("body")),
        json!({"owner": "ada", "balance": 0, "status": "open"})
    );
    let plain = http().get(node.url("/healthz")).call();
    assert!(
        plain.as_ref().map_or(true, |r| r.status().as_u16() != 200),
        "plain HTTP worked on the TLS port: {plain:?}"
    );
    // An HTTPS client that does not trust the certificate is refused.
    let untrusting = http().get(node.tls_url("/healthz")).call();
    assert!(untrusting.is_err(), "{untrusting:?}");

    // The CLI over TLS with --ca-cert (and STEAD_CA_CERT); without it the
    // certificate is not trusted.
    let addr = node.grpc_tls_url();
    let send = [
        "--addr",
        addr.as_str(),
        "send",
        "account",
        "s-1",
        r#"{"deposit":{"amount":5}}"#,
    ];
    let (ok, out, err) = cli(&[&send[..], &["--ca-cert", path_str(&cert)]].concat());
    assert!(ok, "{err}");
    assert_eq!(out.trim(), r#"{"balance":5}  (seq-nr 2)"#);
    let (ok, out, err) = cli_with_env(
        &["--addr", addr.as_str(), "get", "account", "s-1"],
        &[("STEAD_CA_CERT", path_str(&cert))],
    );
    assert!(ok, "{err}");
    assert_eq!(parse(&out)["balance"], 5);
    let (ok, _, err) = cli(&send);
    assert!(!ok, "trusted a self-signed certificate without --ca-cert");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("stead: error: "), "{err}");

    // Graceful shutdown still works with TLS.
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn unusable_tls_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key, _) = self_signed(dir.path());
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("dir");
    let (_, other_key, _) = self_signed(&other);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not PEM\n").expect("garbage");
    let missing = dir.path().join("missing.pem");
    let data = dir.path().join("data");
    let data_dir = ["--data-dir", path_str(&data)];
    for (tls_cert, tls_key, reason) in [
        (
            &missing,
            &key,
            format!("TLS certificate {}: ", missing.display()),
        ),
        (
            &garbage,
            &key,
            format!(
                "TLS certificate {}: no PEM `CERTIFICATE` section found",
                garbage.display()
            ),
        ),
        (
            &cert,
            &garbage,
            format!(
                "TLS key {}: no PEM private key section found",
                garbage.display()
            ),
        ),
        (
            &cert,
            &other_key,
            format!(
                "TLS certificate {} and key {} cannot be used together",
                cert.display(),
                other_key.display()
            ),
        ),
    ] {
        let (status, out, err) = up_expecting_exit(
            &[
                &data_dir[..],
                &[
                    "--tls-cert",
                    path_str(tls_cert),
                    "--tls-key",
                    path_str(tls_key),
                ],
            ]
            .concat(),
            &[],
        );
        assert!(!status.success(), "started: {out}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&reason), "expected {reason:?} in {err}");
    }
    // Both or neither.
    let (status, _, err) = up_expecting_exit(
        &[&data_dir[..], &["--tls-cert", path_str(&cert)]].concat(),
        &[],
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--tls-key"), "{err}");
}
