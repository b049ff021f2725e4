//! The optimistic count's lookups, batched. Every accepted like wants the
//! item's projected count and whether the user already likes it; asking
//! PostgreSQL twice per request would make the database the ceiling of the
//! whole API. Here concurrent asks queue on a
//! channel and go out as one `UNNEST` query per shard per batch (the shards
//! asked concurrently), a few batches in flight,
//! so the database sees tens of statements per second instead of thousands, and
//! a lone ask still costs one round trip. Best effort: when the queue is full,
//! PostgreSQL fails or [`BUDGET`] passes, the answer simply goes without a
//! count.
//!
//! The budget is kept per batch, not per ask: a batch's query is bounded by
//! its first (oldest) ask's budget, which ends no later than any other ask's
//! in it, so every ask is answered within its own budget with one timer per
//! batch instead of one per like (a timer per request was a tenth of the
//! lookup's CPU in a profile of the single like).

use std::sync::Arc;
use std::time::Duration;

use crate::projection::Projection;

use likes_domain::{ItemKey, UserId};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;

/// How long a like's answer waits for its lookup before it goes without the
/// optimistic count.
pub const BUDGET: Duration = Duration::from_millis(250);

/// Asks waiting at most; beyond, requests go without an optimistic count.
const QUEUE: usize = 16_384;
/// The most pairs one query carries.
const MAX_BATCH: usize = 1_024;
/// Queries in flight at once; while all are busy, asks pile up into the next
/// batch, which is what keeps the statement rate low under load.
pub const IN_FLIGHT: usize = 2;
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
    asked: Instant,
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
    /// the lookup could not be made within [`BUDGET`].
    pub async fn state(&self, user: UserId, item: ItemKey) -> Option<(i64, bool)> {
        let (reply, answer) = oneshot::channel();
        let asked = Instant::now();
        self.asks
            .try_send(Ask {
                user,
                item,
                asked,
                reply,
            })
            .ok()?;
        answer.await.ok()
    }
}

async fn serve(projection: Arc<Projection>, mut queue: mpsc::Receiver<Ask>, wait: Duration) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (gathered_by, deadline) = (first.asked + wait, first.asked + BUDGET);
        let mut batch = vec![first];
        gather(&mut queue, &mut batch, gathered_by).await;
        let projection = projection.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // Dropping a reply answers its ask with "no count".
            if Instant::now() >= deadline {
                return;
            }
            let pairs: Vec<(UserId, ItemKey)> = batch.iter().map(|a| (a.user, a.item)).collect();
            let Ok(states) = tokio::time::timeout_at(deadline, projection.states(&pairs)).await
            else {
                return;
            };
            for (ask, state) in batch.into_iter().zip(states) {
                if let Some(state) = state {
                    let _ = ask.reply.send(state);
                }
            }
        });
    }
}

/// Adds asks to `batch` until it is full or `until` passes: first those
/// already queued, then those arriving before `until`, under one timer.
async fn gather(queue: &mut mpsc::Receiver<Ask>, batch: &mut Vec<Ask>, until: Instant) {
    let timer = tokio::time::sleep_until(until);
    tokio::pin!(timer);
    while batch.len() < MAX_BATCH {
        match queue.try_recv() {
            Ok(ask) => {
                batch.push(ask);
                continue;
            }
            Err(TryRecvError::Disconnected) => return,
            Err(TryRecvError::Empty) if Instant::now() >= until => return,
            Err(TryRecvError::Empty) => {}
        }
        tokio::select! {
            biased;
            ask = queue.recv() => match ask {
                Some(ask) => batch.push(ask),
                None => return,
            },
            () = &mut timer => return,
        }
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
