//! Shard leases in `stead_leases`, on the database's clock.
//!
//! - **claim**: moves the epoch and sets the owner and `expires_at = now +
//!   ttl`, only for shards that are free (no row, or released), expired, or
//!   already this node's. Each shard moved is locked exclusively (advisory
//!   lock, in shard order) for the transaction, so appends in flight under
//!   the old epoch finish first and later ones see the new epoch.
//! - **renew**: extends `expires_at` of the rows whose epoch and owner still
//!   match; needs no advisory lock (an append does not care how long the
//!   lease lasts, only whose it is).
//! - **release**: clears the owner and the expiry, keeping the epoch, under
//!   the same exclusive locks as a claim.
//!
//! The expiry of command ids lives here too: like an append, it may only be
//! done by the shard's holder, checked under the shard's shared lock.

use stead_journal::{AppendError, FenceToken, JournalError, ShardId};

use crate::Shared;
use crate::schema::LOCK_NAMESPACE;

fn sorted_shards(shards: impl IntoIterator<Item = ShardId>) -> Vec<i64> {
    let mut v: Vec<i64> = shards.into_iter().map(i64::from).collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn shard_of_row(value: i64) -> Result<ShardId, JournalError> {
    ShardId::try_from(value).map_err(|_| JournalError::Corrupt {
        key: "stead_leases.shard".into(),
        reason: format!("shard {value} out of range"),
    })
}

/// Claims the shards that are claimable; returns their tokens in the order
/// of `shards`.
pub(crate) async fn claim(
    shared: &Shared,
    shards: &[ShardId],
) -> Result<Vec<FenceToken>, JournalError> {
    if shards.is_empty() {
        return Ok(Vec::new());
    }
    let err = |e: tokio_postgres::Error| shared.error("claiming shards", &e);
    let wanted = sorted_shards(shards.iter().copied());
    let owner = &shared.options.node_id;
    let ttl_ms = i64::try_from(shared.options.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let mut client = shared.client().await?;
    let tx = client.transaction().await.map_err(err)?;
    // Never wait long for a shard's lock: the claim is retried next interval.
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {ttl_ms}"))
        .await
        .map_err(err)?;
    tx.execute(
        "INSERT INTO stead_leases (shard, epoch, owner, expires_at)
         SELECT s, 0, NULL, '-infinity' FROM unnest($1::bigint[]) AS s
         ON CONFLICT (shard) DO NOTHING",
        &[&wanted],
    )
    .await
    .map_err(err)?;
    let claimable: Vec<i64> = tx
        .query(
            "SELECT shard FROM stead_leases
             WHERE shard = ANY($1) AND (owner IS NULL OR owner = $2 OR expires_at <= clock_timestamp())
             ORDER BY shard",
            &[&wanted, owner],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if claimable.is_empty() {
        tx.rollback().await.map_err(err)?;
        return Ok(Vec::new());
    }
    lock_exclusive(&tx, &claimable).await.map_err(err)?;
    // Checked again under the locks: another node may have claimed since.
    let rows = tx
        .query(
            "UPDATE stead_leases
             SET epoch = epoch + 1, owner = $2,
                 expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
             WHERE shard = ANY($1) AND (owner IS NULL OR owner = $2 OR expires_at <= clock_timestamp())
             RETURNING shard, epoch",
            &[&claimable, owner, &ttl_ms],
        )
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    let mut claimed = std::collections::HashMap::new();
    for row in &rows {
        let shard = shard_of_row(row.get(0))?;
        let epoch = crate::to_u64(row.get(1), "stead_leases.epoch")?;
        claimed.insert(shard, epoch);
    }
    Ok(shards
        .iter()
        .filter_map(|&shard| {
            claimed
                .remove(&shard)
                .map(|epoch| FenceToken { shard, epoch })
        })
        .collect())
}

/// Exclusive transaction-scoped advisory locks on `shards`, in order (every
/// locker takes them in shard order, so lockers never deadlock).
async fn lock_exclusive(
    tx: &deadpool_postgres::Transaction<'_>,
    sorted: &[i64],
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "SELECT count(pg_advisory_xact_lock($1, s::int4)) FROM unnest($2::bigint[]) AS s",
        &[&LOCK_NAMESPACE, &sorted],
    )
    .await
    .map(|_| ())
}

/// Shared advisory locks on shards (`$2`, sorted), in order: what an
/// append takes (`$1` is [`LOCK_NAMESPACE`]).
pub(crate) const LOCK_SHARED: &str =
    "SELECT count(pg_advisory_xact_lock_shared($1, s::int4)) FROM unnest($2::bigint[]) AS s";

/// The lease rows of shards `$1`.
pub(crate) const READ: &str = "SELECT shard, epoch, owner FROM stead_leases WHERE shard = ANY($1)";

/// Lease rows as shard -> (epoch, owner).
pub(crate) fn parse(
    rows: &[tokio_postgres::Row],
) -> std::collections::HashMap<ShardId, (u64, Option<String>)> {
    rows.iter()
        .filter_map(|r| {
            let shard = ShardId::try_from(r.get::<_, i64>(0)).ok()?;
            let epoch = u64::try_from(r.get::<_, i64>(1)).ok()?;
            Some((shard, (epoch, r.get(2))))
        })
        .collect()
}

/// Renews the leases of `tokens`; returns those still held.
pub(crate) async fn renew(
    shared: &Shared,
    tokens: &[FenceToken],
) -> Result<Vec<FenceToken>, JournalError> {
    if tokens.is_empty() {
        return Ok(Vec::new());
    }
    let err = |e: tokio_postgres::Error| shared.error("renewing leases", &e);
    let shards: Vec<i64> = tokens.iter().map(|t| i64::from(t.shard)).collect();
    let epochs: Vec<i64> = tokens.iter().map(|t| crate::to_i64(t.epoch)).collect();
    let ttl_ms = i64::try_from(shared.options.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let client = shared.client().await?;
    let statement = client
        .prepare_cached(
            "UPDATE stead_leases AS l
             SET expires_at = clock_timestamp() + $4::bigint * interval '1 millisecond'
             FROM unnest($1::bigint[], $2::bigint[]) AS t(shard, epoch)
             WHERE l.shard = t.shard AND l.epoch = t.epoch AND l.owner = $3
             RETURNING l.shard, l.epoch",
        )
        .await
        .map_err(err)?;
    let rows = client
        .query(
            &statement,
            &[&shards, &epochs, &shared.options.node_id, &ttl_ms],
        )
        .await
        .map_err(err)?;
    let renewed: std::collections::HashSet<(i64, i64)> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(tokens
        .iter()
        .filter(|t| renewed.contains(&(i64::from(t.shard), crate::to_i64(t.epoch))))
        .copied()
        .collect())
}

/// Frees the shards of `tokens` still held under their epochs.
pub(crate) async fn release(shared: &Shared, tokens: &[FenceToken]) -> Result<(), JournalError> {
    let err = |e: tokio_postgres::Error| shared.error("releasing shards", &e);
    let mut sorted = tokens.to_vec();
    sorted.sort_unstable_by_key(|t| t.shard);
    let shards: Vec<i64> = sorted.iter().map(|t| i64::from(t.shard)).collect();
    let epochs: Vec<i64> = sorted.iter().map(|t| crate::to_i64(t.epoch)).collect();
    let mut client = shared.client().await?;
    let tx = client.transaction().await.map_err(err)?;
    lock_exclusive(&tx, &shards).await.map_err(err)?;
    tx.execute(
        "UPDATE stead_leases AS l SET owner = NULL, expires_at = '-infinity'
         FROM unnest($1::bigint[], $2::bigint[]) AS t(shard, epoch)
         WHERE l.shard = t.shard AND l.epoch = t.epoch AND l.owner = $3",
        &[&shards, &epochs, &shared.options.node_id],
    )
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}

/// Removes at most `limit` index entries of the shard older than
/// `before_ms`, oldest first, if this node still holds the shard under
/// `fence`'s epoch.
/// Why a fenced transaction may not go on.
pub(crate) enum Fenced {
    /// The fence is not the shard's current lease of this node.
    Lost(AppendError),
    Sql(tokio_postgres::Error),
}

/// Takes the shard's shared advisory lock in `tx` and checks, under it,
/// that `fence` is the shard's current lease and this node holds it: what
/// the transaction writes next cannot race a claim.
pub(crate) async fn check_fence(
    shared: &Shared,
    tx: &tokio_postgres::Transaction<'_>,
    fence: FenceToken,
) -> Result<(), Fenced> {
    let shard = [i64::from(fence.shard)];
    tx.execute(LOCK_SHARED, &[&LOCK_NAMESPACE, &&shard[..]])
        .await
        .map_err(Fenced::Sql)?;
    let leases = parse(&tx.query(READ, &[&&shard[..]]).await.map_err(Fenced::Sql)?);
    let (epoch, owner) = leases.get(&fence.shard).cloned().unwrap_or((0, None));
    if epoch != fence.epoch || owner.as_deref() != Some(shared.options.node_id.as_str()) {
        shared.lost(fence);
        return Err(Fenced::Lost(AppendError::Fenced {
            shard: fence.shard,
            presented: fence.epoch,
            current: epoch,
        }));
    }
    Ok(())
}

pub(crate) async fn expire_command_ids(
    shared: &Shared,
    fence: FenceToken,
    before_ms: i64,
    limit: i64,
) -> Result<usize, AppendError> {
    let err =
        |e: tokio_postgres::Error| AppendError::Storage(shared.error("expiring command ids", &e));
    let shard = [i64::from(fence.shard)];
    let mut client = shared.client().await?;
    let tx = client.transaction().await.map_err(err)?;
    check_fence(shared, &tx, fence).await.map_err(|e| match e {
        Fenced::Lost(e) => e,
        Fenced::Sql(e) => err(e),
    })?;
    let expired = tx
        .execute(
            "DELETE FROM stead_command_ids WHERE ctid IN (
                SELECT ctid FROM stead_command_ids
                WHERE shard = $1 AND at_ms < $2 ORDER BY at_ms LIMIT $3)",
            &[&shard[0], &before_ms, &limit],
        )
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    Ok(usize::try_from(expired).unwrap_or(usize::MAX))
}
