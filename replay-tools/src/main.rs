//! `likes-replay`: command-line entry point. Parsing and dispatch only; each
//! command lives in its own module of the library (`likes_replay::commands`).

use std::process::ExitCode;

use clap::Parser;
use likes_infra::settings::StackSettings;
use likes_replay::commands::Command;

/// Replay and audit tools for the likes event log.
///
/// Every read of the topic uses its own consumer with assigned partitions; it
/// never joins or commits for the live projector's group.
#[derive(Parser)]
#[command(name = "likes-replay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[tokio::main]
async fn main() -> ExitCode {
    likes_infra::telemetry::init("warn");
    let cli = Cli::parse();
    let run = async { cli.command.run(&StackSettings::from_env()?).await };
    match run.await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("likes-replay: {e:#}");
            ExitCode::FAILURE
        }
    }
}
