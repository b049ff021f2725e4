//! Read-your-writes waits, bounded in number and in database work.
//!
//! A count request with `after=<partition>:<offset>` waits until the projector
//! applied that offset. Every waiter shares one poller per ingest instance: it
//! reads all partitions' projected offsets in one query every [`POLL`], and
//! only while somebody waits, so a thousand waiters cost the database what one
//! does. The number of waiters is capped too (`READ_YOUR_WRITES_MAX_WAITERS`):
//! beyond it a request is refused at once with 503 and `Retry-After` instead of
//! queueing without bound. Tokens naming a partition the topic does not have
//! are the client's mistake (400), never a two-second wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use likes_domain::ValidationError;
use likes_infra::kafka::Publisher;
use likes_infra::postgres::{self, PgPool};
use tokio::sync::{Notify, OnceCell, Semaphore, watch};

use crate::ApiError;
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
    /// Starts the shared poller of `topic`'s projected offsets in `db`; at most
    /// `max_waiters` requests wait at once.
    pub fn spawn(db: PgPool, topic: String, max_waiters: usize) -> Self {
        let (publish, offsets) = watch::channel(Offsets::default());
        let waiting = Arc::new(AtomicUsize::new(0));
        let wake = Arc::new(Notify::new());
        tokio::spawn(poll(db, topic, publish, waiting.clone(), wake.clone()));
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
    db: PgPool,
    topic: String,
    publish: watch::Sender<Offsets>,
    waiting: Arc<AtomicUsize>,
    wake: Arc<Notify>,
) {
    loop {
        if waiting.load(Ordering::SeqCst) == 0 {
            wake.notified().await;
            continue;
        }
        match postgres::offsets::positions(&db, &topic).await {
            Ok(positions) => {
                let size = positions
                    .iter()
                    .map(|(p, _)| *p as usize + 1)
                    .max()
                    .unwrap_or(0);
                let mut offsets = vec![0; size];
                for (partition, next) in positions {
                    offsets[partition as usize] = next;
                }
                if publish.send(Arc::new(offsets)).is_err() {
                    return;
                }
            }
            // Waiters then run out their time and answer "not included".
            Err(e) => tracing::warn!(error = %e, "reading projected offsets failed"),
        }
        tokio::time::sleep(POLL).await;
    }
}
