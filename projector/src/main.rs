//! `likes-projector`: reads its settings and projects until SIGINT or SIGTERM.

use likes_projector::{Settings, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    likes_infra::telemetry::init(likes_infra::telemetry::SERVICE_FILTER);
    let settings = Settings::from_env()?;
    settings.log();
    run(settings, likes_infra::telemetry::shutdown_signal()).await?;
    Ok(())
}
