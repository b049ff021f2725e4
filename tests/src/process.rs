//! Real processes for the fault tests: the projector binary run as a child (so
//! it can be SIGKILLed), and the project's own `dev/stack` to restart services.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

use crate::TestEnv;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Runs `dev/stack <args>` and fails when it does.
pub async fn stack(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(repo_root().join("dev/stack"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .await?;
    anyhow::ensure!(status.success(), "dev/stack {args:?} failed: {status}");
    Ok(())
}

/// Where cargo put the workspace's binaries for this build profile.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("no target directory")?;
    let path = dir.join(name);
    anyhow::ensure!(
        path.exists(),
        "{} is missing: build it first (cargo build --bins)",
        path.display()
    );
    Ok(path)
}

/// The environment that points a service binary at this test's slice of the stack.
/// Points a child process at `env`'s slice of the stack.
pub fn service_env(command: &mut Command, env: &TestEnv) {
    let s = &env.stack;
    command
        .env("KAFKA_BOOTSTRAP_SERVERS", &s.kafka_bootstrap)
        .env("KAFKA_TOPIC", &s.topic)
        .env("SCHEMA_REGISTRY_URL", &s.schema_registry_url)
        .env("DATABASE_URLS", s.database_urls.join(","))
        .env("REDIS_URL", &s.redis_url)
        .env("REDIS_CLUSTER_NODES", s.redis_cluster_nodes.join(","))
        .env("REDIS_KEY_PREFIX", &s.redis_key_prefix)
        .env("ARCHIVE_URL", &s.archive_url);
}

/// Waits (up to 30 s) until a service answers `GET /healthz` on `addr` with success.
pub async fn answers_healthz(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    crate::eventually(Duration::from_secs(30), || async {
        Ok(http
            .get(format!("http://{addr}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()))
    })
    .await
}

/// An ingest service running as its own OS process, on a port of its own.
pub struct IngestProcess {
    child: Child,
    pub addr: std::net::SocketAddr,
}

impl IngestProcess {
    /// Starts `likes-ingest` and waits until it answers `/healthz`.
    pub async fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = Command::new(binary("likes-ingest")?);
        service_env(&mut command, env);
        let child = command
            .env("LISTEN_ADDR", addr.to_string())
            .env("RATE_LIMIT_PER_SECOND", "0")
            .env("DEDUP_WINDOW_MS", "0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        answers_healthz(addr).await?;
        Ok(Self { child, addr })
    }

    /// `user` likes item (type 1, `item`); anything but 202 is an error.
    pub async fn like(&self, user: i64, item: i64) -> anyhow::Result<()> {
        crate::like_at(self.addr, user, item).await
    }

    /// Sends SIGTERM and returns the exit status.
    pub async fn terminate(self) -> anyhow::Result<std::process::ExitStatus> {
        sigterm(self.child).await
    }

    /// The process id, to signal it while requests are on their way.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// A projector running as its own OS process.
pub struct ProjectorProcess {
    child: Child,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`, if it does.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl ProjectorProcess {
    /// Starts `likes-projector` on this test's slice of the stack.
    pub fn start(env: &TestEnv) -> anyhow::Result<Self> {
        Self::spawn(env, None)
    }

    /// Starts `likes-projector` serving its metrics and health checks on a
    /// free port of its own (`metrics_addr`).
    pub fn start_with_metrics(env: &TestEnv) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Self::spawn(
            env,
            Some(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        )
    }

    fn spawn(env: &TestEnv, metrics_addr: Option<std::net::SocketAddr>) -> anyhow::Result<Self> {
        let s = env.projector_settings();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::env::temp_dir().join(format!("projector-{}.log", env.suffix)))?;
        let mut command = Command::new(binary("likes-projector")?);
        service_env(&mut command, env);
        let child = command
            .env("PROJECTOR_GROUP_ID", &s.group_id)
            .env(
                "AGGREGATION_WINDOW_SECONDS",
                s.window.as_secs_f64().to_string(),
            )
            .env(
                "PROJECTOR_METRICS_ADDR",
                metrics_addr.map_or_else(|| "off".to_string(), |a| a.to_string()),
            )
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self {
            child,
            metrics_addr,
        })
    }

    /// SIGKILL: no shutdown path runs, whatever the process was doing.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(self) -> anyhow::Result<()> {
        let status = sigterm(self.child).await?;
        anyhow::ensure!(status.success(), "projector exited with {status}");
        Ok(())
    }
}

/// Sends SIGTERM to `child` and waits (bounded) for it to exit.
async fn sigterm(mut child: Child) -> anyhow::Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await?;
    }
    Ok(tokio::time::timeout(Duration::from_secs(30), child.wait()).await??)
}
