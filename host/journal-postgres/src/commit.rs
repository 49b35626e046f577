//! Group commit: the committer tasks and the transaction of one batch.
//!
//! A [`Job`] is one `append` call: its appends, the results settled before
//! any round trip (invalid, or a lease this journal does not hold), and the
//! reply channel of the blocked caller. A committer takes every job queued,
//! up to [`MAX_ROWS`] events, and writes them in one transaction:
//!
//! 1. shared advisory locks on the batch's shards (in order), the lease rows
//!    of those shards, and the last sequence number of every entity: three
//!    statements sent at once (pipelined);
//! 2. in queue order, each append is checked against its lease (epoch and
//!    owner) and its entity's last sequence number, which then moves on, so
//!    appends of one entity in one batch chain;
//! 3. the accepted appends' events, new entities and command ids, inserted
//!    from arrays, and COMMIT: four statements sent at once.
//!
//! So a batch costs two round trips (BEGIN goes with the reads), whatever
//! its size. A connection whose transaction did not end cleanly is taken
//! out of the pool ([`Detached`]), never reused mid-transaction.
//!
//! A statement that fails for a reason of the data (a unique violation when
//! a writer outside the fence raced us, say) rolls the whole transaction
//! back; the batch is then retried one append per transaction, so one bad
//! append fails alone. A failure of the connection fails the whole batch as
//! `Unavailable`: the outcome of its COMMIT is unknown, so callers drop
//! the entities from memory and retry with their command ids.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use stead_journal::{AppendError, EntityAppend, EntityKey, JournalError};
use stead_types::effects::TimerChange;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::{Shared, leases, to_i64};

/// Most events one transaction writes (a committer stops taking jobs past it).
const MAX_ROWS: usize = 4096;

type Results = Vec<Result<(), AppendError>>;

/// One `append` call on its way to a committer.
pub(crate) struct Job {
    appends: Vec<EntityAppend>,
    /// `Some` once the append's outcome is known.
    results: Vec<Option<Result<(), AppendError>>>,
    reply: Option<oneshot::Sender<Results>>,
}

impl Job {
    /// Settles what needs no round trip: invalid appends and fences this
    /// journal does not hold.
    pub(crate) fn new(shared: &Shared, appends: Vec<EntityAppend>) -> Self {
        let results = {
            let held = shared.held();
            appends
                .iter()
                .map(|a| {
                    if let Err(e) = a.check() {
                        return Some(Err(e));
                    }
                    let current = held.get(&a.key.shard).copied().unwrap_or(0);
                    (current == 0 || current != a.fence.epoch).then_some(Err(AppendError::Fenced {
                        shard: a.key.shard,
                        presented: a.fence.epoch,
                        current,
                    }))
                })
                .collect()
        };
        Self {
            appends,
            results,
            reply: None,
        }
    }

    pub(crate) fn is_settled(&self) -> bool {
        self.results.iter().all(Option::is_some)
    }

    pub(crate) fn len(&self) -> usize {
        self.appends.len()
    }

    pub(crate) fn with_reply(mut self) -> (Self, oneshot::Receiver<Results>) {
        let (tx, rx) = oneshot::channel();
        self.reply = Some(tx);
        (self, rx)
    }

    pub(crate) fn into_results(self) -> Results {
        self.results
            .into_iter()
            .map(|r| r.unwrap_or(Err(AppendError::Storage(JournalError::Closed))))
            .collect()
    }

    fn rows(&self) -> usize {
        self.appends.iter().map(|a| a.events.len()).sum()
    }

    fn finish(mut self) {
        if let Some(reply) = self.reply.take() {
            let _ = reply.send(self.into_results());
        }
    }
}

/// Takes batches of jobs off the queue and commits them until the journal
/// is dropped.
pub(crate) async fn committer(
    shared: Arc<Shared>,
    queue: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>,
) {
    loop {
        let mut jobs = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut rows = first.rows();
            let mut jobs = vec![first];
            while rows < MAX_ROWS {
                match queue.try_recv() {
                    Ok(job) => {
                        rows += job.rows();
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
            jobs
        };
        commit_jobs(&shared, &mut jobs).await;
        for job in jobs {
            job.finish();
        }
    }
}

/// (job, append) of every append still to write, in queue order.
fn pending(jobs: &[Job]) -> Vec<(usize, usize)> {
    jobs.iter()
        .enumerate()
        .flat_map(|(j, job)| {
            job.results
                .iter()
                .enumerate()
                .filter(|(_, r)| r.is_none())
                .map(move |(a, _)| (j, a))
        })
        .collect()
}

async fn commit_jobs(shared: &Shared, jobs: &mut [Job]) {
    let items = pending(jobs);
    let started = Instant::now();
    let timeout = shared.options.timeout;
    let attempt = tokio::time::timeout(timeout, transaction(shared, jobs, &items)).await;
    let outcome = match attempt {
        Ok(outcome) => outcome,
        Err(_) => Err(Failure::Unavailable(JournalError::Unavailable(format!(
            "PostgreSQL at {}: no commit within {timeout:?}; the outcome is unknown",
            shared.options.redacted_url()
        )))),
    };
    match outcome {
        Ok(results) => {
            let committed = results.iter().filter(|r| r.is_ok()).count();
            for (&(j, a), result) in items.iter().zip(results) {
                jobs[j].results[a] = Some(result);
            }
            if let Some(observer) = shared.observer.get().filter(|_| committed > 0) {
                observer.committed(committed, started.elapsed());
            }
        }
        Err(Failure::Data(e)) if items.len() > 1 => {
            tracing::debug!(error = %e, appends = items.len(), "batch refused; retrying one append per transaction");
            for item in items {
                let single = [item];
                let outcome =
                    tokio::time::timeout(timeout, transaction(shared, jobs, &single)).await;
                let result = match outcome {
                    Ok(Ok(mut results)) => results.pop().unwrap_or(Ok(())),
                    Ok(Err(Failure::Data(e) | Failure::Unavailable(e))) => {
                        Err(AppendError::Storage(e))
                    }
                    Err(_) => Err(AppendError::Storage(JournalError::Unavailable(format!(
                        "PostgreSQL at {}: no commit within {timeout:?}; the outcome is unknown",
                        shared.options.redacted_url()
                    )))),
                };
                jobs[item.0].results[item.1] = Some(result);
            }
        }
        Err(Failure::Data(e) | Failure::Unavailable(e)) => {
            for (j, a) in items {
                jobs[j].results[a] = Some(Err(AppendError::Storage(e.clone())));
            }
        }
    }
}

/// Why a transaction did not commit.
enum Failure {
    /// The database refused a statement for the data's sake: worth
    /// retrying the appends one by one.
    Data(JournalError),
    /// The connection or the server failed: no point retrying now.
    Unavailable(JournalError),
}

impl Failure {
    fn of(shared: &Shared, e: &tokio_postgres::Error) -> Self {
        match shared.error("appending", e) {
            e @ (JournalError::Unavailable(_) | JournalError::Full(_)) => Failure::Unavailable(e),
            e => Failure::Data(e),
        }
    }
}

/// (entity type, entity id, command id).
type CommandIdKey<'a> = (&'a str, &'a str, &'a str);
/// (shard, seq-nr, at_ms, digest, refusal kind, refusal).
type CommandIdRow<'a> = (i64, i64, i64, &'a [u8], Option<i16>, Option<&'a str>);

/// Columns of the rows one transaction inserts.
#[derive(Default)]
struct Rows<'a> {
    ev_type: Vec<&'a str>,
    ev_id: Vec<&'a str>,
    ev_seq: Vec<i64>,
    ev_shard: Vec<i64>,
    ev_command: Vec<&'a str>,
    ev_time: Vec<i64>,
    ev_payload: Vec<&'a [u8]>,
    ev_reply: Vec<Option<&'a [u8]>>,
    new_shard: Vec<i64>,
    new_type: Vec<&'a str>,
    new_id: Vec<&'a str>,
    /// Command ids by (type, id, command id): the last write of one wins,
    /// as one INSERT may not touch a row twice.
    commands: HashMap<CommandIdKey<'a>, CommandIdRow<'a>>,
    outbox: Outbox<'a>,
    /// Timers by (type, id, name): the batch's last change of one wins
    /// (`None`: cancelled), as its changes apply in queue order.
    timers: HashMap<TimerKey<'a>, (i64, Option<TimerRow<'a>>)>,
}

/// Columns of the sends one transaction inserts.
#[derive(Default)]
struct Outbox<'a> {
    shard: Vec<i64>,
    source_type: Vec<&'a str>,
    source_id: Vec<&'a str>,
    seq: Vec<i64>,
    index: Vec<i64>,
    target_type: Vec<&'a str>,
    target_id: Vec<&'a str>,
    command: Vec<&'a [u8]>,
    on_accepted: Vec<Option<&'a [u8]>>,
    on_refused: Vec<Option<&'a [u8]>>,
}

/// (entity type, entity id, timer name).
type TimerKey<'a> = (&'a str, &'a str, &'a str);
/// (seq-nr, fire-at, command).
type TimerRow<'a> = (i64, i64, &'a [u8]);

/// Writes `items` of `jobs` in one transaction; the results are in the
/// order of `items`.
async fn transaction(
    shared: &Shared,
    jobs: &[Job],
    items: &[(usize, usize)],
) -> Result<Results, Failure> {
    let err = |e: tokio_postgres::Error| Failure::of(shared, &e);
    let appends: Vec<&EntityAppend> = items.iter().map(|&(j, a)| &jobs[j].appends[a]).collect();
    let mut shards: Vec<i64> = appends.iter().map(|a| i64::from(a.key.shard)).collect();
    shards.sort_unstable();
    shards.dedup();
    // Distinct entities, in first-seen order.
    let mut entity_index: HashMap<&EntityKey, usize> = HashMap::new();
    let mut entities: Vec<&EntityKey> = Vec::new();
    for append in &appends {
        entity_index.entry(&append.key).or_insert_with(|| {
            entities.push(&append.key);
            entities.len() - 1
        });
    }
    let types: Vec<&str> = entities.iter().map(|k| k.entity_type.as_str()).collect();
    let ids: Vec<&str> = entities.iter().map(|k| k.entity_id.as_str()).collect();

    let client = Detached::new(shared.client().await.map_err(Failure::Unavailable)?);
    // Statements are prepared once per connection (cached) before any of
    // this transaction is sent. A query goes out when first polled, so each
    // `join!` below sends its statements in order in one round trip: BEGIN,
    // the locks, then the lease rows and sequence numbers read under them.
    let (lock, lease_rows, last_seq) = tokio::join!(
        client.prepare_cached(leases::LOCK_SHARED),
        client.prepare_cached(leases::READ),
        client.prepare_cached(
            "SELECT COALESCE((SELECT MAX(e.seq_nr) FROM stead_events e
                              WHERE e.entity_type = t.ty AND e.entity_id = t.id), 0)
             FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(ty, id, i)
             ORDER BY t.i",
        ),
    );
    let (lock, lease_rows, last_seq) = (
        lock.map_err(err)?,
        lease_rows.map_err(err)?,
        last_seq.map_err(err)?,
    );
    let inserts = Inserts::prepare(&client).await.map_err(err)?;
    let lock_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
        [&crate::schema::LOCK_NAMESPACE, &shards];
    let lease_params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&shards];
    let last_params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&types, &ids];
    let (begun, locked, leases, last) = tokio::join!(
        client.batch_execute("BEGIN"),
        client.execute(&lock, &lock_params),
        client.query(&lease_rows, &lease_params),
        client.query(&last_seq, &last_params),
    );
    begun.map_err(err)?;
    locked.map_err(err)?;
    let leases = leases::parse(&leases.map_err(err)?);
    let mut last: Vec<u64> = last
        .map_err(err)?
        .iter()
        .map(|r| u64::try_from(r.get::<_, i64>(0)).unwrap_or(0))
        .collect();
    if last.len() != entities.len() {
        return Err(Failure::Data(JournalError::Io(
            "sequence numbers of the batch came back incomplete".into(),
        )));
    }

    let owner = shared.options.node_id.as_str();
    let mut rows = Rows::default();
    let mut results = Vec::with_capacity(appends.len());
    for append in &appends {
        let key = &append.key;
        let (epoch, holder) = leases
            .get(&key.shard)
            .map_or((0, None), |(e, o)| (*e, o.as_deref()));
        if epoch != append.fence.epoch || holder != Some(owner) {
            shared.lost(append.fence);
            results.push(Err(AppendError::Fenced {
                shard: key.shard,
                presented: append.fence.epoch,
                current: epoch,
            }));
            continue;
        }
        let slot = entity_index[key];
        let actual = last[slot];
        if append.expected_seq_nr != actual {
            results.push(Err(AppendError::Conflict {
                key: key.clone(),
                expected: append.expected_seq_nr,
                actual,
            }));
            continue;
        }
        if actual == 0 && !append.events.is_empty() {
            rows.new_shard.push(i64::from(key.shard));
            rows.new_type.push(&key.entity_type);
            rows.new_id.push(&key.entity_id);
        }
        for (seq_nr, event) in (actual + 1..).zip(&append.events) {
            rows.ev_type.push(&key.entity_type);
            rows.ev_id.push(&key.entity_id);
            rows.ev_seq.push(to_i64(seq_nr));
            rows.ev_shard.push(i64::from(key.shard));
            rows.ev_command.push(&event.command_id);
            rows.ev_time.push(to_i64(event.timestamp_ms));
            rows.ev_payload.push(&event.payload);
            rows.ev_reply.push(event.reply.as_deref());
        }
        for c in &append.command_ids {
            rows.commands
                .insert((&key.entity_type, &key.entity_id, &c.command_id), {
                    let (kind, refusal) = crate::refusal_columns(c.refusal.as_ref());
                    (
                        i64::from(key.shard),
                        to_i64(c.seq_nr),
                        to_i64(c.at_ms),
                        &c.digest[..],
                        kind,
                        refusal,
                    )
                });
        }
        for send in &append.sends {
            let o = &mut rows.outbox;
            o.shard.push(i64::from(key.shard));
            o.source_type.push(&key.entity_type);
            o.source_id.push(&key.entity_id);
            o.seq.push(to_i64(send.seq_nr));
            o.index.push(i64::from(send.index));
            o.target_type.push(&send.send.entity_type);
            o.target_id.push(&send.send.entity_id);
            o.command.push(&send.send.command);
            o.on_accepted.push(send.send.on_accepted.as_deref());
            o.on_refused.push(send.send.on_refused.as_deref());
        }
        for write in &append.timers {
            let slot = (
                key.entity_type.as_str(),
                key.entity_id.as_str(),
                write.change.name(),
            );
            let row = match &write.change {
                TimerChange::Set(timer) => Some((
                    to_i64(write.seq_nr),
                    to_i64(timer.fire_at_ms),
                    &timer.command[..],
                )),
                TimerChange::Cancel(_) => None,
            };
            rows.timers.insert(slot, (i64::from(key.shard), row));
        }
        last[slot] = actual + append.events.len() as u64;
        results.push(Ok(()));
    }
    // Nothing accepted (an append of refusals alone has no events).
    if !results.iter().any(Result::is_ok) {
        client.batch_execute("ROLLBACK").await.map_err(err)?;
        client.release();
        return Ok(results);
    }
    inserts.run_and_commit(&client, &rows).await.map_err(err)?;
    client.release();
    Ok(results)
}

/// The batch's statements, prepared (cached per connection).
struct Inserts {
    events: tokio_postgres::Statement,
    entities: tokio_postgres::Statement,
    command_ids: tokio_postgres::Statement,
    outbox: tokio_postgres::Statement,
    set_timers: tokio_postgres::Statement,
    cancel_timers: tokio_postgres::Statement,
}

impl Inserts {
    async fn prepare(client: &deadpool_postgres::Object) -> Result<Self, tokio_postgres::Error> {
        let (events, entities, command_ids) = tokio::join!(
            // Each event's stream position: its shard's row of
            // stead_positions is moved past the shard's events of this
            // transaction (and stays locked until it commits, see `schema`),
            // and the events take the positions up to it in their order.
            client.prepare_cached(
                "WITH counts AS (
                     SELECT s AS shard, count(*) AS n FROM unnest($4::bigint[]) AS s
                     GROUP BY s ORDER BY s
                 ), alloc AS (
                     INSERT INTO stead_positions (shard, last) SELECT shard, n FROM counts
                     ON CONFLICT (shard) DO UPDATE SET last = stead_positions.last + EXCLUDED.last
                     RETURNING shard, last
                 )
                 INSERT INTO stead_events
                    (entity_type, entity_id, seq_nr, shard, command_id, timestamp_ms, payload,
                     reply, position)
                 SELECT t.ty, t.id, t.seq, t.shard, t.cmd, t.at, t.payload, t.reply,
                        a.last - count(*) OVER (PARTITION BY t.shard)
                               + row_number() OVER (PARTITION BY t.shard ORDER BY t.i)
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                             $5::text[], $6::bigint[], $7::bytea[], $8::bytea[])
                      WITH ORDINALITY AS t(ty, id, seq, shard, cmd, at, payload, reply, i)
                 JOIN alloc a ON a.shard = t.shard",
            ),
            client.prepare_cached(
                "INSERT INTO stead_entities (shard, entity_type, entity_id)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[])
                 ON CONFLICT DO NOTHING",
            ),
            client.prepare_cached(
                "INSERT INTO stead_command_ids
                    (entity_type, entity_id, command_id, shard, seq_nr, at_ms, digest,
                     refusal_kind, refusal)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[],
                                      $5::bigint[], $6::bigint[], $7::bytea[],
                                      $8::smallint[], $9::text[])
                 ON CONFLICT (entity_type, entity_id, command_id) DO UPDATE
                 SET shard = EXCLUDED.shard, seq_nr = EXCLUDED.seq_nr,
                     at_ms = EXCLUDED.at_ms, digest = EXCLUDED.digest,
                     refusal_kind = EXCLUDED.refusal_kind, refusal = EXCLUDED.refusal",
            ),
        );
        let (outbox, set_timers, cancel_timers) = tokio::join!(
            client.prepare_cached(
                "INSERT INTO stead_outbox
                    (shard, entity_type, entity_id, seq_nr, idx, target_type, target_id,
                     command, on_accepted, on_refused)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[],
                                      $5::bigint[], $6::text[], $7::text[], $8::bytea[],
                                      $9::bytea[], $10::bytea[])",
            ),
            client.prepare_cached(
                "INSERT INTO stead_timers
                    (shard, entity_type, entity_id, name, seq_nr, fire_at_ms, command)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[],
                                      $5::bigint[], $6::bigint[], $7::bytea[])
                 ON CONFLICT (shard, entity_type, entity_id, name) DO UPDATE
                 SET seq_nr = EXCLUDED.seq_nr, fire_at_ms = EXCLUDED.fire_at_ms,
                     command = EXCLUDED.command",
            ),
            client.prepare_cached(
                "DELETE FROM stead_timers t
                 USING unnest($1::bigint[], $2::text[], $3::text[], $4::text[])
                       AS d(shard, ty, id, name)
                 WHERE t.shard = d.shard AND t.entity_type = d.ty
                   AND t.entity_id = d.id AND t.name = d.name",
            ),
        );
        Ok(Self {
            events: events?,
            entities: entities?,
            command_ids: command_ids?,
            outbox: outbox?,
            set_timers: set_timers?,
            cancel_timers: cancel_timers?,
        })
    }

    /// Sends the inserts and COMMIT in one round trip. A failed insert
    /// aborts the transaction, and the server then answers COMMIT with a
    /// rollback: every result is checked, so a failure is never taken for
    /// a commit.
    async fn run_and_commit(
        &self,
        client: &deadpool_postgres::Object,
        rows: &Rows<'_>,
    ) -> Result<(), tokio_postgres::Error> {
        let mut c_type = Vec::with_capacity(rows.commands.len());
        let mut c_id = Vec::with_capacity(rows.commands.len());
        let mut c_command = Vec::with_capacity(rows.commands.len());
        let mut c_shard = Vec::with_capacity(rows.commands.len());
        let mut c_seq = Vec::with_capacity(rows.commands.len());
        let mut c_at = Vec::with_capacity(rows.commands.len());
        let mut c_digest = Vec::with_capacity(rows.commands.len());
        let mut c_kind = Vec::with_capacity(rows.commands.len());
        let mut c_refusal = Vec::with_capacity(rows.commands.len());
        for (&(ty, id, command), &(shard, seq, at, digest, kind, refusal)) in &rows.commands {
            c_type.push(ty);
            c_id.push(id);
            c_command.push(command);
            c_shard.push(shard);
            c_seq.push(seq);
            c_at.push(at);
            c_digest.push(digest);
            c_kind.push(kind);
            c_refusal.push(refusal);
        }
        let event_params: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &rows.ev_type,
            &rows.ev_id,
            &rows.ev_seq,
            &rows.ev_shard,
            &rows.ev_command,
            &rows.ev_time,
            &rows.ev_payload,
            &rows.ev_reply,
        ];
        let insert_events = client.execute(&self.events, &event_params);
        let insert_entities = async {
            if rows.new_id.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    &self.entities,
                    &[&rows.new_shard, &rows.new_type, &rows.new_id],
                )
                .await
        };
        let insert_command_ids = async {
            if c_id.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    &self.command_ids,
                    &[
                        &c_type, &c_id, &c_command, &c_shard, &c_seq, &c_at, &c_digest, &c_kind,
                        &c_refusal,
                    ],
                )
                .await
        };
        let o = &rows.outbox;
        let insert_outbox = async {
            if o.seq.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    &self.outbox,
                    &[
                        &o.shard,
                        &o.source_type,
                        &o.source_id,
                        &o.seq,
                        &o.index,
                        &o.target_type,
                        &o.target_id,
                        &o.command,
                        &o.on_accepted,
                        &o.on_refused,
                    ],
                )
                .await
        };
        let mut set = TimerColumns::default();
        let mut cancel = TimerColumns::default();
        for (&(ty, id, name), &(shard, row)) in &rows.timers {
            match row {
                Some((seq, fire_at, command)) => {
                    set.push(shard, ty, id, name);
                    set.seq.push(seq);
                    set.fire_at.push(fire_at);
                    set.command.push(command);
                }
                None => cancel.push(shard, ty, id, name),
            }
        }
        let set_timers = async {
            if set.name.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    &self.set_timers,
                    &[
                        &set.shard,
                        &set.ty,
                        &set.id,
                        &set.name,
                        &set.seq,
                        &set.fire_at,
                        &set.command,
                    ],
                )
                .await
        };
        let cancel_timers = async {
            if cancel.name.is_empty() {
                return Ok(0);
            }
            client
                .execute(
                    &self.cancel_timers,
                    &[&cancel.shard, &cancel.ty, &cancel.id, &cancel.name],
                )
                .await
        };
        let (a, b, c, d, e, f, commit) = tokio::join!(
            insert_events,
            insert_entities,
            insert_command_ids,
            insert_outbox,
            set_timers,
            cancel_timers,
            client.batch_execute("COMMIT"),
        );
        a?;
        b?;
        c?;
        d?;
        e?;
        f?;
        commit
    }
}

/// Columns of the timers one statement sets or cancels.
#[derive(Default)]
struct TimerColumns<'a> {
    shard: Vec<i64>,
    ty: Vec<&'a str>,
    id: Vec<&'a str>,
    name: Vec<&'a str>,
    seq: Vec<i64>,
    fire_at: Vec<i64>,
    command: Vec<&'a [u8]>,
}

impl<'a> TimerColumns<'a> {
    fn push(&mut self, shard: i64, ty: &'a str, id: &'a str, name: &'a str) {
        self.shard.push(shard);
        self.ty.push(ty);
        self.id.push(id);
        self.name.push(name);
    }
}

/// A pooled connection in the middle of a transaction: unless released
/// after the transaction ended, it is taken out of the pool when dropped
/// (an error, a timeout), so its session ends and the server rolls back.
struct Detached(Option<deadpool_postgres::Object>);

impl Detached {
    fn new(client: deadpool_postgres::Object) -> Self {
        Self(Some(client))
    }

    /// The transaction is over: the connection goes back to the pool.
    fn release(mut self) {
        drop(self.0.take());
    }
}

impl std::ops::Deref for Detached {
    type Target = deadpool_postgres::Object;

    fn deref(&self) -> &Self::Target {
        // Present until `release` or drop, both of which consume it.
        self.0
            .as_ref()
            .expect("a detached connection is present until released")
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            drop(deadpool_postgres::Object::take(client));
        }
    }
}
