//! The workers of `rebuild postgres`: each owns a disjoint set of partitions,
//! reads them with its own assigned consumer and writes the shadow tables on
//! its own PostgreSQL connection. An item's events all sit in one partition, so
//! workers never touch the same shadow rows and never wait on each other. Every
//! batch commits its rows together with its partitions' progress
//! ([`rebuild_progress`]): a kill loses at most the batch being written.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use likes_domain::{ItemKey, LikeEvent, Position, dedup_key};
use likes_infra::postgres::rebuild_progress;
use likes_infra::postgres::{self, PgConnection, PgPool};
use likes_infra::settings::StackSettings;
use tokio::task::JoinSet;

use crate::progress::{Progress, ProgressRead};
use likes_domain::DedupWindow;
use likes_infra::kafka::reader::{LogRecord, Span};

use crate::source::LogSource;

/// What a worker read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Records read.
    pub events: u64,
    /// Events whose id was seen within the dedup horizon: skipped.
    pub duplicates: u64,
    /// Undecodable records: skipped (the projector sends them to the DLQ).
    pub poison: u64,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Tally) {
        self.events += other.events;
        self.duplicates += other.duplicates;
        self.poison += other.poison;
    }
}

/// Per partition: the ids seen recently.
pub type Windows = HashMap<i32, DedupWindow>;

/// How the workers of a pass run.
#[derive(Debug, Clone, Copy)]
pub struct Crew {
    /// Parallel workers (at most one per partition with records to read).
    pub workers: usize,
    /// Records per shadow transaction.
    pub batch_events: usize,
    /// The dedup horizon of a partition's new window.
    pub horizon: std::time::Duration,
}

/// A pass over `spans` split among the crew's workers; each partition's dedup
/// window travels with it to its worker and back into `windows`.
pub async fn parallel_pass(
    stack: &StackSettings,
    pool: &PgPool,
    spans: &[Span],
    windows: &mut Windows,
    crew: Crew,
    progress: &Progress,
) -> anyhow::Result<Tally> {
    let mut tasks = JoinSet::new();
    for share in assign(spans, crew.workers) {
        let mut own: Windows = share
            .iter()
            .map(|s| {
                let w = windows.remove(&s.partition);
                (
                    s.partition,
                    w.unwrap_or_else(|| DedupWindow::new(crew.horizon)),
                )
            })
            .collect();
        let (stack, pool, progress) = (stack.clone(), pool.clone(), progress.clone());
        tasks.spawn(async move {
            let mut conn = pool.acquire().await?;
            let tally = apply_spans(
                &stack,
                &mut conn,
                &share,
                &mut own,
                crew.batch_events,
                &progress,
                Writing::OwnTransactions,
            )
            .await?;
            anyhow::Ok((tally, own))
        });
    }
    let mut total = Tally::default();
    // Dropping the set on an error aborts the other workers: nothing writes on.
    while let Some(done) = tasks.join_next().await {
        let (tally, own) = done.context("a rebuild worker panicked")??;
        total += tally;
        windows.extend(own);
    }
    Ok(total)
}

/// Splits spans among at most `workers` shares of about equal records, each
/// partition in exactly one share (largest first onto the lightest share).
pub fn assign(spans: &[Span], workers: usize) -> Vec<Vec<Span>> {
    let mut sorted: Vec<Span> = spans.iter().filter(|s| s.end > s.start).copied().collect();
    sorted.sort_by_key(|s| (std::cmp::Reverse(s.end - s.start), s.partition));
    let mut shares: Vec<(i64, Vec<Span>)> = vec![(0, Vec::new()); workers.max(1)];
    for span in sorted {
        if let Some(lightest) = shares.iter_mut().min_by_key(|(load, _)| *load) {
            lightest.0 += span.end - span.start;
            lightest.1.push(span);
        }
    }
    shares
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
        .collect()
}

/// How [`apply_spans`] writes.
pub enum Writing<'a> {
    /// A pass: each batch in a transaction of its own.
    OwnTransactions,
    /// The swap's tail: inside the caller's transaction, noting the item of
    /// every event read (the swap re-checks only those).
    InCallers { touched: &'a mut HashSet<ItemKey> },
}

/// Reads `spans` and applies them to the shadow tables on `conn`, recording
/// progress with the rows, as `writing` says.
pub async fn apply_spans(
    stack: &StackSettings,
    conn: &mut PgConnection,
    spans: &[Span],
    windows: &mut Windows,
    batch_events: usize,
    progress: &Progress,
    mut writing: Writing<'_>,
) -> anyhow::Result<Tally> {
    let own_tx = matches!(writing, Writing::OwnTransactions);
    let mut reader =
        ProgressRead::sharing(LogSource::open(stack)?, stack, spans, progress.clone())?;
    let mut tally = Tally::default();
    let mut batch = Batch {
        events: Vec::with_capacity(batch_events),
        reached: HashMap::new(),
        records: 0,
    };
    while let Some(record) = reader.next().await? {
        if let (Writing::InCallers { touched }, Ok(event)) = (&mut writing, &record.event) {
            touched.insert(event.item);
        }
        tally += sort(record, windows, &mut batch);
        if batch.records >= batch_events {
            batch.flush(conn, &stack.topic, own_tx).await?;
        }
    }
    // Every span was read to its end, gaps in the offsets included.
    for span in spans.iter().filter(|s| s.end > s.start) {
        batch.reached.insert(span.partition, span.end);
    }
    batch.flush(conn, &stack.topic, own_tx).await?;
    Ok(tally)
}

/// Puts one record into the batch (or counts why not).
fn sort(record: LogRecord, windows: &mut Windows, batch: &mut Batch) -> Tally {
    batch.records += 1;
    batch.reached.insert(record.partition, record.offset + 1);
    let mut tally = Tally {
        events: 1,
        ..Tally::default()
    };
    let millis = super::warmup::millis(&record);
    match record.event {
        Err(_) => tally.poison = 1,
        Ok(event) => {
            let fresh = windows
                .get_mut(&record.partition)
                .is_none_or(|w| w.first_sight(dedup_key(&event), millis));
            if fresh {
                let position = Position {
                    partition: record.partition,
                    offset: record.offset,
                };
                batch.events.push((position, event));
            } else {
                tally.duplicates = 1;
            }
        }
    }
    tally
}

/// Events waiting to be written, and how far their partitions were read.
struct Batch {
    events: Vec<(Position, LikeEvent)>,
    reached: HashMap<i32, i64>,
    records: usize,
}

impl Batch {
    async fn flush(
        &mut self,
        conn: &mut PgConnection,
        topic: &str,
        own_tx: bool,
    ) -> anyhow::Result<()> {
        if self.reached.is_empty() {
            return Ok(());
        }
        let reached: Vec<(i32, i64)> = self.reached.drain().collect();
        if own_tx {
            let mut tx = postgres::begin(conn).await?;
            rebuild_progress::write_batch(&mut tx, topic, &self.events, &reached).await?;
            tx.commit().await?;
        } else {
            rebuild_progress::write_batch(conn, topic, &self.events, &reached).await?;
        }
        self.events.clear();
        self.records = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(partition: i32, len: i64) -> Span {
        Span {
            partition,
            start: 10,
            end: 10 + len,
            log_start: 0,
            topic_start: 0,
        }
    }

    #[test]
    fn each_partition_goes_to_one_worker_and_loads_balance() {
        let spans = [
            span(0, 100),
            span(1, 60),
            span(2, 50),
            span(3, 0),
            span(4, 40),
        ];
        let shares = assign(&spans, 2);
        let loads: Vec<i64> = shares
            .iter()
            .map(|s| s.iter().map(|x| x.end - x.start).sum())
            .collect();
        assert_eq!(loads, vec![140, 110]);
        let mut partitions: Vec<i32> = shares.iter().flatten().map(|s| s.partition).collect();
        partitions.sort();
        assert_eq!(partitions, vec![0, 1, 2, 4], "empty spans need no worker");
    }

    #[test]
    fn there_are_never_more_workers_than_partitions_with_records() {
        assert_eq!(assign(&[span(0, 5)], 8).len(), 1);
        assert!(assign(&[], 4).is_empty());
    }
}
