//! Where a `rebuild postgres` stands, kept in PostgreSQL beside its shadow rows
//! (`rebuild_runs`, `rebuild_progress`): every batch writes its partition's
//! next offset in the same transaction as the rows it adds, so after a kill the
//! shadow tables reflect exactly the recorded offsets and a re-run resumes
//! there. Beginning clean (drop, recreate, seed, record the start) is one
//! transaction too: a build is either fully begun or not at all.

use std::collections::HashMap;

use likes_domain::{LikeEvent, Position};
use sqlx::{PgConnection, PgPool};

use super::shadow;
use crate::Error;

/// Serializes rebuilds of one database: a second one refuses instead of
/// interleaving with the first in the same shadow tables. The lock is held by a
/// session, so a killed rebuild releases it with its connection.
const LOCK_KEY: i64 = 0x6c_696b_6573_7262; // "likesrb"

/// Takes the database's rebuild lock on `conn` for as long as it stays open;
/// refuses ([`Error::RebuildRunning`]) when another rebuild holds it.
pub async fn lock(conn: &mut PgConnection) -> Result<(), Error> {
    let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(LOCK_KEY)
        .fetch_one(conn)
        .await?;
    match got {
        true => Ok(()),
        false => Err(Error::RebuildRunning),
    }
}

/// Begins a build of `topic` from `source` clean, in one transaction: fresh
/// shadow tables (seeded with `snapshot`'s rows when given), the run, and its
/// start positions as progress. Any earlier half-done build is discarded.
pub async fn begin_clean(
    pool: &PgPool,
    topic: &str,
    source: &str,
    start: &HashMap<i32, i64>,
    snapshot: Option<i64>,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    shadow::recreate(&mut tx).await?;
    if let Some(id) = snapshot {
        shadow::seed(&mut tx, id).await?;
    }
    finish(&mut tx).await?;
    sqlx::query("INSERT INTO rebuild_runs (topic, source) VALUES ($1, $2)")
        .bind(topic)
        .bind(source)
        .execute(&mut *tx)
        .await?;
    let positions: Vec<(i32, i64)> = start.iter().map(|(p, o)| (*p, *o)).collect();
    record(&mut tx, topic, &positions).await?;
    tx.commit().await?;
    Ok(())
}

/// The recorded positions of a half-done build of `topic` from `source` whose
/// shadow tables exist; `None` when there is nothing to resume (none, or one
/// begun from another start).
pub async fn resumable(
    pool: &PgPool,
    topic: &str,
    source: &str,
) -> Result<Option<HashMap<i32, i64>>, Error> {
    let run: Option<(String,)> = sqlx::query_as("SELECT source FROM rebuild_runs WHERE topic = $1")
        .bind(topic)
        .fetch_optional(pool)
        .await?;
    let shadows = shadow::exists(&mut *pool.acquire().await?).await?;
    if run.is_none_or(|(s,)| s != source) || !shadows {
        return Ok(None);
    }
    let rows: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, next_offset FROM rebuild_progress WHERE topic = $1")
            .bind(topic)
            .fetch_all(pool)
            .await?;
    Ok(Some(rows.into_iter().collect()))
}

/// Records partitions' next offsets, inside the caller's transaction (the one
/// that wrote the shadow rows up to them).
pub async fn record(
    conn: &mut PgConnection,
    topic: &str,
    positions: &[(i32, i64)],
) -> Result<(), Error> {
    let (partitions, offsets): (Vec<i32>, Vec<i64>) = positions.iter().copied().unzip();
    sqlx::query(
        "INSERT INTO rebuild_progress (topic, partition, next_offset)
         SELECT $1, p, o FROM UNNEST($2::int[], $3::bigint[]) AS v(p, o)
         ON CONFLICT (topic, partition)
         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
    )
    .bind(topic)
    .bind(&partitions)
    .bind(&offsets)
    .execute(conn)
    .await?;
    Ok(())
}

/// One batch of a build: `events` applied to the shadow tables and the
/// partitions' next offsets `reached`, inside the caller's transaction, so the
/// rows and the progress they reflect commit together.
pub async fn write_batch(
    conn: &mut PgConnection,
    topic: &str,
    events: &[(Position, LikeEvent)],
    reached: &[(i32, i64)],
) -> Result<(), Error> {
    if !events.is_empty() {
        shadow::apply(&mut *conn, events).await?;
    }
    record(conn, topic, reached).await
}

/// Forgets the build (its progress goes with it), inside the caller's
/// transaction: the swap's, or the one dropping a dry run's shadow tables.
pub async fn finish(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("DELETE FROM rebuild_runs")
        .execute(conn)
        .await?;
    Ok(())
}

/// Drops the shadow tables and forgets the build, in one transaction.
pub async fn discard(pool: &PgPool) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    shadow::drop_shadow(&mut tx).await?;
    finish(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}
