//! The projector's loop: collect a batch for one window, decode and fold it,
//! write it to PostgreSQL in one fenced transaction (retrying while the
//! database is away, never skipping), then refresh Redis from the counts the
//! transaction returned.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use likes_domain::{ItemKey, Position};
use likes_infra::cache::CountCache;
use likes_infra::codec::EventCodec;
use likes_infra::likers::RecentLikers;
use likes_infra::store::writer::{self, Applied};
use likes_infra::store::{self, PgPool};
use likes_infra::{Error, kafka};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer};
use tracing::Instrument;

use crate::background::{prune_forever, retry_forever};
use crate::batch::{Batch, Offer};
use crate::consumer::{ProjectorConsumer, ProjectorContext};
use crate::dead_letters::DeadLetters;
use crate::ownership::{Claimer, Ownership};
use crate::{ProjectorError, Settings};

/// Everything the loop works with.
struct Projector {
    settings: Settings,
    consumer: ProjectorConsumer,
    ownership: Arc<Ownership>,
    codec: EventCodec,
    db: PgPool,
    cache: CountCache,
    likers: RecentLikers,
    dead_letters: DeadLetters,
    /// Redis writes that failed, retried after the next batch (newest stamp wins).
    pending_cache: HashMap<ItemKey, (i64, i64)>,
}

/// Runs the projector until `shutdown` resolves. The batch being written when
/// it does is finished first; the batch being collected is dropped (it was not
/// committed, so the next owner reads it again).
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProjectorError> {
    let stack = &settings.stack;
    let db = store::connect_lazy(&stack.database_url, stack.database_max_connections)?;
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        result = retry_forever("migrate", || store::migrate(&db)) => result,
    }
    let cache = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        cache = retry_forever("redis connect", || CountCache::connect(&stack.redis_url, &stack.redis_key_prefix)) => cache,
    };
    let ownership = Arc::new(Ownership::default());
    let claimer = Claimer::spawn(&stack.database_url, &stack.topic)?;
    let context = ProjectorContext::new(&stack.topic, claimer, ownership.clone());
    let consumer: ProjectorConsumer =
        kafka::consumer_config(&stack.kafka_bootstrap, &settings.group_id)
            .create_with_context(context)?;
    consumer.subscribe(&[&stack.topic])?;
    let mut projector = Projector {
        codec: EventCodec::new(&stack.schema_registry_url, &stack.topic)?,
        dead_letters: DeadLetters::new(&stack.kafka_bootstrap, stack.dlq_topic())?,
        settings: settings.clone(),
        consumer,
        ownership,
        db,
        likers: RecentLikers::new(
            cache.connection(),
            &stack.redis_key_prefix,
            likes_infra::likers::DEFAULT_KEEP,
        ),
        cache,
        pending_cache: HashMap::new(),
    };
    let metrics_server = match (settings.metrics_addr, crate::metrics::install()) {
        (Some(addr), Some(handle)) => Some(tokio::spawn(crate::metrics::serve(addr, handle))),
        _ => None,
    };
    let pruner = tokio::spawn(prune_forever(projector.db.clone(), settings.dedup_horizon));
    tracing::info!(topic = %settings.stack.topic, group = %settings.group_id, "projector started");
    loop {
        let batch = tokio::select! {
            _ = &mut shutdown => break,
            batch = projector.collect() => batch,
        };
        if let Some(batch) = batch {
            projector.commit(batch).await;
        }
    }
    pruner.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    projector.consumer.unsubscribe();
    tracing::info!("projector stopped");
    Ok(())
}

impl Projector {
    /// Collects one window's worth of records (or fewer when the window ends
    /// with nothing). Returns `None` when there is nothing to commit.
    async fn collect(&mut self) -> Option<Batch> {
        if self.ownership.take_rejoin() {
            tracing::warn!("rejoining the consumer group");
            self.consumer.unsubscribe();
            if let Err(e) = self.consumer.subscribe(&[&self.settings.stack.topic]) {
                tracing::error!(error = %e, "resubscribe failed");
            }
        }
        let mut batch = Batch::new(self.ownership.generation());
        let mut deadline = tokio::time::Instant::now() + self.settings.window;
        while batch.len() < self.settings.max_batch_events {
            let message = match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
                Ok(Ok(message)) => message,
            };
            if batch.generation != self.ownership.generation() {
                // A rebalance happened: what we hold was not committed and will be
                // read again from the claimed offsets.
                batch = Batch::new(self.ownership.generation());
            }
            let position = Position {
                partition: message.partition(),
                offset: message.offset(),
            };
            let first = batch.is_empty();
            if batch.admit(&self.ownership, position) == Offer::Stale {
                continue;
            }
            if first {
                // The window runs from the first record, so a quiet topic does not
                // delay the first like of a burst by a whole window.
                deadline = tokio::time::Instant::now() + self.settings.window;
                batch.started = Instant::now();
            }
            let decoded = retry_forever("decode", || async {
                match self.codec.decode(message.payload()).await {
                    Err(Error::Poison(reason)) => Ok(Err(reason)),
                    Ok(event) => Ok(Ok(event)),
                    Err(e) => Err(e),
                }
            })
            .await;
            match decoded {
                Ok(event) => batch.push(position, event),
                Err(reason) => {
                    tracing::warn!(partition = position.partition, offset = position.offset, %reason, "poison record sent to the dead-letter topic");
                    retry_forever("dead letter", || self.dead_letters.send(&message, &reason))
                        .await;
                    metrics::counter!(crate::metrics::POISON).increment(1);
                    batch.poison += 1;
                }
            }
        }
        (!batch.is_empty()).then_some(batch)
    }

    /// Writes the batch (retrying transient failures), then Redis.
    async fn commit(&mut self, batch: Batch) {
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
        let (commits, events) = batch.finish();
        let topic = self.settings.stack.topic.clone();
        let result = async {
            let mut delay = Duration::from_millis(100);
            loop {
                match writer::apply_batch(&self.db, &topic, &commits, &events).await {
                    Ok(applied) => return Ok(applied),
                    Err(e) if e.is_transient() => {
                        metrics::counter!(crate::metrics::WRITE_RETRIES).increment(1);
                        tracing::warn!(error = %e, "batch write failed, retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(5));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        .instrument(span.clone())
        .await;
        let _enter = span.enter();
        match result {
            Ok(applied) => {
                for c in &commits {
                    self.ownership.advance(c.partition, c.next_offset);
                }
                self.after_commit(&applied, &commits).await;
                span.record("duplicates", applied.duplicates);
                span.record("changes", applied.changes.len());
                span.record("elapsed_ms", started.elapsed().as_millis() as u64);
                metrics::counter!(crate::metrics::BATCHES).increment(1);
                metrics::counter!(crate::metrics::EVENTS).increment(events.len() as u64);
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
            Err(Error::Fenced { partition }) => {
                metrics::counter!(crate::metrics::FENCED).increment(1);
                tracing::warn!(
                    partition,
                    "batch fenced by a newer owner; dropped, rejoining"
                );
                self.ownership.revoke_all();
                self.ownership.request_rejoin();
            }
            Err(e) => {
                // Not transient and not fencing: a broken invariant. Dropping the batch
                // would lose events, so rejoin and let the claimed offsets replay it.
                tracing::error!(error = %e, "batch write failed permanently; rejoining to replay it");
                self.ownership.revoke_all();
                self.ownership.request_rejoin();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
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
                &self.settings.stack.topic,
                c.partition,
                rdkafka::Offset::Offset(c.next_offset),
            );
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
            tracing::debug!(error = %e, "kafka offset commit (for tooling) failed");
        }
    }
}
