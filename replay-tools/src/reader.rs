//! Reading the events topic for tools: its own consumer with *assigned*
//! partitions and a throwaway group id, so it never joins the live projector's
//! group (which would steal its partitions) and never commits an offset. Each
//! partition is read over a fixed span `[start, end)` decided up front, and
//! records come back one at a time: nothing holds the whole log in memory.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use likes_domain::LikeEvent;
use likes_infra::DecodeError;
use likes_infra::codec::EventCodec;
use likes_infra::kafka;
use likes_infra::settings::StackSettings;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::progress::Progress;

/// Broker calls (metadata, watermarks, offsets for times) give up after this.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// A read that receives nothing for this long while records are due has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What to read of one partition: offsets `start..end`, and where the log
/// begins today (above 0 when retention already dropped older events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub log_start: i64,
}

/// One record read: where it sits, the broker's timestamp, and the event (or
/// why it could not be decoded: poison is shown, never silently skipped). A
/// record whose schema id the registry does not know is not poison here: the
/// read fails instead (see [`LogReader::next`]).
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub partition: i32,
    pub offset: i64,
    pub record_time: Option<DateTime<Utc>>,
    pub event: Result<LikeEvent, String>,
}

/// A consumer of the events topic that belongs to no group.
pub struct TopicHandle {
    consumer: StreamConsumer,
    topic: String,
}

impl TopicHandle {
    /// A consumer on `stack`'s topic with a group id of its own that is never
    /// used for a subscription or a commit.
    pub fn open(stack: &StackSettings) -> anyhow::Result<Self> {
        let group = format!("likes-replay-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = kafka::consumer_config(&stack.kafka_bootstrap, &group)
            .create()
            .context("create the Kafka consumer")?;
        Ok(Self {
            consumer,
            topic: stack.topic.clone(),
        })
    }

    /// How many partitions the topic has.
    pub fn partition_count(&self) -> anyhow::Result<i32> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), BROKER_TIMEOUT)
            .with_context(|| format!("read the metadata of topic {}", self.topic))?;
        let topic = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .with_context(|| format!("topic {} not found", self.topic))?;
        if let Some(e) = topic.error() {
            bail!("topic {}: {:?}", self.topic, e);
        }
        let n = i32::try_from(topic.partitions().len())?;
        if n == 0 {
            bail!("topic {} does not exist (no partitions)", self.topic);
        }
        Ok(n)
    }

    /// The first retained offset and the next offset to be written.
    pub fn watermarks(&self, partition: i32) -> anyhow::Result<(i64, i64)> {
        self.consumer
            .fetch_watermarks(&self.topic, partition, BROKER_TIMEOUT)
            .with_context(|| format!("read the watermarks of partition {partition}"))
    }

    /// The first offset of `partition` whose timestamp is at or after `time`
    /// (the high watermark when there is none).
    pub fn offset_at(&self, partition: i32, time: DateTime<Utc>) -> anyhow::Result<i64> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            partition,
            Offset::Offset(time.timestamp_millis()),
        )?;
        let found = self
            .consumer
            .offsets_for_times(tpl, BROKER_TIMEOUT)
            .context("look up offsets for a time")?;
        let offset = found
            .find_partition(&self.topic, partition)
            .map(|e| e.offset());
        match offset {
            Some(Offset::Offset(o)) => Ok(o),
            _ => Ok(self.watermarks(partition)?.1),
        }
    }

    /// The spans of `partitions` from `since` (or the log start) up to the
    /// current end, each capped by `limits` (e.g. the projector's offsets).
    pub fn plan(
        &self,
        partitions: &[i32],
        since: Option<DateTime<Utc>>,
        limits: &HashMap<i32, i64>,
    ) -> anyhow::Result<Vec<Span>> {
        let mut spans = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let (low, high) = self.watermarks(partition)?;
            let start = match since {
                Some(time) => self.offset_at(partition, time)?.max(low),
                None => low,
            };
            let end = limits.get(&partition).map_or(high, |l| (*l).min(high));
            spans.push(Span {
                partition,
                start,
                end: end.max(start),
                log_start: low,
            });
        }
        Ok(spans)
    }

    /// Starts reading `spans` with a progress report of its own; empty spans
    /// are skipped.
    pub fn read(
        self,
        stack: &StackSettings,
        spans: &[Span],
        label: &str,
    ) -> anyhow::Result<LogReader> {
        let progress = Progress::new(label, span_total(spans));
        self.read_with(stack, spans, progress)
    }

    /// Starts reading `spans`, counting records on a shared `progress` (parallel
    /// readers of one job move one report).
    pub fn read_with(
        self,
        stack: &StackSettings,
        spans: &[Span],
        progress: Progress,
    ) -> anyhow::Result<LogReader> {
        let mut tpl = TopicPartitionList::new();
        let mut remaining = HashMap::new();
        for span in spans.iter().filter(|s| s.end > s.start) {
            tpl.add_partition_offset(&self.topic, span.partition, Offset::Offset(span.start))?;
            remaining.insert(span.partition, span.end);
        }
        if !remaining.is_empty() {
            // assign, never subscribe: no group membership, no rebalance, no commit.
            self.consumer.assign(&tpl).context("assign partitions")?;
        }
        Ok(LogReader {
            consumer: self.consumer,
            codec: EventCodec::new(&stack.schema_registry_url, &stack.topic)?,
            remaining,
            progress,
        })
    }
}

/// How many records `spans` cover.
pub fn span_total(spans: &[Span]) -> u64 {
    spans
        .iter()
        .map(|s| u64::try_from(s.end - s.start).unwrap_or(0))
        .sum()
}

/// Yields the records of the planned spans, per partition in offset order.
pub struct LogReader {
    consumer: StreamConsumer,
    codec: EventCodec,
    remaining: HashMap<i32, i64>,
    progress: Progress,
}

impl LogReader {
    /// The next record, or `None` once every span was read to its end.
    ///
    /// Fails, rather than yield it as poison, on a record whose schema id the
    /// registry still does not know after `UNKNOWN_SCHEMA_RETRY_SECONDS`: it is
    /// most likely a good event behind a registry that is wrong or behind, and
    /// a count or rebuild without it would be short.
    pub async fn next(&mut self) -> anyhow::Result<Option<LogRecord>> {
        loop {
            if self.remaining.is_empty() {
                return Ok(None);
            }
            let message = tokio::time::timeout(STALL_TIMEOUT, self.consumer.recv())
                .await
                .map_err(|_| {
                    anyhow::anyhow!(
                        "no record for {STALL_TIMEOUT:?} while partitions {:?} are unfinished",
                        self.remaining.keys().collect::<Vec<_>>()
                    )
                })?
                .context("read from Kafka")?;
            let partition = message.partition();
            let offset = message.offset();
            let Some(&end) = self.remaining.get(&partition) else {
                continue; // a partition already finished (e.g. past --until)
            };
            if offset >= end {
                self.remaining.remove(&partition);
                continue;
            }
            if offset + 1 >= end {
                self.remaining.remove(&partition);
            }
            self.progress.inc(1);
            let record_time = message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis);
            let event = self.decode(partition, offset, message.payload()).await?;
            return Ok(Some(LogRecord {
                partition,
                offset,
                record_time,
                event,
            }));
        }
    }

    /// Stops reading `partition` before its planned end.
    pub fn finish_partition(&mut self, partition: i32) {
        self.remaining.remove(&partition);
    }

    /// Whether `partition` still has records due.
    pub fn is_active(&self, partition: i32) -> bool {
        self.remaining.contains_key(&partition)
    }

    /// Decodes a payload; a registry that is away is retried a few times before
    /// the read fails (a record is never mistaken for poison because of it),
    /// and an unknown schema id fails the read.
    async fn decode(
        &self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
    ) -> anyhow::Result<Result<LikeEvent, String>> {
        let mut attempt = 0;
        loop {
            let failure = match self.codec.decode_event(payload).await {
                Ok(event) => return Ok(Ok(event)),
                Err(failure) => failure,
            };
            if let DecodeError::UnknownSchemaId { .. } = failure {
                bail!(
                    "partition {partition} offset {offset}: {failure}; refusing to go on without it \
                     (the result would be short): check that SCHEMA_REGISTRY_URL is the registry \
                     the events were written with and that it is up to date, then run again"
                );
            }
            let reason = failure.to_string();
            let error = likes_infra::Error::from(failure);
            if !error.is_transient() {
                return Ok(Err(reason));
            }
            if attempt == 5 {
                return Err(error).with_context(|| {
                    format!("decode the event at partition {partition} offset {offset}")
                });
            }
            attempt += 1;
            tracing::warn!(error = %error, attempt, "decode failed, retrying");
            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
        }
    }
}
