//! Reads of the PostgreSQL projection for the API and tools.

use futures::stream::{BoxStream, StreamExt};
use likes_domain::{ItemKey, UserId};
use sqlx::PgPool;
use tracing::instrument;

use crate::Error;

/// An item's count and the log offset it reflects (`None` when never counted).
#[instrument(level = "debug", skip_all, fields(item = %item))]
pub async fn count(pool: &PgPool, item: ItemKey) -> Result<Option<(i64, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT count, last_offset FROM counters WHERE item_id = $1 AND item_type = $2",
    )
    .bind(item.item_id.get())
    .bind(item.item_type.get() as i16)
    .fetch_optional(pool)
    .await?)
}

/// Whether `user` likes `item` according to the projection.
#[instrument(level = "debug", skip_all, fields(item = %item))]
pub async fn likes(pool: &PgPool, user: UserId, item: ItemKey) -> Result<bool, Error> {
    let row: Option<(i32,)> = sqlx::query_as(
        "SELECT 1 FROM user_likes WHERE item_id = $1 AND item_type = $2 AND user_id = $3",
    )
    .bind(item.item_id.get())
    .bind(item.item_type.get() as i16)
    .bind(user.get())
    .fetch_optional(pool)
    .await?;
    Ok(row.is_some())
}

/// The counts of `items` that PostgreSQL holds, in one query; items never
/// counted are absent from the answer.
#[instrument(level = "debug", skip_all, fields(items = items.len()))]
pub async fn counts<'e>(
    db: impl sqlx::PgExecutor<'e>,
    items: &[ItemKey],
) -> Result<Vec<(ItemKey, i64, i64)>, Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = items.iter().map(|i| i.item_id.get()).collect();
    // ItemType is 1..=i16::MAX by construction.
    let types: Vec<i16> = items.iter().map(|i| i.item_type.get() as i16).collect();
    let rows: Vec<(i64, i16, i64, i64)> = sqlx::query_as(
        "SELECT c.item_id, c.item_type, c.count, c.last_offset
         FROM counters AS c
         JOIN UNNEST($1::bigint[], $2::smallint[]) AS v(item_id, item_type)
           ON c.item_id = v.item_id AND c.item_type = v.item_type",
    )
    .bind(&ids)
    .bind(&types)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|(id, ty, count, last_offset)| {
            Ok((super::writer::item_key(id, ty)?, count, last_offset))
        })
        .collect()
}

/// The next offset the projection will apply in `partition` of `topic`: every
/// event below it is committed (`None` when the partition was never claimed).
#[instrument(level = "debug", skip_all, fields(topic, partition))]
pub async fn applied_until(
    pool: &PgPool,
    topic: &str,
    partition: i32,
) -> Result<Option<i64>, Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT next_offset FROM projector_offsets WHERE topic = $1 AND partition = $2",
    )
    .bind(topic)
    .bind(partition)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.0))
}

/// For each `(user, item)`: the item's projected count (0 when never counted)
/// and whether the user likes it, in input order, from one query. The write
/// path asks this for many concurrent requests at once (see the ingest's
/// lookup batcher), so PostgreSQL sees one statement per batch, not two per like.
#[instrument(level = "debug", skip_all, fields(pairs = pairs.len()))]
pub async fn states(
    db: impl sqlx::PgExecutor<'_>,
    pairs: &[(UserId, ItemKey)],
) -> Result<Vec<(i64, bool)>, Error> {
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<i64> = pairs.iter().map(|(u, _)| u.get()).collect();
    let ids: Vec<i64> = pairs.iter().map(|(_, i)| i.item_id.get()).collect();
    // ItemType is 1..=i16::MAX by construction.
    let types: Vec<i16> = pairs
        .iter()
        .map(|(_, i)| i.item_type.get() as i16)
        .collect();
    let rows: Vec<(i64, i64, bool)> = sqlx::query_as(
        "SELECT v.ord, COALESCE(c.count, 0), u.user_id IS NOT NULL
         FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[])
              WITH ORDINALITY AS v(item_id, item_type, user_id, ord)
         LEFT JOIN counters AS c
           ON c.item_id = v.item_id AND c.item_type = v.item_type
         LEFT JOIN user_likes AS u
           ON u.item_id = v.item_id AND u.item_type = v.item_type AND u.user_id = v.user_id",
    )
    .bind(&ids)
    .bind(&types)
    .bind(&users)
    .fetch_all(db)
    .await?;
    let mut out = vec![(0, false); pairs.len()];
    for (ord, count, liked) in rows {
        // ORDINALITY counts from 1; every input row yields exactly one output row.
        if let Some(slot) = usize::try_from(ord - 1).ok().and_then(|i| out.get_mut(i)) {
            *slot = (count, liked);
        }
    }
    Ok(out)
}

/// How many items `counters` holds.
pub async fn counters_len(pool: &PgPool) -> Result<u64, Error> {
    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM counters")
        .fetch_one(pool)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Every row of `counters` as a [`CountUpdate`] (item, count, last offset),
/// streamed: the table is never held in memory.
pub fn all_counts(pool: &PgPool) -> BoxStream<'_, Result<super::writer::CountUpdate, Error>> {
    sqlx::query_as::<_, (i64, i16, i64, i64)>(
        "SELECT item_id, item_type, count, last_offset FROM counters",
    )
    .fetch(pool)
    .map(|row| {
        let (id, ty, count, last_offset) = row?;
        Ok(super::writer::CountUpdate {
            item: super::writer::item_key(id, ty)?,
            count,
            last_offset,
        })
    })
    .boxed()
}

/// An item's two PostgreSQL counts: `counters` (`None`: no row) and
/// `COUNT(*)` of its `user_likes` rows, read in one statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemCounts {
    pub item: ItemKey,
    pub count: Option<i64>,
    pub last_offset: Option<i64>,
    pub likers: i64,
}

/// [`ItemCounts`] of every item either table knows (`sample: None`), or of
/// `sample` random items of `counters`, streamed.
pub fn item_counts(pool: &PgPool, sample: Option<u64>) -> BoxStream<'_, Result<ItemCounts, Error>> {
    type Row = (i64, i16, Option<i64>, Option<i64>, i64);
    let rows = match sample {
        Some(n) => sqlx::query_as::<_, Row>(
            "SELECT s.item_id, s.item_type, s.count, s.last_offset,
                    (SELECT COUNT(*) FROM user_likes AS u
                      WHERE u.item_id = s.item_id AND u.item_type = s.item_type)
               FROM (SELECT item_id, item_type, count, last_offset FROM counters
                      ORDER BY random() LIMIT $1) AS s",
        )
        .bind(i64::try_from(n).unwrap_or(i64::MAX))
        .fetch(pool),
        None => sqlx::query_as::<_, Row>(
            "SELECT COALESCE(c.item_id, u.item_id), COALESCE(c.item_type, u.item_type),
                    c.count, c.last_offset, COALESCE(u.n, 0)
               FROM counters AS c
               FULL OUTER JOIN (SELECT item_id, item_type, COUNT(*) AS n
                                  FROM user_likes GROUP BY item_id, item_type) AS u
                 ON c.item_id = u.item_id AND c.item_type = u.item_type",
        )
        .fetch(pool),
    };
    rows.map(|row| {
        let (id, ty, count, last_offset, likers) = row?;
        Ok(ItemCounts {
            item: super::writer::item_key(id, ty)?,
            count,
            last_offset,
            likers,
        })
    })
    .boxed()
}

/// One item of a user's likes, with the exact time its row holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LikedItem {
    pub item: ItemKey,
    pub liked_at: chrono::DateTime<chrono::Utc>,
}

impl LikedItem {
    /// The order of a user's likes: newest first, ties broken by item (type,
    /// then id, both descending). An item appears once per user, so this is
    /// a total order across every shard.
    pub fn newest_first(a: &Self, b: &Self) -> std::cmp::Ordering {
        (b.liked_at, b.item.item_type.get(), b.item.item_id.get()).cmp(&(
            a.liked_at,
            a.item.item_type.get(),
            a.item.item_id.get(),
        ))
    }
}

/// Up to `limit` of `user`'s likes in this database, newest first (see
/// [`LikedItem::newest_first`]), of `item_type` only when given, strictly
/// after `after` in that order when given. One backward range scan of the
/// index `user_likes_by_user` (user_id, liked_at, item_type, item_id) that
/// stops after `limit` rows: the cursor is a row comparison on its trailing
/// columns, so a deep page costs what the first does. (For a user with few
/// likes the planner may instead fetch them all through the same index and
/// sort them: as cheap, for so few.)
#[instrument(level = "debug", skip_all, fields(limit))]
pub async fn liked_items(
    pool: &PgPool,
    user: UserId,
    item_type: Option<likes_domain::ItemType>,
    after: Option<LikedItem>,
    limit: usize,
) -> Result<Vec<LikedItem>, Error> {
    let sql = liked_items_statement(item_type.is_some(), after.is_some());
    let mut query = sqlx::query_as::<_, (i64, i16, chrono::DateTime<chrono::Utc>)>(sql)
        // An unnamed statement is planned with this user and limit every
        // time: a cached generic plan would judge every user by the average
        // one and, for a user with many likes, read and sort all of them.
        .persistent(false)
        .bind(user.get())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX));
    if let Some(item_type) = item_type {
        // ItemType is 1..=i16::MAX by construction.
        query = query.bind(item_type.get() as i16);
    }
    if let Some(after) = after {
        query = query
            .bind(after.liked_at)
            .bind(after.item.item_type.get() as i16)
            .bind(after.item.item_id.get());
    }
    query
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, ty, liked_at)| {
            Ok(LikedItem {
                item: super::writer::item_key(id, ty)?,
                liked_at,
            })
        })
        .collect()
}

/// The statement [`liked_items`] runs: `$1` user, `$2` limit, then `$3` item
/// type when `filtered`, then the cursor's liked_at, item type and item id
/// when `after` (tests EXPLAIN it). Four fixed statements rather than
/// `$n IS NULL OR ...`: a generic plan would keep such an OR out of the
/// index condition.
pub fn liked_items_statement(filtered: bool, after: bool) -> &'static str {
    match (filtered, after) {
        (false, false) => {
            "SELECT item_id, item_type, liked_at FROM user_likes
             WHERE user_id = $1
             ORDER BY liked_at DESC, item_type DESC, item_id DESC LIMIT $2"
        }
        (true, false) => {
            "SELECT item_id, item_type, liked_at FROM user_likes
             WHERE user_id = $1 AND item_type = $3
             ORDER BY liked_at DESC, item_type DESC, item_id DESC LIMIT $2"
        }
        (false, true) => {
            "SELECT item_id, item_type, liked_at FROM user_likes
             WHERE user_id = $1 AND (liked_at, item_type, item_id) < ($3, $4, $5)
             ORDER BY liked_at DESC, item_type DESC, item_id DESC LIMIT $2"
        }
        (true, true) => {
            "SELECT item_id, item_type, liked_at FROM user_likes
             WHERE user_id = $1 AND item_type = $3
               AND (liked_at, item_type, item_id) < ($4, $5, $6)
             ORDER BY liked_at DESC, item_type DESC, item_id DESC LIMIT $2"
        }
    }
}
