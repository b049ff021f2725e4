//! The dead-letter topic: records that can never become events are copied
//! there with their key, bytes and headers, plus headers naming where they came
//! from and why, so nothing is dropped silently and an operator can replay them.

use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

use likes_infra::Error;

/// Producer for `<topic>.dlq`.
pub struct DeadLetters {
    producer: FutureProducer,
    topic: String,
}

impl DeadLetters {
    pub fn new(bootstrap: &str, topic: String) -> Result<Self, Error> {
        Ok(Self {
            producer: likes_infra::kafka::producer(bootstrap, Duration::from_secs(30))?,
            topic,
        })
    }

    /// Copies `message` to the dead-letter topic and waits for the ack: its
    /// offset must not be committed before the copy is safe.
    pub async fn send(&self, message: &BorrowedMessage<'_>, error: &str) -> Result<(), Error> {
        let partition = message.partition().to_string();
        let offset = message.offset().to_string();
        let mut headers = OwnedHeaders::new();
        if let Some(original) = message.headers() {
            for h in original.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let headers = headers
            .insert(Header {
                key: "dlq.source.topic",
                value: Some(message.topic()),
            })
            .insert(Header {
                key: "dlq.source.partition",
                value: Some(&partition),
            })
            .insert(Header {
                key: "dlq.source.offset",
                value: Some(&offset),
            })
            .insert(Header {
                key: "dlq.error",
                value: Some(error),
            });
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(&self.topic).headers(headers);
        if let Some(key) = message.key() {
            record = record.key(key);
        }
        if let Some(payload) = message.payload() {
            record = record.payload(payload);
        }
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map(|_| ())
            .map_err(|(e, _)| Error::Kafka(e))
    }
}
