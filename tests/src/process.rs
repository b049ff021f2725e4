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
fn binary(name: &str) -> anyhow::Result<PathBuf> {
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

/// A projector running as its own OS process.
pub struct ProjectorProcess {
    child: Child,
}

impl ProjectorProcess {
    /// Starts `likes-projector` on this test's slice of the stack.
    pub fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let s = env.projector_settings();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(std::env::temp_dir().join(format!("projector-{}.log", env.suffix)))?;
        let child = Command::new(binary("likes-projector")?)
            .env("KAFKA_BOOTSTRAP_SERVERS", &s.stack.kafka_bootstrap)
            .env("KAFKA_TOPIC", &s.stack.topic)
            .env("SCHEMA_REGISTRY_URL", &s.stack.schema_registry_url)
            .env("DATABASE_URL", &s.stack.database_url)
            .env("REDIS_URL", &s.stack.redis_url)
            .env("REDIS_KEY_PREFIX", &s.stack.redis_key_prefix)
            .env("PROJECTOR_GROUP_ID", &s.group_id)
            .env(
                "AGGREGATION_WINDOW_SECONDS",
                s.window.as_secs_f64().to_string(),
            )
            .env("PROJECTOR_METRICS_ADDR", "off")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child })
    }

    /// SIGKILL: no shutdown path runs, whatever the process was doing.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn terminate(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await?;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        anyhow::ensure!(status.success(), "projector exited with {status}");
        Ok(())
    }
}
