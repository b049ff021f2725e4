//! Reading the dead-letter topic back, for an operator (`likes-replay dlq`):
//! each dead letter with the headers [`super::dead_letters`] wrote (where the
//! record came from, why it is dead, whole or a reference), and the attempt to
//! decode its bytes again with the project's codec, step by step, as far as
//! it gets. Like the tools' log reader ([`super::reader`]) it assigns
//! partitions under a throwaway group, never subscribes and never commits;
//! a read covers `[start, end)` fixed up front, so it never waits for records
//! written after it began.

use std::time::Duration;

use chrono::{DateTime, Utc};
use likes_domain::{LikeEvent, Position};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::Record;
use super::dead_letters::{Sent, header};
use crate::codec::{EventCodec, schema_id};
use crate::{DecodeError, Error};

/// Broker calls (metadata, watermarks) give up after this.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// A read that receives nothing for this long while records are due has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One record of the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// As read: `record.position` is the dead letter's own place in the
    /// dead-letter topic, its timestamp when it was written there.
    pub record: Record,
}

/// Where a dead letter's record was read from, as its headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub topic: Option<String>,
    pub position: Position,
}

impl DeadLetter {
    /// The value of header `name` (the last one of that name: the writer adds
    /// its headers after the record's own).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.record
            .headers
            .iter()
            .rev()
            .find(|h| h.key == name)
            .and_then(|h| h.value.as_deref())
    }

    /// Header `name` as text (invalid UTF-8 replaced).
    pub fn header_text(&self, name: &str) -> Option<String> {
        self.header(name)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// When it was written to the dead-letter topic.
    pub fn time(&self) -> Option<DateTime<Utc>> {
        self.record
            .timestamp_ms
            .and_then(DateTime::from_timestamp_millis)
    }

    /// Whole or a reference; `None` without a kind header this build knows.
    pub fn sent(&self) -> Option<Sent> {
        Sent::from_header_value(&self.header_text(header::KIND)?)
    }

    /// Where the record came from; `None` when the headers do not say.
    pub fn source(&self) -> Option<Source> {
        Some(Source {
            topic: self.header_text(header::SOURCE_TOPIC),
            position: Position {
                partition: self.header_text(header::SOURCE_PARTITION)?.parse().ok()?,
                offset: self.header_text(header::SOURCE_OFFSET)?.parse().ok()?,
            },
        })
    }

    /// Why the record is dead.
    pub fn reason(&self) -> Option<String> {
        self.header_text(header::ERROR)
    }

    /// Why a reference was sent instead of the whole record.
    pub fn reference_reason(&self) -> Option<String> {
        self.header_text(header::REFERENCE_REASON)
    }

    /// The size of the source record's value in bytes: a reference's header,
    /// else the bytes held here.
    pub fn source_size(&self) -> Option<u64> {
        match self.sent() {
            Some(Sent::Reference) => self.header_text(header::SOURCE_SIZE)?.parse().ok(),
            _ => Some(self.record.payload.as_ref().map_or(0, Vec::len) as u64),
        }
    }

    /// Whether the value held here is only a prefix of the record's.
    pub fn is_prefix(&self) -> bool {
        let held = self.record.payload.as_ref().map_or(0, Vec::len) as u64;
        self.sent() == Some(Sent::Reference) && self.source_size().is_none_or(|size| size > held)
    }
}

/// Whether the registry had the schema a record's id names, as the decode
/// attempt found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaLookup {
    /// The bytes carry no schema id (no value, or not the Confluent framing).
    NotAsked,
    /// An Avro schema that parses.
    Found,
    /// The registry does not know the id.
    NotFound,
    /// A schema of another type (JSON, Protobuf, ...).
    NotAvro(String),
    /// An Avro schema that does not parse.
    Unparsable,
    /// The registry could not be asked.
    Unavailable,
}

impl SchemaLookup {
    /// A short fixed name, for tables and JSON.
    pub fn name(&self) -> &'static str {
        match self {
            SchemaLookup::NotAsked => "not_asked",
            SchemaLookup::Found => "found",
            SchemaLookup::NotFound => "not_found",
            SchemaLookup::NotAvro(_) => "not_avro",
            SchemaLookup::Unparsable => "unparsable",
            SchemaLookup::Unavailable => "unavailable",
        }
    }
}

/// One attempt to decode a dead letter's value now, step by step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeAttempt {
    /// The first byte (0 in the Confluent framing).
    pub magic: Option<u8>,
    /// The schema id of the framing, when the bytes are framed.
    pub schema_id: Option<u32>,
    pub schema: SchemaLookup,
    /// The event, or why not ([`DecodeError::kind`] names it).
    pub outcome: Result<LikeEvent, DecodeError>,
}

impl DecodeAttempt {
    /// Decodes `payload` with `codec` (the project's codec: framing, the
    /// registry's writer schema, resolution to this build's schema, the
    /// domain's validation). Give the codec no grace for unknown ids
    /// ([`EventCodec::with_unknown_schema_retry`]): the record is already dead,
    /// the question is what the registry says now.
    pub async fn of(codec: &EventCodec, payload: Option<&[u8]>) -> Self {
        let outcome = codec.decode_event(payload).await;
        let schema = match &outcome {
            Ok(_) | Err(DecodeError::Malformed { .. } | DecodeError::InvalidEvent(_)) => {
                SchemaLookup::Found
            }
            Err(DecodeError::NoValue | DecodeError::NotFramed) => SchemaLookup::NotAsked,
            Err(DecodeError::UnknownSchemaId { .. }) => SchemaLookup::NotFound,
            Err(DecodeError::NotAvro { schema_type, .. }) => {
                SchemaLookup::NotAvro(schema_type.clone())
            }
            Err(DecodeError::UnparsableSchema { .. }) => SchemaLookup::Unparsable,
            Err(DecodeError::RegistryUnavailable { .. }) => SchemaLookup::Unavailable,
        };
        Self {
            magic: payload.and_then(|p| p.first().copied()),
            schema_id: payload.and_then(schema_id),
            schema,
            outcome,
        }
    }

    /// `ok`, or the kind of failure ([`DecodeError::kind`]).
    pub fn result_name(&self) -> &'static str {
        match &self.outcome {
            Ok(_) => "ok",
            Err(e) => e.kind(),
        }
    }
}

/// Decodes dead letters one after another with one codec. Once the registry
/// could not be asked, framed records are not sent to it again in this run:
/// each would wait out the registry's timeout, and a listing during a
/// registry outage must still finish. They are reported as
/// [`DecodeError::RegistryUnavailable`] with the first failure's reason.
pub struct DeadLetterDecoder {
    codec: EventCodec,
    registry_down: Option<String>,
}

impl DeadLetterDecoder {
    /// A decoder with `codec` (see [`DecodeAttempt::of`] for its grace).
    pub fn new(codec: EventCodec) -> Self {
        Self {
            codec,
            registry_down: None,
        }
    }

    /// The decode attempt of `payload`.
    pub async fn attempt(&mut self, payload: Option<&[u8]>) -> DecodeAttempt {
        if let (Some(reason), Some(id)) = (&self.registry_down, payload.and_then(schema_id)) {
            return DecodeAttempt {
                magic: payload.and_then(|p| p.first().copied()),
                schema_id: Some(id),
                schema: SchemaLookup::Unavailable,
                outcome: Err(DecodeError::RegistryUnavailable {
                    id,
                    reason: format!("not asked again in this run: {reason}"),
                }),
            };
        }
        let attempt = DecodeAttempt::of(&self.codec, payload).await;
        if let Err(DecodeError::RegistryUnavailable { reason, .. }) = &attempt.outcome {
            tracing::warn!(%reason, "the schema registry cannot be asked; later framed records are not decoded");
            self.registry_down = Some(reason.clone());
        }
        attempt
    }
}

/// A consumer of the dead-letter topic that belongs to no group.
pub struct DeadLetterReader {
    consumer: StreamConsumer,
    topic: String,
}

impl DeadLetterReader {
    /// A reader of `topic` (the dead-letter topic, `<topic>.dlq`) on the
    /// brokers of `bootstrap`.
    pub fn open(bootstrap: &str, topic: &str) -> Result<Self, Error> {
        let group = format!("likes-replay-dlq-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = super::consumer_config(bootstrap, &group).create()?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How many partitions the topic has; [`Error::TopicMissing`] when it
    /// does not exist.
    pub fn partition_count(&self) -> Result<i32, Error> {
        let metadata = self
            .consumer
            .fetch_metadata(Some(&self.topic), BROKER_TIMEOUT)?;
        super::partitions_in(&metadata, &self.topic, "; `likes-replay setup` creates it")
    }

    /// The first retained offset of `partition` and the next to be written.
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), Error> {
        Ok(self
            .consumer
            .fetch_watermarks(&self.topic, partition, BROKER_TIMEOUT)?)
    }

    /// Starts reading `partition` over `start..end` (offsets the caller took
    /// from [`DeadLetterReader::watermarks`]); a reader reads one span at a time.
    pub fn scan(&mut self, partition: i32, start: i64, end: i64) -> Result<Scan<'_>, Error> {
        if end > start {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&self.topic, partition, Offset::Offset(start))?;
            // assign, never subscribe: no group membership, no rebalance, no commit.
            self.consumer.assign(&tpl)?;
        }
        Ok(Scan {
            consumer: &self.consumer,
            partition,
            end,
            done: end <= start,
        })
    }

    /// The dead letter at `partition`:`offset`, or `None` when the partition
    /// holds no record there (not yet written, or gone with retention).
    pub async fn at(&mut self, partition: i32, offset: i64) -> Result<Option<DeadLetter>, Error> {
        let (low, high) = self.watermarks(partition)?;
        if offset < low || offset >= high {
            return Ok(None);
        }
        let found = self.scan(partition, offset, offset + 1)?.next().await?;
        Ok(found.filter(|d| d.record.position.offset == offset))
    }
}

/// The dead letters of one partition's span, in offset order.
pub struct Scan<'a> {
    consumer: &'a StreamConsumer,
    partition: i32,
    end: i64,
    done: bool,
}

impl Scan<'_> {
    /// The next dead letter, or `None` at the span's end.
    pub async fn next(&mut self) -> Result<Option<DeadLetter>, Error> {
        while !self.done {
            let message = tokio::time::timeout(STALL_TIMEOUT, self.consumer.recv())
                .await
                .map_err(|_| Error::ReadStalled {
                    waited: STALL_TIMEOUT,
                    partitions: vec![self.partition],
                })??;
            let record = Record::read(&message);
            if record.position.partition != self.partition {
                continue;
            }
            let offset = record.position.offset;
            if offset + 1 >= self.end {
                self.done = true;
            }
            if offset < self.end {
                return Ok(Some(DeadLetter { record }));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::consumer::Header;

    fn letter(headers: &[(&str, &str)], payload: &[u8]) -> DeadLetter {
        DeadLetter {
            record: Record {
                topic: "t.dlq".into(),
                position: Position {
                    partition: 0,
                    offset: 3,
                },
                timestamp_ms: Some(1_700_000_000_000),
                key: None,
                payload: Some(payload.to_vec()),
                headers: headers
                    .iter()
                    .map(|(k, v)| Header {
                        key: (*k).into(),
                        value: Some(v.as_bytes().to_vec()),
                    })
                    .collect(),
            },
        }
    }

    #[test]
    fn a_reference_reads_its_source_and_size_from_the_headers() {
        let d = letter(
            &[
                (header::SOURCE_TOPIC, "t"),
                (header::SOURCE_PARTITION, "2"),
                (header::SOURCE_OFFSET, "41"),
                (header::ERROR, "poison record: x"),
                (header::KIND, Sent::Reference.header_value()),
                (header::SOURCE_SIZE, "5000"),
            ],
            b"prefix",
        );
        assert_eq!(d.sent(), Some(Sent::Reference));
        assert_eq!(
            d.source(),
            Some(Source {
                topic: Some("t".into()),
                position: Position {
                    partition: 2,
                    offset: 41
                }
            })
        );
        assert_eq!(d.source_size(), Some(5000));
        assert!(d.is_prefix());
        assert_eq!(d.reason().as_deref(), Some("poison record: x"));
    }

    #[test]
    fn a_whole_record_is_as_large_as_its_bytes_and_the_writers_headers_win() {
        let d = letter(
            &[
                (header::SOURCE_PARTITION, "9"),
                (header::SOURCE_PARTITION, "1"),
                (header::SOURCE_OFFSET, "7"),
                (header::KIND, Sent::Whole.header_value()),
            ],
            b"hello",
        );
        assert_eq!(d.sent(), Some(Sent::Whole));
        assert_eq!(d.source().map(|s| s.position.partition), Some(1));
        assert_eq!(d.source_size(), Some(5));
        assert!(!d.is_prefix());
    }

    #[test]
    fn a_letter_without_the_headers_has_no_source() {
        let d = letter(&[], b"x");
        assert_eq!(d.source(), None);
        assert_eq!(d.sent(), None);
    }
}
