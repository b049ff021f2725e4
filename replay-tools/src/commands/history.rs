//! `likes-replay history`: the decoded events of one item or one user, oldest
//! first, each with where it sits in the log, what it did and the running
//! count. An item's history reads only the item's partition; a user's reads
//! them all and merges them by time. Records stream through: memory holds the
//! like state of the subject, never the events.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use likes_domain::{Action, ItemKey, LikeEvent, NoChange, Projection, Transition, UserId};
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::cli::{self, parse_time};
use crate::merge::TimeMerge;
use crate::output::{Format, json_line, table_row};
use crate::progress::ProgressRead;
use likes_infra::kafka::partitioner::partition_for_item;
use likes_infra::kafka::reader::Span;

use crate::source::LogSource;

/// `likes-replay history`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    subject: SubjectArg,
    /// Start at the first event at or after this time (RFC 3339); running
    /// counts then start from zero there.
    #[arg(long, global = true, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Stop after this time (RFC 3339).
    #[arg(long, global = true, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// Output: an aligned table, or JSON Lines (one event per line).
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, clap::Subcommand)]
enum SubjectArg {
    /// One item's events (reads only the item's partition).
    Item { item_type: i64, item_id: i64 },
    /// One user's events (reads every partition).
    User { user_id: i64 },
}

/// Runs `history` and prints each row as it comes.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    let subject = match args.subject {
        SubjectArg::Item { item_type, item_id } => Subject::Item(cli::item(item_type, item_id)?),
        SubjectArg::User { user_id } => Subject::User(cli::user(user_id)?),
    };
    let query = HistoryQuery {
        subject,
        since: args.since,
        until: args.until,
    };
    let mut printer = HistoryPrinter::new(std::io::stdout().lock(), args.format);
    let summary = run(stack, &query, &HashMap::new(), |row| printer.print(&row)).await?;
    printer.finish(&summary)?;
    Ok(ExitCode::SUCCESS)
}

/// Whose history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    Item(ItemKey),
    User(UserId),
}

/// A history request.
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub subject: Subject,
    /// Read from the first record at or after this broker time (offsets_for_times).
    pub since: Option<DateTime<Utc>>,
    /// Stop each partition at its first record after this broker time.
    pub until: Option<DateTime<Utc>>,
}

/// What one event did to the count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Count + 1.
    Liked,
    /// Count - 1.
    Unliked,
    /// An event id seen before: ignored.
    Duplicate,
    /// A like by a user who already liked the item.
    AlreadyLiked,
    /// An unlike by a user who did not like the item.
    NotLiked,
}

impl Effect {
    /// The effect of a transition of the reference model.
    pub fn of(transition: Transition) -> Self {
        match transition {
            Transition::Liked => Effect::Liked,
            Transition::Unliked => Effect::Unliked,
            Transition::Unchanged(NoChange::Duplicate) => Effect::Duplicate,
            Transition::Unchanged(NoChange::AlreadyLiked) => Effect::AlreadyLiked,
            Transition::Unchanged(NoChange::NotLiked) => Effect::NotLiked,
        }
    }

    /// Words for the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Liked => "liked",
            Effect::Unliked => "unliked",
            Effect::Duplicate => "duplicate",
            Effect::AlreadyLiked => "already liked",
            Effect::NotLiked => "not liked",
        }
    }

    /// Whether the event moved the count.
    pub fn changed(self) -> bool {
        matches!(self, Effect::Liked | Effect::Unliked)
    }
}

/// One event of a history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HistoryRow {
    pub partition: i32,
    pub offset: i64,
    /// When the service accepted the event.
    pub timestamp: DateTime<Utc>,
    pub event_id: String,
    pub user_id: i64,
    pub item_type: i32,
    pub item_id: i64,
    pub action: Action,
    pub effect: Effect,
    /// After this event: the item's count (item history) or how many items the
    /// user likes (user history).
    pub count: i64,
}

/// What a history read covered.
#[derive(Debug, Clone, Default)]
pub struct HistorySummary {
    pub spans: Vec<Span>,
    /// Events of the subject.
    pub events: u64,
    /// Records of the partitions read that could not be decoded.
    pub poison: u64,
    /// Running counts start from an empty state at a point after the log's
    /// beginning (`--since`, or retention dropped the start): they are relative.
    pub relative: bool,
}

/// Where a read found its records: per partition, the offsets read from the
/// archive (those the topic no longer holds) and those read from the topic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Sources {
    pub archive: Vec<SourceRange>,
    pub topic: Vec<SourceRange>,
}

/// Offsets `from..to` of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SourceRange {
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

impl Sources {
    /// The sources of planned `spans`.
    pub fn of(spans: &[Span]) -> Self {
        let range = |partition, (from, to)| SourceRange {
            partition,
            from,
            to,
        };
        Self {
            archive: spans
                .iter()
                .filter_map(|s| Some(range(s.partition, s.from_archive()?)))
                .collect(),
            topic: spans
                .iter()
                .filter_map(|s| Some(range(s.partition, s.from_topic()?)))
                .collect(),
        }
    }

    /// Adds what `spans` read, joining each range to the one it continues.
    pub fn add(&mut self, spans: &[Span]) {
        let join =
            |ranges: &mut Vec<SourceRange>, partition: i32, (from, to): (i64, i64)| match ranges
                .iter_mut()
                .find(|r| r.partition == partition && r.to == from)
            {
                Some(r) => r.to = to,
                None => ranges.push(SourceRange {
                    partition,
                    from,
                    to,
                }),
            };
        for s in spans {
            if let Some(range) = s.from_archive() {
                join(&mut self.archive, s.partition, range);
            }
            if let Some(range) = s.from_topic() {
                join(&mut self.topic, s.partition, range);
            }
        }
    }

    /// One line for people: `archive 0..120, topic 120..300`.
    pub fn describe(&self) -> String {
        let list = |ranges: &[SourceRange]| -> u64 {
            ranges
                .iter()
                .map(|r| u64::try_from(r.to - r.from).unwrap_or(0))
                .sum()
        };
        let one = |ranges: &[SourceRange]| match ranges {
            [r] => format!("{}..{}", r.from, r.to),
            _ => format!("{} partitions", ranges.len()),
        };
        match (self.archive.is_empty(), self.topic.is_empty()) {
            (true, true) => "nothing to read".into(),
            (true, false) => format!("topic {} ({} records)", one(&self.topic), list(&self.topic)),
            (false, true) => format!(
                "archive {} ({} records)",
                one(&self.archive),
                list(&self.archive)
            ),
            (false, false) => format!(
                "archive {} ({} records), topic {} ({} records)",
                one(&self.archive),
                list(&self.archive),
                one(&self.topic),
                list(&self.topic)
            ),
        }
    }
}

/// A state to start from instead of the log's beginning: the reference model
/// as a snapshot left it, and per partition the offset the snapshot reflects.
#[derive(Debug, Clone, Default)]
pub struct Seed {
    pub model: Projection,
    pub starts: HashMap<i32, i64>,
}

/// Streams the subject's events to `sink`, oldest first; `limits` caps the
/// end offset of partitions (empty: read to the current end).
pub async fn run(
    stack: &StackSettings,
    query: &HistoryQuery,
    limits: &HashMap<i32, i64>,
    sink: impl FnMut(HistoryRow) -> anyhow::Result<()>,
) -> anyhow::Result<HistorySummary> {
    run_seeded(stack, query, limits, Seed::default(), sink).await
}

/// Like [`run`], but starting from `seed`: its partitions are read from its
/// offsets, and running counts continue from its model.
pub async fn run_seeded(
    stack: &StackSettings,
    query: &HistoryQuery,
    limits: &HashMap<i32, i64>,
    seed: Seed,
    mut sink: impl FnMut(HistoryRow) -> anyhow::Result<()>,
) -> anyhow::Result<HistorySummary> {
    let mut source = LogSource::open(stack)?;
    let partitions: Vec<i32> = match query.subject {
        Subject::Item(item) => vec![partition_for_item(
            item.item_id.get(),
            source.partition_count()?,
        )],
        Subject::User(_) => (0..source.partition_count()?).collect(),
    };
    let mut spans = source.plan(&partitions, query.since, limits).await?;
    for span in &mut spans {
        if let Some(&start) = seed.starts.get(&span.partition) {
            span.start = span.start.max(start);
            span.end = span.end.max(span.start);
        }
    }
    let relative = query.since.is_some()
        || spans
            .iter()
            .any(|s| s.log_start > 0 && !seed.starts.contains_key(&s.partition));
    let mut reader = ProgressRead::since(source, stack, &spans, query.since, "history")?;
    let mut merge = TimeMerge::new(
        spans
            .iter()
            .filter(|s| s.end > s.start)
            .map(|s| s.partition),
    );
    let mut summary = HistorySummary {
        spans,
        relative,
        ..HistorySummary::default()
    };
    let mut model = seed.model;
    let mut user_count = 0i64;
    let mut emit = |(partition, offset, event): (i32, i64, LikeEvent)| {
        let effect = Effect::of(model.apply(&event));
        let count = match query.subject {
            Subject::Item(item) => model.count(item),
            Subject::User(_) => {
                if effect == Effect::Liked {
                    user_count += 1;
                } else if effect == Effect::Unliked {
                    user_count -= 1;
                }
                user_count
            }
        };
        sink(HistoryRow {
            partition,
            offset,
            timestamp: event.timestamp,
            event_id: event.event_id.to_string(),
            user_id: event.user_id.get(),
            item_type: event.item.item_type.get(),
            item_id: event.item.item_id.get(),
            action: event.action,
            effect,
            count,
        })
    };
    while let Some(record) = reader.next().await? {
        let p = record.partition;
        let millis = record
            .record_time
            .or_else(|| record.event.as_ref().ok().map(|e| e.timestamp))
            .map_or(0, |t| t.timestamp_millis());
        if let (Some(until), Some(time)) = (query.until, record.record_time)
            && time > until
        {
            reader.finish_partition(p);
            merge.finish(p);
        } else {
            let matching = match record.event {
                Ok(event) if matches(query.subject, &event) => Some(event),
                Ok(_) => None,
                Err(reason) => {
                    summary.poison += 1;
                    tracing::warn!(partition = p, offset = record.offset, %reason, "poison record");
                    None
                }
            };
            if matching.is_some() {
                summary.events += 1;
            }
            merge.push(p, millis, matching.map(|e| (p, record.offset, e)));
            if !reader.is_active(p) {
                merge.finish(p);
            }
        }
        while let Some(next) = merge.pop() {
            emit(next)?;
        }
    }
    for span in &summary.spans {
        merge.finish(span.partition);
    }
    while let Some(next) = merge.pop() {
        emit(next)?;
    }
    Ok(summary)
}

fn matches(subject: Subject, event: &LikeEvent) -> bool {
    match subject {
        Subject::Item(item) => event.item == item,
        Subject::User(user) => event.user_id == user,
    }
}

/// Prints history rows as they come, in `format` (an aligned table for
/// people, or JSON Lines), so a long history is never held before it is shown.
pub struct HistoryPrinter<W: Write> {
    out: W,
    format: Format,
    header_done: bool,
}

const WIDTHS: [usize; 9] = [4, 8, 24, 36, 10, 14, 6, 13, 5];

impl<W: Write> HistoryPrinter<W> {
    /// A printer writing to `out`; nothing is printed before the first row.
    pub fn new(out: W, format: Format) -> Self {
        Self {
            out,
            format,
            header_done: false,
        }
    }

    /// Prints one row (the table header before the first).
    pub fn print(&mut self, row: &HistoryRow) -> anyhow::Result<()> {
        match self.format {
            Format::Json => json_line(&mut self.out, row),
            Format::Table => {
                if !self.header_done {
                    self.header_done = true;
                    let header = [
                        "part",
                        "offset",
                        "timestamp",
                        "event_id",
                        "user",
                        "item",
                        "action",
                        "effect",
                        "count",
                    ];
                    table_row(&mut self.out, &WIDTHS, &header.map(String::from))?;
                }
                let cells = [
                    row.partition.to_string(),
                    row.offset.to_string(),
                    row.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                    row.event_id.clone(),
                    row.user_id.to_string(),
                    format!("{}:{}", row.item_type, row.item_id),
                    row.action.symbol().to_lowercase(),
                    row.effect.as_str().to_string(),
                    row.count.to_string(),
                ];
                table_row(&mut self.out, &WIDTHS, &cells)?;
                Ok(())
            }
        }
    }

    /// Says what the read covered, on stderr (stdout stays pure data).
    pub fn finish(mut self, summary: &HistorySummary) -> anyhow::Result<()> {
        self.out.flush()?;
        if self.format == Format::Table && !self.header_done {
            eprintln!("no events");
        }
        eprintln!("read: {}", Sources::of(&summary.spans).describe());
        if summary.relative {
            eprintln!(
                "note: the read starts after the log's beginning (--since or retention); \
                 running counts start from zero there"
            );
        }
        if summary.poison > 0 {
            eprintln!(
                "note: {} undecodable records skipped (see the dead-letter topic)",
                summary.poison
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_words() {
        assert_eq!(Effect::of(Transition::Liked).as_str(), "liked");
        assert_eq!(
            Effect::of(Transition::Unchanged(NoChange::NotLiked)).as_str(),
            "not liked"
        );
        assert!(!Effect::AlreadyLiked.changed());
        assert_eq!(
            serde_json::to_string(&Effect::AlreadyLiked).unwrap(),
            "\"already_liked\""
        );
    }
}
