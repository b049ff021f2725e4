//! Where `rebuild postgres` starts: `--from` resolved to a state to build on
//! (nothing, or a snapshot's rows) and the per-partition offsets to replay from.
//!
//! A time means "build on the projection as it was at or before that time": the
//! newest snapshot of the topic taken at or before it. Without one, the state
//! before the time is only known from the whole log, so the topic is replayed
//! from its beginning if retention has deleted nothing yet; otherwise the
//! rebuild refuses, because starting at the first event after the time would
//! miss every like given before it and produce short counts.

use std::collections::HashMap;

use anyhow::bail;
use chrono::{DateTime, Utc};
use likes_infra::postgres::PgPool;
use likes_infra::postgres::snapshots;
use likes_infra::settings::StackSettings;

use super::report::RebuildFrom;
use likes_infra::kafka::reader::TopicHandle;

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
}

/// Resolves `from` for `stack`'s topic.
pub async fn resolve(
    stack: &StackSettings,
    pool: &PgPool,
    from: RebuildFrom,
) -> anyhow::Result<Start> {
    let id = match from {
        RebuildFrom::Earliest => None,
        RebuildFrom::Snapshot(id) => Some(id),
        RebuildFrom::Time(time) => match snapshots::newest_at(pool, &stack.topic, time).await? {
            Some(id) => Some(id),
            None => {
                whole_log_retained(stack, time)?;
                None
            }
        },
    };
    let Some(id) = id else {
        return Ok(Start {
            snapshot: None,
            offsets: HashMap::new(),
        });
    };
    let info = snapshots::get(pool, id)
        .await?
        .ok_or(likes_infra::Error::NoSnapshot { id })?;
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
fn whole_log_retained(stack: &StackSettings, time: DateTime<Utc>) -> anyhow::Result<()> {
    let handle = TopicHandle::open(stack)?;
    for partition in 0..handle.partition_count()? {
        let (low, _) = handle.watermarks(partition)?;
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
