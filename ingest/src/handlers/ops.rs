//! Probes and metrics: `/healthz` (the process answers), `/readyz` (Kafka, the
//! registry and Redis answer, no shard holds another shard map), `/metrics`
//! (Prometheus text).

use std::sync::Arc;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::json;
use crate::{ApiError, State, observability};

/// GET /healthz: alive.
pub async fn healthz() -> Result<Response, warp::Rejection> {
    Ok(json(&json!({"status": "ok"}), StatusCode::OK))
}

/// GET /readyz: 200 when every dependency of a write answers, else 503 naming
/// the ones that do not.
pub async fn readyz(state: Arc<State>) -> Result<Response, warp::Rejection> {
    let checks = state.readiness.check(&state.redis, &state.projection).await;
    let ready = checks.iter().all(|(_, failure)| failure.is_none());
    let mut detail = serde_json::Map::new();
    for (name, failure) in checks {
        let value = match failure {
            None => json!({"status": "ok"}),
            Some((down, detail)) => {
                tracing::warn!(check = name, error = %detail, "readiness check failed");
                json!({"status": "down", "error": crate::readiness::code(down)})
            }
        };
        detail.insert(name.to_string(), value);
    }
    let body = json!({"status": if ready { "ok" } else { "unavailable" }, "checks": detail});
    let mut response = json(
        &body,
        if ready {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
    );
    if !ready {
        response
            .headers_mut()
            .insert("retry-after", warp::http::HeaderValue::from_static("1"));
    }
    Ok(response)
}

/// GET /metrics: the Prometheus text exposition.
pub async fn metrics(state: Arc<State>) -> Result<Response, warp::Rejection> {
    let Some(handle) = &state.metrics else {
        return Err(ApiError::Unavailable("metrics recorder not installed".into()).into());
    };
    observability::queue_depth(state.publisher.in_flight());
    handle.run_upkeep();
    Ok(warp::reply::with_header(
        handle.render(),
        "content-type",
        "text/plain; version=0.0.4; charset=utf-8",
    )
    .into_response())
}
