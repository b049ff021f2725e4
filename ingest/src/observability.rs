//! Prometheus metrics: request counts and latency per route template, method
//! and status (never per user or item id), producer queue depth and capacity,
//! rejections by reason, and the projection watch's lag and staleness per
//! partition ([`crate::freshness`]). One recorder per process, shared by
//! every instance in it.

use std::sync::OnceLock;

use metrics::{
    Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};
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
        REQUESTS,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        REQUEST_SECONDS,
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

const REQUESTS: &str = "likes_ingest_requests_total";
const REQUEST_SECONDS: &str = "likes_ingest_request_duration_seconds";

/// The methods a request is labelled with; anything else is "other".
const METHODS: [&str; 8] = [
    "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "other",
];
/// The statuses the API answers with. A request's handles are kept per
/// (route, method, status) among these, so labelling a response is an index,
/// not a key built and looked up in the registry; any other status takes
/// that slower way.
const STATUSES: [u16; 17] = [
    200, 202, 204, 400, 404, 405, 406, 408, 409, 413, 415, 422, 429, 500, 502, 503, 504,
];

/// One (route, method, status)'s request counter and latency histogram.
struct RequestHandles {
    requests: Counter,
    seconds: Histogram,
}

impl RequestHandles {
    fn new(route: &'static str, method: &'static str, status: String) -> Self {
        Self {
            requests: counter!(REQUESTS, "route" => route, "method" => method, "status" => status.clone()),
            seconds: histogram!(REQUEST_SECONDS, "route" => route, "method" => method, "status" => status),
        }
    }

    fn record(&self, seconds: f64) {
        self.requests.increment(1);
        self.seconds.record(seconds);
    }
}

/// Records one answered request (called by the server for every response).
pub fn observe(info: warp::log::Info<'_>) {
    /// Routes, "unmatched" last.
    const ROUTES: usize = crate::routes::ALL.len() + 1;
    static KNOWN: OnceLock<Vec<OnceLock<RequestHandles>>> = OnceLock::new();
    let route = crate::routes::index_of(info.path());
    let method = method_index(info.method());
    let status = info.status().as_u16();
    let seconds = info.elapsed().as_secs_f64();
    let handles = || RequestHandles::new(label_of(route), METHODS[method], status.to_string());
    match STATUSES.iter().position(|s| *s == status) {
        Some(s) => {
            let slot = (route.unwrap_or(ROUTES - 1) * METHODS.len() + method) * STATUSES.len() + s;
            let known = KNOWN.get_or_init(|| {
                (0..ROUTES * METHODS.len() * STATUSES.len())
                    .map(|_| OnceLock::new())
                    .collect()
            });
            known[slot].get_or_init(handles).record(seconds);
        }
        None => handles().record(seconds),
    }
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

/// Counts acked events (a handle per action, looked up once).
pub fn accepted(action: likes_domain::Action, n: u64) {
    use likes_domain::Action;
    static ACCEPTED: OnceLock<[Counter; 2]> = OnceLock::new();
    let [likes, unlikes] = ACCEPTED.get_or_init(|| {
        [Action::Like, Action::Unlike]
            .map(|a| counter!("likes_ingest_events_accepted_total", "action" => a.name()))
    });
    match action {
        Action::Like => likes,
        Action::Unlike => unlikes,
    }
    .increment(n);
}

/// Sets the producer queue depth gauge.
pub fn queue_depth(in_flight: i32) {
    gauge!("likes_ingest_producer_queue_depth").set(f64::from(in_flight));
}

/// The route label of a path no route serves.
const UNMATCHED: &str = "unmatched";

/// The label of the route at `index` in [`crate::routes::ALL`], if any: a
/// route template, a fixed, small set of values, never an id.
fn label_of(index: Option<usize>) -> &'static str {
    index.map_or(UNMATCHED, |i| crate::routes::ALL[i].template)
}

/// The position of `method`'s label in [`METHODS`].
fn method_index(method: &warp::http::Method) -> usize {
    use warp::http::Method;
    match *method {
        Method::GET => 0,
        Method::POST => 1,
        Method::DELETE => 2,
        Method::PUT => 3,
        Method::PATCH => 4,
        Method::HEAD => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::routes;

    fn route_label(path: &str) -> &'static str {
        label_of(routes::index_of(path))
    }

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
