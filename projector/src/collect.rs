//! Collecting a batch: records for one window, decoded and admitted per
//! partition. When the window ends while the previous batch is still being
//! written, the batch keeps growing until the writer is free, so a busy
//! projector writes fewer, larger transactions and never idles its consumer.

use std::sync::Arc;
use std::time::Instant;

use likes_infra::codec::EventCodec;
use likes_infra::kafka::dead_letters::{DeadLetters, Sent};
use likes_infra::retry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::batch::{Batch, Offer};
use crate::consumer::ProjectorConsumer;
use crate::ownership::{Ownership, ParkReason};
use crate::{Settings, parking};

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
            if let Err(e) = self.consumer.rejoin() {
                tracing::error!(error = %e, "resubscribe failed");
            }
        }
        parking::resume_accepted(&self.consumer, &self.ownership);
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
            let record = match received {
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
                Ok(record) => record,
            };
            if batch.generation != self.ownership.generation() {
                // A rebalance happened: what we hold was not committed and will be
                // read again from the claimed offsets.
                batch = Batch::new(self.ownership.generation());
            }
            let position = record.position;
            let epoch = match batch.offer(&self.ownership, position) {
                Offer::Next { epoch } => epoch,
                Offer::Stale => continue,
                Offer::Gap { from, to } => {
                    self.park(position.partition, ParkReason::Gap { from, to });
                    continue;
                }
            };
            let first = batch.is_empty();
            // Only transient failures (the registry away) are retried; any other
            // failure means the record can never become an event.
            let payload = record.payload.as_deref();
            match retry::transient(&retry::TRANSIENT, "decode", || self.codec.decode(payload)).await
            {
                Ok(event) => {
                    batch.take(&self.ownership, position, epoch);
                    let record_time = likes_domain::record_time(record.timestamp_ms, &event);
                    batch.push(position, record_time, event);
                }
                Err(e) => {
                    let reason = e.to_string();
                    tracing::warn!(partition = position.partition, offset = position.offset, %reason, "poison record sent to the dead-letter topic");
                    match self.dead_letters.send(&record, &reason).await {
                        Ok(sent) => {
                            metrics::counter!(crate::metrics::POISON).increment(1);
                            if sent == Sent::Reference {
                                metrics::counter!(crate::metrics::DEAD_LETTER_REFERENCES)
                                    .increment(1);
                            }
                            batch.take(&self.ownership, position, epoch);
                            batch.poison += 1;
                        }
                        Err(e) => {
                            // Committing past it would lose it: stop its partition only.
                            tracing::error!(error = %e, partition = position.partition, offset = position.offset, "dead letter failed");
                            self.park(
                                position.partition,
                                ParkReason::DeadLetterFailed {
                                    offset: position.offset,
                                },
                            );
                            continue;
                        }
                    }
                }
            }
            if first {
                // The window runs from the first record, so a quiet topic does not
                // delay the first like of a burst by a whole window.
                deadline = tokio::time::Instant::now() + self.settings.window;
                batch.started = Instant::now();
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

    fn park(&self, partition: i32, reason: ParkReason) {
        parking::park(&self.consumer, &self.ownership, partition, reason);
    }
}
