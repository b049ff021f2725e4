//! `likes-replay snapshot create|list|delete`: consistent copies of the
//! PostgreSQL projection with the offsets they reflect (how a copy stays
//! consistent, and apart from a rebuild's swap: [`snapshots`]).
//! `rebuild postgres --from snapshot:<id>` starts from such a copy plus the
//! topic past its offsets.

use std::io::Write;
use std::process::ExitCode;

pub use likes_infra::postgres::snapshots::SnapshotInfo;
use likes_infra::postgres::{self, snapshots};
use likes_infra::settings::StackSettings;

use crate::output::{Format, json_line, table_row};

/// Prints snapshots as a table or JSON Lines.
pub fn print(
    out: &mut impl Write,
    snapshots: &[SnapshotInfo],
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            for s in snapshots {
                json_line(out, s)?;
            }
        }
        Format::Table => {
            let widths = [6, 25, 24, 9, 10, 10];
            let head = [
                "id",
                "created_at",
                "topic",
                "counters",
                "user_likes",
                "events",
                "note",
            ];
            table_row(out, &widths, &head.map(String::from))?;
            for s in snapshots {
                let cells = [
                    s.id.to_string(),
                    s.created_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    s.topic.clone(),
                    s.counters.to_string(),
                    s.user_likes.to_string(),
                    s.events.to_string(),
                    s.note.clone().unwrap_or_default(),
                ];
                table_row(out, &widths, &cells)?;
            }
        }
    }
    Ok(())
}

/// The `snapshot` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Copy counters, user_likes and the topic's offsets in one consistent transaction.
    Create {
        /// A note stored with the snapshot.
        #[arg(long)]
        note: Option<String>,
        /// Output: a summary table, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Every snapshot, oldest first.
    List {
        /// Output: an aligned table, or JSON Lines.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Delete a snapshot and its rows.
    Delete { id: i64 },
}

/// `likes-replay snapshot`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: SnapshotCommand,
}

/// Runs a `snapshot` subcommand against `stack`, printing to stdout.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    run(stack, args.action).await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs a `snapshot` subcommand against `stack`, printing to stdout.
pub async fn run(stack: &StackSettings, command: SnapshotCommand) -> anyhow::Result<()> {
    let pool = postgres::connect_lazy(postgres::shards::one_database(stack)?, 2)?;
    postgres::migrate(&pool).await?;
    let mut out = std::io::stdout().lock();
    let result = match command {
        SnapshotCommand::Create { note, format } => {
            let created = snapshots::create(&pool, &stack.topic, note.as_deref()).await;
            created
                .map_err(anyhow::Error::from)
                .and_then(|s| print(&mut out, &[s], format))
        }
        SnapshotCommand::List { format } => {
            let all = snapshots::list(&pool).await;
            all.map_err(anyhow::Error::from)
                .and_then(|s| print(&mut out, &s, format))
        }
        SnapshotCommand::Delete { id } => snapshots::delete(&pool, id)
            .await
            .map_err(anyhow::Error::from)
            .and_then(|()| Ok(writeln!(out, "snapshot {id} deleted")?)),
    };
    pool.close().await;
    result
}

pub mod base {
    //! A snapshot as the base of one item's derivation (`explain`, `count`): when
    //! retention has deleted the first events of the item's partition, the count is
    //! the snapshot's plus the events past its offset, which the log still holds.

    use chrono::{DateTime, Utc};
    use likes_domain::{ItemKey, Projection};
    use likes_infra::postgres::PgPool;
    use likes_infra::postgres::snapshots::{self, PartitionBase};
    use serde::Serialize;

    /// The snapshot a derivation starts from, and the item's state in it.
    #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
    pub struct SnapshotBase {
        pub id: i64,
        pub created_at: DateTime<Utc>,
        /// The partition's next offset the snapshot reflects: events are read from here.
        pub offset: i64,
        /// The item's count in the snapshot.
        pub count: i64,
    }

    pub use snapshots::newest_usable;

    /// Loads `item`'s state in snapshot `base` into a fresh reference model: each
    /// liker as the like event that made the row (so a later copy of that event
    /// reads as a duplicate). Returns the base and the model.
    pub async fn load(
        pool: &PgPool,
        base: PartitionBase,
        item: ItemKey,
    ) -> anyhow::Result<(SnapshotBase, Projection)> {
        let (likers, count) = snapshots::item(pool, base.id, item).await?;
        let mut model = Projection::default();
        for like in &likers {
            model.apply(like);
        }
        let base = SnapshotBase {
            id: base.id,
            created_at: base.created_at,
            offset: base.offset,
            count,
        };
        Ok((base, model))
    }
}
