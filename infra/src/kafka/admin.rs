//! Topic creation and metadata through the admin client.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;
use tracing::instrument;

use super::base_config;
use crate::Error;

/// Seven days, the retention of the product topic.
pub const RETENTION_MS: i64 = 7 * 24 * 60 * 60 * 1000;

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
