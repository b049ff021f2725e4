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
    /// Workers reading disjoint sets of partitions (`None`: the machine's cores,
    /// at most one per partition).
    pub parallel: Option<usize>,
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
            batch_events: 10_000,
            restart: false,
            dedup_horizon: Duration::from_secs(DEFAULT_DEDUP_HORIZON_SECONDS),
        }
    }
}

/// What a rebuild did.
#[derive(Debug, Clone, Serialize)]
pub struct PostgresRebuild {
    pub from: RebuildFrom,
    /// What the start resolved to: `earliest` or `snapshot:<id>`.
    pub source: String,
    pub dry_run: bool,
    /// Workers used for the unlocked passes.
    pub parallel: usize,
    /// Whether a half-done build was resumed, and how many records its shadow
    /// tables already reflected past the start (not read again).
    pub resumed: bool,
    pub resumed_records: i64,
    /// Events read from the topic (all passes), and how many were duplicates.
    pub events: u64,
    pub duplicates: u64,
    /// Undecodable records skipped (the projector sends them to the DLQ).
    pub poison: u64,
    /// Events applied inside the swap transaction (the final tail).
    pub tail_events: u64,
    /// Items compared again under the lock (those the tail touched and those
    /// that already differed): the whole tables are compared before it.
    pub locked_items_checked: u64,
    /// Seconds and events/s of reading and applying the log (all passes).
    pub seconds: f64,
    pub events_per_second: f64,
    /// Shadow items whose count differs from `COUNT(*)` of shadow `user_likes`.
    pub inconsistent: i64,
    /// Items whose rebuilt count differs from the live one at the same offsets.
    pub live_differences: i64,
    pub listed_differences: Vec<CountDiff>,
    /// Whether the shadow tables replaced the live ones.
    pub swapped: bool,
    /// Why a build that was not a dry run did not swap (the shadow tables are
    /// kept: re-running resumes them).
    pub refused: Option<String>,
    /// Redis counts brought to the swapped values (the items that changed).
    pub redis_refreshed: u64,
    /// A Redis refresh that failed after the swap committed: PostgreSQL is
    /// right, Redis needs `likes-replay rebuild redis`.
    pub redis_error: Option<String>,
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
