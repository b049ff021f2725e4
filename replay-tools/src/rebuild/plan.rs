//! The spans a rebuild pass reads: from the shadow's recorded positions up to
//! the live projector's offsets, refused when retention already deleted part
//! of them (a rebuild never produces short counts).

use std::collections::HashMap;

use anyhow::bail;
use likes_infra::kafka::reader::Span;
use likes_infra::postgres::{PgPool, offsets};
use likes_infra::settings::StackSettings;

use crate::source::LogSource;

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
pub async fn plan(
    stack: &StackSettings,
    positions: &HashMap<i32, i64>,
    limits: &HashMap<i32, i64>,
) -> anyhow::Result<Vec<Span>> {
    let mut source = LogSource::open(stack)?;
    let mut spans = Vec::new();
    for (&partition, &start) in positions {
        let end = limits.get(&partition).copied().unwrap_or(0).max(start);
        let span = source.span(partition, start, end).await?;
        if end > start && span.log_start > start {
            bail!(
                "partition {partition} can be read from offset {} (topic and archive) but the \
                 rebuild needs offsets from {start}: retention deleted them and the archive \
                 does not hold them, so the rebuilt counts would be short; refusing (rebuild \
                 from a newer snapshot: `likes-replay snapshot list`)",
                span.log_start
            );
        }
        spans.push(span);
    }
    Ok(spans)
}
