//! Collecting a batch: records for one window, decoded and admitted per
//! partition. When the window ends while the previous batch is still being
//! written, the batch keeps growing until the writer is free, so a busy
//! projector writes fewer, larger transactions and never idles its consumer.

use std::sync::Arc;
use std::time::Instant;

use likes_domain::Position;
use likes_infra::Error;
use likes_infra::codec::EventCodec;
use rdkafka::Message;
use rdkafka::consumer::Consumer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Settings;
use crate::background::retry_forever;
use crate::batch::{Batch, Offer};
use crate::consumer::ProjectorConsumer;
use crate::dead_letters::DeadLetters;
use crate::ownership::Ownership;

/// The consuming half of the projector.
pub struct Collector {
    pub settings: Settings,
    pub consumer: Arc<ProjectorConsumer>,
    pub ownership: Arc<Ownership>,
    pub codec: EventCodec,
    pub dead_letters: DeadLetters,
}

impl Collector {
    /// Collects one batch and waits for the writer to be free (`writer`'s one
    /// permit). Returns `None` when a window passed with nothing to collect.
    pub async fn collect(
        &mut self,
        writer: &Arc<Semaphore>,
    ) -> Option<(Batch, OwnedSemaphorePermit)> {
        if self.ownership.take_rejoin() {
            tracing::warn!("rejoining the consumer group");
            self.consumer.unsubscribe();
            if let Err(e) = self.consumer.subscribe(&[&self.settings.stack.topic]) {
                tracing::error!(error = %e, "resubscribe failed");
            }
        }
        let mut batch = Batch::new(self.ownership.generation());
        let mut deadline = tokio::time::Instant::now() + self.settings.window;
        let mut permit = None;
        while batch.len() < self.settings.max_batch_events {
            let received = if batch.is_empty() || tokio::time::Instant::now() < deadline {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Err(_elapsed) if batch.is_empty() => return None,
                    Err(_elapsed) => continue,
                    Ok(received) => received,
                }
            } else {
                // The window is over: hand off the moment the writer is free,
                // taking whatever arrives while it is still busy.
                tokio::select! {
                    biased;
                    free = writer.clone().acquire_owned() => {
                        permit = free.ok();
                        break;
                    }
                    received = self.consumer.recv() => received,
                }
            };
            let message = match received {
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
                Ok(message) => message,
            };
            if batch.generation != self.ownership.generation() {
                // A rebalance happened: what we hold was not committed and will be
                // read again from the claimed offsets.
                batch = Batch::new(self.ownership.generation());
            }
            let position = Position {
                partition: message.partition(),
                offset: message.offset(),
            };
            let first = batch.is_empty();
            if batch.admit(&self.ownership, position) == Offer::Stale {
                continue;
            }
            if first {
                // The window runs from the first record, so a quiet topic does not
                // delay the first like of a burst by a whole window.
                deadline = tokio::time::Instant::now() + self.settings.window;
                batch.started = Instant::now();
            }
            let decoded = retry_forever("decode", || async {
                match self.codec.decode(message.payload()).await {
                    Err(Error::Poison(reason)) => Ok(Err(reason)),
                    Ok(event) => Ok(Ok(event)),
                    Err(e) => Err(e),
                }
            })
            .await;
            match decoded {
                Ok(event) => {
                    let record_time =
                        likes_domain::record_time(message.timestamp().to_millis(), &event);
                    batch.push(position, record_time, event);
                }
                Err(reason) => {
                    tracing::warn!(partition = position.partition, offset = position.offset, %reason, "poison record sent to the dead-letter topic");
                    retry_forever("dead letter", || self.dead_letters.send(&message, &reason))
                        .await;
                    metrics::counter!(crate::metrics::POISON).increment(1);
                    batch.poison += 1;
                }
            }
        }
        if batch.is_empty() {
            return None;
        }
        let permit = match permit {
            Some(permit) => permit,
            None => writer.clone().acquire_owned().await.ok()?,
        };
        Some((batch, permit))
    }
}
