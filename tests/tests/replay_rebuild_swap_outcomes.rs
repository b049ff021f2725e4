//! What a `rebuild postgres` leaves behind when the rebuilt counts differ from
//! the live ones: with `--accept-differences` the repaired counts are swapped
//! in and Redis serves them from its cache at once (and the projector's later
//! likes still move them on); without it the live tables, Redis and the
//! shadow build are kept and the differences are reported.

use std::time::Duration;

use likes_replay::rebuild::{self, RebuildFrom, RebuildOptions};
use likes_tests::api::send;
use likes_tests::{Ingest, TestEnv};

const ITEM: i64 = 10;

/// The API's count of `ITEM` and where it came from (`x-count-source`).
async fn api_count(ingest: &Ingest) -> anyhow::Result<(i64, String)> {
    let answer =
        send(reqwest::Client::new().get(ingest.url(&format!("/v1/items/1/{ITEM}/count")))).await?;
    anyhow::ensure!(answer.status == 200, "{answer:?}");
    let count = answer.body["count"].as_i64().unwrap_or(-1);
    Ok((
        count,
        answer.header("x-count-source").unwrap_or("").to_string(),
    ))
}

/// Three likes of `ITEM`, projected; then `counters` says 7 for it and Redis
/// caches that wrong 7 with the row's own stamp (as a read's refill does).
async fn wrong_count_cached(env: &TestEnv, ingest: &Ingest) -> anyhow::Result<()> {
    for user in 1..=3 {
        ingest.like(user, ITEM).await?;
    }
    env.projected_everything(Duration::from_secs(60)).await?;
    sqlx::query("UPDATE counters SET count = 7 WHERE item_type = 1 AND item_id = $1")
        .bind(ITEM)
        .execute(&env.db)
        .await?;
    let key = likes_infra::redis::Keys::new(&env.stack.redis_key_prefix)
        .count(likes_domain::ItemKey::parse(1, ITEM)?);
    redis::cmd("DEL")
        .arg(&key)
        .query_async::<()>(&mut env.redis.clone())
        .await?;
    api_count(ingest).await?; // the miss refills Redis from counters
    assert_eq!(api_count(ingest).await?, (7, "cache".to_string()));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repairing_rebuild_brings_the_cached_counts_to_the_swapped_values() -> anyhow::Result<()>
{
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    wrong_count_cached(&env, &ingest).await?;

    let done = rebuild::run(
        &env.stack,
        &RebuildOptions {
            accept_differences: true,
            ..RebuildOptions::new(RebuildFrom::Earliest)
        },
    )
    .await?;
    let after_swap = api_count(&ingest).await?;
    ingest.like(4, ITEM).await?;
    env.projected_everything(Duration::from_secs(60)).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let after_next_like = loop {
        let seen = api_count(&ingest).await?;
        if seen.0 == 4 || tokio::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    projector.stop().await??;
    ingest.running.stop().await?;
    assert!(done.swapped, "{done:?}");
    assert_eq!(done.live_differences, 1, "{:?}", done.listed_differences);
    assert_eq!(
        after_swap,
        (3, "cache".to_string()),
        "the API's cached count right after the swap"
    );
    assert_eq!(
        after_next_like,
        (4, "cache".to_string()),
        "the projector's next commit replaces the refreshed value"
    );
    assert_eq!(done.redis_refreshed, 1, "{done:?}");
    assert_eq!(env.db_count(1, ITEM).await?, 4);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_that_differs_from_the_live_counts_is_not_swapped_without_the_flag()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    wrong_count_cached(&env, &ingest).await?;

    let refused = rebuild::run(&env.stack, &RebuildOptions::new(RebuildFrom::Earliest)).await?;
    let (shadow_kept,): (bool,) =
        sqlx::query_as("SELECT to_regclass('counters_rebuild') IS NOT NULL")
            .fetch_one(&env.db)
            .await?;
    let live_after_refusal = env.db_count(1, ITEM).await?;
    let resumed = rebuild::run(
        &env.stack,
        &RebuildOptions {
            accept_differences: true,
            ..RebuildOptions::new(RebuildFrom::Earliest)
        },
    )
    .await?;

    projector.stop().await??;
    ingest.running.stop().await?;
    assert!(!refused.swapped, "{refused:?}");
    let why = refused.refused.clone().unwrap_or_default();
    assert!(why.contains("--accept-differences"), "{why}");
    assert_eq!(refused.live_differences, 1);
    assert_eq!(
        (
            refused.listed_differences[0].item_id,
            refused.listed_differences[0].live
        ),
        (ITEM, 7)
    );
    assert_eq!(refused.listed_differences[0].rebuilt, 3);
    assert_eq!(live_after_refusal, 7, "the live tables are kept");
    assert!(shadow_kept, "the shadow build is kept for a re-run");
    assert!(resumed.resumed && resumed.swapped, "{resumed:?}");
    assert_eq!(env.db_count(1, ITEM).await?, 3);
    Ok(())
}
