//! With `REDIS_CLIENT_CACHE_ENTRIES` set, the ingest keeps the counts it read
//! in process and Redis tells it when one changes (RESP3 client tracking):
//! a count the projector moves is read new, not served stale from the
//! process, and the reads really are tracked (cached) by the server.

use std::num::NonZeroUsize;
use std::time::Duration;

use likes_ingest::Limits;
use likes_tests::api::{quiet_limits, send, start_ingest};
use likes_tests::{TestEnv, eventually};
use serde_json::json;

const ITEM: i64 = 700;

/// Keys Redis tracks for clients that cache them (`INFO stats`).
async fn tracked_keys(env: &TestEnv) -> anyhow::Result<i64> {
    let client = redis::Client::open(env.stack.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await?;
    info.lines()
        .find_map(|l| l.strip_prefix("tracking_total_keys:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no tracking_total_keys in INFO stats"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_the_projector_moves_is_read_new_through_the_client_cache() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(
        &env,
        Limits {
            redis_client_cache: NonZeroUsize::new(1000),
            ..quiet_limits()
        },
    )
    .await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();
    let like = |user: i64| json!({"user_id": user, "item_id": ITEM, "item_type": 1});
    let count_url = ingest.url(&format!("/v1/items/1/{ITEM}/count"));
    let read = || async {
        let read = send(http.get(&count_url)).await?;
        anyhow::ensure!(read.status == 200, "{}", read.body);
        Ok((
            read.body["count"].as_i64(),
            read.header("x-count-source").map(str::to_owned),
        ))
    };

    for user in 1..=3 {
        let written = send(http.post(ingest.url("/v1/likes")).json(&like(user))).await?;
        assert_eq!(written.status, 202, "{}", written.body);
        // Read it until the projector's count shows, so the key is cached
        // (and tracked) before the next like moves it.
        eventually(Duration::from_secs(30), || async {
            Ok(read().await? == (Some(user), Some("cache".to_owned())))
        })
        .await?;
        for _ in 0..5 {
            assert_eq!(read().await?.0, Some(user), "a repeated read");
        }
    }
    let tracked = tracked_keys(&env).await?;
    assert!(
        tracked > 0,
        "Redis tracks the ingest's cached keys: {tracked}"
    );
    assert_eq!(env.db_count(1, ITEM).await?, 3);

    projector.stop().await??;
    ingest.running.stop().await?;
    Ok(())
}
