//! `likes-ingest`: reads its settings and runs the API until SIGINT or SIGTERM.

use likes_ingest::{Application, Limits, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    likes_infra::telemetry::init(likes_infra::telemetry::SERVICE_FILTER);
    let settings = Settings::from_env()?;
    let limits = Limits::from_env()?;
    settings.log();
    limits.log();
    let app = Application::build(&settings, limits).await?;
    app.run_until_stopped(likes_infra::telemetry::shutdown_signal())
        .await;
    Ok(())
}
