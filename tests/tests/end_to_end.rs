//! A like travels end to end on the real stack: HTTP → Kafka (Avro, registry)
//! → projector → PostgreSQL + Redis → HTTP read, with exact counts.

use std::time::Duration;

use apache_avro::types::Value;
use likes_domain::{Action, EventId, ItemKey, LikeEvent, Projection, UserId};
use likes_tests::{TestEnv, eventually, topic};
use serde_json::json;

const ITEM_TYPE: i32 = 1;

/// The likes and unlikes the test sends: (user, item, action).
fn script() -> Vec<(i64, i64, Action)> {
    use Action::{Like, Unlike};
    vec![
        (1, 100, Like),
        (2, 100, Like),
        (3, 100, Like),
        (1, 100, Like), // repeated like: counts once
        (2, 100, Unlike),
        (4, 200, Unlike), // unlike of something never liked: changes nothing
        (4, 200, Like),
        (5, 200, Like),
        (5, 200, Unlike),
        (5, 200, Like),
        (6, 300, Like),
        (6, 300, Unlike),
        (7, 400, Unlike),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likes_from_several_users_converge_to_exact_counts_everywhere() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();

    let mut model = Projection::default();
    for (user, item, action) in script() {
        let (method, path) = match action {
            Action::Like => (reqwest::Method::POST, "/v1/likes"),
            Action::Unlike => (reqwest::Method::DELETE, "/v1/likes"),
        };
        let response = http
            .request(method, ingest.url(path))
            .json(&json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE}))
            .send()
            .await?;
        assert_eq!(response.status(), 202, "{:?}", response.text().await?);
        let body: serde_json::Value = response.json().await?;
        assert!(body["partition"].as_i64().is_some() && body["offset"].as_i64().is_some());
        let event_id = EventId::parse(body["event_id"].as_str().unwrap_or_default())?;
        model.apply(&LikeEvent {
            event_id,
            user_id: UserId::parse(user)?,
            item: ItemKey::parse(ITEM_TYPE.into(), item)?,
            action,
            timestamp: chrono::Utc::now(),
        });
    }
    let expected: Vec<(i64, i64)> = [100, 200, 300, 400]
        .iter()
        .map(|&item| {
            (
                item,
                model.count(ItemKey::parse(ITEM_TYPE.into(), item).unwrap()),
            )
        })
        .collect();
    assert_eq!(expected, vec![(100, 2), (200, 2), (300, 0), (400, 0)]);

    // Converged once PostgreSQL holds the exact counts...
    eventually(Duration::from_secs(30), || async {
        for (item, count) in &expected {
            if env.db_count(ITEM_TYPE, *item).await? != *count {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    for (item, count) in &expected {
        assert_eq!(
            env.db_likers(ITEM_TYPE, *item).await?,
            *count,
            "user_likes of {item}"
        );
    }
    // ...and Redis, written after the commit, agrees for every item that changed.
    eventually(Duration::from_secs(10), || async {
        Ok(env.redis_count(ITEM_TYPE, 100).await? == Some(2)
            && env.redis_count(ITEM_TYPE, 200).await? == Some(2))
    })
    .await?;
    for (item, count) in &expected {
        let response = http
            .get(ingest.url(&format!("/v1/items/{ITEM_TYPE}/{item}/count")))
            .send()
            .await?;
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body["count"].as_i64(), Some(*count), "GET count of {item}");
    }

    // The projector keeps the recent likers of each item in Redis.
    let body: serde_json::Value = http
        .get(ingest.url(&format!("/v1/items/{ITEM_TYPE}/100/likers")))
        .send()
        .await?
        .json()
        .await?;
    let mut likers: Vec<i64> = body["likers"]
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["user_id"].as_i64()).collect())
        .unwrap_or_default();
    likers.sort();
    assert_eq!(likers, vec![1, 3], "{body}");

    // Every record on the topic decodes with the schema the registry holds
    // under the id in its header, and says what the API was asked.
    let records = topic::read_all(
        &env.stack.kafka_bootstrap,
        &env.stack.schema_registry_url,
        &env.stack.topic,
        env.partitions,
    )
    .await?;
    assert_eq!(records.len(), script().len());
    for record in &records {
        let Value::Record(fields) = &record.value else {
            panic!("not a record: {:?}", record.value);
        };
        let item_id = fields
            .iter()
            .find(|(n, _)| n == "item_id")
            .map(|(_, v)| v.clone());
        assert_eq!(
            item_id.map(|v| format!("{v:?}")),
            record.key.as_ref().map(|k| format!("Long({k})"))
        );
    }

    projector.stop().await??;
    ingest.running.stop().await?;
    Ok(())
}
