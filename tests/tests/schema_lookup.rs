//! How a record's writer schema id is looked up, against the real registry
//! (alone, or behind a proxy that plays a registry replica that is behind):
//! an id the registry does not know yet is asked for again until it is found,
//! so a projector behind such a registry counts every like and dead-letters
//! nothing; an id it never finds is poison only after the grace period, and a
//! rebuild refuses rather than come out short; an id that names a JSON schema
//! is poison at once, never mistaken for a registry outage.

use std::time::{Duration, Instant};

use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use likes_infra::codec::EventCodec;
use likes_infra::{DecodeError, Error};
use likes_tests::TestEnv;
use likes_tests::cli::{likes_replay_command, output};
use likes_tests::registry_proxy::RegistryProxy;
use likes_tests::replay::live_counts;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::json;

const ITEM_TYPE: i32 = 1;

/// A Confluent-framed record: magic byte, schema id, then `datum`.
fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&schema_id.to_be_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

fn like(user: i64, item: i64) -> anyhow::Result<LikeEvent> {
    Ok(LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(user)?,
        item: ItemKey::parse(i64::from(ITEM_TYPE), item)?,
        action: Action::Like,
        // Whole milliseconds: what the schema's timestamp-millis carries.
        timestamp: chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
            .ok_or_else(|| anyhow::anyhow!("now is out of range"))?,
    })
}

/// A JSON schema of its own under a throwaway subject of the real registry;
/// deleted again on drop.
struct JsonSchema {
    registry_url: String,
    subject: String,
    id: u32,
}

impl JsonSchema {
    async fn register(registry_url: &str) -> anyhow::Result<Self> {
        let subject = format!("likes-test-json-{}", uuid::Uuid::new_v4().simple());
        // A title of its own makes the content, and so the id, this test's.
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": subject,
            "type": "object",
        });
        let response = reqwest::Client::new()
            .post(format!("{registry_url}/subjects/{subject}/versions"))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(json!({"schemaType": "JSON", "schema": schema.to_string()}).to_string())
            .send()
            .await?;
        anyhow::ensure!(response.status().is_success(), "{}", response.text().await?);
        let answer: serde_json::Value = response.json().await?;
        let id = answer["id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| anyhow::anyhow!("no id in {answer}"))?;
        Ok(Self {
            registry_url: registry_url.to_string(),
            subject,
            id,
        })
    }
}

impl Drop for JsonSchema {
    fn drop(&mut self) {
        let url = format!("{}/subjects/{}", self.registry_url, self.subject);
        // A runtime of its own on its own thread: drop may run inside the test's.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                let client = reqwest::Client::new();
                let _ = client.delete(&url).send().await;
                let _ = client.delete(format!("{url}?permanent=true")).send().await;
            });
        })
        .join();
    }
}

#[tokio::test]
async fn a_record_framed_with_the_id_of_a_json_schema_is_poison_not_a_registry_outage()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let json_schema = JsonSchema::register(&env.stack.schema_registry_url).await?;
    let codec = EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?;
    let record = frame(json_schema.id, br#"{"user_id": 1}"#);

    let error = codec
        .decode(Some(&record))
        .await
        .expect_err("a JSON record decoded as a like event");
    assert!(
        !error.is_transient() && matches!(error, Error::Poison(_)),
        "a record of a JSON schema must be poison, not retried forever: {error:?}"
    );
    assert_eq!(
        codec.decode_event(Some(&record)).await,
        Err(DecodeError::NotAvro {
            id: json_schema.id,
            schema_type: "JSON".into()
        })
    );
    Ok(())
}

#[tokio::test]
async fn a_schema_id_the_registry_finds_only_after_a_few_lookups_decodes_to_its_event()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let event = like(7, 70)?;
    let record = EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?
        .encode(&event)
        .await?;
    let behind = RegistryProxy::start(&env.stack.schema_registry_url, 3).await?;
    let codec = EventCodec::new(behind.url(), &env.stack.topic)?;

    assert_eq!(codec.decode(Some(&record)).await?, event);
    assert_eq!(
        behind.not_found_answers(),
        3,
        "the registry was not behind at all"
    );
    Ok(())
}

#[tokio::test]
async fn an_id_the_registry_never_finds_is_poison_once_the_grace_period_has_passed()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let grace = Duration::from_secs(2);
    let codec = EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?
        .with_unknown_schema_retry(grace);
    let unknown = 987_654;
    let started = Instant::now();

    let first = codec.decode_event(Some(&frame(unknown, &[2, 4, 6]))).await;
    assert!(
        matches!(first, Err(DecodeError::UnknownSchemaId { id, waited }) if id == unknown && waited >= grace),
        "{first:?}"
    );
    assert!(started.elapsed() >= grace, "poison before the grace period");
    // Another record with the same id is poison too, within the same grace.
    let second = codec.decode(Some(&frame(unknown, &[8]))).await;
    assert!(
        matches!(&second, Err(e @ Error::Poison(_)) if !e.is_transient()),
        "{second:?}"
    );
    Ok(())
}

/// How many records the test's dead-letter topic holds.
fn dead_letters(env: &TestEnv) -> anyhow::Result<i64> {
    let consumer: BaseConsumer =
        likes_infra::kafka::consumer_config(&env.stack.kafka_bootstrap, "dlq-count").create()?;
    let (low, high) =
        consumer.fetch_watermarks(&env.stack.dlq_topic(), 0, Duration::from_secs(10))?;
    Ok(high - low)
}

/// Posts one like or unlike through the API (the real registry).
async fn post(
    ingest: &likes_tests::Ingest,
    path: &str,
    user: i64,
    item: i64,
) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .post(ingest.url(path))
        .json(&json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_behind_a_registry_that_is_behind_counts_every_like_and_dead_letters_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let item = 4242;
    for user in 1..=8 {
        post(&ingest, "/v1/likes", user, item).await?;
    }
    for user in 1..=3 {
        post(&ingest, "/v1/unlikes", user, item).await?;
    }

    let behind = RegistryProxy::start(&env.stack.schema_registry_url, 4).await?;
    let mut settings = env.projector_settings();
    settings.stack.schema_registry_url = behind.url().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let projector = tokio::spawn(likes_projector::run(settings, async {
        let _ = stopped.await;
    }));
    env.projected_everything(Duration::from_secs(60)).await?;

    let (counted, likers, dead) = (
        env.db_count(ITEM_TYPE, item).await?,
        env.db_likers(ITEM_TYPE, item).await?,
        dead_letters(&env)?,
    );
    println!(
        "registry behind by 4 lookups: acked 11 events (8 likes, 3 unlikes), expected 5, \
         counted {counted}, likers {likers}, dead-lettered {dead}"
    );
    assert_eq!(dead, 0, "good records went to the dead-letter topic");
    assert_eq!((counted, likers), (5, 5));
    assert_eq!(
        behind.not_found_answers(),
        4,
        "the registry was not behind for 4 lookups"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), projector).await???;
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_whose_schema_id_the_registry_never_finds_refuses_and_leaves_the_live_counts()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let item = 4343;
    for user in 1..=6 {
        post(&ingest, "/v1/likes", user, item).await?;
    }
    let projector = env.start_projector();
    env.projected_everything(Duration::from_secs(60)).await?;
    projector.stop().await??;
    ingest.running.stop().await?;
    let before = live_counts(&env).await?;
    assert_eq!(before.get(&(ITEM_TYPE as i16, item)), Some(&6));

    let never = RegistryProxy::never_finding(&env.stack.schema_registry_url).await?;
    let mut rebuild = likes_replay_command(&env, &["rebuild", "postgres"])?;
    rebuild
        .env("SCHEMA_REGISTRY_URL", never.url())
        .env("UNKNOWN_SCHEMA_RETRY_SECONDS", "1");
    let output = output(rebuild).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let after = live_counts(&env).await?;
    println!(
        "rebuild through a registry that never finds the schema: exit {:?}, live count of the item \
         before {:?}, after {:?}; it said: {}",
        output.status.code(),
        before.get(&(ITEM_TYPE as i16, item)),
        after.get(&(ITEM_TYPE as i16, item)),
        stderr.lines().last().unwrap_or_default(),
    );

    assert!(
        never.not_found_answers() > 0,
        "the registry was never asked"
    );
    assert!(
        !output.status.success(),
        "the rebuild succeeded without the events' schema:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("schema id") && stderr.contains("unknown to the registry"),
        "the refusal does not say why:\n{stderr}"
    );
    assert_eq!(after, before, "the rebuild changed the live counts");
    Ok(())
}
