//! The optimistic count's lookups, batched. Every accepted like wants the
//! item's projected count and whether the user already likes it; asking
//! PostgreSQL twice per request would make the database the ceiling of the
//! whole API. Here concurrent asks queue on a
//! channel and go out as one `UNNEST` query per shard per batch (the shards
//! asked concurrently), a few batches in flight,
//! so the database sees tens of statements per second instead of thousands, and
//! a lone ask still costs one round trip. Best effort: when the queue is full
//! or PostgreSQL fails, the answer simply goes without a count.

use std::sync::Arc;
use std::time::Duration;

use crate::projection::Projection;

use likes_domain::{ItemKey, UserId};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Asks waiting at most; beyond, requests go without an optimistic count.
const QUEUE: usize = 16_384;
/// The most pairs one query carries.
const MAX_BATCH: usize = 1_024;
/// Queries in flight at once; while all are busy, asks pile up into the next
/// batch, which is what keeps the statement rate low under load.
const IN_FLIGHT: usize = 2;
/// The share of the producer's linger a batch waits for company after its
/// first ask ([`batch_wait`]).
const SHARE_OF_PRODUCER_LINGER: f64 = 0.6;

/// How long a batch waits for company after its first ask, given the
/// producer's linger (`KAFKA_PRODUCER_LINGER_MS`). The answer waits for both
/// the publish and the lookup, and the publish lingers this long before it
/// even leaves: a wait well inside it (3 ms of the default 5) costs the answer
/// nothing and leaves the query's round trip room. A fixed 3 ms wait became
/// the single like's latency floor once the producer lingered 1 ms
/// (`bench/results/2026-12-01T02-00-22.md`: P50 4.7 ms vs the durable
/// write's 2.4).
pub fn batch_wait(producer_linger: Duration) -> Duration {
    producer_linger.mul_f64(SHARE_OF_PRODUCER_LINGER)
}

struct Ask {
    user: UserId,
    item: ItemKey,
    reply: oneshot::Sender<(i64, bool)>,
}

/// A handle on the batcher task.
#[derive(Clone)]
pub struct Lookups {
    asks: mpsc::Sender<Ask>,
}

impl Lookups {
    /// Starts the batcher on the current runtime; it stops when the last
    /// handle is dropped.
    /// Batches wait up to `wait` for company ([`batch_wait`]).
    pub fn spawn(projection: Arc<Projection>, wait: Duration) -> Self {
        let (asks, queue) = mpsc::channel(QUEUE);
        tokio::spawn(serve(projection, queue, wait));
        Self { asks }
    }

    /// The item's projected count and whether `user` likes it, or `None` when
    /// the lookup could not be made.
    pub async fn state(&self, user: UserId, item: ItemKey) -> Option<(i64, bool)> {
        let (reply, answer) = oneshot::channel();
        self.asks.try_send(Ask { user, item, reply }).ok()?;
        answer.await.ok()
    }
}

async fn serve(projection: Arc<Projection>, mut queue: mpsc::Receiver<Ask>, wait: Duration) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, queue.recv()).await {
                Ok(Some(ask)) => batch.push(ask),
                Ok(None) | Err(_) => break,
            }
        }
        let projection = projection.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let pairs: Vec<(UserId, ItemKey)> = batch.iter().map(|a| (a.user, a.item)).collect();
            let states = projection.states(&pairs).await;
            for (ask, state) in batch.into_iter().zip(states) {
                // Dropping a reply answers its ask with "no count".
                if let Some(state) = state {
                    let _ = ask.reply.send(state);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_waits_well_inside_the_producers_linger() {
        assert_eq!(
            batch_wait(Duration::from_millis(5)),
            Duration::from_millis(3)
        );
        assert_eq!(
            batch_wait(Duration::from_millis(1)),
            Duration::from_micros(600)
        );
        assert_eq!(batch_wait(Duration::ZERO), Duration::ZERO);
    }
}
