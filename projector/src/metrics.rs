//! The projector's metrics, named and described once, never labelled by user or
//! item, and an optional Prometheus text endpoint (`PROJECTOR_METRICS_ADDR`).

use std::net::SocketAddr;
use std::sync::OnceLock;

use metrics::{describe_counter, describe_histogram};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub const BATCHES: &str = "likes_projector_batches_total";
pub const EVENTS: &str = "likes_projector_events_total";
pub const DUPLICATES: &str = "likes_projector_duplicate_events_total";
pub const POISON: &str = "likes_projector_poison_records_total";
pub const FENCED: &str = "likes_projector_fenced_batches_total";
pub const WRITE_RETRIES: &str = "likes_projector_write_retries_total";
pub const REDIS_FAILURES: &str = "likes_projector_redis_failures_total";
pub const BATCH_SECONDS: &str = "likes_projector_batch_seconds";

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
            describe_counter!(POISON, "records sent to the dead-letter topic");
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
            describe_histogram!(
                BATCH_SECONDS,
                metrics::Unit::Seconds,
                "time from a batch's first record to its commit"
            );
            handle
        })
        .clone()
}

/// Serves the metrics as Prometheus text on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, handle: PrometheusHandle) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics listening");
    loop {
        let (mut socket, _) = listener.accept().await?;
        let body = handle.render();
        tokio::spawn(async move {
            // Any request gets the metrics; read what it sent so the client sees a clean close.
            let mut buf = [0u8; 1024];
            let _ = socket.read(&mut buf).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        });
    }
}
