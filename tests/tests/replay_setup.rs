//! `likes-replay setup` is idempotent on a topic laid out as asked, and refuses
//! to change the partition count of an existing topic (items would move to
//! partitions whose offsets and Redis stamps are unrelated to theirs).

use likes_tests::TestEnv;
use likes_tests::cli::likes_replay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_refuses_to_change_the_partition_count_of_an_existing_topic() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let more = likes_replay(&env, &["setup", "--partitions", "4"]).await?;
    let said = String::from_utf8_lossy(&more.stderr);
    assert_eq!(
        more.status.code(),
        Some(1),
        "setup with more partitions: {said}"
    );
    assert!(
        said.contains("it has 2 partitions, 4 were asked for"),
        "the refusal names both counts: {said}"
    );
    // Nothing changed: the topic still has its two partitions.
    let consumer: rdkafka::consumer::BaseConsumer =
        likes_infra::kafka::consumer_config(&env.stack.kafka_bootstrap, "metadata").create()?;
    let metadata = rdkafka::consumer::Consumer::fetch_metadata(
        &consumer,
        Some(&env.stack.topic),
        std::time::Duration::from_secs(10),
    )?;
    assert_eq!(metadata.topics()[0].partitions().len(), 2);

    let same = likes_replay(&env, &["setup", "--partitions", "2"]).await?;
    assert!(
        same.status.success(),
        "setup as laid out: {}",
        String::from_utf8_lossy(&same.stderr)
    );
    assert!(
        String::from_utf8_lossy(&same.stdout).contains("(2 partitions)"),
        "{}",
        String::from_utf8_lossy(&same.stdout)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_says_how_each_topic_is_replicated_and_refuses_a_weaker_one() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    // TestEnv laid the topics out as setup would on this stack.
    let replication = likes_infra::kafka::default_replication(&env.stack.kafka_bootstrap).await?;
    let kept = likes_replay(&env, &["setup", "--partitions", "2"]).await?;
    let said = String::from_utf8_lossy(&kept.stdout);
    assert!(
        kept.status.success(),
        "{}",
        String::from_utf8_lossy(&kept.stderr)
    );
    assert!(
        said.contains(&format!(
            "topic {} kept: 2 partitions, replication {replication}, min.insync.replicas {}",
            env.stack.topic,
            (replication - 1).max(1)
        )),
        "setup says what the topic is: {said}"
    );
    // Asking for more copies than the topic has is refused, never silently kept.
    let asked = (replication + 1).to_string();
    let stronger = likes_replay(
        &env,
        &["setup", "--partitions", "2", "--replication", &asked],
    )
    .await?;
    let refused = String::from_utf8_lossy(&stronger.stderr);
    assert_eq!(stronger.status.code(), Some(1), "{refused}");
    assert!(
        refused.contains(&format!("replication factor {replication}, {asked} asked")),
        "the refusal says what differs: {refused}"
    );
    assert!(
        refused.contains("kafka-reassign-partitions"),
        "and how to fix it: {refused}"
    );
    Ok(())
}
