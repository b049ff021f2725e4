//! What retention does to a log, done on purpose to a test's own topic: Kafka's
//! DeleteRecords moves a partition's log start, deleting the records before it.

use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

use crate::TestEnv;

/// Deletes the records of `partition` before `offset` (its log start becomes
/// `offset`), and fails unless the broker did so.
pub async fn delete_records_before(
    env: &TestEnv,
    partition: i32,
    offset: i64,
) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        likes_infra::kafka::consumer_config(&env.stack.kafka_bootstrap, "admin").create()?;
    let mut upto = TopicPartitionList::new();
    upto.add_partition_offset(&env.stack.topic, partition, rdkafka::Offset::Offset(offset))?;
    let done = admin.delete_records(&upto, &AdminOptions::new()).await?;
    for e in done.elements() {
        if let Err(error) = e.error() {
            anyhow::bail!("delete records of partition {}: {error}", e.partition());
        }
    }
    Ok(())
}

/// One item id per partition of `partitions`, other than `except`: items whose
/// events land in every other partition.
pub fn one_item_per_other_partition(partitions: i32, except: i32) -> Vec<i64> {
    let mut items = Vec::new();
    let mut covered = std::collections::HashSet::new();
    for item in 1.. {
        let p = likes_infra::kafka::partitioner::partition_for_item(item, partitions);
        if p != except && covered.insert(p) {
            items.push(item);
        }
        if covered.len() + 1 == partitions as usize {
            break;
        }
    }
    items
}
