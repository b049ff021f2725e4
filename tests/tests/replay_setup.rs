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
