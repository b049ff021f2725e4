//! The batch writer: one transaction per batch that moves the partitions'
//! offsets (fenced by epoch), drops events whose id was applied before, folds
//! the rest to net (user, item) changes, applies them and folds the resulting
//! transitions into `counters`. Only rows that really changed state move a
//! count, so a redelivered batch, a retried request or a repeated like changes
//! nothing.

use std::collections::HashSet;

use likes_domain::{BatchFold, ItemId, ItemKey, ItemType, LikeEvent, NetChange, Position};
use sqlx::PgPool;
use tracing::instrument;
use uuid::Uuid;

use super::changes::Rows;
pub use super::changes::{Moved, Tables, apply_changes};
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
    /// Events whose id had been applied before (in this batch or an earlier one).
    pub duplicates: usize,
    /// The net (user, item) changes the batch came to, after dedup.
    pub changes: Vec<NetChange>,
    pub liked: usize,
    pub unliked: usize,
    pub counts: Vec<CountUpdate>,
}

impl Applied {
    /// Adds what another part of the same batch did (parts touch disjoint items).
    pub fn merge(&mut self, other: Applied) {
        self.duplicates += other.duplicates;
        self.changes.extend(other.changes);
        self.liked += other.liked;
        self.unliked += other.unliked;
        self.counts.extend(other.counts);
    }
}

/// Applies one batch of events, given in log order, atomically. Fails with
/// [`Error::Fenced`] (and writes nothing) when any partition's epoch is no
/// longer the one given.
#[instrument(skip_all, fields(topic, partitions = commits.len(), events = events.len()))]
pub async fn apply_batch(
    pool: &PgPool,
    topic: &str,
    commits: &[OffsetCommit],
    events: &[(Position, LikeEvent)],
) -> Result<Applied, Error> {
    let mut tx = pool.begin().await?;
    match apply_in(&mut tx, topic, commits, events).await {
        Ok(applied) => {
            tx.commit().await?;
            Ok(applied)
        }
        Err(e) => {
            // Dropping the transaction rolls it back; say so explicitly when we can.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

/// The body of [`apply_batch`] inside a transaction the caller commits: tests use
/// it to hold a batch open while another owner claims the partition.
pub async fn apply_in(
    tx: &mut sqlx::PgConnection,
    topic: &str,
    commits: &[OffsetCommit],
    events: &[(Position, LikeEvent)],
) -> Result<Applied, Error> {
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
        return Err(Error::Fenced { partition: fenced });
    }

    // Dedup by event id: only ids this insert really adds are new to the projection.
    let mut ids = Rows::default();
    let mut in_batch = HashSet::with_capacity(events.len());
    for (_, e) in events {
        if in_batch.insert(e.event_id) {
            ids.push_key(e.item, e.event_id);
        }
    }
    let fresh: Vec<(Uuid,)> = sqlx::query_as(
        "INSERT INTO applied_events (item_id, item_type, event_id)
         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::uuid[])
         ON CONFLICT DO NOTHING
         RETURNING event_id",
    )
    .bind(&ids.item_ids)
    .bind(&ids.item_types)
    .bind(&ids.event_ids)
    .fetch_all(&mut *tx)
    .await?;
    let fresh: HashSet<Uuid> = fresh.into_iter().map(|(id,)| id).collect();
    let mut fold = BatchFold::new();
    for (position, e) in events {
        if fresh.contains(e.event_id.as_uuid()) {
            fold.push(*position, e);
        }
    }
    let duplicates = events.len() - fold.events() + fold.duplicates();
    let changes = fold.finish();

    let moved = apply_changes(&mut *tx, Tables::LIVE, &changes).await?;
    Ok(Applied {
        duplicates,
        changes,
        liked: moved.liked,
        unliked: moved.unliked,
        counts: moved.counts,
    })
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

/// Forgets applied event ids older than `horizon_seconds`, a chunk at a time so a
/// large backlog never holds one long transaction. Returns how many went.
#[instrument(skip_all)]
pub async fn prune_applied_events(pool: &PgPool, horizon_seconds: i64) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM applied_events WHERE ctid IN (
               SELECT ctid FROM applied_events
               WHERE applied_at < now() - make_interval(secs => $1)
               LIMIT 10000)",
        )
        .bind(horizon_seconds as f64)
        .execute(pool)
        .await?
        .rows_affected();
        total += done;
        if done < 10_000 {
            return Ok(total);
        }
    }
}
