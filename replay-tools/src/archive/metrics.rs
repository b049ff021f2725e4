//! The archiver's metrics, named once and labelled by partition only, served
//! on `ARCHIVE_METRICS_ADDR` with a liveness check.

use std::net::SocketAddr;

use metrics::{describe_counter, describe_gauge};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The next offset to archive, by partition: everything before it is in complete files.
pub const NEXT_OFFSET: &str = "likes_archive_next_offset";
/// Records the topic holds that the archive does not yet, by partition.
pub const LAG: &str = "likes_archive_lag_records";
pub const FILES: &str = "likes_archive_files_total";
pub const RECORDS: &str = "likes_archive_records_total";
/// Records deleted from the log before the archiver read them.
pub const MISSED: &str = "likes_archive_missed_records_total";

/// Describes the metrics and returns the process's recorder.
pub fn install() -> Option<PrometheusHandle> {
    let handle = likes_infra::telemetry::prometheus();
    describe_gauge!(
        NEXT_OFFSET,
        "next offset to archive, by partition (all before it are in complete files)"
    );
    describe_gauge!(LAG, "records in the topic not archived yet, by partition");
    describe_counter!(FILES, "archive files completed");
    describe_counter!(RECORDS, "records written to completed archive files");
    describe_counter!(
        MISSED,
        "records deleted from the log before the archiver read them"
    );
    // Exported from the start, so alerts can take increase() of them.
    for counter in [FILES, RECORDS, MISSED] {
        metrics::counter!(counter).absolute(0);
    }
    handle
}

/// Serves `/metrics` and `/healthz` on `addr` until the task is dropped.
pub async fn serve(addr: SocketAddr, handle: Option<PrometheusHandle>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "archiver metrics listening");
    loop {
        let (mut stream, _) = listener.accept().await?;
        let handle = handle.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let read = stream.read(&mut buf).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buf[..read]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let (status, body) = match (path.split('?').next(), &handle) {
                (Some("/metrics"), Some(h)) => ("200 OK", h.render()),
                (Some("/healthz"), _) => ("200 OK", "ok\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes()).await;
        });
    }
}
