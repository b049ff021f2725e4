//! `likes-replay explain`: how an item's current count is derived. Replays the
//! item's partition from the log's start up to the offset the projector has
//! applied (so both sides describe the same prefix of the log), counts what
//! each event did, lists the events that changed nothing and why, and compares
//! the derived count with `counters` in PostgreSQL. When retention has deleted
//! the partition's first events, the derivation starts from the newest snapshot
//! whose offset the log still holds: the snapshot's count, then the events
//! after it. PostgreSQL is read on the item's shard (the one owning its
//! partition), whose recorded map is checked first.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;

use likes_domain::ItemKey;
use likes_infra::postgres;
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::cli;
use crate::commands::history::Sources;
use crate::commands::history::{
    self, Effect, HistoryPrinter, HistoryQuery, HistoryRow, Seed, Subject,
};
use crate::commands::snapshot::base::{self as snapshot_base, SnapshotBase};
use crate::output::Format;
use crate::source::LogSource;
use likes_infra::kafka::partitioner::partition_for_item;

/// `likes-replay explain`.
#[derive(Debug, clap::Args)]
pub struct Args {
    item_type: i64,
    item_id: i64,
    /// Output: readable text, or one JSON document.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Runs `explain` and prints it; exit 2 when the derived count differs from
/// the stored one.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    let x = run(stack, cli::item(args.item_type, args.item_id)?).await?;
    print(&mut std::io::stdout().lock(), &x, args.format)?;
    Ok(match x.verdict {
        Verdict::Differs => ExitCode::from(2),
        _ => ExitCode::SUCCESS,
    })
}

/// At most this many unchanged events are listed (all are counted).
pub const MAX_UNCHANGED_LISTED: usize = 1000;

/// Whether the derivation agrees with PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The events give exactly the stored count.
    Matches,
    /// They do not: the projection drifted (or kept an event past its dedup horizon).
    Differs,
    /// Retention dropped the partition's first events and no snapshot covers
    /// them: the derivation is partial.
    Incomplete,
}

/// How an item's count comes about.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub item_type: i32,
    pub item_id: i64,
    pub partition: i32,
    /// The shard that owns the partition (0-based), where `counters` was read.
    pub shard: usize,
    /// First retained offset of the partition (0 when nothing was dropped).
    pub log_start: i64,
    /// Events were read up to (not including) this offset.
    pub read_until: i64,
    /// The projector's next offset in the partition, if it ever claimed it.
    pub projector_offset: Option<i64>,
    /// The snapshot the derivation starts from (only when retention deleted
    /// the partition's first events); `None`: from the log's first event.
    pub snapshot: Option<SnapshotBase>,
    /// Events after the start (the snapshot's offset, else the log's start).
    pub events: u64,
    pub liked: u64,
    pub unliked: u64,
    pub duplicate: u64,
    pub already_liked: u64,
    pub not_liked: u64,
    pub derived_count: i64,
    /// `counters.count` (`None`: no row, i.e. 0).
    pub stored_count: Option<i64>,
    pub stored_last_offset: Option<i64>,
    pub verdict: Verdict,
    /// The events that changed nothing, oldest first (at most [`MAX_UNCHANGED_LISTED`]).
    pub unchanged: Vec<HistoryRow>,
    /// Which offsets were read from the archive and which from the topic.
    pub sources: Sources,
}

/// Derives `item`'s count from the log and compares it with PostgreSQL.
pub async fn run(stack: &StackSettings, item: ItemKey) -> anyhow::Result<Explanation> {
    let shards = crate::shards::connect(stack, 2).await?;
    let (shard, pool) = shards.for_item(item.item_id.get());
    crate::shards::check(&shards, &stack.topic, &[shard]).await?;
    let mut source = LogSource::open(stack)?;
    let partition = partition_for_item(item.item_id.get(), source.partition_count()?);
    let (log_start, high) = source.watermarks(partition).await?;
    drop(source);
    let projector_offset = postgres::reads::applied_until(pool, &stack.topic, partition).await?;
    let stored = postgres::reads::count(pool, item).await?;
    // Up to where PostgreSQL stands; a partition never claimed has nothing
    // projected, so the whole log is what the projection still has to apply.
    let read_until = projector_offset.unwrap_or(high).min(high);
    let base = if log_start > 0 {
        let usable = snapshot_base::newest_usable(
            pool,
            &stack.topic,
            partition,
            log_start,
            read_until,
            None,
        )
        .await?;
        match usable {
            Some(found) => Some(snapshot_base::load(pool, found, item).await?),
            None => None,
        }
    } else {
        None
    };
    shards.close().await;
    let limits = HashMap::from([(partition, read_until)]);
    let query = HistoryQuery {
        subject: Subject::Item(item),
        since: None,
        until: None,
    };
    let (snapshot, seed) = match base {
        Some((base, model)) => {
            let starts = HashMap::from([(partition, base.offset)]);
            (Some(base), Seed { model, starts })
        }
        None => (None, Seed::default()),
    };
    let mut x = Explanation {
        item_type: item.item_type.get(),
        item_id: item.item_id.get(),
        partition,
        shard,
        log_start,
        read_until,
        projector_offset,
        events: 0,
        liked: 0,
        unliked: 0,
        duplicate: 0,
        already_liked: 0,
        not_liked: 0,
        derived_count: seed.model.count(item),
        snapshot,
        stored_count: stored.map(|s| s.0),
        stored_last_offset: stored.map(|s| s.1),
        verdict: Verdict::Matches,
        unchanged: Vec::new(),
        sources: Sources::default(),
    };
    let summary = history::run_seeded(stack, &query, &limits, seed, |row| {
        x.events += 1;
        *match row.effect {
            Effect::Liked => &mut x.liked,
            Effect::Unliked => &mut x.unliked,
            Effect::Duplicate => &mut x.duplicate,
            Effect::AlreadyLiked => &mut x.already_liked,
            Effect::NotLiked => &mut x.not_liked,
        } += 1;
        x.derived_count = row.count;
        if !row.effect.changed() && x.unchanged.len() < MAX_UNCHANGED_LISTED {
            x.unchanged.push(row);
        }
        Ok(())
    })
    .await?;
    x.sources = Sources::of(&summary.spans);
    x.verdict = if log_start > 0 && x.snapshot.is_none() {
        Verdict::Incomplete
    } else if x.derived_count == x.stored_count.unwrap_or(0) {
        Verdict::Matches
    } else {
        Verdict::Differs
    };
    Ok(x)
}

/// Prints an explanation in `format`.
pub fn print(out: &mut impl Write, x: &Explanation, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut *out, x)?;
        writeln!(out)?;
        return Ok(());
    }
    let until = match x.projector_offset {
        Some(_) => "the projector's position",
        None => "the end: the projector never claimed this partition",
    };
    let from = x.snapshot.as_ref().map_or(x.log_start, |s| s.offset);
    writeln!(
        out,
        "item {}:{}  partition {}  shard {}  offsets {from}..{} ({until})",
        x.item_type, x.item_id, x.partition, x.shard, x.read_until
    )?;
    writeln!(out, "read: {}", x.sources.describe())?;
    match &x.snapshot {
        Some(s) => writeln!(
            out,
            "snapshot {} (taken {}): count {} at offset {}; the events after it:",
            s.id,
            s.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            s.count,
            s.offset
        )?,
        None => writeln!(
            out,
            "snapshot: none (derived from the log's first retained event)"
        )?,
    }
    writeln!(
        out,
        "events {}: liked {}, unliked {}, duplicate {}, already liked {}, not liked {}",
        x.events, x.liked, x.unliked, x.duplicate, x.already_liked, x.not_liked
    )?;
    let stored = match (x.stored_count, x.stored_last_offset) {
        (Some(c), Some(o)) => format!("{c} (last offset {o})"),
        _ => "no row (0)".to_string(),
    };
    let verdict = match x.verdict {
        Verdict::Matches => "matches",
        Verdict::Differs => "DIFFERS",
        Verdict::Incomplete => {
            "incomplete: retention dropped the partition's start and no snapshot covers it"
        }
    };
    writeln!(
        out,
        "derived count {}; counters {stored} on shard {}: {verdict}",
        x.derived_count, x.shard
    )?;
    if !x.unchanged.is_empty() {
        writeln!(out, "\nevents that changed nothing:")?;
        let mut printer = HistoryPrinter::new(&mut *out, Format::Table);
        for row in &x.unchanged {
            printer.print(row)?;
        }
    }
    Ok(())
}
