//! The cluster topology's nodes, for the cluster fault tests
//! (`tests/tests/cluster_*.rs`, run by `dev/stack test --cluster`): which
//! broker leads the most partitions of a topic, which Redis node is a serving
//! primary, `kill -9` / start / restart of one node through `dev/stack`, and
//! the end-of-run checks a cluster test adds to the single-node ones (every
//! acknowledged event in the log, Redis equal to PostgreSQL).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use likes_domain::ItemKey;
use likes_infra::redis::Redis;
use likes_infra::redis::counts::CountCache;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::load::{ITEM_TYPE, Ledger};
use crate::process::stack;
use crate::{TestEnv, eventually};

/// `dev/stack <verb> <node> --cluster`, e.g. `kill kafka-2` (SIGKILL),
/// `start redis-1`, `restart kafka-3`.
pub async fn node(verb: &str, name: &str) -> anyhow::Result<()> {
    stack(&[verb, name, "--cluster"]).await
}

/// Starts whatever node of the cluster is down (a test that failed half-way
/// may have left one killed), so each test begins with the whole cluster.
pub async fn heal() -> anyhow::Result<()> {
    stack(&["start", "kafka", "--cluster"]).await?;
    stack(&["start", "redis", "--cluster"]).await?;
    stack(&["start", "postgres", "--cluster"]).await?;
    wait_redis_ok().await
}

/// The Kafka node (its `node.id`, which is also the N of `kafka-N`) leading
/// the most partitions of `topic`.
pub fn busiest_leader(bootstrap: &str, topic: &str) -> anyhow::Result<i32> {
    let consumer: BaseConsumer =
        likes_infra::kafka::consumer_config(bootstrap, "cluster-probe").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut led: HashMap<i32, usize> = HashMap::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            *led.entry(p.leader()).or_default() += 1;
        }
    }
    led.into_iter()
        .filter(|(leader, _)| *leader >= 0)
        .max_by_key(|(leader, n)| (*n, -*leader))
        .map(|(leader, _)| leader)
        .ok_or_else(|| anyhow::anyhow!("no partition of {topic} has a leader"))
}

/// Whether every partition of `topic` has all its replicas in sync again.
pub fn fully_in_sync(bootstrap: &str, topic: &str) -> anyhow::Result<bool> {
    let consumer: BaseConsumer =
        likes_infra::kafka::consumer_config(bootstrap, "cluster-probe").create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(metadata.topics().iter().all(|t| {
        !t.partitions().is_empty()
            && t.partitions()
                .iter()
                .all(|p| p.leader() >= 0 && p.isr().len() == p.replicas().len())
    }))
}

/// Waits (bounded) until every replica of `topic` is back in sync.
pub async fn wait_in_sync(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    eventually(Duration::from_secs(90), || async {
        fully_in_sync(bootstrap, topic)
    })
    .await
}

/// The Redis Cluster's seed nodes, from `REDIS_CLUSTER_NODES`.
fn redis_seeds() -> Vec<(String, u16)> {
    std::env::var("REDIS_CLUSTER_NODES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|url| {
            let hostport = url.trim().strip_prefix("redis://")?;
            let hostport = hostport.split('/').next()?;
            let (host, port) = hostport.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// The `dev/stack` name (`redis-N`, N counting from 1 in the order of
/// `REDIS_CLUSTER_NODES`) of a primary that serves slots, as one live node
/// sees the cluster.
pub async fn serving_primary() -> anyhow::Result<String> {
    let seeds = redis_seeds();
    for (host, port) in &seeds {
        let Ok(client) = redis::Client::open(format!("redis://{host}:{port}")) else {
            continue;
        };
        let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
            continue;
        };
        let Ok(nodes) = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async::<String>(&mut conn)
            .await
        else {
            continue;
        };
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let Some(flags) = fields.get(2) else { continue };
            let master = flags.split(',').any(|f| f == "master");
            let failed = flags.split(',').any(|f| f == "fail" || f == "fail?");
            if !master || failed || fields.len() <= 8 {
                continue;
            }
            let Some(addr) = fields.get(1).and_then(|a| a.split('@').next()) else {
                continue;
            };
            let Some(port) = addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
            else {
                continue;
            };
            if let Some(n) = seeds.iter().position(|(_, p)| *p == port) {
                return Ok(format!("redis-{}", n + 1));
            }
        }
    }
    anyhow::bail!("no serving Redis primary found through {seeds:?}")
}

/// Waits (bounded) until the Redis Cluster says `cluster_state:ok` again.
pub async fn wait_redis_ok() -> anyhow::Result<()> {
    eventually(Duration::from_secs(60), || async {
        for (host, port) in redis_seeds() {
            let Ok(client) = redis::Client::open(format!("redis://{host}:{port}")) else {
                continue;
            };
            let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            if let Ok(info) = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async::<String>(&mut conn)
                .await
            {
                return Ok(info.contains("cluster_state:ok"));
            }
        }
        Ok(false)
    })
    .await
}

/// How the log holds the load's events: acknowledged events missing from it,
/// and events written more than once (a refusal whose write landed anyway,
/// then the client's retry: the projector counts it once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCopies {
    pub acked_missing: usize,
    pub written_twice: usize,
}

/// Reads the whole topic and checks it against `ledger`.
pub async fn log_copies(env: &TestEnv, ledger: &Ledger) -> anyhow::Result<LogCopies> {
    let copies = crate::topic::event_copies(env).await?;
    Ok(LogCopies {
        acked_missing: ledger
            .acked_ids
            .iter()
            .filter(|id| !copies.contains_key(id))
            .count(),
        written_twice: copies.values().filter(|n| **n > 1).count(),
    })
}

/// Waits (bounded) until Redis holds PostgreSQL's count of every item; returns
/// how long that took from `since`.
pub async fn redis_catches_up(
    env: &TestEnv,
    items: &[i64],
    since: Instant,
) -> anyhow::Result<Duration> {
    let keys: Vec<ItemKey> = items
        .iter()
        .map(|i| ItemKey::parse(ITEM_TYPE.into(), *i))
        .collect::<Result<_, _>>()?;
    let last = std::sync::Mutex::new(String::new());
    let caught_up = eventually(Duration::from_secs(60), || async {
        // A fresh client each time: what a new reader would see.
        let redis = Redis::connect(&env.stack.redis_address(), &env.stack.redis_key_prefix).await?;
        let cached = match CountCache::new(&redis).counts(&keys).await {
            Ok(c) => c,
            Err(e) => {
                *last.lock().expect("not poisoned") = format!("read failed: {e}");
                return Ok(false);
            }
        };
        for (item, count) in items.iter().zip(cached) {
            let stored = env.db_count(ITEM_TYPE, *item).await?;
            if count != Some(stored) {
                *last.lock().expect("not poisoned") =
                    format!("item {item}: redis {count:?}, postgres {stored}");
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await;
    if let Err(e) = caught_up {
        anyhow::bail!(
            "{e}; last difference: {}",
            last.lock().expect("not poisoned")
        );
    }
    Ok(since.elapsed())
}
