//! The shadow tables of `rebuild postgres`: `user_likes_rebuild` and
//! `counters_rebuild`, created fresh `LIKE` the live tables, filled with the
//! projector's counting rule (the SQL follows `likes_infra::store::writer`, minus
//! offsets and `applied_events`: the rebuild dedups event ids in memory), then
//! checked and swapped in by renaming inside one transaction.

use std::collections::{BTreeMap, HashSet};

use anyhow::bail;
use chrono::{DateTime, Utc};
use likes_domain::{BatchFold, LikeEvent, LikeState, NetChange, Position};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

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
    let mut changes = fold.finish();
    // A stable order, as the writer uses, keeps row locks in one order.
    changes.sort_by_key(|c| (c.item.item_id, c.item.item_type, c.user_id));
    let mut likes = Cols::default();
    let mut unlikes = Cols::default();
    let mut last_offset: BTreeMap<(i64, i16), i64> = BTreeMap::new();
    for c in &changes {
        let seen = last_offset.entry(key(c)).or_insert(c.position.offset);
        *seen = (*seen).max(c.position.offset);
        match c.state {
            LikeState::Liked => likes.push(c),
            LikeState::NotLiked => unlikes.push(c),
        }
    }
    let inserted: Vec<(i64, i16)> = sqlx::query_as(
        "INSERT INTO user_likes_rebuild (item_id, item_type, user_id, liked_at, event_id)
         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::timestamptz[], $5::uuid[])
         ON CONFLICT DO NOTHING
         RETURNING item_id, item_type",
    )
    .bind(&likes.item_ids)
    .bind(&likes.item_types)
    .bind(&likes.user_ids)
    .bind(&likes.at)
    .bind(&likes.event_ids)
    .fetch_all(&mut *conn)
    .await?;
    let deleted: Vec<(i64, i16)> = sqlx::query_as(
        "DELETE FROM user_likes_rebuild AS u
         USING UNNEST($1::bigint[], $2::smallint[], $3::bigint[]) AS v(item_id, item_type, user_id)
         WHERE u.item_id = v.item_id AND u.item_type = v.item_type AND u.user_id = v.user_id
         RETURNING u.item_id, u.item_type",
    )
    .bind(&unlikes.item_ids)
    .bind(&unlikes.item_types)
    .bind(&unlikes.user_ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut deltas: BTreeMap<(i64, i16), i64> = BTreeMap::new();
    for k in &inserted {
        *deltas.entry(*k).or_default() += 1;
    }
    for k in &deleted {
        *deltas.entry(*k).or_default() -= 1;
    }
    deltas.retain(|_, d| *d != 0);
    let (mut ids, mut types, mut amounts, mut offsets) = (vec![], vec![], vec![], vec![]);
    for (k, delta) in &deltas {
        ids.push(k.0);
        types.push(k.1);
        amounts.push(*delta);
        offsets.push(last_offset.get(k).copied().unwrap_or(0));
    }
    let updated: Vec<(i64, i16)> = sqlx::query_as(
        "UPDATE counters_rebuild AS c
           SET count = c.count + v.delta,
               last_offset = GREATEST(c.last_offset, v.last_offset),
               updated_at = now()
         FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[])
              AS v(item_id, item_type, delta, last_offset)
         WHERE c.item_id = v.item_id AND c.item_type = v.item_type
         RETURNING c.item_id, c.item_type",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&amounts)
    .bind(&offsets)
    .fetch_all(&mut *conn)
    .await?;
    let updated: HashSet<(i64, i16)> = updated.into_iter().collect();
    let fresh: Vec<usize> = (0..ids.len())
        .filter(|&i| !updated.contains(&(ids[i], types[i])))
        .collect();
    if !fresh.is_empty() {
        let pick = |v: &Vec<i64>| fresh.iter().map(|&i| v[i]).collect::<Vec<_>>();
        let fresh_types: Vec<i16> = fresh.iter().map(|&i| types[i]).collect();
        // CHECK (count >= 0) rejects an unlike no counter counted: fail loudly.
        sqlx::query(
            "INSERT INTO counters_rebuild (item_id, item_type, count, last_offset)
             SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[])",
        )
        .bind(pick(&ids))
        .bind(fresh_types)
        .bind(pick(&amounts))
        .bind(pick(&offsets))
        .execute(&mut *conn)
        .await?;
    }
    Ok(ShadowApplied {
        liked: inserted.len() as u64,
        unliked: deleted.len() as u64,
    })
}

fn key(c: &NetChange) -> (i64, i16) {
    // ItemType is 1..=i16::MAX by construction.
    (c.item.item_id.get(), c.item.item_type.get() as i16)
}

/// Column arrays for one UNNEST statement.
#[derive(Default)]
struct Cols {
    item_ids: Vec<i64>,
    item_types: Vec<i16>,
    user_ids: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    event_ids: Vec<Uuid>,
}

impl Cols {
    fn push(&mut self, c: &NetChange) {
        let (item_id, item_type) = key(c);
        self.item_ids.push(item_id);
        self.item_types.push(item_type);
        self.user_ids.push(c.user_id.get());
        self.at.push(c.timestamp);
        self.event_ids.push(*c.event_id.as_uuid());
    }
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

/// Items whose shadow count differs from the live count (a zero count and a
/// missing row are the same), at most `limit` of them, and how many in all.
pub async fn live_differences(
    conn: &mut PgConnection,
    limit: i64,
) -> anyhow::Result<(i64, Vec<CountDiff>)> {
    let rows: Vec<(i16, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT COALESCE(l.item_type, s.item_type), COALESCE(l.item_id, s.item_id),
                COALESCE(l.count, 0), COALESCE(s.count, 0), COUNT(*) OVER ()
         FROM counters l FULL JOIN counters_rebuild s
           ON s.item_id = l.item_id AND s.item_type = l.item_type
         WHERE COALESCE(l.count, 0) <> COALESCE(s.count, 0)
         ORDER BY 1, 2 LIMIT $1",
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    let total = rows.first().map_or(0, |r| r.4);
    let diffs = rows
        .into_iter()
        .map(|(item_type, item_id, live, rebuilt, _)| CountDiff {
            item_type,
            item_id,
            live,
            rebuilt,
        })
        .collect();
    Ok((total, diffs))
}

/// Swaps the shadow tables in, inside the caller's transaction: locks the live
/// tables, renames them (and their indexes) to `*_old`, and gives the shadows
/// the live names and index names. The caller commits, then drops the old ones.
pub async fn swap(conn: &mut PgConnection) -> anyhow::Result<()> {
    // A long reader of the live tables fails the swap rather than stalling the
    // projector (waiting on the offsets' row locks) for as long as it reads.
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut *conn)
        .await?;
    sqlx::query("LOCK TABLE user_likes, counters IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *conn)
        .await?;
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

/// Drops the tables a swap replaced.
pub async fn drop_old(conn: &mut PgConnection) -> anyhow::Result<()> {
    sqlx::query("DROP TABLE IF EXISTS user_likes_old, counters_old")
        .execute(conn)
        .await?;
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
