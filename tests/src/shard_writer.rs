//! A stand-in for the sharded projector in tests of the tools: projects a
//! test topic into the shards of a [`TestEnv::sharded`] with infra's own batch
//! writer, each partition claimed on and written to the shard that owns it,
//! one batch per shard up to the end of the log. What it writes is exactly
//! what the projector commits (rows, counts, offsets and epochs together).

use std::collections::HashMap;
use std::time::Duration;

use likes_domain::{DedupHorizon, LikeEvent, LoggedEvent, Position};
use likes_infra::kafka::reader::{Span, TopicHandle};
use likes_infra::postgres::offsets;
use likes_infra::postgres::writer::{BatchRules, OffsetCommit, apply_batch};

use crate::TestEnv;

/// Publishes `events` in this order (each awaited: the log keeps the order).
pub async fn publish(env: &TestEnv, events: &[LikeEvent]) -> anyhow::Result<()> {
    let publisher = env.publisher().await?;
    for event in events {
        publisher
            .publish(event)
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e:?}"))?;
    }
    Ok(())
}

/// Applies every record past each shard's stored offsets, shard by shard;
/// returns how many events each shard applied (index = shard).
pub async fn project_log(env: &TestEnv) -> anyhow::Result<Vec<usize>> {
    let topic = &env.stack.topic;
    let mut applied = Vec::new();
    for (shard, pool) in env.shards.iter() {
        let owned: Vec<i32> = env
            .shards
            .map()
            .partitions_of(shard)
            .unwrap_or(0..env.partitions)
            .collect();
        let claims = offsets::claim(pool, topic, &owned).await?;
        let handle = TopicHandle::open(&env.stack)?;
        let mut spans = Vec::new();
        let mut commits = Vec::new();
        for claim in &claims {
            let (low, high) = handle.watermarks(claim.next.partition)?;
            spans.push(Span {
                partition: claim.next.partition,
                start: claim.next.offset,
                end: high,
                log_start: low,
                topic_start: low,
            });
            commits.push(OffsetCommit {
                epoch: claim.epoch,
                next: Position {
                    partition: claim.next.partition,
                    offset: high,
                },
            });
        }
        let mut reader = handle.read(&env.stack, &spans)?;
        let mut events = Vec::new();
        while let Some(record) = reader.next().await? {
            let event = record.event.map_err(anyhow::Error::msg)?;
            events.push(LoggedEvent {
                position: Position {
                    partition: record.partition,
                    offset: record.offset,
                },
                record_time: likes_domain::record_time(
                    record.record_time.map(|t| t.timestamp_millis()),
                    &event,
                ),
                event,
            });
        }
        let rules = BatchRules {
            horizon: DedupHorizon::new(Duration::from_secs(
                likes_infra::settings::DEFAULT_DEDUP_HORIZON_SECONDS,
            )),
            cached_until: &[],
        };
        apply_batch(pool, topic, &commits, &events, rules).await?;
        applied.push(events.len());
    }
    Ok(applied)
}

/// Each shard's stored next offset per partition (index = shard).
pub async fn stored_offsets(env: &TestEnv) -> anyhow::Result<Vec<HashMap<i32, i64>>> {
    let mut all = Vec::new();
    for (_, pool) in env.shards.iter() {
        let rows = offsets::positions(pool, &env.stack.topic).await?;
        all.push(rows.into_iter().collect());
    }
    Ok(all)
}
