//! A Redis count never stays stale: after a restart or a retry, the cached
//! counts of the items a committed batch touched are their committed values,
//! even when the Redis write that followed the commit was refused and the
//! projector was stopped before it could try again, or when the commit's reply
//! was lost and the batch was applied a second time.

use std::time::Duration;

use likes_domain::{DedupHorizon, LoggedEvent, Position};
use likes_infra::postgres::writer::{BatchRules, apply_batch};
use likes_tests::process::ProjectorProcess;
use likes_tests::redis_server::PrivateRedis;
use likes_tests::rewire::rewired;
use likes_tests::timed_records::{TimedProducer, like_event, now_millis};
use likes_tests::{TestEnv, eventually};

const ITEM: i64 = 77;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_redis_refused_is_right_soon_after_the_projector_restarts() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let redis = PrivateRedis::start(&[]).await?;
    let env = rewired(&env, |stack| stack.redis_url = redis.url());
    let prefix = env.stack.redis_key_prefix.clone();
    let producer = TimedProducer::new(&env)?;

    let projector = ProjectorProcess::start(&env)?;
    producer
        .send(&like_event(1, ITEM, true)?, now_millis())
        .await?;
    eventually(Duration::from_secs(60), || async {
        Ok(redis.count(&prefix, 1, ITEM).await? == Some(1))
    })
    .await?;

    // Redis refuses the write that follows the next batch's commit...
    redis.refuse_writes(true).await?;
    producer
        .send(&like_event(2, ITEM, true)?, now_millis())
        .await?;
    eventually(Duration::from_secs(30), || async {
        Ok(env.db_count(1, ITEM).await? == 2)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        redis.count(&prefix, 1, ITEM).await?,
        Some(1),
        "the refusal must have kept the write out"
    );
    // ...and the projector is stopped while it still refuses.
    projector.terminate().await?;
    redis.refuse_writes(false).await?;

    // Nothing new is liked: the restarted projector alone must put it right.
    let projector = ProjectorProcess::start(&env)?;
    let settled = eventually(Duration::from_secs(10), || async {
        Ok(redis.count(&prefix, 1, ITEM).await? == Some(2))
    })
    .await;
    let cached = redis.count(&prefix, 1, ITEM).await?;
    projector.terminate().await?;
    println!(
        "item {ITEM}: acked 2, counted {}, cached {cached:?}",
        env.db_count(1, ITEM).await?
    );
    settled.map_err(|e| anyhow::anyhow!("redis still says {cached:?} for a count of 2: {e}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_applied_again_after_a_lost_commit_reply_brings_redis_to_the_committed_count()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let producer = TimedProducer::new(&env)?;
    let projector = env.start_projector();
    producer
        .send(&like_event(1, ITEM, true)?, now_millis())
        .await?;
    eventually(Duration::from_secs(60), || async {
        Ok(env.redis_count(1, ITEM).await? == Some(1))
    })
    .await?;
    projector.stop().await??;

    // The next like's batch committed, but its owner never heard back: the
    // rows are in, the offsets it would have moved are not known to have moved.
    let like = like_event(2, ITEM, true)?;
    let record_time = now_millis();
    let (partition, offset) = producer.send(&like, record_time).await?;
    apply_batch(
        &env.db,
        &env.stack.topic,
        &[],
        &[LoggedEvent {
            position: Position { partition, offset },
            record_time,
            event: like,
        }],
        BatchRules {
            horizon: DedupHorizon::new(Duration::from_secs(3600)),
            cached_until: &[],
        },
    )
    .await?;
    assert_eq!(env.db_count(1, ITEM).await?, 2);

    // Applied again by the projector: every event is a duplicate, yet Redis
    // must end at the committed count.
    let projector = env.start_projector();
    let settled = eventually(Duration::from_secs(30), || async {
        Ok(env.redis_count(1, ITEM).await? == Some(2))
    })
    .await;
    let cached = env.redis_count(1, ITEM).await?;
    projector.stop().await??;
    settled.map_err(|e| anyhow::anyhow!("redis still says {cached:?} for a count of 2: {e}"))?;
    Ok(())
}
