//! `likes-replay accept-loss`: the explicit way past records that were deleted
//! from the log before the projector read them. The projector parks such a
//! partition and never moves past the gap by itself; this command records in
//! `accepted_losses` who accepted exactly which offsets, when and why, after
//! checking that the range is the gap the projector stopped at and that the
//! records are really gone. The projector then moves past exactly that range
//! within a few seconds (or on its next claim).

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, bail};
pub use likes_infra::postgres::losses::AcceptedLoss;
use likes_infra::postgres::{self, losses};
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::output::{Format, json_line};
use likes_infra::kafka::reader::TopicHandle;

/// `likes-replay accept-loss`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The parked partition (recorded on the shard that owns it).
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
}

/// Runs `accept-loss` and prints what was recorded.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    let request = LossRequest {
        partition: args.partition,
        from: args.from,
        to: args.to,
        by: args.by,
        reason: args.reason,
    };
    let loss = run(stack, &request).await?;
    print(&mut std::io::stdout().lock(), &loss, args.format)?;
    Ok(ExitCode::SUCCESS)
}

/// What the operator accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LossRequest {
    pub partition: i32,
    /// First missing offset.
    pub from: i64,
    /// Last missing offset (included).
    pub to: i64,
    pub by: String,
    pub reason: Option<String>,
}

/// Checks the request against the log and the projector's stored offset, then
/// records it.
pub async fn run(stack: &StackSettings, request: &LossRequest) -> anyhow::Result<AcceptedLoss> {
    check_request(request)?;
    let handle = TopicHandle::open(stack)?;
    let partitions = handle.partition_count()?;
    if request.partition >= partitions {
        bail!(
            "--partition {}: topic {} has partitions 0 to {}",
            request.partition,
            stack.topic,
            partitions - 1
        );
    }
    let (log_start, _) = handle.watermarks(request.partition)?;
    if request.to >= log_start {
        bail!(
            "offsets {} to {} of partition {} are not all deleted: the log starts at {}; \
             refusing to accept the loss of records that are still there",
            request.from,
            request.to,
            request.partition,
            log_start
        );
    }
    let shards = crate::shards::connect(stack, 1).await?;
    let (shard, pool) = shards.for_partition(request.partition);
    crate::shards::check(&shards, &stack.topic, &[shard]).await?;
    tracing::info!(
        partition = request.partition,
        shard,
        "the partition's shard"
    );
    let stored = postgres::offsets::positions(pool, &stack.topic)
        .await
        .context("read the projector's offsets")?
        .into_iter()
        .find(|(p, _)| *p == request.partition)
        .map_or(0, |(_, next)| next);
    if stored != request.from {
        bail!(
            "--from {}: the projector's stored offset of partition {} (on shard {shard}) is {}, \
             so the gap it stopped at starts there; nothing else can be accepted",
            request.from,
            request.partition,
            stored
        );
    }
    let loss = losses::accept(
        pool,
        &losses::Acceptance {
            topic: &stack.topic,
            partition: request.partition,
            from_offset: request.from,
            to_offset: request.to,
            accepted_by: request.by.trim(),
            reason: request.reason.as_deref(),
        },
    )
    .await
    .context("record the accepted loss")?;
    shards.close().await;
    Ok(loss)
}

/// The checks that need nothing but the request.
fn check_request(request: &LossRequest) -> anyhow::Result<()> {
    if request.partition < 0 {
        bail!("--partition must be 0 or more (got {})", request.partition);
    }
    if request.from < 0 || request.to < request.from {
        bail!(
            "--from and --to are the first and last missing offsets: 0 <= from <= to (got {} and {})",
            request.from,
            request.to
        );
    }
    if request.by.trim().is_empty() {
        bail!("--by must name who accepts the loss");
    }
    Ok(())
}

/// The JSON document of an acceptance: the row, and how many records it covers.
#[derive(Serialize)]
struct Printed<'a> {
    #[serde(flatten)]
    loss: &'a AcceptedLoss,
    records: i64,
}

/// Prints what was recorded.
pub fn print(out: &mut impl Write, loss: &AcceptedLoss, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Json => json_line(
            out,
            &Printed {
                loss,
                records: loss.records(),
            },
        )?,
        Format::Table => writeln!(
            out,
            "accepted loss #{}: partition {} offsets {} to {} ({} records) of {}, by {} at {}{}; \
             the projector moves past it within seconds",
            loss.id,
            loss.partition,
            loss.from_offset,
            loss.to_offset,
            loss.records(),
            loss.topic,
            loss.accepted_by,
            loss.accepted_at.to_rfc3339(),
            loss.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(partition: i32, from: i64, to: i64, by: &str) -> LossRequest {
        LossRequest {
            partition,
            from,
            to,
            by: by.into(),
            reason: None,
        }
    }

    #[test]
    fn a_request_names_a_partition_an_ordered_range_and_who_accepts() {
        assert!(check_request(&request(3, 0, 2, "ops")).is_ok());
        assert!(check_request(&request(3, 2, 2, "ops")).is_ok());
        assert!(check_request(&request(-1, 0, 2, "ops")).is_err());
        assert!(check_request(&request(3, 3, 2, "ops")).is_err());
        assert!(check_request(&request(3, -1, 2, "ops")).is_err());
        let message = format!("{}", check_request(&request(3, 0, 2, "  ")).unwrap_err());
        assert!(message.contains("--by"), "{message}");
    }
}
