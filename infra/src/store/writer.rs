//! The batch writer: one transaction per batch that moves the partitions'
//! offsets (fenced by epoch), applies the net (user, item) changes and folds
//! the resulting transitions into `counters`. Only rows that really changed
//! state move a count, so a redelivered batch or a repeated like changes nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use likes_domain::{ItemId, ItemKey, ItemType, LikeState, NetChange};
use sqlx::PgPool;
use tracing::instrument;
use uuid::Uuid;

use crate::Error;

/// The offset a partition reaches with this batch, under the owner's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetCommit {
    pub partition: i32,
    pub epoch: i64,
    pub next_offset: i64,
}

/// An item's count after the batch, and the log offset it reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountUpdate {
    pub item: ItemKey,
    pub count: i64,
    pub last_offset: i64,
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub struct Applied {
    pub liked: usize,
    pub unliked: usize,
    pub counts: Vec<CountUpdate>,
}

/// Applies one batch atomically. Fails with [`Error::Fenced`] (and writes
/// nothing) when any partition's epoch is no longer the one given.
#[instrument(skip_all, fields(topic, partitions = commits.len(), changes = changes.len()))]
pub async fn apply_batch(
    pool: &PgPool,
    topic: &str,
    commits: &[OffsetCommit],
    changes: &[NetChange],
) -> Result<Applied, Error> {
    let mut tx = pool.begin().await?;

    // Offsets first: the row locks taken here serialise us against a new owner's
    // claim, so either our commit lands before the claim reads the offset, or the
    // claim's epoch bump makes this update match nothing.
    let partitions: Vec<i32> = commits.iter().map(|c| c.partition).collect();
    let epochs: Vec<i64> = commits.iter().map(|c| c.epoch).collect();
    let next: Vec<i64> = commits.iter().map(|c| c.next_offset).collect();
    let moved: Vec<(i32,)> = sqlx::query_as(
        "UPDATE projector_offsets AS o SET next_offset = v.next, updated_at = now()
         FROM UNNEST($2::int[], $3::bigint[], $4::bigint[]) AS v(partition, epoch, next)
         WHERE o.topic = $1 AND o.partition = v.partition AND o.epoch = v.epoch
         RETURNING o.partition",
    )
    .bind(topic)
    .bind(&partitions)
    .bind(&epochs)
    .bind(&next)
    .fetch_all(&mut *tx)
    .await?;
    if moved.len() != commits.len() {
        let fenced = partitions
            .iter()
            .find(|p| !moved.iter().any(|(m,)| m == *p))
            .copied()
            .unwrap_or(-1);
        tx.rollback().await?;
        return Err(Error::Fenced { partition: fenced });
    }

    let mut likes = Rows::default();
    let mut unlikes = Rows::default();
    let mut sorted: Vec<&NetChange> = changes.iter().collect();
    // A stable lock order keeps concurrent writers from deadlocking.
    sorted.sort_by_key(|c| (c.item.item_id, c.item.item_type, c.user_id));
    let mut last_offset: BTreeMap<ItemKey, i64> = BTreeMap::new();
    for c in sorted {
        let seen = last_offset.entry(c.item).or_insert(c.position.offset);
        *seen = (*seen).max(c.position.offset);
        match c.state {
            LikeState::Liked => likes.push(c),
            LikeState::NotLiked => unlikes.push(c),
        }
    }

    let inserted: Vec<(i64, i16)> = sqlx::query_as(
        "INSERT INTO user_likes (item_id, item_type, user_id, liked_at, event_id)
         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::timestamptz[], $5::uuid[])
         ON CONFLICT DO NOTHING
         RETURNING item_id, item_type",
    )
    .bind(&likes.item_ids)
    .bind(&likes.item_types)
    .bind(&likes.user_ids)
    .bind(&likes.at)
    .bind(&likes.event_ids)
    .fetch_all(&mut *tx)
    .await?;
    let deleted: Vec<(i64, i16)> = sqlx::query_as(
        "DELETE FROM user_likes AS u
         USING UNNEST($1::bigint[], $2::smallint[], $3::bigint[]) AS v(item_id, item_type, user_id)
         WHERE u.item_id = v.item_id AND u.item_type = v.item_type AND u.user_id = v.user_id
         RETURNING u.item_id, u.item_type",
    )
    .bind(&unlikes.item_ids)
    .bind(&unlikes.item_types)
    .bind(&unlikes.user_ids)
    .fetch_all(&mut *tx)
    .await?;

    let mut deltas: BTreeMap<(i64, i16), i64> = BTreeMap::new();
    for key in &inserted {
        *deltas.entry(*key).or_default() += 1;
    }
    for key in &deleted {
        *deltas.entry(*key).or_default() -= 1;
    }
    deltas.retain(|_, d| *d != 0);

    let mut item_ids = Vec::with_capacity(deltas.len());
    let mut item_types = Vec::with_capacity(deltas.len());
    let mut amounts = Vec::with_capacity(deltas.len());
    let mut offsets = Vec::with_capacity(deltas.len());
    for ((item_id, item_type), delta) in &deltas {
        let item = item_key(*item_id, *item_type)?;
        item_ids.push(*item_id);
        item_types.push(*item_type);
        amounts.push(*delta);
        offsets.push(last_offset.get(&item).copied().unwrap_or(0));
    }
    let counted: Vec<(i64, i16, i64, i64)> = sqlx::query_as(
        "INSERT INTO counters AS c (item_id, item_type, count, last_offset)
         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[])
         ON CONFLICT (item_id, item_type) DO UPDATE
           SET count = c.count + EXCLUDED.count,
               last_offset = GREATEST(c.last_offset, EXCLUDED.last_offset),
               updated_at = now()
         RETURNING item_id, item_type, count, last_offset",
    )
    .bind(&item_ids)
    .bind(&item_types)
    .bind(&amounts)
    .bind(&offsets)
    .fetch_all(&mut *tx)
    .await?;

    tx.commit().await?;

    let counts = counted
        .into_iter()
        .map(|(item_id, item_type, count, last_offset)| {
            Ok(CountUpdate {
                item: item_key(item_id, item_type)?,
                count,
                last_offset,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(Applied {
        liked: inserted.len(),
        unliked: deleted.len(),
        counts,
    })
}

/// Column arrays for one UNNEST statement.
#[derive(Default)]
struct Rows {
    item_ids: Vec<i64>,
    item_types: Vec<i16>,
    user_ids: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    event_ids: Vec<Uuid>,
}

impl Rows {
    fn push(&mut self, c: &NetChange) {
        self.item_ids.push(c.item.item_id.get());
        // ItemType is 1..=i16::MAX by construction.
        self.item_types.push(c.item.item_type.get() as i16);
        self.user_ids.push(c.user_id.get());
        self.at.push(c.timestamp);
        self.event_ids.push(*c.event_id.as_uuid());
    }
}

/// Rebuilds an item key from database columns; a row that does not validate is a
/// broken invariant, reported rather than silently skipped.
pub(crate) fn item_key(item_id: i64, item_type: i16) -> Result<ItemKey, Error> {
    Ok(ItemKey {
        item_type: ItemType::parse(i64::from(item_type))
            .map_err(|e| Error::Poison(format!("stored row: {e}")))?,
        item_id: ItemId::parse(item_id).map_err(|e| Error::Poison(format!("stored row: {e}")))?,
    })
}
