//! The projector's HTTP endpoint (`PROJECTOR_METRICS_ADDR`): `/healthz` (the
//! process answers), `/readyz` (it owns partitions, none is parked and none
//! assigned is left unclaimed because its shard is away; the body names the
//! parked partitions and why) and the Prometheus metrics on any
//! other path.

use std::net::SocketAddr;
use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::ownership::{Ownership, ParkReason};

/// Serves the endpoints on `addr` until the task is dropped. `metrics` is
/// `None` when another recorder owns the process (tests run several services).
pub async fn serve(
    addr: SocketAddr,
    metrics: Option<PrometheusHandle>,
    ownership: Arc<Ownership>,
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(%addr, "metrics and health checks listening");
    loop {
        let (mut socket, _) = listener.accept().await?;
        let metrics = metrics.clone();
        let ownership = ownership.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let read = socket.read(&mut buf).await.unwrap_or(0);
            let (status, content_type, body) = answer(path(&buf[..read]), metrics, &ownership);
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
        });
    }
}

/// The path of an HTTP request line (`GET /readyz HTTP/1.1`), `/` if unreadable.
fn path(request: &[u8]) -> &str {
    std::str::from_utf8(request)
        .ok()
        .and_then(|text| text.split_whitespace().nth(1))
        .map_or("/", |p| p.split('?').next().unwrap_or(p))
}

fn answer(
    path: &str,
    metrics: Option<PrometheusHandle>,
    ownership: &Ownership,
) -> (&'static str, &'static str, String) {
    match path {
        "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" => {
            let (ready, body) = readiness(
                ownership.owned(),
                ownership.unclaimed_count(),
                &ownership.parked(),
            );
            let status = if ready {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            (status, "application/json", body.to_string())
        }
        _ => match metrics {
            Some(handle) => ("200 OK", "text/plain; version=0.0.4", handle.render()),
            None => (
                "404 Not Found",
                "text/plain",
                "metrics are served by another recorder in this process\n".into(),
            ),
        },
    }
}

/// Ready means: owns at least one partition, none of them is parked, and no
/// assigned partition waits for its shard to be claimed in.
fn readiness(
    owned: usize,
    unclaimed: usize,
    parked: &[(i32, ParkReason)],
) -> (bool, serde_json::Value) {
    let ready = owned > 0 && unclaimed == 0 && parked.is_empty();
    let parked: Vec<serde_json::Value> = parked
        .iter()
        .map(|(partition, reason)| {
            let mut entry = json!({
                "partition": partition,
                "reason": reason.label(),
                "detail": reason.describe(),
            });
            if let ParkReason::Gap { from, to } = reason {
                entry["missing_from_offset"] = json!(from);
                entry["missing_to_offset"] = json!(to);
            }
            entry
        })
        .collect();
    (
        ready,
        json!({"ready": ready, "owned_partitions": owned, "unclaimed_partitions": unclaimed, "parked": parked}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_path_is_read_from_the_request_line() {
        assert_eq!(path(b"GET /readyz HTTP/1.1\r\nhost: x\r\n\r\n"), "/readyz");
        assert_eq!(path(b"GET /metrics?x=1 HTTP/1.1\r\n"), "/metrics");
        assert_eq!(path(b"\xff\xfe"), "/");
    }

    #[test]
    fn ready_needs_partitions_and_none_parked() {
        assert!(readiness(3, 0, &[]).0);
        assert!(!readiness(0, 0, &[]).0, "owns nothing yet");
        let (ready, body) = readiness(3, 1, &[]);
        assert!(!ready, "a shard could not be claimed in");
        assert_eq!(body["unclaimed_partitions"], 1);
        let (ready, body) = readiness(3, 0, &[(2, ParkReason::Gap { from: 0, to: 2 })]);
        assert!(!ready);
        assert_eq!(body["parked"][0]["partition"], 2);
        assert_eq!(body["parked"][0]["reason"], "gap");
        assert_eq!(
            (
                &body["parked"][0]["missing_from_offset"],
                &body["parked"][0]["missing_to_offset"]
            ),
            (&json!(0), &json!(2))
        );
    }
}
