//! `rebuild postgres --from <time>` builds on the newest snapshot taken at or
//! before that time (not a newer one); with none, it replays the whole topic
//! while retention has deleted nothing, and refuses once it has.

use chrono::{DateTime, Utc};
use likes_infra::postgres::snapshots;
use likes_replay::rebuild::{self, RebuildFrom, RebuildOptions};
use likes_tests::load::ITEM_TYPE;
use likes_tests::replay::{a_moment, write_and_settle};
use likes_tests::{Ingest, TestEnv};
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

async fn like(env: &TestEnv, ingest: &Ingest, user: i64, item: i64) -> anyhow::Result<()> {
    write_and_settle(env, ingest, true, user, item).await
}

fn from_time(time: DateTime<Utc>, dry_run: bool) -> RebuildOptions {
    RebuildOptions {
        dry_run,
        accept_differences: !dry_run,
        ..RebuildOptions::new(RebuildFrom::Time(time))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_from_a_time_uses_the_newest_snapshot_taken_by_then_or_refuses_a_short_start()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let before_any_snapshot = a_moment().await;
    like(&env, &ingest, 1, 10).await?;
    like(&env, &ingest, 2, 10).await?;
    let first = snapshots::create(&env.db, &env.stack.topic, None).await?;
    let between = a_moment().await;
    like(&env, &ingest, 1, 11).await?;
    let newer = snapshots::create(&env.db, &env.stack.topic, None).await?;
    like(&env, &ingest, 3, 10).await?;

    let whole_log = rebuild::run(&env.stack, &from_time(before_any_snapshot, true)).await?;
    // Retention: everything before the first snapshot's offset 2 is gone.
    let admin: AdminClient<DefaultClientContext> =
        likes_infra::kafka::consumer_config(&env.stack.kafka_bootstrap, "admin").create()?;
    let mut upto = TopicPartitionList::new();
    upto.add_partition_offset(&env.stack.topic, 0, rdkafka::Offset::Offset(2))?;
    admin.delete_records(&upto, &AdminOptions::new()).await?;
    let refused = rebuild::run(&env.stack, &from_time(before_any_snapshot, false)).await;
    sqlx::query("UPDATE counters SET count = 7 WHERE item_id = 10")
        .execute(&env.db)
        .await?;
    let from_first = rebuild::run(&env.stack, &from_time(between, false)).await?;

    projector.stop().await??;
    ingest.running.stop().await?;
    assert_eq!(whole_log.source, "earliest", "{whole_log:?}");
    assert_eq!((whole_log.events, whole_log.live_differences), (4, 0));
    let message = format!("{:#}", refused.err().ok_or(anyhow::anyhow!("not refused"))?);
    assert!(
        message.contains("no snapshot") && message.contains("refusing"),
        "{message}"
    );
    assert_ne!(first.id, newer.id);
    assert_eq!(from_first.source, format!("snapshot:{}", first.id));
    assert_eq!(from_first.events, 2, "the events past the first snapshot");
    assert_eq!(from_first.live_differences, 1, "the counter set to 7");
    assert_eq!(env.db_count(ITEM_TYPE, 10).await?, 3);
    assert_eq!(env.db_count(ITEM_TYPE, 11).await?, 1);
    Ok(())
}
