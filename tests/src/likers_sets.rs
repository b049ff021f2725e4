//! The recent-likers sets of a test's items as Redis holds them, what
//! PostgreSQL says they should hold, and dropping them (only the test's own
//! keys, never the shared Redis).

use std::collections::BTreeMap;

use likes_domain::ItemKey;
use likes_infra::redis::Keys;

use crate::TestEnv;
use crate::load::ITEM_TYPE;

/// One item's likers: (user id, like time in ms), newest first.
pub type Likers = Vec<(i64, i64)>;

fn item(id: i64) -> anyhow::Result<ItemKey> {
    Ok(ItemKey::parse(ITEM_TYPE.into(), id)?)
}

/// The whole likers set of each of `items` (type 1) in Redis, newest first
/// (equal times by user id as text, as Redis ranks them).
pub async fn in_redis(env: &TestEnv, items: &[i64]) -> anyhow::Result<BTreeMap<i64, Likers>> {
    let keys = Keys::new(&env.stack.redis_key_prefix);
    let mut sets = BTreeMap::new();
    for &id in items {
        let rows: Vec<(i64, f64)> = redis::cmd("ZRANGE")
            .arg(keys.likers(item(id)?))
            .arg(0)
            .arg(-1)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut env.redis.clone())
            .await?;
        sets.insert(id, rows.into_iter().map(|(u, s)| (u, s as i64)).collect());
    }
    Ok(sets)
}

/// The newest `keep` likers of each of `items` by `user_likes.liked_at`
/// (in milliseconds, as Redis scores them), ranked as Redis ranks them.
pub async fn in_postgres(
    env: &TestEnv,
    items: &[i64],
    keep: usize,
) -> anyhow::Result<BTreeMap<i64, Likers>> {
    let mut sets = BTreeMap::new();
    for &id in items {
        let rows: Vec<(i64, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
            "SELECT user_id, liked_at FROM user_likes WHERE item_type = $1 AND item_id = $2",
        )
        .bind(ITEM_TYPE as i16)
        .bind(id)
        .fetch_all(env.shards.for_item(id).1)
        .await?;
        let mut likers: Likers = rows
            .into_iter()
            .map(|(user, at)| (user, at.timestamp_millis()))
            .collect();
        likers.sort_by_key(|l| std::cmp::Reverse((l.1, l.0.to_string())));
        likers.truncate(keep);
        sets.insert(id, likers);
    }
    Ok(sets)
}

/// Drops the likers sets of `items` and their stamps, as a flush or a
/// failover without replicas would.
pub async fn drop_all(env: &TestEnv, items: &[i64]) -> anyhow::Result<()> {
    let keys = Keys::new(&env.stack.redis_key_prefix);
    for &id in items {
        for key in [keys.likers(item(id)?), keys.likers_stamp(item(id)?)] {
            redis::cmd("DEL")
                .arg(key)
                .query_async::<()>(&mut env.redis.clone())
                .await?;
        }
    }
    Ok(())
}

/// Deletes every Redis key of the test's prefix (its leftovers).
pub async fn clean_up(env: &TestEnv) -> anyhow::Result<()> {
    let redis =
        likes_infra::redis::Redis::connect(&env.stack.redis_address(), &env.stack.redis_key_prefix)
            .await?;
    likes_infra::redis::repair::delete_all_keys(&redis).await?;
    Ok(())
}
