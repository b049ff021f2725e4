//! Looking at a sharded projection shard by shard, and feeding it: items that
//! live on a given shard, each shard's stored offsets and counts, a steady
//! trickle of likes whose acknowledged count per item is known, and a URL
//! rewritten to go through a proxy (to cut one shard off for one service).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::TestEnv;
use crate::timed_records::{TimedProducer, like_event, now_millis};

/// `per_shard` item ids living on each shard (index = shard), the smallest first.
pub fn items_by_shard(env: &TestEnv, per_shard: usize) -> Vec<Vec<i64>> {
    let map = env.shards.map();
    let mut items = vec![Vec::new(); map.shards()];
    let mut item = 1;
    while items.iter().any(|i| i.len() < per_shard) {
        let shard = map.shard_of_item(item);
        if items[shard].len() < per_shard {
            items[shard].push(item);
        }
        item += 1;
    }
    items
}

/// Shard `shard`'s stored offsets of the test topic: (partition, next offset).
pub async fn stored_offsets(env: &TestEnv, shard: usize) -> anyhow::Result<Vec<(i32, i64)>> {
    Ok(likes_infra::postgres::offsets::positions(env.shards.pool(shard), &env.stack.topic).await?)
}

/// The high watermark of each partition of the test topic.
pub fn end_offsets(env: &TestEnv) -> anyhow::Result<BTreeMap<i32, i64>> {
    let consumer: BaseConsumer =
        likes_infra::kafka::consumer_config(&env.stack.kafka_bootstrap, "watermarks").create()?;
    let mut ends = BTreeMap::new();
    for p in 0..env.partitions {
        let (_low, high) =
            consumer.fetch_watermarks(&env.stack.topic, p, Duration::from_secs(10))?;
        ends.insert(p, high);
    }
    Ok(ends)
}

/// Whether every partition of `shard` has its stored offset at the end of the log.
pub async fn shard_caught_up(env: &TestEnv, shard: usize) -> anyhow::Result<bool> {
    let ends = end_offsets(env)?;
    let stored: BTreeMap<i32, i64> = stored_offsets(env, shard).await?.into_iter().collect();
    let Some(range) = env.shards.map().partitions_of(shard) else {
        anyhow::bail!("one shard: no range");
    };
    Ok(range
        .into_iter()
        .all(|p| stored.get(&p).copied().unwrap_or(0) == ends.get(&p).copied().unwrap_or(0)))
}

/// Item (type 1, `item`)'s count in shard `shard`'s `counters`, if it has a row there.
pub async fn count_in(env: &TestEnv, shard: usize, item: i64) -> anyhow::Result<Option<i64>> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT count FROM counters WHERE item_type = 1 AND item_id = $1")
            .bind(item)
            .fetch_optional(env.shards.pool(shard))
            .await?;
    Ok(row.map(|r| r.0))
}

/// `user_likes` rows of item (type 1, `item`) summed over every shard.
pub async fn likers_everywhere(env: &TestEnv, item: i64) -> anyhow::Result<i64> {
    let mut total = 0;
    for (_, pool) in env.shards.iter() {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM user_likes WHERE item_type = 1 AND item_id = $1")
                .bind(item)
                .fetch_one(pool)
                .await?;
        total += n;
    }
    Ok(total)
}

/// Likes produced to the topic at a steady pace, round robin over `items`,
/// each by a new user (so every acknowledged like is one more count).
pub struct Trickle {
    acked: Arc<Mutex<BTreeMap<i64, i64>>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Trickle {
    /// Starts sending one like every `every`.
    pub fn start(env: &TestEnv, items: Vec<i64>, every: Duration) -> anyhow::Result<Self> {
        let producer = TimedProducer::new(env)?;
        let acked: Arc<Mutex<BTreeMap<i64, i64>>> =
            Arc::new(Mutex::new(items.iter().map(|i| (*i, 0)).collect()));
        let (stop, mut stopped) = watch::channel(false);
        let counted = acked.clone();
        let task = tokio::spawn(async move {
            let mut user = 1_000_000;
            let mut tick = tokio::time::interval(every);
            loop {
                for item in &items {
                    tokio::select! {
                        _ = stopped.wait_for(|s| *s) => return Ok(()),
                        _ = tick.tick() => {}
                    }
                    user += 1;
                    producer
                        .send(&like_event(user, *item, true)?, now_millis())
                        .await?;
                    if let Ok(mut acked) = counted.lock() {
                        *acked.entry(*item).or_default() += 1;
                    }
                }
            }
        });
        Ok(Self { acked, stop, task })
    }

    /// The likes acknowledged so far, per item.
    pub fn acked(&self) -> BTreeMap<i64, i64> {
        self.acked.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Stops sending and returns the likes acknowledged per item.
    pub async fn stop(self) -> anyhow::Result<BTreeMap<i64, i64>> {
        self.stop.send_replace(true);
        let acked = self.acked.clone();
        self.task.await??;
        Ok(acked.lock().map(|a| a.clone()).unwrap_or_default())
    }
}
