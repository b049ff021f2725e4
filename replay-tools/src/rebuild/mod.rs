//! The rebuilds. `rebuild postgres` ([`run`], here) rebuilds `user_likes` and
//! `counters` side by side while the projector keeps running; `rebuild redis`
//! ([`redis`]) rewrites the Redis counts from PostgreSQL and the recent likers
//! from the log ([`likers`]). By role:
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

use anyhow::{Context, bail};
use futures::future::{join_all, try_join_all};
use likes_domain::ItemKey;
use likes_infra::postgres::shadow;
use likes_infra::postgres::shards::Shards;
use likes_infra::postgres::{self, PgConnection, PgPool, rebuild_progress};
use likes_infra::settings::StackSettings;

use likes_domain::DedupWindow;
use likes_infra::kafka::reader::{TopicHandle, span_total};

use crate::progress::Progress;
use plan::{advance, live_offsets, plan};
pub use report::{PostgresRebuild, RebuildFrom, RebuildOptions, ShardRebuild};
use worker::{Crew, Tally, Windows, Writing, apply_spans, parallel_pass};

pub mod likers;
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

/// Rebuilds the PostgreSQL projection of `stack`'s topic as `options` say:
/// every shard at once, or the one `options.shard` names.
pub async fn run(
    stack: &StackSettings,
    options: &RebuildOptions,
) -> anyhow::Result<PostgresRebuild> {
    let partitions = TopicHandle::open(stack)?.partition_count()?;
    let building = match options.shard {
        Some(_) => 1,
        None => stack.database_urls.len(),
    };
    // The cores are shared by the shards built at once.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let workers = options.parallel.unwrap_or((cores / building).max(1)).max(1);
    // A connection per worker, one for the swap, one holding the rebuild lock.
    let shards = crate::shards::connect(stack, u32::try_from(workers)? + 2).await?;
    let result = rebuild_shards(stack, &shards, options, partitions, workers).await;
    // Closing the pools also releases the rebuild locks.
    shards.close().await;
    result
}

/// The shards' builds: each prepared (locked, its start resolved and checked)
/// before any begins, so a refusal on one shard leaves every shard untouched;
/// then all built, verified and swapped at once, each under its own lock.
async fn rebuild_shards(
    stack: &StackSettings,
    shards: &Shards,
    options: &RebuildOptions,
    partitions: i32,
    workers: usize,
) -> anyhow::Result<PostgresRebuild> {
    let selected = crate::shards::selected(shards, options.shard)?;
    crate::shards::check(shards, &stack.topic, &selected).await?;
    try_join_all(selected.iter().map(|&s| postgres::migrate(shards.pool(s)))).await?;
    let snapshot = start::choose(stack, shards, &selected, options.from).await?;
    let prepared = try_join_all(selected.iter().map(|&shard| {
        let owned = crate::shards::owned(shards, shard, partitions);
        let plan = ShardPlan {
            shard,
            partitions: owned.clone(),
            workers: workers.clamp(1, owned.len().max(1)),
            topic_partitions: partitions,
        };
        async move {
            prepare(stack, shards.pool(shard), options, snapshot, plan)
                .await
                .with_context(|| format!("rebuild of shard {shard} ({})", shards.name(shard)))
        }
    }))
    .await?;
    let builds = join_all(
        prepared
            .into_iter()
            .map(|p| build(stack, shards.pool(p.plan.shard), options, p)),
    )
    .await;
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for (shard, result) in selected.iter().zip(builds) {
        match result {
            Ok(d) => done.push(d),
            Err(e) => failed.push((*shard, e)),
        }
    }
    if let Some((shard, e)) = failed.into_iter().next() {
        let others: Vec<String> = done
            .iter()
            .map(|d| format!("shard {}: {}", d.shard, d.verdict(options.dry_run)))
            .collect();
        let others = match others.is_empty() {
            true => String::new(),
            false => format!(" (the others finished: {})", others.join("; ")),
        };
        return Err(e.context(format!(
            "rebuild of shard {shard} ({}){others}",
            shards.name(shard)
        )));
    }
    Ok(PostgresRebuild::combine(options, workers, done))
}

/// What one shard's build covers.
#[derive(Debug, Clone)]
struct ShardPlan {
    shard: usize,
    /// The partitions the shard owns: the only ones it reads and writes.
    partitions: std::ops::Range<i32>,
    workers: usize,
    /// The topic's partition count (an item's partition needs it).
    topic_partitions: i32,
}

/// A shard ready to build: its rebuild lock held on `guard`, its start resolved.
struct Prepared<C> {
    plan: ShardPlan,
    guard: C,
    start: start::Start,
    /// The positions a half-done build recorded (`None`: begin clean).
    resumable: Option<HashMap<i32, i64>>,
}

/// Takes the shard's rebuild lock and resolves its start, refusing before
/// anything is written when the start is already gone from the log.
async fn prepare(
    stack: &StackSettings,
    pool: &PgPool,
    options: &RebuildOptions,
    snapshot: Option<i64>,
    plan: ShardPlan,
) -> anyhow::Result<Prepared<impl std::ops::DerefMut<Target = PgConnection> + Send + use<>>> {
    let topic = &stack.topic;
    let mut guard = pool.acquire().await?;
    rebuild_progress::lock(&mut guard).await?;
    let start = start::resolve(stack, pool, plan.shard, snapshot).await?;
    let first = start.first(&plan.partitions);
    let resumable = match options.restart {
        true => None,
        false => rebuild_progress::resumable(pool, topic, &start.source()).await?,
    };
    if resumable.is_none() {
        // Refuse before touching anything when the start is already gone.
        plan::plan(stack, &first, &live_offsets(pool, topic).await?).await?;
    }
    Ok(Prepared {
        plan,
        guard,
        start,
        resumable,
    })
}

/// Builds one prepared shard: from its start (or where its half-done build
/// stopped) up to its live offsets, then verifies and swaps under its lock.
async fn build(
    stack: &StackSettings,
    pool: &PgPool,
    options: &RebuildOptions,
    prepared: Prepared<impl std::ops::DerefMut<Target = PgConnection> + Send>,
) -> anyhow::Result<ShardRebuild> {
    let topic = &stack.topic;
    let Prepared {
        plan: shard_plan,
        mut guard,
        start,
        resumable,
    } = prepared;
    let ShardPlan {
        shard,
        partitions: owned,
        workers,
        topic_partitions: partitions,
    } = shard_plan;
    let source = start.source();
    let first = start.first(&owned);
    let resumed = resumable.is_some();
    let mut positions = first.clone();
    match resumable {
        // Only the shard's own partitions: a row left by another map is not ours.
        Some(recorded) => positions.extend(recorded.into_iter().filter(|(p, _)| owned.contains(p))),
        None => {
            rebuild_progress::begin_clean(pool, topic, &source, &first, start.snapshot).await?;
        }
    }
    let resumed_records = positions.values().sum::<i64>() - first.values().sum::<i64>();

    let started = Instant::now();
    let horizon = options.dedup_horizon;
    let mut windows: Windows = owned
        .clone()
        .map(|p| (p, DedupWindow::new(horizon)))
        .collect();
    warmup::warm(stack, &positions, &mut windows, horizon).await?;
    let crew = Crew {
        workers,
        batch_events: options.batch_events,
        horizon,
    };
    let mut tally = Tally::default();
    let mut read = crate::commands::history::Sources::default();
    let mut passes = 0;
    // Passes without locks until the tail left for the swap (which holds the
    // projector's commits) is short; a tail found under the lock that grew
    // past MAX_LOCKED_TAIL is not applied there: the lock is let go and
    // another pass runs. A projector that keeps outpacing the passes ends the
    // rebuild (resumable) instead of a long stall.
    let (mut tx, locked, spans, differing) = loop {
        loop {
            let live = live_offsets(pool, topic).await?;
            let spans = plan(stack, &positions, &live).await?;
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
            let progress = Progress::new(
                &format!("rebuild postgres, shard {shard}"),
                span_total(&spans),
            );
            let pass_started = Instant::now();
            tally += parallel_pass(stack, pool, &spans, &mut windows, crew, &progress).await?;
            read.add(&spans);
            tracing::info!(pass = passes, pending, elapsed = ?pass_started.elapsed(), "rebuild pass");
            advance(&mut positions, &spans);
            passes += 1;
        }
        let differing = swap::check_before_lock(pool).await?;
        let mut tx = pool.begin().await?;
        let locked = swap::lock_offsets(&mut tx, topic).await?;
        let spans = plan(stack, &positions, &locked).await?;
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
    let progress = Progress::new(
        &format!("rebuild postgres, shard {shard}: final tail"),
        span_total(&spans),
    );
    read.add(&spans);
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
    Ok(ShardRebuild {
        shard,
        partitions: crate::shards::describe(&owned),
        source,
        read,
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
