//! `POST /v1/likes:batch`: up to `MAX_BATCH_EVENTS` events, each validated,
//! rate limited and published on its own, all produces in flight at once.
//! The answer is 200 with one result per event, in request order. Batch events
//! are never deduplicated: each valid, admitted event is produced. They do
//! keep the quick-dedup memo true: each publish is marked before it starts and
//! settled with its ack before the answer, exactly as a single request is, so a
//! later single request is never answered from an action the batch superseded.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::join_all;
use likes_domain::{EventId, ItemKey, LikeEvent, Position, UserId};
use likes_infra::kafka::PublishError;
use likes_infra::redis::dedup::Settle;
use serde::Serialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;

use super::json;

use crate::batch_body::{BatchEvent, parse_batch};
use crate::protection::{BatchAdmit, outcome, publish_error};
use crate::query::Token;
use crate::request::require_json;
use crate::{ApiError, State, observability};

/// The handler.
#[tracing::instrument(level = "debug", skip_all, fields(bytes = body.len()))]
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
    // Every admitted event goes to the producer in one pass; the rest keep
    // their error. `slots` remembers which result answers which index.
    let mut events = Vec::new();
    let mut marks = Vec::new();
    let mut slots: Vec<Result<usize, ApiError>> = Vec::with_capacity(admitted.len());
    for event in admitted {
        slots.push(event.map(|(event, marked)| {
            marks.push(marked);
            events.push(LikeEvent {
                event_id: event.request.event_id.unwrap_or_else(EventId::generate),
                user_id: event.request.user_id,
                item: event.request.item,
                action: event.action,
                timestamp: chrono::Utc::now(),
            });
            events.len() - 1
        }));
    }
    let acks = state.publisher.publish_many(&events).await;
    // Without quick dedup there is no memo to keep true (and nothing to build).
    if state.protection.dedups() {
        let settles: Vec<Settle> = events
            .iter()
            .zip(&acks)
            .zip(&marks)
            .map(|((event, result), marked)| Settle {
                user: event.user_id,
                item: event.item,
                outcome: outcome(event.action, event.event_id, result),
                marked: *marked,
            })
            .collect();
        state.protection.settle(&settles).await;
    }
    let mut acks: Vec<Option<Result<Position, PublishError>>> =
        acks.into_iter().map(Some).collect();
    let mut accepted = 0;
    let results: Vec<Outcome> = slots
        .into_iter()
        .enumerate()
        .map(|(index, slot)| {
            let produced = slot.and_then(|i| {
                let event = &events[i];
                match acks[i].take() {
                    Some(Ok(ack)) => Ok((event, ack)),
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, event_id = %event.event_id, "batch publish failed");
                        Err(publish_error(e, event.event_id))
                    }
                    None => Err(ApiError::Unavailable("no delivery result".into())),
                }
            });
            match produced {
                Ok((event, ack)) => {
                    accepted += 1;
                    observability::accepted(event.action, 1);
                    Outcome::Accepted {
                        status: 202,
                        event_id: event.event_id.to_string(),
                        partition: ack.partition,
                        offset: ack.offset,
                        token: Token(ack).to_string(),
                        index,
                    }
                }
                Err(e) => {
                    observability::rejected(e.code());
                    Outcome::Rejected {
                        status: e.status().as_u16(),
                        error: e.body(),
                        index,
                    }
                }
            }
        })
        .collect();
    let answer = Answer {
        accepted,
        rejected: results.len() - accepted,
        results,
    };
    Ok(json(&answer, StatusCode::OK))
}

/// The answer of a batch: counts and one outcome per event, in request order.
#[derive(Serialize)]
struct Answer {
    accepted: usize,
    rejected: usize,
    results: Vec<Outcome>,
}

/// One event's outcome, serialized straight to bytes: a batch answers up to
/// `MAX_BATCH_EVENTS` of them, too many to build a `serde_json::Value` each.
#[derive(Serialize)]
#[serde(untagged)]
enum Outcome {
    Accepted {
        status: u16,
        event_id: String,
        partition: i32,
        offset: i64,
        token: String,
        index: usize,
    },
    Rejected {
        status: u16,
        error: Value,
        index: usize,
    },
}

/// Applies the protections per user: one token per event, asked once per
/// user; a user's first events take the tokens granted, the rest are
/// refused. Each event that goes comes with whether its publish is marked
/// (quick dedup keeps the memo true across batches too).
async fn admit(
    state: &State,
    parsed: Vec<Result<BatchEvent, ApiError>>,
) -> Vec<Result<(BatchEvent, bool), ApiError>> {
    let protection = &state.protection;
    // With neither protection on every event goes unmarked, so skip grouping
    // users and building a future per user: on a large batch that work is
    // not small.
    if !protection.limits_rate() && !protection.dedups() {
        return parsed
            .into_iter()
            .map(|event| event.map(|event| (event, false)))
            .collect();
    }
    let mut items: HashMap<UserId, Vec<ItemKey>> = HashMap::new();
    for event in parsed.iter().flatten() {
        items
            .entry(event.request.user_id)
            .or_default()
            .push(event.request.item);
    }
    let verdicts: HashMap<UserId, BatchAdmit> =
        join_all(items.iter().map(|(user, items)| async move {
            (*user, protection.admit_batch(*user, items).await)
        }))
        .await
        .into_iter()
        .collect();
    let mut seen: HashMap<UserId, u32> = HashMap::new();
    parsed
        .into_iter()
        .map(|event| {
            let event = event?;
            let user = event.request.user_id;
            let n = seen.entry(user).or_default();
            *n += 1;
            match verdicts.get(&user) {
                Some(verdict) if *n > verdict.granted => Err(ApiError::RateLimited {
                    retry_after_secs: verdict
                        .refused
                        .as_ref()
                        .and_then(ApiError::retry_after)
                        .unwrap_or(1),
                }),
                Some(verdict) => Ok((event, verdict.marked)),
                None => Ok((event, false)),
            }
        })
        .collect()
}
