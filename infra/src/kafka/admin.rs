//! Topic creation and metadata through the admin client.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
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
    /// Copies of each partition: `min(3, brokers)` by default
    /// ([`default_replication`]).
    pub replication: i32,
    /// `min.insync.replicas`: the copies an `acks=all` write must reach before
    /// it is acknowledged; `replication - 1` (at least 1) by default, so one
    /// broker may be down and writes go on, and an acknowledged write survives
    /// the loss of any one broker.
    pub min_insync_replicas: i32,
    pub retention_ms: i64,
}

impl TopicSpec {
    /// A topic replicated `replication` times with `min.insync.replicas`
    /// one less (at least 1).
    pub fn new(
        name: impl Into<String>,
        partitions: i32,
        replication: i32,
        retention_ms: i64,
    ) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication,
            min_insync_replicas: (replication - 1).max(1),
            retention_ms,
        }
    }
}

/// What [`ensure_topics`] did with one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicOutcome {
    pub name: String,
    /// Created now (`false`: it existed with settings at least as strong).
    pub created: bool,
    pub partitions: i32,
    pub replication: i32,
    pub min_insync_replicas: i32,
}

/// The default replication factor: 3 where the cluster has 3 brokers or more,
/// else as many as there are (1 on the single dev broker).
#[instrument(skip_all)]
pub async fn default_replication(bootstrap: &str) -> Result<i32, Error> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap).create()?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?;
    Ok((metadata.brokers().len() as i32).clamp(1, 3))
}

/// How many partitions `topic` has (a missing topic is [`Error::TopicMissing`]).
#[instrument(skip_all, fields(topic))]
pub async fn partition_count(bootstrap: &str, topic: &str) -> Result<i32, Error> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap).create()?;
    let name = topic.to_string();
    // The metadata call blocks, so it runs off the async workers.
    let metadata = tokio::task::spawn_blocking(move || {
        admin
            .inner()
            .fetch_metadata(Some(&name), Duration::from_secs(10))
    })
    .await
    .map_err(|_| Error::Kafka(rdkafka::error::KafkaError::Canceled))??;
    match metadata.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
            Ok(t.partitions().len() as i32)
        }
        _ => Err(Error::TopicMissing {
            topic: topic.to_string(),
            reason: "no partitions in the cluster's metadata (run `likes-replay setup`)".into(),
        }),
    }
}

/// Creates each topic that does not exist yet (with `min.insync.replicas` and
/// unclean leader election off, so an acknowledged write is never given up for
/// availability); an existing topic is left as it is, but one whose settings
/// are weaker than the spec's (fewer replicas, a lower `min.insync.replicas`,
/// unclean leader election on) is refused with what differs and how to fix it,
/// never silently kept, and so is one whose partition count differs
/// ([`Error::TopicMismatch`]): the count is fixed for the topic's life, because
/// an item's partition is murmur2 of its key modulo the count. Adding
/// partitions would move items to partitions whose offsets are unrelated to
/// the ones their counts were stamped with (Redis would refuse every newer
/// write as older), and their history would split across two partitions.
#[instrument(skip_all, fields(bootstrap))]
pub async fn ensure_topics(
    bootstrap: &str,
    topics: &[TopicSpec],
) -> Result<Vec<TopicOutcome>, Error> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap).create()?;
    let settings: Vec<(String, String)> = topics
        .iter()
        .map(|t| {
            (
                t.retention_ms.to_string(),
                t.min_insync_replicas.to_string(),
            )
        })
        .collect();
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .zip(&settings)
        .map(|(t, (retention, min_insync))| {
            NewTopic::new(
                &t.name,
                t.partitions,
                TopicReplication::Fixed(t.replication),
            )
            .set("retention.ms", retention)
            .set("cleanup.policy", "delete")
            .set("min.insync.replicas", min_insync)
            .set("unclean.leader.election.enable", "false")
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut outcomes = Vec::new();
    for result in admin.create_topics(&new_topics, &options).await? {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, "topic created");
                if let Some(spec) = topics.iter().find(|t| t.name == name) {
                    outcomes.push(TopicOutcome {
                        name,
                        created: true,
                        partitions: spec.partitions,
                        replication: spec.replication,
                        min_insync_replicas: spec.min_insync_replicas,
                    });
                }
            }
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::debug!(topic = %name, "topic exists");
                if let Some(spec) = topics.iter().find(|t| t.name == name) {
                    check_partitions(&admin, spec).await?;
                    outcomes.push(check_durability(&admin, spec).await?);
                }
            }
            Err((name, code)) => {
                return Err(Error::Kafka(rdkafka::error::KafkaError::AdminOp(code))).inspect_err(
                    |_| tracing::error!(topic = %name, %code, "topic creation failed"),
                );
            }
        }
    }
    Ok(outcomes)
}

/// Refuses an existing topic that keeps fewer copies, acknowledges with fewer
/// in sync, or may elect an out-of-sync leader, compared with `spec`.
async fn check_durability(
    admin: &AdminClient<DefaultClientContext>,
    spec: &TopicSpec,
) -> Result<TopicOutcome, Error> {
    let metadata = admin
        .inner()
        .fetch_metadata(Some(&spec.name), Duration::from_secs(10))?;
    let replication = metadata
        .topics()
        .iter()
        .find(|t| t.name() == spec.name)
        .and_then(|t| {
            t.partitions()
                .iter()
                .map(|p| p.replicas().len() as i32)
                .min()
        })
        .unwrap_or(0);
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(&spec.name)], &options)
        .await?;
    let config = |key: &str| -> Option<String> {
        described.iter().flatten().find_map(|resource| {
            resource
                .entries
                .iter()
                .find(|e| e.name == key)
                .and_then(|e| e.value.clone())
        })
    };
    let min_insync: i32 = config("min.insync.replicas")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let unclean = config("unclean.leader.election.enable").as_deref() == Some("true");
    let mut weaker = Vec::new();
    if replication < spec.replication {
        weaker.push(format!(
            "replication factor {replication}, {} asked (raise it with a partition \
             reassignment, kafka-reassign-partitions --execute)",
            spec.replication
        ));
    }
    if min_insync < spec.min_insync_replicas {
        weaker.push(format!(
            "min.insync.replicas {min_insync}, {} asked (kafka-configs --alter \
             --entity-type topics --entity-name {} --add-config min.insync.replicas={})",
            spec.min_insync_replicas, spec.name, spec.min_insync_replicas
        ));
    }
    if unclean {
        weaker.push(format!(
            "unclean.leader.election.enable true (kafka-configs --alter --entity-type \
             topics --entity-name {} --add-config unclean.leader.election.enable=false)",
            spec.name
        ));
    }
    if !weaker.is_empty() {
        return Err(Error::TopicMismatch {
            topic: spec.name.clone(),
            message: format!(
                "it exists with weaker durability than asked: {}; fix it, or ask for what it \
                 has with --replication",
                weaker.join("; ")
            ),
        });
    }
    Ok(TopicOutcome {
        name: spec.name.clone(),
        created: false,
        partitions: spec.partitions,
        replication,
        min_insync_replicas: min_insync,
    })
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
