//! Parking a partition: it stops (paused in the consumer, its records no longer
//! admitted, nothing past the cause committed) while the others go on, with an
//! ERROR log, a metric and `/readyz` naming it. A gap of deleted records is
//! left only through an accepted loss (`likes-replay accept-loss`), which this
//! module watches for; other reasons are retried on the next claim.

use std::sync::Arc;
use std::time::Duration;

use likes_domain::Position;
use likes_infra::postgres::shards::ShardMap;
use likes_infra::postgres::{PgPool, losses};

use crate::consumer::ProjectorConsumer;
use crate::ownership::{Ownership, ParkReason};

/// How often parked gaps are checked for an accepted loss.
const ACCEPTANCE_POLL: Duration = Duration::from_secs(2);

/// Stops `partition` for `reason`: the others go on.
pub fn park(
    consumer: &ProjectorConsumer,
    ownership: &Ownership,
    partition: i32,
    reason: ParkReason,
) {
    if !ownership.park(partition, reason) {
        return;
    }
    match reason {
        ParkReason::Gap { from, to } => tracing::error!(
            partition,
            first_missing = from,
            last_missing = to,
            "records were deleted from the log before they were projected and the archive does \
             not hold them all; partition parked (an archive that holds them: restart the \
             projector; else rebuild from a snapshot, or accept the loss with likes-replay accept-loss)"
        ),
        ParkReason::WriteFailed => tracing::error!(
            partition,
            "a batch of this partition failed permanently; partition parked until it is claimed again"
        ),
        ParkReason::DeadLetterFailed { offset } => tracing::error!(
            partition,
            offset,
            "a poison record could not be put on the dead-letter topic; partition parked until it is claimed again"
        ),
    }
    if let Err(e) = consumer.pause(partition) {
        // Its records are refused anyway; pausing only saves the fetches.
        tracing::warn!(error = %e, partition, "pausing a parked partition failed");
    }
}

/// Seeks each partition whose gap was accepted to the first offset after the
/// gap and resumes it. Called by the collector between receives, so no record
/// fetched before the seek is offered after the partition is unparked.
pub fn resume_accepted(consumer: &ProjectorConsumer, ownership: &Ownership) {
    for at in ownership.take_resumes() {
        let Position { partition, offset } = at;
        if let Err(e) = consumer.seek(at) {
            tracing::warn!(error = %e, partition, offset, "seek past an accepted loss failed");
        }
        if let Err(e) = consumer.resume(partition) {
            tracing::warn!(error = %e, partition, "resuming a partition failed");
        }
        tracing::info!(
            partition,
            offset,
            "partition resumed after an accepted loss"
        );
    }
}

/// Every few seconds, looks up an accepted loss for each partition of `shard`
/// parked on a gap, in that shard (where `likes-replay accept-loss` records
/// it); one that names exactly the gap lets the partition move past it. One
/// watcher per shard, so a shard that is away delays only its own partitions.
pub async fn watch_accepted_losses(
    db: PgPool,
    map: ShardMap,
    shard: usize,
    topic: String,
    ownership: Arc<Ownership>,
) {
    let mut tick = tokio::time::interval(ACCEPTANCE_POLL);
    loop {
        tick.tick().await;
        for (partition, reason) in ownership.parked() {
            let ParkReason::Gap { from, to } = reason else {
                continue;
            };
            if map.shard_of(partition) != shard {
                continue;
            }
            match losses::accepted(&db, &topic, partition, from, to).await {
                Ok(Some(loss)) => {
                    if ownership.accept_gap(partition, from, to) {
                        tracing::warn!(
                            partition,
                            first_missing = from,
                            last_missing = to,
                            accepted_by = %loss.accepted_by,
                            acceptance = loss.id,
                            "loss accepted; the partition moves past it"
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, shard, partition, "looking up accepted losses failed")
                }
            }
        }
    }
}
