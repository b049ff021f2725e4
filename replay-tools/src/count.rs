//! `likes-replay count`: an item's count computed from its events, now or as of
//! a past time (the broker time of the records). With no snapshots yet, the
//! computation starts at the log's first retained event; when retention already
//! dropped older events the answer is refused rather than short.

use std::collections::HashMap;

use anyhow::bail;
use chrono::{DateTime, Utc};
use likes_domain::ItemKey;
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::history::{self, HistoryQuery, Subject};

/// An item's count at a point of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointCount {
    pub item_type: i32,
    pub item_id: i64,
    /// The time asked for (`None`: now).
    pub at: Option<DateTime<Utc>>,
    pub count: i64,
    /// Events of the item up to that time.
    pub events: u64,
}

/// Counts `item` from its events up to `at` (inclusive; `None`: the current end).
pub async fn run(
    stack: &StackSettings,
    item: ItemKey,
    at: Option<DateTime<Utc>>,
) -> anyhow::Result<PointCount> {
    let query = HistoryQuery {
        subject: Subject::Item(item),
        since: None,
        until: at,
    };
    let mut count = 0;
    let summary = history::run(stack, &query, &HashMap::new(), |row| {
        count = row.count;
        Ok(())
    })
    .await?;
    if let Some(span) = summary.spans.iter().find(|s| s.log_start > 0) {
        bail!(
            "partition {} starts at offset {}: retention deleted the events before it, \
             so a count from the log would be short; refusing",
            span.partition,
            span.log_start
        );
    }
    Ok(PointCount {
        item_type: item.item_type.get(),
        item_id: item.item_id.get(),
        at,
        count,
        events: summary.events,
    })
}
