//! The producer of like events: encodes with the registered schema, keys by
//! item, and reports where the event sits in the log only once the broker
//! acked.

use std::time::Duration;

use likes_domain::{LikeEvent, Position};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tracing::instrument;

use super::base_config;
use crate::Error;
use crate::codec::EventCodec;

/// The Kafka key of an item's events: its id as decimal text, so that one item's
/// events stay in one partition, in order, and tools can read the key.
pub fn item_key(item_id: i64) -> String {
    item_id.to_string()
}

/// A producer for accepted events: idempotent with `acks=all`, so an ack means the
/// event is durable and a retry inside the client can never write it twice; the
/// murmur2 partitioner matches the Java clients, so every producer maps an item to
/// the same partition. It lingers the default
/// [`crate::settings::DEFAULT_PRODUCER_LINGER_MS`]: see [`lingering_producer`].
pub fn producer(bootstrap: &str, delivery_timeout: Duration) -> Result<FutureProducer, Error> {
    lingering_producer(
        bootstrap,
        delivery_timeout,
        Duration::from_millis(crate::settings::DEFAULT_PRODUCER_LINGER_MS),
    )
}

/// [`producer`] waiting up to `linger` to fill a partition's batch: a longer
/// linger packs more records into each request (less broker CPU per like)
/// and adds up to `linger` to every like's latency
/// ([`crate::settings::producer_linger`]).
pub fn lingering_producer(
    bootstrap: &str,
    delivery_timeout: Duration,
    linger: Duration,
) -> Result<FutureProducer, Error> {
    let mut config = base_config(bootstrap);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", super::partitioner::PRODUCER_PARTITIONER)
        .set("linger.ms", linger.as_millis().to_string())
        .set("compression.type", "lz4")
        .set("queue.buffering.max.messages", "200000")
        .set(
            "message.timeout.ms",
            delivery_timeout.as_millis().to_string(),
        );
    Ok(config.create()?)
}

/// Waits for the broker's answer on one record.
async fn acked(delivery: DeliveryFuture) -> Result<Position, PublishError> {
    match delivery.await {
        Ok(Ok(delivered)) => Ok(Position {
            partition: delivered.partition,
            offset: delivered.offset,
        }),
        Ok(Err((e, _))) => Err(PublishError::NotAcked(Error::Kafka(e))),
        Err(_canceled) => Err(PublishError::NotAcked(Error::DeliveryAbandoned)),
    }
}

/// Why an event was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The local queue is full: the broker is slow or away. Shed load.
    #[error("producer queue full")]
    QueueFull,
    /// The broker did not ack in time or refused; the event may or may not be
    /// stored, so the client must retry with the same event id.
    #[error("not acknowledged: {0}")]
    NotAcked(Error),
    /// The event could not be encoded (registry away, ...).
    #[error(transparent)]
    Encode(#[from] Error),
}

/// Publishes events to one topic.
pub struct Publisher {
    producer: FutureProducer,
    codec: EventCodec,
    topic: String,
}

impl Publisher {
    /// A publisher for `topic` with its own idempotent producer, lingering
    /// `linger` ([`lingering_producer`]).
    pub fn new(
        bootstrap: &str,
        topic: &str,
        registry_url: &str,
        delivery_timeout: Duration,
        linger: Duration,
    ) -> Result<Self, Error> {
        Ok(Self {
            producer: lingering_producer(bootstrap, delivery_timeout, linger)?,
            codec: EventCodec::new(registry_url, topic)?,
            topic: topic.to_string(),
        })
    }

    /// The codec, for start-up registration.
    pub fn codec(&self) -> &EventCodec {
        &self.codec
    }

    /// How many partitions the topic has, from the broker's metadata. The
    /// metadata call blocks, so it runs off the async workers.
    pub async fn partition_count(&self) -> Result<i32, Error> {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
        let metadata = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
        })
        .await
        .map_err(|_| Error::Kafka(KafkaError::Canceled))??;
        match metadata.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as i32)
            }
            _ => Err(Error::Kafka(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            ))),
        }
    }

    /// Events queued locally and not yet acked: the backpressure gauge.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Appends `event` and waits for the broker's ack. Many calls may be in
    /// flight at once; each awaits only its own delivery.
    #[instrument(level = "debug", skip_all, fields(event_id = %event.event_id))]
    pub async fn publish(&self, event: &LikeEvent) -> Result<Position, PublishError> {
        let payload = self.codec.encode(event).await?;
        acked(self.enqueue(event, &payload)?).await
    }

    /// Appends every event, all in flight at once, and waits for their acks;
    /// one result per event, in order. The records are handed to the producer
    /// in one synchronous pass (no task per event), then the acks are awaited
    /// together: the batch API's path.
    #[instrument(level = "debug", skip_all, fields(events = events.len()))]
    pub async fn publish_many(&self, events: &[LikeEvent]) -> Vec<Result<Position, PublishError>> {
        let id = match self.codec.ready().await {
            Ok(id) => id,
            Err(e) => {
                let message = e.to_string();
                return events
                    .iter()
                    .map(|_| {
                        Err(PublishError::Encode(Error::RegistryUnavailable(
                            message.clone(),
                        )))
                    })
                    .collect();
            }
        };
        let pending: Vec<Result<DeliveryFuture, PublishError>> = events
            .iter()
            .map(|event| self.enqueue(event, &self.codec.encode_as(id, event)))
            .collect();
        futures::future::join_all(pending.into_iter().map(|p| async move { acked(p?).await })).await
    }

    /// Hands one encoded record to the producer's queue.
    fn enqueue(&self, event: &LikeEvent, payload: &[u8]) -> Result<DeliveryFuture, PublishError> {
        let key = item_key(event.item.item_id.get());
        let record = FutureRecord::to(&self.topic).key(&key).payload(payload);
        match self.producer.send_result(record) {
            Ok(delivery) => Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                Err(PublishError::QueueFull)
            }
            Err((e, _)) => Err(PublishError::NotAcked(Error::Kafka(e))),
        }
    }

    /// Waits up to `timeout` for every queued event to be acked (shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        Ok(self.producer.flush(timeout)?)
    }
}
