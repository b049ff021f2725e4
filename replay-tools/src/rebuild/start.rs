//! Where `rebuild postgres` starts: `--from` resolved to a state to build on
//! (nothing, or a snapshot's rows) and the per-partition offsets to replay from.
//!
//! A time means "build on the projection as it was at or before that time": the
//! newest snapshot of the topic taken at or before it. Without one, the state
//! before the time is only known from the whole log, so the topic is replayed
//! from its beginning if retention has deleted nothing yet; otherwise the
//! rebuild refuses, because starting at the first event after the time would
//! miss every like given before it and produce short counts.
//!
//! With several shards the snapshot is chosen once for all of them ([`choose`]):
//! only a snapshot every rebuilt shard holds a part of is a start, and each
//! shard then builds on its own part ([`resolve`]).

use std::collections::HashMap;

use anyhow::bail;
use chrono::{DateTime, Utc};
use likes_infra::postgres::PgPool;
use likes_infra::postgres::shards::Shards;
use likes_infra::postgres::snapshots;
use likes_infra::settings::StackSettings;

use crate::source::LogSource;

use super::report::RebuildFrom;

/// A resolved start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Start {
    /// The snapshot whose rows seed the shadow tables, if any.
    pub snapshot: Option<i64>,
    /// Per partition, the first offset to replay (absent: 0).
    pub offsets: HashMap<i32, i64>,
}

impl Start {
    /// `earliest` or `snapshot:<id>`: what a resumed build must have begun from.
    pub fn source(&self) -> String {
        match self.snapshot {
            Some(id) => format!("snapshot:{id}"),
            None => "earliest".to_string(),
        }
    }

    /// The first offset of each of `partitions` (absent from the start: 0).
    pub fn first(&self, partitions: &std::ops::Range<i32>) -> HashMap<i32, i64> {
        partitions
            .clone()
            .map(|p| (p, self.offsets.get(&p).copied().unwrap_or(0)))
            .collect()
    }
}

/// The snapshot `from` means for the `selected` shards (`None`: the whole log).
/// An id must have a part on every selected shard; a time picks the newest
/// snapshot taken by then that every selected shard holds a part of.
pub async fn choose(
    stack: &StackSettings,
    shards: &Shards,
    selected: &[usize],
    from: RebuildFrom,
) -> anyhow::Result<Option<i64>> {
    match from {
        RebuildFrom::Earliest => Ok(None),
        RebuildFrom::Snapshot(id) => {
            let mut missing = Vec::new();
            for &shard in selected {
                if snapshots::get(shards.pool(shard), id).await?.is_none() {
                    missing.push(shard.to_string());
                }
            }
            if missing.len() == selected.len() {
                return Err(likes_infra::Error::NoSnapshot { id }.into());
            }
            if !missing.is_empty() {
                bail!(
                    "snapshot {id} is incomplete: shard {} holds no part of it (a `snapshot \
                     create` that did not finish); refusing to build on it (`likes-replay \
                     snapshot show {id}`)",
                    missing.join(", ")
                );
            }
            Ok(Some(id))
        }
        RebuildFrom::Time(time) => {
            let mut candidates: Option<Vec<i64>> = None;
            for &shard in selected {
                let here = snapshots::taken_by(shards.pool(shard), &stack.topic, time).await?;
                candidates = Some(match candidates {
                    None => here,
                    Some(before) => before.into_iter().filter(|id| here.contains(id)).collect(),
                });
            }
            match candidates.and_then(|c| c.first().copied()) {
                Some(id) => Ok(Some(id)),
                None => {
                    whole_log_retained(stack, time).await?;
                    Ok(None)
                }
            }
        }
    }
}

/// Shard `shard`'s start: its part of `snapshot` (chosen by [`choose`]), or
/// the log's beginning.
pub async fn resolve(
    stack: &StackSettings,
    pool: &PgPool,
    shard: usize,
    snapshot: Option<i64>,
) -> anyhow::Result<Start> {
    let Some(id) = snapshot else {
        return Ok(Start {
            snapshot: None,
            offsets: HashMap::new(),
        });
    };
    let Some(info) = snapshots::get(pool, id).await? else {
        bail!("snapshot {id} has no part on shard {shard}; refusing");
    };
    if info.topic != stack.topic {
        bail!(
            "snapshot {id} is of topic {}, not {}",
            info.topic,
            stack.topic
        );
    }
    Ok(Start {
        snapshot: Some(id),
        offsets: snapshots::offsets(pool, id).await?,
    })
}

/// Refuses a start at `time` that has no snapshot when retention already
/// deleted the beginning of some partition.
async fn whole_log_retained(stack: &StackSettings, time: DateTime<Utc>) -> anyhow::Result<()> {
    let mut source = LogSource::open(stack)?;
    for partition in 0..source.partition_count()? {
        let (low, _) = source.watermarks(partition).await?;
        if low > 0 {
            bail!(
                "no snapshot of topic {} was taken at or before {time}, and retention deleted \
                 the start of partition {partition} (it begins at offset {low}): the state \
                 before that time cannot be rebuilt, so the counts would be short; refusing \
                 (`likes-replay snapshot list` shows the snapshots there are)",
                stack.topic
            );
        }
    }
    Ok(())
}
