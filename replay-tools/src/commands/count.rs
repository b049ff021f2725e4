//! `likes-replay count`: an item's count computed from its events, now or as of
//! a past time (the broker time of the records). The computation starts at the
//! log's first event; when retention already deleted some, it starts from the
//! newest snapshot taken by then whose offset the log still holds (its count,
//! then the events after it), and with no such snapshot the answer is refused
//! rather than short. The snapshot is read on the item's shard (the one
//! owning its partition), whose recorded map is checked first.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use chrono::{DateTime, Utc};
use likes_domain::ItemKey;
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::cli::{self, parse_time};
use crate::commands::history::Sources;
use crate::commands::history::{self, HistoryQuery, Seed, Subject};
use crate::commands::snapshot::base as snapshot_base;
use crate::output::{self, Format};
use crate::source::LogSource;
use likes_infra::kafka::partitioner::partition_for_item;

/// `likes-replay count`.
#[derive(Debug, clap::Args)]
pub struct Args {
    item_type: i64,
    item_id: i64,
    /// Count the events up to this time (RFC 3339, broker time); default now.
    #[arg(long, value_parser = parse_time)]
    at: Option<DateTime<Utc>>,
    /// Output: the count, or one JSON document.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Runs `count` and prints the count.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    let c = run(stack, cli::item(args.item_type, args.item_id)?, args.at).await?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => output::json_line(&mut out, &c)?,
        // The bare count, for scripts; `--format json` says the partition,
        // the shard and the sources; people see the sources on stderr.
        Format::Table => {
            writeln!(out, "{}", c.count)?;
            eprintln!("read: {}", c.sources.describe());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An item's count at a point of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointCount {
    pub item_type: i32,
    pub item_id: i64,
    /// The item's partition and the shard that owns it (0-based).
    pub partition: i32,
    pub shard: usize,
    /// The time asked for (`None`: now).
    pub at: Option<DateTime<Utc>>,
    pub count: i64,
    /// Events of the item up to that time (after the snapshot, when one is used).
    pub events: u64,
    /// The snapshot the count starts from, when retention required one.
    pub snapshot: Option<i64>,
    /// Which offsets were read from the archive and which from the topic.
    pub sources: Sources,
}

/// Counts `item` from its events up to `at` (inclusive; `None`: the current end).
pub async fn run(
    stack: &StackSettings,
    item: ItemKey,
    at: Option<DateTime<Utc>>,
) -> anyhow::Result<PointCount> {
    let mut source = LogSource::open(stack)?;
    let partition = partition_for_item(item.item_id.get(), source.partition_count()?);
    let (log_start, high) = source.watermarks(partition).await?;
    drop(source);
    // Pools are made lazily: only a count that needs a snapshot connects.
    let shards = crate::shards::connect(stack, 1).await?;
    let (shard, pool) = shards.for_item(item.item_id.get());
    let seed = if log_start > 0 {
        crate::shards::check(&shards, &stack.topic, &[shard]).await?;
        let usable =
            snapshot_base::newest_usable(pool, &stack.topic, partition, log_start, high, at)
                .await?;
        let base = match usable {
            Some(found) => Some(snapshot_base::load(pool, found, item).await?),
            None => None,
        };
        let Some((base, model)) = base else {
            bail!(
                "partition {partition} (shard {shard}) starts at offset {log_start}: retention \
                 deleted the events before it and no snapshot taken by then covers them, so a \
                 count from the log would be short; refusing"
            );
        };
        Some((
            base.id,
            Seed {
                model,
                starts: HashMap::from([(partition, base.offset)]),
            },
        ))
    } else {
        None
    };
    shards.close().await;
    let query = HistoryQuery {
        subject: Subject::Item(item),
        since: None,
        until: at,
    };
    let (snapshot, seed) = seed.map_or((None, Seed::default()), |(id, s)| (Some(id), s));
    let mut count = seed.model.count(item);
    let summary = history::run_seeded(stack, &query, &HashMap::new(), seed, |row| {
        count = row.count;
        Ok(())
    })
    .await?;
    Ok(PointCount {
        item_type: item.item_type.get(),
        item_id: item.item_id.get(),
        partition,
        shard,
        at,
        count,
        events: summary.events,
        snapshot,
        sources: Sources::of(&summary.spans),
    })
}
