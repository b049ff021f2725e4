//! What `rebuild postgres` is asked ([`RebuildFrom`], [`RebuildOptions`]) and
//! what it reports ([`PostgresRebuild`], printed as a few lines or one JSON
//! document).

use std::time::Duration;

use chrono::{DateTime, Utc};
use likes_infra::settings::DEFAULT_DEDUP_HORIZON_SECONDS;
use serde::Serialize;

use likes_infra::postgres::shadow::CountDiff;

/// Where a rebuild starts. Whatever the start, the rebuilt tables end at the
/// live projector's offsets: the start only says which state the replay builds on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RebuildFrom {
    /// The topic from offset 0 of every partition.
    Earliest,
    /// A snapshot's rows, then the topic from the snapshot's offsets.
    Snapshot(i64),
    /// The newest snapshot taken at or before this time, then the topic from its
    /// offsets; with no such snapshot, the whole topic if retention has deleted
    /// nothing yet, else a refusal (the state before the time is not rebuildable).
    Time(DateTime<Utc>),
}

impl std::str::FromStr for RebuildFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("snapshot:") {
            None if s == "earliest" => Ok(Self::Earliest),
            Some(id) => id
                .parse()
                .map(Self::Snapshot)
                .map_err(|_| format!("snapshot:<id> needs a numeric id, got {id:?}")),
            None => crate::cli::parse_time(s).map(Self::Time).map_err(|_| {
                format!(
                    "expected earliest, snapshot:<id> or an RFC 3339 time \
                     (2026-11-29T12:00:00Z), got {s:?}"
                )
            }),
        }
    }
}

/// How a rebuild runs.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    pub from: RebuildFrom,
    /// Build and verify, but leave the live tables as they are.
    pub dry_run: bool,
    /// Swap even when the rebuilt counts differ from the live ones at the same
    /// offsets, or records were skipped as poison (a repair is exactly that).
    pub accept_differences: bool,
    /// Workers per shard, each reading a disjoint set of the shard's partitions
    /// (`None`: the machine's cores shared by the shards built at once, at
    /// most one per partition).
    pub parallel: Option<usize>,
    /// Rebuild only this shard (0-based); `None`: every shard, at once.
    pub shard: Option<usize>,
    /// Records per shadow transaction (and per progress row update).
    pub batch_events: usize,
    /// Discard a half-done build instead of resuming it.
    pub restart: bool,
    /// How long an event id is remembered for dedup: the projector's
    /// `DEDUP_HORIZON_SECONDS`, so both count a late retry the same way.
    pub dedup_horizon: Duration,
}

impl RebuildOptions {
    /// The defaults: swap, resume, a worker per core, 10,000-record batches,
    /// the projector's default dedup horizon (`DEFAULT_DEDUP_HORIZON_SECONDS`).
    pub fn new(from: RebuildFrom) -> Self {
        Self {
            from,
            dry_run: false,
            accept_differences: false,
            parallel: None,
            shard: None,
            batch_events: 10_000,
            restart: false,
            dedup_horizon: Duration::from_secs(DEFAULT_DEDUP_HORIZON_SECONDS),
        }
    }
}

/// What a rebuild did: the sums over the shards it rebuilt, and each shard's
/// own figures in [`PostgresRebuild::shards`].
#[derive(Debug, Clone, Serialize)]
pub struct PostgresRebuild {
    pub from: RebuildFrom,
    /// What the start resolved to: `earliest` or `snapshot:<id>`.
    pub source: String,
    pub dry_run: bool,
    /// Workers per shard used for the unlocked passes (at most).
    pub parallel: usize,
    /// Whether a half-done build was resumed (on any shard), and how many
    /// records the shadow tables already reflected past the start (not read again).
    pub resumed: bool,
    pub resumed_records: i64,
    /// Events read from the topic (all passes), and how many were duplicates.
    pub events: u64,
    pub duplicates: u64,
    /// Undecodable records skipped (the projector sends them to the DLQ).
    pub poison: u64,
    /// Events applied inside the swap transactions (the final tails).
    pub tail_events: u64,
    /// Items compared again under the locks (those the tail touched and those
    /// that already differed): the whole tables are compared before them.
    pub locked_items_checked: u64,
    /// Seconds of the longest shard's reading and applying, and the events/s
    /// of all shards over that time.
    pub seconds: f64,
    pub events_per_second: f64,
    /// Shadow items whose count differs from `COUNT(*)` of shadow `user_likes`.
    pub inconsistent: i64,
    /// Items whose rebuilt count differs from the live one at the same offsets.
    pub live_differences: i64,
    pub listed_differences: Vec<CountDiff>,
    /// Whether every rebuilt shard's shadow tables replaced its live ones.
    pub swapped: bool,
    /// Why a build that was not a dry run did not swap, shard by shard
    /// (`shard 1: ...`; a shard that swapped is not named here). The shadow
    /// tables of a refused shard are kept: re-running resumes them.
    pub refused: Option<String>,
    /// Redis counts brought to the swapped values (the items that changed).
    pub redis_refreshed: u64,
    /// A Redis refresh that failed after a swap committed: PostgreSQL is
    /// right, Redis needs `likes-replay rebuild redis`.
    pub redis_error: Option<String>,
    /// Each rebuilt shard's figures, in shard order.
    pub shards: Vec<ShardRebuild>,
}

/// What a rebuild did on one shard (which swapped, or not, under its own lock).
#[derive(Debug, Clone, Serialize)]
pub struct ShardRebuild {
    /// The shard (0-based) and the partitions it owns, `first-last`.
    pub shard: usize,
    pub partitions: String,
    pub source: String,
    /// The offsets read from the archive (those retention deleted) and from
    /// the topic, per partition.
    pub read: crate::commands::history::Sources,
    pub parallel: usize,
    pub resumed: bool,
    pub resumed_records: i64,
    pub events: u64,
    pub duplicates: u64,
    pub poison: u64,
    pub tail_events: u64,
    pub locked_items_checked: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub inconsistent: i64,
    pub live_differences: i64,
    pub listed_differences: Vec<CountDiff>,
    pub swapped: bool,
    pub refused: Option<String>,
    pub redis_refreshed: u64,
    pub redis_error: Option<String>,
}

impl ShardRebuild {
    /// How the shard's build ended, in a few words.
    pub fn verdict(&self, dry_run: bool) -> &'static str {
        match (dry_run, self.swapped) {
            (true, _) => "dry run: live tables untouched, shadow tables dropped",
            (false, true) => "swapped: the rebuilt tables are live",
            (false, false) => "not swapped",
        }
    }
}

impl PostgresRebuild {
    /// The report of the shards rebuilt (`done`, in shard order).
    pub fn combine(options: &RebuildOptions, workers: usize, done: Vec<ShardRebuild>) -> Self {
        let seconds = done.iter().map(|d| d.seconds).fold(0.0, f64::max);
        let events: u64 = done.iter().map(|d| d.events).sum();
        let refused: Vec<String> = done
            .iter()
            .filter_map(|d| {
                d.refused
                    .as_ref()
                    .map(|r| format!("shard {}: {r}", d.shard))
            })
            .collect();
        let redis_errors: Vec<String> = done
            .iter()
            .filter_map(|d| {
                d.redis_error
                    .as_ref()
                    .map(|e| format!("shard {}: {e}", d.shard))
            })
            .collect();
        Self {
            from: options.from,
            source: done.first().map_or_else(String::new, |d| d.source.clone()),
            dry_run: options.dry_run,
            parallel: workers,
            resumed: done.iter().any(|d| d.resumed),
            resumed_records: done.iter().map(|d| d.resumed_records).sum(),
            events,
            duplicates: done.iter().map(|d| d.duplicates).sum(),
            poison: done.iter().map(|d| d.poison).sum(),
            tail_events: done.iter().map(|d| d.tail_events).sum(),
            locked_items_checked: done.iter().map(|d| d.locked_items_checked).sum(),
            seconds,
            events_per_second: events as f64 / seconds.max(0.001),
            inconsistent: done.iter().map(|d| d.inconsistent).sum(),
            live_differences: done.iter().map(|d| d.live_differences).sum(),
            listed_differences: done
                .iter()
                .flat_map(|d| d.listed_differences.iter().cloned())
                .collect(),
            swapped: !options.dry_run && !done.is_empty() && done.iter().all(|d| d.swapped),
            refused: (!refused.is_empty()).then(|| refused.join("; ")),
            redis_refreshed: done.iter().map(|d| d.redis_refreshed).sum(),
            redis_error: (!redis_errors.is_empty()).then(|| redis_errors.join("; ")),
            shards: done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_earliest_or_a_snapshot_id() {
        assert_eq!("earliest".parse(), Ok(RebuildFrom::Earliest));
        assert_eq!("snapshot:12".parse(), Ok(RebuildFrom::Snapshot(12)));
        assert!("snapshot:x".parse::<RebuildFrom>().is_err());
        assert!("latest".parse::<RebuildFrom>().is_err());
    }

    #[test]
    fn a_start_may_be_a_time() {
        let Ok(RebuildFrom::Time(t)) = "2026-11-29T12:00:00Z".parse() else {
            panic!("a time is a start");
        };
        assert_eq!(t.timestamp(), 1_795_953_600);
    }
}
