//! Running the real `likes-replay` binary to its end on a test's slice of the
//! stack, and reading what it printed and how it exited.

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::process::Command;

use crate::TestEnv;
use crate::process::{binary, service_env};

/// `likes-replay <args>` with `env`'s settings, ready to run; a test may
/// override a variable before it does.
pub fn likes_replay_command(env: &TestEnv, args: &[&str]) -> anyhow::Result<Command> {
    let mut command = Command::new(binary("likes-replay")?);
    command.args(args);
    service_env(&mut command, env);
    command
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    Ok(command)
}

/// Runs `command` to its end (2 minutes at most).
pub async fn output(mut command: Command) -> anyhow::Result<Output> {
    Ok(tokio::time::timeout(Duration::from_secs(120), command.output()).await??)
}

/// Runs `likes-replay <args>` with `env`'s settings to its end.
pub async fn likes_replay(env: &TestEnv, args: &[&str]) -> anyhow::Result<Output> {
    output(likes_replay_command(env, args)?).await
}
