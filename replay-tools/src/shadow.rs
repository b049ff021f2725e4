//! The shadow tables of `rebuild postgres`: `user_likes_rebuild` and
//! `counters_rebuild`, created fresh `LIKE` the live tables, filled with the
//! projector's counting rule (the SQL follows `likes_infra::postgres::writer`, minus
//! offsets and `applied_events`: the rebuild dedups event ids in memory), then
//! checked and swapped in by renaming inside one transaction.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use likes_domain::{BatchFold, ItemKey, LikeEvent, Position};
use likes_infra::postgres::writer::{self, Tables};
use sqlx::{AssertSqlSafe, PgConnection};

/// Drops any leftover shadow or `*_old` tables and creates empty shadows.
pub async fn recreate(conn: &mut PgConnection) -> anyhow::Result<()> {
    for sql in [
        "DROP TABLE IF EXISTS user_likes_rebuild, counters_rebuild, user_likes_old, counters_old",
        "CREATE TABLE user_likes_rebuild (LIKE user_likes INCLUDING ALL)",
        "CREATE TABLE counters_rebuild (LIKE counters INCLUDING ALL)",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Drops the shadow tables (after a dry run).
pub async fn drop_shadow(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("DROP TABLE IF EXISTS user_likes_rebuild, counters_rebuild")
        .execute(conn)
        .await?;
    Ok(())
}

/// Fills the shadow tables with a snapshot's rows.
pub async fn seed(conn: &mut PgConnection, snapshot_id: i64) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO user_likes_rebuild (item_id, item_type, user_id, liked_at, event_id)
         SELECT item_id, item_type, user_id, liked_at, event_id
         FROM snapshot_user_likes WHERE snapshot_id = $1",
    )
    .bind(snapshot_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO counters_rebuild (item_id, item_type, count, last_offset)
         SELECT item_id, item_type, count, last_offset
         FROM snapshot_counters WHERE snapshot_id = $1",
    )
    .bind(snapshot_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Row changes one batch made in the shadow tables.
#[derive(Debug, Default, Clone, Copy)]
pub struct ShadowApplied {
    pub liked: u64,
    pub unliked: u64,
}

/// Applies events (log order, already deduplicated by id) to the shadow tables.
pub async fn apply(
    conn: &mut PgConnection,
    events: &[(Position, LikeEvent)],
) -> anyhow::Result<ShadowApplied> {
    let mut fold = BatchFold::new();
    for (position, event) in events {
        fold.push(*position, event);
    }
    let changes = fold.finish();
    // The same counting SQL as the projector's batches, aimed at the shadow tables.
    let moved = writer::apply_changes(conn, Tables::REBUILD, &changes).await?;
    Ok(ShadowApplied {
        liked: moved.liked as u64,
        unliked: moved.unliked as u64,
    })
}

/// Items whose shadow count disagrees with `COUNT(*)` of shadow `user_likes`.
pub async fn inconsistent_items(conn: &mut PgConnection) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM counters_rebuild c
         FULL JOIN (SELECT item_id, item_type, COUNT(*) AS n FROM user_likes_rebuild
                    GROUP BY item_id, item_type) u
           ON u.item_id = c.item_id AND u.item_type = c.item_type
         WHERE COALESCE(c.count, 0) <> COALESCE(u.n, 0)",
    )
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// One item whose rebuilt count differs from the live one.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CountDiff {
    pub item_type: i16,
    pub item_id: i64,
    pub live: i64,
    pub rebuilt: i64,
}

impl From<(i16, i64, i64, i64)> for CountDiff {
    /// A row of (item type, item id, live count, rebuilt count).
    fn from((item_type, item_id, live, rebuilt): (i16, i64, i64, i64)) -> Self {
        Self {
            item_type,
            item_id,
            live,
            rebuilt,
        }
    }
}

/// Every item whose shadow count differs from the live count (a zero count and
/// a missing row are the same), ordered by item.
pub async fn live_differences(conn: &mut PgConnection) -> anyhow::Result<Vec<CountDiff>> {
    let rows: Vec<(i16, i64, i64, i64)> = sqlx::query_as(
        "SELECT COALESCE(l.item_type, s.item_type), COALESCE(l.item_id, s.item_id),
                COALESCE(l.count, 0), COALESCE(s.count, 0)
         FROM counters l FULL JOIN counters_rebuild s
           ON s.item_id = l.item_id AND s.item_type = l.item_type
         WHERE COALESCE(l.count, 0) <> COALESCE(s.count, 0)
         ORDER BY 1, 2",
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(CountDiff::from).collect())
}

/// Of `items`, how many have a shadow count that disagrees with `COUNT(*)` of
/// their shadow `user_likes` (the same check as [`inconsistent_items`], by
/// index, for the items a swap's tail touched).
pub async fn inconsistent_among(conn: &mut PgConnection, items: &[ItemKey]) -> anyhow::Result<i64> {
    let (ids, types) = columns(items);
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM UNNEST($1::bigint[], $2::smallint[]) AS v(item_id, item_type)
         WHERE COALESCE((SELECT c.count FROM counters_rebuild c
                         WHERE c.item_id = v.item_id AND c.item_type = v.item_type), 0)
            <> (SELECT COUNT(*) FROM user_likes_rebuild u
                WHERE u.item_id = v.item_id AND u.item_type = v.item_type)",
    )
    .bind(&ids)
    .bind(&types)
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// Of `items`, those whose shadow count differs from the live one (as
/// [`live_differences`], by index), ordered by item.
pub async fn live_differences_among(
    conn: &mut PgConnection,
    items: &[ItemKey],
) -> anyhow::Result<Vec<CountDiff>> {
    let (ids, types) = columns(items);
    let rows: Vec<(i16, i64, i64, i64)> = sqlx::query_as(
        "SELECT v.item_type, v.item_id,
                COALESCE((SELECT l.count FROM counters l
                          WHERE l.item_id = v.item_id AND l.item_type = v.item_type), 0) AS live,
                COALESCE((SELECT s.count FROM counters_rebuild s
                          WHERE s.item_id = v.item_id AND s.item_type = v.item_type), 0) AS rebuilt
         FROM UNNEST($1::bigint[], $2::smallint[]) AS v(item_id, item_type)
         ORDER BY 1, 2",
    )
    .bind(&ids)
    .bind(&types)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter(|(_, _, live, rebuilt)| live != rebuilt)
        .map(CountDiff::from)
        .collect())
}

/// Item ids and types as the two arrays the statements above unnest.
fn columns(items: &[ItemKey]) -> (Vec<i64>, Vec<i16>) {
    items
        .iter()
        // ItemType is 1..=i16::MAX by construction.
        .map(|i| (i.item_id.get(), i.item_type.get() as i16))
        .unzip()
}

/// Swaps the shadow tables in, inside the caller's transaction: locks the live
/// tables, renames them (and their indexes) to `*_old`, and gives the shadows
/// the live names and index names. The caller commits, then drops the old ones.
pub async fn swap(conn: &mut PgConnection) -> anyhow::Result<()> {
    lock_live(conn).await?;
    for table in ["user_likes", "counters"] {
        let live = indexes(conn, table).await?;
        let shadow = indexes(conn, &format!("{table}_rebuild")).await?;
        let mut renames = Vec::new();
        for (name, shape) in &live {
            let Some((shadow_name, _)) = shadow.iter().find(|(_, s)| s == shape) else {
                bail!("the shadow of {table} has no index like {name}; not swapping");
            };
            renames.push(format!(r#"ALTER INDEX "{name}" RENAME TO "{name}_old""#));
            renames.push(format!(r#"ALTER INDEX "{shadow_name}" RENAME TO "{name}""#));
        }
        renames.push(format!("ALTER TABLE {table} RENAME TO {table}_old"));
        renames.push(format!("ALTER TABLE {table}_rebuild RENAME TO {table}"));
        for sql in renames {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

/// Takes both live tables exclusively, in short tries. One `LOCK` of two
/// tables holds the first while it waits for the second, and a reader that
/// holds the second and waits for the first (a join of both) closes a
/// deadlock; a try that times out (well before the deadlock check) rolls back
/// to its savepoint, releasing the first, and the reader goes on. A long
/// reader fails the swap after [`LOCK_DEADLINE`] rather than stalling the
/// projector (waiting on the offsets' row locks) for as long as it reads.
async fn lock_live(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("SET LOCAL lock_timeout = '200ms'")
        .execute(&mut *conn)
        .await?;
    let deadline = Instant::now() + LOCK_DEADLINE;
    loop {
        sqlx::query("SAVEPOINT lock_live")
            .execute(&mut *conn)
            .await?;
        let locked = sqlx::query("LOCK TABLE user_likes, counters IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *conn)
            .await;
        match locked {
            Ok(_) => {
                sqlx::query("RELEASE SAVEPOINT lock_live")
                    .execute(&mut *conn)
                    .await?;
                return Ok(());
            }
            Err(e) if is_lock_wait(&e) && Instant::now() < deadline => {
                sqlx::query("ROLLBACK TO SAVEPOINT lock_live")
                    .execute(&mut *conn)
                    .await?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => {
                return Err(e).context("lock the live tables for the swap; not swapping");
            }
        }
    }
}

/// How long the swap keeps trying to take the live tables.
const LOCK_DEADLINE: Duration = Duration::from_secs(10);

/// A lock wait that timed out (55P03) or was chosen as a deadlock victim (40P01).
fn is_lock_wait(e: &sqlx::Error) -> bool {
    let code = e.as_database_error().and_then(|d| d.code());
    matches!(code.as_deref(), Some("55P03" | "40P01"))
}

/// Drops the tables a swap replaced, one per statement: a reader whose cached
/// plan still names both old tables may hold one while it asks for the other,
/// so the drop must never hold one while waiting for the other.
pub async fn drop_old(conn: &mut PgConnection) -> anyhow::Result<()> {
    for sql in [
        "DROP TABLE IF EXISTS user_likes_old",
        "DROP TABLE IF EXISTS counters_old",
    ] {
        sqlx::query(sql).execute(&mut *conn).await?;
    }
    Ok(())
}

/// A table's indexes: name, and its shape (uniqueness and what follows USING).
async fn indexes(conn: &mut PgConnection, table: &str) -> anyhow::Result<Vec<(String, String)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT indexname, indexdef FROM pg_indexes
         WHERE schemaname = current_schema() AND tablename = $1",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, def)| {
            let unique = def.starts_with("CREATE UNIQUE");
            let using = def.split_once(" USING ").map_or("", |(_, u)| u).to_string();
            (name, format!("{unique}:{using}"))
        })
        .collect())
}
