//! The projector's wiring: the collector gathers one window's batch while the
//! writer task writes the previous one (PostgreSQL, then Redis). A semaphore of
//! one permit keeps exactly one batch in writing, and batches are written in
//! the order they were collected.
//!
//! A stop (SIGTERM) ends the projector within a bounded time whatever
//! PostgreSQL does: the batch in writing gets a short grace to commit, else it
//! is abandoned uncommitted (every part is one transaction, so nothing is
//! half-committed) and read again by the next owner.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use likes_domain::DedupHorizon;
use likes_infra::codec::EventCodec;
use likes_infra::kafka::dead_letters::DeadLetters;
use likes_infra::redis::Redis;
use likes_infra::redis::counts::CountCache;
use likes_infra::redis::likers::{self, RecentLikers};
use likes_infra::{postgres, retry};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::background::prune_forever;
use crate::collect::Collector;
use crate::commit::Writer;
use crate::consumer::{ClaimOnAssign, ProjectorConsumer};
use crate::ownership::{Claimer, Ownership};
use crate::{ProjectorError, Settings};

/// The longest the writer may take to finish once a stop was asked; past it,
/// it is cut off (its transactions roll back).
const WRITER_STOP_BOUND: Duration = Duration::from_secs(10);

/// Runs the projector until `shutdown` resolves. The batch being written when
/// it does is finished first if PostgreSQL lets it within a short grace, else
/// abandoned uncommitted; the batch being collected is dropped (it was not
/// committed, so the next owner reads it again).
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProjectorError> {
    let stack = &settings.stack;
    let db = postgres::connect_lazy(
        postgres::shards::one_database(stack)?,
        stack.database_max_connections,
    )?;
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        result = retry::forever(&retry::START_UP, "migrate", || postgres::migrate(&db)) => result,
    }
    let redis_address = stack.redis_address();
    let redis = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        redis = retry::forever(&retry::START_UP, "redis connect", || Redis::connect(&redis_address, &stack.redis_key_prefix)) => redis,
    };
    let ownership = Arc::new(Ownership::default());
    let claimer = Claimer::spawn(postgres::shards::one_database(stack)?, &stack.topic)?;
    let consumer: ProjectorConsumer = ProjectorConsumer::subscribe(
        &stack.kafka_bootstrap,
        &settings.group_id,
        &stack.topic,
        ClaimOnAssign::new(claimer, ownership.clone()),
    )?;
    let consumer = Arc::new(consumer);
    let mut collector = Collector {
        codec: EventCodec::new(&stack.schema_registry_url, &stack.topic)?,
        dead_letters: DeadLetters::new(&stack.kafka_bootstrap, stack.dlq_topic())?,
        settings: settings.clone(),
        consumer: consumer.clone(),
        ownership: ownership.clone(),
    };
    let (stop, stop_rx) = watch::channel(false);
    let writer = Writer {
        topic: stack.topic.clone(),
        writers: settings.writers,
        consumer: consumer.clone(),
        ownership: ownership.clone(),
        likers: RecentLikers::new(&redis, likers::DEFAULT_KEEP),
        cache: CountCache::new(&redis),
        db: db.clone(),
        horizon: DedupHorizon::new(settings.dedup_horizon),
        pending_cache: HashMap::new(),
        cache_marks: HashMap::new(),
        pending_marks: HashMap::new(),
        refreshed: None,
        redis_failed: false,
        stop: stop_rx,
    };
    let metrics_server = settings.metrics_addr.map(|addr| {
        tokio::spawn(crate::health::serve(
            addr,
            crate::metrics::install(),
            ownership.clone(),
        ))
    });
    let acceptances = tokio::spawn(crate::parking::watch_accepted_losses(
        db.clone(),
        stack.topic.clone(),
        ownership,
    ));
    let pruner = tokio::spawn(prune_forever(
        db,
        stack.topic.clone(),
        DedupHorizon::new(settings.dedup_horizon),
    ));
    // One permit: the collector holds it from handing a batch over until the
    // writer has written it, so at most one batch is in writing.
    let writer_free = Arc::new(Semaphore::new(1));
    let (handoff, batches) = mpsc::channel(1);
    let writing = tokio::spawn(writer.run(batches));
    tracing::info!(topic = %settings.stack.topic, group = %settings.group_id, "projector started");
    loop {
        let collected = tokio::select! {
            _ = &mut shutdown => break,
            collected = collector.collect(&writer_free) => collected,
        };
        if let Some(collected) = collected
            && handoff.send(collected).await.is_err()
        {
            tracing::error!("the batch writer stopped");
            break;
        }
    }
    // The batch in writing is finished (or abandoned, see the Writer); the one
    // being collected was dropped.
    let _ = stop.send(true);
    drop(handoff);
    let writer_abort = writing.abort_handle();
    match tokio::time::timeout(WRITER_STOP_BOUND, writing).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "the batch writer failed"),
        Err(_) => {
            writer_abort.abort();
            tracing::error!(
                "the batch writer did not stop in time; cut off (its transaction rolls back)"
            );
        }
    }
    pruner.abort();
    acceptances.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    consumer.leave();
    tracing::info!("projector stopped");
    Ok(())
}
