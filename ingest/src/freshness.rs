//! How fresh the projection is, per partition: the projection watch.
//!
//! Once a [`WATCH_EVERY`], one watch per ingest instance reads where every
//! partition of the log ends (one ListOffsets request) and then where the
//! projector stands in each (one query per shard). From the two it knows, per
//! partition:
//! - the lag in records (log end − the projector's stored next offset), which
//!   keeps growing while no projector runs: the projector's own metrics
//!   vanish with it, these do not;
//! - the time up to which the partition is projected: the moment the log end
//!   was read when the projector had reached it (everything appended before
//!   was applied), else the record time of the newest record applied.
//!
//! Counts carry that time (`projected_through`), so a client can tell "0
//! likes" from "0 likes as of 40 s ago". It is read from PostgreSQL, which
//! Redis follows within one write (see the projector's `commit`); a partition
//! that could not be read keeps its last value, so the time only gets older,
//! never wrongly newer.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use likes_infra::kafka::ends::LogEnds;
use likes_infra::kafka::partitioner;
use tokio::sync::watch;

use crate::observability;
use crate::projection::Projection;

/// How often the watch reads the log ends and the projector's progress.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// Per partition (index), the time (ms) up to which it is projected, if known.
type Through = Arc<Vec<Option<i64>>>;

/// The latest reading of the projection watch.
#[derive(Clone)]
pub struct Freshness {
    through: watch::Receiver<Through>,
}

impl Freshness {
    /// Starts the watch; it stops once every [`Freshness`] is dropped.
    pub fn spawn(projection: Arc<Projection>, ends: LogEnds) -> Self {
        let (publish, through) = watch::channel(Through::default());
        tokio::spawn(watch_forever(projection, ends, publish));
        Self { through }
    }

    /// The time up to which `item_id`'s partition is projected, `None` until
    /// the watch has read it.
    pub fn projected_through(&self, item_id: i64) -> Option<DateTime<Utc>> {
        let through = self.through.borrow();
        let partitions = i32::try_from(through.len()).ok().filter(|n| *n > 0)?;
        let partition = partitioner::partition_for_item(item_id, partitions);
        let ms = through.get(usize::try_from(partition).ok()?).copied()??;
        DateTime::from_timestamp_millis(ms)
    }
}

/// One partition's standing, as read in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub lag: i64,
    pub through_ms: Option<i64>,
}

/// A partition's lag and the time up to which it is projected, from its log
/// end read at `read_at_ms` and the projector's progress read after it.
pub fn standing(
    log_end: i64,
    next_offset: i64,
    log_time_ms: Option<i64>,
    read_at_ms: i64,
) -> Standing {
    let lag = (log_end - next_offset).max(0);
    let through_ms = if lag == 0 {
        Some(read_at_ms)
    } else {
        log_time_ms
    };
    Standing { lag, through_ms }
}

async fn watch_forever(
    projection: Arc<Projection>,
    ends: LogEnds,
    publish: watch::Sender<Through>,
) {
    let mut tick = tokio::time::interval(WATCH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut partitions: Option<i32> = None;
    let mut failing = Failing::default();
    let mut through: Vec<Option<i64>> = Vec::new();
    while !publish.is_closed() {
        tick.tick().await;
        failing.round_started();
        let read_at_ms = Utc::now().timestamp_millis();
        let count = match partitions {
            Some(n) => n,
            None => match likes_infra::kafka::partition_count(ends.bootstrap(), ends.topic()).await
            {
                Ok(n) => *partitions.insert(n),
                Err(e) => {
                    failing.failed("topic metadata", &e);
                    continue;
                }
            },
        };
        let log_ends = match ends.read(count).await {
            Ok(log_ends) => log_ends,
            Err(e) => {
                failing.failed("log end offsets", &e);
                continue;
            }
        };
        through.resize(log_ends.len(), None);
        let map = projection.map();
        let mut answered = vec![false; projection.len()];
        let mut seen = vec![false; log_ends.len()];
        for (shard, rows) in projection.progress().await.into_iter().enumerate() {
            let rows = match rows {
                Ok(rows) => {
                    answered[shard] = true;
                    rows
                }
                Err(e) => {
                    failing.failed("projector progress", &e);
                    continue;
                }
            };
            for row in rows {
                let Some(end) = usize::try_from(row.partition)
                    .ok()
                    .and_then(|i| log_ends.get(i))
                else {
                    continue;
                };
                seen[row.partition as usize] = true;
                let now = standing(*end, row.next_offset, row.log_time_ms, read_at_ms);
                let slot = &mut through[row.partition as usize];
                // Never newer than the truth, never moved back by a late reading.
                *slot = match (*slot, now.through_ms) {
                    (Some(old), Some(new)) => Some(old.max(new)),
                    (old, new) => new.or(old),
                };
                observability::projection_lag(row.partition, now.lag);
            }
        }
        // A partition its shard has no row for was never projected: all its
        // records wait (counted from offset 0, before retention deleted any).
        for (partition, end) in log_ends.iter().enumerate() {
            let Ok(p) = i32::try_from(partition) else {
                continue;
            };
            if !seen[partition] && answered.get(map.shard_of(p)).copied().unwrap_or(false) {
                let now = standing(*end, 0, None, read_at_ms);
                if now.through_ms.is_some() {
                    through[partition] = through[partition].max(now.through_ms);
                }
                observability::projection_lag(p, now.lag);
            }
        }
        let now_ms = Utc::now().timestamp_millis();
        for (partition, slot) in through.iter().enumerate() {
            if let Some(ms) = slot {
                observability::projection_staleness(partition, (now_ms - ms).max(0));
            }
        }
        failing.round_ended();
        if publish.send(Arc::new(through.clone())).is_err() {
            break;
        }
    }
}

/// Whether the watch's readings fail: each failure is counted, but logged
/// as a warning only when the watch starts failing (then at debug level), and
/// once when a whole round succeeds again, so an outage logs two lines, not
/// one a second.
#[derive(Default)]
struct Failing {
    now: bool,
    this_round: bool,
}

impl Failing {
    fn round_started(&mut self) {
        self.this_round = false;
    }

    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        observability::watch_failed();
        if self.now {
            tracing::debug!(error = %error, what, "projection watch: reading failed");
        } else {
            tracing::warn!(error = %error, what, "projection watch: reading failed; lag and projected_through keep their last values");
        }
        self.now = true;
        self.this_round = true;
    }

    fn round_ended(&mut self) {
        if self.now && !self.this_round {
            tracing::info!("projection watch: readings succeed again");
            self.now = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_up_partition_is_projected_through_the_moment_its_end_was_read() {
        let s = standing(120, 120, Some(5_000), 9_000);
        assert_eq!(
            s,
            Standing {
                lag: 0,
                through_ms: Some(9_000)
            }
        );
    }

    #[test]
    fn a_partition_behind_is_projected_through_its_newest_applied_record() {
        let s = standing(130, 120, Some(5_000), 9_000);
        assert_eq!(
            s,
            Standing {
                lag: 10,
                through_ms: Some(5_000)
            }
        );
    }

    #[test]
    fn a_partition_never_applied_and_behind_has_no_time() {
        assert_eq!(standing(3, 0, None, 9_000).through_ms, None);
    }
}
