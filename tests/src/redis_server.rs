//! A private `redis-server` for tests that need Redis to themselves (exact
//! `DBSIZE`, memory pressure, eviction): started from the dev stack's own
//! `dev/config/redis.conf` (so it runs the same memory policy) on a free port,
//! with a scratch directory; killed when dropped. Services of the test are
//! pointed at it with [`ingest_settings_on`] and [`start_projector_on`].

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

use crate::{Running, TestEnv};

/// A running private Redis.
pub struct PrivateRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl PrivateRedis {
    /// Starts `redis-server dev/config/redis.conf` on a free loopback port;
    /// `overrides` are extra options (`["--maxmemory", "2mb"]`) that win over
    /// the file. The binary is `REDIS_SERVER` or `/usr/bin/redis-server`.
    pub async fn start(overrides: &[&str]) -> anyhow::Result<Self> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let dir = std::env::temp_dir().join(format!("likes-test-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let binary =
            std::env::var("REDIS_SERVER").unwrap_or_else(|_| "/usr/bin/redis-server".into());
        let mut command = Command::new(&binary);
        command
            .arg(config_path())
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .args(["--daemonize", "no", "--loglevel", "warning"])
            .args(overrides)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("start {binary}"))?;
        let server = Self { child, port, dir };
        server.wait_ready().await?;
        Ok(server)
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// A connection of the test's own.
    pub async fn connection(&self) -> anyhow::Result<redis::aio::ConnectionManager> {
        let client = redis::Client::open(self.url())?;
        Ok(redis::aio::ConnectionManager::new(client).await?)
    }

    /// Makes every write fail with `NOREPLICAS` (reads still work), or not:
    /// a Redis that requires a replica it does not have, as a full or
    /// read-only Redis would refuse the projector's writes.
    pub async fn refuse_writes(&self, refuse: bool) -> anyhow::Result<()> {
        let replicas = if refuse { "1" } else { "0" };
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(replicas)
            .query_async(&mut self.connection().await?)
            .await?;
        Ok(())
    }

    /// The count stored under `prefix` for an item, if any.
    pub async fn count(
        &self,
        prefix: &str,
        item_type: i32,
        item_id: i64,
    ) -> anyhow::Result<Option<i64>> {
        let value: Option<String> = redis::cmd("GET")
            .arg(
                likes_infra::redis::Keys::new(prefix)
                    .count(likes_domain::ItemKey::parse(item_type.into(), item_id)?),
            )
            .query_async(&mut self.connection().await?)
            .await?;
        Ok(value
            .as_deref()
            .and_then(likes_infra::redis::counts::parse_count))
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = redis::Client::open(self.url())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "private redis-server on port {} did not answer",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The dev stack's Redis configuration.
pub fn config_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dev/config/redis.conf")
}

/// `env`'s ingest settings, with Redis on `redis`.
pub fn ingest_settings_on(env: &TestEnv, redis: &PrivateRedis) -> likes_ingest::Settings {
    let mut settings = env.ingest_settings();
    settings.stack.redis_url = redis.url();
    settings
}

/// Starts a projector on `env`'s slice writing Redis on `redis`.
pub fn start_projector_on(
    env: &TestEnv,
    redis: &PrivateRedis,
) -> Running<Result<(), likes_projector::ProjectorError>> {
    let mut settings = env.projector_settings();
    settings.stack.redis_url = redis.url();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(likes_projector::run(settings, async {
        let _ = stopped.await;
    }));
    Running {
        stop: Some(stop),
        handle,
    }
}
