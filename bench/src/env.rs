//! The bench's private slice of the running stack, modelled on the test
//! harness: a fresh topic, a fresh database with the migrations applied and a
//! fresh Redis key prefix per scenario, and the services run in-process on
//! port 0. Nothing the live services use is touched.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use likes_infra::kafka::{self, RETENTION_MS, TopicSpec};
use likes_infra::postgres::shards::Shards;
use likes_infra::settings::StackSettings;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The bench's scratch folder (under the system's temporary directory): the
/// runs' archive directories and the Kafka Streams peer's state, each named
/// after its run and removed by it.
pub fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join("likes-bench")
}

/// How long the ingest (and the minimal durable write baseline) waits for a
/// broker's ack before answering 503.
pub const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);

/// One scenario's slice of the stack.
pub struct BenchEnv {
    pub stack: StackSettings,
    pub shards: Shards,
    pub suffix: String,
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// The Kafka brokers the bench produces to (`dev/stack env [--cluster]`).
pub fn kafka_bootstrap() -> String {
    env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
}

/// The Redis node the bench uses when no cluster is named.
pub fn redis_url() -> String {
    env_or("REDIS_URL", "redis://127.0.0.1:6379/0")
}

/// The Redis Cluster's seed nodes; empty for a single node.
pub fn redis_cluster_nodes() -> anyhow::Result<Vec<String>> {
    Ok(likes_infra::settings::url_list(
        "REDIS_CLUSTER_NODES",
        &["redis"],
    )?)
}

/// The stack's PostgreSQL servers, one database URL each: `DATABASE_URLS`
/// when set (the cluster topology lists two), else `DATABASE_URL`.
fn servers() -> Vec<String> {
    let listed = likes_infra::settings::url_list("DATABASE_URLS", &["postgres", "postgresql"])
        .unwrap_or_default();
    if listed.is_empty() {
        vec![env_or(
            "DATABASE_URL",
            "postgres://likes:likes@127.0.0.1:5432/likes",
        )]
    } else {
        listed
    }
}

/// The database the harness connects to for creating and dropping its own
/// on the server of `url`.
fn admin_url(url: &str) -> String {
    let server = url.rsplit_once('/').map_or(url, |(server, _)| server);
    let admin = servers()
        .into_iter()
        .find(|s| s.rsplit_once('/').map(|(b, _)| b) == Some(server));
    admin.unwrap_or_else(|| servers().remove(0))
}

/// Creates an empty database with a fresh name on the first server and
/// returns its URL.
pub async fn fresh_database() -> anyhow::Result<String> {
    fresh_database_on(&servers()[0]).await
}

/// `shards` fresh databases: one per server while there are servers, then
/// more on the first.
pub async fn fresh_shards(shards: usize) -> anyhow::Result<Vec<String>> {
    let servers = servers();
    let mut urls = Vec::with_capacity(shards);
    for shard in 0..shards {
        urls.push(fresh_database_on(servers.get(shard).unwrap_or(&servers[0])).await?);
    }
    Ok(urls)
}

/// Creates an empty database with a fresh name on the server of `base`.
async fn fresh_database_on(base: &str) -> anyhow::Result<String> {
    let admin = sqlx::PgPool::connect(base)
        .await
        .context("connect to PostgreSQL: is the stack up? (dev/stack up)")?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("likes_bench_{}", &suffix[..12]);
    // The name is ours: a fixed prefix and hex digits.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await?;
    admin.close().await;
    match base.rfind('/') {
        Some(i) => Ok(format!("{}/{name}", &base[..i])),
        None => anyhow::bail!("DATABASE_URL has no database name"),
    }
}

/// A copy of the database at `url` (every connection to it closed) under a
/// fresh name on the same server, file by file: much faster than filling a
/// second database the same way, and both start from the same pages.
pub async fn copy_database(url: &str) -> anyhow::Result<String> {
    let source = url.rsplit('/').next().unwrap_or_default();
    anyhow::ensure!(
        source.starts_with("likes_bench_") && source[12..].chars().all(|c| c.is_ascii_hexdigit()),
        "not a bench database: {source}"
    );
    let admin = sqlx::PgPool::connect(&admin_url(url)).await?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("likes_bench_{}", &suffix[..12]);
    // Both names are ours: a fixed prefix and hex digits.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE {source} STRATEGY FILE_COPY"
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    match url.rfind('/') {
        Some(i) => Ok(format!("{}/{name}", &url[..i])),
        None => anyhow::bail!("database URL has no database name"),
    }
}

/// Drops a database made by [`fresh_database`] (its pool must be closed).
pub async fn drop_database(url: &str) -> anyhow::Result<()> {
    let base = admin_url(url);
    let name = url.rsplit('/').next().unwrap_or_default();
    // Only names this harness made: a fixed prefix and hex digits.
    anyhow::ensure!(
        name.starts_with("likes_bench_") && name[12..].chars().all(|c| c.is_ascii_hexdigit()),
        "not a bench database: {name}"
    );
    let admin = sqlx::PgPool::connect(&base).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await?;
    admin.close().await;
    Ok(())
}

impl BenchEnv {
    /// Events the projector has committed on this slice's topic (the sum of
    /// its stored next offsets).
    pub async fn applied(&self) -> anyhow::Result<i64> {
        let mut applied = 0;
        for (_, pool) in self.shards.iter() {
            let (on_shard,): (i64,) = sqlx::query_as(
                "SELECT COALESCE(SUM(next_offset), 0)::int8 FROM projector_offsets WHERE topic = $1",
            )
            .bind(&self.stack.topic)
            .fetch_one(pool)
            .await?;
            applied += on_shard;
        }
        Ok(applied)
    }

    /// Removes what the scenario left: its Redis keys, its database and its
    /// topics, so runs do not pile up data in the shared stack (a FLUSHALL of
    /// a few runs' leftovers took seconds).
    pub async fn clean(self) -> anyhow::Result<()> {
        let redis = likes_infra::redis::Redis::connect(
            &self.stack.redis_address(),
            &self.stack.redis_key_prefix,
        )
        .await?;
        likes_infra::redis::repair::delete_all_keys(&redis).await?;
        self.shards.close().await;
        for url in &self.stack.database_urls {
            drop_database(url).await?;
        }
        let topics = [self.stack.topic.clone(), self.stack.dlq_topic()];
        likes_tests::cleanup::delete_topics(&self.stack.kafka_bootstrap, &topics).await?;
        likes_tests::cleanup::remove_dir(&self.stack.archive_url)
    }

    /// A fresh topic with `partitions`, its DLQ, a migrated database and a prefix.
    pub async fn new(partitions: i32) -> anyhow::Result<Self> {
        Self::sharded(partitions, 1).await
    }

    /// As [`BenchEnv::new`], with the projection on `shards` fresh databases.
    pub async fn sharded(partitions: i32, shards: usize) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let database_urls = fresh_shards(shards).await?;
        let stack = StackSettings {
            kafka_bootstrap: kafka_bootstrap(),
            topic: format!("like-events-bench-{suffix}"),
            schema_registry_url: env_or(
                "SCHEMA_REGISTRY_URL",
                "http://127.0.0.1:8081/apis/ccompat/v7",
            ),
            database_urls,
            database_max_connections: 10,
            redis_url: redis_url(),
            redis_cluster_nodes: redis_cluster_nodes()?,
            redis_key_prefix: format!("bench:{suffix}:"),
            archive_url: scratch()
                .join(format!("archive-{suffix}"))
                .display()
                .to_string(),
        };
        let replication = kafka::default_replication(&stack.kafka_bootstrap).await?;
        let topic =
            |name: String, partitions| TopicSpec::new(name, partitions, replication, RETENTION_MS);
        kafka::ensure_topics(
            &stack.kafka_bootstrap,
            &[
                topic(stack.topic.clone(), partitions),
                topic(stack.dlq_topic(), 1),
            ],
        )
        .await?;
        let shards = Shards::connect_lazy(&stack.database_urls, Some(partitions), 10)?;
        shards.migrate().await?;
        shards.record_map(&stack.topic).await?;
        Ok(Self {
            stack,
            shards,
            suffix,
        })
    }

    /// Starts an ingest in-process with protections off (every request produced).
    /// Refills of never-counted items are kept for the whole run: scenario 5
    /// warms its items once and measures cached reads, which the default
    /// minute-long refill TTL would turn into database reads mid-run.
    pub async fn start_ingest(&self) -> anyhow::Result<Service> {
        self.start_ingest_with(|_| {}).await
    }

    /// As [`Self::start_ingest`], with the production path's protections on:
    /// the per-user rate limit and the quick dedup at their defaults. The
    /// load's users are many and uniform, so neither refuses or answers
    /// (nearly) anything: what the scenarios measure with it is their cost.
    pub async fn start_protected_ingest(&self) -> anyhow::Result<Service> {
        self.start_ingest_with(|limits| {
            let on = likes_ingest::Limits::default();
            limits.rate = on.rate;
            limits.dedup_window = on.dedup_window;
        })
        .await
    }

    /// As [`Self::start_ingest`], its limits changed by `change` first.
    pub async fn start_ingest_with(
        &self,
        change: impl FnOnce(&mut likes_ingest::Limits),
    ) -> anyhow::Result<Service> {
        let settings = self.ingest_settings(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let mut limits = Self::ingest_limits()?;
        change(&mut limits);
        let app = likes_ingest::Application::build(&settings, limits).await?;
        let addr = app.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        Ok(Service { addr, stop, handle })
    }

    /// Ingest settings for this slice, listening on `listen_addr`.
    pub fn ingest_settings(
        &self,
        listen_addr: SocketAddr,
    ) -> anyhow::Result<likes_ingest::Settings> {
        Ok(likes_ingest::Settings {
            stack: self.stack.clone(),
            listen_addr,
            produce_timeout: PRODUCE_TIMEOUT,
            producer_linger: likes_infra::settings::producer_linger()?,
            max_body_bytes: 64 * 1024,
        })
    }

    /// The ingest's limits in the bench: protections off, refills kept for
    /// the whole run (see [`BenchEnv::start_ingest`]).
    pub fn ingest_limits() -> anyhow::Result<likes_ingest::Limits> {
        Ok(likes_ingest::Limits {
            cache_refill_ttl: Some(Duration::from_secs(3600)),
            redis_client_cache: likes_infra::settings::redis_client_cache()?,
            ..likes_ingest::Limits::unprotected()
        })
    }

    /// Projector settings for this slice with a fresh consumer group.
    pub fn projector_settings(&self) -> likes_projector::Settings {
        likes_projector::Settings {
            stack: self.stack.clone(),
            window: Duration::from_millis(1000),
            group_id: format!("projector-bench-{}", self.suffix),
            max_batch_events: 10_000,
            writers: 2,
            dedup_horizon: Duration::from_secs(
                likes_infra::settings::DEFAULT_DEDUP_HORIZON_SECONDS,
            ),
            metrics_addr: None,
        }
    }
}

/// A server running in-process and the means to stop it.
pub struct Service {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Service {
    /// A server from a task that serves until `stopped` resolves.
    pub fn new(addr: SocketAddr, stop: oneshot::Sender<()>, handle: JoinHandle<()>) -> Self {
        Self { addr, stop, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Asks the server to stop and waits (30 s at most).
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.handle).await??;
        Ok(())
    }
}
