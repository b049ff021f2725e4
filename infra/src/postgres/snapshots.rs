//! Snapshots of the PostgreSQL projection (`snapshots`, `snapshot_offsets`,
//! `snapshot_counters`, `snapshot_user_likes`): [`create`] copies `counters`,
//! `user_likes` and the topic's `projector_offsets` in one `REPEATABLE READ`
//! transaction. The projector commits rows and offsets together, so the copy
//! reflects exactly the offsets stored with it, and it never overlaps a
//! rebuild's swap ([`super::swap_lock`]). A rebuild or a count can start from
//! such a copy plus the topic past its offsets.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use serde::Serialize;
use sqlx::{Acquire, AssertSqlSafe, PgConnection, PgPool};

use super::swap_lock;
use crate::Error;

/// One snapshot and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct SnapshotInfo {
    pub id: i64,
    pub topic: String,
    pub created_at: DateTime<Utc>,
    pub note: Option<String>,
    /// Rows of `counters` copied.
    pub counters: i64,
    /// Rows of `user_likes` copied.
    pub user_likes: i64,
    /// Sum of the partitions' next offsets: how many events it reflects.
    pub events: i64,
}

/// Takes a snapshot of the projection of `topic`; returns what was copied.
pub async fn create(pool: &PgPool, topic: &str, note: Option<&str>) -> Result<SnapshotInfo, Error> {
    create_with(pool, topic, note, None).await
}

/// The next snapshot id of this database's sequence, taken for a snapshot
/// whose parts on every shard share it (shard 0 hands out the ids).
pub async fn next_id(pool: &PgPool) -> Result<i64, Error> {
    let (id,): (i64,) = sqlx::query_as("SELECT nextval(pg_get_serial_sequence('snapshots', 'id'))")
        .fetch_one(pool)
        .await?;
    Ok(id)
}

/// Takes this database's part of snapshot `id` (an id from [`next_id`] on
/// the shard that hands them out): as [`create`], under the given id.
pub async fn create_as(
    pool: &PgPool,
    topic: &str,
    note: Option<&str>,
    id: i64,
) -> Result<SnapshotInfo, Error> {
    create_with(pool, topic, note, Some(id)).await
}

async fn create_with(
    pool: &PgPool,
    topic: &str,
    note: Option<&str>,
    id: Option<i64>,
) -> Result<SnapshotInfo, Error> {
    // Before the transaction (and its view) begins: wait out a swap in
    // progress, and keep a swap from starting until the copy committed.
    let mut conn = pool.acquire().await?;
    swap_lock::shared(&mut conn).await?;
    let copied = copy(&mut conn, topic, note, id).await;
    if swap_lock::release_shared(&mut conn).await.is_err() {
        // Never hand a session that may still hold the lock back to the pool.
        conn.close_on_drop();
    }
    drop(conn);
    let id = copied?;
    get(pool, id).await?.ok_or(Error::NoSnapshot { id })
}

/// Copies the projection in one `REPEATABLE READ` transaction; returns the id.
async fn copy(
    conn: &mut PgConnection,
    topic: &str,
    note: Option<&str>,
    id: Option<i64>,
) -> Result<i64, Error> {
    let mut tx = conn.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await?;
    let (id,): (i64,) = sqlx::query_as(
        "INSERT INTO snapshots (id, topic, note)
         VALUES (COALESCE($3, nextval(pg_get_serial_sequence('snapshots', 'id'))), $1, $2)
         RETURNING id",
    )
    .bind(topic)
    .bind(note)
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO snapshot_offsets (snapshot_id, partition, next_offset)
         SELECT $1, partition, next_offset FROM projector_offsets WHERE topic = $2",
    )
    .bind(id)
    .bind(topic)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO snapshot_counters (snapshot_id, item_id, item_type, count, last_offset)
         SELECT $1, item_id, item_type, count, last_offset FROM counters",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO snapshot_user_likes (snapshot_id, item_id, item_type, user_id, liked_at, event_id)
         SELECT $1, item_id, item_type, user_id, liked_at, event_id FROM user_likes",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}

/// Every snapshot, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<SnapshotInfo>, Error> {
    Ok(sqlx::query_as(AssertSqlSafe(info_sql("")))
        .fetch_all(pool)
        .await?)
}

/// One snapshot (`None`: no such id).
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<SnapshotInfo>, Error> {
    Ok(sqlx::query_as(AssertSqlSafe(info_sql("WHERE s.id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await?)
}

/// What [`SnapshotInfo`] reads, for the snapshots `filter` keeps.
fn info_sql(filter: &str) -> String {
    format!(
        "SELECT s.id, s.topic, s.created_at, s.note,
            (SELECT COUNT(*) FROM snapshot_counters c WHERE c.snapshot_id = s.id) AS counters,
            (SELECT COUNT(*) FROM snapshot_user_likes u WHERE u.snapshot_id = s.id) AS user_likes,
            (SELECT COALESCE(SUM(o.next_offset), 0)::bigint FROM snapshot_offsets o
              WHERE o.snapshot_id = s.id) AS events
         FROM snapshots s {filter} ORDER BY s.id"
    )
}

/// The partitions' next offsets a snapshot reflects.
pub async fn offsets(pool: &PgPool, id: i64) -> Result<HashMap<i32, i64>, Error> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM snapshot_offsets WHERE snapshot_id = $1",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Deletes a snapshot and its rows; an unknown id is [`Error::NoSnapshot`].
pub async fn delete(pool: &PgPool, id: i64) -> Result<(), Error> {
    let done = sqlx::query("DELETE FROM snapshots WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    match done.rows_affected() {
        0 => Err(Error::NoSnapshot { id }),
        _ => Ok(()),
    }
}

/// The newest snapshot of `topic` taken at or before `time`.
pub async fn newest_at(
    pool: &PgPool,
    topic: &str,
    time: DateTime<Utc>,
) -> Result<Option<i64>, Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT id FROM snapshots WHERE topic = $1 AND created_at <= $2
         ORDER BY created_at DESC, id DESC LIMIT 1",
    )
    .bind(topic)
    .bind(time)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}

/// The snapshots of `topic` taken at or before `time`, newest first (a
/// sharded start picks the newest one every shard has a part of).
pub async fn taken_by(pool: &PgPool, topic: &str, time: DateTime<Utc>) -> Result<Vec<i64>, Error> {
    let rows: Vec<(i64,)> = sqlx::query_as(
        "SELECT id FROM snapshots WHERE topic = $1 AND created_at <= $2
         ORDER BY created_at DESC, id DESC",
    )
    .bind(topic)
    .bind(time)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// A snapshot as the base of one partition's replay: its id, when it was
/// taken, and the partition's next offset it reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionBase {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub offset: i64,
}

/// The newest snapshot of `topic` usable for `partition`: it reflects an
/// offset in `log_start..=until` (one the log still holds), and it was taken
/// at or before `taken_by` when given.
pub async fn newest_usable(
    pool: &PgPool,
    topic: &str,
    partition: i32,
    log_start: i64,
    until: i64,
    taken_by: Option<DateTime<Utc>>,
) -> Result<Option<PartitionBase>, Error> {
    let row: Option<(i64, DateTime<Utc>, i64)> = sqlx::query_as(
        "SELECT s.id, s.created_at, o.next_offset FROM snapshots s
         JOIN snapshot_offsets o ON o.snapshot_id = s.id AND o.partition = $2
         WHERE s.topic = $1 AND o.next_offset BETWEEN $3 AND $4
           AND ($5::timestamptz IS NULL OR s.created_at <= $5)
         ORDER BY o.next_offset DESC, s.id DESC LIMIT 1",
    )
    .bind(topic)
    .bind(partition)
    .bind(log_start)
    .bind(until)
    .bind(taken_by)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(id, created_at, offset)| PartitionBase {
        id,
        created_at,
        offset,
    }))
}

/// `item` in snapshot `id`: each liker as the like event that made its row,
/// and the item's stored count (0 without a row).
pub async fn item(pool: &PgPool, id: i64, item: ItemKey) -> Result<(Vec<LikeEvent>, i64), Error> {
    // ItemType is 1..=i16::MAX by construction.
    let item_type = item.item_type.get() as i16;
    let likers: Vec<(i64, uuid::Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT user_id, event_id, liked_at FROM snapshot_user_likes
         WHERE snapshot_id = $1 AND item_type = $2 AND item_id = $3",
    )
    .bind(id)
    .bind(item_type)
    .bind(item.item_id.get())
    .fetch_all(pool)
    .await?;
    let stored: Option<(i64,)> = sqlx::query_as(
        "SELECT count FROM snapshot_counters
         WHERE snapshot_id = $1 AND item_type = $2 AND item_id = $3",
    )
    .bind(id)
    .bind(item_type)
    .bind(item.item_id.get())
    .fetch_optional(pool)
    .await?;
    let mut events = Vec::with_capacity(likers.len());
    for (user_id, event_id, liked_at) in likers {
        events.push(LikeEvent {
            event_id: EventId::from_uuid(event_id)
                .map_err(|e| Error::Poison(format!("stored row: {e}")))?,
            user_id: UserId::parse(user_id)
                .map_err(|e| Error::Poison(format!("stored row: {e}")))?,
            item,
            action: Action::Like,
            timestamp: liked_at,
        });
    }
    Ok((events, stored.map_or(0, |s| s.0)))
}
