//! The projector with its HTTP endpoint (`/healthz`, `/readyz`, metrics) on a
//! free port, for tests that read its readiness and metrics.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::TestEnv;

/// An in-process projector and where its endpoint listens.
pub struct ObservedProjector {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<Result<(), likes_projector::ProjectorError>>,
    pub addr: SocketAddr,
}

impl ObservedProjector {
    /// Starts the projector of `env` with its endpoint on a free port.
    pub fn start(env: &TestEnv) -> anyhow::Result<Self> {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let settings = likes_projector::Settings {
            metrics_addr: Some(addr),
            ..env.projector_settings()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(likes_projector::run(settings, async {
            let _ = stopped.await;
        }));
        Ok(Self { stop, handle, addr })
    }

    /// Asks the projector to stop and waits for it.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(30), self.handle).await???;
        Ok(())
    }

    /// `GET path`: the status and the body.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let response = reqwest::get(format!("http://{}{path}", self.addr)).await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// `/readyz` as JSON, with its status.
    pub async fn readiness(&self) -> anyhow::Result<(u16, serde_json::Value)> {
        let (status, body) = self.get("/readyz").await?;
        Ok((status, serde_json::from_str(&body)?))
    }

    /// The metric lines (Prometheus text) whose name is `name`.
    pub async fn metric_lines(&self, name: &str) -> anyhow::Result<Vec<String>> {
        let (_, body) = self.get("/metrics").await?;
        Ok(body
            .lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .map(str::to_string)
            .collect())
    }
}

/// The value of the counter `name` (summed over its labels) in this process's
/// metrics recorder, which every in-process service of a test shares: take it
/// before and after to see what one test added.
pub fn counter_now(name: &str) -> f64 {
    let text = likes_infra::telemetry::prometheus()
        .map(|handle| handle.render())
        .unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
