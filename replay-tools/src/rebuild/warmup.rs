//! Refilling the dedup windows of a rebuild that does not start at the log's
//! beginning (a resumed build, or a snapshot's offsets). The projector would
//! still have remembered the ids applied within the dedup horizon before that
//! point, so a retry just after it must count as a duplicate here too: each
//! partition's window is filled with the ids of the records from one horizon
//! before its start up to the start (only as far back as retention kept).

use std::collections::HashMap;
use std::time::Duration;

use likes_infra::settings::StackSettings;

use super::worker::Windows;
use crate::progress::ProgressRead;
use likes_domain::DedupWindow;
use likes_infra::kafka::reader::{LogRecord, Span};

use crate::source::LogSource;

/// Fills `windows` with the ids seen within `horizon` before each partition's
/// position; returns how many records were read for it.
pub async fn warm(
    stack: &StackSettings,
    positions: &HashMap<i32, i64>,
    windows: &mut Windows,
    horizon: Duration,
) -> anyhow::Result<u64> {
    // The last record before each position says where the horizon ends.
    let mut source = LogSource::open(stack)?;
    let mut lasts = Vec::new();
    for (&partition, &position) in positions {
        let (low, _) = source.watermarks(partition).await?;
        if position > low {
            lasts.push(source.span(partition, position - 1, position).await?);
        }
    }
    if lasts.is_empty() {
        return Ok(0);
    }
    let mut times = HashMap::new();
    let mut reader = ProgressRead::new(source, stack, &lasts, "rebuild postgres: dedup horizon")?;
    while let Some(record) = reader.next().await? {
        times.insert(record.partition, millis(&record));
    }
    drop(reader);

    let source = LogSource::open(stack)?;
    let mut spans = Vec::new();
    for last in lasts {
        let Some(&newest) = times.get(&last.partition) else {
            continue;
        };
        let since = chrono::DateTime::from_timestamp_millis(
            newest.saturating_sub(i64::try_from(horizon.as_millis())?),
        )
        .unwrap_or_default();
        // A horizon reaching into the archive starts at the archive's start.
        let found = source.offset_at(last.partition, since)?;
        let start = if found <= last.topic_start {
            last.log_start
        } else {
            found
        };
        spans.push(Span {
            start: start.min(last.end),
            ..last
        });
    }
    let mut read = 0;
    let mut reader = ProgressRead::new(source, stack, &spans, "rebuild postgres: dedup horizon")?;
    while let Some(record) = reader.next().await? {
        read += 1;
        let at = millis(&record);
        if let Ok(event) = &record.event {
            windows
                .entry(record.partition)
                .or_insert_with(|| DedupWindow::new(horizon))
                .first_sight(likes_domain::dedup_key(event), at);
        }
    }
    Ok(read)
}

/// A record's time for dedup: its Kafka timestamp, else its event's time
/// ([`likes_domain::record_time`], the projector's rule too).
pub fn millis(record: &LogRecord) -> i64 {
    let kafka = record.record_time.map(|t| t.timestamp_millis());
    match &record.event {
        Ok(event) => likes_domain::record_time(kafka, event),
        Err(_) => kafka.unwrap_or(0),
    }
}
