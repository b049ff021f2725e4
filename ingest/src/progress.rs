//! Read-your-writes waits, bounded in number and in database work.
//!
//! A count request with `after=<partition>:<offset>` waits until the projector
//! applied that offset. Every waiter shares one poller per ingest instance: it
//! reads all partitions' projected offsets every [`POLL`], one query per shard
//! (each partition's offset from the shard that owns it, the shards asked
//! concurrently), and only while somebody waits, so a thousand waiters cost
//! the database what one does. A shard that does not answer keeps its
//! partitions' last reading: their waiters run out their time. The number of waiters is capped too (`READ_YOUR_WRITES_MAX_WAITERS`):
//! beyond it a request is refused at once with 503 and `Retry-After` instead of
//! queueing without bound. Tokens naming a partition the topic does not have
//! are the client's mistake (400), never a two-second wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use likes_domain::ValidationError;
use likes_infra::kafka::Publisher;
use tokio::sync::{Notify, OnceCell, Semaphore, watch};

use crate::ApiError;
use crate::projection::Projection;
use crate::query::Token;

/// How often the shared poller reads the projected offsets while anyone waits.
const POLL: Duration = Duration::from_millis(50);

/// Each partition's next offset to project, as last read (index = partition).
type Offsets = Arc<Vec<i64>>;

/// The read-your-writes waits of one ingest instance.
pub struct Progress {
    partitions: OnceCell<i32>,
    waiters: Arc<Semaphore>,
    waiting: Arc<AtomicUsize>,
    wake: Arc<Notify>,
    offsets: watch::Receiver<Offsets>,
}

impl Progress {
    /// Starts the shared poller of the projected offsets on every shard; at
    /// most `max_waiters` requests wait at once.
    pub fn spawn(projection: Arc<Projection>, max_waiters: usize) -> Self {
        let (publish, offsets) = watch::channel(Offsets::default());
        let waiting = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(Notify::new());
        tokio::spawn(poll(projection, publish, waiting.clone(), wake.clone()));
        Self {
            partitions: OnceCell::new(),
            waiters: Arc::new(Semaphore::new(max_waiters)),
            waiting,
            wake,
            offsets,
        }
    }

    /// Refuses a token whose partition the topic does not have. The partition
    /// count is fixed for the topic's life, so it is read from the broker once.
    pub async fn check(&self, publisher: &Publisher, token: Token) -> Result<(), ApiError> {
        let partitions = self
            .partitions
            .get_or_try_init(|| publisher.partition_count())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "topic metadata unavailable");
                ApiError::Unavailable("topic metadata unavailable".into())
            })?;
        let Token(position) = token;
        if position.partition >= *partitions {
            return Err(ApiError::Invalid(ValidationError {
                field: "after",
                message: format!(
                    "names partition {}, but the topic has {partitions} (0 to {})",
                    position.partition,
                    partitions - 1
                ),
            }));
        }
        Ok(())
    }

    /// Whether the projector applied `token`'s offset within `timeout`.
    pub async fn wait(&self, token: Token, timeout: Duration) -> Result<bool, ApiError> {
        let Token(position) = token;
        let _permit = self
            .waiters
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::Overloaded)?;
        let _waiting = Waiting::enter(&self.waiting, &self.wake);
        let mut offsets = self.offsets.clone();
        // The value on hand may be from long ago: wait for a fresh reading.
        offsets.mark_unchanged();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                changed = offsets.changed() => {
                    if changed.is_err() {
                        return Err(ApiError::Internal("offset poller stopped".into()));
                    }
                    let applied = offsets
                        .borrow_and_update()
                        .get(position.partition as usize)
                        .copied();
                    if applied.is_some_and(|next| next > position.offset) {
                        return Ok(true);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => return Ok(false),
            }
        }
    }
}

/// Counts a request as waiting while it lives, and wakes the poller.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn enter(count: &'a AtomicUsize, wake: &Notify) -> Self {
        count.fetch_add(1, Ordering::SeqCst);
        wake.notify_one();
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The shared poller: sleeps while nobody waits, else reads every partition's
/// projected offset once per [`POLL`] and publishes it to the waiters.
async fn poll(
    projection: Arc<Projection>,
    publish: watch::Sender<Offsets>,
    waiting: Arc<AtomicUsize>,
    wake: Arc<Notify>,
) {
    // Each partition's last reading (index = partition), kept across polls
    // so a shard that fails once does not move its partitions back.
    let mut offsets: Vec<i64> = Vec::new();
    loop {
        if waiting.load(Ordering::SeqCst) == 0 {
            wake.notified().await;
            continue;
        }
        let mut answered = false;
        for shard in projection.positions().await {
            match shard {
                Ok(positions) => {
                    answered = true;
                    for (partition, next) in positions {
                        let Ok(index) = usize::try_from(partition) else {
                            continue;
                        };
                        if offsets.len() <= index {
                            offsets.resize(index + 1, 0);
                        }
                        offsets[index] = next;
                    }
                }
                // Waiters on its partitions then run out their time and
                // answer "not included".
                Err(e) => {
                    tracing::warn!(error = %e, shard = e.shard(), "reading projected offsets failed")
                }
            }
        }
        if answered && publish.send(Arc::new(offsets.clone())).is_err() {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}
