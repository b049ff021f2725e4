//! `likes-replay archive`: the archive of the log beyond retention
//! (`likes_infra::archive`). [`run`] is the archiver (a long-running process
//! `dev/stack run` starts beside ingest and projector), [`status`] shows how
//! far it reaches, [`verify`] checks that archive and topic together hold
//! every offset exactly once and that every file decodes.

pub mod metrics;
pub mod run;
pub mod status;
pub mod verify;

use std::process::ExitCode;

use likes_infra::settings::{StackSettings, redact};

/// `likes-replay archive <command>`.
#[derive(Debug, clap::Subcommand)]
pub enum Args {
    /// Archive every record of every partition, until stopped (SIGINT/SIGTERM
    /// completes the open files first).
    Run(run::Args),
    /// How far the archive reaches per partition, beside the topic.
    Status(status::Args),
    /// Check that archive and topic hold every offset exactly once and that
    /// every file decodes; exits non-zero otherwise.
    Verify(verify::Args),
}

pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    match args {
        Args::Run(args) => {
            run::run(stack, args, likes_infra::telemetry::shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Args::Status(args) => status::command(stack, args).await,
        Args::Verify(args) => verify::command(stack, args).await,
    }
}

/// The archive's URL without secrets.
pub fn url(stack: &StackSettings) -> String {
    redact(&stack.archive_url)
}
