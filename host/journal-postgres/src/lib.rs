//! The shared journal backend on PostgreSQL: every node of a cluster reaches
//! the same events, snapshots, idempotency index, shard leases and
//! deployments (tables in [`schema`]).
//!
//! **Group commit.** Appends from every shard worker go to a queue; a few
//! committer tasks each take everything queued and write it in one
//! transaction (multi-row inserts from arrays), so a busy node pays one
//! commit per batch, not per command, and the next batch is built while the
//! last one's commit is being flushed ([`commit`]).
//!
//! **Leases on the database's clock.** A claim sets `expires_at =
//! clock_timestamp() + ttl` only on a shard that is free, released, expired
//! or already this node's, and moves its epoch; a renewal extends it while
//! the epoch and owner still match; a release frees the shard at once and
//! keeps its epoch ([`leases`]). No node's wall clock is ever compared with
//! another's.
//!
//! **Fencing inside the transaction.** An append's transaction first takes
//! a shared advisory lock on each of its shards, then reads their lease rows
//! and writes only for appends whose (epoch, owner) still match. A claim
//! takes the exclusive lock of each shard it moves, so the two serialise: a
//! claim waits for appends in flight, and once it has committed every later
//! append of the old holder is refused `Fenced`. (Advisory locks rather than
//! `SELECT ... FOR SHARE`: a share row lock writes the lease row's tuple on
//! every append, turning hundreds of commits per second into multixact churn
//! on a few hot rows.) The primary key (type, id, seq-nr) is the last line:
//! a second writer of one sequence number fails, never overwrites.
//!
//! Like the other backends, this journal also keeps the leases it holds in
//! memory: a token it does not hold is refused before any round trip, and a
//! lease the database says was lost is forgotten at once.
//!
//! The [`Journal`] methods block; the async client runs on the journal's
//! own small runtime, and the calling thread (a shard worker's, or
//! `spawn_blocking`) waits without starting a runtime of its own, so a
//! worker driving its loop's runtime may call them. Every call is bounded by the
//! configured timeout: an unreachable database fails requests as
//! [`JournalError::Unavailable`] naming it, and the pool reconnects by
//! itself when it is back.

mod commit;
mod deployments;
mod leases;
mod outbox;
mod schema;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use stead_journal::{
    Answer, AppendError, CommandIdRecord, CommitObserver, EntityAppend, EntityKey, EventRecord,
    FenceToken, FiredTimer, Journal, JournalError, PendingSend, PendingTimer, Refusal, SendId,
    ShardId, SnapshotRecord, StoredEvent, StreamEvent,
};
use stead_types::config::PostgresOptions;
use tokio_postgres::error::SqlState;

/// Committer tasks: transactions in flight at once.
const COMMITTERS: usize = 3;

/// A journal in a PostgreSQL database (see the module docs).
pub struct PostgresJournal {
    shared: Arc<Shared>,
    commits: tokio::sync::mpsc::UnboundedSender<commit::Job>,
    /// Dropped with `shutdown_background`, so dropping the journal never
    /// blocks nor panics, even from async code.
    runtime: Option<tokio::runtime::Runtime>,
}

/// What the committers and the blocking calls share.
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) options: PostgresOptions,
    /// The leases this journal holds: shard -> epoch.
    held: Mutex<HashMap<ShardId, u64>>,
    pub(crate) observer: OnceLock<Arc<dyn CommitObserver>>,
}

impl Shared {
    pub(crate) fn held(&self) -> MutexGuard<'_, HashMap<ShardId, u64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The epoch this journal holds `shard` under, 0 if none.
    pub(crate) fn held_epoch(&self, shard: ShardId) -> u64 {
        self.held().get(&shard).copied().unwrap_or(0)
    }

    /// Forgets a lease the database says is no longer ours.
    pub(crate) fn lost(&self, token: FenceToken) {
        let mut held = self.held();
        if held.get(&token.shard) == Some(&token.epoch) {
            held.remove(&token.shard);
            tracing::warn!(
                shard = token.shard,
                epoch = token.epoch,
                "lease lost: another node holds the shard"
            );
        }
    }

    /// A failure of the database, named (without its password).
    pub(crate) fn error(&self, what: &str, e: &tokio_postgres::Error) -> JournalError {
        let db = self.options.redacted_url();
        // `db error` alone says nothing: the server's own message says what.
        let detail = match e.as_db_error() {
            Some(server) => format!("{} ({})", server.message(), server.code().code()),
            None => e.to_string(),
        };
        let text = format!("PostgreSQL at {db}, {what}: {detail}");
        match e.code().map(SqlState::code) {
            Some(code) if code.starts_with("53") => JournalError::Full(text),
            // Connection lost, server shutting down or starting, session
            // ended (idle in transaction), read-only standby, lock timeout.
            Some(code)
                if code.starts_with("08")
                    || code.starts_with("57P")
                    || code == "25P03"
                    || code == "25006"
                    || code == "55P03" =>
            {
                JournalError::Unavailable(text)
            }
            Some(_) => JournalError::Io(text),
            // No server answer: the connection failed or closed.
            None => JournalError::Unavailable(text),
        }
    }

    pub(crate) fn pool_error(&self, e: deadpool_postgres::PoolError) -> JournalError {
        let db = self.options.redacted_url();
        match e {
            deadpool_postgres::PoolError::Backend(e) => self.error("connecting", &e),
            other => JournalError::Unavailable(format!("PostgreSQL at {db}: {other}")),
        }
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, JournalError> {
        self.pool.get().await.map_err(|e| self.pool_error(e))
    }
}

/// Why a journal could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid PostgreSQL URL `{url}`: {reason}")]
    Url { url: String, reason: String },
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl From<OpenError> for JournalError {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Journal(e) => e,
            other => JournalError::Io(other.to_string()),
        }
    }
}

impl PostgresJournal {
    /// Connects, creates or checks the schema, and starts the committers.
    /// Blocks; call it from a plain thread or `spawn_blocking`.
    pub fn open(options: PostgresOptions) -> Result<Self, OpenError> {
        let mut config: tokio_postgres::Config =
            options
                .url
                .parse()
                .map_err(|e: tokio_postgres::Error| OpenError::Url {
                    url: options.redacted_url(),
                    reason: e.to_string(),
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.timeout);
        }
        // A node frozen or cut off in the middle of a transaction holds its
        // shards' advisory locks, and a claim would wait for them forever:
        // the server ends such a session after half a lease ttl, so the next
        // holder's claim goes through soon after the lease expires (and the
        // frozen node's commit fails).
        let idle_ms = (options.lease_ttl / 2).as_millis().max(100);
        let session = format!("-c idle_in_transaction_session_timeout={idle_ms}");
        let session = match config.get_options() {
            Some(theirs) if !theirs.is_empty() => format!("{theirs} {session}"),
            _ => session,
        };
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .options(&session)
            .application_name("stead");
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stead-postgres")
            .enable_all()
            .build()
            .map_err(|e| JournalError::Io(format!("starting the PostgreSQL client: {e}")))?;
        let pool = {
            let _enter = runtime.enter();
            Pool::builder(manager)
                .max_size(options.pool_size.max(COMMITTERS + 1))
                .runtime(deadpool_postgres::Runtime::Tokio1)
                .wait_timeout(Some(options.timeout))
                .create_timeout(Some(options.timeout))
                .recycle_timeout(Some(options.timeout))
                .build()
                .map_err(|e| JournalError::Io(format!("building the connection pool: {e}")))?
        };
        let shared = Arc::new(Shared {
            pool,
            options,
            held: Mutex::new(HashMap::new()),
            observer: OnceLock::new(),
        });
        let prepared = runtime.block_on(async {
            let mut client = shared.client().await?;
            schema::prepare(&mut client).await.map_err(|e| match e {
                schema::SchemaError::Sql(e) => shared.error("preparing the schema", &e),
                newer => JournalError::Io(newer.to_string()),
            })
        });
        prepared?;
        let (commits, queue) = tokio::sync::mpsc::unbounded_channel();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        for _ in 0..COMMITTERS {
            runtime.spawn(commit::committer(shared.clone(), queue.clone()));
        }
        tracing::info!(database = %shared.options.redacted_url(), node = %shared.options.node_id, "PostgreSQL journal open");
        Ok(Self {
            shared,
            commits,
            runtime: Some(runtime),
        })
    }

    /// Records `shard_count` as the cluster's if none is yet, else checks
    /// it is the one recorded: nodes that disagree would look for an
    /// entity in different shards.
    pub fn check_shard_count(&self, shard_count: u32) -> Result<(), JournalError> {
        let wanted = i32::try_from(shard_count)
            .map_err(|_| JournalError::Io(format!("shard count {shard_count} is too large")))?;
        let recorded: i32 = self.run("checking the shard count", async {
            let client = self.shared.client().await?;
            let err = |e: tokio_postgres::Error| self.shared.error("checking the shard count", &e);
            client
                .execute(
                    "INSERT INTO stead_cluster (shard_count) VALUES ($1) ON CONFLICT DO NOTHING",
                    &[&wanted],
                )
                .await
                .map_err(err)?;
            let row = client
                .query_one("SELECT shard_count FROM stead_cluster", &[])
                .await
                .map_err(err)?;
            Ok(row.get(0))
        })?;
        if recorded != wanted {
            return Err(JournalError::Io(format!(
                "the database at {} holds a cluster of {recorded} shards; this node was started with {shard_count} (the shard count is fixed when the database is first used)",
                self.describe()
            )));
        }
        Ok(())
    }

    /// The database's URL without its password.
    pub fn describe(&self) -> String {
        self.shared.options.redacted_url()
    }

    /// Runs `work` in the journal's runtime's context, bounded by the
    /// timeout, blocking the calling thread until it is done. The calling
    /// thread may be driving a runtime of its own (a shard worker's), so
    /// this never starts a runtime on it: the connections' I/O and the
    /// timer are driven by the journal's runtime threads.
    pub(crate) fn run<T>(
        &self,
        what: &str,
        work: impl Future<Output = Result<T, JournalError>>,
    ) -> Result<T, JournalError> {
        let Some(runtime) = &self.runtime else {
            return Err(JournalError::Closed);
        };
        let timeout = self.shared.options.timeout;
        let _context = runtime.enter();
        // Unconstrained: a worker's task has spent tokio's cooperative
        // budget on its earlier calls within this poll, and nothing here
        // returns to its scheduler to refill it (a spent budget would make
        // every tokio primitive below answer "not yet" forever).
        futures_executor::block_on(tokio::task::unconstrained(async {
            tokio::time::timeout(timeout, work)
                .await
                .unwrap_or_else(|_| {
                    Err(JournalError::Unavailable(format!(
                        "PostgreSQL at {}: no answer within {timeout:?} ({what})",
                        self.shared.options.redacted_url()
                    )))
                })
        }))
    }
}

impl Drop for PostgresJournal {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, JournalError> {
    u64::try_from(value).map_err(|_| JournalError::Corrupt {
        key: what.to_owned(),
        reason: format!("negative value {value}"),
    })
}

/// A refusal from its columns (kind 1 rejected, 2 invalid command).
fn refusal(kind: Option<i16>, message: Option<String>) -> Option<Refusal> {
    let message = message.unwrap_or_default();
    match kind? {
        2 => Some(Refusal::InvalidCommand(message)),
        _ => Some(Refusal::Rejected(message)),
    }
}

/// The columns of a refusal.
pub(crate) fn refusal_columns(refusal: Option<&Refusal>) -> (Option<i16>, Option<&str>) {
    match refusal {
        None => (None, None),
        Some(Refusal::Rejected(m)) => (Some(1), Some(m)),
        Some(Refusal::InvalidCommand(m)) => (Some(2), Some(m)),
    }
}

fn digest(bytes: &[u8], key: &str) -> Result<[u8; 32], JournalError> {
    bytes.try_into().map_err(|_| JournalError::Corrupt {
        key: key.to_owned(),
        reason: format!("digest of {} bytes, not 32", bytes.len()),
    })
}

impl Journal for PostgresJournal {
    fn set_commit_observer(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.shared.observer.set(observer);
    }

    fn claim_shards(&self, shards: &[ShardId]) -> Result<Vec<FenceToken>, JournalError> {
        let tokens = self.run("claiming shards", leases::claim(&self.shared, shards))?;
        let mut held = self.shared.held();
        for token in &tokens {
            held.insert(token.shard, token.epoch);
        }
        Ok(tokens)
    }

    fn renew_shards(&self, tokens: &[FenceToken]) -> Result<Vec<FenceToken>, JournalError> {
        let mine: Vec<FenceToken> = {
            let held = self.shared.held();
            tokens
                .iter()
                .filter(|t| held.get(&t.shard) == Some(&t.epoch))
                .copied()
                .collect()
        };
        let renewed = self.run("renewing leases", leases::renew(&self.shared, &mine))?;
        for token in mine.iter().filter(|t| !renewed.contains(t)) {
            self.shared.lost(*token);
        }
        Ok(renewed)
    }

    fn lease_ttl(&self) -> Option<Duration> {
        Some(self.shared.options.lease_ttl)
    }

    fn release_shards(&self, tokens: &[FenceToken]) -> Result<(), JournalError> {
        let mine: Vec<FenceToken> = {
            let mut held = self.shared.held();
            let mine: Vec<FenceToken> = tokens
                .iter()
                .filter(|t| held.get(&t.shard) == Some(&t.epoch))
                .copied()
                .collect();
            for t in &mine {
                held.remove(&t.shard);
            }
            mine
        };
        if mine.is_empty() {
            return Ok(());
        }
        self.run("releasing shards", leases::release(&self.shared, &mine))
    }

    fn append(&self, appends: Vec<EntityAppend>) -> Vec<Result<(), AppendError>> {
        let job = commit::Job::new(&self.shared, appends);
        if job.is_settled() {
            return job.into_results();
        }
        let n = job.len();
        let (job, reply) = job.with_reply();
        if self.commits.send(job).is_err() {
            return vec![Err(AppendError::Storage(JournalError::Closed)); n];
        }
        // Not `blocking_recv`: the caller may be driving a runtime (and
        // unconstrained, as in `run`).
        futures_executor::block_on(tokio::task::unconstrained(reply))
            .unwrap_or_else(|_| vec![Err(AppendError::Storage(JournalError::Closed)); n])
    }

    fn last_seq_nr(&self, key: &EntityKey) -> Result<u64, JournalError> {
        self.run("reading a sequence number", async {
            let client = self.shared.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT COALESCE(MAX(seq_nr), 0) FROM stead_events
                     WHERE entity_type = $1 AND entity_id = $2",
                )
                .await
                .map_err(|e| self.shared.error("reading a sequence number", &e))?;
            let row = client
                .query_one(&statement, &[&key.entity_type, &key.entity_id])
                .await
                .map_err(|e| self.shared.error("reading a sequence number", &e))?;
            to_u64(row.get(0), "seq_nr")
        })
    }

    fn read_events(
        &self,
        key: &EntityKey,
        from: u64,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.run("reading events", async {
            let client = self.shared.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT seq_nr, command_id, timestamp_ms, payload, reply FROM stead_events
                     WHERE entity_type = $1 AND entity_id = $2 AND seq_nr >= $3
                     ORDER BY seq_nr LIMIT $4",
                )
                .await
                .map_err(|e| self.shared.error("reading events", &e))?;
            let rows = client
                .query(
                    &statement,
                    &[&key.entity_type, &key.entity_id, &to_i64(from), &limit],
                )
                .await
                .map_err(|e| self.shared.error("reading events", &e))?;
            rows.iter()
                .map(|row| {
                    Ok(StoredEvent {
                        seq_nr: to_u64(row.get(0), "seq_nr")?,
                        record: EventRecord {
                            command_id: row.get(1),
                            timestamp_ms: to_u64(row.get(2), "timestamp_ms")?,
                            payload: row.get(3),
                            reply: row.get(4),
                        },
                    })
                })
                .collect()
        })
    }

    fn save_snapshot(
        &self,
        key: &EntityKey,
        snapshot: &SnapshotRecord,
    ) -> Result<(), JournalError> {
        let record = snapshot.encode();
        self.run("saving a snapshot", async {
            let client = self.shared.client().await?;
            let statement = client
                .prepare_cached(
                    "INSERT INTO stead_snapshots (entity_type, entity_id, shard, seq_nr, record)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (entity_type, entity_id) DO UPDATE
                     SET shard = EXCLUDED.shard, seq_nr = EXCLUDED.seq_nr, record = EXCLUDED.record",
                )
                .await
                .map_err(|e| self.shared.error("saving a snapshot", &e))?;
            client
                .execute(
                    &statement,
                    &[
                        &key.entity_type,
                        &key.entity_id,
                        &i64::from(key.shard),
                        &to_i64(snapshot.seq_nr),
                        &record,
                    ],
                )
                .await
                .map_err(|e| self.shared.error("saving a snapshot", &e))?;
            Ok(())
        })
    }

    fn load_snapshot(&self, key: &EntityKey) -> Result<Option<SnapshotRecord>, JournalError> {
        self.run("loading a snapshot", async {
            let client = self.shared.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT record FROM stead_snapshots WHERE entity_type = $1 AND entity_id = $2",
                )
                .await
                .map_err(|e| self.shared.error("loading a snapshot", &e))?;
            let row = client
                .query_opt(&statement, &[&key.entity_type, &key.entity_id])
                .await
                .map_err(|e| self.shared.error("loading a snapshot", &e))?;
            row.map(|row| {
                SnapshotRecord::decode(row.get(0)).map_err(|e| JournalError::Corrupt {
                    key: format!("snapshot of {key}"),
                    reason: e.0,
                })
            })
            .transpose()
        })
    }

    fn read_stream(
        &self,
        entity_type: &str,
        from: &[(ShardId, u64)],
        limit: usize,
    ) -> Result<Vec<StreamEvent>, JournalError> {
        if limit == 0 || from.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let shards: Vec<i64> = from.iter().map(|(s, _)| i64::from(*s)).collect();
        let after: Vec<i64> = from.iter().map(|(_, p)| to_i64(*p)).collect();
        self.run("reading a stream", async {
            let client = self.shared.client().await?;
            let statement = client
                .prepare_cached(
                    // One index range per shard (type, shard, position).
                    "SELECT t.s, e.position, e.entity_id, e.seq_nr, e.command_id,
                            e.timestamp_ms, e.payload, e.reply
                     FROM unnest($2::bigint[], $3::bigint[]) WITH ORDINALITY AS t(s, after, i)
                     CROSS JOIN LATERAL (
                         SELECT position, entity_id, seq_nr, command_id, timestamp_ms,
                                payload, reply
                         FROM stead_events
                         WHERE entity_type = $1 AND shard = t.s AND position > t.after
                         ORDER BY position LIMIT $4
                     ) AS e
                     ORDER BY t.i, e.position",
                )
                .await
                .map_err(|e| self.shared.error("reading a stream", &e))?;
            let rows = client
                .query(&statement, &[&entity_type, &shards, &after, &limit])
                .await
                .map_err(|e| self.shared.error("reading a stream", &e))?;
            rows.iter()
                .map(|row| {
                    let shard = ShardId::try_from(row.get::<_, i64>(0)).map_err(|_| {
                        JournalError::Corrupt {
                            key: "stead_events.shard".into(),
                            reason: "a shard out of range".into(),
                        }
                    })?;
                    Ok(StreamEvent {
                        shard,
                        position: to_u64(row.get(1), "position")?,
                        entity_id: row.get(2),
                        event: StoredEvent {
                            seq_nr: to_u64(row.get(3), "seq_nr")?,
                            record: EventRecord {
                                command_id: row.get(4),
                                timestamp_ms: to_u64(row.get(5), "timestamp_ms")?,
                                payload: row.get(6),
                                reply: row.get(7),
                            },
                        },
                    })
                })
                .collect()
        })
    }

    fn entities_in_shard(&self, shard: ShardId) -> Result<Vec<(String, String)>, JournalError> {
        self.run("listing a shard's entities", async {
            let client = self.shared.client().await?;
            let rows = client
                .query(
                    "SELECT entity_type, entity_id FROM stead_entities WHERE shard = $1",
                    &[&i64::from(shard)],
                )
                .await
                .map_err(|e| self.shared.error("listing a shard's entities", &e))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn find_command_id(
        &self,
        key: &EntityKey,
        command_id: &str,
    ) -> Result<Option<CommandIdRecord>, JournalError> {
        self.run("looking up a command id", async {
            let client = self.shared.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT seq_nr, at_ms, digest, refusal_kind, refusal FROM stead_command_ids
                     WHERE entity_type = $1 AND entity_id = $2 AND command_id = $3",
                )
                .await
                .map_err(|e| self.shared.error("looking up a command id", &e))?;
            let row = client
                .query_opt(&statement, &[&key.entity_type, &key.entity_id, &command_id])
                .await
                .map_err(|e| self.shared.error("looking up a command id", &e))?;
            row.map(|row| {
                Ok(CommandIdRecord {
                    command_id: command_id.to_owned(),
                    seq_nr: to_u64(row.get(0), "seq_nr")?,
                    at_ms: to_u64(row.get(1), "at_ms")?,
                    digest: digest(row.get(2), "digest")?,
                    refusal: refusal(row.get(3), row.get(4)),
                })
            })
            .transpose()
        })
    }

    fn find_command_ids(
        &self,
        lookups: &[(EntityKey, String)],
    ) -> Result<Vec<Option<CommandIdRecord>>, JournalError> {
        if lookups.is_empty() {
            return Ok(Vec::new());
        }
        let types: Vec<&str> = lookups
            .iter()
            .map(|(k, _)| k.entity_type.as_str())
            .collect();
        let ids: Vec<&str> = lookups.iter().map(|(k, _)| k.entity_id.as_str()).collect();
        let commands: Vec<&str> = lookups.iter().map(|(_, c)| c.as_str()).collect();
        self.run("looking up command ids", async {
            let err = |e: tokio_postgres::Error| self.shared.error("looking up command ids", &e);
            let client = self.shared.client().await?;
            let statement = client
                .prepare_cached(
                    // LATERAL with OFFSET 0 (never flattened into a join):
                    // one primary-key lookup per id, whatever plan the
                    // array's unknown length would otherwise get (a plan made
                    // while the table was small scanned all of it later).
                    "SELECT t.i, c.seq_nr, c.at_ms, c.digest, c.refusal_kind, c.refusal
                     FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS t(ty, id, cmd, i)
                     CROSS JOIN LATERAL (
                         SELECT seq_nr, at_ms, digest, refusal_kind, refusal FROM stead_command_ids
                         WHERE entity_type = t.ty AND entity_id = t.id AND command_id = t.cmd
                         OFFSET 0
                     ) AS c",
                )
                .await
                .map_err(err)?;
            let rows = client
                .query(&statement, &[&types, &ids, &commands])
                .await
                .map_err(err)?;
            let mut found = vec![None; lookups.len()];
            for row in &rows {
                let i = usize::try_from(row.get::<_, i64>(0) - 1).unwrap_or(usize::MAX);
                let Some(slot) = found.get_mut(i) else {
                    continue;
                };
                *slot = Some(CommandIdRecord {
                    command_id: lookups[i].1.clone(),
                    seq_nr: to_u64(row.get(1), "seq_nr")?,
                    at_ms: to_u64(row.get(2), "at_ms")?,
                    digest: digest(row.get(3), "digest")?,
                    refusal: refusal(row.get(4), row.get(5)),
                });
            }
            Ok(found)
        })
    }

    fn expire_command_ids(
        &self,
        fence: FenceToken,
        before_ms: u64,
        limit: usize,
    ) -> Result<usize, AppendError> {
        let current = self.shared.held_epoch(fence.shard);
        if current == 0 || current != fence.epoch {
            return Err(AppendError::Fenced {
                shard: fence.shard,
                presented: fence.epoch,
                current,
            });
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let result = self.run("expiring command ids", async {
            Ok(leases::expire_command_ids(&self.shared, fence, to_i64(before_ms), limit).await)
        });
        match result {
            Ok(inner) => inner,
            Err(e) => Err(AppendError::Storage(e)),
        }
    }

    fn read_outbox(
        &self,
        shard: ShardId,
        after: Option<&SendId>,
        limit: usize,
    ) -> Result<Vec<PendingSend>, JournalError> {
        self.run(
            "reading the outbox",
            outbox::read_outbox(&self.shared, shard, after, limit),
        )
    }

    fn ack_sends(&self, fence: FenceToken, ids: &[SendId]) -> Result<(), AppendError> {
        let result = self.run("acknowledging sends", async {
            Ok(outbox::ack_sends(&self.shared, fence, ids).await)
        });
        result.unwrap_or_else(|e| Err(AppendError::Storage(e)))
    }

    fn answer_sends(
        &self,
        fence: FenceToken,
        answers: &[(SendId, Answer)],
    ) -> Result<(), AppendError> {
        let result = self.run("answering sends", async {
            Ok(outbox::answer_sends(&self.shared, fence, answers).await)
        });
        result.unwrap_or_else(|e| Err(AppendError::Storage(e)))
    }

    fn read_timers(
        &self,
        shard: ShardId,
        after: Option<(&EntityKey, &str)>,
        limit: usize,
    ) -> Result<Vec<PendingTimer>, JournalError> {
        self.run(
            "reading timers",
            outbox::read_timers(&self.shared, shard, after, limit),
        )
    }

    fn ack_timers(&self, fence: FenceToken, fired: &[FiredTimer]) -> Result<(), AppendError> {
        let result = self.run("acknowledging timers", async {
            Ok(outbox::ack_timers(&self.shared, fence, fired).await)
        });
        result.unwrap_or_else(|e| Err(AppendError::Storage(e)))
    }
}

#[cfg(test)]
mod tests;
