//! The log as the tools read it: the archive (`likes_infra::archive`) for the
//! offsets the topic no longer holds, the topic for the rest, seamlessly.
//!
//! [`LogSource`] plans [`Span`]s whose `log_start` is where archive and topic
//! together can be read from (0 when the archive reaches back unbroken from
//! the first record) and whose `topic_start` is where the topic itself begins;
//! [`SourceReader`] yields every record of the spans in offset order per
//! partition: first the archived part, then the topic's. A command's report
//! says which range came from where ([`Span::from_archive`],
//! [`Span::from_topic`]). The archive is read file by file, one file per
//! partition in memory at a time, partitions taking turns so that a merge by
//! time across partitions never waits on one partition's whole archive.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};
use likes_infra::archive::{Archive, Coverage, FileName, Record};
use likes_infra::codec::EventCodec;
use likes_infra::kafka::reader::{LogReader, LogRecord, Span, TopicHandle, decode_record};
use likes_infra::settings::StackSettings;

/// The topic and its archive.
pub struct LogSource {
    topic: TopicHandle,
    /// `None`: no archive where `ARCHIVE_URL` points (a directory not made yet).
    archive: Option<Archive>,
    coverage: HashMap<i32, Coverage>,
}

impl LogSource {
    /// The topic and archive of `stack`.
    pub fn open(stack: &StackSettings) -> anyhow::Result<Self> {
        Ok(Self {
            topic: TopicHandle::open(stack)?,
            archive: Archive::open_existing(&stack.archive_url, &stack.topic)?,
            coverage: HashMap::new(),
        })
    }

    pub fn partition_count(&self) -> anyhow::Result<i32> {
        Ok(self.topic.partition_count()?)
    }

    async fn coverage(&mut self, partition: i32) -> anyhow::Result<&Coverage> {
        if !self.coverage.contains_key(&partition) {
            let c = match &self.archive {
                Some(archive) => archive.coverage(partition).await?,
                None => Coverage::default(),
            };
            self.coverage.insert(partition, c);
        }
        Ok(&self.coverage[&partition])
    }

    /// Where `partition` can be read from (archive and topic together), where
    /// its topic begins, and its end.
    pub async fn bounds(&mut self, partition: i32) -> anyhow::Result<(i64, i64, i64)> {
        let (low, high) = self.topic.watermarks(partition)?;
        let start = self.coverage(partition).await?.reaches(low).unwrap_or(low);
        Ok((start, low, high))
    }

    /// Where `partition` can be read from and its end, as
    /// [`TopicHandle::watermarks`] but reaching into the archive.
    pub async fn watermarks(&mut self, partition: i32) -> anyhow::Result<(i64, i64)> {
        let (start, _, high) = self.bounds(partition).await?;
        Ok((start, high))
    }

    /// The first offset of `partition` at or after `time` in the topic; a
    /// time before the topic's start gives the topic's start (the archive is
    /// not searched by time: callers that start from a time filter by it).
    pub fn offset_at(&self, partition: i32, time: DateTime<Utc>) -> anyhow::Result<i64> {
        Ok(self.topic.offset_at(partition, time)?)
    }

    /// A span of `partition` from `start` to `end` (both clamped to what can
    /// be read).
    pub async fn span(&mut self, partition: i32, start: i64, end: i64) -> anyhow::Result<Span> {
        let (log_start, topic_start, _) = self.bounds(partition).await?;
        let start = start.max(log_start);
        Ok(Span {
            partition,
            start,
            end: end.max(start),
            log_start,
            topic_start,
        })
    }

    /// The spans of `partitions` from `since` (or the readable start) up to
    /// the current end, each capped by `limits`. A `since` inside the
    /// archived part starts at the archive's start: the reader then skips the
    /// archived records older than `since`.
    pub async fn plan(
        &mut self,
        partitions: &[i32],
        since: Option<DateTime<Utc>>,
        limits: &HashMap<i32, i64>,
    ) -> anyhow::Result<Vec<Span>> {
        let mut spans = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let (log_start, topic_start, high) = self.bounds(partition).await?;
            let start = match since {
                Some(time) => {
                    let found = self.topic.offset_at(partition, time)?;
                    if found <= topic_start {
                        log_start
                    } else {
                        found
                    }
                }
                None => log_start,
            };
            let end = limits.get(&partition).map_or(high, |l| (*l).min(high));
            spans.push(Span {
                partition,
                start,
                end: end.max(start),
                log_start,
                topic_start,
            });
        }
        Ok(spans)
    }

    /// Starts reading `spans`; archived records older than `since` are skipped.
    pub fn read(
        self,
        stack: &StackSettings,
        spans: &[Span],
        since: Option<DateTime<Utc>>,
    ) -> anyhow::Result<SourceReader> {
        let mut parts = Vec::new();
        for span in spans {
            let Some((from, to)) = span.from_archive() else {
                continue;
            };
            parts.push(ArchivePart {
                partition: span.partition,
                from,
                to,
                files: None,
                records: VecDeque::new(),
            });
        }
        Ok(SourceReader {
            archive: self.archive,
            codec: EventCodec::new(&stack.schema_registry_url, &stack.topic)?,
            parts,
            turn: 0,
            since_ms: since.map(|t| t.timestamp_millis()),
            topic: self.topic.read(stack, spans)?,
        })
    }
}

/// The archived part of one partition's span still to read.
struct ArchivePart {
    partition: i32,
    from: i64,
    to: i64,
    /// Listed when the part is first read.
    files: Option<VecDeque<FileName>>,
    records: VecDeque<Record>,
}

/// Yields the records of planned spans, per partition in offset order:
/// archived first, then the topic's.
pub struct SourceReader {
    archive: Option<Archive>,
    codec: EventCodec,
    parts: Vec<ArchivePart>,
    turn: usize,
    since_ms: Option<i64>,
    topic: LogReader,
}

impl SourceReader {
    /// The next record, or `None` once every span was read to its end.
    pub async fn next(&mut self) -> anyhow::Result<Option<LogRecord>> {
        while !self.parts.is_empty() {
            self.turn %= self.parts.len();
            if let Some(record) = self.next_archived(self.turn).await? {
                self.turn += 1;
                return Ok(Some(record));
            }
            // that part is done
            self.parts.remove(self.turn);
        }
        Ok(self.topic.next().await?)
    }

    /// The next archived record of part `i`, or `None` when it is done.
    async fn next_archived(&mut self, i: usize) -> anyhow::Result<Option<LogRecord>> {
        let since = self.since_ms;
        loop {
            let part = &mut self.parts[i];
            if let Some(record) = part.records.pop_front() {
                if record.offset < part.from || record.offset >= part.to {
                    continue;
                }
                if let (Some(since), Some(at)) = (since, record.timestamp_ms)
                    && at < since
                {
                    continue;
                }
                let partition = part.partition;
                let event = decode_record(
                    &self.codec,
                    partition,
                    record.offset,
                    record.payload.as_deref(),
                )
                .await?;
                return Ok(Some(LogRecord {
                    partition,
                    offset: record.offset,
                    record_time: record
                        .timestamp_ms
                        .and_then(DateTime::from_timestamp_millis),
                    event,
                }));
            }
            let partition = part.partition;
            let Some(archive) = &self.archive else {
                return Ok(None); // planned from an archive that is not there: nothing
            };
            if part.files.is_none() {
                let (from, to) = (part.from, part.to);
                let files = archive.coverage(partition).await?.files_for(from, to);
                self.parts[i].files = Some(files.into());
            }
            let Some(name) = self.parts[i].files.as_mut().and_then(VecDeque::pop_front) else {
                return Ok(None);
            };
            let file = archive.read(partition, name).await?;
            self.parts[i].records = file.records.into();
        }
    }

    /// Stops reading `partition` before its planned end.
    pub fn finish_partition(&mut self, partition: i32) {
        self.parts.retain(|p| p.partition != partition);
        self.topic.finish_partition(partition);
    }

    /// Whether `partition` still has records due.
    pub fn is_active(&self, partition: i32) -> bool {
        self.parts.iter().any(|p| p.partition == partition) || self.topic.is_active(partition)
    }
}
