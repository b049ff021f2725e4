//! Test harness for the integration tests: every test gets its own topic,
//! database, consumer group and Redis key prefix on the real stack started by
//! `dev/stack up`, and runs the services in-process on port 0.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use likes_infra::kafka::{self, RETENTION_MS, TopicSpec};
use likes_infra::postgres::shards::Shards;
use likes_infra::postgres::{self, PgPool};
use likes_infra::settings::StackSettings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub mod api;
pub mod archive;
pub mod archiver_process;
pub mod cleanup;
pub mod cli;
pub mod cluster;
pub mod commit_gaps;
pub mod dead_letters;
pub mod figures;
pub mod likers_sets;
pub mod load;
pub mod log_surgery;
pub mod peer;
pub mod pg_proxy;
pub mod probes;
pub mod process;
pub mod projected_rows;
pub mod projector_http;
pub mod prometheus;
pub mod raw_http;
pub mod redis_server;
pub mod registry_proxy;
pub mod replay;
pub mod rewire;
pub mod scrape;
pub mod shard_projection;
pub mod shard_writer;
pub mod tcp_proxy;
pub mod timed_records;
pub mod topic;
pub mod watch;

/// One test's private slice of the stack.
pub struct TestEnv {
    pub stack: StackSettings,
    /// The first shard's pool: the whole projection unless made [`TestEnv::sharded`].
    pub db: PgPool,
    /// Every shard of the projection.
    pub shards: Shards,
    pub redis: likes_infra::redis::Connection,
    pub partitions: i32,
    pub suffix: String,
    /// Its databases, topics, keys and archive, removed when the last
    /// `TestEnv` of the slice goes (see [`rewire::rewired`]).
    pub(crate) leftovers: std::sync::Arc<cleanup::Leftovers>,
}

/// A running in-process service and the means to stop it.
pub struct Running<T> {
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<T>,
}

impl<T> Running<T> {
    /// Asks the service to stop and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<T> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        Ok(tokio::time::timeout(Duration::from_secs(30), self.handle).await??)
    }

    /// Kills the task without letting it finish anything (a crash).
    pub fn abort(self) {
        self.handle.abort();
    }
}

/// A running ingest service.
pub struct Ingest {
    pub addr: SocketAddr,
    pub running: Running<()>,
}

impl Ingest {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// `user` likes item (type 1, `item`); anything but 202 is an error.
    pub async fn like(&self, user: i64, item: i64) -> anyhow::Result<()> {
        like_at(self.addr, user, item).await
    }
}

/// `user` likes item (type 1, `item`) through the ingest at `addr`; anything
/// but 202 is an error.
pub async fn like_at(addr: SocketAddr, user: i64, item: i64) -> anyhow::Result<()> {
    let status = reqwest::Client::new()
        .post(format!("http://{addr}/v1/likes"))
        .json(&serde_json::json!({"user_id": user, "item_id": item, "item_type": 1}))
        .send()
        .await?
        .status();
    anyhow::ensure!(status == 202, "like of {item} by {user}: {status}");
    Ok(())
}

/// A fresh database with the migrations applied, for tests of the store alone.
pub struct TestDb {
    pub pool: PgPool,
    pub url: String,
    /// Drops the database when the test ends.
    _leftovers: cleanup::Leftovers,
}

impl TestDb {
    pub async fn new() -> anyhow::Result<Self> {
        likes_infra::telemetry::init("warn");
        let url = fresh_database().await?;
        let leftovers = cleanup::Leftovers::databases(vec![url.clone()]);
        let pool = postgres::connect_lazy(&url, 5)?;
        postgres::migrate(&pool).await?;
        Ok(Self {
            pool,
            url,
            _leftovers: leftovers,
        })
    }

    /// The count of item (type 1, `item_id`) in `counters`, 0 when absent.
    pub async fn count(&self, item_id: i64) -> anyhow::Result<i64> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT count FROM counters WHERE item_type = 1 AND item_id = $1")
                .bind(item_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map_or(0, |r| r.0))
    }
}

/// The stack's PostgreSQL databases: `DATABASE_URLS` when set (one per
/// server on the cluster topology), else `DATABASE_URL`.
fn stack_databases() -> Vec<String> {
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

/// The stack's own database on its first server (where test databases are
/// created from).
pub fn stack_database_url() -> String {
    stack_databases()[0].clone()
}

/// The stack's database on the server `url` points at (the first server's
/// when none matches): where a test database is dropped from.
pub(crate) fn stack_database_on_server_of(url: &str) -> String {
    let server = |u: &str| u.rsplit_once('/').map(|(s, _)| s.to_string());
    let databases = stack_databases();
    databases
        .iter()
        .find(|d| server(d) == server(url))
        .unwrap_or(&databases[0])
        .clone()
}

/// Creates an empty database named after a fresh id on the stack's first
/// server and returns its URL.
async fn fresh_database() -> anyhow::Result<String> {
    fresh_database_beside(&stack_databases()[0]).await
}

/// `shards` fresh databases: one per server of the stack while there are
/// servers (so a test can stop one shard's server), then more on the first.
pub async fn fresh_shards(shards: usize) -> anyhow::Result<Vec<String>> {
    let servers = stack_databases();
    let mut urls = Vec::with_capacity(shards);
    for shard in 0..shards {
        let base = servers.get(shard).unwrap_or(&servers[0]);
        urls.push(fresh_database_beside(base).await?);
    }
    Ok(urls)
}

/// Creates an empty database on the server of `base_db` and returns its URL.
async fn fresh_database_beside(base_db: &str) -> anyhow::Result<String> {
    let admin = sqlx::PgPool::connect(base_db)
        .await
        .context("connect to PostgreSQL: is the stack up? (dev/stack up)")?;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let db_name = format!("likes_test_{}", &suffix[..12]);
    // The name is ours: a fixed prefix and hex digits.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&admin)
        .await?;
    admin.close().await;
    match base_db.rfind('/') {
        Some(i) => Ok(format!("{}/{db_name}", &base_db[..i])),
        None => anyhow::bail!("DATABASE_URL has no database name"),
    }
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

impl TestEnv {
    /// Creates a fresh topic (with `partitions`) and its DLQ, a fresh database with
    /// the migrations applied, and a fresh Redis key prefix.
    pub async fn new(partitions: i32) -> anyhow::Result<Self> {
        Self::sharded(partitions, 1).await
    }

    /// As [`TestEnv::new`], with the projection on `shards` fresh databases
    /// (see [`fresh_shards`]), migrated and holding their shard map.
    pub async fn sharded(partitions: i32, shards: usize) -> anyhow::Result<Self> {
        likes_infra::telemetry::init("warn,likes_projector=info");
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
        let database_urls = fresh_shards(shards).await?;
        // From here on, whatever happens, the databases go with the test.
        let mut leftovers = cleanup::Leftovers::databases(database_urls.clone());
        let stack = StackSettings {
            kafka_bootstrap: env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            topic: format!("like-events-test-{suffix}"),
            schema_registry_url: env_or(
                "SCHEMA_REGISTRY_URL",
                "http://127.0.0.1:8081/apis/ccompat/v7",
            ),
            database_urls,
            database_max_connections: 10,
            redis_url: env_or("REDIS_URL", "redis://127.0.0.1:6379/0"),
            redis_cluster_nodes: likes_infra::settings::url_list(
                "REDIS_CLUSTER_NODES",
                &["redis"],
            )?,
            redis_key_prefix: format!("test:{suffix}:"),
            // Its own directory: the archive tests read and write it.
            archive_url: std::env::temp_dir()
                .join(format!("likes-test-archive-{suffix}"))
                .display()
                .to_string(),
        };
        leftovers = leftovers.with_slice(stack.clone(), suffix.clone());
        // Replicated as `setup` would on this stack: 1 on the single node, 3
        // (min.insync.replicas 2) on the cluster.
        let replication = kafka::default_replication(&stack.kafka_bootstrap).await?;
        kafka::ensure_topics(
            &stack.kafka_bootstrap,
            &[
                TopicSpec::new(stack.topic.clone(), partitions, replication, RETENTION_MS),
                TopicSpec::new(stack.dlq_topic(), 1, replication, RETENTION_MS),
            ],
        )
        .await?;
        let shards = Shards::connect_lazy(&stack.database_urls, Some(partitions), 5)?;
        shards.migrate().await?;
        shards.record_map(&stack.topic).await?;
        let db = shards.pool(0).clone();
        let redis =
            likes_infra::redis::Redis::connect(&stack.redis_address(), &stack.redis_key_prefix)
                .await?
                .connection();
        Ok(Self {
            stack,
            db,
            shards,
            redis,
            partitions,
            suffix,
            leftovers: std::sync::Arc::new(leftovers),
        })
    }

    /// The project's producer on this test's topic, its schema registered.
    pub async fn publisher(&self) -> anyhow::Result<likes_infra::kafka::Publisher> {
        let publisher = likes_infra::kafka::Publisher::new(
            &self.stack.kafka_bootstrap,
            &self.stack.topic,
            &self.stack.schema_registry_url,
            Duration::from_secs(30),
            Duration::from_millis(likes_infra::settings::DEFAULT_PRODUCER_LINGER_MS),
        )?;
        publisher.codec().register().await?;
        Ok(publisher)
    }

    /// Ingest settings pointing at this test's slice, on a free port.
    pub fn ingest_settings(&self) -> likes_ingest::Settings {
        likes_ingest::Settings {
            stack: self.stack.clone(),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            produce_timeout: Duration::from_secs(5),
            producer_linger: Duration::from_millis(
                likes_infra::settings::DEFAULT_PRODUCER_LINGER_MS,
            ),
            max_body_bytes: 64 * 1024,
        }
    }

    /// Starts an ingest service in-process (no rate limit or quick dedup, so every
    /// request is produced).
    pub async fn start_ingest(&self) -> anyhow::Result<Ingest> {
        api::start_with(self.ingest_settings(), likes_ingest::Limits::unprotected()).await
    }

    /// Projector settings for this test's slice: a short window keeps tests quick.
    pub fn projector_settings(&self) -> likes_projector::Settings {
        likes_projector::Settings {
            stack: self.stack.clone(),
            window: Duration::from_millis(300),
            group_id: format!("projector-{}", self.suffix),
            max_batch_events: 10_000,
            writers: 2,
            dedup_horizon: Duration::from_secs(
                likes_infra::settings::DEFAULT_DEDUP_HORIZON_SECONDS,
            ),
            metrics_addr: None,
        }
    }

    /// Starts a projector in-process.
    pub fn start_projector(&self) -> Running<Result<(), likes_projector::ProjectorError>> {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(likes_projector::run(self.projector_settings(), async {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            handle,
        }
    }

    /// Waits (up to `within`) until the projector's stored offsets, summed
    /// over every shard, reach the topic's end: everything appended is applied.
    pub async fn projected_everything(&self, within: Duration) -> anyhow::Result<()> {
        eventually(within, || async {
            let mut stored = 0;
            for (_, pool) in self.shards.iter() {
                let positions = postgres::offsets::positions(pool, &self.stack.topic).await?;
                stored += positions.iter().map(|p| p.1).sum::<i64>();
            }
            Ok(stored == self.end_offsets()?)
        })
        .await
    }

    /// The sum of the high watermarks of the topic's partitions: how many records
    /// were ever appended.
    pub fn end_offsets(&self) -> anyhow::Result<i64> {
        let consumer: BaseConsumer =
            kafka::consumer_config(&self.stack.kafka_bootstrap, "watermarks").create()?;
        let mut total = 0;
        for p in 0..self.partitions {
            let (_low, high) =
                consumer.fetch_watermarks(&self.stack.topic, p, Duration::from_secs(10))?;
            total += high;
        }
        Ok(total)
    }

    /// The count of an item in `counters` (0 when absent).
    pub async fn db_count(&self, item_type: i32, item_id: i64) -> anyhow::Result<i64> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT count FROM counters WHERE item_type = $1 AND item_id = $2")
                .bind(item_type as i16)
                .bind(item_id)
                .fetch_optional(self.shards.for_item(item_id).1)
                .await?;
        Ok(row.map_or(0, |r| r.0))
    }

    /// The number of `user_likes` rows of an item.
    pub async fn db_likers(&self, item_type: i32, item_id: i64) -> anyhow::Result<i64> {
        let (n,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM user_likes WHERE item_type = $1 AND item_id = $2")
                .bind(item_type as i16)
                .bind(item_id)
                .fetch_one(self.shards.for_item(item_id).1)
                .await?;
        Ok(n)
    }

    /// The count Redis holds for an item, if any.
    pub async fn redis_count(&self, item_type: i32, item_id: i64) -> anyhow::Result<Option<i64>> {
        let key = likes_infra::redis::Keys::new(&self.stack.redis_key_prefix)
            .count(likes_domain::ItemKey::parse(item_type.into(), item_id)?);
        let value: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut self.redis.clone())
            .await?;
        Ok(value
            .as_deref()
            .and_then(likes_infra::redis::counts::parse_count))
    }
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
