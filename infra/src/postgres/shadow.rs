//! The shadow tables of `likes-replay rebuild postgres` ([`Tables::REBUILD`]),
//! created fresh `LIKE` the live tables, filled with the projector's counting
//! SQL ([`apply_changes`], minus offsets and `applied_events`: the rebuild
//! dedups event ids with the domain's rule in memory), then checked and swapped
//! in by renaming inside one transaction.

use std::time::{Duration, Instant};

use likes_domain::{BatchFold, ItemKey, LikeEvent, Position};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgConnection};

use super::changes::{Tables, apply_changes};
use crate::Error;

/// The live tables: their names, and the names a swap gives them before they
/// are dropped (`*_old`).
const LIVE: Tables = Tables::LIVE;
const SHADOW: Tables = Tables::REBUILD;

/// The name a live table carries between a swap and its drop.
fn old(table: &str) -> String {
    format!("{table}_old")
}

/// Drops any leftover shadow or `*_old` tables and creates empty shadows.
pub async fn recreate(conn: &mut PgConnection) -> Result<(), Error> {
    let drop = format!(
        "DROP TABLE IF EXISTS {}, {}, {}, {}",
        SHADOW.user_likes,
        SHADOW.counters,
        old(LIVE.user_likes),
        old(LIVE.counters)
    );
    let creates = [
        format!(
            "CREATE TABLE {} (LIKE {} INCLUDING ALL)",
            SHADOW.user_likes, LIVE.user_likes
        ),
        format!(
            "CREATE TABLE {} (LIKE {} INCLUDING ALL)",
            SHADOW.counters, LIVE.counters
        ),
    ];
    for sql in std::iter::once(drop).chain(creates) {
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    Ok(())
}

/// Drops the shadow tables (a dry run's, or a build that disagrees with itself).
pub async fn drop_shadow(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {}, {}",
        SHADOW.user_likes, SHADOW.counters
    )))
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether both shadow tables exist (a build to resume needs them).
pub async fn exists(conn: &mut PgConnection) -> Result<bool, Error> {
    let (shadows,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema()
         AND tablename IN ($1, $2)",
    )
    .bind(SHADOW.user_likes)
    .bind(SHADOW.counters)
    .fetch_one(conn)
    .await?;
    Ok(shadows == 2)
}

/// Fills the shadow tables with a snapshot's rows.
pub async fn seed(conn: &mut PgConnection, snapshot_id: i64) -> Result<(), Error> {
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (item_id, item_type, user_id, liked_at, event_id)
         SELECT item_id, item_type, user_id, liked_at, event_id
         FROM snapshot_user_likes WHERE snapshot_id = $1",
        SHADOW.user_likes
    )))
    .bind(snapshot_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {} (item_id, item_type, count, last_offset)
         SELECT item_id, item_type, count, last_offset
         FROM snapshot_counters WHERE snapshot_id = $1",
        SHADOW.counters
    )))
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
) -> Result<ShadowApplied, Error> {
    let mut fold = BatchFold::new();
    for (position, event) in events {
        fold.push(*position, event);
    }
    let changes = fold.finish();
    // The same counting SQL as the projector's batches, aimed at the shadow tables.
    let moved = apply_changes(conn, SHADOW, &changes).await?;
    Ok(ShadowApplied {
        liked: moved.liked as u64,
        unliked: moved.unliked as u64,
    })
}

/// Items whose shadow count disagrees with `COUNT(*)` of shadow `user_likes`.
pub async fn inconsistent_items(conn: &mut PgConnection) -> Result<i64, Error> {
    let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM {counters} c
         FULL JOIN (SELECT item_id, item_type, COUNT(*) AS n FROM {user_likes}
                    GROUP BY item_id, item_type) u
           ON u.item_id = c.item_id AND u.item_type = c.item_type
         WHERE COALESCE(c.count, 0) <> COALESCE(u.n, 0)",
        counters = SHADOW.counters,
        user_likes = SHADOW.user_likes
    )))
    .fetch_one(conn)
    .await?;
    Ok(n)
}

/// One item whose rebuilt count differs from the live one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
pub async fn live_differences(conn: &mut PgConnection) -> Result<Vec<CountDiff>, Error> {
    let rows: Vec<(i16, i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT COALESCE(l.item_type, s.item_type), COALESCE(l.item_id, s.item_id),
                COALESCE(l.count, 0), COALESCE(s.count, 0)
         FROM {live} l FULL JOIN {shadow} s
           ON s.item_id = l.item_id AND s.item_type = l.item_type
         WHERE COALESCE(l.count, 0) <> COALESCE(s.count, 0)
         ORDER BY 1, 2",
        live = LIVE.counters,
        shadow = SHADOW.counters
    )))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(CountDiff::from).collect())
}

/// Of `items`, how many have a shadow count that disagrees with `COUNT(*)` of
/// their shadow `user_likes` (the same check as [`inconsistent_items`], by
/// index, for the items a swap's tail touched).
pub async fn inconsistent_among(conn: &mut PgConnection, items: &[ItemKey]) -> Result<i64, Error> {
    let (ids, types) = columns(items);
    let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM UNNEST($1::bigint[], $2::smallint[]) AS v(item_id, item_type)
         WHERE COALESCE((SELECT c.count FROM {counters} c
                         WHERE c.item_id = v.item_id AND c.item_type = v.item_type), 0)
            <> (SELECT COUNT(*) FROM {user_likes} u
                WHERE u.item_id = v.item_id AND u.item_type = v.item_type)",
        counters = SHADOW.counters,
        user_likes = SHADOW.user_likes
    )))
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
) -> Result<Vec<CountDiff>, Error> {
    let (ids, types) = columns(items);
    let rows: Vec<(i16, i64, i64, i64)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT v.item_type, v.item_id,
                COALESCE((SELECT l.count FROM {live} l
                          WHERE l.item_id = v.item_id AND l.item_type = v.item_type), 0) AS live,
                COALESCE((SELECT s.count FROM {shadow} s
                          WHERE s.item_id = v.item_id AND s.item_type = v.item_type), 0) AS rebuilt
         FROM UNNEST($1::bigint[], $2::smallint[]) AS v(item_id, item_type)
         ORDER BY 1, 2",
        live = LIVE.counters,
        shadow = SHADOW.counters
    )))
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
pub async fn swap(conn: &mut PgConnection) -> Result<(), Error> {
    lock_live(conn).await?;
    for (table, shadow_table) in [
        (LIVE.user_likes, SHADOW.user_likes),
        (LIVE.counters, SHADOW.counters),
    ] {
        let live = indexes(conn, table).await?;
        let shadow = indexes(conn, shadow_table).await?;
        let mut renames = Vec::new();
        for (name, shape) in &live {
            let Some((shadow_name, _)) = shadow.iter().find(|(_, s)| s == shape) else {
                return Err(Error::ShadowIndexMissing {
                    table: table.to_string(),
                    index: name.clone(),
                });
            };
            renames.push(format!(r#"ALTER INDEX "{name}" RENAME TO "{name}_old""#));
            renames.push(format!(r#"ALTER INDEX "{shadow_name}" RENAME TO "{name}""#));
        }
        renames.push(format!("ALTER TABLE {table} RENAME TO {}", old(table)));
        renames.push(format!("ALTER TABLE {shadow_table} RENAME TO {table}"));
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
async fn lock_live(conn: &mut PgConnection) -> Result<(), Error> {
    sqlx::query("SET LOCAL lock_timeout = '200ms'")
        .execute(&mut *conn)
        .await?;
    let deadline = Instant::now() + LOCK_DEADLINE;
    let lock = format!(
        "LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE",
        LIVE.user_likes, LIVE.counters
    );
    loop {
        sqlx::query("SAVEPOINT lock_live")
            .execute(&mut *conn)
            .await?;
        let locked = sqlx::query(AssertSqlSafe(lock.as_str()))
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
            Err(e) => return Err(e.into()),
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
pub async fn drop_old(conn: &mut PgConnection) -> Result<(), Error> {
    for table in [LIVE.user_likes, LIVE.counters] {
        sqlx::query(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS {}",
            old(table)
        )))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A table's indexes: name, and its shape (uniqueness and what follows USING).
async fn indexes(conn: &mut PgConnection, table: &str) -> Result<Vec<(String, String)>, Error> {
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
