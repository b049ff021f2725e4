//! A sample of the events topic's raw records, for trying a candidate schema
//! against what the log really holds (`likes-replay schema check`): the first
//! and the last `n` records of every partition, undecoded (the caller decodes
//! them with the reader schema it is trying). The oldest retained records
//! carry the oldest writer schemas still in the log, the newest the newest.
//! Like the tools' reader ([`super::reader`]) it assigns partitions under a
//! throwaway group and never commits.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::Error;
use crate::settings::StackSettings;

/// Broker calls (metadata, watermarks) give up after this.
const BROKER_TIMEOUT: Duration = Duration::from_secs(10);
/// A read that receives nothing for this long while records are due has stalled.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One record as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub payload: Option<Vec<u8>>,
}

/// What was sampled of one partition: offsets `head` and `tail` (half-open;
/// they never overlap), of the retained `log_start..log_end`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledPartition {
    pub partition: i32,
    pub log_start: i64,
    pub log_end: i64,
    pub head: std::ops::Range<i64>,
    pub tail: std::ops::Range<i64>,
}

/// The first and last `n` records of every partition of `stack`'s topic.
pub async fn head_and_tail(
    stack: &StackSettings,
    n: i64,
) -> Result<(Vec<SampledPartition>, Vec<RawRecord>), Error> {
    let group = format!("likes-replay-sample-{}", uuid::Uuid::new_v4().simple());
    let consumer: StreamConsumer =
        super::consumer_config(&stack.kafka_bootstrap, &group).create()?;
    let topic = &stack.topic;
    let metadata = consumer.fetch_metadata(Some(topic), BROKER_TIMEOUT)?;
    let missing = |reason: String| Error::TopicMissing {
        topic: topic.clone(),
        reason,
    };
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .ok_or_else(|| missing("not in the metadata".into()))?
        .partitions()
        .len();
    if partitions == 0 {
        return Err(missing("no partitions".into()));
    }
    let mut sampled = Vec::with_capacity(partitions);
    for partition in 0..partitions as i32 {
        let (low, high) = consumer.fetch_watermarks(topic, partition, BROKER_TIMEOUT)?;
        let head = low..(low + n).min(high);
        let tail = (high - n).max(head.end)..high;
        sampled.push(SampledPartition {
            partition,
            log_start: low,
            log_end: high,
            head,
            tail,
        });
    }
    let mut records = read(
        &consumer,
        topic,
        sampled.iter().map(|p| (p.partition, p.head.clone())),
    )
    .await?;
    records.extend(
        read(
            &consumer,
            topic,
            sampled.iter().map(|p| (p.partition, p.tail.clone())),
        )
        .await?,
    );
    Ok((sampled, records))
}

/// Reads the records of `spans` (per partition, `start..end`).
async fn read(
    consumer: &StreamConsumer,
    topic: &str,
    spans: impl Iterator<Item = (i32, std::ops::Range<i64>)>,
) -> Result<Vec<RawRecord>, Error> {
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for (partition, span) in spans.filter(|(_, s)| !s.is_empty()) {
        tpl.add_partition_offset(topic, partition, Offset::Offset(span.start))?;
        remaining.insert(partition, span.end);
    }
    let mut records = Vec::new();
    if remaining.is_empty() {
        return Ok(records);
    }
    // assign, never subscribe: no group membership, no rebalance, no commit.
    consumer.assign(&tpl)?;
    while !remaining.is_empty() {
        let message = tokio::time::timeout(STALL_TIMEOUT, consumer.recv())
            .await
            .map_err(|_| {
                let mut partitions: Vec<i32> = remaining.keys().copied().collect();
                partitions.sort_unstable();
                Error::ReadStalled {
                    waited: STALL_TIMEOUT,
                    partitions,
                }
            })??;
        let (partition, offset) = (message.partition(), message.offset());
        let Some(&end) = remaining.get(&partition) else {
            continue;
        };
        if offset >= end {
            remaining.remove(&partition);
            continue;
        }
        if offset + 1 >= end {
            remaining.remove(&partition);
        }
        records.push(RawRecord {
            partition,
            offset,
            payload: message.payload().map(<[u8]>::to_vec),
        });
    }
    consumer.unassign()?;
    Ok(records)
}
