//! Kafka clients: the producer every writer of `like-events` uses, the consumer
//! settings the readers share, and topic creation with the admin client.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use tracing::instrument;

use crate::Error;

pub mod partitioner;
pub mod reader;

/// Seven days, the retention of the product topic.
pub const RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// The Kafka key of an item's events: its id as decimal text, so that one item's
/// events stay in one partition, in order, and tools can read the key.
pub fn item_key(item_id: i64) -> String {
    item_id.to_string()
}

/// Settings common to every client of the cluster.
fn base_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("client.dns.lookup", "use_all_dns_ips")
        // Small requests must not wait for Nagle's algorithm on top of linger.
        .set("socket.nagle.disable", "true")
        .set("log_level", "4");
    config
}

/// A producer for accepted events: idempotent with `acks=all`, so an ack means the
/// event is durable and a retry inside the client can never write it twice; the
/// murmur2 partitioner matches the Java clients, so every producer maps an item to
/// the same partition. A 5 ms linger packs each partition's records into one
/// request: the broker's cost per like falls several-fold (measured by
/// `likes-bench`, see `docs/capacity.md`) for 5 ms of the 20 ms latency budget.
pub fn producer(bootstrap: &str, delivery_timeout: Duration) -> Result<FutureProducer, Error> {
    let mut config = base_config(bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", partitioner::PRODUCER_PARTITIONER)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        );
    Ok(config.create()?)
}

/// Consumer settings for reading the topic without Kafka's auto-commit: the
/// projector keeps its offsets in PostgreSQL, so Kafka's are never the truth.
pub fn consumer_config(bootstrap: &str, group_id: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "roundrobin")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "60000")
        .set("fetch.wait.max.ms", "100");
    config
}

/// What a topic should look like.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    /// 1 on a single dev broker; 3 in production.
    pub replication: i32,
    pub retention_ms: i64,
}

/// Creates each topic that does not exist yet; an existing topic is left as it
/// is, but one whose partition count differs from the spec is refused
/// ([`Error::TopicMismatch`]): the count is fixed for the topic's life, because
/// an item's partition is murmur2 of its key modulo the count. Adding
/// partitions would move items to partitions whose offsets are unrelated to
/// the ones their counts were stamped with (Redis would refuse every newer
/// write as older), and their history would split across two partitions.
#[instrument(skip_all, fields(bootstrap))]
pub async fn ensure_topics(bootstrap: &str, topics: &[TopicSpec]) -> Result<(), Error> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap).create()?;
    let retention: Vec<String> = topics.iter().map(|t| t.retention_ms.to_string()).collect();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&retention)
        .map(|(t, retention)| {
            NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(t.replication),
            )
            .set("retention.ms", retention)
            .set("cleanup.policy", "delete")
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(name) => tracing::info!(topic = %name, "topic created"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic exists");
                if let Some(spec) = topics.iter().find(|t| t.name == name) {
                    check_partitions(&admin, spec).await?;
                }
            }
            Err((name, code)) => {
                return Err(Error::Kafka(rdkafka::error::KafkaError::AdminOp(code))).inspect_err(
                    |_| tracing::error!(topic = %name, %code, "topic creation failed"),
                );
            }
        }
    }
    Ok(())
}

/// Refuses an existing topic whose partition count is not the spec's.
async fn check_partitions(
    admin: &AdminClient<DefaultClientContext>,
    spec: &TopicSpec,
) -> Result<(), Error> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(&spec.name), Duration::from_secs(10))?;
    let existing = metadata
        .topics()
        .iter()
        .find(|t| t.name() == spec.name)
        .map_or(0, |t| t.partitions().len() as i32);
    if existing != spec.partitions {
        return Err(Error::TopicMismatch {
            topic: spec.name.clone(),
            message: format!(
                "it has {existing} partitions, {} were asked for; the partition count of an \
                 existing topic is never changed (items would move to other partitions): keep \
                 --partitions {existing}, or re-partition into a new topic and rebuild (README, \
                 \"The partition count is fixed\")",
                spec.partitions
            ),
        });
    }
    Ok(())
}
