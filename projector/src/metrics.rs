//! The projector's metrics, named and described once, never labelled by user or
//! item; served with the health checks by [`crate::health`].

use std::sync::OnceLock;

use metrics::{describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::PrometheusHandle;

pub const BATCHES: &str = "likes_projector_batches_total";
pub const EVENTS: &str = "likes_projector_events_total";
pub const DUPLICATES: &str = "likes_projector_duplicate_events_total";
pub const POISON: &str = "likes_projector_poison_records_total";
pub const FENCED: &str = "likes_projector_fenced_batches_total";
pub const WRITE_RETRIES: &str = "likes_projector_write_retries_total";
pub const REDIS_FAILURES: &str = "likes_projector_redis_failures_total";
pub const BATCH_SECONDS: &str = "likes_projector_batch_seconds";
pub const DEAD_LETTER_REFERENCES: &str = "likes_projector_dead_letter_references_total";
pub const PARKED: &str = "likes_projector_parked_partitions";
pub const MISSING_RECORDS: &str = "likes_projector_missing_records";
pub const ARCHIVE_FILLS: &str = "likes_projector_archive_fills_total";
pub const PARTITIONS: &str = "likes_projector_partitions";
pub const APPLIED_TIMESTAMP: &str = "likes_projector_applied_timestamp_seconds";
pub const BATCH_EVENTS: &str = "likes_projector_batch_events";
pub const COMMIT_SECONDS: &str = "likes_projector_commit_seconds";
pub const FRESHNESS_SECONDS: &str = "likes_projector_freshness_seconds";

/// The values of [`PARTITIONS`]'s `state` label.
pub const PARTITION_STATES: [&str; 3] = ["active", "parked", "stopped"];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Describes every metric; installs a Prometheus recorder unless the process
/// already has one (tests run ingest and projector in one process).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let handle = likes_infra::telemetry::prometheus();
            describe_counter!(BATCHES, "batches committed to PostgreSQL");
            describe_counter!(EVENTS, "events in committed batches");
            describe_counter!(
                DUPLICATES,
                "events skipped because their id was applied before"
            );
            describe_counter!(
                POISON,
                "records sent to the dead-letter topic, by reason (the kind of decode failure)"
            );
            describe_counter!(
                FENCED,
                "batches refused because a newer owner claimed a partition"
            );
            describe_counter!(
                WRITE_RETRIES,
                "batch writes retried after a transient database error"
            );
            describe_counter!(
                REDIS_FAILURES,
                "Redis updates that failed and were queued for retry"
            );
            describe_counter!(
                DEAD_LETTER_REFERENCES,
                "records too large for the dead-letter topic, sent there as a reference (also in the poison total)"
            );
            describe_gauge!(
                PARKED,
                "1 while a partition is stopped, by partition and reason (gap, write_failed, dead_letter_failed)"
            );
            describe_counter!(
                ARCHIVE_FILLS,
                "gaps of deleted records read from the archive instead of parking the partition"
            );
            describe_gauge!(
                MISSING_RECORDS,
                "records deleted from the log before they were projected, by partition and offset range, until the loss is accepted"
            );
            describe_histogram!(
                BATCH_SECONDS,
                metrics::Unit::Seconds,
                "time from a batch's first record to its commit"
            );
            describe_gauge!(
                PARTITIONS,
                "partitions of this instance by state: active, parked (held back by the never-lose rules), stopped (assigned, but not read: their shard could not be claimed in)"
            );
            describe_gauge!(
                APPLIED_TIMESTAMP,
                metrics::Unit::Seconds,
                "broker timestamp (unix seconds) of the newest record this instance applied, by partition"
            );
            describe_histogram!(BATCH_EVENTS, "events per committed batch");
            describe_histogram!(
                COMMIT_SECONDS,
                metrics::Unit::Seconds,
                "the PostgreSQL write of one shard's batch"
            );
            describe_histogram!(
                FRESHNESS_SECONDS,
                metrics::Unit::Seconds,
                "append to visible: per partition and batch, the oldest record's broker timestamp to the confirmation of its Redis write"
            );
            // Exported from the start, so alerts can take increase() of them
            // and a dashboard shows zero instead of nothing.
            for reason in likes_infra::DecodeError::KINDS {
                metrics::counter!(POISON, "reason" => reason).absolute(0);
            }
            for counter in [
                BATCHES,
                EVENTS,
                DUPLICATES,
                FENCED,
                WRITE_RETRIES,
                REDIS_FAILURES,
                DEAD_LETTER_REFERENCES,
                ARCHIVE_FILLS,
            ] {
                metrics::counter!(counter).absolute(0);
            }
            partitions(0, 0, 0);
            handle
        })
        .clone()
}

/// Sets the partition counts by state.
pub fn partitions(active: usize, parked: usize, stopped: usize) {
    for (state, n) in PARTITION_STATES.into_iter().zip([active, parked, stopped]) {
        metrics::gauge!(PARTITIONS, "state" => state).set(n as f64);
    }
}
