//! `likes-replay rebuild redis|postgres`: the arguments, the run (the work is
//! in [`crate::rebuild`]) and the printed report.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use likes_infra::settings::{DEFAULT_DEDUP_HORIZON_SECONDS, StackSettings};

use crate::output::{Format, json_line};
use crate::rebuild::likers::{DEFAULT_RECORDS_PER_PASS, LikersOptions, LikersRebuild};
use crate::rebuild::{self, PostgresRebuild, RebuildFrom, RebuildOptions};

/// `likes-replay rebuild`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    target: Target,
}

#[derive(Debug, clap::Subcommand)]
enum Target {
    /// Rewrite every Redis count from PostgreSQL `counters` (stamped with their
    /// offsets), dropping cached counts PostgreSQL does not back, then every
    /// item's recent likers from the log (up to the projector's offsets,
    /// unlikes honoured, the projector's size limit). Safe while the API and
    /// the projector run: a likers set the projector changed past the offsets
    /// folded is folded further, never overwritten with older likers.
    Redis(RedisArgs),
    /// Rebuild user_likes and counters into shadow tables from the topic (or a
    /// snapshot plus the topic), verify, and swap them in atomically.
    ///
    /// Safe while the projector runs: partitions are read by parallel workers
    /// with their own assigned consumers, the last tail is applied while the
    /// projector's offset rows are locked, and the live tables change only in
    /// the swap's transaction. Every batch records its partitions' offsets with
    /// its shadow rows, so a rebuild that was interrupted resumes where it
    /// stopped when re-run with the same start (`--restart` begins clean).
    /// Refuses (exit 1) when retention deleted events it needs: it never
    /// produces short counts. Does not swap (exit 2) when the rebuilt counts
    /// differ from the live ones or records were skipped as poison, unless
    /// `--accept-differences`; after a swap, the Redis counts of the items that
    /// changed are refreshed.
    ///
    /// With several shards (DATABASE_URLS) every shard is rebuilt at once, or
    /// only the one `--shard` names: each reads only its own partitions, fills
    /// its own shadow tables and swaps under its own lock.
    Postgres(PostgresArgs),
}

#[derive(Debug, clap::Args)]
struct RedisArgs {
    /// How long an event id is remembered for dedup: set it like the projector's.
    #[arg(long, env = "DEDUP_HORIZON_SECONDS", default_value_t = DEFAULT_DEDUP_HORIZON_SECONDS)]
    dedup_horizon_seconds: u64,
    /// The most records of a partition one likers pass holds in memory; a
    /// bigger partition is folded in several passes, each over a slice of its
    /// items (memory bounded, one more read of the partition per pass).
    #[arg(long, default_value_t = DEFAULT_RECORDS_PER_PASS, value_parser = clap::value_parser!(u64).range(1..))]
    likers_records_per_pass: u64,
    /// Output: a few summary lines, or one JSON document.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, clap::Args)]
struct PostgresArgs {
    /// Where the replay starts. `earliest`: the whole topic.
    /// `snapshot:<id>`: that snapshot's rows plus the topic past its offsets.
    /// An RFC 3339 time (2026-11-29T12:00:00Z): the newest snapshot taken at
    /// or before that time plus the topic past it; with no such snapshot, the
    /// whole topic if retention has deleted nothing yet, else a refusal.
    /// Whatever the start, the result is the projection now.
    #[arg(long, default_value = "earliest", verbatim_doc_comment)]
    from: RebuildFrom,
    /// Workers per shard, each reading a disjoint set of the shard's
    /// partitions into its shadow tables on its own connection [default: the
    /// cores shared by the shards rebuilt, at most the shard's partitions].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    parallel: Option<u32>,
    /// Rebuild only this shard (0-based, in DATABASE_URLS order) [default:
    /// every shard, in parallel, each swapping under its own lock].
    #[arg(long)]
    shard: Option<usize>,
    /// Records per shadow transaction (each also records the progress).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    batch_events: u32,
    /// Discard a half-done build instead of resuming it.
    #[arg(long)]
    restart: bool,
    /// How long an event id is remembered for dedup: set it like the projector's.
    #[arg(long, env = "DEDUP_HORIZON_SECONDS", default_value_t = DEFAULT_DEDUP_HORIZON_SECONDS)]
    dedup_horizon_seconds: u64,
    /// Build and verify, but leave the live tables as they are.
    #[arg(long)]
    dry_run: bool,
    /// Swap even when the rebuilt counts differ from the live ones at the
    /// same offsets or records were skipped as poison. Without it such a
    /// build is not swapped (exit 2, the differences printed, the shadow
    /// tables kept so that a re-run with the flag resumes it).
    #[arg(long, conflicts_with = "dry_run")]
    accept_differences: bool,
    /// Output: a summary, or one JSON document.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Runs a rebuild and prints its report. `rebuild postgres` exits 2 when it
/// refused to swap, 1 when it swapped but could not refresh Redis.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    match args.target {
        Target::Redis(a) => {
            let options = LikersOptions {
                dedup_horizon: Duration::from_secs(a.dedup_horizon_seconds),
                records_per_pass: a.likers_records_per_pass,
            };
            let done = rebuild::redis::run_with(stack, options).await?;
            let mut out = std::io::stdout().lock();
            match a.format {
                Format::Json => json_line(&mut out, &done)?,
                Format::Table => {
                    let from: Vec<String> = done
                        .shards
                        .iter()
                        .map(|s| format!("{} from shard {}", s.written, s.shard))
                        .collect();
                    writeln!(
                        out,
                        "redis rebuilt: {} cached counts dropped, {} written from PostgreSQL ({})",
                        done.deleted,
                        done.written,
                        from.join(", ")
                    )?;
                    print_likers(&mut out, &done.likers)?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Target::Postgres(a) => {
            let options = RebuildOptions {
                dry_run: a.dry_run,
                accept_differences: a.accept_differences,
                parallel: a.parallel.map(usize::try_from).transpose()?,
                shard: a.shard,
                batch_events: usize::try_from(a.batch_events)?,
                restart: a.restart,
                dedup_horizon: Duration::from_secs(a.dedup_horizon_seconds),
                ..RebuildOptions::new(a.from)
            };
            let done = rebuild::run(stack, &options).await?;
            print(&mut std::io::stdout().lock(), &done, a.format)?;
            Ok(match (&done.refused, &done.redis_error) {
                (Some(_), _) => ExitCode::from(2),
                (None, Some(_)) => ExitCode::FAILURE,
                (None, None) => ExitCode::SUCCESS,
            })
        }
    }
}

/// Prints what the likers rebuild did: the totals, then per partition the
/// offsets read from each source.
fn print_likers(out: &mut impl Write, done: &LikersRebuild) -> anyhow::Result<()> {
    writeln!(
        out,
        "likers rebuilt: {} sets written (newest {} per item; {} caught up with the projector, \
         {} left to it), {} events folded ({} duplicates, {} poison)",
        done.sets_written,
        done.keep,
        done.caught_up,
        done.left_to_projector,
        done.events,
        done.duplicates,
        done.poison
    )?;
    for p in &done.partitions {
        let read: Vec<String> = p
            .read
            .iter()
            .map(|r| format!("{} {}..{}", r.source.name(), r.from, r.to))
            .collect();
        let history = if p.whole_history {
            "whole history, sets replaced"
        } else {
            "retention deleted the start, sets merged"
        };
        writeln!(
            out,
            "  partition {}: read {} in {} pass{} ({history}); {} sets written",
            p.partition,
            read.join(", "),
            p.passes,
            if p.passes == 1 { "" } else { "es" },
            p.sets_written
        )?;
    }
    Ok(())
}

/// Prints a rebuild's report: a few lines per shard and the outcome, or one
/// JSON document.
pub fn print(out: &mut impl Write, done: &PostgresRebuild, format: Format) -> anyhow::Result<()> {
    if format == Format::Json {
        return json_line(out, done);
    }
    writeln!(
        out,
        "from {}, {} workers per shard, {} shard{}",
        done.source,
        done.parallel,
        done.shards.len(),
        if done.shards.len() == 1 { "" } else { "s" }
    )?;
    for s in &done.shards {
        let resumed = if s.resumed {
            format!(
                "resumed a half-done build ({} records already in the shadow tables), ",
                s.resumed_records
            )
        } else {
            String::new()
        };
        writeln!(
            out,
            "shard {} (partitions {}): {resumed}read {} events ({} duplicates, {} poison, {} in \
             the final tail, {} items checked again under the lock) in {:.1} s: {:.0} events/s",
            s.shard,
            s.partitions,
            s.events,
            s.duplicates,
            s.poison,
            s.tail_events,
            s.locked_items_checked,
            s.seconds,
            s.events_per_second
        )?;
        writeln!(out, "shard {}: read {}", s.shard, s.read.describe())?;
        writeln!(
            out,
            "shard {}: rebuilt counts vs live at the same offsets: {} items differ; {}",
            s.shard,
            s.live_differences,
            s.verdict(done.dry_run)
        )?;
        for d in &s.listed_differences {
            writeln!(
                out,
                "  item {}:{}  live {}  rebuilt {}",
                d.item_type, d.item_id, d.live, d.rebuilt
            )?;
        }
        if let Some(why) = &s.refused {
            writeln!(out, "shard {}: refused: {why}", s.shard)?;
        }
    }
    if done.shards.len() > 1 {
        writeln!(
            out,
            "all {} shards: read {} events ({} duplicates, {} poison) in {:.1} s: {:.0} \
             events/s; {} items differ",
            done.shards.len(),
            done.events,
            done.duplicates,
            done.poison,
            done.seconds,
            done.events_per_second,
            done.live_differences
        )?;
    }
    let verdict = match (done.dry_run, done.swapped) {
        (true, _) => "dry run: live tables untouched, shadow tables dropped",
        (false, true) => "swapped: the rebuilt tables are live",
        (false, false) => "not swapped",
    };
    writeln!(out, "{verdict}")?;
    if done.refused.is_some() && done.shards.iter().any(|s| s.swapped) {
        let swapped: Vec<String> = done
            .shards
            .iter()
            .filter(|s| s.swapped)
            .map(|s| s.shard.to_string())
            .collect();
        writeln!(out, "(shard {} swapped)", swapped.join(", "))?;
    }
    if done.shards.iter().any(|s| s.swapped) {
        writeln!(
            out,
            "redis: {} changed counts refreshed",
            done.redis_refreshed
        )?;
    }
    if let Some(e) = &done.redis_error {
        writeln!(
            out,
            "redis refresh failed ({e}): run `likes-replay rebuild redis`"
        )?;
    }
    Ok(())
}
