//! `likes-replay snapshot create|list|show|delete`: consistent copies of the
//! PostgreSQL projection with the offsets they reflect (how a copy stays
//! consistent, and apart from a rebuild's swap: [`snapshots`]).
//! `rebuild postgres --from snapshot:<id>` starts from such a copy plus the
//! topic past its offsets.
//!
//! With several shards a snapshot is one id with a part on every shard: shard
//! 0's sequence hands out the id, and each shard copies its own rows and its
//! own partitions' offsets under that id in its own `REPEATABLE READ`
//! transaction. The parts are taken at slightly different moments, which is
//! still one state of the projection: shards own disjoint partitions, and a
//! snapshot is a next offset per partition with exactly the rows those
//! offsets give. A snapshot is complete only when every shard holds its part.
//! When a part fails, `create` deletes the parts it made and says so; a part
//! left behind by a killed `create` shows as incomplete in `list` and `show`,
//! is never chosen by a rebuild (which refuses such an id, naming the shard
//! that lacks it), and `delete <id>` removes it.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::future::join_all;
use likes_infra::postgres::shards::Shards;
use likes_infra::postgres::snapshots;
pub use likes_infra::postgres::snapshots::SnapshotInfo;
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::output::{Format, json_line, table_row};

/// One snapshot across the shards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub id: i64,
    pub topic: String,
    /// When its newest part was taken.
    pub created_at: DateTime<Utc>,
    pub note: Option<String>,
    /// Sums over the parts.
    pub counters: i64,
    pub user_likes: i64,
    pub events: i64,
    /// Every shard holds its part: only then can a rebuild start from it.
    pub complete: bool,
    /// One per shard that holds a part, in shard order.
    pub parts: Vec<SnapshotPart>,
}

/// One shard's part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotPart {
    pub shard: usize,
    /// The partitions the shard owns, `first-last` (`all` with one shard).
    pub partitions: String,
    pub created_at: DateTime<Utc>,
    pub counters: i64,
    pub user_likes: i64,
    pub events: i64,
    /// The next offset of each partition the part reflects (`show` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offsets: Option<BTreeMap<i32, i64>>,
}

impl Snapshot {
    /// Merges the parts found on the shards (each `(shard, info)`) into snapshots by id.
    fn merge(shards: &Shards, parts: Vec<(usize, SnapshotInfo)>) -> Vec<Snapshot> {
        let mut by_id: BTreeMap<i64, Snapshot> = BTreeMap::new();
        for (shard, info) in parts {
            let merged = by_id.entry(info.id).or_insert_with(|| Snapshot {
                id: info.id,
                topic: info.topic.clone(),
                created_at: info.created_at,
                note: info.note.clone(),
                counters: 0,
                user_likes: 0,
                events: 0,
                complete: false,
                parts: Vec::new(),
            });
            merged.created_at = merged.created_at.max(info.created_at);
            merged.counters += info.counters;
            merged.user_likes += info.user_likes;
            merged.events += info.events;
            merged.parts.push(SnapshotPart {
                shard,
                partitions: crate::shards::owns(shards, shard),
                created_at: info.created_at,
                counters: info.counters,
                user_likes: info.user_likes,
                events: info.events,
                offsets: None,
            });
        }
        by_id
            .into_values()
            .map(|mut s| {
                s.parts.sort_by_key(|p| p.shard);
                s.complete = s.parts.len() == shards.len();
                s
            })
            .collect()
    }

    /// The shards holding a part, and those missing one: `0,1` or
    /// `0 (incomplete: no part on 1)`.
    fn held(&self, shards: usize) -> String {
        let held: Vec<String> = self.parts.iter().map(|p| p.shard.to_string()).collect();
        let missing: Vec<String> = (0..shards)
            .filter(|s| !self.parts.iter().any(|p| p.shard == *s))
            .map(|s| s.to_string())
            .collect();
        match missing.is_empty() {
            true => held.join(","),
            false => format!(
                "{} (incomplete: no part on {})",
                held.join(","),
                missing.join(",")
            ),
        }
    }
}

/// Prints snapshots as a table or JSON Lines.
pub fn print(
    out: &mut impl Write,
    snapshots: &[Snapshot],
    shards: usize,
    format: Format,
) -> anyhow::Result<()> {
    match format {
        Format::Json => {
            for s in snapshots {
                json_line(out, s)?;
            }
        }
        Format::Table => {
            let widths = [6, 25, 24, 9, 10, 10, 8];
            let head = [
                "id",
                "created_at",
                "topic",
                "counters",
                "user_likes",
                "events",
                "shards",
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
                    s.held(shards),
                    s.note.clone().unwrap_or_default(),
                ];
                table_row(out, &widths, &cells)?;
            }
        }
    }
    Ok(())
}

/// Prints one snapshot part by part, with each part's offsets.
pub fn print_parts(
    out: &mut impl Write,
    snapshot: &Snapshot,
    shards: usize,
    format: Format,
) -> anyhow::Result<()> {
    if format == Format::Json {
        return json_line(out, snapshot);
    }
    let state = match snapshot.complete {
        true => format!("complete ({} of {shards} shards)", snapshot.parts.len()),
        false => format!("INCOMPLETE: shards {}", snapshot.held(shards)),
    };
    writeln!(
        out,
        "snapshot {} of {}{}: {state}",
        snapshot.id,
        snapshot.topic,
        snapshot
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    )?;
    for p in &snapshot.parts {
        let offsets: Vec<String> = p
            .offsets
            .iter()
            .flatten()
            .map(|(partition, next)| format!("{partition}:{next}"))
            .collect();
        writeln!(
            out,
            "shard {} (partitions {}): taken {}, {} counters, {} user_likes, {} events; \
             offsets {}",
            p.shard,
            p.partitions,
            p.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            p.counters,
            p.user_likes,
            p.events,
            offsets.join(" ")
        )?;
    }
    Ok(())
}

/// The `snapshot` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum SnapshotCommand {
    /// Copy counters, user_likes and the topic's offsets in one consistent
    /// transaction per shard, all under one id.
    Create {
        /// A note stored with the snapshot.
        #[arg(long)]
        note: Option<String>,
        /// Output: a summary table, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Every snapshot, oldest first, with the shards holding a part of it.
    List {
        /// Output: an aligned table, or JSON Lines.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// One snapshot, shard by shard, with the offsets of each part.
    Show {
        id: i64,
        /// Output: a few lines, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Delete a snapshot and its rows, on every shard holding a part of it.
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
    let shards = crate::shards::connect_all(stack, 2).await?;
    let result = match shards.migrate().await {
        Ok(()) => run_on(stack, &shards, command).await,
        Err(e) => Err(e.into()),
    };
    shards.close().await;
    result
}

async fn run_on(
    stack: &StackSettings,
    shards: &Shards,
    command: SnapshotCommand,
) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        SnapshotCommand::Create { note, format } => {
            let created = create(shards, &stack.topic, note.as_deref()).await?;
            print(&mut out, &[created], shards.len(), format)
        }
        SnapshotCommand::List { format } => {
            print(&mut out, &list(shards).await?, shards.len(), format)
        }
        SnapshotCommand::Show { id, format } => {
            print_parts(&mut out, &show(shards, id).await?, shards.len(), format)
        }
        SnapshotCommand::Delete { id } => {
            let deleted = delete(shards, id).await?;
            let on: Vec<String> = deleted.iter().map(|s| s.to_string()).collect();
            Ok(writeln!(
                out,
                "snapshot {id} deleted (shard{} {})",
                if on.len() == 1 { "" } else { "s" },
                on.join(", ")
            )?)
        }
    }
}

/// Takes one snapshot across every shard (see the module docs); a failed part
/// removes the parts made and is an error naming the shard.
pub async fn create(shards: &Shards, topic: &str, note: Option<&str>) -> anyhow::Result<Snapshot> {
    let id = snapshots::next_id(shards.pool(0))
        .await
        .context("take a snapshot id on shard 0")?;
    let parts = join_all(
        shards
            .iter()
            .map(|(_, pool)| snapshots::create_as(pool, topic, note, id)),
    )
    .await;
    let mut made = Vec::new();
    let mut failed = None;
    for (shard, part) in parts.into_iter().enumerate() {
        match part {
            Ok(info) => made.push((shard, info)),
            Err(e) if failed.is_none() => failed = Some((shard, e)),
            Err(_) => {}
        }
    }
    if let Some((shard, e)) = failed {
        let mut left = Vec::new();
        for (s, _) in &made {
            if snapshots::delete(shards.pool(*s), id).await.is_err() {
                left.push(s.to_string());
            }
        }
        let cleaned = match left.is_empty() {
            true => "the other parts were deleted".to_string(),
            false => format!(
                "the parts on shards {} could not be deleted: `likes-replay snapshot delete {id}`",
                left.join(", ")
            ),
        };
        return Err(anyhow::Error::from(e).context(format!(
            "snapshot {id}: shard {shard} ({}) could not take its part; {cleaned}",
            shards.name(shard)
        )));
    }
    Snapshot::merge(shards, made)
        .pop()
        .context("the snapshot just taken")
}

/// Every snapshot, oldest first, merged across the shards.
pub async fn list(shards: &Shards) -> anyhow::Result<Vec<Snapshot>> {
    let mut parts = Vec::new();
    for (shard, pool) in shards.iter() {
        let listed = snapshots::list(pool)
            .await
            .with_context(|| format!("list the snapshots of shard {shard}"))?;
        parts.extend(listed.into_iter().map(|info| (shard, info)));
    }
    Ok(Snapshot::merge(shards, parts))
}

/// Snapshot `id` with each part's offsets; no part anywhere is `NoSnapshot`.
pub async fn show(shards: &Shards, id: i64) -> anyhow::Result<Snapshot> {
    let mut parts = Vec::new();
    let mut offsets = BTreeMap::new();
    for (shard, pool) in shards.iter() {
        if let Some(info) = snapshots::get(pool, id).await? {
            parts.push((shard, info));
            let own: BTreeMap<i32, i64> = snapshots::offsets(pool, id).await?.into_iter().collect();
            offsets.insert(shard, own);
        }
    }
    let mut merged = Snapshot::merge(shards, parts)
        .pop()
        .ok_or(likes_infra::Error::NoSnapshot { id })?;
    for part in &mut merged.parts {
        part.offsets = offsets.remove(&part.shard);
    }
    Ok(merged)
}

/// Deletes every part of snapshot `id`; returns the shards that held one
/// (none anywhere is `NoSnapshot`).
pub async fn delete(shards: &Shards, id: i64) -> anyhow::Result<Vec<usize>> {
    let mut deleted = Vec::new();
    for (shard, pool) in shards.iter() {
        match snapshots::delete(pool, id).await {
            Ok(()) => deleted.push(shard),
            Err(likes_infra::Error::NoSnapshot { .. }) => {}
            Err(e) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("delete the part of snapshot {id} on shard {shard}")));
            }
        }
    }
    match deleted.is_empty() {
        true => Err(likes_infra::Error::NoSnapshot { id }.into()),
        false => Ok(deleted),
    }
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
