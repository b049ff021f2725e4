//! `GET /v1/users/{user_id}/likes`: the items a user likes, newest first, a
//! page at a time, gathered from every shard. Pages neither repeat nor skip,
//! a cursor keeps its place when newer likes arrive, the item type filters,
//! and bad limits and cursors are refused naming the field. Each shard's part
//! is one range scan of `user_likes_by_user`.
//!
//! Rows are written on each shard by infra's batch writer
//! (`likes_tests::projected_rows`): the projector is sharded on another branch.

use std::collections::BTreeSet;

use likes_infra::postgres::reads::liked_items_statement;
use likes_tests::TestEnv;
use likes_tests::api::{quiet_limits, send, start_with};
use likes_tests::projected_rows::{event, items_per_shard, project};
use serde_json::Value;

const USER: i64 = 42;
/// A fixed past moment the rows' like times count from.
const T0: i64 = 1_764_000_000_000;

/// (item_type, item_id) in page order.
fn items_of(page: &Value) -> Vec<(i64, i64)> {
    page["likes"]
        .as_array()
        .map(|likes| {
            likes
                .iter()
                .map(|l| {
                    (
                        l["item_type"].as_i64().unwrap_or(0),
                        l["item_id"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every page from `first` (a path with its query) on: the items in order
/// and the size of each page.
async fn all_pages(
    http: &reqwest::Client,
    base: &str,
    first: &str,
) -> anyhow::Result<(Vec<(i64, i64)>, Vec<usize>)> {
    let mut items = Vec::new();
    let mut sizes = Vec::new();
    let mut url = format!("{base}{first}");
    loop {
        let page = send(http.get(&url)).await?;
        anyhow::ensure!(page.status == 200, "{url}: {} {}", page.status, page.body);
        let got = items_of(&page.body);
        sizes.push(got.len());
        items.extend(got);
        match page.body["next_cursor"].as_str() {
            Some(cursor) => url = format!("{base}{first}&cursor={cursor}"),
            None => return Ok((items, sizes)),
        }
        anyhow::ensure!(sizes.len() < 100, "paging does not end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_likes_come_newest_first_from_both_shards_without_repeats_or_gaps()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(4, 2).await?;
    // 13 items of type 1 on each shard and 5 of type 2 on each; several likes
    // share a time, so the order within a time is by item.
    let ones = items_per_shard(&env, 100, 13);
    let twos = items_per_shard(&env, 500, 5);
    let mut liked: Vec<(i64, i64, i64)> = Vec::new(); // (at, type, id)
    let mut events = Vec::new();
    for (n, id) in ones.iter().flatten().enumerate() {
        let at = T0 + (n as i64 / 3) * 1000;
        liked.push((at, 1, *id));
        events.push(event(USER, 1, *id, true, at)?);
    }
    for (n, id) in twos.iter().flatten().enumerate() {
        let at = T0 + n as i64 * 700;
        liked.push((at, 2, *id));
        events.push(event(USER, 2, *id, true, at)?);
    }
    // Another user's likes and an unliked item are not in the list.
    for id in ones.iter().flatten() {
        events.push(event(USER + 1, 1, *id, true, T0 + 99_000)?);
    }
    let unliked = ones[1][0] + 10_000;
    events.push(event(USER, 1, unliked, true, T0 + 50_000)?);
    events.push(event(USER, 1, unliked, false, T0 + 50_001)?);
    project(&env, &events).await?;

    // Both shards hold some of the user's likes, each only its own items.
    for shard in 0..2 {
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT item_id FROM user_likes WHERE user_id = $1")
            .bind(USER)
            .fetch_all(env.shards.pool(shard))
            .await?;
        assert!(rows.len() >= 18, "shard {shard} holds {} rows", rows.len());
        for (id,) in rows {
            assert_eq!(env.shards.map().shard_of_item(id), shard, "item {id}");
        }
    }

    liked.sort_by(|a, b| b.cmp(a));
    let newest_first: Vec<(i64, i64)> = liked.iter().map(|(_, t, i)| (*t, *i)).collect();
    let ingest = start_with(env.ingest_settings(), quiet_limits()).await?;
    let http = reqwest::Client::new();
    let base = ingest.url(&format!("/v1/users/{USER}/likes"));

    let (items, sizes) = all_pages(&http, &base, "?limit=7").await?;
    assert_eq!(items, newest_first);
    assert_eq!(sizes, vec![7, 7, 7, 7, 7, 1]);
    let distinct: BTreeSet<_> = items.iter().collect();
    assert_eq!(distinct.len(), items.len(), "no item twice");

    // The default page is 20; 100 takes all 36 and says there is no more.
    let page = send(http.get(&base)).await?;
    assert_eq!(items_of(&page.body), newest_first[..20].to_vec());
    let page = send(http.get(format!("{base}?limit=100"))).await?;
    assert_eq!(items_of(&page.body), newest_first);
    assert_eq!(page.body["next_cursor"], Value::Null);
    let first = &page.body["likes"][0];
    let newest_at = chrono::DateTime::from_timestamp_millis(liked[0].0).unwrap_or_default();
    assert_eq!(
        first["liked_at"]
            .as_str()
            .map(chrono::DateTime::parse_from_rfc3339),
        Some(Ok(newest_at.fixed_offset()))
    );

    // A cursor keeps its place: the same page again, even after a newer like.
    let page1 = send(http.get(format!("{base}?limit=7"))).await?;
    let cursor = page1.body["next_cursor"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let page2 = send(http.get(format!("{base}?limit=7&cursor={cursor}"))).await?;
    project(&env, &[event(USER, 1, 9_999, true, T0 + 1_000_000)?]).await?;
    let again = send(http.get(format!("{base}?limit=7&cursor={cursor}"))).await?;
    assert_eq!(again.body, page2.body);
    assert_eq!(items_of(&page2.body), newest_first[7..14].to_vec());
    let fresh = send(http.get(format!("{base}?limit=7"))).await?;
    assert_eq!(items_of(&fresh.body)[0], (1, 9_999));

    // The type filter: only type 2, in the same order.
    let (items, sizes) = all_pages(&http, &base, "?item_type=2&limit=3").await?;
    let twos_first: Vec<(i64, i64)> = newest_first.iter().filter(|i| i.0 == 2).copied().collect();
    assert_eq!(items, twos_first);
    assert_eq!(sizes, vec![3, 3, 3, 1]);

    // A user who likes nothing gets an empty last page.
    let page = send(http.get(ingest.url("/v1/users/777/likes"))).await?;
    assert_eq!(page.status, 200);
    assert_eq!(page.body["likes"], serde_json::json!([]));
    assert_eq!(page.body["next_cursor"], Value::Null);
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_limits_cursors_and_filters_are_refused_naming_the_field() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_with(env.ingest_settings(), quiet_limits()).await?;
    let http = reqwest::Client::new();
    for (query, field, code) in [
        ("limit=0", "limit", "invalid_field"),
        ("limit=101", "limit", "invalid_field"),
        ("limit=ten", "limit", "invalid_field"),
        ("cursor=abc", "cursor", "invalid_field"),
        (
            "cursor=01000000000000000000000000000000000000",
            "cursor",
            "invalid_field",
        ),
        ("item_type=0", "item_type", "invalid_field"),
        ("item_type=x", "item_type", "invalid_field"),
        ("page=2", "page", "unknown_field"),
    ] {
        let answer = send(http.get(ingest.url(&format!("/v1/users/1/likes?{query}")))).await?;
        assert_eq!(answer.status, 400, "{query}: {}", answer.body);
        assert_eq!(answer.body["error"]["field"], field, "{query}");
        assert_eq!(answer.body["error"]["code"], code, "{query}");
    }
    let answer = send(http.get(ingest.url("/v1/users/0/likes"))).await?;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.body["error"]["field"], "user_id");
    let answer = send(http.get(ingest.url("/v1/users/1/likes?limit=100&item_type=3"))).await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    ingest.running.stop().await?;
    Ok(())
}

/// The plan of [`liked_items_statement`] for `user` as the API runs it (an
/// unnamed statement, planned with its parameters: a custom plan).
async fn plan(
    conn: &mut sqlx::PgConnection,
    user: i64,
    filtered: bool,
    after: bool,
) -> anyhow::Result<Vec<String>> {
    let mut types = vec!["bigint", "bigint"];
    let mut args = vec![user.to_string(), "21".to_string()];
    if filtered {
        types.push("smallint");
        args.push("2".into());
    }
    if after {
        types.extend(["timestamptz", "smallint", "bigint"]);
        args.extend(["'2026-01-01 12:00:00+00'".into(), "2".into(), "10".into()]);
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "PREPARE page({}) AS {}",
        types.join(", "),
        liked_items_statement(filtered, after)
    )))
    .execute(&mut *conn)
    .await?;
    let plan: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "EXPLAIN EXECUTE page({})",
        args.join(", ")
    )))
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query("DEALLOCATE page").execute(&mut *conn).await?;
    Ok(plan.into_iter().map(|r| r.0).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_shards_part_of_a_page_reads_user_likes_by_user_and_stops_after_the_page()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    // 2000 users with 20 likes each, and user 42 with 5000, spread over a
    // day; then fresh statistics.
    sqlx::query(
        "INSERT INTO user_likes (item_id, item_type, user_id, liked_at, event_id)
         SELECT i, 1 + (i % 3), u, timestamptz '2026-01-01' + (i * 37 % 86400) * interval '1 s',
                gen_random_uuid()
         FROM generate_series(1000, 3000) AS u, generate_series(1, 20) AS i
         UNION ALL
         SELECT i, 1 + (i % 3), 42, timestamptz '2026-01-01' + (i * 37 % 86400) * interval '1 s',
                gen_random_uuid()
         FROM generate_series(1, 5000) AS i",
    )
    .execute(&env.db)
    .await?;
    sqlx::query("ANALYZE user_likes").execute(&env.db).await?;
    let mut conn = env.db.acquire().await?;
    sqlx::query("SET plan_cache_mode = force_custom_plan")
        .execute(&mut *conn)
        .await?;
    for (filtered, after) in [(false, false), (true, false), (false, true), (true, true)] {
        // A user with many likes: a backward scan of the index, stopped by the limit.
        let lines = plan(&mut conn, 42, filtered, after).await?;
        let text = lines.join("\n");
        println!("user with 5000 likes, item_type filter {filtered}, cursor {after}:\n{text}\n");
        assert!(text.contains("Backward using user_likes_by_user"), "{text}");
        assert!(!text.contains("Sort"), "no sort: {text}");
        assert!(!text.contains("Seq Scan"), "{text}");
        if after {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("Index Cond") && l.contains("liked_at")),
                "the cursor bounds the scan: {text}"
            );
        }
        // A user with 20 likes: found through the same index.
        let text = plan(&mut conn, 1500, filtered, after).await?.join("\n");
        println!("user with 20 likes, item_type filter {filtered}, cursor {after}:\n{text}\n");
        assert!(text.contains("user_likes_by_user"), "{text}");
        assert!(!text.contains("Seq Scan"), "{text}");
    }
    Ok(())
}
