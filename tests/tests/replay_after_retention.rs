//! Once retention has deleted the first events of an item's partition,
//! `explain` and `count` start from a snapshot: `explain` names the snapshot and
//! the item's count in it, then the events after it; `count --at` uses only a
//! snapshot taken by then. Without a usable snapshot they say the derivation is
//! incomplete (`explain`) or refuse (`count`), never a short count.

use likes_domain::ItemKey;
use likes_infra::postgres::snapshots;
use likes_replay::commands::count;
use likes_replay::commands::explain::{self, Verdict};
use likes_replay::commands::history::Effect;
use likes_replay::output::Format;
use likes_tests::load::ITEM_TYPE;
use likes_tests::replay::{a_moment, write_and_settle};
use likes_tests::{Ingest, TestEnv};
use rdkafka::TopicPartitionList;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;

const ITEM: i64 = 10;

async fn write(env: &TestEnv, ingest: &Ingest, like: bool, user: i64) -> anyhow::Result<()> {
    write_and_settle(env, ingest, like, user, ITEM).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_count_start_from_a_snapshot_once_retention_deleted_the_start()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let item = ItemKey::parse(ITEM_TYPE.into(), ITEM)?;
    let before_snapshot = a_moment().await;
    write(&env, &ingest, true, 1).await?;
    write(&env, &ingest, true, 2).await?;
    let snap = snapshots::create(&env.db, &env.stack.topic, None).await?;
    write(&env, &ingest, true, 1).await?; // already liked
    let at_two = a_moment().await;
    write(&env, &ingest, false, 2).await?; // unliked
    write(&env, &ingest, true, 3).await?; // liked
    projector.stop().await??;
    ingest.running.stop().await?;
    // Retention: the two likes before the snapshot's offset are gone.
    let admin: AdminClient<DefaultClientContext> =
        likes_infra::kafka::consumer_config(&env.stack.kafka_bootstrap, "admin").create()?;
    let mut upto = TopicPartitionList::new();
    upto.add_partition_offset(&env.stack.topic, 0, rdkafka::Offset::Offset(2))?;
    admin.delete_records(&upto, &AdminOptions::new()).await?;

    let x = explain::run(&env.stack, item).await?;
    let mut text = Vec::new();
    explain::print(&mut text, &x, Format::Table)?;
    let now = count::run(&env.stack, item, None).await?;
    let then = count::run(&env.stack, item, Some(at_two)).await?;
    let too_early = count::run(&env.stack, item, Some(before_snapshot)).await;
    snapshots::delete(&env.db, snap.id).await?;
    let without = explain::run(&env.stack, item).await?;
    let refused = count::run(&env.stack, item, None).await;

    let base = x
        .snapshot
        .clone()
        .ok_or(anyhow::anyhow!("no snapshot used"))?;
    assert_eq!((base.id, base.count, base.offset), (snap.id, 2, 2));
    assert_eq!(
        (x.events, x.liked, x.unliked, x.already_liked),
        (3, 1, 1, 1)
    );
    assert_eq!((x.derived_count, x.stored_count), (2, Some(2)));
    assert_eq!(x.verdict, Verdict::Matches, "{x:#?}");
    assert_eq!(x.unchanged.len(), 1);
    assert_eq!(x.unchanged[0].effect, Effect::AlreadyLiked);
    let text = String::from_utf8(text)?;
    assert!(
        text.contains(&format!("snapshot {} ", snap.id)) && text.contains("count 2 at offset 2"),
        "{text}"
    );
    assert_eq!((now.count, now.events, now.snapshot), (2, 3, Some(snap.id)));
    assert_eq!((then.count, then.events), (2, 1));
    let message = format!("{:#}", too_early.err().ok_or(anyhow::anyhow!("counted"))?);
    assert!(message.contains("refusing"), "{message}");
    assert_eq!(without.verdict, Verdict::Incomplete);
    assert!(without.snapshot.is_none());
    assert!(refused.is_err(), "no snapshot left: a count would be short");
    Ok(())
}
