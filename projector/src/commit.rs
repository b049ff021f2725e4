//! Writing a shard's batch: fenced PostgreSQL transactions on that shard, one
//! per part of the batch (split by partition, written at once, each retried
//! while the database is away, never skipped), then Redis from the counts the
//! transaction returned, then Kafka's committed offsets for lag tooling. Each
//! shard has its own writer on its own task, one batch at a time in log
//! order, while the next batch is collected; a shard that is slow or away
//! holds only its own writer, never another shard's.
//!
//! Why the shards need nothing in common to stay exact: every transaction
//! holds whole partitions of one shard with their offsets and epochs (which
//! live in that shard), so each commits or rolls back alone, exactly as with
//! one database; a partition belongs to one shard, so its batches go through
//! one writer, in order. A batch collected across shards is several
//! independent batches: after a crash one shard may have committed its part
//! and another not, and each resumes from its own stored offsets. Redis gets
//! absolute counts stamped with their offset after PostgreSQL, per shard, and
//! each writer keeps the Redis marks of its own partitions only.
//!
//! Redis is brought to the committed counts after any restart or retry: a
//! batch applied again (its commit reply was lost) returns the re-read counts
//! of its duplicates' items, and per partition PostgreSQL records the log time
//! below which Redis is known current (folded into the next batch's
//! transaction). A new owner first re-reads the items applied since then into
//! Redis ([`Writer::refresh_claimed`]), so a Redis write lost with a stopped or
//! crashed process is made good. On shutdown a batch whose database is away is
//! abandoned uncommitted (the next owner reads it again) rather than retried
//! forever, and pending Redis writes get a last try.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use likes_domain::Position;
use likes_domain::{DedupHorizon, ItemKey};
use likes_infra::postgres::writer::{self, Applied, BatchRules, CountUpdate};
use likes_infra::postgres::{PgPool, offsets};
use likes_infra::redis::FAILOVER_LOOKBACK;
use likes_infra::redis::counts::CountCache;
use likes_infra::redis::likers::RecentLikers;
use likes_infra::{Error, retry};
use tokio::sync::{OwnedSemaphorePermit, mpsc, watch};
use tracing::Instrument;

use likes_infra::postgres::shards::ShardMap;

use crate::batch::{Batch, Part};
use crate::consumer::ProjectorConsumer;
use crate::ownership::{Ownership, ParkReason};
use crate::parking;

/// The writing half of the projector, for one shard.
pub struct Writer {
    /// The shard written (its index in `DATABASE_URLS`) and the map that says
    /// which partitions are its.
    pub shard: usize,
    pub map: ShardMap,
    pub topic: String,
    /// How many transactions one batch is split into (`PROJECTOR_WRITERS`).
    pub writers: usize,
    pub consumer: Arc<ProjectorConsumer>,
    pub ownership: Arc<Ownership>,
    /// The shard's pool.
    pub db: PgPool,
    pub cache: CountCache,
    pub likers: RecentLikers,
    /// `DEDUP_HORIZON_SECONDS`.
    pub horizon: DedupHorizon,
    /// Redis writes that failed, retried after the next batch or within a
    /// second (newest stamp wins).
    pub pending_cache: HashMap<ItemKey, (i64, i64)>,
    /// Per owned partition, the log time below which Redis is known current.
    pub cache_marks: HashMap<i32, i64>,
    /// Log times reached by batches whose Redis write has not succeeded yet.
    pub pending_marks: HashMap<i32, i64>,
    /// The oldest record time of each committed partition of each batch whose
    /// Redis write is not confirmed yet: once it is, each is one observation
    /// of append-to-visible ([`crate::metrics::FRESHNESS_SECONDS`]).
    pub pending_freshness: Vec<i64>,
    /// The claims' version ([`Ownership::version`]) whose partitions of this
    /// shard had their Redis counts refreshed.
    pub refreshed: Option<u64>,
    /// A Redis write failed since the last refresh: the next refresh reaches
    /// back [`FAILOVER_LOOKBACK`] further, for writes a dead primary
    /// acknowledged but never replicated.
    pub redis_failed: bool,
    /// Becomes `true` when the projector is asked to stop.
    pub stop: watch::Receiver<bool>,
}

/// How long a write in flight may still finish once a stop was asked, and
/// the bound of each last Redis or PostgreSQL word on the way out: together
/// they keep a SIGTERM well inside 15 seconds even with PostgreSQL away.
const STOP_GRACE: Duration = Duration::from_secs(4);
const LAST_WORD: Duration = Duration::from_secs(2);

/// How many append-to-visible observations wait for a Redis write at most.
const MAX_PENDING_FRESHNESS: usize = 4096;

impl Writer {
    /// Writes the batches handed over until the sender is dropped; each permit
    /// is released once its batch is written, telling the collector the writer
    /// is free.
    pub async fn run(mut self, mut batches: mpsc::Receiver<(Batch, OwnedSemaphorePermit)>) {
        let mut tick = tokio::time::interval(retry::REDIS_CATCH_UP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                next = batches.recv() => {
                    let Some((batch, permit)) = next else { break };
                    self.refresh_claimed().await;
                    self.commit(batch).await;
                    drop(permit);
                }
                _ = tick.tick() => {
                    self.refresh_claimed().await;
                    if !self.pending_cache.is_empty() && !self.stopping() {
                        self.flush_pending(self.ownership.version()).await;
                    }
                }
            }
        }
        self.last_words().await;
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// Resolves once a stop was asked (or whoever could ask is gone).
    async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stopping| *stopping).await;
    }

    /// Runs `op` to the end, unless a stop is asked and it does not end within
    /// [`STOP_GRACE`] after that: `None`.
    async fn unless_stopped<T>(&self, op: impl Future<Output = T>) -> Option<T> {
        let mut op = std::pin::pin!(op);
        tokio::select! {
            done = &mut op => Some(done),
            _ = self.stopped() => tokio::time::timeout(STOP_GRACE, op).await.ok(),
        }
    }

    /// After a (re)assignment, before anything else is written: puts into
    /// Redis the committed counts of every item applied in the owned partitions
    /// since Redis was last known current there. Retried each
    /// [`retry::REDIS_CATCH_UP_EVERY`] until it succeeds; until then no partition's Redis mark moves.
    async fn refresh_claimed(&mut self) {
        let version = self.ownership.version();
        if self.refreshed == Some(version) || self.stopping() {
            return;
        }
        let claims: Vec<(i32, i64)> = self
            .claims()
            .iter()
            .map(|c| (c.next.partition, c.epoch))
            .collect();
        let lookback = if self.redis_failed {
            FAILOVER_LOOKBACK
        } else {
            Duration::ZERO
        };
        let read = offsets::cache_refresh(&self.db, &self.topic, &claims, lookback);
        let refresh = match self.unless_stopped(read).await {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, shard = self.shard, "reading the counts to refresh in redis failed; retrying");
                return;
            }
            Some(Ok(refresh)) => refresh,
        };
        let updates = refresh.counts;
        match self.cache.put_counts(&updates).await {
            Ok(()) => {
                self.refreshed = Some(version);
                self.redis_failed = false;
                self.cache_marks = refresh.current_until.into_iter().collect();
                self.pending_marks.clear();
                tracing::info!(
                    shard = self.shard,
                    partitions = claims.len(),
                    items = updates.len(),
                    "redis counts of the claimed partitions refreshed"
                );
            }
            Err(e) => {
                metrics::counter!(crate::metrics::REDIS_FAILURES).increment(1);
                tracing::warn!(error = %e, items = updates.len(), "redis refresh of the claimed partitions failed; retrying");
            }
        }
    }

    /// On the way out: the pending Redis writes get a last try, and the Redis
    /// marks reached are recorded, each bounded by [`LAST_WORD`].
    async fn last_words(&mut self) {
        if !self.pending_cache.is_empty() {
            let version = self.ownership.version();
            if tokio::time::timeout(LAST_WORD, self.flush_pending(version))
                .await
                .is_err()
            {
                tracing::warn!(
                    pending = self.pending_cache.len(),
                    "redis did not answer on shutdown; the next owner refreshes these counts"
                );
            }
        }
        if self.refreshed != Some(self.ownership.version()) {
            return;
        }
        let marks: Vec<(i32, i64, i64)> = self
            .claims()
            .iter()
            .filter_map(|c| {
                self.cache_marks
                    .get(&c.next.partition)
                    .map(|t| (c.next.partition, c.epoch, *t))
            })
            .collect();
        if marks.is_empty() {
            return;
        }
        let record = offsets::record_cache_marks(&self.db, &self.topic, &marks);
        match tokio::time::timeout(LAST_WORD, record).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "recording the redis marks on shutdown failed")
            }
            Err(_) => tracing::warn!("recording the redis marks on shutdown timed out"),
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
            shard = self.shard,
            partitions = %batch.ranges(),
            events = batch.events(),
            poison = batch.poison,
            duplicates = tracing::field::Empty,
            changes = tracing::field::Empty,
            elapsed_ms = tracing::field::Empty,
        );
        // Instrumented, never entered with a guard: a guard held across an
        // await leaves the span on the worker thread's stack for whatever
        // task runs there next (wrong parents, and tracing-subscriber's
        // "tried to clone a span that already closed" panic).
        self.write(batch, &span).instrument(span.clone()).await
    }

    /// [`Self::commit`] inside the batch's span.
    async fn write(&mut self, batch: Batch, span: &tracing::Span) {
        let started = batch.started;
        let generation = batch.generation;
        let events = batch.events();
        let oldest = batch.oldest_record_times();
        let parts = batch.split(self.writers);
        let writing = std::time::Instant::now();
        let results = join_all(parts.iter().map(|part| self.apply_part(part))).await;
        let write_seconds = writing.elapsed().as_secs_f64();
        // Parts commit on their own: whatever committed is projected to Redis
        // even when another part failed.
        let mut applied = Applied::default();
        let mut committed = Vec::new();
        let mut fenced = None;
        let mut broken = Vec::new();
        let mut abandoned = false;
        for (part, result) in parts.into_iter().zip(results) {
            let Some(result) = result else {
                abandoned = true;
                continue;
            };
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
                vec![(part, Some(Err(e)))]
            } else {
                let singles = part.per_partition();
                let results = join_all(singles.iter().map(|single| self.apply_part(single))).await;
                singles.into_iter().zip(results).collect()
            };
            for (single, result) in singles {
                let Some(result) = result else {
                    abandoned = true;
                    continue;
                };
                match result {
                    Ok(done) => self.committed(&single, done, &mut applied, &mut committed),
                    Err(Error::Fenced { partition }) => fenced = fenced.or(Some(partition)),
                    Err(e) if generation != self.ownership.generation() => {
                        // Claimed again meanwhile: the new claim reads it again.
                        tracing::warn!(error = %e, "batch write failed permanently across a rebalance; the new claim retries it");
                    }
                    Err(e) => {
                        for c in &single.commits {
                            tracing::error!(error = %e, partition = c.next.partition, next_offset = c.next.offset, "batch write failed permanently");
                            parking::park(
                                &self.consumer,
                                &self.ownership,
                                c.next.partition,
                                ParkReason::WriteFailed,
                            );
                        }
                    }
                }
            }
        }
        if !committed.is_empty() {
            // Bounded while Redis is away: the oldest observations (the worst) are kept.
            let room = MAX_PENDING_FRESHNESS.saturating_sub(self.pending_freshness.len());
            self.pending_freshness.extend(
                committed
                    .iter()
                    .filter_map(|c| oldest.get(&c.next.partition).copied())
                    .take(room),
            );
            self.after_commit(&applied, &committed, self.ownership.version())
                .await;
        }
        if abandoned {
            // Uncommitted parts are read again by the next owner from the
            // stored offsets; committed ones are whole transactions.
            tracing::warn!(
                committed_partitions = committed.len(),
                "stopping: batch parts not committed were abandoned"
            );
            return;
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
                metrics::histogram!(crate::metrics::BATCH_EVENTS).record(events as f64);
                metrics::histogram!(crate::metrics::COMMIT_SECONDS).record(write_seconds);
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

    /// One part in one transaction, retried while the failure is transient;
    /// `None` when a stop was asked and it did not end within [`STOP_GRACE`]
    /// (abandoned uncommitted: the next owner reads it again).
    async fn apply_part(&self, part: &Part) -> Option<Result<Applied, Error>> {
        let cached_until: Vec<(i32, i64)> =
            self.cache_marks.iter().map(|(p, t)| (*p, *t)).collect();
        let rules = BatchRules {
            horizon: self.horizon,
            cached_until: &cached_until,
        };
        let write = retry::run(
            &retry::TRANSIENT,
            "batch write",
            Error::is_transient,
            |_| metrics::counter!(crate::metrics::WRITE_RETRIES).increment(1),
            || writer::apply_batch(&self.db, &self.topic, &part.commits, &part.events, rules),
        );
        self.unless_stopped(write).await
    }

    /// The claims owned now in this shard.
    fn claims(&self) -> Vec<likes_infra::postgres::offsets::Claim> {
        self.ownership
            .claims()
            .into_iter()
            .filter(|c| self.map.shard_of(c.next.partition) == self.shard)
            .collect()
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
            self.ownership.advance(c.next);
        }
        committed.extend_from_slice(&part.commits);
        applied.merge(done);
    }

    /// Redis and Kafka's committed offsets, both best effort after PostgreSQL.
    async fn after_commit(
        &mut self,
        applied: &Applied,
        commits: &[writer::OffsetCommit],
        version: u64,
    ) {
        for c in &applied.counts {
            let entry = self
                .pending_cache
                .entry(c.item)
                .or_insert((c.count, c.last_offset));
            if c.last_offset >= entry.1 {
                *entry = (c.count, c.last_offset);
            }
        }
        for (partition, log_time) in &applied.log_times {
            let mark = self.pending_marks.entry(*partition).or_insert(*log_time);
            *mark = (*mark).max(*log_time);
            metrics::gauge!(crate::metrics::APPLIED_TIMESTAMP, "partition" => partition.to_string())
                .set(*log_time as f64 / 1000.0);
        }
        self.flush_pending(version).await;
        // Recent likers are user experience only: a failure is logged, never retried.
        if let Err(e) = self.likers.apply(&applied.changes).await {
            metrics::counter!(crate::metrics::REDIS_FAILURES).increment(1);
            tracing::warn!(error = %e, "recent likers update failed");
        }
        // Kafka's own offsets are only for lag tooling; PostgreSQL holds the truth.
        let next: Vec<Position> = commits.iter().map(|c| c.next).collect();
        if let Err(e) = self.consumer.commit(&next) {
            tracing::debug!(error = %e, "kafka offset commit (for tooling) failed");
        }
    }

    /// Writes the pending counts to Redis; once they are all in, the batches
    /// behind them are current in Redis, which moves the partitions' marks
    /// (only after the refresh of the claims in this version: before it, older writes may be
    /// missing).
    async fn flush_pending(&mut self, version: u64) {
        let updates: Vec<CountUpdate> = self
            .pending_cache
            .iter()
            .map(|(item, (count, stamp))| CountUpdate {
                item: *item,
                count: *count,
                last_offset: *stamp,
            })
            .collect();
        match self.cache.put_counts(&updates).await {
            Ok(()) => {
                self.pending_cache.clear();
                let visible_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                for appended_ms in self.pending_freshness.drain(..) {
                    let waited = (visible_ms - appended_ms).max(0) as f64 / 1000.0;
                    metrics::histogram!(crate::metrics::FRESHNESS_SECONDS).record(waited);
                }
                let reached = std::mem::take(&mut self.pending_marks);
                if self.refreshed == Some(version) {
                    for (partition, log_time) in reached {
                        let mark = self.cache_marks.entry(partition).or_insert(log_time);
                        *mark = (*mark).max(log_time);
                    }
                }
            }
            Err(e) => {
                metrics::counter!(crate::metrics::REDIS_FAILURES).increment(1);
                tracing::warn!(error = %e, pending = updates.len(), "redis update failed; will retry");
                // Once Redis answers again, everything applied shortly before
                // this failure is put again (a failover may have lost it).
                self.redis_failed = true;
                self.refreshed = None;
            }
        }
    }
}
