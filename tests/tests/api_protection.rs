//! Protections on the real stack: a per-user rate limit shared by two ingest
//! instances through Redis, and fast 503s with Retry-After when the producer
//! is saturated or the broker cannot be reached.

use std::time::Duration;

use likes_infra::redis::ratelimit::Rate;
use likes_ingest::Limits;
use likes_tests::TestEnv;
use likes_tests::api::{quiet_limits, send, start_ingest, start_with};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_holds_across_two_instances_sharing_redis() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    // Three at once, then one token per 100 s: no refill during the test.
    let limits = Limits {
        rate: Some(Rate {
            per_second: 0.01,
            burst: 3,
        }),
        ..quiet_limits()
    };
    let a = start_ingest(&env, limits.clone()).await?;
    let b = start_ingest(&env, limits).await?;
    let http = reqwest::Client::new();
    let before = env.end_offsets()?;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let ingest = if i % 2 == 0 { &a } else { &b };
        let answer = send(
            http.post(ingest.url("/v1/likes"))
                .json(&json!({"user_id": 9, "item_id": 100 + i, "item_type": 1})),
        )
        .await?;
        if answer.status == 429 {
            assert_eq!(answer.body["error"]["code"], "rate_limited");
            let retry: u64 = answer.header("retry-after").unwrap_or("").parse()?;
            assert!(retry >= 1, "Retry-After {retry}");
        }
        statuses.push(answer.status);
    }
    assert_eq!(statuses, vec![202, 202, 202, 429, 429, 429]);
    assert_eq!(
        env.end_offsets()? - before,
        3,
        "refused likes are not produced"
    );

    // Another user has a bucket of their own; a batch takes one token per event.
    let events: Vec<_> = (0..5)
        .map(|i| json!({"action": "like", "user_id": 10, "item_id": 200 + i, "item_type": 1}))
        .collect();
    let batch = send(
        http.post(b.url("/v1/likes:batch"))
            .json(&json!({ "events": events })),
    )
    .await?;
    let statuses: Vec<i64> = batch.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["status"].as_i64())
        .collect();
    assert_eq!(statuses, vec![202, 202, 202, 429, 429], "{}", batch.body);
    a.running.stop().await?;
    b.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_are_shed_with_503_and_retry_after_when_the_producer_cannot_keep_up()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let body = json!({"user_id": 1, "item_id": 1, "item_type": 1});
    let http = reqwest::Client::new();

    // Nothing may wait for the broker: every write is shed before producing.
    let full = start_ingest(
        &env,
        Limits {
            max_in_flight: 0,
            ..quiet_limits()
        },
    )
    .await?;
    let before = env.end_offsets()?;
    let answer = send(http.post(full.url("/v1/likes")).json(&body)).await?;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "overloaded");
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(env.end_offsets()?, before);
    full.running.stop().await?;

    // A broker nobody listens on: no ack within PRODUCE_TIMEOUT_MS → 503, and
    // readiness says which dependency is down.
    let mut settings = env.ingest_settings();
    settings.stack.kafka_bootstrap = "127.0.0.1:9".into();
    settings.produce_timeout = Duration::from_millis(500);
    let away = start_with(settings, quiet_limits()).await?;
    let answer = send(http.post(away.url("/v1/likes")).json(&body)).await?;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "unavailable");
    assert!(answer.header("retry-after").is_some());
    let ready = send(http.get(away.url("/readyz"))).await?;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["checks"]["kafka"]["status"], "down");
    assert_eq!(ready.body["checks"]["redis"]["status"], "ok");
    away.running.stop().await?;
    Ok(())
}
