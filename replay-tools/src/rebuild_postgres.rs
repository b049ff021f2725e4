//! `likes-replay rebuild postgres`: rebuilds `user_likes` and `counters` side
//! by side while the projector keeps running.
//!
//! The start (`--from`, [`rebuild_start`]) is checked against retention first:
//! a start that retention already deleted is refused, a rebuild never produces
//! short counts. Shadow tables ([`shadow`]) are begun clean (seeded from a
//! snapshot, or empty) or, after an interruption, resumed from the progress
//! recorded with their rows ([`rebuild_progress`]). Workers
//! ([`rebuild_worker`]) fill them partition-parallel up to the live projector's
//! offsets, in passes until the tail is short. Then one transaction locks the
//! topic's `projector_offsets` rows (`FOR UPDATE`: the projector's next batch
//! commit waits), applies the last tail up to the offsets it read, verifies the
//! shadow against itself and against the live tables (both now at the same
//! offsets), and — unless `--dry-run` — renames shadow → live and commits. The
//! live tables change only at that commit.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{Context, bail};
use likes_infra::settings::StackSettings;
use likes_infra::store::{self, PgPool};

use crate::dedup::DedupWindow;
use crate::progress::Progress;
use crate::reader::{Span, TopicHandle, span_total};
pub use crate::rebuild_report::{PostgresRebuild, RebuildFrom, RebuildOptions, print};
use crate::rebuild_worker::{Crew, Tally, Windows, apply_spans, parallel_pass};
use crate::{rebuild_progress, rebuild_start, rebuild_warmup, shadow};

/// Unlocked catch-up passes at most, and the tail that is short enough to
/// apply while the projector waits.
const MAX_PASSES: usize = 5;
const SHORT_TAIL: i64 = 1_000;
/// Differences from the live counts listed in the report (all are counted).
const MAX_LISTED: i64 = 100;

/// Rebuilds the PostgreSQL projection of `stack`'s topic as `options` say.
pub async fn run(
    stack: &StackSettings,
    options: &RebuildOptions,
) -> anyhow::Result<PostgresRebuild> {
    let partitions = TopicHandle::open(stack)?.partition_count()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = options
        .parallel
        .unwrap_or(cores)
        .clamp(1, usize::try_from(partitions)?);
    // A connection per worker, one for the swap, one holding the rebuild lock.
    let pool = store::connect_lazy(&stack.database_url, u32::try_from(workers)? + 2)?;
    store::migrate(&pool).await?;
    let result = rebuild(stack, &pool, options, partitions, workers).await;
    // Closing the pool also releases the rebuild lock.
    pool.close().await;
    result
}

async fn rebuild(
    stack: &StackSettings,
    pool: &PgPool,
    options: &RebuildOptions,
    partitions: i32,
    workers: usize,
) -> anyhow::Result<PostgresRebuild> {
    let topic = &stack.topic;
    let mut guard = pool.acquire().await?;
    rebuild_progress::lock(&mut guard).await?;
    let start = rebuild_start::resolve(stack, pool, options.from).await?;
    let source = start.source();
    let first: HashMap<i32, i64> = (0..partitions)
        .map(|p| (p, start.offsets.get(&p).copied().unwrap_or(0)))
        .collect();
    let resumable = match options.restart {
        true => None,
        false => rebuild_progress::resumable(pool, topic, &source).await?,
    };
    let resumed = resumable.is_some();
    let mut positions = first.clone();
    match resumable {
        Some(recorded) => positions.extend(recorded),
        None => {
            // Refuse before touching anything when the start is already gone.
            plan(stack, &first, &live_offsets(pool, topic).await?)?;
            rebuild_progress::begin_clean(pool, topic, &source, &first, start.snapshot).await?;
        }
    }
    let resumed_records = positions.values().sum::<i64>() - first.values().sum::<i64>();

    let started = Instant::now();
    let horizon = options.dedup_horizon;
    let mut windows: Windows = (0..partitions)
        .map(|p| (p, DedupWindow::new(horizon)))
        .collect();
    rebuild_warmup::warm(stack, &positions, &mut windows, horizon).await?;
    let crew = Crew {
        workers,
        batch_events: options.batch_events,
        horizon,
    };
    let mut tally = Tally::default();
    // Passes without locks until the tail left for the swap (which holds the
    // projector's commits) is short.
    for pass in 0..MAX_PASSES {
        let live = live_offsets(pool, topic).await?;
        let spans = plan(stack, &positions, &live)?;
        let pending = i64::try_from(span_total(&spans))?;
        if pass > 0 && pending <= SHORT_TAIL {
            break;
        }
        let progress = Progress::new("rebuild postgres", span_total(&spans));
        let pass_started = Instant::now();
        tally += parallel_pass(stack, pool, &spans, &mut windows, crew, &progress).await?;
        tracing::info!(pass, pending, elapsed = ?pass_started.elapsed(), "rebuild pass");
        advance(&mut positions, &spans);
    }

    let mut tx = pool.begin().await?;
    let locked: HashMap<i32, i64> = sqlx::query_as(
        "SELECT partition, next_offset FROM projector_offsets
         WHERE topic = $1 ORDER BY partition FOR UPDATE",
    )
    .bind(topic)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .collect();
    let spans = plan(stack, &positions, &locked)?;
    let progress = Progress::new("rebuild postgres: final tail", span_total(&spans));
    let tail = apply_spans(
        stack,
        &mut tx,
        &spans,
        &mut windows,
        options.batch_events,
        false,
        &progress,
    )
    .await?;
    drop(progress);
    tally += tail;
    let seconds = started.elapsed().as_secs_f64();
    let inconsistent = shadow::inconsistent_items(&mut tx).await?;
    let (live_differences, listed_differences) =
        shadow::live_differences(&mut tx, MAX_LISTED).await?;
    if inconsistent > 0 {
        tx.rollback().await?;
        // A shadow that disagrees with itself must not be resumed either.
        discard(pool).await?;
        bail!("{inconsistent} rebuilt items disagree with their own user_likes; not swapping");
    }
    if options.dry_run {
        tx.rollback().await?;
        discard(pool).await?;
    } else {
        shadow::swap(&mut tx).await?;
        rebuild_progress::finish(&mut tx).await?;
        tx.commit().await.context("commit the swap")?;
        shadow::drop_old(&mut guard).await?;
    }
    Ok(PostgresRebuild {
        from: options.from,
        source,
        dry_run: options.dry_run,
        parallel: workers,
        resumed,
        resumed_records,
        events: tally.events,
        duplicates: tally.duplicates,
        poison: tally.poison,
        tail_events: tail.events,
        seconds,
        events_per_second: tally.events as f64 / seconds.max(0.001),
        inconsistent,
        live_differences,
        listed_differences,
        swapped: !options.dry_run,
    })
}

/// The live projector's next offset per partition it has claimed.
async fn live_offsets(pool: &PgPool, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    Ok(store::offsets::positions(pool, topic)
        .await?
        .into_iter()
        .collect())
}

/// Drops the shadow tables and forgets the build, in one transaction.
async fn discard(pool: &PgPool) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    shadow::drop_shadow(&mut tx).await?;
    rebuild_progress::finish(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Moves `positions` to the ends of `spans`, which were read completely.
fn advance(positions: &mut HashMap<i32, i64>, spans: &[Span]) {
    for span in spans {
        positions.insert(span.partition, span.end);
    }
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
