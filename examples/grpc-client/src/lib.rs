//! A small client of stead's gRPC API: opens an account, deposits with an
//! idempotency key (twice: the retry is a duplicate), tries an overdraft,
//! reads the view and the events.

use anyhow::{Context, Result, bail};

/// Generated from `host/proto/stead/v1/stead.proto`.
#[allow(clippy::all, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("stead.v1");
}

use proto::entities_client::EntitiesClient;
use proto::{GetRequest, SendRequest, StreamEventsRequest};

/// What the session saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub balance: u64,
    pub retry_was_duplicate: bool,
    pub overdraft_error: String,
    pub events: Vec<String>,
}

/// Runs the session against the node at `addr` (e.g. `http://127.0.0.1:7400`)
/// on account `id`; the node must have `account` deployed.
pub async fn run(addr: &str, id: &str) -> Result<Summary> {
    let mut client = EntitiesClient::connect(addr.to_owned())
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let send = |json: &str, command_id: &str| SendRequest {
        entity_type: "account".into(),
        entity_id: id.into(),
        command_json: json.into(),
        command_id: command_id.into(),
    };
    client
        .send(send(r#"{"open":{"owner":"grpc"}}"#, ""))
        .await?;
    let first = client
        .send(send(r#"{"deposit":{"amount":40}}"#, "dep-1"))
        .await?
        .into_inner();
    let retry = client
        .send(send(r#"{"deposit":{"amount":40}}"#, "dep-1"))
        .await?
        .into_inner();
    if first.seq_nr != retry.seq_nr {
        bail!("the retry was persisted again");
    }
    let overdraft = match client
        .send(send(r#"{"withdraw":{"amount":1000}}"#, ""))
        .await
    {
        Ok(_) => bail!("an overdraft was accepted"),
        Err(status) => format!("{:?}: {}", status.code(), status.message()),
    };
    let view = client
        .get(GetRequest {
            entity_type: "account".into(),
            entity_id: id.into(),
        })
        .await?
        .into_inner();
    let view: serde_json::Value = serde_json::from_str(&view.view_json)?;
    let mut stream = client
        .stream_events(StreamEventsRequest {
            entity_type: "account".into(),
            entity_id: id.into(),
            from_seq_nr: 1,
        })
        .await?
        .into_inner();
    let mut events = Vec::new();
    while let Some(event) = stream.message().await? {
        events.push(event.event_json);
    }
    Ok(Summary {
        balance: view["balance"].as_u64().context("no balance in the view")?,
        retry_was_duplicate: retry.duplicate,
        overdraft_error: overdraft,
        events,
    })
}
