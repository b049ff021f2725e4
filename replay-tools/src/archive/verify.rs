//! `likes-replay archive verify`: the archive and the topic together hold
//! every offset of every partition from 0 to the log's end exactly once, and
//! every archive file decodes (its header, its records, each event through
//! the codec the readers use). Exits non-zero on any flaw.

use std::io::Write;
use std::process::ExitCode;

use likes_infra::archive::{Archive, Flaw};
use likes_infra::codec::EventCodec;
use likes_infra::kafka::reader::TopicHandle;
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::output::{self, Format};

/// `likes-replay archive verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// What verify found in one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionCheck {
    pub partition: i32,
    pub files: usize,
    /// Records read from the archive files, and how many of them decoded
    /// into events (the rest are poison the topic held too).
    pub records: u64,
    pub events: u64,
    pub poison: u64,
    /// Offsets the archive holds, and the topic's range.
    pub archived_to: i64,
    pub topic_start: i64,
    pub topic_end: i64,
    /// Everything wrong, in words.
    pub problems: Vec<String>,
}

/// Checks every partition of `stack`'s topic.
pub async fn run(stack: &StackSettings) -> anyhow::Result<Vec<PartitionCheck>> {
    let archive = Archive::open(&stack.archive_url, &stack.topic)?;
    let topic = TopicHandle::open(stack)?;
    let codec = EventCodec::new(&stack.schema_registry_url, &stack.topic)?;
    let mut checks = Vec::new();
    for partition in 0..topic.partition_count()? {
        let coverage = archive.coverage(partition).await?;
        let (low, high) = topic.watermarks(partition)?;
        let mut check = PartitionCheck {
            partition,
            files: coverage.files.len(),
            archived_to: coverage.next_offset().unwrap_or(0),
            topic_start: low,
            topic_end: high,
            ..PartitionCheck::default()
        };
        for flaw in coverage.flaws() {
            check.problems.push(match flaw {
                Flaw::Gap { from, to } => format!("offsets {from}..{to} are in no archive file"),
                Flaw::Overlap { from, to } => {
                    format!("offsets {from}..={to} are in two archive files")
                }
            });
        }
        if low > 0 && coverage.reaches(low) != Some(0) {
            let archived = coverage.next_offset().unwrap_or(0);
            check.problems.push(format!(
                "the topic starts at {low} and the archive does not reach it unbroken from 0 \
                 (archived to {archived}): offsets before {low} cannot all be read"
            ));
        }
        for name in &coverage.files {
            let file = match archive.read(partition, *name).await {
                Ok(file) => file,
                Err(e) => {
                    check.problems.push(e.to_string());
                    continue;
                }
            };
            for record in &file.records {
                check.records += 1;
                match codec.decode_event(record.payload.as_deref()).await {
                    Ok(_) => check.events += 1,
                    Err(e) if likes_infra::Error::from(e.clone()).is_transient() => {
                        anyhow::bail!("the registry could not be asked: {e}")
                    }
                    Err(_) => check.poison += 1,
                }
            }
        }
        checks.push(check);
    }
    Ok(checks)
}

pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    let checks = run(stack).await?;
    let mut out = std::io::stdout().lock();
    let bad = checks.iter().filter(|c| !c.problems.is_empty()).count();
    match args.format {
        Format::Json => {
            for c in &checks {
                output::json_line(&mut out, c)?;
            }
        }
        Format::Table => {
            for c in &checks {
                let verdict = if c.problems.is_empty() {
                    "ok"
                } else {
                    "FAILED"
                };
                writeln!(
                    out,
                    "partition {}: {verdict}: {} files, {} records ({} events, {} poison) archived to {}, topic {}..{}",
                    c.partition,
                    c.files,
                    c.records,
                    c.events,
                    c.poison,
                    c.archived_to,
                    c.topic_start,
                    c.topic_end
                )?;
                for p in &c.problems {
                    writeln!(out, "  {p}")?;
                }
            }
            writeln!(
                out,
                "{} of {} partitions clean",
                checks.len() - bad,
                checks.len()
            )?;
        }
    }
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
