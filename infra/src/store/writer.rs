//! The batch writer: one transaction per batch that moves the partitions'
//! offsets (fenced by epoch), drops events whose id was applied before, folds
//! the rest to net (user, item) changes, applies them and folds the resulting
//! transitions into `counters`. Only rows that really changed state move a
//! count, so a redelivered batch, a retried request or a repeated like changes
//! nothing.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use likes_domain::{
    BatchFold, ItemId, ItemKey, ItemType, LikeEvent, LikeState, NetChange, Position,
};
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
    /// Events whose id had been applied before (in this batch or an earlier one).
    pub duplicates: usize,
    /// The net (user, item) changes the batch came to, after dedup.
    pub changes: Vec<NetChange>,
    pub liked: usize,
    pub unliked: usize,
    pub counts: Vec<CountUpdate>,
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

/// Which pair of projection tables a batch of changes goes to: the live ones, or
/// the shadow tables `likes-replay rebuild postgres` builds before its swap.
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    pub user_likes: &'static str,
    pub counters: &'static str,
}

impl Tables {
    pub const LIVE: Tables = Tables {
        user_likes: "user_likes",
        counters: "counters",
    };
    pub const REBUILD: Tables = Tables {
        user_likes: "user_likes_rebuild",
        counters: "counters_rebuild",
    };
}

/// What a set of net changes did to the tables.
#[derive(Debug, Default)]
pub struct Moved {
    pub liked: usize,
    pub unliked: usize,
    pub counts: Vec<CountUpdate>,
}

/// Applies net (user, item) changes: inserts the newly liked and deletes the
/// newly unliked rows, and moves each item's counter by the transitions that
/// really happened. The one home of the counting SQL, live or shadow.
pub async fn apply_changes(
    tx: &mut sqlx::PgConnection,
    tables: Tables,
    changes: &[NetChange],
) -> Result<Moved, Error> {
    let Tables {
        user_likes,
        counters,
    } = tables;
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

    let inserted: Vec<(i64, i16)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("INSERT INTO {user_likes} (item_id, item_type, user_id, liked_at, event_id)
         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::timestamptz[], $5::uuid[])
         ON CONFLICT DO NOTHING
         RETURNING item_id, item_type")),
    )
    .bind(&likes.item_ids)
    .bind(&likes.item_types)
    .bind(&likes.user_ids)
    .bind(&likes.at)
    .bind(&likes.event_ids)
    .fetch_all(&mut *tx)
    .await?;
    let deleted: Vec<(i64, i16)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {user_likes} AS u
         USING UNNEST($1::bigint[], $2::smallint[], $3::bigint[]) AS v(item_id, item_type, user_id)
         WHERE u.item_id = v.item_id AND u.item_type = v.item_type AND u.user_id = v.user_id
         RETURNING u.item_id, u.item_type"
    )))
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

    // Existing counters move by their delta (an UPDATE, so a negative delta never
    // meets the CHECK (count >= 0) as a proposed row); new ones are inserted.
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
    let mut counted: Vec<(i64, i16, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE {counters} AS c
           SET count = c.count + v.delta,
               last_offset = GREATEST(c.last_offset, v.last_offset),
               updated_at = now()
         FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[])
              AS v(item_id, item_type, delta, last_offset)
         WHERE c.item_id = v.item_id AND c.item_type = v.item_type
         RETURNING c.item_id, c.item_type, c.count, c.last_offset"
    )))
    .bind(&item_ids)
    .bind(&item_types)
    .bind(&amounts)
    .bind(&offsets)
    .fetch_all(&mut *tx)
    .await?;
    let updated: HashSet<(i64, i16)> = counted.iter().map(|r| (r.0, r.1)).collect();
    let mut new_rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..item_ids.len() {
        if !updated.contains(&(item_ids[i], item_types[i])) {
            new_rows.0.push(item_ids[i]);
            new_rows.1.push(item_types[i]);
            new_rows.2.push(amounts[i]);
            new_rows.3.push(offsets[i]);
        }
    }
    if !new_rows.0.is_empty() {
        // A negative delta here means an unlike removed a row no counter counted:
        // the CHECK constraint rejects it and the batch fails loudly.
        let inserted: Vec<(i64, i16, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {counters} (item_id, item_type, count, last_offset)
             SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[])
             RETURNING item_id, item_type, count, last_offset"
        )))
        .bind(&new_rows.0)
        .bind(&new_rows.1)
        .bind(&new_rows.2)
        .bind(&new_rows.3)
        .fetch_all(&mut *tx)
        .await?;
        counted.extend(inserted);
    }

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
    Ok(Moved {
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
    fn push_key(&mut self, item: ItemKey, event_id: likes_domain::EventId) {
        self.item_ids.push(item.item_id.get());
        // ItemType is 1..=i16::MAX by construction.
        self.item_types.push(item.item_type.get() as i16);
        self.event_ids.push(*event_id.as_uuid());
    }

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
