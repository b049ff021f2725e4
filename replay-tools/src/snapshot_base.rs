//! A snapshot as the base of one item's derivation (`explain`, `count`): when
//! retention has deleted the first events of the item's partition, the count is
//! the snapshot's plus the events past its offset, which the log still holds.

use chrono::{DateTime, Utc};
use likes_domain::{Action, EventId, ItemKey, LikeEvent, Projection, UserId};
use serde::Serialize;
use sqlx::PgPool;

/// The snapshot a derivation starts from, and the item's state in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotBase {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// The partition's next offset the snapshot reflects: events are read from here.
    pub offset: i64,
    /// The item's count in the snapshot.
    pub count: i64,
}

/// The newest snapshot of `topic` usable for `partition`: it reflects an
/// offset the log still holds (at or after `log_start`), not past `until`, and
/// it was taken at or before `taken_by` when given.
pub async fn newest_usable(
    pool: &PgPool,
    topic: &str,
    partition: i32,
    log_start: i64,
    until: i64,
    taken_by: Option<DateTime<Utc>>,
) -> anyhow::Result<Option<(i64, DateTime<Utc>, i64)>> {
    Ok(sqlx::query_as(
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
    .await?)
}

/// Loads `item`'s state in snapshot `id` into a fresh reference model: each
/// liker as the like event that made the row (so a later copy of that event
/// reads as a duplicate). Returns the base and the model.
pub async fn load(
    pool: &PgPool,
    (id, created_at, offset): (i64, DateTime<Utc>, i64),
    item: ItemKey,
) -> anyhow::Result<(SnapshotBase, Projection)> {
    let likers: Vec<(i64, uuid::Uuid, DateTime<Utc>)> = sqlx::query_as(
        "SELECT user_id, event_id, liked_at FROM snapshot_user_likes
         WHERE snapshot_id = $1 AND item_type = $2 AND item_id = $3",
    )
    .bind(id)
    .bind(i16::try_from(item.item_type.get())?)
    .bind(item.item_id.get())
    .fetch_all(pool)
    .await?;
    let stored: Option<(i64,)> = sqlx::query_as(
        "SELECT count FROM snapshot_counters
         WHERE snapshot_id = $1 AND item_type = $2 AND item_id = $3",
    )
    .bind(id)
    .bind(i16::try_from(item.item_type.get())?)
    .bind(item.item_id.get())
    .fetch_optional(pool)
    .await?;
    let mut model = Projection::default();
    for (user_id, event_id, liked_at) in likers {
        model.apply(&LikeEvent {
            event_id: EventId::from_uuid(event_id)?,
            user_id: UserId::parse(user_id)?,
            item,
            action: Action::Like,
            timestamp: liked_at,
        });
    }
    let base = SnapshotBase {
        id,
        created_at,
        offset,
        count: stored.map_or(0, |s| s.0),
    };
    Ok((base, model))
}
