//! The API on a projection sharded over two PostgreSQL databases: every item
//! is read from the shard that owns its partition (single and batch counts,
//! has-liked, read-your-writes); a shard cut off leaves the other shard's
//! items answered, and its own items answered from Redis where cached, else
//! marked unavailable (a batch) or 503 with Retry-After (one item); a shard
//! holding another shard map refuses the start, or, found later, its reads
//! and readiness.
//!
//! Rows are written on each shard by infra's batch writer
//! (`likes_tests::projected_rows`): the projector is sharded on another branch.

use std::collections::BTreeSet;
use std::time::Duration;

use likes_domain::Position;
use likes_tests::api::{Answer, post_like as like, quiet_limits, send, start_with};
use likes_tests::pg_proxy::proxied;
use likes_tests::projected_rows::{event, items_per_shard, project, project_at};
use likes_tests::{TestEnv, eventually};

const PARTITIONS: i32 = 4;
const SHARDS: usize = 2;
/// A fixed past moment the rows' like times count from.
const T0: i64 = 1_764_000_000_000;

/// `n` users (from `first_user`) like each item of `items`, item `i` by
/// `i + 1` of them, so every item has its own count.
fn likes_of(items: &[i64], first_user: i64) -> anyhow::Result<Vec<likes_domain::LikeEvent>> {
    let mut events = Vec::new();
    for (i, item) in items.iter().enumerate() {
        for u in 0..=i as i64 {
            events.push(event(first_user + u, 1, *item, true, T0 + u)?);
        }
    }
    Ok(events)
}

/// The count of item `index` of a list built by [`likes_of`].
fn expected(index: usize) -> i64 {
    index as i64 + 1
}

async fn get(http: &reqwest::Client, url: String) -> anyhow::Result<Answer> {
    send(http.get(url)).await
}

fn items_query(items: &[i64]) -> String {
    items
        .iter()
        .map(|i| format!("1:{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_like_states_of_items_on_both_shards_are_read_from_each_items_shard()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    // Per shard: three items read one by one, three read in a batch.
    let per_shard = items_per_shard(&env, 1000, 6);
    let all: Vec<i64> = per_shard.iter().flatten().copied().collect();
    project(&env, &likes_of(&all, 100)?).await?;

    // Each shard holds exactly its own items.
    for (shard, items) in per_shard.iter().enumerate() {
        let held: Vec<(i64,)> = sqlx::query_as("SELECT item_id FROM counters ORDER BY item_id")
            .fetch_all(env.shards.pool(shard))
            .await?;
        let held: BTreeSet<i64> = held.into_iter().map(|r| r.0).collect();
        assert_eq!(
            held,
            items.iter().copied().collect::<BTreeSet<_>>(),
            "shard {shard}"
        );
    }

    let ingest = start_with(env.ingest_settings(), quiet_limits()).await?;
    let http = reqwest::Client::new();
    for items in &per_shard {
        for item in &items[..3] {
            let index = all.iter().position(|i| i == item).unwrap_or_default();
            let answer = get(&http, ingest.url(&format!("/v1/items/1/{item}/count"))).await?;
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(answer.body["count"], expected(index), "item {item}");
            assert_eq!(answer.header("x-count-source"), Some("database"));
        }
    }
    let batch: Vec<i64> = per_shard.iter().flat_map(|i| i[3..].to_vec()).collect();
    let answer = get(
        &http,
        ingest.url(&format!("/v1/counts?items={}", items_query(&batch))),
    )
    .await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    for (n, item) in batch.iter().enumerate() {
        let index = all.iter().position(|i| i == item).unwrap_or_default();
        let got = &answer.body["counts"][n];
        assert_eq!(got["item_id"], *item);
        assert_eq!(got["count"], expected(index), "item {item}: {got}");
        assert_eq!(got["source"], "database");
    }
    assert_eq!(answer.header("retry-after"), None);

    // Has-liked: user 100 likes every item, user 101 all but the first.
    for items in &per_shard {
        let first = all.iter().position(|i| *i == items[0]).unwrap_or_default();
        for (user, liked) in [(100, true), (101, first > 0), (999, false)] {
            let answer = get(
                &http,
                ingest.url(&format!("/v1/users/{user}/likes/1/{}", items[0])),
            )
            .await?;
            assert_eq!(answer.status, 200, "{}", answer.body);
            assert_eq!(
                answer.body["liked"], liked,
                "user {user}, item {}",
                items[0]
            );
        }
    }

    // Read-your-writes on shard 1: the token's partition's offset is read from
    // shard 1, which this test moves past the write as the projector would.
    let item = per_shard[1][0];
    let write = send(
        http.post(ingest.url("/v1/likes"))
            .json(&serde_json::json!({"user_id": 7, "item_id": item, "item_type": 1})),
    )
    .await?;
    assert_eq!(write.status, 202, "{}", write.body);
    let position = Position {
        partition: write.body["partition"].as_i64().unwrap_or(-1) as i32,
        offset: write.body["offset"].as_i64().unwrap_or(-1),
    };
    assert_eq!(env.shards.map().shard_of(position.partition), 1);
    let token = write.body["token"].as_str().unwrap_or_default().to_string();
    project_at(&env, &[(position, event(7, 1, item, true, T0 + 50)?)]).await?;
    let index = all.iter().position(|i| *i == item).unwrap_or_default();
    let answer = get(
        &http,
        ingest.url(&format!("/v1/items/1/{item}/count?after={token}")),
    )
    .await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("x-write-included"), Some("true"));
    assert_eq!(answer.body["count"], expected(index) + 1);
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_one_shard_cut_off_the_other_shards_items_and_cached_items_are_still_answered()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    let per_shard = items_per_shard(&env, 2000, 3);
    let all: Vec<i64> = per_shard.iter().flatten().copied().collect();
    project(&env, &likes_of(&all, 100)?).await?;
    let count_of = |item: i64| expected(all.iter().position(|i| *i == item).unwrap_or_default());
    let (proxy, shard1) = proxied(&env.stack.database_urls[1]).await?;
    let mut settings = env.ingest_settings();
    settings.stack.database_urls[1] = shard1;
    let ingest = start_with(settings, quiet_limits()).await?;
    let http = reqwest::Client::new();
    let [a0, b0, c0] = [per_shard[0][0], per_shard[0][1], per_shard[0][2]];
    let [a1, b1, c1] = [per_shard[1][0], per_shard[1][1], per_shard[1][2]];

    // Read once while shard 1 answers: Redis now holds a1's count.
    let answer = get(&http, ingest.url(&format!("/v1/items/1/{a1}/count"))).await?;
    assert_eq!(answer.body["count"], count_of(a1), "{}", answer.body);

    proxy.cut();
    let answer = get(
        &http,
        ingest.url(&format!("/v1/counts?items={}", items_query(&[a0, b1, a1]))),
    )
    .await?;
    println!("batch with shard 1 cut: {} {}", answer.status, answer.body);
    assert_eq!(answer.status, 200, "{}", answer.body);
    let counts = &answer.body["counts"];
    assert_eq!(counts[0]["count"], count_of(a0));
    assert_eq!(counts[0]["source"], "database");
    assert_eq!(counts[1]["count"], serde_json::Value::Null);
    assert_eq!(counts[1]["source"], "unavailable");
    assert_eq!(counts[2]["count"], count_of(a1));
    assert_eq!(counts[2]["source"], "cache");
    assert_eq!(answer.header("retry-after"), Some("1"));

    // One uncached item of shard 1: 503 naming the shard; of shard 0: answered.
    let answer = get(&http, ingest.url(&format!("/v1/items/1/{b1}/count"))).await?;
    println!("count with shard 1 cut: {} {}", answer.status, answer.body);
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("1"));
    assert_eq!(answer.body["error"]["code"], "unavailable");
    assert_eq!(
        answer.body["error"]["message"],
        "count store shard 1 unavailable"
    );
    let answer = get(&http, ingest.url(&format!("/v1/items/1/{b0}/count"))).await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["count"], count_of(b0));

    // A batch needing only shard 1 is a 503, as with one shard down.
    let answer = get(
        &http,
        ingest.url(&format!("/v1/counts?items={}", items_query(&[c1]))),
    )
    .await?;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("1"));

    // Like states follow their item's shard; a user's list needs every shard.
    let answer = get(&http, ingest.url(&format!("/v1/users/100/likes/1/{c0}"))).await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["liked"], true);
    let answer = get(&http, ingest.url(&format!("/v1/users/100/likes/1/{c1}"))).await?;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.body["error"]["message"],
        "like store shard 1 unavailable"
    );
    let answer = get(&http, ingest.url("/v1/users/100/likes")).await?;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.body["error"]["message"],
        "like store shard 1 unavailable"
    );

    // Back: shard 1's items are answered again.
    proxy.restore();
    eventually(Duration::from_secs(30), || async {
        let answer = get(
            &http,
            ingest.url(&format!("/v1/counts?items={}", items_query(&[b1]))),
        )
        .await?;
        Ok(answer.status == 200 && answer.body["counts"][0]["count"] == count_of(b1))
    })
    .await?;
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_like_on_a_cut_off_shard_is_answered_without_its_count_in_time_and_the_next_after_the_cut_has_it()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    let item = items_per_shard(&env, 3000, 1)[1][0];
    project(&env, &likes_of(&[item], 100)?).await?;
    let (proxy, shard1) = proxied(&env.stack.database_urls[1]).await?;
    let mut settings = env.ingest_settings();
    settings.stack.database_urls[1] = shard1;
    let ingest = start_with(settings, quiet_limits()).await?;
    let http = reqwest::Client::new();
    // Each like is a new user's: one projected like + theirs.
    let optimistic = 2;

    let first = like(&http, &ingest, 500, item).await?;
    assert_eq!(first.status, 202, "{}", first.body);
    assert_eq!(first.body["count"], optimistic, "{}", first.body);

    // Cut and back with no like in between: the lookup's idle connection
    // died meanwhile, and the next like still gets its count.
    proxy.cut();
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.restore();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_a_blip = like(&http, &ingest, 501, item).await?;
    assert_eq!(after_a_blip.status, 202, "{}", after_a_blip.body);
    assert_eq!(
        after_a_blip.body["count"], optimistic,
        "{}",
        after_a_blip.body
    );

    // Cut off: the like is accepted and answered without the count, well
    // before the shard's 3 s read timeout (the lookup's budget is 250 ms).
    proxy.cut();
    let started = std::time::Instant::now();
    let cut_off = like(&http, &ingest, 502, item).await?;
    let took = started.elapsed();
    assert_eq!(cut_off.status, 202, "{}", cut_off.body);
    assert_eq!(
        cut_off.body["count"],
        serde_json::Value::Null,
        "{}",
        cut_off.body
    );
    assert!(took < Duration::from_secs(2), "answered after {took:?}");

    // Back: the hung connection was dropped with its lookup, so the next like
    // connects anew and has its count.
    proxy.restore();
    let back = like(&http, &ingest, 503, item).await?;
    assert_eq!(back.status, 202, "{}", back.body);
    assert_eq!(back.body["count"], optimistic, "{}", back.body);
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingest_refuses_to_start_on_shards_listed_in_another_order() -> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    let mut settings = env.ingest_settings();
    settings.stack.database_urls.swap(0, 1);
    let refused = start_with(settings, quiet_limits()).await;
    let error = match refused {
        Ok(ingest) => {
            ingest.running.stop().await?;
            anyhow::bail!("the ingest started on swapped shards");
        }
        Err(e) => e,
    };
    println!("start refused: {error:#}");
    match error.downcast_ref::<likes_infra::Error>() {
        Some(likes_infra::Error::ShardMapMismatch {
            recorded_shard,
            shards,
            ..
        }) => {
            assert_eq!(*shards, 2);
            assert!((0..2).contains(recorded_shard));
        }
        other => anyhow::bail!("expected a shard map mismatch, got {other:?} ({error:#})"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_unreachable_at_start_whose_map_differs_fails_its_reads_and_readiness_once_reached()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    let per_shard = items_per_shard(&env, 3000, 1);
    let all: Vec<i64> = per_shard.iter().flatten().copied().collect();
    project(&env, &likes_of(&all, 100)?).await?;
    // Shard 1 is listed as shard 0's database (recorded as shard 0), behind a
    // proxy that is cut while the ingest starts.
    let (proxy, wrong) = proxied(&env.stack.database_urls[0]).await?;
    proxy.cut();
    let mut settings = env.ingest_settings();
    settings.stack.database_urls[1] = wrong;
    let ingest = start_with(settings, quiet_limits()).await?;
    let http = reqwest::Client::new();
    let ready = get(&http, ingest.url("/readyz")).await?;
    assert_eq!(
        ready.status, 200,
        "unreachable is not unready: {}",
        ready.body
    );

    proxy.restore();
    eventually(Duration::from_secs(30), || async {
        let ready = get(&http, ingest.url("/readyz")).await?;
        Ok(ready.status == 503)
    })
    .await?;
    let ready = get(&http, ingest.url("/readyz")).await?;
    println!("readiness once shard 1 answers: {}", ready.body);
    assert_eq!(ready.body["checks"]["postgres_shard_map"]["status"], "down");
    assert_eq!(ready.body["checks"]["kafka"]["status"], "ok");

    let item1 = per_shard[1][0];
    let answer = get(&http, ingest.url(&format!("/v1/items/1/{item1}/count"))).await?;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(
        answer.body["error"]["message"],
        "count store shard 1 unavailable"
    );
    let item0 = per_shard[0][0];
    let answer = get(&http, ingest.url(&format!("/v1/items/1/{item0}/count"))).await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["count"], 1);
    ingest.running.stop().await?;
    Ok(())
}
