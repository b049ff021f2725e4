//! The spans a rebuild pass reads: from the shadow's recorded positions up to
//! the live projector's offsets, refused when retention already deleted part
//! of them (a rebuild never produces short counts).

use std::collections::HashMap;

use anyhow::bail;
use likes_infra::kafka::reader::{Span, TopicHandle};
use likes_infra::postgres::{PgPool, offsets};
use likes_infra::settings::StackSettings;

/// The live projector's next offset per partition it has claimed.
pub async fn live_offsets(pool: &PgPool, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    Ok(offsets::positions(pool, topic).await?.into_iter().collect())
}

/// Moves `positions` to the ends of `spans`, which were read completely.
pub fn advance(positions: &mut HashMap<i32, i64>, spans: &[Span]) {
    for span in spans {
        positions.insert(span.partition, span.end);
    }
}

/// The spans from the shadow's positions up to `limits` (partitions the
/// projector never saw: nothing), refusing when retention deleted a part.
pub fn plan(
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
