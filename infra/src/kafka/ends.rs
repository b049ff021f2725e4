//! Where each partition of the topic ends now: the offset the next record
//! will get, for every partition in one ListOffsets request per leader. The
//! ingest's projection watch compares it with the projector's stored offsets
//! (lag, and how fresh a count is).

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::Error;

/// A ListOffsets request gives up after this.
const BROKER_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads the log end offsets of one topic (a group-less consumer that never
/// subscribes or commits).
#[derive(Clone)]
pub struct LogEnds {
    consumer: Arc<BaseConsumer>,
    bootstrap: String,
    topic: String,
}

impl LogEnds {
    pub fn new(bootstrap: &str, topic: &str) -> Result<Self, Error> {
        let group = format!("likes-log-ends-{}", uuid::Uuid::new_v4().simple());
        let consumer: BaseConsumer = super::consumer_config(bootstrap, &group).create()?;
        Ok(Self {
            consumer: Arc::new(consumer),
            bootstrap: bootstrap.to_string(),
            topic: topic.to_string(),
        })
    }

    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The end offset of partitions `0..partitions` (index = partition). The
    /// request blocks, so it runs off the async workers.
    pub async fn read(&self, partitions: i32) -> Result<Vec<i64>, Error> {
        let consumer = self.consumer.clone();
        let topic = self.topic.clone();
        tokio::task::spawn_blocking(move || {
            let mut asked = TopicPartitionList::new();
            for partition in 0..partitions {
                // A timestamp of "end" asks for the latest offset.
                asked.add_partition_offset(&topic, partition, Offset::End)?;
            }
            let answered = consumer.offsets_for_times(asked, BROKER_TIMEOUT)?;
            let mut ends = vec![0; usize::try_from(partitions).unwrap_or(0)];
            for element in answered.elements() {
                element.error()?;
                let (Ok(index), Offset::Offset(end)) =
                    (usize::try_from(element.partition()), element.offset())
                else {
                    return Err(Error::Kafka(rdkafka::error::KafkaError::OffsetFetch(
                        rdkafka::types::RDKafkaErrorCode::UnknownPartition,
                    )));
                };
                if let Some(slot) = ends.get_mut(index) {
                    *slot = end;
                }
            }
            Ok(ends)
        })
        .await
        .map_err(|_| Error::Kafka(rdkafka::error::KafkaError::Canceled))?
    }
}
