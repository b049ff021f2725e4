//! `likes-replay verify` finds drift injected into Redis and into `counters`,
//! and `--repair` puts the Redis side right from PostgreSQL.

use std::time::Duration;

use likes_domain::ItemKey;
use likes_infra::redis::Keys;
use likes_replay::commands::verify::{self, VerifyOptions, VerifyReport};
use likes_tests::{TestEnv, eventually};
use serde_json::json;

const ITEM_TYPE: i32 = 1;

/// Likes per item: item 1 gets 2, item 2 gets 3, item 3 gets 1.
const LIKES: [(i64, i64); 6] = [(1, 1), (2, 1), (1, 2), (2, 2), (3, 2), (1, 3)];

async fn projected_env() -> anyhow::Result<TestEnv> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();
    for (user, item) in LIKES {
        let response = http
            .post(ingest.url("/v1/likes"))
            .json(&json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
    }
    eventually(Duration::from_secs(30), || async {
        for (item, count) in [(1, 2), (2, 3), (3, 1)] {
            if env.redis_count(ITEM_TYPE, item).await? != Some(count) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await?;
    // Stopped, so that nothing but the test changes the projections from here.
    projector.stop().await??;
    ingest.running.stop().await?;
    Ok(env)
}

fn drifted(report: &VerifyReport) -> Vec<(i64, bool, bool)> {
    let mut v: Vec<_> = report
        .drift
        .iter()
        .map(|d| (d.item_id, d.redis_drift, d.counters_drift))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_that_agree_verify_clean() -> anyhow::Result<()> {
    let env = projected_env().await?;
    let report = verify::run(&env.stack, VerifyOptions::default()).await?;
    assert_eq!(report.checked, 3);
    assert!(!report.has_drift(), "{report:#?}");
    let sampled = verify::run(
        &env.stack,
        VerifyOptions {
            sample: Some(2),
            repair: false,
        },
    )
    .await?;
    assert_eq!(sampled.checked, 2);
    assert!(!sampled.has_drift());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_injected_drift_and_repair_fixes_the_redis_side() -> anyhow::Result<()> {
    let env = projected_env().await?;
    let mut redis = env.redis.clone();
    let keys = Keys::new(&env.stack.redis_key_prefix);
    let count_key = |id| anyhow::Ok(keys.count(ItemKey::parse(ITEM_TYPE.into(), id)?));
    // A wrong Redis count with a stamp so high the normal write path would keep it.
    redis::cmd("SET")
        .arg(count_key(1)?)
        .arg("99:999999999")
        .query_async::<()>(&mut redis)
        .await?;
    // A counter that disagrees with its user_likes rows.
    sqlx::query("UPDATE counters SET count = count + 4 WHERE item_type = $1 AND item_id = 2")
        .bind(ITEM_TYPE as i16)
        .execute(&env.db)
        .await?;
    // A missing Redis count is a cache miss, not drift.
    redis::cmd("DEL")
        .arg(count_key(3)?)
        .query_async::<()>(&mut redis)
        .await?;

    let report = verify::run(&env.stack, VerifyOptions::default()).await?;
    assert!(report.has_drift());
    assert_eq!(report.redis_missing, 1);
    // Item 2: Redis (3) now also differs from the inflated counter (7).
    assert_eq!(drifted(&report), vec![(1, true, false), (2, true, true)]);
    assert_eq!(
        env.redis_count(ITEM_TYPE, 1).await?,
        Some(99),
        "verify alone changes nothing"
    );

    let repaired = verify::run(
        &env.stack,
        VerifyOptions {
            sample: None,
            repair: true,
        },
    )
    .await?;
    assert_eq!(repaired.repaired, 1, "{repaired:#?}");
    assert_eq!(env.redis_count(ITEM_TYPE, 1).await?, Some(2));
    // PostgreSQL that disagrees with itself is never copied into Redis.
    assert_eq!(env.redis_count(ITEM_TYPE, 2).await?, Some(3));

    let after = verify::run(&env.stack, VerifyOptions::default()).await?;
    assert_eq!(drifted(&after), vec![(2, true, true)]);
    assert!(after.has_drift());
    Ok(())
}
