//! The archiver (`likes-replay archive run`) as its own OS process on a test's
//! slice of the stack, completing a file every second and serving its metrics
//! on a free port of its own.

use std::net::SocketAddr;

use tokio::process::Child;

use crate::TestEnv;
use crate::cli::likes_replay_command;

pub struct ArchiverProcess {
    child: Child,
    /// Where it serves `/metrics` and `/healthz`.
    pub metrics_addr: SocketAddr,
}

impl ArchiverProcess {
    /// Starts the archiver and waits until it answers `/healthz`.
    pub async fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut command = likes_replay_command(env, &["archive", "run"])?;
        let child = command
            .env("ARCHIVE_ROLL_SECONDS", "1")
            .env("ARCHIVE_METRICS_ADDR", metrics_addr.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()?;
        crate::process::answers_healthz(metrics_addr).await?;
        Ok(Self {
            child,
            metrics_addr,
        })
    }

    /// Stops it (SIGKILL: what it archived is in complete files either way).
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
