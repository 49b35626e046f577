//! `GET /v1/streams/{type}?cursor=...`: a subscription as server-sent
//! events.
//!
//! Each event is one SSE message whose data is
//! `{"entity_type","entity_id","seq_nr","shard","position","timestamp_ms","event"}`
//! (`event` the entity's JSON event). The message that ends a page read from
//! the journal also carries `id:`, the cursor after it: a client resuming
//! with it (`?cursor=`, or `Last-Event-ID` as browsers send) gets the next
//! event. A client that records `shard` and `position` of every event
//! resumes exactly after the last it handled (the cursor is
//! `v1.shard:position,...`). The response is pulled: a slow client slows
//! the reads, nothing piles up (see `stead_node::Subscription`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::ApiState;
use super::errors::ApiError;
use stead_node::{NodeError, SubscribedEvent, Subscription};

#[derive(Deserialize)]
pub(crate) struct StreamQuery {
    cursor: Option<String>,
}

/// The handler of `GET /v1/streams/{type}`.
pub(crate) async fn stream(
    State(state): State<Arc<ApiState>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<StreamQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let entity_type = match path {
        Ok(Path(t)) => t,
        Err(rejection) => {
            return ApiError(NodeError::InvalidId(format!(
                "the entity type must be UTF-8 once percent-decoded ({})",
                rejection.body_text()
            )))
            .into_response();
        }
    };
    let cursor = match query {
        Ok(Query(q)) => q.cursor,
        Err(rejection) => {
            return ApiError(NodeError::InvalidCommand(format!(
                "unreadable query ({})",
                rejection.body_text()
            )))
            .into_response();
        }
    };
    // A browser reconnecting sends the last `id:` it saw.
    let cursor = cursor.or_else(|| {
        headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let subscription = match state.node.subscribe(&entity_type, cursor.as_deref()) {
        Ok(s) => s,
        Err(e) => return ApiError(e).into_response(),
    };
    tracing::info!(entity_type = %entity_type, cursor = ?cursor, "subscription opened (SSE)");
    let events = futures_util::stream::unfold(Some(subscription), |state| async move {
        let mut sub = state?;
        match sub.next().await {
            Ok(event) => {
                let message = message(&event, &sub);
                Some((Ok::<_, Infallible>(message), Some(sub)))
            }
            // What the subscription could not ride out (a corrupt record):
            // named in an `error` message, then the stream ends.
            Err(e) => {
                tracing::warn!(error = %e, "subscription ended");
                let message = Event::default().event("error").data(e.to_string());
                Some((Ok(message), None))
            }
        }
    });
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The SSE message of `event`; with the cursor as its id when it ends the
/// page in memory.
fn message(event: &SubscribedEvent, sub: &Subscription) -> Event {
    let payload =
        serde_json::from_slice::<serde_json::Value>(&event.payload).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&event.payload).into_owned())
        });
    let data = json!({
        "entity_type": event.entity_type,
        "entity_id": event.entity_id,
        "seq_nr": event.seq_nr,
        "shard": event.shard,
        "position": event.position,
        "timestamp_ms": event.timestamp_ms,
        "event": payload,
    });
    let message = Event::default().data(data.to_string());
    if sub.has_buffered() {
        message
    } else {
        message.id(sub.cursor().to_string())
    }
}
