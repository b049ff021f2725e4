//! Records that can never become events go to the dead-letter topic with their
//! key, bytes and headers naming where they came from and why; the projector
//! moves on and counts the good events around them exactly.

use std::time::Duration;

use apache_avro::types::Value;
use likes_infra::codec::{EventCodec, SCHEMA};
use likes_tests::dead_letters::frame;
use likes_tests::{TestEnv, eventually};
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_go_to_the_dead_letter_topic_and_counting_goes_on() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let ingest = env.start_ingest().await?;
    let http = reqwest::Client::new();
    let like = |user: i64| json!({"user_id": user, "item_id": 5, "item_type": 1});
    assert_eq!(
        http.post(ingest.url("/v1/likes"))
            .json(&like(1))
            .send()
            .await?
            .status(),
        202
    );

    // Three kinds of poison, between good events on the same partition.
    let schema_id = EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?
        .register()
        .await?;
    let schema = apache_avro::Schema::parse_str(SCHEMA)?;
    let invalid = Value::Record(vec![
        ("event_id".into(), Value::Uuid(uuid::Uuid::new_v4())),
        ("user_id".into(), Value::Long(-1)),
        ("item_id".into(), Value::Long(5)),
        ("item_type".into(), Value::Int(1)),
        ("action".into(), Value::Enum(0, "LIKE".into())),
        ("timestamp".into(), Value::TimestampMillis(0)),
    ]);
    let invalid = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
        .build()?
        .write_value_to_vec(invalid)?;
    let poison: Vec<(&str, Vec<u8>)> = vec![
        ("not avro", b"hello, world".to_vec()),
        ("unknown schema id", frame(987_654, &[2, 4, 6])),
        ("invalid user_id", frame(schema_id, &invalid)),
    ];
    let producer: FutureProducer =
        likes_infra::kafka::producer(&env.stack.kafka_bootstrap, Duration::from_secs(10))?;
    for (what, payload) in &poison {
        producer
            .send(
                FutureRecord::to(&env.stack.topic).key("5").payload(payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("{what}: {e}"))?;
    }
    assert_eq!(
        http.post(ingest.url("/v1/likes"))
            .json(&like(2))
            .send()
            .await?
            .status(),
        202
    );

    let projector = env.start_projector();
    // The unknown schema id is asked for again for the whole grace period
    // before its record is poison (a registry replica may be behind).
    let grace = likes_infra::settings::DEFAULT_UNKNOWN_SCHEMA_RETRY_SECONDS;
    eventually(Duration::from_secs(30 + grace), || async {
        Ok(env.db_count(1, 5).await? == 2)
    })
    .await?;

    // The dead-letter topic holds the three records, bytes and key intact.
    let consumer: BaseConsumer =
        likes_infra::kafka::consumer_config(&env.stack.kafka_bootstrap, "dlq-reader").create()?;
    consumer.assign(&{
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&env.stack.dlq_topic(), 0, rdkafka::Offset::Beginning)?;
        tpl
    })?;
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while dead.len() < poison.len() && std::time::Instant::now() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            let message = message?;
            let header = |name: &str| {
                message.headers().and_then(|h| {
                    h.iter()
                        .find(|x| x.key == name)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                })
            };
            dead.push((
                message.payload().map(<[u8]>::to_vec),
                message.key().map(<[u8]>::to_vec),
                header("dlq.source.topic"),
                header("dlq.source.offset"),
                header("dlq.error"),
            ));
        }
    }
    assert_eq!(dead.len(), poison.len(), "{dead:?}");
    for ((what, payload), (bytes, key, topic, offset, error)) in poison.iter().zip(&dead) {
        assert_eq!(bytes.as_deref(), Some(payload.as_slice()), "{what}");
        assert_eq!(key.as_deref(), Some(&b"5"[..]), "{what}");
        assert_eq!(topic.as_deref(), Some(env.stack.topic.as_str()), "{what}");
        assert!(
            offset.is_some() && error.as_ref().is_some_and(|e| !e.is_empty()),
            "{what}"
        );
    }
    assert!(
        dead[2].4.as_deref().unwrap_or_default().contains("user_id"),
        "{:?}",
        dead[2].4
    );

    // ...and a metric counts them by reason (test processes share one recorder, so the
    // ingest's /metrics shows the in-process projector's counters too).
    let metrics = http
        .get(ingest.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let metrics = likes_tests::scrape::Scrape::parse(&metrics)?;
    for reason in ["not_framed", "unknown_schema", "invalid_event"] {
        assert_eq!(
            metrics.value(
                "likes_projector_poison_records_total",
                &[("reason", reason)]
            ),
            Some(1.0),
            "dead letters for {reason}: {metrics:?}"
        );
    }

    projector.stop().await??;
    ingest.running.stop().await?;
    Ok(())
}
