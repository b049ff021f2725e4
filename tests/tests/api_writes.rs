//! The write side of the API on the real stack: batches with per-event
//! results, read-your-writes tokens, optimistic counts and quick dedup.

use std::time::Duration;

use likes_ingest::Limits;
use likes_tests::TestEnv;
use likes_tests::api::{quiet_limits, send, start_ingest};
use serde_json::{Value, json};

fn like(user: i64, item: i64) -> Value {
    json!({"user_id": user, "item_id": item, "item_type": 1})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_publishes_its_good_events_and_names_the_field_of_each_bad_one()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, quiet_limits()).await?;
    let http = reqwest::Client::new();
    let before = env.end_offsets()?;
    let events = json!({"events": [
        {"action": "like", "user_id": 1, "item_id": 10, "item_type": 1},
        {"action": "like", "user_id": 0, "item_id": 10, "item_type": 1},
        {"action": "unlike", "user_id": 2, "item_id": 11, "item_type": 1,
         "event_id": "0194e4c4-6f5c-7d2a-9a4e-2f6f3c1a9b10"},
        {"action": "love", "user_id": 3, "item_id": 10, "item_type": 1},
        {"action": "like", "user_id": 3, "item_id": 12, "item_type": 1, "colour": "red"},
        {"action": "like", "user_id": 4, "item_id": 12, "item_type": 1}
    ]});
    let answer = send(http.post(ingest.url("/v1/likes:batch")).json(&events)).await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["accepted"], 3, "{}", answer.body);
    assert_eq!(answer.body["rejected"], 3, "{}", answer.body);
    let results = answer.body["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(results.len(), 6);
    for (i, result) in results.iter().enumerate() {
        assert_eq!(result["index"], i, "{result}");
    }
    for i in [0, 2, 5] {
        assert_eq!(results[i]["status"], 202, "{}", results[i]);
        assert!(results[i]["partition"].is_i64() && results[i]["offset"].is_i64());
        assert!(results[i]["token"].is_string());
    }
    assert_eq!(
        results[2]["event_id"],
        "0194e4c4-6f5c-7d2a-9a4e-2f6f3c1a9b10"
    );
    let field = |i: usize| results[i]["error"]["field"].as_str().map(str::to_string);
    assert_eq!(results[1]["status"], 400);
    assert_eq!(field(1).as_deref(), Some("user_id"));
    assert_eq!(field(3).as_deref(), Some("action"));
    assert_eq!(field(4).as_deref(), Some("colour"));
    assert_eq!(env.end_offsets()? - before, 3, "exactly the good events");

    // Over the limit: refused as a whole, the limit named, nothing published.
    let too_many: Vec<Value> = (1..=1001)
        .map(|u| json!({"action": "like", "user_id": u, "item_id": 1, "item_type": 1}))
        .collect();
    let answer = send(
        http.post(ingest.url("/v1/likes:batch"))
            .json(&json!({ "events": too_many })),
    )
    .await?;
    assert_eq!(answer.status, 400, "{}", answer.body);
    assert_eq!(answer.body["error"]["code"], "batch_too_large");
    assert_eq!(answer.body["error"]["field"], "events");
    assert!(
        answer.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("1000")),
        "{}",
        answer.body
    );
    let answer = send(
        http.post(ingest.url("/v1/likes:batch"))
            .header("content-type", "text/plain")
            .body(events.to_string()),
    )
    .await?;
    assert_eq!(answer.status, 415);
    assert_eq!(answer.body["error"]["code"], "unsupported_media_type");
    assert!(
        answer.body["error"]["message"].is_string(),
        "{}",
        answer.body
    );
    assert_eq!(
        env.end_offsets()? - before,
        3,
        "refused batches publish nothing"
    );
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_batch_of_a_thousand_events_is_produced_concurrently_and_all_acked()
-> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let ingest = start_ingest(&env, quiet_limits()).await?;
    let events: Vec<Value> = (1..=1000)
        .map(|u| json!({"action": "like", "user_id": u, "item_id": u % 7 + 1, "item_type": 1}))
        .collect();
    let before = env.end_offsets()?;
    let answer = send(
        reqwest::Client::new()
            .post(ingest.url("/v1/likes:batch"))
            .json(&json!({ "events": events })),
    )
    .await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["accepted"], 1000);
    assert_eq!(env.end_offsets()? - before, 1000);
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_identical_like_is_answered_from_the_memo_but_a_change_of_mind_is_not()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let limits = Limits {
        dedup_window: Some(Duration::from_secs(60)),
        ..quiet_limits()
    };
    let ingest = start_ingest(&env, limits).await?;
    let http = reqwest::Client::new();
    let before = env.end_offsets()?;

    let first = send(http.post(ingest.url("/v1/likes")).json(&like(7, 70))).await?;
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.body["deduplicated"], false);
    assert_eq!(
        first.body["count"], 1,
        "optimistic: nothing projected + my like"
    );
    let again = send(http.post(ingest.url("/v1/likes")).json(&like(7, 70))).await?;
    assert_eq!(again.status, 202, "{}", again.body);
    assert_eq!(again.body["deduplicated"], true);
    assert_eq!(again.header("x-deduplicated"), Some("true"));
    assert_eq!(again.body["event_id"], first.body["event_id"]);
    assert_eq!(again.body["offset"], first.body["offset"]);
    assert_eq!(env.end_offsets()? - before, 1, "the repeat is not produced");

    // like, unlike, like: each a change, each produced.
    let unlike = send(http.delete(ingest.url("/v1/likes")).json(&like(7, 70))).await?;
    assert_eq!(unlike.body["deduplicated"], false, "{}", unlike.body);
    assert_eq!(unlike.body["count"], 0, "{}", unlike.body);
    let relike = send(http.post(ingest.url("/v1/likes")).json(&like(7, 70))).await?;
    assert_eq!(relike.body["deduplicated"], false, "{}", relike.body);
    assert_eq!(env.end_offsets()? - before, 3);
    ingest.running.stop().await?;
    Ok(())
}
