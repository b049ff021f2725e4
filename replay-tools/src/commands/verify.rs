//! `likes-replay verify`: three-way reconciliation of the projections, per
//! item: the Redis count vs `counters.count` vs `COUNT(*)` of `user_likes`.
//! Items stream from PostgreSQL in chunks (one statement, so `counters` and
//! `user_likes` are compared in one snapshot) and Redis is read with one MGET
//! per chunk. A Redis mismatch is re-read once before it is called drift, since
//! the projector writes Redis just after its commit. A Redis miss is not drift
//! (the API falls back to PostgreSQL). `--repair` rewrites the drifted Redis
//! counts from PostgreSQL, except for items whose `counters` disagree with
//! `user_likes`: those need a rebuild and are only reported.
//!
//! Every shard is verified (each shard's map checked first), one after the
//! other: an item's rows live on its partition's shard only, so each shard is
//! compared with Redis on its own, and every drift names its shard.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use futures::TryStreamExt;
use likes_domain::ItemKey;
use likes_infra::postgres::PgPool;
use likes_infra::postgres::reads::{self, ItemCounts};
use likes_infra::redis::Redis;
use likes_infra::redis::counts::{self, parse_stamped};
use likes_infra::redis::repair::{self, CountRepair};
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::output::{Format, table_row};
use crate::progress::Progress;

/// Items compared per round trip.
const CHUNK: usize = 500;
/// At most this many drifted items are kept for the report (all are counted).
pub const MAX_DRIFT_LISTED: usize = 10_000;

/// `likes-replay verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Rewrite drifted Redis counts from PostgreSQL (stamped with `counters.last_offset`).
    #[arg(long)]
    repair: bool,
    /// Check this many random items of `counters` instead of all (spread
    /// evenly over the shards).
    #[arg(long)]
    sample: Option<u64>,
    /// Output: a table and a summary line, or one JSON document.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Runs `verify` and prints the report; exit 2 while drift remains.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    let options = VerifyOptions {
        sample: args.sample,
        repair: args.repair,
    };
    let report = run(stack, options).await?;
    print(&mut std::io::stdout().lock(), &report, args.format)?;
    Ok(match report.has_drift() {
        true => ExitCode::from(2),
        false => ExitCode::SUCCESS,
    })
}

/// What to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Check this many random items of `counters` instead of all.
    pub sample: Option<u64>,
    /// Rewrite drifted Redis counts from PostgreSQL.
    pub repair: bool,
}

/// One item whose three counts disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// The shard holding the item's rows (0-based).
    pub shard: usize,
    pub item_type: i32,
    pub item_id: i64,
    /// Redis count and stamp (`None`: not cached).
    pub redis: Option<i64>,
    pub redis_stamp: Option<i64>,
    /// `counters.count` and `last_offset` (`None`: no row).
    pub counters: Option<i64>,
    pub last_offset: Option<i64>,
    /// `COUNT(*)` of the item's `user_likes` rows.
    pub likers: i64,
    /// Redis holds a count other than `counters`.
    pub redis_drift: bool,
    /// `counters` disagrees with `user_likes`.
    pub counters_drift: bool,
    /// The Redis side was rewritten by `--repair`.
    pub repaired: bool,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub redis_missing: u64,
    pub redis_drift: u64,
    pub counters_drift: u64,
    pub repaired: u64,
    pub drift: Vec<Drift>,
    /// The same figures for each shard, in shard order.
    pub shards: Vec<ShardVerified>,
}

/// What was checked on one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardVerified {
    pub shard: usize,
    /// The shard's partitions, `first-last`.
    pub partitions: String,
    pub checked: u64,
    pub redis_missing: u64,
    pub redis_drift: u64,
    pub counters_drift: u64,
    pub repaired: u64,
}

impl VerifyReport {
    /// Whether drift remains (after any repair).
    pub fn has_drift(&self) -> bool {
        self.counters_drift > 0 || self.redis_drift > self.repaired
    }
}

/// Reconciles the projections of `stack`, shard by shard.
pub async fn run(stack: &StackSettings, options: VerifyOptions) -> anyhow::Result<VerifyReport> {
    let shards = crate::shards::connect_all(stack, 2).await?;
    let cache = Redis::connect(&stack.redis_address(), &stack.redis_key_prefix).await?;
    let mut totals = Vec::with_capacity(shards.len());
    for (_, pool) in shards.iter() {
        totals.push(reads::counters_len(pool).await?);
    }
    // A sample is spread evenly over the shards.
    let per_shard = options.sample.map(|s| s.div_ceil(shards.len() as u64));
    let total = totals
        .iter()
        .map(|t| per_shard.map_or(*t, |s| s.min(*t)))
        .sum();
    let progress = Progress::new("verify", total);
    let mut report = VerifyReport::default();
    for (shard, pool) in shards.iter() {
        let mut own = VerifyReport::default();
        let mut suspects = Vec::new();
        {
            let mut rows = reads::item_counts(pool, per_shard);
            let mut chunk = Vec::with_capacity(CHUNK);
            while let Some(row) = rows.try_next().await? {
                chunk.push(row);
                if chunk.len() == CHUNK {
                    check(shard, &cache, &chunk, &mut own, &mut suspects).await?;
                    progress.inc(chunk.len() as u64);
                    chunk.clear();
                }
            }
            check(shard, &cache, &chunk, &mut own, &mut suspects).await?;
            progress.inc(chunk.len() as u64);
        }
        recheck(pool, &cache, suspects, options.repair, &mut own).await?;
        report.shards.push(ShardVerified {
            shard,
            partitions: crate::shards::owns(&shards, shard),
            checked: own.checked,
            redis_missing: own.redis_missing,
            redis_drift: own.redis_drift,
            counters_drift: own.counters_drift,
            repaired: own.repaired,
        });
        report.checked += own.checked;
        report.redis_missing += own.redis_missing;
        report.redis_drift += own.redis_drift;
        report.counters_drift += own.counters_drift;
        report.repaired += own.repaired;
        for d in own.drift {
            push(&mut report, d);
        }
    }
    progress.finish();
    shards.close().await;
    Ok(report)
}

/// Compares one chunk; Redis mismatches become suspects to re-read.
async fn check(
    shard: usize,
    cache: &Redis,
    rows: &[ItemCounts],
    report: &mut VerifyReport,
    suspects: &mut Vec<Drift>,
) -> anyhow::Result<()> {
    let items: Vec<ItemKey> = rows.iter().map(|r| r.item).collect();
    let cached = counts::raw_counts(cache, &items).await?;
    for ((item, row), raw) in items.iter().zip(rows).zip(cached) {
        let &ItemCounts {
            count: counters,
            last_offset,
            likers,
            ..
        } = row;
        report.checked += 1;
        let stamped = raw.as_deref().and_then(parse_stamped);
        if raw.is_none() {
            report.redis_missing += 1;
        }
        let drift = Drift {
            shard,
            item_type: item.item_type.get(),
            item_id: item.item_id.get(),
            redis: stamped.map(|s| s.0),
            redis_stamp: stamped.map(|s| s.1),
            counters,
            last_offset,
            likers,
            // A cached value that does not even parse is drift too.
            redis_drift: raw.is_some() && stamped.map(|s| s.0) != Some(counters.unwrap_or(0)),
            counters_drift: counters.unwrap_or(0) != likers,
            repaired: false,
        };
        if drift.redis_drift {
            suspects.push(drift);
        } else if drift.counters_drift {
            report.counters_drift += 1;
            push(report, drift);
        }
    }
    Ok(())
}

/// Re-reads the Redis suspects after the projector had time to write; keeps
/// (and with `repair` fixes) those that still disagree.
async fn recheck(
    pool: &PgPool,
    cache: &Redis,
    suspects: Vec<Drift>,
    repair: bool,
    report: &mut VerifyReport,
) -> anyhow::Result<()> {
    if suspects.is_empty() {
        return Ok(());
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for chunk in suspects.chunks(CHUNK) {
        let mut items = Vec::with_capacity(chunk.len());
        for d in chunk {
            items.push(ItemKey::parse(d.item_type.into(), d.item_id)?);
        }
        let cached = counts::raw_counts(cache, &items).await?;
        let stored = reads::counts(pool, &items).await?;
        let mut repairs = Vec::new();
        for ((item, mut d), raw) in items.iter().zip(chunk.iter().cloned()).zip(cached) {
            let now = stored.iter().find(|s| s.0 == *item).map(|s| (s.1, s.2));
            let stamped = raw.as_deref().and_then(parse_stamped);
            d.redis = stamped.map(|s| s.0);
            d.redis_stamp = stamped.map(|s| s.1);
            d.counters = now.map(|n| n.0);
            d.last_offset = now.map(|n| n.1);
            d.redis_drift = raw.is_some() && d.redis != Some(d.counters.unwrap_or(0));
            if d.counters_drift {
                report.counters_drift += 1;
            }
            if d.redis_drift {
                report.redis_drift += 1;
            }
            // PostgreSQL that disagrees with itself is no source to copy from:
            // such an item needs a rebuild, and keeps its Redis value meanwhile.
            if d.redis_drift && !d.counters_drift {
                repairs.push(CountRepair {
                    item: *item,
                    seen: raw,
                    count: now,
                });
            }
            if d.redis_drift || d.counters_drift {
                push(report, d);
            }
        }
        if repair && !repairs.is_empty() {
            report.repaired += repair::replace_counts(cache, &repairs).await?;
            for r in &repairs {
                if let Some(d) = report.drift.iter_mut().find(|d| {
                    d.item_type == r.item.item_type.get() && d.item_id == r.item.item_id.get()
                }) {
                    d.repaired = true;
                }
            }
        }
    }
    Ok(())
}

fn push(report: &mut VerifyReport, drift: Drift) {
    if report.drift.len() < MAX_DRIFT_LISTED {
        report.drift.push(drift);
    }
}

/// Prints a report in `format`.
pub fn print(out: &mut impl Write, report: &VerifyReport, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut *out, report)?;
        writeln!(out)?;
        return Ok(());
    }
    if !report.drift.is_empty() {
        let widths = [14, 6, 12, 12, 10, 6];
        let header = ["item", "shard", "redis", "counters", "user_likes", "drift"];
        table_row(out, &widths, &header.map(String::from))?;
        for d in &report.drift {
            let opt = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            let mut kinds = Vec::new();
            if d.redis_drift {
                kinds.push(if d.repaired {
                    "redis (repaired)"
                } else {
                    "redis"
                });
            }
            if d.counters_drift {
                kinds.push("counters");
            }
            let cells = [
                format!("{}:{}", d.item_type, d.item_id),
                d.shard.to_string(),
                opt(d.redis),
                opt(d.counters),
                d.likers.to_string(),
                kinds.join(", "),
            ];
            table_row(out, &widths, &cells)?;
        }
        writeln!(out)?;
    }
    for s in &report.shards {
        writeln!(
            out,
            "shard {} (partitions {}): checked {} items: {} not cached, {} Redis drift ({} \
             repaired), {} counters drift",
            s.shard,
            s.partitions,
            s.checked,
            s.redis_missing,
            s.redis_drift,
            s.repaired,
            s.counters_drift
        )?;
    }
    if report.shards.len() > 1 {
        writeln!(
            out,
            "all {} shards: checked {} items: {} not cached, {} Redis drift ({} repaired), {} \
             counters drift",
            report.shards.len(),
            report.checked,
            report.redis_missing,
            report.redis_drift,
            report.repaired,
            report.counters_drift
        )?;
    }
    Ok(())
}
