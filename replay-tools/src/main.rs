//! `likes-replay`: command-line entry point.

use clap::{Parser, Subcommand};
use likes_infra::settings::StackSettings;
use likes_replay::setup::{self, Layout};

/// Replay and audit tools for the likes event log.
#[derive(Parser)]
#[command(name = "likes-replay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the topics, apply migrations and register the schema (idempotent).
    Setup {
        /// Partitions of the events topic; choose once, it bounds projector parallelism.
        #[arg(long, default_value_t = 64)]
        partitions: i32,
        /// Replication factor of the topics.
        #[arg(long, default_value_t = 1)]
        replication: i32,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    likes_infra::telemetry::init("warn");
    let cli = Cli::parse();
    let result = async {
        let stack = StackSettings::from_env()?;
        match cli.command {
            Command::Setup {
                partitions,
                replication,
            } => {
                setup::run(
                    &stack,
                    Layout {
                        partitions,
                        replication,
                    },
                )
                .await
            }
        }
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("likes-replay: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
