//! `likes-replay count --at` gives the count an item had at a past time,
//! computed from its events; without `--at`, the count now.

use std::time::Duration;

use likes_domain::ItemKey;
use likes_replay::commands::count;
use likes_tests::{Ingest, TestEnv};
use serde_json::json;

const ITEM_TYPE: i32 = 1;
const ITEM: i64 = 7;

async fn write(
    http: &reqwest::Client,
    ingest: &Ingest,
    like: bool,
    user: i64,
) -> anyhow::Result<()> {
    let method = if like {
        reqwest::Method::POST
    } else {
        reqwest::Method::DELETE
    };
    let response = http
        .request(method, ingest.url("/v1/likes"))
        .json(&json!({"user_id": user, "item_id": ITEM, "item_type": ITEM_TYPE}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
    Ok(())
}

/// A time strictly between the records acked before it and those produced after:
/// record times have millisecond precision, so step past the current millisecond.
async fn a_moment() -> chrono::DateTime<chrono::Utc> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_at_a_past_time_is_the_count_the_item_had_then() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let http = reqwest::Client::new();
    let item = ItemKey::parse(ITEM_TYPE.into(), ITEM)?;

    let before_any = a_moment().await;
    write(&http, &ingest, true, 1).await?;
    write(&http, &ingest, true, 2).await?;
    write(&http, &ingest, true, 1).await?; // already liked
    let at_two = a_moment().await;
    write(&http, &ingest, false, 2).await?;
    write(&http, &ingest, false, 3).await?; // never liked
    ingest.running.stop().await?;

    assert_eq!(
        count::run(&env.stack, item, Some(before_any)).await?.count,
        0
    );
    let then = count::run(&env.stack, item, Some(at_two)).await?;
    assert_eq!((then.count, then.events), (2, 3));
    let now = count::run(&env.stack, item, None).await?;
    assert_eq!((now.count, now.events), (1, 5));
    Ok(())
}
