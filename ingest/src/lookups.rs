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
/// How long a batch waits for company after its first ask. The publish the
/// lookup runs beside takes longer than this (the producer's own linger is
/// 5 ms plus the broker's ack), so the wait costs the answer nothing.
const LINGER: Duration = Duration::from_millis(3);

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
    pub fn spawn(projection: Arc<Projection>) -> Self {
        let (asks, queue) = mpsc::channel(QUEUE);
        tokio::spawn(serve(projection, queue));
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

async fn serve(projection: Arc<Projection>, mut queue: mpsc::Receiver<Ask>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + LINGER;
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
