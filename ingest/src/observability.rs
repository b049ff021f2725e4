//! Prometheus metrics: request counts and latency per route template, method
//! and status (never per user or item id), producer queue depth and capacity,
//! rejections by reason, and the projection watch's lag and staleness per
//! partition ([`crate::freshness`]). One recorder per process, shared by
//! every instance in it.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::PrometheusHandle;

static DESCRIBED: OnceLock<()> = OnceLock::new();

const LAG: &str = "likes_projection_lag_records";
const STALENESS: &str = "likes_projection_staleness_seconds";
const DEDUPLICATED: &str = "likes_ingest_deduplicated_total";
const WATCH_FAILURES: &str = "likes_projection_watch_failures_total";
const QUEUE_CAPACITY: &str = "likes_ingest_producer_queue_capacity";
const PROTECTION_UNAVAILABLE: &str = "likes_ingest_protection_unavailable_total";

/// The values of [`PROTECTION_UNAVAILABLE`]'s `protection` label.
pub const RATE_LIMIT: &str = "rate_limit";
pub const DEDUP: &str = "dedup";
const PROTECTIONS: [&str; 2] = [RATE_LIMIT, DEDUP];

/// Installs the process-wide recorder once (shared with an in-process projector);
/// `None` if another recorder owns the process (then `/metrics` answers 503).
pub fn install(queue_capacity: usize) -> Option<PrometheusHandle> {
    let handle = likes_infra::telemetry::prometheus();
    DESCRIBED.get_or_init(describe);
    gauge!(QUEUE_CAPACITY).set(queue_capacity as f64);
    handle
}

fn describe() {
    describe_counter!(
        "likes_ingest_requests_total",
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        "likes_ingest_request_duration_seconds",
        metrics::Unit::Seconds,
        "time from request to response, by route template, method and status"
    );
    describe_counter!(
        "likes_ingest_rejected_total",
        "requests or batch events refused, by reason (the error code)"
    );
    describe_counter!(
        DEDUPLICATED,
        "repeated identical actions answered from the dedup memo without producing"
    );
    describe_counter!(
        PROTECTION_UNAVAILABLE,
        "protection checks skipped because Redis failed (rate_limit, dedup)"
    );
    // Exported from the start, so an alert can take increase() of it.
    for which in PROTECTIONS {
        counter!(PROTECTION_UNAVAILABLE, "protection" => which).absolute(0);
    }
    describe_gauge!(
        "likes_ingest_producer_queue_depth",
        "events handed to the producer and not yet acked"
    );
    describe_counter!(
        "likes_ingest_events_accepted_total",
        "events acked by the broker, by action"
    );
    describe_gauge!(
        QUEUE_CAPACITY,
        "events the producer may hold unacked before writes are shed (the bound of the queue depth)"
    );
    describe_gauge!(
        LAG,
        "records appended to a partition and not projected yet (log end minus the projector's stored offset), by partition"
    );
    describe_gauge!(
        STALENESS,
        metrics::Unit::Seconds,
        "how old the counts of a partition may be: now minus the time up to which it is projected, by partition"
    );
    describe_counter!(
        WATCH_FAILURES,
        "projection watch readings that could not read the log ends or a shard's progress"
    );
    counter!(WATCH_FAILURES).absolute(0);
    counter!(DEDUPLICATED).absolute(0);
}

/// Sets a partition's projection lag.
pub fn projection_lag(partition: i32, lag: i64) {
    gauge!(LAG, "partition" => partition.to_string()).set(lag as f64);
}

/// Sets how old a partition's counts may be.
pub fn projection_staleness(partition: usize, millis: i64) {
    gauge!(STALENESS, "partition" => partition.to_string()).set(millis as f64 / 1000.0);
}

/// Counts a projection watch reading that failed.
pub fn watch_failed() {
    counter!(WATCH_FAILURES).increment(1);
}

/// Records one answered request (called by the server for every response).
pub fn observe(info: warp::log::Info<'_>) {
    let route = route_label(info.path());
    let method = method_label(info.method());
    let status = info.status().as_u16().to_string();
    counter!("likes_ingest_requests_total", "route" => route, "method" => method, "status" => status.clone())
        .increment(1);
    histogram!("likes_ingest_request_duration_seconds", "route" => route, "method" => method, "status" => status)
        .record(info.elapsed().as_secs_f64());
}

/// Counts a refused request or batch event.
pub fn rejected(reason: &'static str) {
    counter!("likes_ingest_rejected_total", "reason" => reason).increment(1);
}

/// Counts an action answered from the dedup memo.
pub fn deduplicated() {
    counter!(DEDUPLICATED).increment(1);
}

/// Counts a protection skipped because Redis failed.
pub fn protection_unavailable(which: &'static str) {
    counter!(PROTECTION_UNAVAILABLE, "protection" => which).increment(1);
}

/// Counts acked events.
pub fn accepted(action: likes_domain::Action, n: u64) {
    counter!("likes_ingest_events_accepted_total", "action" => action.name()).increment(n);
}

/// Sets the producer queue depth gauge.
pub fn queue_depth(in_flight: i32) {
    gauge!("likes_ingest_producer_queue_depth").set(f64::from(in_flight));
}

/// The route template of a path (from [`crate::routes`]): a fixed, small set
/// of label values, never an id.
pub fn route_label(path: &str) -> &'static str {
    crate::routes::template_of(path).unwrap_or("unmatched")
}

fn method_label(method: &warp::http::Method) -> &'static str {
    use warp::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::routes;

    #[test]
    fn ids_never_become_label_values() {
        assert_eq!(
            route_label("/v1/items/1/123456/count"),
            routes::COUNT.template
        );
        assert_eq!(
            route_label("/v1/users/42/likes/1/7"),
            routes::USER_LIKES.template
        );
        assert_eq!(route_label("/v1/whatever/99"), "unmatched");
        assert_eq!(route_label("/v1/likes:batch"), routes::LIKE_BATCH.template);
    }
}
