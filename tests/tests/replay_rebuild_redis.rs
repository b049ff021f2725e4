//! `likes-replay rebuild redis` makes the Redis counts equal PostgreSQL's again,
//! whatever stamps the wrong values carried, and drops counts nothing backs.

use std::time::Duration;

use likes_domain::ItemKey;
use likes_infra::redis::Keys;
use likes_replay::commands::verify::{self, VerifyOptions};
use likes_replay::rebuild;
use likes_tests::{TestEnv, eventually};
use serde_json::json;

const ITEM_TYPE: i32 = 1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_rebuild_restores_every_count_from_postgres() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();
    for (user, item) in [(1, 10), (2, 10), (1, 11)] {
        let response = http
            .post(ingest.url("/v1/likes"))
            .json(&json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
    }
    eventually(Duration::from_secs(30), || async {
        Ok(env.redis_count(ITEM_TYPE, 10).await? == Some(2)
            && env.redis_count(ITEM_TYPE, 11).await? == Some(1))
    })
    .await?;
    projector.stop().await??;
    ingest.running.stop().await?;

    let keys = Keys::new(&env.stack.redis_key_prefix);
    let count_key = |id| anyhow::Ok(keys.count(ItemKey::parse(ITEM_TYPE.into(), id)?));
    let mut redis = env.redis.clone();
    for (key, value) in [
        (count_key(10)?, "50:999999999"), // wrong, "newer" stamp
        (count_key(99)?, "7:1"),          // no such counter
    ] {
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async::<()>(&mut redis)
            .await?;
    }
    redis::cmd("DEL")
        .arg(count_key(11)?)
        .query_async::<()>(&mut redis)
        .await?;

    let done = rebuild::redis::run(&env.stack).await?;

    assert_eq!((done.deleted, done.written), (2, 2));
    assert_eq!(env.redis_count(ITEM_TYPE, 10).await?, Some(2));
    assert_eq!(env.redis_count(ITEM_TYPE, 11).await?, Some(1));
    assert_eq!(env.redis_count(ITEM_TYPE, 99).await?, None);
    let report = verify::run(&env.stack, VerifyOptions::default()).await?;
    assert!(!report.has_drift(), "{report:#?}");
    assert_eq!(report.redis_missing, 0);
    Ok(())
}
