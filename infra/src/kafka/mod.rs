//! Kafka, by role: the producer every writer of `like-events` uses
//! ([`producer`]), the consumers ([`consumer`]: the settings every reader
//! shares and the projector's group consumer with its rebalance hook), topic
//! creation and metadata ([`admin`]), the dead-letter topic
//! ([`dead_letters`]) and its reader for operators ([`dead_letter_reader`]), the partitions' end offsets ([`ends`]), the readiness probe ([`readiness`]), the tools' log
//! reader ([`reader`]), the archiver's raw follower ([`tail`]), the raw
//! head-and-tail sample that tries a candidate schema ([`sample`]) and the
//! partitioner every writer shares
//! ([`partitioner`]). Nothing outside this module names an rdkafka type.

pub mod admin;
pub mod consumer;
pub mod dead_letter_reader;
pub mod dead_letters;
pub mod ends;
pub mod partitioner;
pub mod producer;
pub mod reader;
pub mod readiness;
pub mod sample;
pub mod tail;

use rdkafka::ClientConfig;

pub use admin::{
    RETENTION_MS, TopicOutcome, TopicSpec, default_replication, ensure_topics, partition_count,
};
pub use consumer::consumer_config;
pub use producer::{PublishError, Publisher, item_key, lingering_producer, producer};

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

/// How many partitions `topic` has by the cluster's `metadata`; a topic the
/// metadata does not hold, or holds with an error or no partitions, is
/// [`crate::Error::TopicMissing`] (`hint` is added to the broker's error).
fn partitions_in(
    metadata: &rdkafka::metadata::Metadata,
    topic: &str,
    hint: &str,
) -> Result<i32, crate::Error> {
    let missing = |reason: String| crate::Error::TopicMissing {
        topic: topic.to_string(),
        reason,
    };
    let found = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| missing("not in the metadata".into()))?;
    if let Some(e) = found.error() {
        return Err(missing(format!("{e:?}{hint}")));
    }
    match i32::try_from(found.partitions().len()) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(missing("no partitions".into())),
    }
}
