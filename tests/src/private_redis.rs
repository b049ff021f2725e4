//! A `redis-server` of the test's own on a free port: the test can make it
//! refuse writes (as a full or read-only Redis would) without disturbing the
//! shared Redis other tests use. It is killed when dropped.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A private Redis.
pub struct PrivateRedis {
    _child: Child,
    _dir: TempDir,
    pub port: u16,
    conn: redis::aio::ConnectionManager,
}

impl PrivateRedis {
    /// Starts `/usr/bin/redis-server` without persistence and waits for PONG.
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = TempDir::new()?;
        let child = Command::new("/usr/bin/redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let url = format!("redis://127.0.0.1:{port}/0");
        let client = redis::Client::open(url.as_str())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let conn = loop {
            match redis::aio::ConnectionManager::new(client.clone()).await {
                Ok(conn) => break conn,
                Err(e) if tokio::time::Instant::now() > deadline => return Err(e.into()),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        Ok(Self {
            _child: child,
            _dir: dir,
            port,
            conn,
        })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Makes every write fail with `NOREPLICAS` (reads still work), or not:
    /// a Redis that requires a replica it does not have.
    pub async fn refuse_writes(&self, refuse: bool) -> anyhow::Result<()> {
        let replicas = if refuse { "1" } else { "0" };
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("min-replicas-to-write")
            .arg(replicas)
            .query_async(&mut self.conn.clone())
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
            .arg(format!("{prefix}count:{item_type}:{item_id}"))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(value.as_deref().and_then(likes_infra::cache::parse_count))
    }
}

/// A scratch directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("likes-redis-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
