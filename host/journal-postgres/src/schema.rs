//! The journal's tables, created (and later migrated) by the first node that
//! opens a database, under an advisory lock so nodes starting together do
//! not race. The version is stored in `stead_schema`; a database holding a
//! newer version than this build knows is refused with a clear error, never
//! written to.
//!
//! Tables (every integer the journal keeps is a `u64` stored as `bigint`):
//! - `stead_cluster`: the shard count, fixed by the first node: every node
//!   of a database must agree on which shard an entity is in.
//! - `stead_leases`: one row per shard ever claimed: its epoch, its owner
//!   (NULL when released) and when the lease expires, on the database's clock.
//! - `stead_events`: an entity's events by (type, id, seq-nr), the primary key
//!   that makes a second writer of one sequence number fail; the shard beside.
//! - `stead_entities`: the entities of each shard (written with an entity's
//!   first events), so a shard's entities are listed without scanning events.
//! - `stead_snapshots`: an entity's latest snapshot, encoded as the journal
//!   crate's `SnapshotRecord`.
//! - `stead_command_ids`: the idempotency index, (entity, command id) ->
//!   (seq-nr, time, digest), expired oldest first by (shard, at_ms).
//! - `stead_deployments`: deployed components, shared by every node.
//! - (version 2) `stead_outbox`: pending sends by (shard, source entity,
//!   seq-nr, index), with the target's answer once recorded (1 accepted,
//!   2 refused); `stead_timers`: timers by (shard, entity, name) with
//!   the seq-nr that set them.
//! - (version 3) `stead_command_ids` gains a refused command's refusal
//!   (`refusal_kind` 1 rejected, 2 invalid command; `refusal` its message);
//!   `stead_events` gains each event's `position` in its shard's stream
//!   (indexed by type, shard, position, for subscriptions), allocated from
//!   `stead_positions` (a shard's last position), whose row an append
//!   updates and so locks until it commits: one shard's appends commit in
//!   position order, and a reader never sees a later position before an
//!   earlier one. Events of an older database get positions in (type, id,
//!   seq-nr) order.
//!
//! An older database is migrated in place, one version after the other.

use tokio_postgres::Client;

/// The schema version this build writes and reads.
pub(crate) const VERSION: i32 = 3;

/// The advisory lock namespace of the journal (`'stea'` in ASCII); the
/// second key is a shard, or [`MIGRATION_LOCK`].
pub(crate) const LOCK_NAMESPACE: i32 = 0x7374_6561;
pub(crate) const MIGRATION_LOCK: i32 = -1;
/// The second key that serialises deploys (see `deployments`).
pub(crate) const DEPLOY_LOCK: i32 = -2;

const V1: &str = "
CREATE TABLE stead_cluster (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    shard_count integer NOT NULL
);
CREATE TABLE stead_leases (
    shard      bigint PRIMARY KEY,
    epoch      bigint NOT NULL,
    owner      text,
    expires_at timestamptz NOT NULL
);
CREATE TABLE stead_events (
    entity_type  text   NOT NULL,
    entity_id    text   NOT NULL,
    seq_nr       bigint NOT NULL,
    shard        bigint NOT NULL,
    command_id   text   NOT NULL,
    timestamp_ms bigint NOT NULL,
    payload      bytea  NOT NULL,
    reply        bytea,
    PRIMARY KEY (entity_type, entity_id, seq_nr)
);
CREATE TABLE stead_entities (
    shard       bigint NOT NULL,
    entity_type text   NOT NULL,
    entity_id   text   NOT NULL,
    PRIMARY KEY (shard, entity_type, entity_id)
);
CREATE TABLE stead_snapshots (
    entity_type text   NOT NULL,
    entity_id   text   NOT NULL,
    shard       bigint NOT NULL,
    seq_nr      bigint NOT NULL,
    record      bytea  NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
);
CREATE TABLE stead_command_ids (
    entity_type text   NOT NULL,
    entity_id   text   NOT NULL,
    command_id  text   NOT NULL,
    shard       bigint NOT NULL,
    seq_nr      bigint NOT NULL,
    at_ms       bigint NOT NULL,
    digest      bytea  NOT NULL,
    PRIMARY KEY (entity_type, entity_id, command_id)
);
CREATE INDEX stead_command_ids_expiry ON stead_command_ids (shard, at_ms);
CREATE TABLE stead_deployments (
    seq         bigserial PRIMARY KEY,
    type_name   text   NOT NULL,
    sha256      text   NOT NULL,
    component   bytea  NOT NULL,
    deployed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
";

/// Version 2: the outbox. Text columns in byte order (`COLLATE "C"`), so a
/// shard's rows page by key the same way whatever the database's locale.
const V2: &str = r#"
CREATE TABLE stead_outbox (
    shard       bigint NOT NULL,
    entity_type text COLLATE "C" NOT NULL,
    entity_id   text COLLATE "C" NOT NULL,
    seq_nr      bigint NOT NULL,
    idx         bigint NOT NULL,
    target_type text   NOT NULL,
    target_id   text   NOT NULL,
    command     bytea  NOT NULL,
    on_accepted bytea,
    on_refused  bytea,
    answer      smallint CHECK (answer IN (1, 2)),
    PRIMARY KEY (shard, entity_type, entity_id, seq_nr, idx)
);
CREATE TABLE stead_timers (
    shard       bigint NOT NULL,
    entity_type text COLLATE "C" NOT NULL,
    entity_id   text COLLATE "C" NOT NULL,
    name        text COLLATE "C" NOT NULL,
    seq_nr      bigint NOT NULL,
    fire_at_ms  bigint NOT NULL,
    command     bytea  NOT NULL,
    PRIMARY KEY (shard, entity_type, entity_id, name)
);
"#;

/// Version 3: refused commands in the idempotency index; shard streams.
const V3: &str = "
ALTER TABLE stead_command_ids
    ADD COLUMN refusal_kind smallint CHECK (refusal_kind IN (1, 2)),
    ADD COLUMN refusal      text;
CREATE TABLE stead_positions (
    shard bigint PRIMARY KEY,
    last  bigint NOT NULL
);
ALTER TABLE stead_events ADD COLUMN position bigint;
UPDATE stead_events e SET position = n.p
FROM (SELECT entity_type, entity_id, seq_nr,
             row_number() OVER (PARTITION BY shard
                                ORDER BY entity_type, entity_id, seq_nr) AS p
      FROM stead_events) n
WHERE e.entity_type = n.entity_type AND e.entity_id = n.entity_id
  AND e.seq_nr = n.seq_nr;
INSERT INTO stead_positions (shard, last)
SELECT shard, max(position) FROM stead_events GROUP BY shard;
ALTER TABLE stead_events ALTER COLUMN position SET NOT NULL;
CREATE INDEX stead_events_stream ON stead_events (entity_type, shard, position);
";

/// The migrations, the one at index `i` taking version `i + 1` to `i + 2`.
const MIGRATIONS: [&str; 2] = [V2, V3];

/// Why the schema could not be made ready.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SchemaError {
    #[error(
        "the database holds stead schema version {found}, newer than this build's {VERSION}: run a stead at least as new as the one that wrote it"
    )]
    Newer { found: i32 },
    #[error(transparent)]
    Sql(#[from] tokio_postgres::Error),
}

/// Creates the tables if the database has none; checks the version.
pub(crate) async fn prepare(client: &mut Client) -> Result<(), SchemaError> {
    let tx = client.transaction().await?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_NAMESPACE, &MIGRATION_LOCK],
    )
    .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS stead_schema (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            version   integer NOT NULL
        )",
    )
    .await?;
    let found: Option<i32> = tx
        .query_opt("SELECT version FROM stead_schema", &[])
        .await?
        .map(|row| row.get(0));
    match found {
        None => {
            tx.batch_execute(V1).await?;
            for migration in MIGRATIONS {
                tx.batch_execute(migration).await?;
            }
            tx.execute(
                "INSERT INTO stead_schema (version) VALUES ($1)",
                &[&VERSION],
            )
            .await?;
            tracing::info!(version = VERSION, "created the journal's tables");
        }
        Some(found) if found > VERSION => return Err(SchemaError::Newer { found }),
        Some(found) if found < VERSION => {
            let from = usize::try_from(found.max(1) - 1).unwrap_or(0);
            for migration in &MIGRATIONS[from..] {
                tx.batch_execute(migration).await?;
            }
            tx.execute("UPDATE stead_schema SET version = $1", &[&VERSION])
                .await?;
            tracing::info!(from = found, to = VERSION, "migrated the journal's tables");
        }
        Some(_) => {}
    }
    tx.commit().await?;
    Ok(())
}
