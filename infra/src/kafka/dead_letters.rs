//! The dead-letter topic: records that can never become events are copied
//! there with their key, bytes and headers, plus headers naming where they came
//! from and why, so nothing is dropped silently and an operator can replay them.
//! A record that cannot go there whole (too large once the headers are added,
//! or larger than the dead-letter topic accepts) goes as a reference instead:
//! where it is, its size, why, and a bounded prefix of its bytes. Error text in
//! headers is bounded, so a long error can never make a record unsendable.
//! Which records are dead is the caller's decision; this module only puts
//! them there.

use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use super::consumer::Record;
use crate::{Error, retry};

/// How long a dead letter may wait for the broker's ack.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest error text put in a header, in bytes.
pub const MAX_ERROR_BYTES: usize = 1024;
/// How many of a record's first bytes (and of its key) a reference keeps.
pub const REFERENCE_PREFIX_BYTES: usize = 1024;

/// The headers a dead letter carries besides the record's own: their names,
/// for the writer here and for every reader ([`super::dead_letter_reader`]).
pub mod header {
    /// The topic the record was read from.
    pub const SOURCE_TOPIC: &str = "dlq.source.topic";
    /// Its partition there.
    pub const SOURCE_PARTITION: &str = "dlq.source.partition";
    /// Its offset there.
    pub const SOURCE_OFFSET: &str = "dlq.source.offset";
    /// Why it can never become an event (at most [`super::MAX_ERROR_BYTES`]).
    pub const ERROR: &str = "dlq.error";
    /// How it was sent ([`super::Sent::header_value`]).
    pub const KIND: &str = "dlq.kind";
    /// A reference only: the size of the record's value, in bytes.
    pub const SOURCE_SIZE: &str = "dlq.source.size";
    /// A reference only: why the record could not go whole.
    pub const REFERENCE_REASON: &str = "dlq.reference.reason";
}

/// How a record reached the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Its key, bytes and headers, whole.
    Whole,
    /// A reference: source position, size, reason and a prefix of the bytes.
    Reference,
}

impl Sent {
    /// The value of the [`header::KIND`] header.
    pub fn header_value(self) -> &'static str {
        match self {
            Sent::Whole => "record",
            Sent::Reference => "reference",
        }
    }

    /// The kind a [`header::KIND`] value names, if any.
    pub fn from_header_value(value: &str) -> Option<Self> {
        [Sent::Whole, Sent::Reference]
            .into_iter()
            .find(|sent| sent.header_value() == value)
    }
}

/// Producer for `<topic>.dlq`.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(bootstrap: &str, topic: String) -> Result<Self, Error> {
        Ok(Self {
            producer: super::producer(bootstrap, DELIVERY_TIMEOUT)?,
            topic,
        })
    }

    /// Puts `record` on the dead-letter topic, whole if it can, else as a
    /// reference, and waits for the ack: its offset must not be committed
    /// before the copy is safe. Transient failures are retried; an error means
    /// not even the reference can be sent.
    pub async fn send(&self, record: &Record, reason: &str) -> Result<Sent, Error> {
        let reason = bounded(reason, MAX_ERROR_BYTES);
        match retry::transient(&retry::TRANSIENT, "dead letter", || {
            self.send_whole(record, reason)
        })
        .await
        {
            Ok(()) => Ok(Sent::Whole),
            Err(e) => {
                let why = e.to_string();
                let why = bounded(&why, MAX_ERROR_BYTES);
                tracing::warn!(
                    partition = record.position.partition,
                    offset = record.position.offset,
                    size = payload_len(record),
                    error = %why,
                    "record cannot go to the dead-letter topic whole; sending a reference"
                );
                retry::transient(&retry::TRANSIENT, "dead letter reference", || {
                    self.send_reference(record, reason, why)
                })
                .await?;
                Ok(Sent::Reference)
            }
        }
    }

    async fn send_whole(&self, record: &Record, reason: &str) -> Result<(), Error> {
        let mut headers = OwnedHeaders::new();
        for h in &record.headers {
            headers = headers.insert(Header {
                key: &h.key,
                value: h.value.as_deref(),
            });
        }
        let headers = source_headers(headers, record, reason).insert(Header {
            key: header::KIND,
            value: Some(Sent::Whole.header_value()),
        });
        let mut letter: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = &record.key {
            letter = letter.key(key);
        }
        if let Some(payload) = &record.payload {
            letter = letter.payload(payload);
        }
        self.deliver(letter).await
    }

    async fn send_reference(
        &self,
        record: &Record,
        reason: &str,
        why_not_whole: &str,
    ) -> Result<(), Error> {
        let size = payload_len(record).to_string();
        let headers = source_headers(OwnedHeaders::new(), record, reason)
            .insert(Header {
                key: header::KIND,
                value: Some(Sent::Reference.header_value()),
            })
            .insert(Header {
                key: header::SOURCE_SIZE,
                value: Some(&size),
            })
            .insert(Header {
                key: header::REFERENCE_REASON,
                value: Some(why_not_whole),
            });
        let mut letter: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = &record.key {
            letter = letter.key(&key[..key.len().min(REFERENCE_PREFIX_BYTES)]);
        }
        if let Some(payload) = &record.payload {
            letter = letter.payload(&payload[..payload.len().min(REFERENCE_PREFIX_BYTES)]);
        }
        self.deliver(letter).await
    }

    async fn deliver(&self, record: FutureRecord<'_, [u8], [u8]>) -> Result<(), Error> {
        self.producer
            .send(record, DELIVERY_TIMEOUT)
            .await
            .map(|_| ())
            .map_err(|(e, _)| Error::Kafka(e))
    }
}

/// The headers naming where a record came from and why it is dead.
fn source_headers(headers: OwnedHeaders, record: &Record, reason: &str) -> OwnedHeaders {
    let partition = record.position.partition.to_string();
    let offset = record.position.offset.to_string();
    headers
        .insert(Header {
            key: header::SOURCE_TOPIC,
            value: Some(&record.topic),
        })
        .insert(Header {
            key: header::SOURCE_PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: header::SOURCE_OFFSET,
            value: Some(&offset),
        })
        .insert(Header {
            key: header::ERROR,
            value: Some(reason),
        })
}

/// The size of a record's value in bytes (0 without one).
fn payload_len(record: &Record) -> usize {
    record.payload.as_ref().map_or(0, Vec::len)
}

/// `text` cut to at most `max` bytes, on a character boundary.
fn bounded(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_text_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("abcdef", 3), "abc");
        // 'é' is two bytes: a cut inside it moves back before it.
        assert_eq!(bounded("aé", 2), "a");
        assert_eq!(bounded(&"x".repeat(5000), MAX_ERROR_BYTES).len(), 1024);
    }

    #[test]
    fn the_kind_header_names_how_a_record_was_sent_and_reads_back() {
        for sent in [Sent::Whole, Sent::Reference] {
            assert_eq!(Sent::from_header_value(sent.header_value()), Some(sent));
        }
        assert_eq!(Sent::from_header_value("whole"), None);
    }
}
