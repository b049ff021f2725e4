//! `likes-replay`: command-line entry point. Parsing and dispatch only; each
//! command lives in its own module of the library.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use likes_infra::settings::StackSettings;
use likes_replay::accept_loss::{self, LossRequest};
use likes_replay::cli::{self, parse_time};
use likes_replay::count;
use likes_replay::explain;
use likes_replay::history::{self, HistoryPrinter, HistoryQuery, Subject};
use likes_replay::output::{self, Format};
use likes_replay::rebuild_postgres::{self, RebuildFrom, RebuildOptions};
use likes_replay::rebuild_redis;
use likes_replay::setup::{self, Layout};
use likes_replay::snapshot::{self, SnapshotCommand};
use likes_replay::verify::{self, VerifyOptions};

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
    /// Decoded events of an item or a user, oldest first, with the running count.
    History {
        #[command(subcommand)]
        subject: HistorySubject,
        /// Start at the first event at or after this time (RFC 3339); running
        /// counts then start from zero there.
        #[arg(long, global = true, value_parser = parse_time)]
        since: Option<DateTime<Utc>>,
        /// Stop after this time (RFC 3339).
        #[arg(long, global = true, value_parser = parse_time)]
        until: Option<DateTime<Utc>>,
        /// Output: an aligned table, or JSON Lines (one event per line).
        #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// How an item's count is derived from its events, compared with PostgreSQL.
    ///
    /// Exits non-zero when the derived count differs from `counters`.
    Explain {
        item_type: i64,
        item_id: i64,
        /// Output: readable text, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Reconcile Redis counts, `counters` and `COUNT(*)` of `user_likes`, per item.
    ///
    /// Prints the items that drift; exits non-zero when drift remains.
    Verify {
        /// Rewrite drifted Redis counts from PostgreSQL (stamped with `counters.last_offset`).
        #[arg(long)]
        repair: bool,
        /// Check this many random items of `counters` instead of all.
        #[arg(long)]
        sample: Option<u64>,
        /// Output: a table and a summary line, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// An item's count computed from its events, now or as of a past time.
    Count {
        item_type: i64,
        item_id: i64,
        /// Count the events up to this time (RFC 3339, broker time); default now.
        #[arg(long, value_parser = parse_time)]
        at: Option<DateTime<Utc>>,
        /// Output: the count, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Rebuild a projection.
    Rebuild {
        #[command(subcommand)]
        target: RebuildTarget,
    },
    /// Consistent snapshots of the PostgreSQL projection with the offsets they reflect.
    Snapshot {
        #[command(subcommand)]
        action: SnapshotCommand,
    },
    /// Accept that records deleted from the log before the projector read them
    /// are lost, so the parked partition moves past exactly that gap.
    ///
    /// The range must be the one the projector reports (its log and /readyz):
    /// from its stored offset to the record before the log's start. The
    /// acceptance is recorded (who, when, why) in `accepted_losses`.
    AcceptLoss {
        /// The parked partition.
        #[arg(long)]
        partition: i32,
        /// First missing offset.
        #[arg(long)]
        from: i64,
        /// Last missing offset (included).
        #[arg(long)]
        to: i64,
        /// Who accepts the loss (recorded).
        #[arg(long)]
        by: String,
        /// Why (recorded).
        #[arg(long)]
        reason: Option<String>,
        /// Output: a sentence, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
}

#[derive(Subcommand)]
enum RebuildTarget {
    /// Rewrite every Redis count from PostgreSQL `counters` (stamped with their
    /// offsets), dropping cached counts PostgreSQL does not back. Safe while the
    /// API and the projector run.
    Redis {
        /// Output: a summary line, or one JSON document.
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
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
    Postgres {
        /// Where the replay starts. `earliest`: the whole topic.
        /// `snapshot:<id>`: that snapshot's rows plus the topic past its offsets.
        /// An RFC 3339 time (2026-11-29T12:00:00Z): the newest snapshot taken at
        /// or before that time plus the topic past it; with no such snapshot, the
        /// whole topic if retention has deleted nothing yet, else a refusal.
        /// Whatever the start, the result is the projection now.
        #[arg(long, default_value = "earliest", verbatim_doc_comment)]
        from: RebuildFrom,
        /// Workers, each reading a disjoint set of partitions into the shadow
        /// tables on its own connection [default: the cores, at most the partitions].
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        parallel: Option<u32>,
        /// Records per shadow transaction (each also records the progress).
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
        batch_events: u32,
        /// Discard a half-done build instead of resuming it.
        #[arg(long)]
        restart: bool,
        /// How long an event id is remembered for dedup: set it like the projector's.
        #[arg(long, env = "DEDUP_HORIZON_SECONDS", default_value_t = likes_infra::settings::DEFAULT_DEDUP_HORIZON_SECONDS)]
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
    },
}

#[derive(Subcommand)]
enum HistorySubject {
    /// One item's events (reads only the item's partition).
    Item { item_type: i64, item_id: i64 },
    /// One user's events (reads every partition).
    User { user_id: i64 },
}

#[tokio::main]
async fn main() -> ExitCode {
    likes_infra::telemetry::init("warn");
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("likes-replay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
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
            .await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::History {
            subject,
            since,
            until,
            format,
        } => {
            let subject = match subject {
                HistorySubject::Item { item_type, item_id } => {
                    Subject::Item(cli::item(item_type, item_id)?)
                }
                HistorySubject::User { user_id } => Subject::User(cli::user(user_id)?),
            };
            let query = HistoryQuery {
                subject,
                since,
                until,
            };
            let mut printer = HistoryPrinter::new(std::io::stdout().lock(), format);
            let summary =
                history::run(&stack, &query, &HashMap::new(), |row| printer.print(&row)).await?;
            printer.finish(&summary)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Explain {
            item_type,
            item_id,
            format,
        } => {
            let x = explain::run(&stack, cli::item(item_type, item_id)?).await?;
            explain::print(&mut std::io::stdout().lock(), &x, format)?;
            Ok(match x.verdict {
                explain::Verdict::Differs => ExitCode::from(2),
                _ => ExitCode::SUCCESS,
            })
        }
        Command::Rebuild {
            target: RebuildTarget::Redis { format },
        } => {
            let done = rebuild_redis::run(&stack).await?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => output::json_line(&mut out, &done)?,
                Format::Table => writeln!(
                    out,
                    "redis rebuilt: {} cached counts dropped, {} written from PostgreSQL",
                    done.deleted, done.written
                )?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Rebuild {
            target:
                RebuildTarget::Postgres {
                    from,
                    parallel,
                    batch_events,
                    restart,
                    dedup_horizon_seconds,
                    dry_run,
                    accept_differences,
                    format,
                },
        } => {
            let options = RebuildOptions {
                dry_run,
                accept_differences,
                parallel: parallel.map(usize::try_from).transpose()?,
                batch_events: usize::try_from(batch_events)?,
                restart,
                dedup_horizon: Duration::from_secs(dedup_horizon_seconds),
                ..RebuildOptions::new(from)
            };
            let done = rebuild_postgres::run(&stack, &options).await?;
            rebuild_postgres::print(&mut std::io::stdout().lock(), &done, format)?;
            Ok(match (&done.refused, &done.redis_error) {
                (Some(_), _) => ExitCode::from(2),
                (None, Some(_)) => ExitCode::FAILURE,
                (None, None) => ExitCode::SUCCESS,
            })
        }
        Command::AcceptLoss {
            partition,
            from,
            to,
            by,
            reason,
            format,
        } => {
            let request = LossRequest {
                partition,
                from,
                to,
                by,
                reason,
            };
            let loss = accept_loss::run(&stack, &request).await?;
            accept_loss::print(&mut std::io::stdout().lock(), &loss, format)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Snapshot { action } => {
            snapshot::command(&stack, action).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Count {
            item_type,
            item_id,
            at,
            format,
        } => {
            let c = count::run(&stack, cli::item(item_type, item_id)?, at).await?;
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => output::json_line(&mut out, &c)?,
                Format::Table => writeln!(out, "{}", c.count)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            repair,
            sample,
            format,
        } => {
            let report = verify::run(&stack, VerifyOptions { sample, repair }).await?;
            verify::print(&mut std::io::stdout().lock(), &report, format)?;
            Ok(if report.has_drift() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
