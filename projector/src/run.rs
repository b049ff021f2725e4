//! The projector's wiring: the collector gathers one window's batch while the
//! writer task writes the previous one (PostgreSQL, then Redis). A semaphore of
//! one permit keeps exactly one batch in writing, and batches are written in
//! the order they were collected.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use likes_infra::cache::CountCache;
use likes_infra::codec::EventCodec;
use likes_infra::kafka;
use likes_infra::likers::RecentLikers;
use likes_infra::store;
use rdkafka::consumer::Consumer;
use tokio::sync::{Semaphore, mpsc};

use crate::background::prune_forever;
use crate::collect::Collector;
use crate::commit::Writer;
use crate::consumer::{ProjectorConsumer, ProjectorContext};
use crate::dead_letters::DeadLetters;
use crate::ownership::{Claimer, Ownership};
use crate::{ProjectorError, Settings};

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
        result = crate::retry::forever("migrate", || store::migrate(&db)) => result,
    }
    let cache = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        cache = crate::retry::forever("redis connect", || CountCache::connect(&stack.redis_url, &stack.redis_key_prefix)) => cache,
    };
    let ownership = Arc::new(Ownership::default());
    let claimer = Claimer::spawn(&stack.database_url, &stack.topic)?;
    let context = ProjectorContext::new(&stack.topic, claimer, ownership.clone());
    let consumer: ProjectorConsumer =
        kafka::consumer_config(&stack.kafka_bootstrap, &settings.group_id)
            .create_with_context(context)?;
    consumer.subscribe(&[&stack.topic])?;
    let consumer = Arc::new(consumer);
    let mut collector = Collector {
        codec: EventCodec::new(&stack.schema_registry_url, &stack.topic)?,
        dead_letters: DeadLetters::new(&stack.kafka_bootstrap, stack.dlq_topic())?,
        settings: settings.clone(),
        consumer: consumer.clone(),
        ownership: ownership.clone(),
    };
    let writer = Writer {
        topic: stack.topic.clone(),
        writers: settings.writers,
        consumer: consumer.clone(),
        ownership: ownership.clone(),
        likers: RecentLikers::new(
            cache.connection(),
            &stack.redis_key_prefix,
            likes_infra::likers::DEFAULT_KEEP,
        ),
        cache,
        db: db.clone(),
        pending_cache: HashMap::new(),
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
    let pruner = tokio::spawn(prune_forever(db, settings.dedup_horizon));
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
    // The batch in writing is finished; the one being collected was dropped.
    drop(handoff);
    if let Err(e) = writing.await {
        tracing::error!(error = %e, "the batch writer failed");
    }
    pruner.abort();
    acceptances.abort();
    if let Some(server) = metrics_server {
        server.abort();
    }
    consumer.unsubscribe();
    tracing::info!("projector stopped");
    Ok(())
}
