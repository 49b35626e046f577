//! The outbox on PostgreSQL: reading a shard's pending sends and timers a
//! page at a time (keyset paging on the primary keys, byte-ordered text),
//! and removing them under the shard's fence.
//!
//! The writes are in the append's transaction (`commit`); here, an
//! acknowledgement is its own transaction that checks the lease under the
//! shard's shared advisory lock first (`leases::check_fence`), so a node
//! that lost the shard removes nothing.

use stead_journal::{
    Answer, AppendError, EntityKey, FenceToken, FiredTimer, JournalError, PendingSend,
    PendingTimer, SendId, ShardId,
};
use stead_types::effects::{SendCommand, Timer};

use crate::leases::{self, Fenced};
use crate::{Shared, to_i64, to_u64};

const OUTBOX_COLUMNS: &str = "entity_type, entity_id, seq_nr, idx, target_type, target_id, command, on_accepted, on_refused, answer";

fn answer_code(answer: Answer) -> i16 {
    match answer {
        Answer::Accepted => 1,
        Answer::Refused => 2,
    }
}

pub(crate) async fn read_outbox(
    shared: &Shared,
    shard: ShardId,
    after: Option<&SendId>,
    limit: usize,
) -> Result<Vec<PendingSend>, JournalError> {
    let err = |e: tokio_postgres::Error| shared.error("reading the outbox", &e);
    let client = shared.client().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let shard_row = i64::from(shard);
    let rows = match after.filter(|a| a.source.shard == shard) {
        None => {
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {OUTBOX_COLUMNS} FROM stead_outbox WHERE shard = $1
                     ORDER BY entity_type, entity_id, seq_nr, idx LIMIT $2"
                ))
                .await
                .map_err(err)?;
            client.query(&statement, &[&shard_row, &limit]).await
        }
        Some(a) => {
            let statement = client
                .prepare_cached(&format!(
                    "SELECT {OUTBOX_COLUMNS} FROM stead_outbox WHERE shard = $1
                     AND (entity_type, entity_id, seq_nr, idx) > ($2, $3, $4, $5)
                     ORDER BY entity_type, entity_id, seq_nr, idx LIMIT $6"
                ))
                .await
                .map_err(err)?;
            client
                .query(
                    &statement,
                    &[
                        &shard_row,
                        &a.source.entity_type,
                        &a.source.entity_id,
                        &to_i64(a.seq_nr),
                        &i64::from(a.index),
                        &limit,
                    ],
                )
                .await
        }
    }
    .map_err(err)?;
    rows.iter()
        .map(|row| {
            let index = u32::try_from(row.get::<_, i64>(3)).map_err(|_| JournalError::Corrupt {
                key: format!("stead_outbox of shard {shard}"),
                reason: "a send index out of range".into(),
            })?;
            Ok(PendingSend {
                id: SendId {
                    source: EntityKey::new(shard, row.get::<_, String>(0), row.get::<_, String>(1)),
                    seq_nr: to_u64(row.get(2), "seq_nr")?,
                    index,
                },
                send: SendCommand {
                    entity_type: row.get(4),
                    entity_id: row.get(5),
                    command: row.get(6),
                    on_accepted: row.get(7),
                    on_refused: row.get(8),
                },
                answer: match row.get::<_, Option<i16>>(9) {
                    None => None,
                    Some(1) => Some(Answer::Accepted),
                    Some(_) => Some(Answer::Refused),
                },
            })
        })
        .collect()
}

pub(crate) async fn answer_sends(
    shared: &Shared,
    fence: FenceToken,
    answers: &[(SendId, Answer)],
) -> Result<(), AppendError> {
    let answers: Vec<&(SendId, Answer)> = answers
        .iter()
        .filter(|(id, _)| id.source.shard == fence.shard)
        .collect();
    let types: Vec<&str> = answers
        .iter()
        .map(|(i, _)| i.source.entity_type.as_str())
        .collect();
    let entity_ids: Vec<&str> = answers
        .iter()
        .map(|(i, _)| i.source.entity_id.as_str())
        .collect();
    let seqs: Vec<i64> = answers.iter().map(|(i, _)| to_i64(i.seq_nr)).collect();
    let indexes: Vec<i64> = answers.iter().map(|(i, _)| i64::from(i.index)).collect();
    let codes: Vec<i16> = answers.iter().map(|(_, a)| answer_code(*a)).collect();
    let what = "answering sends";
    let err = |e: tokio_postgres::Error| AppendError::Storage(shared.error(what, &e));
    let mut client = shared.client().await?;
    let tx = begin_fenced(shared, &mut client, fence, what).await?;
    if !types.is_empty() {
        // The first answer stays.
        tx.execute(
            "UPDATE stead_outbox o SET answer = d.answer
             FROM unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::smallint[])
                  AS d(ty, id, seq, idx, answer)
             WHERE o.shard = $1 AND o.entity_type = d.ty AND o.entity_id = d.id
               AND o.seq_nr = d.seq AND o.idx = d.idx AND o.answer IS NULL",
            &[
                &i64::from(fence.shard),
                &types,
                &entity_ids,
                &seqs,
                &indexes,
                &codes,
            ],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

pub(crate) async fn read_timers(
    shared: &Shared,
    shard: ShardId,
    after: Option<(&EntityKey, &str)>,
    limit: usize,
) -> Result<Vec<PendingTimer>, JournalError> {
    let err = |e: tokio_postgres::Error| shared.error("reading timers", &e);
    let client = shared.client().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let shard_row = i64::from(shard);
    let rows = match after.filter(|(key, _)| key.shard == shard) {
        None => {
            let statement = client
                .prepare_cached(
                    "SELECT entity_type, entity_id, name, seq_nr, fire_at_ms, command
                     FROM stead_timers WHERE shard = $1
                     ORDER BY entity_type, entity_id, name LIMIT $2",
                )
                .await
                .map_err(err)?;
            client.query(&statement, &[&shard_row, &limit]).await
        }
        Some((key, name)) => {
            let statement = client
                .prepare_cached(
                    "SELECT entity_type, entity_id, name, seq_nr, fire_at_ms, command
                     FROM stead_timers WHERE shard = $1
                     AND (entity_type, entity_id, name) > ($2, $3, $4)
                     ORDER BY entity_type, entity_id, name LIMIT $5",
                )
                .await
                .map_err(err)?;
            client
                .query(
                    &statement,
                    &[&shard_row, &key.entity_type, &key.entity_id, &name, &limit],
                )
                .await
        }
    }
    .map_err(err)?;
    rows.iter()
        .map(|row| {
            Ok(PendingTimer {
                key: EntityKey::new(shard, row.get::<_, String>(0), row.get::<_, String>(1)),
                seq_nr: to_u64(row.get(3), "seq_nr")?,
                timer: Timer {
                    name: row.get(2),
                    fire_at_ms: to_u64(row.get(4), "fire_at_ms")?,
                    command: row.get(5),
                },
            })
        })
        .collect()
}

pub(crate) async fn ack_sends(
    shared: &Shared,
    fence: FenceToken,
    ids: &[SendId],
) -> Result<(), AppendError> {
    let ids: Vec<&SendId> = ids
        .iter()
        .filter(|id| id.source.shard == fence.shard)
        .collect();
    let types: Vec<&str> = ids.iter().map(|i| i.source.entity_type.as_str()).collect();
    let entity_ids: Vec<&str> = ids.iter().map(|i| i.source.entity_id.as_str()).collect();
    let seqs: Vec<i64> = ids.iter().map(|i| to_i64(i.seq_nr)).collect();
    let indexes: Vec<i64> = ids.iter().map(|i| i64::from(i.index)).collect();
    let what = "acknowledging sends";
    let err = |e: tokio_postgres::Error| AppendError::Storage(shared.error(what, &e));
    let mut client = shared.client().await?;
    let tx = begin_fenced(shared, &mut client, fence, what).await?;
    if !types.is_empty() {
        tx.execute(
                "DELETE FROM stead_outbox o
                 USING unnest($2::text[], $3::text[], $4::bigint[], $5::bigint[]) AS d(ty, id, seq, idx)
                 WHERE o.shard = $1 AND o.entity_type = d.ty AND o.entity_id = d.id
                   AND o.seq_nr = d.seq AND o.idx = d.idx",
            &[
                &i64::from(fence.shard),
                &types,
                &entity_ids,
                &seqs,
                &indexes,
            ],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

pub(crate) async fn ack_timers(
    shared: &Shared,
    fence: FenceToken,
    fired: &[FiredTimer],
) -> Result<(), AppendError> {
    let fired: Vec<&FiredTimer> = fired
        .iter()
        .filter(|f| f.key.shard == fence.shard)
        .collect();
    let types: Vec<&str> = fired.iter().map(|f| f.key.entity_type.as_str()).collect();
    let ids: Vec<&str> = fired.iter().map(|f| f.key.entity_id.as_str()).collect();
    let names: Vec<&str> = fired.iter().map(|f| f.name.as_str()).collect();
    let seqs: Vec<i64> = fired.iter().map(|f| to_i64(f.seq_nr)).collect();
    let what = "acknowledging timers";
    let err = |e: tokio_postgres::Error| AppendError::Storage(shared.error(what, &e));
    let mut client = shared.client().await?;
    let tx = begin_fenced(shared, &mut client, fence, what).await?;
    if !types.is_empty() {
        // Only a timer still set under the seq-nr it fired with: one set
        // again since stays.
        tx.execute(
                "DELETE FROM stead_timers t
                 USING unnest($2::text[], $3::text[], $4::text[], $5::bigint[]) AS d(ty, id, name, seq)
                 WHERE t.shard = $1 AND t.entity_type = d.ty AND t.entity_id = d.id
                   AND t.name = d.name AND t.seq_nr = d.seq",
            &[&i64::from(fence.shard), &types, &ids, &names, &seqs],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)
}

/// Begins a transaction on `client` that has checked `fence` under the
/// shard's lock: what it deletes next cannot race a claim.
async fn begin_fenced<'c>(
    shared: &Shared,
    client: &'c mut deadpool_postgres::Object,
    fence: FenceToken,
    what: &str,
) -> Result<deadpool_postgres::Transaction<'c>, AppendError> {
    let current = shared.held_epoch(fence.shard);
    if current != fence.epoch || current == 0 {
        return Err(AppendError::Fenced {
            shard: fence.shard,
            presented: fence.epoch,
            current,
        });
    }
    let err = |e: tokio_postgres::Error| AppendError::Storage(shared.error(what, &e));
    let tx = client.transaction().await.map_err(err)?;
    leases::check_fence(shared, &tx, fence)
        .await
        .map_err(|e| match e {
            Fenced::Lost(e) => e,
            Fenced::Sql(e) => err(e),
        })?;
    Ok(tx)
}
