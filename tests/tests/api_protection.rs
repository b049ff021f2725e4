//! Protections on the real stack: a per-user rate limit shared by two ingest
//! instances through Redis, the rate limit and the dedup memo asked in one
//! call when both are on (per like, and per user of a batch), and fast 503s with Retry-After when the producer
//! is saturated or the broker cannot be reached.

use std::time::Duration;

use likes_domain::{ItemKey, UserId};
use likes_infra::redis::Keys;
use likes_infra::redis::ratelimit::Rate;
use likes_ingest::Limits;
use likes_tests::api::{
    batch_statuses, post_batch, post_like as like, quiet_limits, send, start_ingest, start_with,
};
use likes_tests::redis_server::{PrivateRedis, ingest_settings_on};
use likes_tests::{Ingest, TestEnv};
use serde_json::json;

/// The rate limit and the dedup memo both on: one token per 100 s after the
/// burst, and a memo that answers for a minute.
fn both_protections(burst: u32) -> Limits {
    Limits {
        rate: Some(Rate {
            per_second: 0.01,
            burst,
        }),
        dedup_window: Some(Duration::from_secs(60)),
        ..quiet_limits()
    }
}

/// The value of `likes_ingest_protection_unavailable_total` for `which` in
/// the ingest's metrics (0 when absent).
async fn unavailable(http: &reqwest::Client, ingest: &Ingest, which: &str) -> anyhow::Result<f64> {
    let text = http
        .get(ingest.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let series = format!(r#"likes_ingest_protection_unavailable_total{{protection="{which}"}} "#);
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_protections_on_a_refused_like_is_neither_answered_from_the_memo_nor_marked()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, both_protections(2)).await?;
    let http = reqwest::Client::new();
    let before = env.end_offsets()?;

    let first = like(&http, &ingest, 9, 300).await?;
    let again = like(&http, &ingest, 9, 300).await?;
    // The bucket is empty now: the memo could answer this one, the limit refuses it.
    let third = like(&http, &ingest, 9, 300).await?;
    let other = like(&http, &ingest, 9, 301).await?;
    assert_eq!(
        [first.status, again.status, third.status, other.status],
        [202, 202, 429, 429],
        "{:?} {:?}",
        third.body,
        other.body
    );
    assert_eq!(first.body["deduplicated"], false);
    assert_eq!(again.body["deduplicated"], true, "{}", again.body);
    assert_eq!(
        again.body["event_id"], first.body["event_id"],
        "the memo answers with the logged event"
    );
    assert_eq!(third.body["error"]["code"], "rate_limited");
    assert_eq!(
        env.end_offsets()? - before,
        1,
        "only the first like is produced"
    );

    let keys = Keys::new(&env.stack.redis_key_prefix);
    let user = UserId::parse(9)?;
    let mut redis = redis::Client::open(env.stack.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let in_flight: Option<i64> = redis::cmd("HGET")
        .arg(keys.dedup(user, ItemKey::parse(1, 300)?))
        .arg("n")
        .query_async(&mut redis)
        .await?;
    assert_eq!(in_flight, Some(0), "the produced like's mark was settled");
    let marked: bool = redis::cmd("EXISTS")
        .arg(keys.dedup(user, ItemKey::parse(1, 301)?))
        .query_async(&mut redis)
        .await?;
    assert!(!marked, "a refused like leaves no mark on its pair");
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_protections_on_a_batch_asks_redis_once_per_user_and_marks_only_the_events_that_go()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let redis = PrivateRedis::start(&[]).await?;
    let ingest = start_with(ingest_settings_on(&env, &redis), both_protections(3)).await?;
    let http = reqwest::Client::new();
    // Redis learns the scripts on their first use; count only the batch's own calls.
    let warm = post_batch(&http, &ingest, &[(20, 1)]).await?;
    assert_eq!(batch_statuses(&warm), [202], "{}", warm.body);
    let mut conn = redis.connection().await?;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut conn)
        .await?;
    let before = env.end_offsets()?;

    // User 11's fourth event is past the burst of 3; item 400 comes twice.
    let answer = post_batch(
        &http,
        &ingest,
        &[(11, 400), (11, 401), (11, 400), (11, 402), (12, 500)],
    )
    .await?;
    let batch = &answer.body;
    assert_eq!(
        batch_statuses(&answer),
        [202, 202, 202, 429, 202],
        "{batch}"
    );
    assert_eq!(batch["results"][3]["error"]["code"], "rate_limited");
    assert_eq!(
        env.end_offsets()? - before,
        4,
        "the refused event is not produced"
    );
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await?;
    let evalsha = stats
        .lines()
        .find_map(|line| line.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map(str::parse::<u64>)
        .transpose()?;
    assert_eq!(
        evalsha,
        Some(2 + 4),
        "one script per user before the produce, one settle per produced event: {stats}"
    );

    let keys = Keys::new(&env.stack.redis_key_prefix);
    let memo = |user: i64, item: i64| -> anyhow::Result<String> {
        Ok(keys.dedup(UserId::parse(user)?, ItemKey::parse(1, item)?))
    };
    let (in_flight, action, offset): (Option<i64>, Option<String>, Option<i64>) =
        redis::cmd("HMGET")
            .arg(memo(11, 400)?)
            .arg("n")
            .arg("a")
            .arg("o")
            .query_async(&mut conn)
            .await?;
    assert_eq!(in_flight, Some(0), "both marks of the pair were settled");
    assert_eq!(action.as_deref(), Some("LIKE"));
    assert_eq!(
        offset,
        batch["results"][2]["offset"].as_i64(),
        "the memo holds the pair's later offset"
    );
    let refused: bool = redis::cmd("EXISTS")
        .arg(memo(11, 402)?)
        .query_async(&mut conn)
        .await?;
    assert!(!refused, "a refused event leaves no mark on its pair");

    // The batch kept the memo true: a single repeat is answered from it.
    let again = like(&http, &ingest, 12, 500).await?;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body["deduplicated"], true, "{}", again.body);
    assert_eq!(again.body["event_id"], batch["results"][4]["event_id"]);
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_both_protections_on_likes_go_through_while_redis_refuses_and_are_guarded_again_after()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let redis = PrivateRedis::start(&[]).await?;
    let ingest = start_with(ingest_settings_on(&env, &redis), both_protections(1)).await?;
    let http = reqwest::Client::new();
    let (limit_before, dedup_before) = (
        unavailable(&http, &ingest, "rate_limit").await?,
        unavailable(&http, &ingest, "dedup").await?,
    );

    redis.refuse_writes(true).await?;
    let before = env.end_offsets()?;
    for _ in 0..3 {
        // A bucket of one and a repeat of the same like: each protection
        // would stop all but the first if it could be asked.
        let answer = like(&http, &ingest, 9, 400).await?;
        assert_eq!(answer.status, 202, "{}", answer.body);
        assert_eq!(answer.body["deduplicated"], false);
    }
    assert_eq!(
        env.end_offsets()? - before,
        3,
        "every like is produced while the protections cannot be asked"
    );
    assert_eq!(
        unavailable(&http, &ingest, "rate_limit").await? - limit_before,
        3.0
    );
    // The memo is asked twice per like: the recall before the produce, the
    // settle after it.
    assert_eq!(
        unavailable(&http, &ingest, "dedup").await? - dedup_before,
        6.0
    );

    redis.refuse_writes(false).await?;
    let guarded = like(&http, &ingest, 9, 401).await?;
    let refused = like(&http, &ingest, 9, 402).await?;
    assert_eq!(
        [guarded.status, refused.status],
        [202, 429],
        "{}",
        refused.body
    );
    assert_eq!(
        env.end_offsets()? - before,
        4,
        "the limit holds again once Redis takes writes"
    );
    ingest.running.stop().await?;
    Ok(())
}

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
    let likes: Vec<(i64, i64)> = (0..5).map(|i| (10, 200 + i)).collect();
    let batch = post_batch(&http, &b, &likes).await?;
    assert_eq!(
        batch_statuses(&batch),
        vec![202, 202, 202, 429, 429],
        "{}",
        batch.body
    );
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
