//! The Kafka consumer and its rebalance handling: on assignment, claim the
//! partitions in PostgreSQL (fencing the previous owner) and start each one at
//! the offset stored there, never at Kafka's committed offset.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset};

use crate::ownership::{Claimer, Ownership};

/// How often a claim is tried before the assignment is given up (and rejoined).
const CLAIM_ATTEMPTS: u32 = 10;

/// Callbacks of the projector's consumer.
pub struct ProjectorContext {
    topic: String,
    claimer: Claimer,
    ownership: Arc<Ownership>,
}

pub type ProjectorConsumer = StreamConsumer<ProjectorContext>;

impl ProjectorContext {
    pub fn new(topic: &str, claimer: Claimer, ownership: Arc<Ownership>) -> Self {
        Self {
            topic: topic.to_string(),
            claimer,
            ownership,
        }
    }

    fn claim_with_retries(
        &self,
        partitions: &[i32],
    ) -> Option<Vec<likes_infra::postgres::offsets::Claim>> {
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=CLAIM_ATTEMPTS {
            match self.claimer.claim(partitions.to_vec()) {
                Ok(claims) => return Some(claims),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "claiming partitions failed");
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(3));
                }
            }
        }
        None
    }
}

impl ClientContext for ProjectorContext {}

impl ConsumerContext for ProjectorContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                let Some(claims) = self.claim_with_retries(&partitions) else {
                    tracing::error!(
                        ?partitions,
                        "cannot claim partitions; will rejoin the group"
                    );
                    self.ownership.revoke_all();
                    self.ownership.request_rejoin();
                    let _ = consumer.unassign();
                    return;
                };
                for claim in &claims {
                    if let Err(e) = tpl.set_partition_offset(
                        &self.topic,
                        claim.partition,
                        Offset::Offset(claim.next_offset),
                    ) {
                        tracing::error!(error = %e, partition = claim.partition, "cannot set start offset");
                    }
                }
                self.ownership.assign(&claims);
                tracing::info!(
                    partitions = ?claims.iter().map(|c| (c.partition, c.epoch, c.next_offset)).collect::<Vec<_>>(),
                    "partitions assigned (partition, epoch, next offset)"
                );
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "assign failed; will rejoin the group");
                    self.ownership.revoke_all();
                    self.ownership.request_rejoin();
                } else if let Err(e) = consumer.resume(tpl) {
                    // A partition parked (paused) before may come back paused:
                    // the claim forgot why it was parked, so it must be read again.
                    tracing::warn!(error = %e, "resuming the assigned partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.ownership.revoke_all();
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                let _ = consumer.unassign();
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                self.ownership.revoke_all();
                let _ = consumer.unassign();
            }
        }
    }
}
