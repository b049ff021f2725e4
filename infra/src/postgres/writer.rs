//! The batch writer: one transaction per batch that moves the partitions'
//! offsets (fenced by epoch) and log times, drops events the dedup rule
//! ([`likes_domain::DedupHorizon`]) calls duplicates, folds the rest to net
//! (user, item) changes, applies them and folds the resulting transitions into
//! `counters`. Only rows that really changed state move a count, so a
//! redelivered batch, a retried request or a repeated like changes nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use likes_domain::{
    BatchFold, DedupHorizon, DedupKey, DedupMemory, ItemId, ItemKey, ItemType, LogClock,
    LoggedEvent, NetChange, Position, dedup_key,
};
use sqlx::PgPool;
use tracing::instrument;
use uuid::Uuid;

pub use super::changes::{Moved, Tables, apply_changes};
use crate::Error;

/// The position a partition reaches with this batch (the next offset to
/// read), under the owner's epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetCommit {
    pub epoch: i64,
    pub next: Position,
}

/// An item's count after the batch, and the log offset it reflects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CountUpdate {
    pub item: ItemKey,
    pub count: i64,
    pub last_offset: i64,
}

/// How a batch is judged and what it records besides its rows.
#[derive(Debug, Clone, Copy)]
pub struct BatchRules<'a> {
    /// The dedup horizon (`DEDUP_HORIZON_SECONDS`).
    pub horizon: DedupHorizon,
    /// Per partition, the log time below which Redis is known to hold every
    /// committed count (see [`super::offsets::cache_refresh`]); recorded with
    /// the offsets, never moved backwards.
    pub cached_until: &'a [(i32, i64)],
}

/// What a committed batch did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Events the dedup rule judged already applied (in this batch or before).
    pub duplicates: usize,
    /// The net (user, item) changes the batch came to, after dedup.
    pub changes: Vec<NetChange>,
    pub liked: usize,
    pub unliked: usize,
    /// The committed count of every item whose count moved, and of every item
    /// of a duplicate event (re-read: a batch applied again after a lost commit
    /// reply must still bring Redis to the committed counts).
    pub counts: Vec<CountUpdate>,
    /// Each partition's log time after the batch.
    pub log_times: Vec<(i32, i64)>,
}

impl Applied {
    /// Adds what another part of the same batch did (parts touch disjoint items).
    pub fn merge(&mut self, other: Applied) {
        self.duplicates += other.duplicates;
        self.changes.extend(other.changes);
        self.liked += other.liked;
        self.unliked += other.unliked;
        self.counts.extend(other.counts);
        self.log_times.extend(other.log_times);
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
    events: &[LoggedEvent],
    rules: BatchRules<'_>,
) -> Result<Applied, Error> {
    let mut tx = pool.begin().await?;
    super::bound_waits(&mut tx).await?;
    match apply_in(&mut tx, topic, commits, events, rules).await {
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
    events: &[LoggedEvent],
    rules: BatchRules<'_>,
) -> Result<Applied, Error> {
    // The newest record time of each partition in the batch moves its log time.
    let mut newest: HashMap<i32, i64> = HashMap::new();
    for e in events {
        let slot = newest.entry(e.position.partition).or_insert(e.record_time);
        *slot = (*slot).max(e.record_time);
    }
    let cached: HashMap<i32, i64> = rules.cached_until.iter().copied().collect();
    let partitions: Vec<i32> = commits.iter().map(|c| c.next.partition).collect();
    let epochs: Vec<i64> = commits.iter().map(|c| c.epoch).collect();
    let next: Vec<i64> = commits.iter().map(|c| c.next.offset).collect();
    let record_times: Vec<Option<i64>> =
        partitions.iter().map(|p| newest.get(p).copied()).collect();
    let cached_until: Vec<Option<i64>> =
        partitions.iter().map(|p| cached.get(p).copied()).collect();
    // Offsets first: the row locks taken here serialise us against a new owner's
    // claim, so either our commit lands before the claim reads the offset, or the
    // claim's epoch bump makes this update match nothing. `prev` is the row as
    // this owner left it: the log time each partition's clock starts from.
    let moved: Vec<(i32, Option<i64>)> = sqlx::query_as(
        "UPDATE projector_offsets AS o
            SET next_offset = v.next, updated_at = now(),
                log_time_ms = GREATEST(o.log_time_ms, v.record_time),
                cached_until_ms = GREATEST(o.cached_until_ms, v.cached_until)
         FROM UNNEST($2::int[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
              AS v(partition, epoch, next, record_time, cached_until),
              projector_offsets AS prev
         WHERE o.topic = $1 AND o.partition = v.partition AND o.epoch = v.epoch
           AND prev.topic = o.topic AND prev.partition = o.partition
         RETURNING o.partition, prev.log_time_ms",
    )
    .bind(topic)
    .bind(&partitions)
    .bind(&epochs)
    .bind(&next)
    .bind(&record_times)
    .bind(&cached_until)
    .fetch_all(&mut *tx)
    .await?;
    if moved.len() != commits.len() {
        let fenced = partitions
            .iter()
            .find(|p| !moved.iter().any(|(m, _)| m == *p))
            .copied()
            .unwrap_or(-1);
        return Err(Error::Fenced { partition: fenced });
    }

    // Each event's log time, from where its partition's clock stood.
    let mut clocks: HashMap<i32, LogClock> = moved
        .iter()
        .map(|(p, log_time)| (*p, LogClock::starting_at(*log_time)))
        .collect();
    let at: Vec<i64> = events
        .iter()
        .map(|e| {
            clocks
                .entry(e.position.partition)
                .or_default()
                .tick(e.record_time)
        })
        .collect();
    let log_times: Vec<(i32, i64)> = clocks
        .iter()
        .filter_map(|(p, c)| c.now().map(|t| (*p, t)))
        .collect();

    // The dedup rule, over what `applied_events` remembers of these keys.
    // Nearly every key is new, so it is recorded first, at its first sight's
    // log time, by one insert that skips the keys already remembered; only
    // those (the insert reports which it took) are read back to be judged.
    // That is one index descent per event instead of a probe and then an insert.
    let mut first_sight: BTreeMap<DedupKey, (i64, i32)> = BTreeMap::new();
    for (e, at) in events.iter().zip(&at) {
        first_sight
            .entry(dedup_key(&e.event))
            .or_insert((*at, e.position.partition));
    }
    let recorded = record_new(&mut *tx, &first_sight).await?;
    let known: BTreeSet<DedupKey> = first_sight
        .keys()
        .filter(|k| !recorded.contains(k))
        .copied()
        .collect();
    let mut memory = DedupMemory::new(rules.horizon);
    for (key, applied_at) in remembered(&mut *tx, &known).await? {
        memory.remember(key, applied_at);
    }
    let mut fold = BatchFold::new();
    let mut fresh: BTreeMap<DedupKey, i32> = BTreeMap::new();
    let mut duplicate_items: BTreeSet<ItemKey> = BTreeSet::new();
    for (e, at) in events.iter().zip(&at) {
        let key = dedup_key(&e.event);
        if memory.admit(key, *at) {
            fresh.insert(key, e.position.partition);
            fold.push(e.position, &e.event);
        } else {
            duplicate_items.insert(e.event.item);
        }
    }
    // What the insert recorded stands unless the rule applied the key again
    // later (past the horizon) or applied a remembered key anew.
    fresh.retain(|key, _| {
        !recorded.contains(key) || memory.applied_at(key) != first_sight.get(key).map(|(at, _)| *at)
    });
    remember_applied(&mut *tx, &memory, &fresh).await?;
    let duplicates = events.len() - fold.events();
    let changes = fold.finish();

    let moved = apply_changes(&mut *tx, Tables::LIVE, &changes).await?;
    let mut counts = moved.counts;
    let counted: HashSet<ItemKey> = counts.iter().map(|c| c.item).collect();
    let unread: Vec<ItemKey> = duplicate_items
        .into_iter()
        .filter(|item| !counted.contains(item))
        .collect();
    for (item, count, last_offset) in super::reads::counts(&mut *tx, &unread).await? {
        counts.push(CountUpdate {
            item,
            count,
            last_offset,
        });
    }
    Ok(Applied {
        duplicates,
        changes,
        liked: moved.liked,
        unliked: moved.unliked,
        counts,
        log_times,
    })
}

/// When each of `keys` was last applied, for those `applied_events` remembers
/// (rows from before record times were kept stand in with their apply time).
async fn remembered(
    tx: &mut sqlx::PgConnection,
    keys: &BTreeSet<DedupKey>,
) -> Result<Vec<(DedupKey, i64)>, Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let (item_ids, item_types, event_ids) = key_columns(keys.iter());
    let rows: Vec<(i64, i16, Uuid, i64)> = sqlx::query_as(
        "SELECT a.item_id, a.item_type, a.event_id,
                COALESCE(a.record_ms, (extract(epoch FROM a.applied_at) * 1000)::bigint)
         FROM applied_events AS a
         JOIN UNNEST($1::bigint[], $2::smallint[], $3::uuid[]) AS v(item_id, item_type, event_id)
           ON a.item_id = v.item_id AND a.item_type = v.item_type AND a.event_id = v.event_id",
    )
    .bind(&item_ids)
    .bind(&item_types)
    .bind(&event_ids)
    .fetch_all(&mut *tx)
    .await?;
    rows.into_iter()
        .map(|(item_id, item_type, event_id, at)| {
            Ok((stored_dedup_key(item_id, item_type, event_id)?, at))
        })
        .collect()
}

/// Records each key `applied_events` does not remember yet, at its first
/// sight's log time and partition; returns the keys it recorded (the others
/// were remembered already and are left as they were).
async fn record_new(
    tx: &mut sqlx::PgConnection,
    first_sight: &BTreeMap<DedupKey, (i64, i32)>,
) -> Result<HashSet<DedupKey>, Error> {
    if first_sight.is_empty() {
        return Ok(HashSet::new());
    }
    let (item_ids, item_types, event_ids) = key_columns(first_sight.keys());
    let times: Vec<i64> = first_sight.values().map(|(at, _)| *at).collect();
    let partitions: Vec<i32> = first_sight.values().map(|(_, p)| *p).collect();
    let rows: Vec<(i64, i16, Uuid)> = sqlx::query_as(
        "INSERT INTO applied_events (item_id, item_type, event_id, record_ms, partition)
         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::uuid[], $4::bigint[], $5::int[])
         ON CONFLICT (item_id, item_type, event_id) DO NOTHING
         RETURNING item_id, item_type, event_id",
    )
    .bind(&item_ids)
    .bind(&item_types)
    .bind(&event_ids)
    .bind(&times)
    .bind(&partitions)
    .fetch_all(&mut *tx)
    .await?;
    rows.into_iter()
        .map(|(item_id, item_type, event_id)| stored_dedup_key(item_id, item_type, event_id))
        .collect()
}

/// Records the keys this batch applied, each with its last application's log
/// time and partition (replacing a memory the rule let pass).
async fn remember_applied(
    tx: &mut sqlx::PgConnection,
    memory: &DedupMemory,
    fresh: &BTreeMap<DedupKey, i32>,
) -> Result<(), Error> {
    if fresh.is_empty() {
        return Ok(());
    }
    let (item_ids, item_types, event_ids) = key_columns(fresh.keys());
    let times: Vec<i64> = fresh
        .keys()
        .map(|k| memory.applied_at(k).unwrap_or_default())
        .collect();
    let partitions: Vec<i32> = fresh.values().copied().collect();
    sqlx::query(
        "INSERT INTO applied_events AS a (item_id, item_type, event_id, record_ms, partition)
         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::uuid[], $4::bigint[], $5::int[])
         ON CONFLICT (item_id, item_type, event_id) DO UPDATE
         SET record_ms = EXCLUDED.record_ms, partition = EXCLUDED.partition, applied_at = now()",
    )
    .bind(&item_ids)
    .bind(&item_types)
    .bind(&event_ids)
    .bind(&times)
    .bind(&partitions)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Rebuilds a dedup key from `applied_events` columns (see [`item_key`]).
fn stored_dedup_key(item_id: i64, item_type: i16, event_id: Uuid) -> Result<DedupKey, Error> {
    let event_id = likes_domain::EventId::from_uuid(event_id)
        .map_err(|e| Error::Poison(format!("stored row: {e}")))?;
    Ok((item_key(item_id, item_type)?, event_id))
}

fn key_columns<'a>(keys: impl Iterator<Item = &'a DedupKey>) -> (Vec<i64>, Vec<i16>, Vec<Uuid>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new());
    for (item, event_id) in keys {
        columns.0.push(item.item_id.get());
        // ItemType is 1..=i16::MAX by construction.
        columns.1.push(item.item_type.get() as i16);
        columns.2.push(*event_id.as_uuid());
    }
    columns
}

/// `counters` rows (item id, item type, count, last offset) as count updates
/// for Redis; a row that does not validate is reported, never skipped.
pub(crate) fn count_updates(rows: Vec<(i64, i16, i64, i64)>) -> Result<Vec<CountUpdate>, Error> {
    rows.into_iter()
        .map(|(item_id, item_type, count, last_offset)| {
            Ok(CountUpdate {
                item: item_key(item_id, item_type)?,
                count,
                last_offset,
            })
        })
        .collect()
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

/// Forgets the applied events that can no longer decide anything: per
/// partition, those applied at a log time older than the horizon before the
/// partition's log time (later records only have later log times), and only
/// once Redis is known current past them (a claim re-reads the items applied
/// since [`super::offsets`]' `cached_until_ms` into Redis). Rows from before
/// record times were kept go once every partition's log time passed their
/// apply time by the horizon. A chunk at a time, so a large backlog never
/// holds one long transaction. Returns how many went.
#[instrument(skip_all, fields(topic))]
pub async fn prune_applied_events(
    pool: &PgPool,
    topic: &str,
    horizon: DedupHorizon,
) -> Result<u64, Error> {
    let partitions: Vec<(i32, Option<i64>, i64)> = sqlx::query_as(
        "SELECT partition, log_time_ms, cached_until_ms FROM projector_offsets
         WHERE topic = $1 ORDER BY partition",
    )
    .bind(topic)
    .fetch_all(pool)
    .await?;
    let mut total = 0;
    for (partition, log_time, cached_until) in &partitions {
        let Some(log_time) = log_time else { continue };
        let cutoff = horizon.oldest_that_matters(*log_time).min(*cached_until);
        total += delete_chunked(pool, || {
            sqlx::query(
                "DELETE FROM applied_events WHERE ctid IN (
                   SELECT ctid FROM applied_events
                   WHERE partition = $1 AND record_ms < $2 LIMIT 10000)",
            )
            .bind(*partition)
            .bind(cutoff)
        })
        .await?;
    }
    let every_clock: Option<Vec<i64>> = partitions.iter().map(|p| p.1).collect();
    if let Some(oldest) = every_clock.and_then(|clocks| clocks.into_iter().min()) {
        let cutoff = horizon.oldest_that_matters(oldest);
        total += delete_chunked(pool, || {
            sqlx::query(
                "DELETE FROM applied_events WHERE ctid IN (
                   SELECT ctid FROM applied_events
                   WHERE partition IS NULL AND applied_at < to_timestamp($1 / 1000.0)
                   LIMIT 10000)",
            )
            .bind(cutoff)
        })
        .await?;
    }
    Ok(total)
}

/// Runs a `LIMIT 10000` delete until it deletes less than a full chunk.
async fn delete_chunked<'q>(
    pool: &PgPool,
    query: impl Fn() -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<u64, Error> {
    let mut total = 0;
    loop {
        let done = query().execute(pool).await?.rows_affected();
        total += done;
        if done < 10_000 {
            return Ok(total);
        }
    }
}
