//! The PostgreSQL projection as the API reads it: a pool per shard
//! (`DATABASE_URLS`, see `likes_infra::postgres::shards`), every item read
//! from the shard that owns its partition, many items grouped into one query
//! per shard, the shards asked concurrently.
//!
//! Each shard's recorded map is checked before the shard is used. At start
//! every shard is asked (for at most [`START_CHECK`]): a shard whose recorded
//! map differs refuses the start. A shard that does not answer then is not a
//! reason to stay down (counts are served from Redis, writes need no
//! PostgreSQL), so it stays unchecked and is checked before its first read
//! (one request does the check, the others waiting meanwhile get a 503) or by
//! the next `/readyz`. A difference found then makes every read of that shard
//! a 503 and `/readyz` fail (`postgres_shard_map`) until the ingest is
//! restarted with the right `DATABASE_URLS`; the other shards go on serving.
//!
//! Every read of a shard is bounded by [`READ_TIMEOUT`]: a shard that is cut
//! off without closing its connections answers 503 instead of holding the
//! request.
//!
//! The optimistic lookups ([`Projection::states`]) run on a few connections
//! per shard held outside its pool (`likes_infra::postgres::held`): they are
//! the one read of every like, and the pool's pings on taking and returning
//! a connection cost more client CPU than the statement's own round trip.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use futures::future::join_all;
use likes_domain::{ItemKey, ItemType, UserId};
use likes_infra::postgres::held::HeldConnections;
use likes_infra::postgres::reads::{self, LikedItem};
use likes_infra::postgres::shards::Shards;
use likes_infra::postgres::{PgPool, offsets};
use likes_infra::settings::StackSettings;

use crate::ApiError;

/// How long the start waits for each shard's map check.
const START_CHECK: Duration = Duration::from_secs(3);
/// The longest a read of one shard may take, its map check included.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

const UNCHECKED: u8 = 0;
const AGREES: u8 = 1;
const DIFFERS: u8 = 2;

/// Why a shard did not answer a read.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("shard {shard}: its recorded shard map differs from this process's")]
    MapDiffers { shard: usize },
    #[error("shard {shard}: its shard map is not checked yet (another request is checking)")]
    Unchecked { shard: usize },
    #[error("shard {shard}: no answer within {READ_TIMEOUT:?}")]
    TimedOut { shard: usize },
    #[error("shard {shard}: {source}")]
    Store {
        shard: usize,
        source: likes_infra::Error,
    },
}

impl ShardError {
    pub fn shard(&self) -> usize {
        match self {
            ShardError::MapDiffers { shard }
            | ShardError::Unchecked { shard }
            | ShardError::TimedOut { shard }
            | ShardError::Store { shard, .. } => *shard,
        }
    }
}

/// Where one shard's map check stands.
struct MapCheck {
    state: AtomicU8,
    /// Held by the one request checking the map.
    checking: tokio::sync::Mutex<()>,
}

/// The shards and where their map checks stand.
pub struct Projection {
    shards: Shards,
    topic: String,
    maps: Vec<MapCheck>,
    /// Per shard, the connections of the optimistic lookups.
    lookups: Vec<HeldConnections>,
}

/// Idle connections kept per shard for the optimistic lookups: as many as
/// the lookup batcher runs queries at once.
const LOOKUP_CONNECTIONS: usize = crate::lookups::IN_FLIGHT;

impl Projection {
    /// Pools to `stack`'s shards (asking Kafka for the partition count when
    /// there are several), then checks every shard's map: a difference is an
    /// error, an unreachable shard is left to be checked later.
    pub async fn connect(stack: &StackSettings) -> anyhow::Result<Self> {
        let shards = Shards::connect(stack, stack.database_max_connections).await?;
        let projection = Self::new(shards, &stack.topic);
        let checks = (0..projection.shards.len()).map(|shard| projection.check_at_start(shard));
        for checked in join_all(checks).await {
            checked?;
        }
        Ok(projection)
    }

    fn new(shards: Shards, topic: &str) -> Self {
        let maps = (0..shards.len())
            .map(|_| MapCheck {
                state: AtomicU8::new(UNCHECKED),
                checking: tokio::sync::Mutex::new(()),
            })
            .collect();
        let lookups = shards
            .iter()
            .map(|(_, pool)| HeldConnections::like(pool, LOOKUP_CONNECTIONS))
            .collect();
        Self {
            shards,
            topic: topic.to_string(),
            maps,
            lookups,
        }
    }

    async fn check_at_start(&self, shard: usize) -> Result<(), likes_infra::Error> {
        match tokio::time::timeout(START_CHECK, self.shards.check_map(shard, &self.topic)).await {
            Ok(Ok(())) => {
                self.maps[shard].state.store(AGREES, Ordering::SeqCst);
                Ok(())
            }
            Ok(Err(e @ likes_infra::Error::ShardMapMismatch { .. })) => Err(e),
            Ok(Err(e)) => {
                tracing::warn!(shard, error = %e, "shard map not checked at start: checked before first use");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(
                    shard,
                    "shard did not answer at start: its map is checked before first use"
                );
                Ok(())
            }
        }
    }

    /// How many shards there are.
    /// Which shard owns which partition.
    pub fn map(&self) -> likes_infra::postgres::shards::ShardMap {
        self.shards.map()
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// The shard owning `item`.
    pub fn shard_of(&self, item: ItemKey) -> usize {
        self.shards.map().shard_of_item(item.item_id.get())
    }

    /// Ok once `shard`'s map agrees with ours; checks it when nobody has yet.
    async fn ensure(&self, shard: usize, timeout: Duration) -> Result<(), ShardError> {
        let map = &self.maps[shard];
        match map.state.load(Ordering::SeqCst) {
            AGREES => return Ok(()),
            DIFFERS => return Err(ShardError::MapDiffers { shard }),
            _ => {}
        }
        let _checking = match map.checking.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Somebody is checking: take their answer rather than
                // queueing a check of our own behind theirs.
                let _ = map.checking.lock().await;
                return match map.state.load(Ordering::SeqCst) {
                    AGREES => Ok(()),
                    DIFFERS => Err(ShardError::MapDiffers { shard }),
                    _ => Err(ShardError::Unchecked { shard }),
                };
            }
        };
        if map.state.load(Ordering::SeqCst) != UNCHECKED {
            return match map.state.load(Ordering::SeqCst) {
                AGREES => Ok(()),
                _ => Err(ShardError::MapDiffers { shard }),
            };
        }
        match tokio::time::timeout(timeout, self.shards.check_map(shard, &self.topic)).await {
            Ok(Ok(())) => {
                map.state.store(AGREES, Ordering::SeqCst);
                tracing::info!(shard, "shard map checked");
                Ok(())
            }
            Ok(Err(e @ likes_infra::Error::ShardMapMismatch { .. })) => {
                map.state.store(DIFFERS, Ordering::SeqCst);
                tracing::error!(shard, error = %e, "shard refused: its recorded map differs; its reads fail until restarted with the right DATABASE_URLS");
                Err(ShardError::MapDiffers { shard })
            }
            Ok(Err(source)) => Err(ShardError::Store { shard, source }),
            Err(_) => Err(ShardError::TimedOut { shard }),
        }
    }

    /// Runs `read` on `shard`'s pool once its map is known to agree, within
    /// [`READ_TIMEOUT`].
    async fn read<'a, T, F, Fut>(&'a self, shard: usize, read: F) -> Result<T, ShardError>
    where
        F: FnOnce(&'a PgPool) -> Fut,
        Fut: std::future::Future<Output = Result<T, likes_infra::Error>> + 'a,
    {
        self.bounded(shard, async { read(self.shards.pool(shard)).await })
            .await
    }

    /// Runs `read` once `shard`'s map is known to agree, both within
    /// [`READ_TIMEOUT`].
    async fn bounded<T>(
        &self,
        shard: usize,
        read: impl Future<Output = Result<T, likes_infra::Error>>,
    ) -> Result<T, ShardError> {
        let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
        self.ensure(shard, READ_TIMEOUT).await?;
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(ShardError::Store { shard, source }),
            Err(_) => Err(ShardError::TimedOut { shard }),
        }
    }

    /// The 503 of a read that `failed` (logged with their reasons): the
    /// client learns which store and, with several shards, which shards.
    pub fn unavailable(&self, what: &str, failed: &[&ShardError]) -> ApiError {
        self.log_failed(what, failed);
        if self.len() == 1 {
            return ApiError::Unavailable(format!("{what} unavailable"));
        }
        let mut shards: Vec<usize> = failed.iter().map(|e| e.shard()).collect();
        shards.sort_unstable();
        shards.dedup();
        let listed: Vec<String> = shards.iter().map(usize::to_string).collect();
        let noun = if shards.len() == 1 { "shard" } else { "shards" };
        ApiError::Unavailable(format!("{what} {noun} {} unavailable", listed.join(", ")))
    }

    /// Logs why each of `failed` did not answer a read of `what`.
    pub fn log_failed(&self, what: &str, failed: &[&ShardError]) {
        for e in failed {
            tracing::warn!(error = %e, shard = e.shard(), what, "read failed");
        }
    }

    /// An item's count and the offset it reflects, from its shard.
    pub async fn count(&self, item: ItemKey) -> Result<Option<(i64, i64)>, ShardError> {
        self.read(self.shard_of(item), |pool| reads::count(pool, item))
            .await
    }

    /// Whether `user` likes `item`, from the item's shard.
    pub async fn likes(&self, user: UserId, item: ItemKey) -> Result<bool, ShardError> {
        self.read(self.shard_of(item), |pool| reads::likes(pool, user, item))
            .await
    }

    /// The stored counts of `items`: one query per shard that owns any of
    /// them, all at once. Each answer carries the items its shard was asked
    /// for; items never counted are absent from its rows.
    pub async fn counts(&self, items: &[ItemKey]) -> Vec<ShardCounts> {
        let groups = self
            .shards
            .map()
            .group_items(items.iter().copied(), |i| i.item_id.get());
        join_all(
            groups
                .into_iter()
                .enumerate()
                .filter(|(_, group)| !group.is_empty())
                .map(|(shard, group)| async move {
                    let rows = self
                        .read(shard, |pool| {
                            let asked = group.clone();
                            async move { reads::counts(pool, &asked).await }
                        })
                        .await;
                    ShardCounts { items: group, rows }
                }),
        )
        .await
    }

    /// For each `(user, item)`: the item's count and whether the user likes
    /// it (in input order), one `UNNEST` query per shard concurrently;
    /// `None` for pairs whose shard did not answer.
    pub async fn states(&self, pairs: &[(UserId, ItemKey)]) -> Vec<Option<(i64, bool)>> {
        let indexed: Vec<(usize, (UserId, ItemKey))> = pairs.iter().copied().enumerate().collect();
        let groups = self
            .shards
            .map()
            .group_items(indexed, |(_, (_, item))| item.item_id.get());
        let answers = join_all(
            groups
                .into_iter()
                .enumerate()
                .filter(|(_, group)| !group.is_empty())
                .map(|(shard, group)| async move {
                    let asked: Vec<(UserId, ItemKey)> = group.iter().map(|(_, p)| *p).collect();
                    let held = &self.lookups[shard];
                    let read = held.read(|conn| {
                        let asked = asked.clone();
                        Box::pin(async move { reads::states(conn, &asked).await })
                    });
                    let states = self.bounded(shard, read).await;
                    (group, states)
                }),
        )
        .await;
        let mut out = vec![None; pairs.len()];
        for (group, states) in answers {
            match states {
                Ok(states) => {
                    for ((index, _), state) in group.into_iter().zip(states) {
                        out[index] = Some(state);
                    }
                }
                // Those asks go without an optimistic count.
                Err(e) => {
                    tracing::warn!(error = %e, asks = group.len(), "optimistic lookups failed")
                }
            }
        }
        out
    }

    /// Every shard's projected next offsets of the partitions it owns, asked
    /// concurrently; a shard that does not answer gives its error.
    pub async fn positions(&self) -> Vec<Result<Vec<(i32, i64)>, ShardError>> {
        let map = self.shards.map();
        join_all((0..self.len()).map(|shard| async move {
            let rows = self
                .read(shard, |pool| offsets::positions(pool, &self.topic))
                .await?;
            // Rows of partitions another shard owns (left from another map)
            // say nothing about where this map's projection stands.
            Ok(rows
                .into_iter()
                .filter(|(partition, _)| map.shard_of(*partition) == shard)
                .collect())
        }))
        .await
    }

    /// Every shard's progress in the partitions it owns (as
    /// [`Self::positions`], with the newest applied record's time).
    pub async fn progress(&self) -> Vec<Result<Vec<offsets::Progress>, ShardError>> {
        let map = self.shards.map();
        join_all((0..self.len()).map(|shard| async move {
            let rows = self
                .read(shard, |pool| offsets::progress(pool, &self.topic))
                .await?;
            Ok(rows
                .into_iter()
                .filter(|row| map.shard_of(row.partition) == shard)
                .collect())
        }))
        .await
    }

    /// `user`'s likes newest first: every shard's first `limit + 1` after
    /// `after`, merged ([`merge_newest_first`]). The page is only right with
    /// every shard's part, so any shard failing fails it.
    pub async fn liked_items(
        &self,
        user: UserId,
        item_type: Option<ItemType>,
        after: Option<LikedItem>,
        limit: usize,
    ) -> Result<(Vec<LikedItem>, bool), Vec<ShardError>> {
        let parts = join_all((0..self.len()).map(|shard| {
            self.read(shard, move |pool| {
                reads::liked_items(pool, user, item_type, after, limit + 1)
            })
        }))
        .await;
        let mut pages = Vec::with_capacity(parts.len());
        let mut failed = Vec::new();
        for part in parts {
            match part {
                Ok(page) => pages.push(page),
                Err(e) => failed.push(e),
            }
        }
        if !failed.is_empty() {
            return Err(failed);
        }
        Ok(merge_newest_first(pages, limit))
    }

    /// Checks the maps of shards nobody could check yet (bounded by
    /// `timeout`), then describes the shards whose map differs, if any.
    pub async fn map_problem(&self, timeout: Duration) -> Option<String> {
        join_all((0..self.len()).map(|shard| self.ensure(shard, timeout))).await;
        let differ: Vec<String> = (0..self.len())
            .filter(|s| self.maps[*s].state.load(Ordering::SeqCst) == DIFFERS)
            .map(|s| s.to_string())
            .collect();
        (!differ.is_empty()).then(|| {
            format!(
                "the recorded shard map of shard {} differs from this process's",
                differ.join(", ")
            )
        })
    }
}

/// One shard's answer to [`Projection::counts`].
pub struct ShardCounts {
    /// The items the shard was asked for.
    pub items: Vec<ItemKey>,
    pub rows: Result<Vec<(ItemKey, i64, i64)>, ShardError>,
}

/// The first `limit` of several shards' pages (each newest first), newest
/// first, and whether more exist beyond them.
pub fn merge_newest_first(pages: Vec<Vec<LikedItem>>, limit: usize) -> (Vec<LikedItem>, bool) {
    let mut all: Vec<LikedItem> = pages.into_iter().flatten().collect();
    all.sort_by(LikedItem::newest_first);
    let more = all.len() > limit;
    all.truncate(limit);
    (all, more)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn liked(ms: i64, item_type: i64, item_id: i64) -> LikedItem {
        LikedItem {
            item: ItemKey::parse(item_type, item_id).unwrap(),
            liked_at: chrono::DateTime::from_timestamp_millis(ms).unwrap(),
        }
    }

    #[test]
    fn pages_of_several_shards_merge_by_time_then_item() {
        let a = vec![liked(30, 1, 5), liked(10, 1, 7), liked(5, 1, 1)];
        let b = vec![liked(30, 2, 1), liked(20, 1, 9), liked(10, 1, 6)];
        let (page, more) = merge_newest_first(vec![a, b], 4);
        let order: Vec<(i64, i64)> = page
            .iter()
            .map(|l| (l.liked_at.timestamp_millis(), l.item.item_id.get()))
            .collect();
        assert_eq!(order, vec![(30, 1), (30, 5), (20, 9), (10, 7)]);
        assert_eq!(
            page[0].item.item_type.get(),
            2,
            "a tie goes to the larger type"
        );
        assert!(more);
        let (page, more) = merge_newest_first(vec![vec![liked(1, 1, 1)], vec![]], 4);
        assert_eq!(page.len(), 1);
        assert!(!more);
    }
}
