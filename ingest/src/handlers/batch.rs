//! `POST /v1/likes:batch`: up to `MAX_BATCH_EVENTS` events, each validated,
//! rate limited and published on its own, all produces in flight at once.
//! The answer is 200 with one result per event, in request order. Batch events
//! are never deduplicated: each valid, admitted event is produced.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use likes_domain::{EventId, LikeEvent, UserId};
use serde_json::{Value, json};
use warp::http::StatusCode;
use warp::reply::Response;

use super::json;
use crate::batch::{BatchEvent, parse_batch};
use crate::protection::publish_error;
use crate::query::Token;
use crate::request::require_json;
use crate::{ApiError, State, observability};

/// The handler.
#[tracing::instrument(skip_all, fields(bytes = body.len()))]
pub async fn publish_batch(
    content_type: Option<String>,
    body: Bytes,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    require_json(content_type.as_deref())?;
    let parsed = parse_batch(&body, state.limits.max_batch_events)?;
    let valid = parsed.iter().filter(|e| e.is_ok()).count();
    state
        .protection
        .backpressure(state.publisher.in_flight(), valid)?;
    let admitted = admit(&state, parsed).await;
    let results = join_all(admitted.into_iter().map(|event| {
        let state = state.clone();
        async move {
            match event {
                Ok(event) => produce(&state, event).await,
                Err(e) => Err(e),
            }
        }
    }))
    .await;
    let mut accepted = 0;
    let results: Vec<Value> = results
        .into_iter()
        .enumerate()
        .map(|(index, result)| {
            let mut body = match result {
                Ok(body) => {
                    accepted += 1;
                    body
                }
                Err(e) => {
                    observability::rejected(e.code());
                    json!({"status": e.status().as_u16(), "error": e.body()})
                }
            };
            body["index"] = json!(index);
            body
        })
        .collect();
    let rejected = results.len() - accepted;
    Ok(json(
        &json!({"accepted": accepted, "rejected": rejected, "results": results}),
        StatusCode::OK,
    ))
}

/// Applies the per-user rate limit: one token per event, asked once per user;
/// a user's first events take the tokens granted, the rest are refused.
async fn admit(
    state: &State,
    parsed: Vec<Result<BatchEvent, ApiError>>,
) -> Vec<Result<BatchEvent, ApiError>> {
    let mut cost: HashMap<UserId, u32> = HashMap::new();
    for event in parsed.iter().flatten() {
        *cost.entry(event.request.user_id).or_default() += 1;
    }
    let grants: HashMap<UserId, (u32, Option<ApiError>)> = join_all(
        cost.into_iter()
            .map(|(user, cost)| async move { (user, state.protection.admit(user, cost).await) }),
    )
    .await
    .into_iter()
    .collect();
    let mut used: HashMap<UserId, u32> = HashMap::new();
    parsed
        .into_iter()
        .map(|event| {
            let event = event?;
            let user = event.request.user_id;
            let n = used.entry(user).or_default();
            *n += 1;
            match grants.get(&user) {
                Some((granted, Some(e))) if *n > *granted => Err(ApiError::RateLimited {
                    retry_after_secs: e.retry_after().unwrap_or(1),
                }),
                _ => Ok(event),
            }
        })
        .collect()
}

/// Publishes one event and renders its accepted result.
async fn produce(state: &State, event: BatchEvent) -> Result<Value, ApiError> {
    let event_id = event.request.event_id.unwrap_or_else(EventId::generate);
    let record = LikeEvent {
        event_id,
        user_id: event.request.user_id,
        item: event.request.item,
        action: event.action,
        timestamp: chrono::Utc::now(),
    };
    let ack = state.publisher.publish(&record).await.map_err(|e| {
        tracing::warn!(error = %e, %event_id, "batch publish failed");
        publish_error(e)
    })?;
    observability::accepted(event.action, 1);
    Ok(json!({
        "status": 202,
        "event_id": event_id,
        "partition": ack.partition,
        "offset": ack.offset,
        "token": Token { partition: ack.partition, offset: ack.offset }.to_string(),
    }))
}
