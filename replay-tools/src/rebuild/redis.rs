//! The Redis side of the rebuilds. `rebuild redis` ([`run`]) rebuilds the
//! whole Redis projection while the API and the projector keep running: the
//! counts exactly from PostgreSQL (here), then every item's recent likers
//! from the log ([`super::likers`], which says how it stays out of the live
//! projector's way).
//!
//! The counts: Every cached count of the prefix is
//! dropped first (wrong values with any stamp, and counts of items PostgreSQL
//! does not know), then `counters` is streamed and written back stamped with
//! each row's `last_offset` through the normal stamp-checked write. Reads in
//! between miss and fall back to PostgreSQL; a projector commit in between
//! writes a newer stamp that the rebuild's older one can never overwrite.
//! Events past the stored offsets are the live projector's to apply. After a
//! `rebuild postgres` swap, [`refresh_swapped`] brings only the changed items.
//! With several shards, every shard's `counters` is streamed in turn (each
//! shard's map checked first): an item's row lives on its partition's shard.

use std::collections::HashMap;

use futures::TryStreamExt;
use likes_domain::ItemKey;
use likes_infra::kafka::partitioner::partition_for_item;
use likes_infra::postgres::reads;
use likes_infra::postgres::shadow::CountDiff;
use likes_infra::postgres::writer::CountUpdate;
use likes_infra::redis::counts::CountCache;
use likes_infra::redis::{Redis, repair};
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::progress::Progress;
use crate::rebuild::likers::{self, LikersOptions, LikersRebuild};
use likes_infra::redis::likers::{DEFAULT_KEEP, RecentLikers};

/// Counts written per round trip.
const CHUNK: usize = 1000;

/// What a Redis rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RedisRebuild {
    /// Cached counts dropped before the rebuild.
    pub deleted: u64,
    /// Counts written from `counters`.
    pub written: u64,
    /// Counts written from each shard, in shard order.
    pub shards: Vec<ShardWritten>,
    /// The recent likers, rebuilt from the log.
    pub likers: LikersRebuild,
}

/// Counts written from one shard.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardWritten {
    pub shard: usize,
    pub written: u64,
}

/// Rebuilds the Redis projection of `stack` with the default likers options.
pub async fn run(stack: &StackSettings) -> anyhow::Result<RedisRebuild> {
    run_with(stack, LikersOptions::default()).await
}

/// Rebuilds the Redis counts of `stack` from PostgreSQL, then its recent
/// likers from the log as `options` say.
pub async fn run_with(
    stack: &StackSettings,
    options: LikersOptions,
) -> anyhow::Result<RedisRebuild> {
    let shards = crate::shards::connect_all(stack, 2).await?;
    let redis = Redis::connect(&stack.redis_address(), &stack.redis_key_prefix).await?;
    let cache = CountCache::new(&redis);
    let mut total = 0;
    for (_, pool) in shards.iter() {
        total += reads::counters_len(pool).await?;
    }
    let deleted = repair::delete_all_counts(&redis).await?;
    let progress = Progress::new("rebuild redis", total);
    let mut done = RedisRebuild {
        deleted,
        ..RedisRebuild::default()
    };
    for (shard, pool) in shards.iter() {
        let mut written = 0u64;
        let mut rows = reads::all_counts(pool);
        let mut chunk: Vec<CountUpdate> = Vec::with_capacity(CHUNK);
        while let Some(row) = rows.try_next().await? {
            chunk.push(row);
            if chunk.len() == CHUNK {
                cache.put_counts(&chunk).await?;
                written += chunk.len() as u64;
                progress.inc(chunk.len() as u64);
                chunk.clear();
            }
        }
        cache.put_counts(&chunk).await?;
        written += chunk.len() as u64;
        progress.inc(chunk.len() as u64);
        done.written += written;
        done.shards.push(ShardWritten { shard, written });
    }
    progress.finish();
    // The projector's own `keep`: one home for it.
    let recent = RecentLikers::new(&redis, DEFAULT_KEEP);
    let likers = likers::run(stack, &shards, &recent, options).await;
    shards.close().await;
    done.likers = likers?;
    Ok(done)
}

/// Brings Redis to the swapped counts of the items whose count changed.
///
/// Each is stamped with the last offset the swap covered in its item's
/// partition (`locked - 1`) and replaces any value stamped at or below that:
/// Redis may hold a stamp equal to or newer than the changed row's own
/// `last_offset`, written from the replaced tables, and the projector's normal
/// write would refuse to replace it. This cannot go backwards against the live
/// projector: every commit it makes after the swap covers offsets at or above
/// `locked`, so its value carries a strictly higher stamp that this write
/// leaves alone (and that later replaces this one), while a late Redis write of
/// a commit from before the swap carries a stamp at or below ours and the
/// projector's own check refuses it once ours is stored.
pub async fn refresh_swapped(
    stack: &StackSettings,
    differences: &[CountDiff],
    locked: &HashMap<i32, i64>,
    partitions: i32,
) -> anyhow::Result<u64> {
    if differences.is_empty() {
        return Ok(0);
    }
    let redis = Redis::connect(&stack.redis_address(), &stack.redis_key_prefix).await?;
    let mut updates = Vec::with_capacity(differences.len());
    for d in differences {
        let partition = partition_for_item(d.item_id, partitions);
        let stamp = locked.get(&partition).copied().unwrap_or(0) - 1;
        updates.push(CountUpdate {
            item: ItemKey::parse(d.item_type.into(), d.item_id)?,
            count: d.rebuilt,
            last_offset: stamp,
        });
    }
    Ok(repair::put_swapped_counts(&redis, &updates).await?)
}
