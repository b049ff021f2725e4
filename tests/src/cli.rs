//! Running the real `likes-replay` binary to its end on a test's slice of the
//! stack, and reading what it printed and how it exited.

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

use crate::TestEnv;
use crate::process::binary;

/// Runs `likes-replay <args>` with `env`'s settings (2 minutes at most).
pub async fn likes_replay(env: &TestEnv, args: &[&str]) -> anyhow::Result<Output> {
    let s = &env.stack;
    let run = Command::new(binary("likes-replay")?)
        .args(args)
        .env("KAFKA_BOOTSTRAP_SERVERS", &s.kafka_bootstrap)
        .env("KAFKA_TOPIC", &s.topic)
        .env("SCHEMA_REGISTRY_URL", &s.schema_registry_url)
        .env("DATABASE_URL", &s.database_url)
        .env("REDIS_URL", &s.redis_url)
        .env("REDIS_KEY_PREFIX", &s.redis_key_prefix)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    Ok(tokio::time::timeout(Duration::from_secs(120), run).await??)
}
