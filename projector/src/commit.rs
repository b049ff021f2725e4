//! Writing a batch: fenced PostgreSQL transactions, one per part of the batch
//! (split by partition, written at once, each retried while the database is
//! away, never skipped), then Redis from the counts the
//! transaction returned, then Kafka's committed offsets for lag tooling. It
//! runs on its own task, one batch at a time in log order, while the next
//! batch is collected.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::join_all;
use likes_domain::ItemKey;
use likes_infra::Error;
use likes_infra::cache::CountCache;
use likes_infra::likers::RecentLikers;
use likes_infra::store::PgPool;
use likes_infra::store::writer::{self, Applied};
use rdkafka::consumer::{CommitMode, Consumer};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tracing::Instrument;

use crate::batch::{Batch, Part};
use crate::consumer::ProjectorConsumer;
use crate::ownership::{Ownership, ParkReason};
use crate::{parking, retry};

/// The writing half of the projector.
pub struct Writer {
    pub topic: String,
    /// How many transactions one batch is split into (`PROJECTOR_WRITERS`).
    pub writers: usize,
    pub consumer: Arc<ProjectorConsumer>,
    pub ownership: Arc<Ownership>,
    pub db: PgPool,
    pub cache: CountCache,
    pub likers: RecentLikers,
    /// Redis writes that failed, retried after the next batch (newest stamp wins).
    pub pending_cache: HashMap<ItemKey, (i64, i64)>,
}

impl Writer {
    /// Writes the batches handed over until the sender is dropped; each permit
    /// is released once its batch is written, telling the collector the writer
    /// is free.
    pub async fn run(mut self, mut batches: mpsc::Receiver<(Batch, OwnedSemaphorePermit)>) {
        while let Some((batch, permit)) = batches.recv().await {
            self.commit(batch).await;
            drop(permit);
        }
    }

    /// Writes the batch as `writers` transactions at once (each retried through
    /// transient failures), then Redis from what committed.
    async fn commit(&mut self, batch: Batch) {
        if batch.generation != self.ownership.generation() {
            // A rebalance happened since it was collected: its partitions were
            // claimed again (by us or another owner) and will be read again from
            // the claimed offsets, so writing it could only be fenced.
            tracing::info!(
                events = batch.events(),
                "batch from before a rebalance dropped"
            );
            return;
        }
        // Records of a partition parked by a failed write were collected after
        // the failure: writing them would commit past it.
        let batch = batch.without(&self.ownership.write_failed());
        if batch.is_empty() {
            return;
        }
        let span = tracing::info_span!(
            "batch",
            partitions = %batch.ranges(),
            events = batch.events(),
            poison = batch.poison,
            duplicates = tracing::field::Empty,
            changes = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty,
        );
        let started = batch.started;
        let generation = batch.generation;
        let events = batch.events();
        let parts = batch.split(self.writers);
        let results = join_all(parts.iter().map(|part| self.apply_part(part)))
            .instrument(span.clone())
            .await;
        let _enter = span.enter();
        // Parts commit on their own: whatever committed is projected to Redis
        // even when another part failed.
        let mut applied = Applied::default();
        let mut committed = Vec::new();
        let mut fenced = None;
        let mut broken = Vec::new();
        for (part, result) in parts.into_iter().zip(results) {
            match result {
                Ok(done) => self.committed(&part, done, &mut applied, &mut committed),
                Err(Error::Fenced { partition }) => fenced = fenced.or(Some(partition)),
                Err(e) => broken.push((part, e)),
            }
        }
        // A permanent failure (a constraint, a broken invariant) comes from one
        // partition's rows, but a part holds several: write them one by one, and
        // park only the partitions that fail alone. Rejoining instead would make
        // every instance rebalance, forever if the failure repeats.
        for (part, e) in broken {
            let singles = if part.commits.len() == 1 {
                vec![(part, Err(e))]
            } else {
                let singles = part.per_partition();
                let results = join_all(singles.iter().map(|single| self.apply_part(single)))
                    .instrument(span.clone())
                    .await;
                singles.into_iter().zip(results).collect()
            };
            for (single, result) in singles {
                match result {
                    Ok(done) => self.committed(&single, done, &mut applied, &mut committed),
                    Err(Error::Fenced { partition }) => fenced = fenced.or(Some(partition)),
                    Err(e) if generation != self.ownership.generation() => {
                        // Claimed again meanwhile: the new claim reads it again.
                        tracing::warn!(error = %e, "batch write failed permanently across a rebalance; the new claim retries it");
                    }
                    Err(e) => {
                        for c in &single.commits {
                            tracing::error!(error = %e, partition = c.partition, next_offset = c.next_offset, "batch write failed permanently");
                            parking::park(
                                &self.consumer,
                                &self.ownership,
                                &self.topic,
                                c.partition,
                                ParkReason::WriteFailed,
                            );
                        }
                    }
                }
            }
        }
        if !committed.is_empty() {
            self.after_commit(&applied, &committed).await;
        }
        match fenced {
            None => {
                span.record("duplicates", applied.duplicates);
                span.record("changes", applied.changes.len());
                span.record("elapsed_ms", started.elapsed().as_millis() as u64);
                metrics::counter!(crate::metrics::BATCHES).increment(1);
                metrics::counter!(crate::metrics::EVENTS).increment(events as u64);
                metrics::counter!(crate::metrics::DUPLICATES).increment(applied.duplicates as u64);
                metrics::histogram!(crate::metrics::BATCH_SECONDS)
                    .record(started.elapsed().as_secs_f64());
                tracing::info!(
                    liked = applied.liked,
                    unliked = applied.unliked,
                    counters = applied.counts.len(),
                    "batch committed"
                );
            }
            Some(partition) if generation != self.ownership.generation() => {
                // Claimed again while we wrote: the new claim already set where
                // the partitions resume, nothing to undo.
                metrics::counter!(crate::metrics::FENCED).increment(1);
                tracing::info!(partition, "batch fenced by a claim made meanwhile; dropped");
            }
            Some(partition) => {
                metrics::counter!(crate::metrics::FENCED).increment(1);
                tracing::warn!(
                    partition,
                    "batch fenced by a newer owner; dropped, rejoining"
                );
                self.ownership.revoke_all();
                self.ownership.request_rejoin();
            }
        }
    }

    /// One part in one transaction, retried while the failure is transient.
    async fn apply_part(&self, part: &Part) -> Result<Applied, Error> {
        retry::counted("batch write", Some(crate::metrics::WRITE_RETRIES), || {
            writer::apply_batch(&self.db, &self.topic, &part.commits, &part.events)
        })
        .await
    }

    /// Notes a part that committed: its partitions advance, and what it did is
    /// projected to Redis with the rest of the batch.
    fn committed(
        &self,
        part: &Part,
        done: Applied,
        applied: &mut Applied,
        committed: &mut Vec<writer::OffsetCommit>,
    ) {
        for c in &part.commits {
            self.ownership.advance(c.partition, c.next_offset);
        }
        committed.extend_from_slice(&part.commits);
        applied.merge(done);
    }

    /// Redis and Kafka's committed offsets, both best effort after PostgreSQL.
    async fn after_commit(&mut self, applied: &Applied, commits: &[writer::OffsetCommit]) {
        for c in &applied.counts {
            let entry = self
                .pending_cache
                .entry(c.item)
                .or_insert((c.count, c.last_offset));
            if c.last_offset >= entry.1 {
                *entry = (c.count, c.last_offset);
            }
        }
        let updates: Vec<(ItemKey, i64, i64)> = self
            .pending_cache
            .iter()
            .map(|(item, (count, stamp))| (*item, *count, *stamp))
            .collect();
        match self.cache.put_counts(&updates).await {
            Ok(()) => self.pending_cache.clear(),
            Err(e) => {
                metrics::counter!(crate::metrics::REDIS_FAILURES).increment(1);
                tracing::warn!(error = %e, pending = updates.len(), "redis update failed; will retry after the next batch")
            }
        }
        // Recent likers are user experience only: a failure is logged, never retried.
        if let Err(e) = self.likers.apply(&applied.changes).await {
            metrics::counter!(crate::metrics::REDIS_FAILURES).increment(1);
            tracing::warn!(error = %e, "recent likers update failed");
        }
        // Kafka's own offsets are only for lag tooling; PostgreSQL holds the truth.
        let mut tpl = rdkafka::TopicPartitionList::new();
        for c in commits {
            let _ = tpl.add_partition_offset(
                &self.topic,
                c.partition,
                rdkafka::Offset::Offset(c.next_offset),
            );
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "kafka offset commit (for tooling) failed");
        }
    }
}
