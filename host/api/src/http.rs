//! HTTP/JSON ingress (axum), on its own port.
//!
//! | route | |
//! |---|---|
//! | `POST /v1/entities/{type}/{id}` | body: the JSON command; `Idempotency-Key` header: the command id; 200 with the JSON reply (`Stead-Seq-Nr`, `Stead-Duplicate` headers) |
//! | `GET /v1/entities/{type}/{id}` | the view |
//! | `GET /v1/entities/{type}/{id}/events?from=N&limit=M` | `{"events":[{"seq_nr","event","command_id","timestamp_ms"}]}`; M defaults to 1,000, at most 10,000 |
//! | `GET /v1/streams/{type}?cursor=C` | server-sent events: every event of the type after cursor `C` (from the start without), then new ones as they commit (see [`super::sse`]) |
//! | `GET /v1/types` | `{"types":[{"name","version","snapshot_every","sha256","size_bytes","batched_replay","contract"}]}` |
//! | `POST /v1/components` | admin: body: the component bytes (at most [`MAX_COMPONENT_BYTES`]); deploys it; 200 with its type like a `/v1/types` item; with a node token, `Authorization: Bearer <token>` or 401 (see [`super::auth`]) |
//! | `GET /healthz` | live: 200 |
//! | `GET /readyz` | ready (journal open, components loaded, every wanted shard served): 200, else 503 and why |
//! | `GET /metrics` | Prometheus (OpenMetrics text) |
//! | `POST /v1/noop` | 200 `{}` without any entity work: the yardstick of the HTTP benchmark |
//!
//! Errors: `{"error":{"code","message"}}` with the statuses of
//! [`super::errors`]; `Retry-After: 1` on 503; `unauthenticated` 401 with
//! `WWW-Authenticate: Bearer` for admin routes. An entity type or id that is
//! not UTF-8 once percent-decoded is `invalid_id` (400), an unknown route
//! `not_found` (404) and a method a route does not take `method_not_allowed`
//! (405, with `Allow`), all in the same format.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tracing::Instrument;

use super::errors::{ApiError, outcome_label};
use super::{ApiState, MAX_COMPONENT_BYTES};
use stead_node::{NodeError, TypeInfo};

/// Most events one `GET .../events` returns when no `limit` is given.
const DEFAULT_EVENTS_LIMIT: usize = 1000;
/// Most events one page may hold whatever `limit` asks (page with `from`).
const MAX_EVENTS_LIMIT: usize = 10_000;

/// The HTTP router of a node.
pub fn router(state: Arc<ApiState>) -> Router {
    let body_limit = state.node.config().limits.max_command_bytes;
    Router::new()
        .route(
            "/v1/entities/{entity_type}/{entity_id}",
            post(send).get(view),
        )
        .route("/v1/entities/{entity_type}/{entity_id}/events", get(events))
        .route("/v1/streams/{entity_type}", get(super::sse::stream))
        .route("/v1/types", get(types))
        .route("/v1/cluster", get(cluster))
        .route("/v1/components", post(deploy))
        .route("/v1/noop", post(noop))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// The JSON error for a `{entity_type}/{entity_id}` axum cannot extract (a
/// segment that is not UTF-8 once percent-decoded), instead of axum's
/// plain-text rejection.
fn path_error(rejection: &PathRejection) -> Response {
    ApiError(NodeError::InvalidId(format!(
        "the entity type and id must be UTF-8 once percent-decoded ({})",
        rejection.body_text()
    )))
    .into_response()
}

fn json_response(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn send(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = Instant::now();
    let (entity_type, entity_id) = match path {
        Ok(Path(path)) => path,
        Err(rejection) => return path_error(&rejection),
    };
    // Too large or unreadable bodies get the JSON error format too.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let limit = state.node.config().limits.max_command_bytes;
            let message = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                format!("command body exceeds the limit of {limit} bytes")
            } else {
                format!("unreadable command body: {}", rejection.body_text())
            };
            return ApiError(NodeError::InvalidCommand(message)).into_response();
        }
    };
    let command_id = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) => Some(key.to_owned()),
        Some(Err(_)) => {
            return ApiError(NodeError::InvalidCommand(
                "Idempotency-Key must be visible ASCII".into(),
            ))
            .into_response();
        }
    };
    // Debug: the node's `command` span (info) already names the entity,
    // the command id and its seq-nr; this one only adds the protocol.
    let span =
        tracing::debug_span!("http_send", entity_type = %entity_type, entity_id = %entity_id);
    let result = state
        .router
        .send(&entity_type, &entity_id, body.to_vec(), command_id)
        .instrument(span)
        .await;
    state
        .metrics
        .command(&entity_type, outcome_label(&result), started.elapsed());
    match result {
        Ok(reply) => {
            let mut response = json_response(StatusCode::OK, reply.reply);
            let headers = response.headers_mut();
            headers.insert("stead-seq-nr", HeaderValue::from(reply.seq_nr));
            headers.insert(
                "stead-duplicate",
                HeaderValue::from_static(if reply.duplicate { "true" } else { "false" }),
            );
            response
        }
        Err(e) => ApiError(e).into_response(),
    }
}

async fn view(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let (entity_type, entity_id) = match path {
        Ok(Path(path)) => path,
        Err(rejection) => return path_error(&rejection),
    };
    match state.router.view(&entity_type, &entity_id).await {
        Ok(view) => json_response(StatusCode::OK, view),
        Err(e) => ApiError(e).into_response(),
    }
}

#[derive(Deserialize)]
struct EventsQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn events(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Response {
    let (entity_type, entity_id) = match path {
        Ok(Path(path)) => path,
        Err(rejection) => return path_error(&rejection),
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(rejection) => {
            return ApiError(NodeError::InvalidCommand(format!(
                "`from` and `limit` must be non-negative integers ({})",
                rejection.body_text()
            )))
            .into_response();
        }
    };
    let from = query.from.unwrap_or(1);
    let limit = query
        .limit
        .unwrap_or(DEFAULT_EVENTS_LIMIT)
        .min(MAX_EVENTS_LIMIT);
    let node = state.clone();
    let read = tokio::task::spawn_blocking(move || {
        node.node.events(&entity_type, &entity_id, from, limit)
    })
    .await;
    let events = match read {
        Ok(Ok(events)) => events,
        Ok(Err(e)) => return ApiError(e).into_response(),
        Err(e) => return ApiError(NodeError::Internal(e.to_string())).into_response(),
    };
    let events: Vec<_> = events
        .into_iter()
        .map(|e| {
            let event = serde_json::from_slice::<serde_json::Value>(&e.record.payload)
                .unwrap_or_else(|_| {
                    serde_json::Value::String(
                        String::from_utf8_lossy(&e.record.payload).into_owned(),
                    )
                });
            json!({
                "seq_nr": e.seq_nr,
                "event": event,
                "command_id": e.record.command_id,
                "timestamp_ms": e.record.timestamp_ms,
            })
        })
        .collect();
    axum::Json(json!({ "events": events })).into_response()
}

fn type_json(t: &TypeInfo) -> serde_json::Value {
    json!({
        "name": t.name,
        "version": t.version,
        "snapshot_every": t.snapshot_every,
        "sha256": t.hash,
        "size_bytes": t.size,
        "batched_replay": t.batched_replay,
        "contract": t.contract,
    })
}

async fn types(State(state): State<Arc<ApiState>>) -> Response {
    let types: Vec<_> = state.node.types().iter().map(type_json).collect();
    axum::Json(json!({ "types": types })).into_response()
}

/// `GET /v1/cluster`: members and shards as this node sees them; 404
/// (`not_clustered`) on a node alone.
async fn cluster(State(state): State<Arc<ApiState>>) -> Response {
    match &state.cluster {
        Some(cluster) => axum::Json(cluster.status()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({
                "error": {
                    "code": "not_clustered",
                    "message": "this node runs alone (start it with --seeds to make it a cluster member)",
                }
            })),
        )
            .into_response(),
    }
}

/// `POST /v1/components`: the admin check comes before the body is read.
async fn deploy(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Body) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes());
    if let Err(denied) = state.auth.check(authorization) {
        tracing::warn!(reason = %denied, protocol = "http", "admin call refused");
        // A client that waits for `100 Continue` has sent no body; any other
        // is still sending one: read it (without keeping it, up to the
        // limit) so that it gets the 401 instead of a connection reset.
        if !expects_continue(&headers) {
            drain(body, MAX_COMPONENT_BYTES).await;
        }
        return denied.into_response();
    }
    let bytes = match read_limited(body, MAX_COMPONENT_BYTES).await {
        Ok(bytes) => bytes,
        Err(message) => return ApiError(NodeError::Deploy(message)).into_response(),
    };
    let node = state.clone();
    match tokio::task::spawn_blocking(move || node.node.deploy(&bytes)).await {
        Ok(Ok(info)) => axum::Json(type_json(&info)).into_response(),
        Ok(Err(e)) => ApiError(e).into_response(),
        Err(e) => ApiError(NodeError::Internal(e.to_string())).into_response(),
    }
}

fn expects_continue(headers: &HeaderMap) -> bool {
    headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"))
}

/// Reads `body` if it has at most `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, String> {
    use tokio_stream::StreamExt;
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("unreadable component body: {e}"))?;
        if bytes.len() + chunk.len() > limit {
            return Err(format!("the component exceeds the limit of {limit} bytes"));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads and discards up to `limit` bytes of `body`.
async fn drain(body: Body, limit: usize) {
    use tokio_stream::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > limit {
            return;
        }
    }
}

async fn noop() -> Response {
    json_response(StatusCode::OK, b"{}".to_vec())
}

async fn ready(State(state): State<Arc<ApiState>>) -> Response {
    match state.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    if let Ok(stats) = state.node.stats().await {
        state.metrics.observe_node(stats);
    }
    if let Some(cluster) = &state.cluster {
        state.metrics.observe_cluster(cluster);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// A route that exists without this method (axum adds the `Allow` header).
async fn method_not_allowed(method: axum::http::Method) -> Response {
    let body = json!({"error": {
        "code": "method_not_allowed",
        "message": format!("this route does not take {method}"),
    }});
    (StatusCode::METHOD_NOT_ALLOWED, axum::Json(body)).into_response()
}

async fn not_found() -> Response {
    let body = json!({"error": {"code": "not_found", "message": "no such route"}});
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use std::future::IntoFuture;
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};

    use super::*;
    use stead_node::Node;

    /// One HTTP/1.1 request over a real socket: the status, the head (status
    /// line and headers) and the body.
    fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).expect("connecting");
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .expect("writing the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("reading the response");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (status, head.to_ascii_lowercase(), body.to_owned())
    }

    /// A node without components, its router served on a loopback port (bind
    /// the runtime last: it holds the node and must go before the directory).
    fn serve_router() -> (SocketAddr, tempfile::TempDir, tokio::runtime::Runtime) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = stead_types::config::NodeConfig::new(dir.path());
        config.shard_count = 1;
        config.shards.workers = 1;
        let node = Arc::new(Node::open(config).expect("opening the node"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("binding");
        let addr = listener.local_addr().expect("the address");
        rt.spawn(axum::serve(listener, router(ApiState::new(node))).into_future());
        (addr, dir, rt)
    }

    /// Found by the `command_decode` fuzz target (`fuzz/`): the input
    /// `[27, 4, 99, 97, 100, 100, 34, 255, 255, 255, 255, 255, 58, 123, 125, 125]`
    /// sends `POST /v1/entities/cadd/%FF%FF%FF%FF%FF%3A%7B%7D%7D`, whose id is
    /// not UTF-8 once percent-decoded; axum's path extractor refused it with a
    /// plain-text 400 (`Invalid URL: Invalid UTF-8 in `entity_id``) instead of
    /// the documented `{"error":{"code","message"}}`.
    #[test]
    fn a_path_that_is_not_utf8_gets_the_documented_json_error() {
        let (addr, _dir, _rt) = serve_router();
        for (method, path) in [
            ("POST", "/v1/entities/cadd/%FF%FF%FF%FF%FF%3A%7B%7D%7D"),
            ("POST", "/v1/entities/%C3%28/acc-1"),
            ("GET", "/v1/entities/account/%FF"),
            ("GET", "/v1/entities/account/%FE/events"),
        ] {
            let (status, _, body) = request(addr, method, path, "{}");
            assert_eq!(status, 400, "{method} {path}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
            assert_eq!(
                body["error"]["code"], "invalid_id",
                "{method} {path}: {body}"
            );
            assert!(
                body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("UTF-8")),
                "{method} {path}: {body}"
            );
        }
    }

    #[test]
    fn a_malformed_events_query_gets_the_documented_json_error() {
        let (addr, _dir, _rt) = serve_router();
        for path in [
            "/v1/entities/account/a/events?from=abc",
            "/v1/entities/account/a/events?limit=-1",
        ] {
            let (status, _, body) = request(addr, "GET", path, "");
            assert_eq!(status, 400, "{path}: {body}");
            let body: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
            assert_eq!(body["error"]["code"], "invalid_command", "{path}: {body}");
        }
    }

    /// Found with the `command_decode` fuzz target (`fuzz/`) in its raw-URL
    /// mode: the input `b"\x98\x00\x08x/events\x00{}"` sends
    /// `POST /v1/entities/account/x/events`, a route that only takes GET;
    /// axum answered 405 with an empty body instead of the documented
    /// `{"error":{"code","message"}}`.
    #[test]
    fn a_method_a_route_does_not_take_gets_the_documented_json_error() {
        let (addr, _dir, _rt) = serve_router();
        for (method, path, allow) in [
            ("POST", "/v1/entities/account/x/events", "get,head"),
            ("DELETE", "/v1/entities/account/x", "get,head,post"),
            ("GET", "/v1/components", "post"),
        ] {
            let (status, head, body) = request(addr, method, path, "{}");
            assert_eq!(status, 405, "{method} {path}: {body}");
            let mut allowed: Vec<_> = head
                .lines()
                .filter_map(|l| l.strip_prefix("allow:"))
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .collect();
            allowed.sort_unstable();
            assert_eq!(allowed.join(","), allow, "{method} {path}: {head}");
            let body: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
            assert_eq!(
                body["error"]["code"], "method_not_allowed",
                "{method} {path}: {body}"
            );
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
}
