//! Partition ownership and offsets, kept in `projector_offsets` beside the rows.
//!
//! Claiming a partition bumps its epoch; a batch later commits only while the
//! epoch is still the claimer's (see [`super::writer`]). A projector that lost a
//! partition (a zombie after a rebalance or a long pause) therefore can never
//! commit for it again, and the new owner starts exactly where the last
//! committed batch ended.

use likes_domain::Position;
use sqlx::PgPool;
use tracing::instrument;

use super::writer::{CountUpdate, count_updates};
use crate::Error;

/// A partition this process now owns: the epoch it must present to commit, and
/// where consumption resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub epoch: i64,
    pub next: Position,
}

/// Takes ownership of `partitions` of `topic`, fencing any previous owner.
/// Waits a bounded time for the rows' locks (it runs inside the rebalance
/// callback); a timeout is transient and the claim is tried again.
#[instrument(skip_all, fields(topic, partitions = ?partitions))]
pub async fn claim(pool: &PgPool, topic: &str, partitions: &[i32]) -> Result<Vec<Claim>, Error> {
    let mut tx = pool.begin().await?;
    super::bound_waits(&mut tx).await?;
    let rows: Vec<(i32, i64, i64)> = sqlx::query_as(
        "INSERT INTO projector_offsets AS o (topic, partition, next_offset, epoch)
         SELECT $1, p, 0, 1 FROM UNNEST($2::int[]) AS p
         ON CONFLICT (topic, partition)
         DO UPDATE SET epoch = o.epoch + 1, updated_at = now()
         RETURNING partition, epoch, next_offset",
    )
    .bind(topic)
    .bind(partitions)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(partition, epoch, offset)| Claim {
            epoch,
            next: Position { partition, offset },
        })
        .collect())
}

/// [`claim`], given up after `bound` without an answer: a database that
/// stopped answering in the middle of a connection (a network cut) would
/// otherwise hold the caller until TCP gives up, and a claim runs inside
/// Kafka's rebalance callback. A transient error; the claim may still have
/// committed, which only means the next claim bumps the epoch once more.
pub async fn claim_within(
    pool: &PgPool,
    topic: &str,
    partitions: &[i32],
    bound: std::time::Duration,
) -> Result<Vec<Claim>, Error> {
    match tokio::time::timeout(bound, claim(pool, topic, partitions)).await {
        Ok(claimed) => claimed,
        Err(_elapsed) => Err(Error::DatabaseUnavailable(sqlx::Error::Io(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer to a partition claim within {bound:?}"),
            ),
        ))),
    }
}

/// The stored next offset of every partition of `topic` the projector has seen.
pub async fn positions(pool: &PgPool, topic: &str) -> Result<Vec<(i32, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT partition, next_offset FROM projector_offsets WHERE topic = $1 ORDER BY partition",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?)
}

/// How far the projector is in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Progress {
    pub partition: i32,
    /// The next offset to project.
    pub next_offset: i64,
    /// The record time (ms) of the newest record applied, if any was.
    pub log_time_ms: Option<i64>,
}

/// Where the projector stands in every partition of `topic` it has seen.
pub async fn progress(pool: &PgPool, topic: &str) -> Result<Vec<Progress>, Error> {
    Ok(sqlx::query_as(
        "SELECT partition, next_offset, log_time_ms FROM projector_offsets WHERE topic = $1 ORDER BY partition",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?)
}

/// What a new owner must put back into Redis: the committed counts of the
/// items applied in its partitions since Redis was last known current there,
/// and, per partition, the log time Redis is current up to once they are
/// written.
#[derive(Debug, Default)]
pub struct CacheRefresh {
    pub counts: Vec<CountUpdate>,
    pub current_until: Vec<(i32, i64)>,
}

/// The counts a claim of `claims` (partition, epoch) must re-read into Redis:
/// Redis writes that failed after a commit, or never ran (a crash, a SIGTERM
/// while Redis was away), are lost with the process, but `applied_events`
/// still names every item applied at or after the partition's
/// `cached_until_ms` (the pruner keeps those rows), or `lookback` before it
/// after Redis failed (see [`crate::redis::FAILOVER_LOOKBACK`]). Partitions no longer held
/// under the given epoch are left to their owner.
#[instrument(skip_all, fields(topic, partitions = claims.len()))]
pub async fn cache_refresh(
    pool: &PgPool,
    topic: &str,
    claims: &[(i32, i64)],
    lookback: std::time::Duration,
) -> Result<CacheRefresh, Error> {
    let lookback_ms = i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX);
    let partitions: Vec<i32> = claims.iter().map(|c| c.0).collect();
    let epochs: Vec<i64> = claims.iter().map(|c| c.1).collect();
    let marks: Vec<(i32, i64, Option<i64>)> = sqlx::query_as(
        "SELECT o.partition, o.cached_until_ms, o.log_time_ms
         FROM projector_offsets AS o
         JOIN UNNEST($2::int[], $3::bigint[]) AS v(partition, epoch)
           ON o.partition = v.partition AND o.epoch = v.epoch
         WHERE o.topic = $1",
    )
    .bind(topic)
    .bind(&partitions)
    .bind(&epochs)
    .fetch_all(pool)
    .await?;
    let Some(oldest) = marks.iter().map(|m| m.1.saturating_sub(lookback_ms)).min() else {
        return Ok(CacheRefresh::default());
    };
    let partitions: Vec<i32> = marks.iter().map(|m| m.0).collect();
    let since: Vec<i64> = marks
        .iter()
        .map(|m| m.1.saturating_sub(lookback_ms))
        .collect();
    // The constant lower bound lets the BRIN index on record_ms skip old rows.
    let rows: Vec<(i64, i16, i64, i64)> = sqlx::query_as(
        "SELECT c.item_id, c.item_type, c.count, c.last_offset
         FROM counters AS c
         WHERE (c.item_id, c.item_type) IN (
           SELECT a.item_id, a.item_type
           FROM applied_events AS a
           JOIN UNNEST($1::int[], $2::bigint[]) AS v(partition, since)
             ON a.partition = v.partition AND a.record_ms >= v.since
           WHERE a.record_ms >= $3)",
    )
    .bind(&partitions)
    .bind(&since)
    .bind(oldest)
    .fetch_all(pool)
    .await?;
    let counts = count_updates(rows)?;
    Ok(CacheRefresh {
        counts,
        current_until: marks
            .iter()
            .filter_map(|(p, _, log_time)| log_time.map(|t| (*p, t)))
            .collect(),
    })
}

/// Records that Redis is current below `marks` (partition, log time) for the
/// partitions still held under the given epochs (a stopping projector's last
/// word; running ones fold this into their next batch).
pub async fn record_cache_marks(
    pool: &PgPool,
    topic: &str,
    marks: &[(i32, i64, i64)],
) -> Result<(), Error> {
    let partitions: Vec<i32> = marks.iter().map(|m| m.0).collect();
    let epochs: Vec<i64> = marks.iter().map(|m| m.1).collect();
    let until: Vec<i64> = marks.iter().map(|m| m.2).collect();
    sqlx::query(
        "UPDATE projector_offsets AS o
            SET cached_until_ms = GREATEST(o.cached_until_ms, v.until)
         FROM UNNEST($2::int[], $3::bigint[], $4::bigint[]) AS v(partition, epoch, until)
         WHERE o.topic = $1 AND o.partition = v.partition AND o.epoch = v.epoch",
    )
    .bind(topic)
    .bind(&partitions)
    .bind(&epochs)
    .bind(&until)
    .execute(pool)
    .await?;
    Ok(())
}

/// Locks `topic`'s offset rows (`FOR UPDATE`: the projector's commits and
/// claims wait until the caller's transaction ends) and reads them, waiting at
/// most a few seconds for a projector transaction that holds them. A
/// rebuild's swap applies its last tail under this lock.
pub async fn lock_all(
    tx: &mut sqlx::PgConnection,
    topic: &str,
) -> Result<std::collections::HashMap<i32, i64>, Error> {
    sqlx::query("SET LOCAL lock_timeout = '5s'")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM projector_offsets
         WHERE topic = $1 ORDER BY partition FOR UPDATE",
    )
    .bind(topic)
    .fetch_all(&mut *tx)
    .await?;
    Ok(rows.into_iter().collect())
}
