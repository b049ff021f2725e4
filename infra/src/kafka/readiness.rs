//! Whether the cluster can take a write right now: the topic's metadata,
//! fetched with a short timeout by a client that never joins a group.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

use super::consumer_config;
use crate::{Down, Error, Unready};

/// Probes one topic's metadata.
pub struct KafkaProbe {
    client: Arc<BaseConsumer>,
    topic: String,
}

impl KafkaProbe {
    /// A probe of `topic`; `group_id` only names the client to the brokers.
    pub fn new(bootstrap: &str, group_id: &str, topic: &str) -> Result<Self, Error> {
        // Never subscribes: the client is only asked for metadata.
        let client: BaseConsumer = consumer_config(bootstrap, group_id).create()?;
        Ok(Self {
            client: Arc::new(client),
            topic: topic.to_string(),
        })
    }

    /// Ready when the brokers answer within `timeout` and the topic has
    /// partitions. The metadata call blocks, so it runs off the async workers.
    pub async fn probe(&self, timeout: Duration) -> Result<(), Unready> {
        let client = self.client.clone();
        let topic = self.topic.clone();
        let probe = tokio::task::spawn_blocking(move || {
            let metadata = client.fetch_metadata(Some(&topic), timeout)?;
            Ok::<usize, rdkafka::error::KafkaError>(
                metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.partitions().len())
                    .sum(),
            )
        });
        match probe.await {
            Ok(Ok(0)) => Err(Unready::new(
                Down::NoPartitions,
                format!("topic {} has no partitions", self.topic),
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(Unready::new(Down::Unreachable, e.to_string())),
            Err(e) => Err(Unready::new(Down::Unreachable, e.to_string())),
        }
    }
}
