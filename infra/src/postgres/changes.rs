//! The counting SQL, in one place for the live projection and the shadow tables
//! of a rebuild: net (user, item) changes become inserted or deleted
//! `user_likes` rows, and only those transitions move `counters`.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use likes_domain::{ItemKey, LikeState, NetChange};
use uuid::Uuid;

use super::writer::{CountUpdate, count_updates, item_key};
use crate::Error;

/// Which pair of projection tables a batch of changes goes to: the live ones, or
/// the shadow tables `likes-replay rebuild postgres` builds before its swap.
#[derive(Debug, Clone, Copy)]
pub struct Tables {
    pub user_likes: &'static str,
    pub counters: &'static str,
}

impl Tables {
    pub const LIVE: Tables = Tables {
        user_likes: "user_likes",
        counters: "counters",
    };
    pub const REBUILD: Tables = Tables {
        user_likes: "user_likes_rebuild",
        counters: "counters_rebuild",
    };
}

/// What a set of net changes did to the tables.
#[derive(Debug, Default)]
pub struct Moved {
    pub liked: usize,
    pub unliked: usize,
    pub counts: Vec<CountUpdate>,
}

/// Applies net (user, item) changes: inserts the newly liked and deletes the
/// newly unliked rows, and moves each item's counter by the transitions that
/// really happened. The one home of the counting SQL, live or shadow.
pub async fn apply_changes(
    tx: &mut sqlx::PgConnection,
    tables: Tables,
    changes: &[NetChange],
) -> Result<Moved, Error> {
    let Tables {
        user_likes,
        counters,
    } = tables;
    let mut likes = Rows::default();
    let mut unlikes = Rows::default();
    let mut sorted: Vec<&NetChange> = changes.iter().collect();
    // A stable lock order keeps concurrent writers from deadlocking.
    sorted.sort_by_key(|c| (c.item.item_id, c.item.item_type, c.user_id));
    let mut last_offset: BTreeMap<ItemKey, i64> = BTreeMap::new();
    for c in sorted {
        let seen = last_offset.entry(c.item).or_insert(c.position.offset);
        *seen = (*seen).max(c.position.offset);
        match c.state {
            LikeState::Liked => likes.push(c),
            LikeState::NotLiked => unlikes.push(c),
        }
    }

    let inserted: Vec<(i64, i16)> = sqlx::query_as(sqlx::AssertSqlSafe(format!("INSERT INTO {user_likes} (item_id, item_type, user_id, liked_at, event_id)
         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::timestamptz[], $5::uuid[])
         ON CONFLICT DO NOTHING
         RETURNING item_id, item_type")),
    )
    .bind(&likes.item_ids)
    .bind(&likes.item_types)
    .bind(&likes.user_ids)
    .bind(&likes.at)
    .bind(&likes.event_ids)
    .fetch_all(&mut *tx)
    .await?;
    let deleted: Vec<(i64, i16)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM {user_likes} AS u
         USING UNNEST($1::bigint[], $2::smallint[], $3::bigint[]) AS v(item_id, item_type, user_id)
         WHERE u.item_id = v.item_id AND u.item_type = v.item_type AND u.user_id = v.user_id
         RETURNING u.item_id, u.item_type"
    )))
    .bind(&unlikes.item_ids)
    .bind(&unlikes.item_types)
    .bind(&unlikes.user_ids)
    .fetch_all(&mut *tx)
    .await?;

    let mut deltas: BTreeMap<(i64, i16), i64> = BTreeMap::new();
    for key in &inserted {
        *deltas.entry(*key).or_default() += 1;
    }
    for key in &deleted {
        *deltas.entry(*key).or_default() -= 1;
    }
    deltas.retain(|_, d| *d != 0);

    // Existing counters move by their delta (an UPDATE, so a negative delta never
    // meets the CHECK (count >= 0) as a proposed row); new ones are inserted.
    let mut item_ids = Vec::with_capacity(deltas.len());
    let mut item_types = Vec::with_capacity(deltas.len());
    let mut amounts = Vec::with_capacity(deltas.len());
    let mut offsets = Vec::with_capacity(deltas.len());
    for ((item_id, item_type), delta) in &deltas {
        let item = item_key(*item_id, *item_type)?;
        item_ids.push(*item_id);
        item_types.push(*item_type);
        amounts.push(*delta);
        offsets.push(last_offset.get(&item).copied().unwrap_or(0));
    }
    let mut counted: Vec<(i64, i16, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE {counters} AS c
           SET count = c.count + v.delta,
               last_offset = GREATEST(c.last_offset, v.last_offset),
               updated_at = now()
         FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[])
              AS v(item_id, item_type, delta, last_offset)
         WHERE c.item_id = v.item_id AND c.item_type = v.item_type
         RETURNING c.item_id, c.item_type, c.count, c.last_offset"
    )))
    .bind(&item_ids)
    .bind(&item_types)
    .bind(&amounts)
    .bind(&offsets)
    .fetch_all(&mut *tx)
    .await?;
    let updated: HashSet<(i64, i16)> = counted.iter().map(|r| (r.0, r.1)).collect();
    let mut new_rows = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..item_ids.len() {
        if !updated.contains(&(item_ids[i], item_types[i])) {
            new_rows.0.push(item_ids[i]);
            new_rows.1.push(item_types[i]);
            new_rows.2.push(amounts[i]);
            new_rows.3.push(offsets[i]);
        }
    }
    if !new_rows.0.is_empty() {
        // A negative delta here means an unlike removed a row no counter counted:
        // the CHECK constraint rejects it and the batch fails loudly.
        let inserted: Vec<(i64, i16, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {counters} (item_id, item_type, count, last_offset)
             SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bigint[], $4::bigint[])
             RETURNING item_id, item_type, count, last_offset"
        )))
        .bind(&new_rows.0)
        .bind(&new_rows.1)
        .bind(&new_rows.2)
        .bind(&new_rows.3)
        .fetch_all(&mut *tx)
        .await?;
        counted.extend(inserted);
    }

    let counts = count_updates(counted)?;
    Ok(Moved {
        liked: inserted.len(),
        unliked: deleted.len(),
        counts,
    })
}

/// Column arrays for one UNNEST statement.
#[derive(Default)]
struct Rows {
    item_ids: Vec<i64>,
    item_types: Vec<i16>,
    user_ids: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    event_ids: Vec<Uuid>,
}

impl Rows {
    fn push(&mut self, c: &NetChange) {
        self.item_ids.push(c.item.item_id.get());
        // ItemType is 1..=i16::MAX by construction.
        self.item_types.push(c.item.item_type.get() as i16);
        self.user_ids.push(c.user_id.get());
        self.at.push(c.timestamp);
        self.event_ids.push(*c.event_id.as_uuid());
    }
}
