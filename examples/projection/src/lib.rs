//! A read model kept from a subscription: balances per owner, in
//! PostgreSQL, from the `account` entity's events.
//!
//! Exactly once, without any help from the node: each page of events is
//! applied in one PostgreSQL transaction **together with the cursor** after
//! it, so a crash anywhere either keeps the page and its cursor or neither;
//! the next run resumes from the stored cursor. The cursor is kept here
//! exactly (the last position of every shard, from each event's `shard`
//! and `position`), in the text form the node reads: `v1.shard:position,...`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::Value;

/// Generated from `host/proto/stead/v1/stead.proto`.
#[allow(clippy::all, unreachable_pub)]
pub mod proto {
    tonic::include_proto!("stead.v1");
}

use proto::SubscribeRequest;
use proto::entities_client::EntitiesClient;

/// The projection's tables; its cursor under the name `balances`.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS projection_accounts (
    account text PRIMARY KEY, owner text NOT NULL, balance bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS projection_owners (
    owner text PRIMARY KEY, balance bigint NOT NULL DEFAULT 0, accounts bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS projection_cursor (name text PRIMARY KEY, cursor text NOT NULL);
";

/// Events applied at most per transaction.
const BATCH: usize = 256;

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub applied: usize,
    /// The cursor stored last.
    pub cursor: String,
}

/// The last position read in each shard.
#[derive(Debug, Default)]
struct Cursor(BTreeMap<u32, u64>);

impl Cursor {
    fn parse(text: &str) -> Result<Self> {
        let pairs = text
            .strip_prefix("v1.")
            .with_context(|| format!("stored cursor `{text}`"))?;
        let mut out = BTreeMap::new();
        for pair in pairs.split(',').filter(|p| !p.is_empty()) {
            let (shard, position) = pair.split_once(':').context("a cursor pair")?;
            out.insert(shard.parse()?, position.parse()?);
        }
        Ok(Self(out))
    }

    fn text(&self) -> String {
        let pairs: Vec<String> = self.0.iter().map(|(s, p)| format!("{s}:{p}")).collect();
        format!("v1.{}", pairs.join(","))
    }
}

/// Follows the node at `addr` into the database at `postgres_url`, from
/// the stored cursor; returns after `stop_after` events (never without).
pub async fn run(addr: &str, postgres_url: &str, stop_after: Option<usize>) -> Result<Report> {
    let (mut db, connection) = tokio_postgres::connect(postgres_url, tokio_postgres::NoTls)
        .await
        .context("connecting to PostgreSQL")?;
    tokio::spawn(connection);
    db.batch_execute(SCHEMA).await?;
    let stored: Option<String> = db
        .query_opt(
            "SELECT cursor FROM projection_cursor WHERE name = 'balances'",
            &[],
        )
        .await?
        .map(|row| row.get(0));
    let mut cursor = match &stored {
        Some(text) => Cursor::parse(text)?,
        None => Cursor::default(),
    };
    let mut client = EntitiesClient::connect(addr.to_owned())
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let mut stream = client
        .subscribe(SubscribeRequest {
            entity_type: "account".into(),
            cursor: stored.unwrap_or_default(),
        })
        .await?
        .into_inner();
    let mut applied = 0;
    let mut page = Vec::new();
    let enough = |n: usize| stop_after.is_some_and(|stop| n >= stop);
    while !enough(applied) {
        let event = stream.message().await?.context("the stream ended")?;
        // Commit at the end of the node's page, or when the batch is full.
        let page_end = !event.cursor.is_empty();
        page.push(event);
        if !page_end && page.len() < BATCH && !enough(applied + page.len()) {
            continue;
        }
        let tx = db.transaction().await?;
        for event in &page {
            apply(&tx, event).await?;
            cursor.0.insert(event.shard, event.position);
        }
        tx.execute(
            "INSERT INTO projection_cursor (name, cursor) VALUES ('balances', $1)
             ON CONFLICT (name) DO UPDATE SET cursor = EXCLUDED.cursor",
            &[&cursor.text()],
        )
        .await?;
        tx.commit().await?;
        applied += page.len();
        page.clear();
    }
    Ok(Report {
        applied,
        cursor: cursor.text(),
    })
}

/// One event's change to the read model.
async fn apply(tx: &tokio_postgres::Transaction<'_>, event: &proto::SubscribedEvent) -> Result<()> {
    let value: Value = serde_json::from_str(&event.event_json)
        .with_context(|| format!("event of {}: {}", event.entity_id, event.event_json))?;
    let account = event.entity_id.as_str();
    if let Some(owner) = value.pointer("/opened/owner").and_then(Value::as_str) {
        tx.execute(
            "INSERT INTO projection_accounts (account, owner) VALUES ($1, $2)",
            &[&account, &owner],
        )
        .await?;
        tx.execute(
            "INSERT INTO projection_owners (owner, accounts) VALUES ($1, 1)
             ON CONFLICT (owner) DO UPDATE SET accounts = projection_owners.accounts + 1",
            &[&owner],
        )
        .await?;
        return Ok(());
    }
    let change = if let Some(n) = value.pointer("/deposited/amount").and_then(Value::as_i64) {
        n
    } else if let Some(n) = value.pointer("/withdrawn/amount").and_then(Value::as_i64) {
        -n
    } else {
        return Ok(()); // closed: no balance change
    };
    tx.execute(
        "UPDATE projection_accounts SET balance = balance + $2 WHERE account = $1",
        &[&account, &change],
    )
    .await?;
    tx.execute(
        "UPDATE projection_owners SET balance = balance + $2
         WHERE owner = (SELECT owner FROM projection_accounts WHERE account = $1)",
        &[&account, &change],
    )
    .await?;
    Ok(())
}
