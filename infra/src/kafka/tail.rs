//! Following the topic from given offsets, as the archiver does: assigned
//! partitions (no group, never a commit: the archive's files are its
//! position), records handed out raw (key, value, broker time) because the
//! archive keeps them byte for byte, decodable or not.

use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::Error;
use crate::archive::Record;

/// Broker calls (watermarks) give up after this.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);

/// A consumer of the topic at fixed starting offsets.
pub struct Tail {
    consumer: StreamConsumer,
    topic: String,
}

impl Tail {
    /// Follows `topic` from `positions` (partition, next offset to read).
    pub fn open(bootstrap: &str, topic: &str, positions: &[(i32, i64)]) -> Result<Self, Error> {
        let group = format!("likes-archiver-{}", uuid::Uuid::new_v4().simple());
        let consumer: StreamConsumer = super::consumer_config(bootstrap, &group).create()?;
        let mut tpl = TopicPartitionList::new();
        for &(partition, offset) in positions {
            tpl.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        if tpl.count() > 0 {
            consumer.assign(&tpl)?;
        }
        Ok(Self {
            consumer,
            topic: topic.to_string(),
        })
    }

    /// The first retained offset and the next offset to be written.
    pub fn watermarks(&self, partition: i32) -> Result<(i64, i64), Error> {
        Ok(self
            .consumer
            .fetch_watermarks(&self.topic, partition, BROKER_TIMEOUT)?)
    }

    /// The next record (its partition and the record), or `None` when none
    /// came within `wait`.
    pub async fn next(&self, wait: Duration) -> Result<Option<(i32, Record)>, Error> {
        let message = match tokio::time::timeout(wait, self.consumer.recv()).await {
            Err(_) => return Ok(None),
            Ok(received) => received?,
        };
        Ok(Some((
            message.partition(),
            Record {
                offset: message.offset(),
                timestamp_ms: message.timestamp().to_millis(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().map(<[u8]>::to_vec),
            },
        )))
    }
}
