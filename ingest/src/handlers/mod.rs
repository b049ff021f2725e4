//! Request handlers: validate, act, answer. Errors are returned as rejections
//! carrying an [`ApiError`] and rendered by [`crate::recover`].

use std::sync::Arc;

use bytes::Bytes;
use likes_domain::{Action, EventId, LikeEvent};
use likes_infra::publisher::PublishError;
use likes_infra::store;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::request::{parse_item_path, parse_like, require_json};
use crate::{ApiError, State};

/// POST/DELETE a like: validate, publish, answer 202 once the broker acked.
pub async fn publish(
    action: Action,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    body: Bytes,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    require_json(content_type.as_deref())?;
    let request = parse_like(&body, idempotency_key.as_deref())?;
    let event = LikeEvent {
        event_id: request.event_id.unwrap_or_else(EventId::generate),
        user_id: request.user_id,
        item: request.item,
        action,
        timestamp: chrono::Utc::now(),
    };
    let ack = state.publisher.publish(&event).await.map_err(|e| {
        tracing::warn!(error = %e, event_id = %event.event_id, "publish failed");
        match e {
            PublishError::QueueFull => ApiError::Unavailable("overloaded, retry later".into()),
            PublishError::NotAcked(_) => ApiError::Unavailable(
                "the event log did not acknowledge in time; retry with the same event_id".into(),
            ),
            PublishError::Encode(e) => ApiError::Unavailable(format!("cannot encode: {e}")),
        }
    })?;
    let body = json!({
        "event_id": event.event_id,
        "partition": ack.partition,
        "offset": ack.offset,
    });
    Ok(warp::reply::with_status(warp::reply::json(&body), StatusCode::ACCEPTED).into_response())
}

/// GET an item's count: Redis first, PostgreSQL on a miss (refilling Redis).
pub async fn count(
    item_type: String,
    item_id: String,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    let item = parse_item_path(&item_type, &item_id)?;
    let cached = match state.cache.count(item).await {
        Ok(hit) => hit,
        Err(e) => {
            tracing::warn!(error = %e, "redis read failed, falling back to postgres");
            None
        }
    };
    let (count, source) = match cached {
        Some(count) => (count, "cache"),
        None => {
            let stored = store::reads::count(&state.db, item)
                .await
                .map_err(|e| ApiError::Unavailable(format!("count store unavailable: {e}")))?;
            // Stamp -1 for "never counted" so any projected count replaces it.
            let (count, stamp) = stored.unwrap_or((0, -1));
            if let Err(e) = state.cache.put_counts(&[(item, count, stamp)]).await {
                tracing::warn!(error = %e, "redis refill failed");
            }
            (count, "database")
        }
    };
    let body = json!({
        "item_type": item.item_type,
        "item_id": item.item_id,
        "count": count,
    });
    Ok(
        warp::reply::with_header(warp::reply::json(&body), "x-count-source", source)
            .into_response(),
    )
}
