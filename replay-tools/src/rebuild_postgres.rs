//! `likes-replay rebuild postgres`: rebuilds `user_likes` and `counters` side
//! by side while the projector keeps running. Shadow tables ([`shadow`]) are
//! created fresh, seeded from a snapshot (or empty for `earliest`), and filled
//! from the topic with an assigned consumer up to the live projector's offsets.
//! A second pass shortens the tail; then one transaction locks the topic's
//! `projector_offsets` rows (`FOR UPDATE`: the projector's next batch commit
//! waits), applies the last tail up to the offsets it read, verifies the shadow
//! against itself and against the live tables (both now at the same offsets),
//! and — unless `--dry-run` — renames shadow → live and commits. A start that
//! retention already deleted is refused: a rebuild never produces short counts.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::{Context, bail};
use likes_domain::Position;
use likes_infra::settings::StackSettings;
use likes_infra::store::{self, PgPool};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::reader::{Span, TopicHandle};
pub use crate::rebuild_report::{PostgresRebuild, RebuildFrom, print};
use crate::shadow;
use crate::snapshot;

/// Events applied to the shadow tables per statement batch.
const BATCH: usize = 10_000;
/// Unlocked catch-up passes at most, and the tail that is short enough to
/// apply while the projector waits.
const MAX_PASSES: usize = 5;
const SHORT_TAIL: i64 = 1_000;
/// Differences from the live counts listed in the report (all are counted).
const MAX_LISTED: i64 = 100;

/// The state of a build in progress: where the shadow stands per partition.
struct Build {
    positions: HashMap<i32, i64>,
    seen: HashSet<Uuid>,
    events: u64,
    duplicates: u64,
    poison: u64,
}

/// Rebuilds the PostgreSQL projection of `stack`'s topic from `from`.
pub async fn run(
    stack: &StackSettings,
    from: RebuildFrom,
    dry_run: bool,
) -> anyhow::Result<PostgresRebuild> {
    let pool = store::connect_lazy(&stack.database_url, 2)?;
    store::migrate(&pool).await?;
    let result = rebuild(stack, &pool, from, dry_run).await;
    pool.close().await;
    result
}

async fn rebuild(
    stack: &StackSettings,
    pool: &PgPool,
    from: RebuildFrom,
    dry_run: bool,
) -> anyhow::Result<PostgresRebuild> {
    let start = match from {
        RebuildFrom::Earliest => HashMap::new(),
        RebuildFrom::Snapshot(id) => {
            let info = snapshot::get(pool, id).await?;
            if info.topic != stack.topic {
                bail!(
                    "snapshot {id} is of topic {}, not {}",
                    info.topic,
                    stack.topic
                );
            }
            snapshot::offsets(pool, id).await?
        }
    };
    let partitions = TopicHandle::open(stack)?.partition_count()?;
    let mut build = Build {
        positions: (0..partitions)
            .map(|p| (p, start.get(&p).copied().unwrap_or(0)))
            .collect(),
        seen: HashSet::new(),
        events: 0,
        duplicates: 0,
        poison: 0,
    };
    // Refuse before touching anything when the start is already gone.
    let live: HashMap<i32, i64> = store::offsets::positions(pool, &stack.topic)
        .await?
        .into_iter()
        .collect();
    plan(stack, &build.positions, &live)?;

    let mut conn = pool.acquire().await?;
    shadow::recreate(&mut conn).await?;
    if let RebuildFrom::Snapshot(id) = from {
        shadow::seed(&mut conn, id).await?;
    }
    let started = Instant::now();
    // Passes without locks until the tail left for the swap (which holds the
    // projector's commits) is short.
    for pass in 0..MAX_PASSES {
        let live: HashMap<i32, i64> = store::offsets::positions(pool, &stack.topic)
            .await?
            .into_iter()
            .collect();
        let pending: i64 = live
            .iter()
            .map(|(p, end)| end - build.positions.get(p).copied().unwrap_or(0))
            .filter(|n| *n > 0)
            .sum();
        if pass > 0 && pending <= SHORT_TAIL {
            break;
        }
        catch_up(stack, &mut conn, &mut build, &live, true).await?;
    }

    let mut tx = pool.begin().await?;
    let locked: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM projector_offsets
         WHERE topic = $1 ORDER BY partition FOR UPDATE",
    )
    .bind(&stack.topic)
    .fetch_all(&mut *tx)
    .await?;
    let before = build.events;
    catch_up(
        stack,
        &mut tx,
        &mut build,
        &locked.into_iter().collect(),
        false,
    )
    .await?;
    let tail_events = build.events - before;
    let seconds = started.elapsed().as_secs_f64();
    let inconsistent = shadow::inconsistent_items(&mut tx).await?;
    let (live_differences, listed_differences) =
        shadow::live_differences(&mut tx, MAX_LISTED).await?;
    if inconsistent > 0 {
        tx.rollback().await?;
        bail!("{inconsistent} rebuilt items disagree with their own user_likes; not swapping");
    }
    let swapped = !dry_run;
    if dry_run {
        tx.rollback().await?;
        shadow::drop_shadow(&mut conn).await?;
    } else {
        shadow::swap(&mut tx).await?;
        tx.commit().await.context("commit the swap")?;
        shadow::drop_old(&mut conn).await?;
    }
    Ok(PostgresRebuild {
        from,
        dry_run,
        events: build.events,
        duplicates: build.duplicates,
        poison: build.poison,
        tail_events,
        seconds,
        events_per_second: build.events as f64 / seconds.max(0.001),
        inconsistent,
        live_differences,
        listed_differences,
        swapped,
    })
}

/// The spans from the shadow's positions up to `limits` (partitions the
/// projector never saw: nothing), refusing when retention deleted a part.
fn plan(
    stack: &StackSettings,
    positions: &HashMap<i32, i64>,
    limits: &HashMap<i32, i64>,
) -> anyhow::Result<Vec<Span>> {
    let handle = TopicHandle::open(stack)?;
    let mut spans = Vec::new();
    for (&partition, &start) in positions {
        let end = limits.get(&partition).copied().unwrap_or(0).max(start);
        let (low, _high) = handle.watermarks(partition)?;
        if end > start && low > start {
            bail!(
                "partition {partition} starts at offset {low} but the rebuild needs offsets \
                 from {start}: retention deleted them, so the rebuilt counts would be short; \
                 refusing (rebuild from a newer snapshot: `likes-replay snapshot list`)"
            );
        }
        spans.push(Span {
            partition,
            start,
            end,
            log_start: low,
        });
    }
    Ok(spans)
}

/// Reads the topic from the build's positions up to `limits` and applies it to
/// the shadow tables on `conn`, a batch per statement group (each committed on
/// its own when `own_tx`, else inside the caller's transaction).
async fn catch_up(
    stack: &StackSettings,
    conn: &mut PgConnection,
    build: &mut Build,
    limits: &HashMap<i32, i64>,
    own_tx: bool,
) -> anyhow::Result<()> {
    let pass = Instant::now();
    let spans = plan(stack, &build.positions, limits)?;
    let planned = pass.elapsed();
    let mut reader = TopicHandle::open(stack)?.read(stack, &spans, "rebuild postgres")?;
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(record) = reader.next().await? {
        build.events += 1;
        match record.event {
            Err(_) => build.poison += 1,
            Ok(event) if !build.seen.insert(*event.event_id.as_uuid()) => build.duplicates += 1,
            Ok(event) => {
                let position = Position {
                    partition: record.partition,
                    offset: record.offset,
                };
                batch.push((position, event));
            }
        }
        if batch.len() >= BATCH {
            flush(conn, &mut batch, own_tx).await?;
        }
    }
    flush(conn, &mut batch, own_tx).await?;
    tracing::info!(?planned, elapsed = ?pass.elapsed(), events = build.events, "rebuild pass");
    for span in spans {
        build.positions.insert(span.partition, span.end);
    }
    Ok(())
}

async fn flush(
    conn: &mut PgConnection,
    batch: &mut Vec<(Position, likes_domain::LikeEvent)>,
    own_tx: bool,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    if own_tx {
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        shadow::apply(&mut tx, batch).await?;
        tx.commit().await?;
    } else {
        shadow::apply(conn, batch).await?;
    }
    batch.clear();
    Ok(())
}
