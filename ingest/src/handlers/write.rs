//! A single like or unlike: validate, protect, publish, answer 202 once the
//! broker acked, with a read-your-writes token and the optimistic count.

use std::sync::Arc;

use bytes::Bytes;
use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use likes_infra::redis::dedup::Settle;
use serde::Serialize;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::json;
use crate::protection::{Memo, Recalled, outcome, publish_error};
use crate::query::Token;
use crate::request::{parse_like, require_json};
use crate::{ApiError, State, observability};

/// POST/DELETE a like.
#[tracing::instrument(level = "debug", skip_all, fields(action = ?action))]
pub async fn publish(
    action: Action,
    content_type: Option<String>,
    idempotency_key: Option<String>,
    body: Bytes,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    require_json(content_type.as_deref())?;
    let request = parse_like(&body, idempotency_key.as_deref())?;
    let (user, item) = (request.user_id, request.item);
    state
        .protection
        .backpressure(state.publisher.in_flight(), 1)?;
    let recalled = state.protection.guard(user, item, action).await?;
    let event_id = request.event_id.unwrap_or_else(EventId::generate);
    let (written, seen) = tokio::join!(
        write(&state, action, user, item, event_id, recalled),
        projected(&state, user, item)
    );
    let (memo, deduplicated) = written?;
    let body = Accepted {
        event_id: memo.event_id,
        partition: memo.ack.partition,
        offset: memo.ack.offset,
        token: Token(memo.ack),
        deduplicated,
        count: seen.map(|(count, liked)| optimistic(action, count, liked)),
    };
    let mut response = json(&body, StatusCode::ACCEPTED);
    response.headers_mut().insert(
        "x-deduplicated",
        HeaderValue::from_static(if deduplicated { "true" } else { "false" }),
    );
    Ok(response)
}

/// The 202 answer, serialized straight into the body: a like answers many
/// times a second, and building a `serde_json::Value` first (a map, a string
/// per key and for the token) cost more than reading the request.
#[derive(Serialize)]
struct Accepted {
    event_id: EventId,
    partition: i32,
    offset: i64,
    #[serde(serialize_with = "as_text")]
    token: Token,
    deduplicated: bool,
    /// Left out when the projection could not be asked in time.
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<i64>,
}

fn as_text<S: serde::Serializer>(token: &Token, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(token)
}

/// Publishes the event, unless the same action is the latest logged one and
/// was just answered. The memo is settled before the answer goes out, so a
/// request sent after this answer never sees an older memo.
async fn write(
    state: &State,
    action: Action,
    user: UserId,
    item: ItemKey,
    event_id: EventId,
    recalled: Recalled,
) -> Result<(Memo, bool), ApiError> {
    let marked = match recalled {
        Recalled::Answer(memo) => {
            observability::deduplicated();
            return Ok((memo, true));
        }
        Recalled::Produce { marked } => marked,
    };
    let event = LikeEvent {
        event_id,
        user_id: user,
        item,
        action,
        timestamp: chrono::Utc::now(),
    };
    let result = state.publisher.publish(&event).await;
    let settle = Settle {
        user,
        item,
        outcome: outcome(action, event_id, &result),
        marked,
    };
    state.protection.settle(&[settle]).await;
    let ack = result.map_err(|e| {
        tracing::warn!(error = %e, event_id = %event.event_id, "publish failed");
        publish_error(e, event_id)
    })?;
    observability::accepted(action, 1);
    Ok((
        Memo {
            action,
            event_id,
            ack,
        },
        false,
    ))
}

/// The projection's view before this write: the item's count and whether the
/// user likes it, from PostgreSQL (never older than Redis, which is written
/// after PostgreSQL commits) through the lookup batcher. Best effort and
/// bounded by the batcher's budget (`lookups::BUDGET`); `None` leaves
/// `count` out.
async fn projected(state: &State, user: UserId, item: ItemKey) -> Option<(i64, bool)> {
    state.lookups.state(user, item).await
}

/// The count the user should see now: the projected count with their own
/// pending change applied. Never written anywhere.
pub fn optimistic(action: Action, count: i64, liked: bool) -> i64 {
    match (action, liked) {
        (Action::Like, false) => count + 1,
        (Action::Unlike, true) => (count - 1).max(0),
        _ => count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_optimistic_count_moves_only_on_a_change_of_state() {
        assert_eq!(optimistic(Action::Like, 5, false), 6);
        assert_eq!(optimistic(Action::Like, 5, true), 5);
        assert_eq!(optimistic(Action::Unlike, 5, true), 4);
        assert_eq!(optimistic(Action::Unlike, 5, false), 5);
        assert_eq!(optimistic(Action::Unlike, 0, true), 0);
    }
}
