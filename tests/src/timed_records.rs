//! Producing like events with chosen Kafka record times (`CreateTime`), to
//! place a client's retry at a given distance from its original in record
//! time, whatever the wall clock says when the projector applies it.

use std::time::Duration;

use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use likes_infra::codec::EventCodec;
use likes_infra::kafka;
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::TestEnv;

/// A producer of the test topic's records with explicit timestamps.
pub struct TimedProducer {
    producer: FutureProducer,
    codec: EventCodec,
    topic: String,
}

impl TimedProducer {
    pub fn new(env: &TestEnv) -> anyhow::Result<Self> {
        Ok(Self {
            producer: kafka::producer(&env.stack.kafka_bootstrap, Duration::from_secs(30))?,
            codec: EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?,
            topic: env.stack.topic.clone(),
        })
    }

    /// Appends `event` with record time `millis`, keyed by its item like the
    /// ingest does; returns (partition, offset).
    pub async fn send(&self, event: &LikeEvent, millis: i64) -> anyhow::Result<(i32, i64)> {
        let payload = self.codec.encode(event).await?;
        let key = kafka::item_key(event.item.item_id.get());
        let record = FutureRecord::to(&self.topic)
            .key(&key)
            .payload(&payload)
            .timestamp(millis);
        let delivery = self
            .producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
        Ok((delivery.partition, delivery.offset))
    }
}

/// A like or unlike of item (type 1, `item`) by `user`, with a fresh event id.
pub fn like_event(user: i64, item: i64, like: bool) -> anyhow::Result<LikeEvent> {
    Ok(LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(user)?,
        item: ItemKey::parse(1, item)?,
        action: if like { Action::Like } else { Action::Unlike },
        timestamp: chrono::Utc::now(),
    })
}

/// The wall clock in milliseconds since the epoch.
pub fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
