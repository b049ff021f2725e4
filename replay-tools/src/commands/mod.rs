//! One module per `likes-replay` command, each with its arguments
//! (`Args`), its run and its printing; [`Command`] lists them for `main`.

use std::process::ExitCode;

use likes_infra::settings::StackSettings;

pub mod accept_loss;
pub mod count;
pub mod dlq;
pub mod explain;
pub mod history;
pub mod rebuild;
pub mod schema;
pub mod setup;
pub mod snapshot;
pub mod verify;

/// The commands of `likes-replay`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create the topics, apply migrations and register the schema (idempotent).
    Setup(setup::Args),
    /// Decoded events of an item or a user, oldest first, with the running count.
    History(history::Args),
    /// How an item's count is derived from its events, compared with PostgreSQL.
    ///
    /// Exits non-zero when the derived count differs from `counters`.
    Explain(explain::Args),
    /// Reconcile Redis counts, `counters` and `COUNT(*)` of `user_likes`, per item.
    ///
    /// Prints the items that drift; exits non-zero when drift remains.
    Verify(verify::Args),
    /// An item's count computed from its events, now or as of a past time.
    Count(count::Args),
    /// Rebuild a projection.
    Rebuild(rebuild::Args),
    /// Consistent snapshots of the PostgreSQL projection with the offsets they reflect.
    Snapshot(snapshot::Args),
    /// Accept that records deleted from the log before the projector read them
    /// are lost, so the parked partition moves past exactly that gap.
    ///
    /// The range must be the one the projector reports (its log and /readyz):
    /// from its stored offset to the record before the log's start. The
    /// acceptance is recorded (who, when, why) in `accepted_losses`.
    AcceptLoss(accept_loss::Args),
    /// The archive of the log beyond retention: run the archiver, show its
    /// status, verify it.
    #[command(subcommand)]
    Archive(crate::archive::Args),
    /// Try a candidate event schema against the registry and the log.
    Schema(schema::Args),
    /// Inspect the dead-letter topic (`<topic>.dlq`): list its records, show one.
    Dlq(dlq::Args),
}

impl Command {
    /// Runs the command against `stack`; its exit code says how it ended.
    pub async fn run(self, stack: &StackSettings) -> anyhow::Result<ExitCode> {
        match self {
            Command::Setup(args) => setup::command(stack, args).await,
            Command::History(args) => history::command(stack, args).await,
            Command::Explain(args) => explain::command(stack, args).await,
            Command::Verify(args) => verify::command(stack, args).await,
            Command::Count(args) => count::command(stack, args).await,
            Command::Rebuild(args) => rebuild::command(stack, args).await,
            Command::Snapshot(args) => snapshot::command(stack, args).await,
            Command::AcceptLoss(args) => accept_loss::command(stack, args).await,
            Command::Archive(args) => crate::archive::command(stack, args).await,
            Command::Schema(args) => schema::command(stack, args).await,
            Command::Dlq(args) => dlq::command(stack, args).await,
        }
    }
}
