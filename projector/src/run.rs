//! The projector's wiring: the collector gathers one batch per shard while
//! each shard's writer task writes that shard's previous one (PostgreSQL,
//! then Redis). A semaphore of one permit per shard keeps exactly one batch
//! of each shard in writing, and a shard's batches are written in the order
//! they were collected; the shards do not wait for each other (see
//! `commit.rs` for why that keeps every count exact).
//!
//! At start the shards are connected (the map needs the topic's partition
//! count when there are several), migrated, and their recorded maps checked:
//! an unreachable shard is waited for, a shard whose recorded map differs
//! from ours ends the projector with [`likes_infra::Error::ShardMapMismatch`]
//! before anything is consumed.
//!
//! A stop (SIGTERM) ends the projector within a bounded time whatever
//! PostgreSQL does: the batches in writing get a short grace to commit, else
//! they are abandoned uncommitted (every part is one transaction, so nothing
//! is half-committed) and read again by the next owner.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use likes_domain::DedupHorizon;
use likes_infra::archive::Archive;
use likes_infra::codec::EventCodec;
use likes_infra::kafka::dead_letters::DeadLetters;
use likes_infra::postgres::shards::Shards;
use likes_infra::redis::Redis;
use likes_infra::redis::counts::CountCache;
use likes_infra::redis::likers::{self, RecentLikers};
use likes_infra::retry;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::backfill::Backfills;
use crate::background::prune_forever;
use crate::collect::Collector;
use crate::commit::Writer;
use crate::consumer::{ClaimOnAssign, ProjectorConsumer};
use crate::ownership::{Claimer, Ownership, reclaim_forever};
use crate::{ProjectorError, Settings};

/// The longest the writers may take to finish once a stop was asked; past it,
/// they are cut off (their transactions roll back).
const WRITER_STOP_BOUND: Duration = Duration::from_secs(10);

/// The longest leaving the group and closing the consumer may take once the
/// writers are done; past it the close is left behind (see
/// [`likes_infra::kafka::consumer::GroupConsumer::close`]).
const CONSUMER_CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Runs the projector until `shutdown` resolves. The batch being written when
/// it does is finished first if PostgreSQL lets it within a short grace, else
/// abandoned uncommitted; the batch being collected is dropped (it was not
/// committed, so the next owner reads it again).
pub async fn run(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ProjectorError> {
    let stack = &settings.stack;
    let mut shutdown = std::pin::pin!(shutdown);
    let shards = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        shards = connect(stack.clone(), stack.database_max_connections) => shards?,
    };
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        result = retry::forever(&retry::START_UP, "migrate", || shards.migrate()) => result,
    }
    tokio::select! {
        _ = &mut shutdown => return Ok(()),
        recorded = retry::transient(&retry::START_UP, "check the shard map", || shards.record_map(&stack.topic)) => {
            if let Err(e) = recorded {
                tracing::error!(error = %e, "refusing to project");
                return Err(e.into());
            }
        }
    }
    let redis_address = stack.redis_address();
    let redis = tokio::select! {
        _ = &mut shutdown => return Ok(()),
        redis = retry::forever(&retry::START_UP, "redis connect", || Redis::connect(&redis_address, &stack.redis_key_prefix)) => redis,
    };
    let ownership = Arc::new(Ownership::default());
    let claimer = Claimer::spawn(&stack.database_urls, &shards, &stack.topic)?;
    let consumer: ProjectorConsumer = ProjectorConsumer::subscribe(
        &stack.kafka_bootstrap,
        &settings.group_id,
        &stack.topic,
        ClaimOnAssign::new(claimer, ownership.clone(), shards.len()),
    )?;
    let consumer = Arc::new(consumer);
    let mut collector = Collector::new(
        settings.clone(),
        consumer.clone(),
        ownership.clone(),
        EventCodec::new(&stack.schema_registry_url, &stack.topic)?,
        DeadLetters::new(&stack.kafka_bootstrap, stack.dlq_topic())?,
        shards.map(),
        Backfills::new(
            Archive::open_existing(&stack.archive_url, &stack.topic)?,
            &stack.topic,
        ),
    );
    let (stop, stop_rx) = watch::channel(false);
    // Per shard: a writer task, the channel to it, and one permit that the
    // collector holds from handing a batch over until the writer has written
    // it, so at most one batch of each shard is in writing.
    let mut handoffs = Vec::new();
    let mut writers_free = Vec::new();
    let mut writing = Vec::new();
    let mut chores = Vec::new();
    for (shard, pool) in shards.iter() {
        let writer = Writer {
            shard,
            map: shards.map(),
            topic: stack.topic.clone(),
            writers: settings.writers,
            consumer: consumer.clone(),
            ownership: ownership.clone(),
            likers: RecentLikers::new(&redis, likers::DEFAULT_KEEP),
            cache: CountCache::new(&redis),
            db: pool.clone(),
            horizon: DedupHorizon::new(settings.dedup_horizon),
            pending_cache: HashMap::new(),
            cache_marks: HashMap::new(),
            pending_marks: HashMap::new(),
            pending_freshness: Vec::new(),
            refreshed: None,
            redis_failed: false,
            stop: stop_rx.clone(),
        };
        let (handoff, batches) = mpsc::channel(1);
        handoffs.push(handoff);
        writers_free.push(Arc::new(Semaphore::new(1)));
        writing.push(tokio::spawn(writer.run(batches)));
        chores.push(tokio::spawn(crate::parking::watch_accepted_losses(
            pool.clone(),
            shards.map(),
            shard,
            stack.topic.clone(),
            ownership.clone(),
        )));
        chores.push(tokio::spawn(prune_forever(
            pool.clone(),
            shard,
            stack.topic.clone(),
            DedupHorizon::new(settings.dedup_horizon),
        )));
    }
    chores.push(tokio::spawn(crate::background::report_partitions_forever(
        ownership.clone(),
    )));
    chores.push(tokio::spawn(reclaim_forever(
        shards.clone(),
        stack.topic.clone(),
        ownership.clone(),
    )));
    let metrics_server = settings.metrics_addr.map(|addr| {
        tokio::spawn(crate::health::serve(
            addr,
            crate::metrics::install(),
            ownership.clone(),
        ))
    });
    tracing::info!(topic = %settings.stack.topic, group = %settings.group_id, "projector started");
    'collecting: loop {
        let collected = tokio::select! {
            _ = &mut shutdown => break,
            collected = collector.collect(&writers_free) => collected,
        };
        for handoff in collected {
            if handoffs[handoff.shard]
                .send((handoff.batch, handoff.permit))
                .await
                .is_err()
            {
                tracing::error!(shard = handoff.shard, "a batch writer stopped");
                break 'collecting;
            }
        }
    }
    // The batches in writing are finished (or abandoned, see the Writer); the
    // ones being collected are dropped.
    let _ = stop.send(true);
    drop(handoffs);
    let aborts: Vec<_> = writing.iter().map(|w| w.abort_handle()).collect();
    match tokio::time::timeout(WRITER_STOP_BOUND, futures::future::join_all(writing)).await {
        Ok(results) => {
            for (shard, result) in results.into_iter().enumerate() {
                if let Err(e) = result {
                    tracing::error!(error = %e, shard, "a batch writer failed");
                }
            }
        }
        Err(_) => {
            for abort in aborts {
                abort.abort();
            }
            tracing::error!(
                "a batch writer did not stop in time; cut off (its transaction rolls back)"
            );
        }
    }
    for chore in chores {
        chore.abort();
    }
    if let Some(server) = metrics_server {
        server.abort();
    }
    // The collector's and the writers' clones are gone (the writers ended or
    // were cut off above), so the close below is the consumer's last.
    drop(collector);
    consumer.close(CONSUMER_CLOSE_BOUND).await;
    shards.close().await;
    tracing::info!("projector stopped");
    Ok(())
}

/// The shards' pools: with several shards the map needs the topic's partition
/// count from Kafka, asked again while Kafka is away; a setting no retry can
/// cure (more shards than partitions, a malformed URL) ends the projector.
async fn connect(
    stack: likes_infra::settings::StackSettings,
    max_connections: u32,
) -> Result<Shards, ProjectorError> {
    Ok(
        retry::transient(&retry::START_UP, "connect the shards", || {
            Shards::connect(&stack, max_connections)
        })
        .await?,
    )
}
