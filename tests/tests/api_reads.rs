//! The read side of the API on the real stack: read-your-writes counts, bulk
//! counts (Redis, then PostgreSQL for misses, refilled), a user's like state
//! and an item's recent likers.

use std::time::Duration;

use likes_domain::{EventId, ItemKey, LikeState, NetChange, Position, UserId};
use likes_infra::postgres::writer::CountUpdate;
use likes_infra::redis::Redis;
use likes_infra::redis::counts::CountCache;
use likes_infra::redis::likers::RecentLikers;
use likes_ingest::Limits;
use likes_tests::api::{quiet_limits, send, start_ingest};
use likes_tests::{TestEnv, eventually};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_passed_the_write_token_includes_that_write_or_says_it_does_not()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, quiet_limits()).await?;
    let impatient = start_ingest(
        &env,
        Limits {
            read_your_writes_timeout: Duration::from_millis(300),
            ..quiet_limits()
        },
    )
    .await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();
    let like = |user: i64| json!({"user_id": user, "item_id": 500, "item_type": 1});

    // Warm up: the projector has joined and projects.
    send(http.post(ingest.url("/v1/likes")).json(&like(1))).await?;
    eventually(Duration::from_secs(60), || async {
        Ok(env.db_count(1, 500).await? == 1)
    })
    .await?;

    let written = send(http.post(ingest.url("/v1/likes")).json(&like(2))).await?;
    assert_eq!(written.status, 202, "{}", written.body);
    let token = written.body["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let read = send(http.get(ingest.url(&format!("/v1/items/1/500/count?after={token}")))).await?;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["count"], 2, "my like is in the count I read");
    assert_eq!(read.header("x-write-included"), Some("true"));

    // An offset the projector will never reach within the wait: answered, flagged.
    let read = send(http.get(impatient.url("/v1/items/1/500/count?after=0:1000000000"))).await?;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.header("x-write-included"), Some("false"));
    let bad = send(http.get(ingest.url("/v1/items/1/500/count?after=soon"))).await?;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.body["error"]["field"], "after");

    projector.stop().await??;
    impatient.running.stop().await?;
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_counts_read_redis_then_postgres_for_misses_and_refill_them() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, quiet_limits()).await?;
    let http = reqwest::Client::new();
    sqlx::query(
        "INSERT INTO counters (item_id, item_type, count, last_offset) VALUES (20, 1, 5, 9), (30, 2, 7, 4)",
    )
    .execute(&env.db)
    .await?;
    let redis = Redis::connect(&env.stack.redis_address(), &env.stack.redis_key_prefix).await?;
    let stamped = |item_id, count, last_offset| {
        anyhow::Ok(CountUpdate {
            item: ItemKey::parse(1, item_id)?,
            count,
            last_offset,
        })
    };
    CountCache::new(&redis)
        .put_counts(&[stamped(10, 3, 1)?, stamped(20, 6, 10)?])
        .await?;

    let url = ingest.url("/v1/counts?items=1:10,1:20,2:30,1:40,1:10");
    let first = send(http.get(&url)).await?;
    assert_eq!(first.status, 200, "{}", first.body);
    let summary = |body: &serde_json::Value| -> Vec<(i64, i64, String)> {
        body["counts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["item_id"].as_i64().unwrap_or(-1),
                    c["count"].as_i64().unwrap_or(-1),
                    c["source"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let s = |id, count, source: &str| (id, count, source.to_string());
    assert_eq!(
        summary(&first.body),
        vec![
            s(10, 3, "cache"),
            s(20, 6, "cache"),
            s(30, 7, "database"),
            s(40, 0, "database"),
            s(10, 3, "cache"),
        ]
    );
    let second = send(http.get(&url)).await?;
    assert!(
        summary(&second.body)
            .iter()
            .all(|(_, _, src)| src == "cache"),
        "misses were refilled: {}",
        second.body
    );
    assert_eq!(env.redis_count(2, 30).await?, Some(7));

    for (query, field) in [
        ("", "items"),
        ("?items=1:0", "items"),
        ("?items=1:1&x=2", "x"),
    ] {
        let bad = send(http.get(ingest.url(&format!("/v1/counts{query}")))).await?;
        assert_eq!(bad.status, 400, "{query}: {}", bad.body);
        assert_eq!(bad.body["error"]["field"], field, "{query}");
    }
    let too_many: Vec<String> = (1..=1001).map(|i| format!("1:{i}")).collect();
    let bad =
        send(http.get(ingest.url(&format!("/v1/counts?items={}", too_many.join(","))))).await?;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1000"))
    );
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_like_state_comes_from_postgres_and_recent_likers_from_redis() -> anyhow::Result<()>
{
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, quiet_limits()).await?;
    let http = reqwest::Client::new();
    sqlx::query(
        "INSERT INTO user_likes (item_id, item_type, user_id, liked_at, event_id)
         VALUES (60, 1, 6, now(), gen_random_uuid())",
    )
    .execute(&env.db)
    .await?;
    let liked = send(http.get(ingest.url("/v1/users/6/likes/1/60"))).await?;
    assert_eq!(liked.status, 200, "{}", liked.body);
    assert_eq!(liked.body["liked"], true);
    let not = send(http.get(ingest.url("/v1/users/7/likes/1/60"))).await?;
    assert_eq!(not.body["liked"], false);
    let bad = send(http.get(ingest.url("/v1/users/0/likes/1/60"))).await?;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].clone()),
        (400, json!("user_id"))
    );

    // What the projector writes after a commit, the endpoint reads back.
    let redis = Redis::connect(&env.stack.redis_address(), &env.stack.redis_key_prefix).await?;
    let likers = RecentLikers::new(&redis, 3);
    let item = ItemKey::parse(1, 60)?;
    let change = |user: i64, state, second: i64| -> anyhow::Result<NetChange> {
        Ok(NetChange {
            user_id: UserId::parse(user)?,
            item,
            state,
            event_id: EventId::generate(),
            timestamp: chrono::DateTime::from_timestamp(1_700_000_000 + second, 0)
                .unwrap_or_default(),
            position: Position {
                partition: 0,
                offset: second,
            },
        })
    };
    likers
        .apply(&[
            change(1, LikeState::Liked, 1)?,
            change(2, LikeState::Liked, 2)?,
            change(3, LikeState::Liked, 3)?,
            change(4, LikeState::Liked, 4)?,
            change(5, LikeState::Liked, 5)?,
        ])
        .await?;
    likers.apply(&[change(4, LikeState::NotLiked, 6)?]).await?;
    let users = |body: &serde_json::Value| -> Vec<i64> {
        body["likers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["user_id"].as_i64())
            .collect()
    };
    let recent = send(http.get(ingest.url("/v1/items/1/60/likers"))).await?;
    assert_eq!(recent.status, 200, "{}", recent.body);
    assert_eq!(
        users(&recent.body),
        vec![5, 3],
        "newest first, kept 3, 4 unliked"
    );
    assert!(recent.body["likers"][0]["liked_at"].is_string());
    let one = send(http.get(ingest.url("/v1/items/1/60/likers?limit=1"))).await?;
    assert_eq!(users(&one.body), vec![5]);
    let none = send(http.get(ingest.url("/v1/items/1/61/likers"))).await?;
    assert_eq!(users(&none.body), Vec::<i64>::new());
    let bad = send(http.get(ingest.url("/v1/items/1/60/likers?limit=0"))).await?;
    assert_eq!(bad.body["error"]["field"], "limit");
    ingest.running.stop().await?;
    Ok(())
}
