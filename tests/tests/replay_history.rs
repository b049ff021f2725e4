//! `likes-replay history` and `explain` read back exactly the events the test
//! produced through the API: order, positions, what each did and the running
//! counts, and the explanation agrees with the projection (or says it differs).

use std::collections::HashMap;
use std::time::Duration;

use likes_domain::{ItemKey, UserId};
use likes_infra::kafka::partitioner::partition_for_item;
use likes_replay::commands::explain::{self, Verdict};
use likes_replay::commands::history::{self, Effect, HistoryQuery, HistoryRow, Subject};
use likes_tests::{Ingest, TestEnv, eventually};
use serde_json::json;

const ITEM_TYPE: i32 = 1;
const ITEM: i64 = 100;
const OTHER_ITEM: i64 = 200;

/// What the API answered for one write.
struct Written {
    event_id: String,
    partition: i32,
    offset: i64,
}

async fn write(
    http: &reqwest::Client,
    ingest: &Ingest,
    like: bool,
    user: i64,
    item: i64,
    event_id: Option<&str>,
) -> anyhow::Result<Written> {
    let mut body = json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE});
    if let Some(id) = event_id {
        body["event_id"] = json!(id);
    }
    let method = if like {
        reqwest::Method::POST
    } else {
        reqwest::Method::DELETE
    };
    let response = http
        .request(method, ingest.url("/v1/likes"))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
    let answer: serde_json::Value = response.json().await?;
    Ok(Written {
        event_id: answer["event_id"].as_str().unwrap_or_default().to_string(),
        partition: i32::try_from(answer["partition"].as_i64().unwrap_or(-1))?,
        offset: answer["offset"].as_i64().unwrap_or(-1),
    })
}

/// Produces the script; returns the writes in order.
async fn produce(env: &TestEnv) -> anyhow::Result<Vec<Written>> {
    let ingest = env.start_ingest().await?;
    let http = reqwest::Client::new();
    let retried = uuid::Uuid::now_v7().to_string();
    let mut written = Vec::new();
    for (like, user, item, id) in [
        (true, 1, ITEM, None),           // liked: 1
        (true, 2, ITEM, None),           // liked: 2
        (true, 1, ITEM, None),           // already liked: 2
        (false, 3, ITEM, None),          // not liked (never liked): 2
        (true, 4, ITEM, Some(&retried)), // liked: 3
        (true, 4, ITEM, Some(&retried)), // the same event again: duplicate, 3
        (false, 2, ITEM, None),          // unliked: 2
        (true, 1, OTHER_ITEM, None),     // another item of user 1
    ] {
        written.push(write(&http, &ingest, like, user, item, id.map(String::as_str)).await?);
    }
    ingest.running.stop().await?;
    Ok(written)
}

async fn history_of(env: &TestEnv, subject: Subject) -> anyhow::Result<Vec<HistoryRow>> {
    let query = HistoryQuery {
        subject,
        since: None,
        until: None,
    };
    let mut rows = Vec::new();
    history::run(&env.stack, &query, &HashMap::new(), |row| {
        rows.push(row);
        Ok(())
    })
    .await?;
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_items_history_shows_each_event_with_its_effect_and_running_count() -> anyhow::Result<()>
{
    let env = TestEnv::new(4).await?;
    let written = produce(&env).await?;
    let item = ItemKey::parse(ITEM_TYPE.into(), ITEM)?;

    let rows = history_of(&env, Subject::Item(item)).await?;

    let seen: Vec<(i64, Effect, i64)> = rows
        .iter()
        .map(|r| (r.user_id, r.effect, r.count))
        .collect();
    assert_eq!(
        seen,
        vec![
            (1, Effect::Liked, 1),
            (2, Effect::Liked, 2),
            (1, Effect::AlreadyLiked, 2),
            (3, Effect::NotLiked, 2),
            (4, Effect::Liked, 3),
            (4, Effect::Duplicate, 3),
            (2, Effect::Unliked, 2),
        ]
    );
    for (row, w) in rows.iter().zip(&written) {
        assert_eq!((row.partition, row.offset), (w.partition, w.offset));
        assert_eq!(row.event_id, w.event_id);
        assert_eq!((row.item_type, row.item_id), (ITEM_TYPE, ITEM));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_partition_computed_for_an_item_is_the_one_the_producer_chose() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let written = produce(&env).await?;
    assert_eq!(written[0].partition, partition_for_item(ITEM, 4));
    assert_eq!(written[7].partition, partition_for_item(OTHER_ITEM, 4));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_users_history_spans_items_oldest_first_counting_the_items_liked() -> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let written = produce(&env).await?;

    let rows = history_of(&env, Subject::User(UserId::parse(1)?)).await?;

    let seen: Vec<(i64, Effect, i64, &str)> = rows
        .iter()
        .map(|r| (r.item_id, r.effect, r.count, r.event_id.as_str()))
        .collect();
    assert_eq!(
        seen,
        vec![
            (ITEM, Effect::Liked, 1, written[0].event_id.as_str()),
            (ITEM, Effect::AlreadyLiked, 1, written[2].event_id.as_str()),
            (OTHER_ITEM, Effect::Liked, 2, written[7].event_id.as_str()),
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_derives_the_projected_count_and_says_why_events_changed_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let projector = env.start_projector();
    let written = produce(&env).await?;
    let item = ItemKey::parse(ITEM_TYPE.into(), ITEM)?;
    let end = written[6].offset + 1;
    let partition = written[6].partition;
    eventually(Duration::from_secs(30), || async {
        let applied =
            likes_infra::postgres::reads::applied_until(&env.db, &env.stack.topic, partition)
                .await?;
        Ok(applied.is_some_and(|a| a >= end))
    })
    .await?;

    let x = explain::run(&env.stack, item).await?;

    assert_eq!(x.verdict, Verdict::Matches, "{x:#?}");
    assert_eq!((x.derived_count, x.stored_count), (2, Some(2)));
    assert_eq!(x.partition, partition);
    assert_eq!(
        (
            x.events,
            x.liked,
            x.unliked,
            x.duplicate,
            x.already_liked,
            x.not_liked
        ),
        (7, 3, 1, 1, 1, 1)
    );
    let unchanged: Vec<(&str, Effect)> = x
        .unchanged
        .iter()
        .map(|r| (r.event_id.as_str(), r.effect))
        .collect();
    assert_eq!(
        unchanged,
        vec![
            (written[2].event_id.as_str(), Effect::AlreadyLiked),
            (written[3].event_id.as_str(), Effect::NotLiked),
            (written[5].event_id.as_str(), Effect::Duplicate),
        ]
    );
    projector.stop().await??;

    // A counter that drifted from its events is called out.
    sqlx::query("UPDATE counters SET count = 5 WHERE item_type = $1 AND item_id = $2")
        .bind(ITEM_TYPE as i16)
        .bind(ITEM)
        .execute(&env.db)
        .await?;
    let x = explain::run(&env.stack, item).await?;
    assert_eq!(x.verdict, Verdict::Differs);
    assert_eq!((x.derived_count, x.stored_count), (2, Some(5)));
    Ok(())
}
