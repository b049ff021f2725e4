//! Watches a projector's commits from outside: polls the sum of its stored
//! offsets every few milliseconds and records when it moved. The gap between
//! two observed commits is the projector's batch window plus however long its
//! commit waited (on a rebuild's swap, say), to within the polling period.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::task::JoinHandle;

/// How often the offsets are read.
const POLL: Duration = Duration::from_millis(10);

/// A running watch; `stop` returns the instants at which commits were seen.
pub struct CommitGaps {
    stop: Arc<AtomicBool>,
    task: JoinHandle<anyhow::Result<Vec<Instant>>>,
}

impl CommitGaps {
    /// Starts watching `topic`'s offsets in `db`.
    pub fn start(db: &PgPool, topic: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (db, topic, flag) = (db.clone(), topic.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = -1_i64;
            while !flag.load(Ordering::Relaxed) {
                let (sum,): (i64,) = sqlx::query_as(
                    "SELECT COALESCE(SUM(next_offset), 0)::bigint FROM projector_offsets
                     WHERE topic = $1",
                )
                .bind(&topic)
                .fetch_one(&db)
                .await?;
                if sum != last {
                    seen.push(Instant::now());
                    last = sum;
                }
                tokio::time::sleep(POLL).await;
            }
            Ok(seen)
        });
        Self { stop, task }
    }

    /// Stops the watch; returns when commits were seen, in order.
    pub async fn stop(self) -> anyhow::Result<Vec<Instant>> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

/// The longest gap between consecutive commits that ends within `from..=to`.
pub fn longest_gap(commits: &[Instant], from: Instant, to: Instant) -> Duration {
    commits
        .windows(2)
        .filter(|w| w[1] >= from && w[1] <= to)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default()
}
