//! Reading the events topic for tools (`likes-replay`): its own consumer with
//! *assigned* partitions and a throwaway group id, so it never joins the live
//! projector's group (which would steal its partitions) and never commits an
//! offset. Each partition is read over a fixed span `[start, end)` decided up
//! front, and records come back one at a time: nothing holds the whole log in
//! memory. Progress reporting is the caller's: one call of
//! [`LogReader::next`] is one record read.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use likes_domain::LikeEvent;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::codec::EventCodec;
use crate::settings::StackSettings;
use crate::{DecodeError, Error};

/// Broker calls (metadata, watermarks, offsets for times) give up after this.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// A read that receives nothing for this long while records are due has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What to read of one partition: offsets `start..end`, where the log can be
/// read from today (`log_start`: above 0 when retention already dropped older
/// events and no archive holds them) and where the topic itself begins
/// (`topic_start`: offsets before it come from the archive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Span {
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    pub log_start: i64,
    pub topic_start: i64,
}

impl Span {
    /// The offsets of the span read from the archive (before the topic's
    /// start), if any.
    pub fn from_archive(&self) -> Option<(i64, i64)> {
        let end = self.end.min(self.topic_start);
        (end > self.start).then_some((self.start, end))
    }

    /// The offsets of the span read from the topic, if any.
    pub fn from_topic(&self) -> Option<(i64, i64)> {
        let start = self.start.max(self.topic_start);
        (self.end > start).then_some((start, self.end))
    }
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
    pub fn open(stack: &StackSettings) -> Result<Self, Error> {
        let group = format!("likes-replay-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer =
            super::consumer_config(&stack.kafka_bootstrap, &group).create()?;
        Ok(Self {
            consumer,
            topic: stack.topic.clone(),
        })
    }

    /// How many partitions the topic has.
    pub fn partition_count(&self) -> Result<i32, Error> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), BROKER_TIMEOUT)?;
        super::partitions_in(&metadata, &self.topic, "")
    }

    /// The first retained offset and the next offset to be written.
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), Error> {
        Ok(self
            .consumer
            .fetch_watermarks(&self.topic, partition, BROKER_TIMEOUT)?)
    }

    /// The first offset of `partition` whose timestamp is at or after `time`
    /// (the high watermark when there is none).
    pub fn offset_at(&self, partition: i32, time: DateTime<Utc>) -> Result<i64, Error> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            partition,
            Offset::Offset(time.timestamp_millis()),
        )?;
        let found = self.consumer.offsets_for_times(tpl, BROKER_TIMEOUT)?;
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
    ) -> Result<Vec<Span>, Error> {
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
                topic_start: low,
            });
        }
        Ok(spans)
    }

    /// Starts reading `spans`, decoding with `stack`'s registry; empty spans
    /// are skipped.
    pub fn read(self, stack: &StackSettings, spans: &[Span]) -> Result<LogReader, Error> {
        let mut tpl = TopicPartitionList::new();
        let mut remaining = HashMap::new();
        // Only what the topic holds: a start before its beginning would be
        // reset to the beginning by the client, silently skipping records.
        for (partition, (start, end)) in spans
            .iter()
            .filter_map(|s| Some((s.partition, s.from_topic()?)))
        {
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(start))?;
            remaining.insert(partition, end);
        }
        if !remaining.is_empty() {
            // assign, never subscribe: no group membership, no rebalance, no commit.
            self.consumer.assign(&tpl)?;
        }
        Ok(LogReader {
            consumer: self.consumer,
            codec: EventCodec::new(&stack.schema_registry_url, &stack.topic)?,
            remaining,
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
}

impl LogReader {
    /// The read has waited too long for the spans still open.
    fn stalled(&self) -> Error {
        let mut partitions: Vec<i32> = self.remaining.keys().copied().collect();
        partitions.sort_unstable();
        Error::ReadStalled {
            waited: STALL_TIMEOUT,
            partitions,
        }
    }

    /// The next record, or `None` once every span was read to its end.
    ///
    /// Fails, rather than yield it as poison, on a record whose schema id the
    /// registry still does not know after `UNKNOWN_SCHEMA_RETRY_SECONDS`: it is
    /// most likely a good event behind a registry that is wrong or behind, and
    /// a count or rebuild without it would be short.
    pub async fn next(&mut self) -> Result<Option<LogRecord>, Error> {
        let started = std::time::Instant::now();
        loop {
            if self.remaining.is_empty() {
                return Ok(None);
            }
            let received = tokio::time::timeout(STALL_TIMEOUT, self.consumer.recv())
                .await
                .map_err(|_| self.stalled())?;
            let message = match received {
                Ok(message) => message,
                // One listed broker down is not the end of the read: the
                // client fetches from the leaders it can reach and reports
                // the dead one as an error event. Bounded like a silence.
                Err(e) if broker_unreachable(&e) => {
                    if started.elapsed() >= STALL_TIMEOUT {
                        return Err(self.stalled());
                    }
                    tracing::warn!(error = %e, "a broker is unreachable; reading on from the others");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
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

    /// Decodes a payload ([`decode_record`]).
    async fn decode(
        &self,
        partition: i32,
        offset: i64,
        payload: Option<&[u8]>,
    ) -> Result<Result<LikeEvent, String>, Error> {
        decode_record(&self.codec, partition, offset, payload).await
    }
}

/// Decodes one record of the log for a tool: the event, or why it is poison.
/// A registry that is away is retried a few times before the read fails (a
/// record is never mistaken for poison because of it), and an unknown schema
/// id fails the read.
pub async fn decode_record(
    codec: &EventCodec,
    partition: i32,
    offset: i64,
    payload: Option<&[u8]>,
) -> Result<Result<LikeEvent, String>, Error> {
    let mut attempt = 0;
    loop {
        let failure = match codec.decode_event(payload).await {
            Ok(event) => return Ok(Ok(event)),
            Err(failure) => failure,
        };
        if let DecodeError::UnknownSchemaId { .. } = failure {
            return Err(Error::UnreadableRecord {
                partition,
                offset,
                source: failure,
            });
        }
        let reason = failure.to_string();
        let error = Error::from(failure.clone());
        if !error.is_transient() {
            return Ok(Err(reason));
        }
        if attempt == 5 {
            return Err(Error::UnreadableRecord {
                partition,
                offset,
                source: failure,
            });
        }
        attempt += 1;
        tracing::warn!(error = %error, attempt, "decode failed, retrying");
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    }
}

/// A consumer error that says a broker cannot be reached right now (the
/// others may serve the read), not that the read itself is wrong.
fn broker_unreachable(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as Code;
    matches!(
        e,
        rdkafka::error::KafkaError::MessageConsumption(
            Code::BrokerTransportFailure
                | Code::AllBrokersDown
                | Code::NetworkException
                | Code::RequestTimedOut
                | Code::LeaderNotAvailable
                | Code::NotLeaderForPartition
        )
    )
}
