//! A snapshot asked for while a rebuild's swap transaction is open waits for
//! the swap and then copies only the swapped-in tables, whole: never the new
//! tables through an older view (the shadow rows without the tail the swap
//! added) beside the old offsets.

use std::time::Duration;

use likes_infra::postgres::{shadow, snapshots, swap_lock};
use likes_tests::TestEnv;
use sqlx::PgConnection;

/// Adds one like of `item` by user 1 to the given pair of tables.
async fn add_like(conn: &mut PgConnection, tables: (&str, &str), item: i64) -> anyhow::Result<()> {
    let (counters, user_likes) = tables;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {user_likes} (item_id, item_type, user_id, liked_at, event_id)
         VALUES ($1, 1, 1, now(), gen_random_uuid())"
    )))
    .bind(item)
    .execute(&mut *conn)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {counters} (item_id, item_type, count, last_offset) VALUES ($1, 1, 1, 0)"
    )))
    .bind(item)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_during_a_swap_waits_and_copies_only_the_swapped_in_tables() -> anyhow::Result<()>
{
    let env = TestEnv::new(1).await?;
    let live = ("counters", "user_likes");
    let rebuilt = ("counters_rebuild", "user_likes_rebuild");
    let mut conn = env.db.acquire().await?;
    add_like(&mut conn, live, 10).await?;
    shadow::recreate(&mut conn).await?;
    add_like(&mut conn, rebuilt, 20).await?; // committed, like a worker's batches

    // The swap's transaction as the rebuild runs it: the lock, the tail, the renames.
    let mut swap = env.db.begin().await?;
    swap_lock::exclusive(&mut swap).await?;
    add_like(&mut swap, rebuilt, 21).await?;
    shadow::swap(&mut swap).await?;

    let db = env.db.clone();
    let topic = env.stack.topic.clone();
    let copying = tokio::spawn(async move { snapshots::create(&db, &topic, None).await });
    tokio::time::sleep(Duration::from_millis(700)).await;
    let waited = !copying.is_finished();
    swap.commit().await?;
    let taken = copying.await??;

    let copied: Vec<(i64,)> = sqlx::query_as(
        "SELECT item_id FROM snapshot_counters WHERE snapshot_id = $1 ORDER BY item_id",
    )
    .bind(taken.id)
    .fetch_all(&env.db)
    .await?;
    let copied_likes: Vec<(i64,)> = sqlx::query_as(
        "SELECT item_id FROM snapshot_user_likes WHERE snapshot_id = $1 ORDER BY item_id",
    )
    .bind(taken.id)
    .fetch_all(&env.db)
    .await?;
    shadow::drop_old(&mut conn).await?;
    assert!(waited, "the snapshot waited for the open swap");
    assert_eq!(
        copied,
        [(20,), (21,)],
        "the snapshot holds the swapped-in counters, the swap's tail included"
    );
    assert_eq!(copied_likes, [(20,), (21,)]);
    Ok(())
}
