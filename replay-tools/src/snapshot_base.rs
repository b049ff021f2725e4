//! A snapshot as the base of one item's derivation (`explain`, `count`): when
//! retention has deleted the first events of the item's partition, the count is
//! the snapshot's plus the events past its offset, which the log still holds.

use chrono::{DateTime, Utc};
use likes_domain::{ItemKey, Projection};
use likes_infra::postgres::PgPool;
use likes_infra::postgres::snapshots::{self, PartitionBase};
use serde::Serialize;

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

/// The newest snapshot of `topic` usable for `partition` (see
/// [`snapshots::newest_usable`]).
pub async fn newest_usable(
    pool: &PgPool,
    topic: &str,
    partition: i32,
    log_start: i64,
    until: i64,
    taken_by: Option<DateTime<Utc>>,
) -> anyhow::Result<Option<PartitionBase>> {
    Ok(snapshots::newest_usable(pool, topic, partition, log_start, until, taken_by).await?)
}

/// Loads `item`'s state in snapshot `base` into a fresh reference model: each
/// liker as the like event that made the row (so a later copy of that event
/// reads as a duplicate). Returns the base and the model.
pub async fn load(
    pool: &PgPool,
    base: PartitionBase,
    item: ItemKey,
) -> anyhow::Result<(SnapshotBase, Projection)> {
    let (likers, count) = snapshots::item(pool, base.id, item).await?;
    let mut model = Projection::default();
    for like in &likers {
        model.apply(like);
    }
    let base = SnapshotBase {
        id: base.id,
        created_at: base.created_at,
        offset: base.offset,
        count,
    };
    Ok((base, model))
}
