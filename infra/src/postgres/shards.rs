//! The projection on N PostgreSQL databases ("shards"), each owning a fixed,
//! contiguous range of the topic's partitions.
//!
//! Every fact the projector writes for a partition (its rows in `user_likes`
//! and `counters`, its offset and epoch, its `applied_events`) lives in the
//! shard that owns the partition, so each batch transaction stays inside one
//! database and the exactly-once argument of one database carries over as is.
//! An item lives where its partition lives: `partition_for_item` then
//! [`ShardMap::shard_of`].
//!
//! The map is a pure function of the partition count `P` and the shard count
//! `N`: partition `p` belongs to shard `floor(p * N / P)`, i.e. contiguous
//! ranges of `P / N` partitions (64 partitions on 2 shards: 0-31 and 32-63).
//! Contiguous rather than `p mod N` because it makes a split local: doubling
//! the shards (with `P` a multiple of `2N`) cuts every range in two, so each
//! new shard takes its rows from exactly one old shard, and the old shard
//! keeps the other half; with `mod N` every shard would give rows to every
//! other. Each database records the map it was set up with (`shard_map`), and
//! every process refuses a database whose record differs from its own map.

use std::ops::Range;

use futures::future::{join_all, try_join_all};
use sqlx::PgPool;
use tracing::instrument;

use crate::Error;
use crate::kafka::partitioner::partition_for_item;
use crate::settings::{StackSettings, redact};

/// Which shard owns which partitions: `floor(p * shards / partitions)`.
///
/// With one shard the partition count is not needed (every partition is
/// shard 0's), so a one-shard process never has to ask Kafka for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardMap {
    shards: usize,
    /// `None` only with one shard.
    partitions: Option<i32>,
}

impl ShardMap {
    /// The map of `partitions` over `shards`; every shard must own at least one partition.
    pub fn new(partitions: i32, shards: usize) -> Result<Self, Error> {
        if shards == 0 || partitions < 1 || (partitions as usize) < shards {
            return Err(Error::Setting {
                name: "DATABASE_URLS",
                message: format!(
                    "{shards} shards for {partitions} partitions: every shard needs at least one partition"
                ),
            });
        }
        Ok(Self {
            shards,
            partitions: Some(partitions),
        })
    }

    /// One shard owning every partition, whatever their number.
    pub fn single() -> Self {
        Self {
            shards: 1,
            partitions: None,
        }
    }

    pub fn shards(&self) -> usize {
        self.shards
    }

    /// The partition count the map was made for (`None` for [`ShardMap::single`]).
    pub fn partitions(&self) -> Option<i32> {
        self.partitions
    }

    /// The shard that owns `partition`.
    pub fn shard_of(&self, partition: i32) -> usize {
        match self.partitions {
            Some(p) if self.shards > 1 => {
                let partition = i64::from(partition.clamp(0, p - 1));
                (partition * self.shards as i64 / i64::from(p)) as usize
            }
            _ => 0,
        }
    }

    /// The shard that owns `item_id`'s partition.
    pub fn shard_of_item(&self, item_id: i64) -> usize {
        match self.partitions {
            Some(p) if self.shards > 1 => self.shard_of(partition_for_item(item_id, p)),
            _ => 0,
        }
    }

    /// The partitions `shard` owns (`None` for [`ShardMap::single`]: all of them).
    pub fn partitions_of(&self, shard: usize) -> Option<Range<i32>> {
        let p = i64::from(self.partitions?);
        let n = self.shards as i64;
        let s = shard as i64;
        // The first partition p with floor(p * n / P) >= s is ceil(s * P / n).
        let first = |s: i64| ((s * p + n - 1) / n) as i32;
        Some(first(s)..first(s + 1))
    }

    /// `values` split by the shard their key's partition belongs to (index =
    /// shard), in their original order within each shard.
    pub fn group<T>(
        &self,
        values: impl IntoIterator<Item = T>,
        partition: impl Fn(&T) -> i32,
    ) -> Vec<Vec<T>> {
        let mut groups: Vec<Vec<T>> = (0..self.shards).map(|_| Vec::new()).collect();
        for value in values {
            let shard = self.shard_of(partition(&value));
            groups[shard].push(value);
        }
        groups
    }

    /// `values` split by their item's shard (index = shard), in order.
    pub fn group_items<T>(
        &self,
        values: impl IntoIterator<Item = T>,
        item_id: impl Fn(&T) -> i64,
    ) -> Vec<Vec<T>> {
        let mut groups: Vec<Vec<T>> = (0..self.shards).map(|_| Vec::new()).collect();
        for value in values {
            let shard = self.shard_of_item(item_id(&value));
            groups[shard].push(value);
        }
        groups
    }

    fn describe_partitions(partitions: Option<i32>) -> String {
        partitions.map_or_else(|| "any number of".to_string(), |p| p.to_string())
    }
}

/// The shards' pools, in `DATABASE_URLS` order (index = shard), and the map.
#[derive(Clone, Debug)]
pub struct Shards {
    map: ShardMap,
    pools: Vec<PgPool>,
    /// The URLs without secrets, for reports and errors.
    names: Vec<String>,
}

impl Shards {
    /// Pools to every shard, made lazily (see [`super::connect_lazy`]), each of
    /// `max_connections`. `partitions` may be `None` only with one URL.
    pub fn connect_lazy(
        urls: &[String],
        partitions: Option<i32>,
        max_connections: u32,
    ) -> Result<Self, Error> {
        let map = match (urls.len(), partitions) {
            (0, _) => {
                return Err(Error::Setting {
                    name: "DATABASE_URLS",
                    message: "no database listed".into(),
                });
            }
            (1, None) => ShardMap::single(),
            (n, Some(p)) => ShardMap::new(p, n)?,
            (_, None) => {
                return Err(Error::Setting {
                    name: "DATABASE_URLS",
                    message: "several shards need the topic's partition count".into(),
                });
            }
        };
        let pools = urls
            .iter()
            .map(|url| super::connect_lazy(url, max_connections))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            map,
            pools,
            names: urls.iter().map(|u| redact(u)).collect(),
        })
    }

    /// Pools to the shards `stack` lists, each of `max_connections`. With more
    /// than one shard the map needs the topic's partition count, so Kafka is
    /// asked for it (an error when it cannot answer: callers at start-up
    /// retry); with one, Kafka is not needed.
    pub async fn connect(stack: &StackSettings, max_connections: u32) -> Result<Self, Error> {
        let partitions = if stack.database_urls.len() > 1 {
            Some(crate::kafka::partition_count(&stack.kafka_bootstrap, &stack.topic).await?)
        } else {
            None
        };
        Self::connect_lazy(&stack.database_urls, partitions, max_connections)
    }

    /// One shard on an existing pool (tests of the store, tools on one database).
    pub fn single(pool: PgPool, name: &str) -> Self {
        Self {
            map: ShardMap::single(),
            pools: vec![pool],
            names: vec![redact(name)],
        }
    }

    pub fn map(&self) -> ShardMap {
        self.map
    }

    /// How many shards there are.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// Shard `shard`'s pool. Panics on an index the map cannot produce.
    pub fn pool(&self, shard: usize) -> &PgPool {
        &self.pools[shard]
    }

    /// Shard `shard`'s URL without secrets.
    pub fn name(&self, shard: usize) -> &str {
        &self.names[shard]
    }

    /// The pool of the shard owning `partition`, with its index.
    pub fn for_partition(&self, partition: i32) -> (usize, &PgPool) {
        let shard = self.map.shard_of(partition);
        (shard, &self.pools[shard])
    }

    /// The pool of the shard owning `item_id`, with its index.
    pub fn for_item(&self, item_id: i64) -> (usize, &PgPool) {
        let shard = self.map.shard_of_item(item_id);
        (shard, &self.pools[shard])
    }

    /// Every shard's pool with its index.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &PgPool)> {
        self.pools.iter().enumerate()
    }

    /// Applies the migrations on every shard at once.
    pub async fn migrate(&self) -> Result<(), Error> {
        try_join_all(self.pools.iter().map(super::migrate)).await?;
        Ok(())
    }

    /// Records this map on every shard that has none for `topic` yet, then
    /// checks every shard's record against it ([`Shards::check_map`]), all at
    /// once; the error is the first shard's in shard order, so the same
    /// misconfiguration always reads the same.
    pub async fn record_map(&self, topic: &str) -> Result<(), Error> {
        join_all((0..self.len()).map(|shard| self.check_map(shard, topic)))
            .await
            .into_iter()
            .collect()
    }

    /// Compares shard `shard`'s recorded map for `topic` with ours, writing
    /// ours first when it has none (or filling in a partition count a
    /// one-shard process left open). A difference is
    /// [`Error::ShardMapMismatch`], which no retry cures.
    #[instrument(skip(self), fields(shard = self.names[shard].as_str()))]
    pub async fn check_map(&self, shard: usize, topic: &str) -> Result<(), Error> {
        let pool = &self.pools[shard];
        sqlx::query(
            "INSERT INTO shard_map (topic, shard, shards, partitions) VALUES ($1, $2, $3, $4)
             ON CONFLICT (topic) DO UPDATE SET partitions = EXCLUDED.partitions
             WHERE shard_map.partitions IS NULL AND EXCLUDED.partitions IS NOT NULL
               AND shard_map.shard = EXCLUDED.shard AND shard_map.shards = EXCLUDED.shards",
        )
        .bind(topic)
        .bind(shard as i32)
        .bind(self.map.shards as i32)
        .bind(self.map.partitions)
        .execute(pool)
        .await?;
        let (recorded_shard, recorded_shards, recorded_partitions): (i32, i32, Option<i32>) =
            sqlx::query_as("SELECT shard, shards, partitions FROM shard_map WHERE topic = $1")
                .bind(topic)
                .fetch_one(pool)
                .await?;
        let partitions_agree = match (recorded_partitions, self.map.partitions) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        };
        if recorded_shard as usize == shard
            && recorded_shards as usize == self.map.shards
            && partitions_agree
        {
            return Ok(());
        }
        Err(Error::ShardMapMismatch {
            topic: topic.to_string(),
            url: self.names[shard].clone(),
            shard,
            shards: self.map.shards,
            partitions: ShardMap::describe_partitions(self.map.partitions),
            recorded_shard,
            recorded_shards,
            recorded_partitions: ShardMap::describe_partitions(recorded_partitions),
        })
    }

    /// Closes every pool.
    pub async fn close(&self) {
        for pool in &self.pools {
            pool.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_four_partitions_on_two_shards_are_two_halves() {
        let map = ShardMap::new(64, 2).unwrap();
        assert_eq!(map.partitions_of(0), Some(0..32));
        assert_eq!(map.partitions_of(1), Some(32..64));
        assert_eq!(map.shard_of(31), 0);
        assert_eq!(map.shard_of(32), 1);
    }

    #[test]
    fn every_partition_belongs_to_the_one_range_that_contains_it() {
        for partitions in 1..=70 {
            for shards in 1..=partitions.min(9) as usize {
                let map = ShardMap::new(partitions, shards).unwrap();
                let mut next = 0;
                for shard in 0..shards {
                    let range = map.partitions_of(shard).unwrap();
                    assert_eq!(range.start, next, "{partitions}/{shards}: contiguous");
                    assert!(
                        !range.is_empty(),
                        "{partitions}/{shards}: shard {shard} owns some"
                    );
                    for p in range.clone() {
                        assert_eq!(map.shard_of(p), shard, "{partitions}/{shards}: {p}");
                    }
                    next = range.end;
                }
                assert_eq!(next, partitions, "{partitions}/{shards}: all covered");
            }
        }
    }

    #[test]
    fn doubling_the_shards_splits_each_range_in_two() {
        let before = ShardMap::new(64, 4).unwrap();
        let after = ShardMap::new(64, 8).unwrap();
        for p in 0..64 {
            assert_eq!(after.shard_of(p) / 2, before.shard_of(p), "partition {p}");
        }
    }

    #[test]
    fn one_shard_owns_everything_without_knowing_the_partition_count() {
        let map = ShardMap::single();
        assert_eq!(map.shard_of(63), 0);
        assert_eq!(map.shard_of_item(12_345), 0);
        assert_eq!(map.partitions_of(0), None);
    }

    #[test]
    fn an_item_lives_on_its_partitions_shard() {
        let map = ShardMap::new(64, 2).unwrap();
        for item in 0..200 {
            assert_eq!(
                map.shard_of_item(item),
                map.shard_of(partition_for_item(item, 64))
            );
        }
    }

    #[test]
    fn more_shards_than_partitions_is_refused() {
        assert!(ShardMap::new(2, 3).is_err());
        assert!(ShardMap::new(4, 0).is_err());
    }

    #[test]
    fn grouping_keeps_order_within_a_shard() {
        let map = ShardMap::new(4, 2).unwrap();
        let groups = map.group(vec![3, 0, 2, 1, 0], |p| *p);
        assert_eq!(groups, vec![vec![0, 1, 0], vec![3, 2]]);
    }
}
