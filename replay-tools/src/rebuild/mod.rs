//! The rebuilds. `rebuild postgres` ([`run`], here) rebuilds `user_likes` and
//! `counters` side by side while the projector keeps running; `rebuild redis`
//! ([`redis`]) rewrites the Redis counts from PostgreSQL. By role:
//! - [`start`]: `--from` resolved to a state to build on (nothing, or a
//!   snapshot) and the offsets to replay from; [`plan`]: the spans a pass reads,
//!   refused when retention already deleted part of them (a rebuild never
//!   produces short counts);
//! - [`swap`]: the checks around the lock, the lock, and the renaming; the
//!   SQL of the shadow tables and of the progress recorded with their rows is
//!   `likes_infra::postgres::{shadow, rebuild_progress}`;
//! - [`warmup`]: the dedup windows refilled from one horizon before a start
//!   that is not the log's beginning; [`worker`]: partition-parallel passes
//!   that fill the shadow tables, dedup by the domain's rule;
//! - [`report`]: what a rebuild is asked and what it reports; [`redis`]: the
//!   Redis side, whole or the items a swap changed.
//!
//! The flow of [`run`]: shadow tables are begun clean (seeded from a snapshot,
//! or empty) or, after an interruption, resumed from the progress recorded with
//! their rows. Workers fill them up to the live projector's offsets, in passes
//! until the tail is short. Then one transaction locks the topic's
//! `projector_offsets` rows (`FOR UPDATE`: the projector's next batch commit
//! waits), applies the last tail up to the offsets it read, verifies the shadow
//! against itself and against the live tables (both now at the same offsets:
//! the whole tables are compared just before the lock, and under it only the
//! items the tail touched and those that already differed, so the time under
//! the lock follows the tail, not the table size), and, unless `--dry-run`, or
//! the rebuilt counts differ from the live ones without
//! `--accept-differences`, renames shadow → live and commits. The live tables
//! change only at that commit; right after it, the Redis counts of the items
//! that changed are brought to the swapped values.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use anyhow::bail;
use likes_domain::ItemKey;
use likes_infra::postgres::shadow;
use likes_infra::postgres::{self, PgPool, rebuild_progress};
use likes_infra::settings::StackSettings;

use likes_domain::DedupWindow;
use likes_infra::kafka::reader::{TopicHandle, span_total};

use crate::progress::Progress;
use plan::{advance, live_offsets, plan};
pub use report::{PostgresRebuild, RebuildFrom, RebuildOptions};
use worker::{Crew, Tally, Windows, Writing, apply_spans, parallel_pass};

pub mod plan;
pub mod redis;
pub mod report;
pub mod start;
pub mod swap;
pub mod warmup;
pub mod worker;

/// Unlocked catch-up passes at most, and the tail that is short enough to
/// apply while the projector waits.
const MAX_PASSES: usize = 8;
const SHORT_TAIL: i64 = 1_000;
/// The largest tail applied while the projector waits on the lock.
const MAX_LOCKED_TAIL: i64 = 5_000;
/// Differences from the live counts listed in the report (all are counted).
const MAX_DIFFERENCES_LISTED: usize = 100;

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
    let pool = postgres::connect_lazy(
        postgres::shards::one_database(stack)?,
        u32::try_from(workers)? + 2,
    )?;
    postgres::migrate(&pool).await?;
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
    let start = start::resolve(stack, pool, options.from).await?;
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
    warmup::warm(stack, &positions, &mut windows, horizon).await?;
    let crew = Crew {
        workers,
        batch_events: options.batch_events,
        horizon,
    };
    let mut tally = Tally::default();
    let mut passes = 0;
    // Passes without locks until the tail left for the swap (which holds the
    // projector's commits) is short; a tail found under the lock that grew
    // past MAX_LOCKED_TAIL is not applied there: the lock is let go and
    // another pass runs. A projector that keeps outpacing the passes ends the
    // rebuild (resumable) instead of a long stall.
    let (mut tx, locked, spans, differing) = loop {
        loop {
            let live = live_offsets(pool, topic).await?;
            let spans = plan(stack, &positions, &live)?;
            let pending = i64::try_from(span_total(&spans))?;
            if pending <= SHORT_TAIL {
                break;
            }
            if passes == MAX_PASSES {
                bail!(
                    "after {passes} passes the rebuild is still {pending} events behind the live \
                     projector (it swaps only with a tail of at most {SHORT_TAIL}); not swapping. \
                     The shadow tables are kept: re-run to resume, with more --parallel or at a \
                     quieter time"
                );
            }
            let progress = Progress::new("rebuild postgres", span_total(&spans));
            let pass_started = Instant::now();
            tally += parallel_pass(stack, pool, &spans, &mut windows, crew, &progress).await?;
            tracing::info!(pass = passes, pending, elapsed = ?pass_started.elapsed(), "rebuild pass");
            advance(&mut positions, &spans);
            passes += 1;
        }
        let differing = swap::check_before_lock(pool).await?;
        let mut tx = pool.begin().await?;
        let locked = swap::lock_offsets(&mut tx, topic).await?;
        let spans = plan(stack, &positions, &locked)?;
        let tail = i64::try_from(span_total(&spans))?;
        if tail <= MAX_LOCKED_TAIL {
            break (tx, locked, spans, differing);
        }
        tx.rollback().await?;
        tracing::info!(
            tail,
            "tail grew past the bound under the lock; another pass"
        );
        if passes == MAX_PASSES {
            bail!(
                "the tail under the lock was {tail} events after {passes} passes (at most \
                 {MAX_LOCKED_TAIL} are applied while the projector waits); not swapping. The \
                 shadow tables are kept: re-run to resume"
            );
        }
    };
    let progress = Progress::new("rebuild postgres: final tail", span_total(&spans));
    let mut touched: HashSet<ItemKey> = HashSet::new();
    let tail = apply_spans(
        stack,
        &mut tx,
        &spans,
        &mut windows,
        options.batch_events,
        &progress,
        Writing::InCallers {
            touched: &mut touched,
        },
    )
    .await?;
    drop(progress);
    tally += tail;
    let seconds = started.elapsed().as_secs_f64();
    let recheck = swap::items_to_recheck(touched, &differing)?;
    let inconsistent = shadow::inconsistent_among(&mut tx, &recheck).await?;
    let differences = shadow::live_differences_among(&mut tx, &recheck).await?;
    let live_differences = i64::try_from(differences.len())?;
    let listed_differences: Vec<_> = differences
        .iter()
        .take(MAX_DIFFERENCES_LISTED)
        .cloned()
        .collect();
    if inconsistent > 0 {
        tx.rollback().await?;
        // A shadow that disagrees with itself must not be resumed either.
        rebuild_progress::discard(pool).await?;
        bail!("{inconsistent} rebuilt items disagree with their own user_likes; not swapping");
    }
    let refused = match (live_differences, tally.poison) {
        _ if options.dry_run || options.accept_differences => None,
        (0, 0) => None,
        (d, p) => Some(format!(
            "{d} items differ from the live counts at the same offsets and {p} records were \
             skipped as poison; the live tables are kept (re-run with --accept-differences to \
             swap in the rebuilt counts: that resumes this build)"
        )),
    };
    let mut redis_refreshed = 0;
    let mut redis_error = None;
    if options.dry_run {
        tx.rollback().await?;
        rebuild_progress::discard(pool).await?;
    } else if refused.is_some() {
        // The tail is rolled back with the lock; the shadow rows and their
        // recorded progress stay, so a re-run with the flag resumes here.
        tx.rollback().await?;
    } else {
        swap::swap_in(tx, &mut guard).await?;
        match redis::refresh_swapped(stack, &differences, &locked, partitions).await {
            Ok(n) => redis_refreshed = n,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "redis refresh after the swap failed");
                redis_error = Some(format!("{e:#}"));
            }
        }
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
        locked_items_checked: recheck.len() as u64,
        seconds,
        events_per_second: tally.events as f64 / seconds.max(0.001),
        inconsistent,
        live_differences,
        listed_differences,
        swapped: !options.dry_run && refused.is_none(),
        refused,
        redis_refreshed,
        redis_error,
    })
}
