//! Logging and metrics set-up shared by the binaries: `tracing` to stderr,
//! filtered by `RUST_LOG`, and one Prometheus recorder per process.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets in seconds for every `*_seconds` histogram: 1 ms to a
/// minute, with a bound at 2 s, the seed's convergence target.
const BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 7.5, 10.0, 30.0,
    60.0,
];

/// Size buckets for every `*_events` histogram (events per batch): 1 to a million.
const EVENT_BUCKETS: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// How often the recorder folds recorded histogram samples into its buckets
/// (the exporter's own default for the recorder it runs itself).
pub const METRICS_UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's Prometheus recorder, installed on first call. Ingest and
/// projector share it when they run in one process (the tests); `None` only if
/// some other recorder was installed first.
///
/// A histogram keeps every recorded sample until upkeep folds them into its
/// buckets, and a recorder installed this way gets no upkeep of its own: done
/// only by a scrape, an ingest nobody scrapes grew by a sample per request and
/// a projector by one per event. A thread runs it every
/// [`METRICS_UPKEEP_EVERY`] for the life of the process, as the recorder lives.
pub fn prometheus() -> Option<PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Suffix("_events".into()), &EVENT_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            let upkept = handle.clone();
            let started = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(METRICS_UPKEEP_EVERY);
                        upkept.run_upkeep();
                    }
                });
            if let Err(e) = started {
                tracing::warn!(error = %e, "cannot start the metrics upkeep; histograms are folded only when scraped");
            }
            Some(handle)
        })
        .clone()
}

/// The log filter the services run under when `RUST_LOG` is unset: INFO and
/// above. The spans opened per request or per event (the handlers', and the
/// Redis, PostgreSQL and Kafka calls they make) are DEBUG, so this filter
/// never builds them: enabled, they cost the cached read 0.4-11 µs of CPU and
/// 5-30 % of its peak at 10,000 reads/s
/// (`bench/results/2026-12-0{2,3}-spans-*.md`). To see a request's path, run
/// with `RUST_LOG=info,likes=debug`. The benchmark runs the in-process
/// services under this same filter, so it measures what ships.
pub const SERVICE_FILTER: &str = "info";

/// Installs the global subscriber once; later calls (tests) are no-ops.
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on SIGINT or SIGTERM: the shutdown future the binaries pass to `run`.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
