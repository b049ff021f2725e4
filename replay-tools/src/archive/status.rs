//! `likes-replay archive status`: how far the archive reaches per partition,
//! beside what the topic still holds.

use std::io::Write;

use likes_infra::archive::{Archive, Flaw};
use likes_infra::kafka::reader::TopicHandle;
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::output::{self, Format};

/// `likes-replay archive status`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// One partition's archive beside its topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionStatus {
    pub partition: i32,
    pub files: usize,
    /// The offset after the last complete file (0: nothing archived).
    pub archived_to: i64,
    /// The topic's first retained offset and its end.
    pub topic_start: i64,
    pub topic_end: i64,
    /// Records in the topic not archived yet.
    pub lag: i64,
    /// The first offset archive and topic together can be read from
    /// (0 when nothing was lost).
    pub readable_from: i64,
    pub flaws: Vec<Flaw>,
}

/// The archive of `stack`'s topic, partition by partition.
pub async fn run(stack: &StackSettings) -> anyhow::Result<Vec<PartitionStatus>> {
    let archive = Archive::open(&stack.archive_url, &stack.topic)?;
    let topic = TopicHandle::open(stack)?;
    let mut rows = Vec::new();
    for partition in 0..topic.partition_count()? {
        let coverage = archive.coverage(partition).await?;
        let (low, high) = topic.watermarks(partition)?;
        let archived_to = coverage.next_offset().unwrap_or(0);
        rows.push(PartitionStatus {
            partition,
            files: coverage.files.len(),
            archived_to,
            topic_start: low,
            topic_end: high,
            lag: (high - archived_to.max(low)).max(0),
            readable_from: coverage.reaches(low).unwrap_or(low),
            flaws: coverage.flaws(),
        });
    }
    Ok(rows)
}

pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<std::process::ExitCode> {
    let rows = run(stack).await?;
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            for row in &rows {
                output::json_line(&mut out, row)?;
            }
        }
        Format::Table => {
            writeln!(
                out,
                "archive {} (topic {})",
                crate::archive::url(stack),
                stack.topic
            )?;
            let widths = [9, 6, 12, 12, 12, 10, 13];
            let head = [
                "partition",
                "files",
                "archived_to",
                "topic_start",
                "topic_end",
                "lag",
                "readable_from",
                "flaws",
            ];
            output::table_row(&mut out, &widths, &head.map(String::from))?;
            for r in &rows {
                output::table_row(
                    &mut out,
                    &widths,
                    &[
                        r.partition.to_string(),
                        r.files.to_string(),
                        r.archived_to.to_string(),
                        r.topic_start.to_string(),
                        r.topic_end.to_string(),
                        r.lag.to_string(),
                        r.readable_from.to_string(),
                        r.flaws.len().to_string(),
                    ],
                )?;
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
