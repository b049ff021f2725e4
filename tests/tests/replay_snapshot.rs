//! `likes-replay snapshot create|list|delete`: a snapshot holds exactly the
//! projection's rows at the offsets stored with it, and can be listed and deleted.

use std::time::Duration;

use likes_infra::postgres::snapshots;
use likes_tests::{TestEnv, eventually};
use serde_json::json;

const ITEM_TYPE: i32 = 1;

type Likes = Vec<(i64, i16, i64, uuid::Uuid)>;
type Counts = Vec<(i64, i16, i64, i64)>;

async fn live(env: &TestEnv) -> anyhow::Result<(Likes, Counts, Vec<(i32, i64)>)> {
    let likes = sqlx::query_as(
        "SELECT item_id, item_type, user_id, event_id FROM user_likes ORDER BY 1, 2, 3",
    )
    .fetch_all(&env.db)
    .await?;
    let counts =
        sqlx::query_as("SELECT item_id, item_type, count, last_offset FROM counters ORDER BY 1, 2")
            .fetch_all(&env.db)
            .await?;
    let offsets = likes_infra::postgres::offsets::positions(&env.db, &env.stack.topic).await?;
    Ok((likes, counts, offsets))
}

async fn copied(env: &TestEnv, id: i64) -> anyhow::Result<(Likes, Counts, Vec<(i32, i64)>)> {
    let likes = sqlx::query_as(
        "SELECT item_id, item_type, user_id, event_id FROM snapshot_user_likes
         WHERE snapshot_id = $1 ORDER BY 1, 2, 3",
    )
    .bind(id)
    .fetch_all(&env.db)
    .await?;
    let counts = sqlx::query_as(
        "SELECT item_id, item_type, count, last_offset FROM snapshot_counters
         WHERE snapshot_id = $1 ORDER BY 1, 2",
    )
    .bind(id)
    .fetch_all(&env.db)
    .await?;
    let offsets = sqlx::query_as(
        "SELECT partition, next_offset FROM snapshot_offsets WHERE snapshot_id = $1 ORDER BY 1",
    )
    .bind(id)
    .fetch_all(&env.db)
    .await?;
    Ok((likes, counts, offsets))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_copies_the_projection_at_its_offsets_and_can_be_listed_and_deleted()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();
    for (user, item, like) in [(1, 10, true), (2, 10, true), (1, 11, true), (2, 10, false)] {
        let method = if like {
            reqwest::Method::POST
        } else {
            reqwest::Method::DELETE
        };
        let response = http
            .request(method, ingest.url("/v1/likes"))
            .json(&json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE}))
            .send()
            .await?;
        anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
    }
    eventually(Duration::from_secs(30), || async {
        let (_, _, offsets) = live(&env).await?;
        Ok(offsets.iter().map(|o| o.1).sum::<i64>() == 4)
    })
    .await?;
    projector.stop().await??;
    ingest.running.stop().await?;

    let first = snapshots::create(&env.db, &env.stack.topic, Some("before deploy")).await?;
    let second = snapshots::create(&env.db, &env.stack.topic, None).await?;

    let expected = live(&env).await?;
    assert_eq!(copied(&env, first.id).await?, expected);
    assert_eq!(
        (first.counters, first.user_likes, first.events),
        (2, 2, 4),
        "{first:?}"
    );
    assert_eq!(first.note.as_deref(), Some("before deploy"));
    let listed = snapshots::list(&env.db).await?;
    assert_eq!(listed, vec![first.clone(), second.clone()]);

    snapshots::delete(&env.db, first.id).await?;
    assert_eq!(snapshots::list(&env.db).await?, vec![second]);
    assert_eq!(copied(&env, first.id).await?, (vec![], vec![], vec![]));
    assert!(snapshots::delete(&env.db, first.id).await.is_err());
    assert_eq!(snapshots::get(&env.db, first.id).await?, None);
    Ok(())
}
