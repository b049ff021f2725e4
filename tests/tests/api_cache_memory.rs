//! Reads cannot grow Redis without bound, on a private Redis running the dev
//! stack's own configuration (dev/config/redis.conf: maxmemory, allkeys-lru):
//! a read's refill of a never-counted item expires (or is not stored), and a
//! count Redis evicted under memory pressure is read from PostgreSQL and
//! refilled.

use std::time::Duration;

use likes_domain::ItemKey;
use likes_infra::redis::Keys;
use likes_ingest::Limits;
use likes_tests::api::{quiet_limits, send, start_with};
use likes_tests::redis_server::{PrivateRedis, ingest_settings_on, start_projector_on};
use likes_tests::{TestEnv, eventually};
use redis::aio::ConnectionManager;
use serde_json::json;

const FLOOD_REQUESTS: usize = 3;
const ITEMS_PER_REQUEST: usize = 1000;

async fn dbsize(conn: &ConnectionManager) -> anyhow::Result<i64> {
    Ok(redis::cmd("DBSIZE").query_async(&mut conn.clone()).await?)
}

/// Every key under `pattern`, by SCAN.
async fn keys(conn: &ConnectionManager, pattern: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = conn.clone();
    let mut cursor: u64 = 0;
    let mut found = Vec::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        found.extend(batch);
        if next == 0 {
            return Ok(found);
        }
        cursor = next;
    }
}

/// Item ids nobody ever liked, different in every call.
fn never_liked(n: usize) -> Vec<i64> {
    let seed = uuid::Uuid::new_v4().as_u128();
    (0..n as u128)
        .map(|i| 1 + ((seed.wrapping_add(i * 0x9E37_79B9_7F4A_7C15) % 1_000_000_000_000) as i64))
        .collect()
}

/// `GET /v1/counts` for `ids` (type 1): every answer must be 0.
async fn read_counts(http: &reqwest::Client, base: &str, ids: &[i64]) -> anyhow::Result<()> {
    let items: Vec<String> = ids.iter().map(|id| format!("1:{id}")).collect();
    let answer = send(http.get(format!("{base}/v1/counts?items={}", items.join(",")))).await?;
    anyhow::ensure!(answer.status == 200, "{}", answer.body);
    let counts = answer.body["counts"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    anyhow::ensure!(counts.len() == ids.len(), "{} answers", counts.len());
    anyhow::ensure!(
        counts.iter().all(|c| c["count"] == 0),
        "a never-liked item has count 0"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_reads_of_never_liked_items_leaves_redis_bounded() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let redis = PrivateRedis::start(&[]).await?;
    let conn = redis.connection().await?;
    let ttl = Duration::from_secs(2);
    let ingest = start_with(
        ingest_settings_on(&env, &redis),
        Limits {
            cache_refill_ttl: Some(ttl),
            ..quiet_limits()
        },
    )
    .await?;
    let http = reqwest::Client::new();
    let base = ingest.url("");
    let pattern = Keys::new(&env.stack.redis_key_prefix).all_counts();
    let before = dbsize(&conn).await?;

    for _ in 0..FLOOD_REQUESTS {
        read_counts(&http, &base, &never_liked(ITEMS_PER_REQUEST)).await?;
    }
    let refills = keys(&conn, &pattern).await?;
    let grown = dbsize(&conn).await? - before;
    println!(
        "flood of {FLOOD_REQUESTS} x {ITEMS_PER_REQUEST} never-liked ids: DBSIZE {before} -> {} ({} refills)",
        before + grown,
        refills.len()
    );
    assert!(
        grown <= (FLOOD_REQUESTS * ITEMS_PER_REQUEST) as i64,
        "only refills were added: {grown}"
    );
    let mut without_ttl = Vec::new();
    for key in &refills {
        let pttl: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(&mut conn.clone())
            .await?;
        if !(1..=ttl.as_millis() as i64).contains(&pttl) {
            without_ttl.push((key.clone(), pttl));
        }
    }
    assert!(
        without_ttl.is_empty(),
        "every refill of a never-counted item expires within {ttl:?}; {} do not, e.g. {:?}",
        without_ttl.len(),
        without_ttl.first()
    );
    eventually(Duration::from_secs(15), || async {
        Ok(dbsize(&conn).await? == before)
    })
    .await
    .map_err(|e| anyhow::anyhow!("the refills expired: {e}"))?;

    // With CACHE_REFILL_TTL_SECONDS=0 such refills are not stored at all.
    let unstored = start_with(
        ingest_settings_on(&env, &redis),
        Limits {
            cache_refill_ttl: None,
            ..quiet_limits()
        },
    )
    .await?;
    read_counts(&http, &unstored.url(""), &never_liked(ITEMS_PER_REQUEST)).await?;
    assert_eq!(dbsize(&conn).await?, before, "nothing stored");

    unstored.running.stop().await?;
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_evicted_under_memory_pressure_is_read_from_postgres_and_refilled()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    // The file's policy, with a budget small enough to fill in a test.
    let redis = PrivateRedis::start(&["--maxmemory", "3mb"]).await?;
    let conn = redis.connection().await?;
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn.clone())
        .await?;
    assert_eq!(policy.get(1).map(String::as_str), Some("allkeys-lru"));
    let limits = Limits {
        // Long enough that the flood's refills are still there when it ends.
        cache_refill_ttl: Some(Duration::from_secs(600)),
        ..quiet_limits()
    };
    let ingest = start_with(ingest_settings_on(&env, &redis), limits).await?;
    let projector = start_projector_on(&env, &redis);
    let http = reqwest::Client::new();
    let item = 424_242;
    let key = Keys::new(&env.stack.redis_key_prefix).count(ItemKey::parse(1, item)?);
    for user in 1..=3 {
        let like = json!({"user_id": user, "item_id": item, "item_type": 1});
        let answer = send(http.post(ingest.url("/v1/likes")).json(&like)).await?;
        assert_eq!(answer.status, 202, "{}", answer.body);
    }
    let cached = || async {
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn.clone())
            .await?;
        anyhow::Ok(value)
    };
    eventually(Duration::from_secs(60), || async {
        Ok(cached().await?.is_some_and(|v| v.starts_with("3:")))
    })
    .await?;

    // Memory pressure: reads of never-liked items until the count is evicted
    // (EXISTS, unlike GET, leaves the key's LRU clock alone).
    let exists = || async {
        let n: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query_async(&mut conn.clone())
            .await?;
        anyhow::Ok(n == 1)
    };
    let mut requests = 0;
    while exists().await? {
        anyhow::ensure!(requests < 300, "the count was never evicted");
        read_counts(&http, &ingest.url(""), &never_liked(ITEMS_PER_REQUEST)).await?;
        requests += 1;
    }
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(&mut conn.clone())
        .await?;
    let evicted = info
        .lines()
        .find_map(|l| l.strip_prefix("evicted_keys:"))
        .unwrap_or("0")
        .trim()
        .to_string();
    println!("count evicted after {requests} flood requests; evicted_keys={evicted}");
    assert_ne!(
        evicted, "0",
        "Redis evicted keys rather than refusing writes"
    );

    // Pressure off; the next read finds the truth in PostgreSQL and refills it.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query_async::<()>(&mut conn.clone())
        .await?;
    let path = format!("/v1/items/1/{item}/count");
    let read = send(http.get(ingest.url(&path))).await?;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.body["count"], 3, "{}", read.body);
    assert_eq!(read.header("x-count-source"), Some("database"));
    let (last_offset,): (i64,) =
        sqlx::query_as("SELECT last_offset FROM counters WHERE item_type = 1 AND item_id = $1")
            .bind(item)
            .fetch_one(&env.db)
            .await?;
    assert_eq!(
        cached().await?,
        Some(format!("3:{last_offset}")),
        "refilled, stamped"
    );
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn.clone())
        .await?;
    assert_eq!(pttl, -1, "a counted item's refill does not expire");
    let again = send(http.get(ingest.url(&path))).await?;
    assert_eq!(again.body["count"], 3);
    assert_eq!(again.header("x-count-source"), Some("cache"));

    projector.stop().await??;
    ingest.running.stop().await?;
    Ok(())
}
