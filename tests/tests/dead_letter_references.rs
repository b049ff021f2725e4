//! A poison record that cannot be copied to the dead-letter topic whole (it is
//! larger than that topic accepts once its headers are added) goes there as a
//! reference: where it was, its size, why, and a bounded prefix of its bytes. A
//! record framed with the id of a schema of another type (JSON) is poison too,
//! not "registry unavailable". Both reach the dead-letter topic, and every
//! partition, theirs included, keeps counting: nothing stalls on them.

use std::time::Duration;

use likes_infra::kafka::partitioner::partition_for_item;
use likes_tests::dead_letters::garbage;
use likes_tests::dead_letters::{
    DeadLetter, JsonSchema, limit_dead_letter_size, read_dead_letters,
};
use likes_tests::log_surgery::one_item_per_other_partition;
use likes_tests::projector_http::{ObservedProjector, counter_now};
use likes_tests::{Ingest, TestEnv, eventually};
use rdkafka::producer::{FutureProducer, FutureRecord};

const ITEM: i64 = 4242;
const PARTITIONS: i32 = 4;
/// Just under the broker's default `message.max.bytes` (1 MiB and a bit).
const HUGE: usize = 999_900;
/// What the test's dead-letter topic accepts: less than the huge record.
const DLQ_MAX_BYTES: usize = 256 * 1024;

async fn counted(env: &TestEnv, items: &[i64], expected: i64) -> anyhow::Result<bool> {
    for item in items {
        if env.db_count(1, *item).await? != expected {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The tests of this file count the same process-wide metrics: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const POISON: &str = "likes_projector_poison_records_total";
const REFERENCES: &str = "likes_projector_dead_letter_references_total";

/// The likes around the poison, the projector and where things are.
struct Scenario {
    env: TestEnv,
    ingest: Ingest,
    projector: ObservedProjector,
    items: Vec<i64>,
    key: String,
    partition: i32,
}

impl Scenario {
    /// A like of an item in every partition, `poison` on the item's partition,
    /// another like of every item; then the projector starts, and must count
    /// them all and a third wave after them: nothing may stall on the poison.
    async fn poison_between_likes(env: TestEnv, poison: &[u8]) -> anyhow::Result<Self> {
        let ingest = env.start_ingest().await?;
        let partition = partition_for_item(ITEM, PARTITIONS);
        let mut items = one_item_per_other_partition(PARTITIONS, partition);
        items.push(ITEM);
        for item in &items {
            ingest.like(1, *item).await?;
        }
        let producer: FutureProducer =
            likes_infra::kafka::producer(&env.stack.kafka_bootstrap, Duration::from_secs(10))?;
        let key = ITEM.to_string();
        producer
            .send(
                FutureRecord::to(&env.stack.topic).key(&key).payload(poison),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce poison: {e}"))?;
        for item in &items {
            ingest.like(2, *item).await?;
        }
        let projector = ObservedProjector::start(&env)?;
        eventually(Duration::from_secs(60), || counted(&env, &items, 2)).await?;
        for item in &items {
            ingest.like(3, *item).await?;
        }
        eventually(Duration::from_secs(30), || counted(&env, &items, 3)).await?;
        Ok(Self {
            env,
            ingest,
            projector,
            items,
            key,
            partition,
        })
    }

    /// The one dead letter, checked for what every dead letter carries.
    async fn dead_letter(&self) -> anyhow::Result<DeadLetter> {
        let dead = read_dead_letters(&self.env, 2, Duration::from_secs(10))?;
        for d in &dead {
            println!(
                "dead letter: {} bytes, headers {:?}",
                d.payload.len(),
                d.headers
            );
        }
        assert_eq!(dead.len(), 1, "{dead:?}");
        let d = dead[0].clone();
        assert_eq!(
            d.header("dlq.source.topic"),
            Some(self.env.stack.topic.as_str())
        );
        assert_eq!(
            d.header("dlq.source.partition"),
            Some(self.partition.to_string().as_str())
        );
        assert_eq!(d.header("dlq.source.offset"), Some("1"));
        assert_eq!(d.key.as_deref(), Some(self.key.as_bytes()));
        assert!(
            d.header("dlq.error")
                .is_some_and(|e| !e.is_empty() && e.len() <= 1024),
            "{:?}",
            d.headers
        );
        Ok(d)
    }

    async fn finish(self) -> anyhow::Result<()> {
        let (ready, readiness) = self.projector.readiness().await?;
        assert_eq!(ready, 200, "nothing parked: {readiness}");
        let mut total = 0;
        for item in &self.items {
            total += self.env.db_count(1, *item).await?;
        }
        assert_eq!(total, 3 * self.items.len() as i64);
        println!(
            "figures: acked {} likes, counted {total}, lost 0, double-counted 0",
            3 * self.items.len()
        );
        self.projector.stop().await?;
        self.ingest.running.stop().await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_dead_letter_topic_goes_there_as_a_reference_and_nothing_stalls()
-> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new(PARTITIONS).await?;
    limit_dead_letter_size(&env, DLQ_MAX_BYTES).await?;
    let (poison_before, references_before) = (counter_now(POISON), counter_now(REFERENCES));
    let huge = garbage(HUGE);
    let scenario = Scenario::poison_between_likes(env, &huge).await?;

    let reference = scenario.dead_letter().await?;
    let poison = counter_now(POISON) - poison_before;
    let references = counter_now(REFERENCES) - references_before;
    println!("metrics: {POISON} +{poison}, {REFERENCES} +{references}");
    assert_eq!(reference.header("dlq.kind"), Some("reference"));
    assert_eq!(
        reference.header("dlq.source.size"),
        Some(HUGE.to_string().as_str())
    );
    assert_eq!(
        reference.payload.as_slice(),
        &huge[..1024],
        "a bounded prefix"
    );
    assert!(
        reference
            .header("dlq.reference.reason")
            .is_some_and(|r| !r.is_empty() && r.len() <= 1024),
        "{:?}",
        reference.headers
    );
    assert_eq!(
        (poison, references),
        (1.0, 1.0),
        "counted in the DLQ metrics"
    );
    scenario.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_framed_with_the_id_of_a_json_schema_is_poison_and_nothing_stalls()
-> anyhow::Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let env = TestEnv::new(PARTITIONS).await?;
    let (poison_before, references_before) = (counter_now(POISON), counter_now(REFERENCES));
    let json_schema = JsonSchema::register(&env).await?;
    let mut foreign = vec![0];
    foreign.extend_from_slice(&json_schema.id.to_be_bytes());
    foreign.extend_from_slice(br#"{"liked":true}"#);
    let scenario = Scenario::poison_between_likes(env, &foreign).await;
    json_schema.delete().await?;
    let scenario = scenario?;

    let copy = scenario.dead_letter().await?;
    assert_eq!(copy.header("dlq.kind"), Some("record"));
    assert_eq!(copy.payload, foreign, "the whole record");
    assert_eq!(
        (
            counter_now(POISON) - poison_before,
            counter_now(REFERENCES) - references_before
        ),
        (1.0, 0.0)
    );
    scenario.finish().await
}
