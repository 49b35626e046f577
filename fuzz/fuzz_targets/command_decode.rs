//! Fuzz target `command_decode`: the command path of both APIs, from the
//! request to the guest call and back, on a real node.
//!
//! Once per process: a [`Node`] on a temporary directory (in
//! `$STEAD_FUZZ_WORK` when set) with the real `account` component deployed
//! (`$STEAD_FUZZ_GUESTS/account.wasm`, default `../target/guests/`), the axum
//! router of `stead_api::http`, and the node's real servers
//! (`stead_api::serve`) on loopback with a gRPC client. The gRPC
//! service's struct cannot be built outside the host (its state field is
//! private to `api`), so the gRPC side goes through the real server over
//! HTTP/2: protobuf decoding included.
//!
//! Each input is split into an entity type, an entity id, an idempotency key
//! and a command body (format below), sent as `POST /v1/entities/{type}/{id}`
//! through the router (`tower::ServiceExt::oneshot`) and then as
//! `Entities.Send` over gRPC. Entity ids come mostly from a small set, so
//! accounts accumulate state (opened, funded, closed) across inputs.
//!
//! Input format (`xtask/src/fuzz.rs` writes seeds in it):
//!
//! ```text
//! input = flags:u8 type_len:u8 type id_len:u8 id key_len:u8 key body...
//! flags bits 0-1: entity type: 0-2 `account`, 3 the `type` field
//!       bits 2-4: entity id: 0-5 `acc-0`..`acc-5`, 6-7 the `id` field
//!       bits 5-6: idempotency key: 0 none, 1 `k0`..`k3` (by the key
//!                 field's first byte), 2-3 the `key` field
//!       bit  7:   type and id go into the URL unescaped (else every byte
//!                 but letters, digits and `-._~` is percent-encoded)
//! ```
//! Missing fields are empty; gRPC gets the fields as lossy UTF-8.
//!
//! Properties:
//! - nothing panics, on either side;
//! - HTTP: 200 with a JSON reply, `Stead-Seq-Nr` >= 1 and `Stead-Duplicate`;
//!   or the documented error body, exactly `{"error":{"code","message"}}`,
//!   with the status of its code (`host/api/src/errors.rs`, and the
//!   router's `not_found` 404 and `method_not_allowed` 405); never a 5xx
//!   but a guest fault (500 `guest_fault`), 503 or 507;
//! - gRPC: a JSON reply, or a status with its `stead-error` code matching
//!   the same table; never INTERNAL but a guest fault;
//! - a command accepted over HTTP with an idempotency key, sent again over
//!   gRPC with the same key to the same entity, is a duplicate with the
//!   same sequence number and reply.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use stead_api::proto::SendRequest;
use stead_api::proto::entities_client::EntitiesClient;
use stead_api::{ApiState, Listeners};
use stead_node::{JournalConfig, Node, NodeConfig};
use stead_types::config::SledOptions;
use tonic::transport::Channel;
use tower::ServiceExt as _;

const ACCOUNT: &str = "account";
const IDS: [&str; 6] = ["acc-0", "acc-1", "acc-2", "acc-3", "acc-4", "acc-5"];
const KEYS: [&str; 4] = ["k0", "k1", "k2", "k3"];

struct Harness {
    rt: tokio::runtime::Runtime,
    router: Router,
    grpc: EntitiesClient<Channel>,
    /// Kept for the life of the process (holds the node's data).
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let (_, account) = common::account_component();
        let dir = match std::env::var_os("STEAD_FUZZ_WORK") {
            Some(work) => {
                std::fs::create_dir_all(&work).expect("creating $STEAD_FUZZ_WORK");
                tempfile::tempdir_in(work)
            }
            None => tempfile::tempdir(),
        }
        .expect("a temporary directory for the node");
        let mut config = NodeConfig::new(dir.path().join("node"));
        config.shard_count = 8;
        config.shards.workers = 1;
        // The command path, not the disk, is under test: no fdatasync.
        config.journal = JournalConfig::Sled(SledOptions {
            sync: false,
            cache_capacity: 32 * 1024 * 1024,
        });
        let node = Arc::new(Node::open(config).expect("opening the node"));
        node.deploy(&account).expect("deploying account.wasm");
        let state = ApiState::new(node);
        let router = stead_api::http::router(state.clone());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let grpc = rt.block_on(async {
            let loopback = "127.0.0.1:0".parse().expect("an address");
            let listeners = Listeners::bind(loopback, loopback)
                .await
                .expect("binding loopback ports");
            let addr = listeners.grpc.local_addr().expect("the gRPC address");
            tokio::spawn(stead_api::serve(
                state,
                listeners,
                None,
                std::future::pending(),
            ));
            let channel = Channel::from_shared(format!("http://{addr}"))
                .expect("a channel URI")
                .connect()
                .await
                .expect("connecting to the node's gRPC server");
            EntitiesClient::new(channel)
        });
        Harness {
            rt,
            router,
            grpc,
            _dir: dir,
        }
    })
}

/// One input, split (see the module documentation).
struct Input<'a> {
    entity_type: &'a [u8],
    entity_id: &'a [u8],
    key: Option<&'a [u8]>,
    raw_url: bool,
    body: &'a [u8],
}

fn field<'a>(data: &mut &'a [u8]) -> &'a [u8] {
    let Some((&len, rest)) = data.split_first() else {
        return &[];
    };
    let (out, rest) = rest.split_at(usize::from(len).min(rest.len()));
    *data = rest;
    out
}

impl<'a> Input<'a> {
    fn parse(mut data: &'a [u8]) -> Self {
        let flags = data.first().copied().unwrap_or(0);
        data = data.get(1..).unwrap_or(&[]);
        let type_field = field(&mut data);
        let id_field = field(&mut data);
        let key_field = field(&mut data);
        let entity_type = match flags & 0b11 {
            3 => type_field,
            _ => ACCOUNT.as_bytes(),
        };
        let entity_id = match (flags >> 2) & 0b111 {
            n @ 0..=5 => IDS[usize::from(n)].as_bytes(),
            _ => id_field,
        };
        let key = match (flags >> 5) & 0b11 {
            0 => None,
            1 => Some(KEYS[usize::from(key_field.first().copied().unwrap_or(0) % 4)].as_bytes()),
            _ => Some(key_field),
        };
        Self {
            entity_type,
            entity_id,
            key,
            raw_url: flags & 0x80 != 0,
            body: data,
        }
    }
}

fn percent_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The status each error code is documented with (`api/errors.rs`), and
/// whether the command path may answer it at all.
fn documented_status(code: &str) -> Option<u16> {
    Some(match code {
        "unknown_type" | "not_found" => 404,
        "invalid_id" | "invalid_command" => 400,
        "rejected" | "conflict" => 409,
        "guest_fault" => 500,
        // A route without this method (the raw-URL mode reaches other routes).
        "method_not_allowed" => 405,
        "overloaded" | "storage" | "unavailable" => 503,
        "storage_full" => 507,
        // `deadline_exceeded` (504), `internal` (500), `deploy_refused`
        // and anything else are not answers of a healthy command path.
        _ => return None,
    })
}

fn documented_grpc(code: &str) -> Option<tonic::Code> {
    use tonic::Code;
    Some(match code {
        "unknown_type" => Code::NotFound,
        "invalid_id" | "invalid_command" => Code::InvalidArgument,
        "rejected" => Code::FailedPrecondition,
        "conflict" => Code::Aborted,
        "guest_fault" => Code::Internal,
        "overloaded" | "storage_full" => Code::ResourceExhausted,
        "storage" | "unavailable" => Code::Unavailable,
        _ => return None,
    })
}

/// An accepted command: its sequence number, duplicate flag and reply.
#[derive(Debug, PartialEq)]
struct Accepted {
    seq_nr: u64,
    duplicate: bool,
    reply: Value,
}

/// Checks one error body: exactly `{"error":{"code","message"}}`; returns the code.
fn error_code(body: &[u8], context: &str) -> String {
    let value: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{context}: error body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        )
    });
    let Some(outer) = value.as_object().filter(|o| o.len() == 1) else {
        panic!("{context}: error body is not {{\"error\":...}}: {value}");
    };
    let Some(error) = outer
        .get("error")
        .and_then(Value::as_object)
        .filter(|e| e.len() == 2)
    else {
        panic!("{context}: error body is not {{\"error\":{{code,message}}}}: {value}");
    };
    let (Some(code), Some(_message)) = (
        error.get("code").and_then(Value::as_str),
        error.get("message").and_then(Value::as_str),
    ) else {
        panic!("{context}: error code or message is not a string: {value}");
    };
    code.to_owned()
}

/// The accepted command, if it was, and whether it carried an idempotency key.
async fn send_http(router: &Router, input: &Input<'_>) -> Option<(Accepted, bool)> {
    let segment = |bytes: &[u8]| {
        if input.raw_url {
            String::from_utf8_lossy(bytes).into_owned()
        } else {
            percent_encode(bytes)
        }
    };
    let uri = format!(
        "/v1/entities/{}/{}",
        segment(input.entity_type),
        segment(input.entity_id)
    );
    let mut request = Request::builder()
        .method("POST")
        .uri(&uri)
        .header(header::CONTENT_TYPE, "application/json");
    // A key no client could send as a header value is left out.
    let key = input
        .key
        .and_then(|key| header::HeaderValue::from_bytes(key).ok());
    let keyed = key.is_some();
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    // A URL no client could send is no test of the node.
    let request = request.body(Body::from(input.body.to_vec())).ok()?;
    let response = router
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("reading a response body");
    let context = format!("HTTP POST {uri} -> {status}");
    if status == StatusCode::OK {
        assert_eq!(
            headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..]),
            "{context}: content type"
        );
        let reply: Value = serde_json::from_slice(&body).unwrap_or_else(|e| {
            panic!(
                "{context}: reply is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&body)
            )
        });
        let seq_nr = headers
            .get("stead-seq-nr")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{context}: no numeric Stead-Seq-Nr"));
        assert!(seq_nr >= 1, "{context}: an accepted command at seq-nr 0");
        let duplicate = match headers.get("stead-duplicate").map(|v| v.as_bytes()) {
            Some(b"true") => true,
            Some(b"false") => false,
            other => panic!("{context}: Stead-Duplicate is {other:?}"),
        };
        return Some((
            Accepted {
                seq_nr,
                duplicate,
                reply,
            },
            keyed,
        ));
    }
    let code = error_code(&body, &context);
    assert_eq!(
        documented_status(&code),
        Some(status.as_u16()),
        "{context}: code `{code}` with this status is not a documented answer of the command path: {:?}",
        String::from_utf8_lossy(&body)
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(
            headers.contains_key(header::RETRY_AFTER),
            "{context}: 503 without Retry-After"
        );
    }
    None
}

/// `Ok(accepted)`, or `Err(code)` of a checked error.
async fn send_grpc(
    client: &EntitiesClient<Channel>,
    input: &Input<'_>,
) -> Result<Accepted, tonic::Code> {
    let lossy = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let request = SendRequest {
        entity_type: lossy(input.entity_type),
        entity_id: lossy(input.entity_id),
        command_json: lossy(input.body),
        command_id: input.key.map(lossy).unwrap_or_default(),
    };
    let context = format!(
        "gRPC Send {:?}/{:?}",
        request.entity_type, request.entity_id
    );
    match client.clone().send(tonic::Request::new(request)).await {
        Ok(response) => {
            let response = response.into_inner();
            let reply = serde_json::from_str(&response.reply_json).unwrap_or_else(|e| {
                panic!(
                    "{context}: reply is not JSON ({e}): {:?}",
                    response.reply_json
                )
            });
            assert!(
                response.seq_nr >= 1,
                "{context}: an accepted command at seq-nr 0"
            );
            Ok(Accepted {
                seq_nr: response.seq_nr,
                duplicate: response.duplicate,
                reply,
            })
        }
        Err(status) => {
            let code = status
                .metadata()
                .get("stead-error")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_else(|| {
                    panic!("{context}: status without a stead-error code: {status:?}")
                });
            assert_eq!(
                documented_grpc(code),
                Some(status.code()),
                "{context}: code `{code}` with this status is not a documented answer of the command path: {status:?}"
            );
            Err(status.code())
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let harness = harness();
    let input = Input::parse(data);
    harness.rt.block_on(async {
        let http = send_http(&harness.router, &input).await;
        let grpc = send_grpc(&harness.grpc, &input).await;
        // Accepted over HTTP with a key: the same key again is a duplicate
        // (the URL carried exactly these bytes, and HTTP accepted them, so
        // they are UTF-8 and gRPC names the same entity and key).
        if let (Some((http, true)), false) = (&http, input.raw_url) {
            match grpc {
                Ok(grpc) => assert_eq!(
                    grpc,
                    Accepted {
                        seq_nr: http.seq_nr,
                        duplicate: true,
                        reply: http.reply.clone(),
                    },
                    "a retry over gRPC of a command accepted over HTTP is not its duplicate"
                ),
                Err(tonic::Code::Unavailable | tonic::Code::ResourceExhausted) => {}
                Err(code) => {
                    panic!("a retry over gRPC of a command accepted over HTTP failed with {code:?}")
                }
            }
        }
    });
});
