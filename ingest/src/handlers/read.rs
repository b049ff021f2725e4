//! Reads of the projections: one count (optionally waiting for a write to be
//! projected), many counts at once, whether a user likes an item, the items a
//! user likes, and an item's most recent likers. PostgreSQL is read through
//! [`crate::projection`]: each item on its shard.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use likes_domain::{ItemId, ItemKey, ItemType};
use serde::Serialize;
use serde_json::{Value, json};
use warp::http::{HeaderValue, StatusCode};
use warp::reply::Response;

use super::{json, with_header};
use crate::query::{self, Token};
use crate::request::parse_item_path;
use crate::{ApiError, State};

/// The most items `GET /v1/counts` takes.
pub const MAX_ITEMS: usize = 1000;
/// The most likers one request may ask for (and the default).
pub const MAX_LIKERS: usize = 100;
const DEFAULT_LIKERS: usize = 20;
/// The most likes of a user one page holds, and the default.
pub const MAX_LIKED_ITEMS: usize = 100;
const DEFAULT_LIKED_ITEMS: usize = 20;

/// How a count is answered in `GET /v1/counts` when its shard did not answer.
const UNAVAILABLE: &str = "unavailable";

/// GET an item's count: Redis first, PostgreSQL on a miss (refilling Redis;
/// a never-counted item's refill expires, see `CACHE_REFILL_TTL_SECONDS`).
/// With `after=<token>`, first waits (bounded) until the projector applied
/// that offset and then reads PostgreSQL, the committed truth.
#[tracing::instrument(level = "debug", skip_all, fields(%item_type, %item_id))]
pub async fn count(
    item_type: String,
    item_id: String,
    params: HashMap<String, String>,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    let item = parse_item_path(&item_type, &item_id)?;
    query::only(&params, &["after"], "after")?;
    let token = query::token(&params)?;
    let included = match token {
        Some(token) => Some(wait_applied(&state, token).await?),
        None => None,
    };
    let (count, source) = if included == Some(true) {
        let stored = state
            .projection
            .count(item)
            .await
            .map_err(|e| state.projection.unavailable("count store", &[&e]))?;
        (stored.map_or(0, |(count, _)| count), "database")
    } else {
        cached_count(&state, item).await?
    };
    let through = projected_through(&state, item);
    let body = Count {
        item_type: item.item_type,
        item_id: item.item_id,
        count,
        projected_through: through.as_deref(),
    };
    let mut response = json(&body, StatusCode::OK);
    let headers = response.headers_mut();
    headers.insert("x-count-source", HeaderValue::from_static(source));
    if let Some(included) = included {
        let included = if included { "true" } else { "false" };
        headers.insert("x-write-included", HeaderValue::from_static(included));
    }
    if let Some(through) = &through {
        response = with_header(response, "x-projected-through", through);
    }
    Ok(response)
}

/// One count's answer, serialized straight into the body (the hottest read:
/// no `serde_json::Value` built first).
#[derive(Serialize)]
struct Count<'a> {
    item_type: ItemType,
    item_id: ItemId,
    count: i64,
    projected_through: Option<&'a str>,
}

/// The time up to which `item`'s partition is projected (RFC 3339, ms), if known.
fn projected_through(state: &State, item: ItemKey) -> Option<String> {
    state
        .freshness
        .projected_through(item.item_id.get())
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

async fn cached_count(state: &State, item: ItemKey) -> Result<(i64, &'static str), ApiError> {
    match state.cache.count(item).await {
        Ok(Some(count)) => return Ok((count, "cache")),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "redis read failed, falling back to postgres"),
    }
    let stored = state
        .projection
        .count(item)
        .await
        .map_err(|e| state.projection.unavailable("count store", &[&e]))?;
    if let Err(e) = state
        .cache
        .refill_counts(&[(item, stored)], state.limits.cache_refill_ttl)
        .await
    {
        tracing::warn!(error = %e, "redis refill failed");
    }
    let count = stored.map_or(0, |(count, _)| count);
    Ok((count, "database"))
}

/// Whether the projector applied `token`'s offset within the bounded wait
/// (one shared poller, a capped number of waiters: see [`crate::progress`]).
async fn wait_applied(state: &State, token: Token) -> Result<bool, ApiError> {
    state.progress.check(&state.publisher, token).await?;
    state
        .progress
        .wait(token, state.limits.read_your_writes_timeout)
        .await
}

/// GET many counts: one MGET, then one PostgreSQL query per shard for the
/// misses (the shards asked at once), misses refilled. A shard that does not
/// answer leaves its misses without a count (`"count": null, "source":
/// "unavailable"`, and `Retry-After` on the answer) while the others are
/// answered; when no shard asked answers, the whole request is 503 (as with
/// one shard down).
#[tracing::instrument(level = "debug", skip_all)]
pub async fn counts(
    params: HashMap<String, String>,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    query::only(&params, &["items"], "items")?;
    let items = query::items(&params, MAX_ITEMS)?;
    let cached = state.cache.counts(&items).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "redis read failed, falling back to postgres");
        vec![None; items.len()]
    });
    let misses: Vec<ItemKey> = items
        .iter()
        .zip(&cached)
        .filter(|(_, c)| c.is_none())
        .map(|(item, _)| *item)
        .collect();
    let mut stored: HashMap<ItemKey, (i64, i64)> = HashMap::new();
    let mut unanswered: HashSet<ItemKey> = HashSet::new();
    if !misses.is_empty() {
        let answers = state.projection.counts(&misses).await;
        let asked = answers.len();
        let mut failed = Vec::new();
        let mut refill: Vec<(ItemKey, Option<(i64, i64)>)> = Vec::new();
        for answer in &answers {
            match &answer.rows {
                Ok(rows) => {
                    for (item, count, stamp) in rows {
                        stored.insert(*item, (*count, *stamp));
                    }
                    refill.extend(answer.items.iter().map(|i| (*i, stored.get(i).copied())));
                }
                Err(e) => {
                    unanswered.extend(answer.items.iter().copied());
                    failed.push(e);
                }
            }
        }
        if failed.len() == asked {
            return Err(state.projection.unavailable("count store", &failed).into());
        }
        // The answer says which items went without a count.
        state.projection.log_failed("count store", &failed);
        if let Err(e) = state
            .cache
            .refill_counts(&refill, state.limits.cache_refill_ttl)
            .await
        {
            tracing::warn!(error = %e, "redis refill failed");
        }
    }
    let counts: Vec<Value> = items
        .iter()
        .zip(cached)
        .map(|(item, cached)| {
            let (count, source) = match cached {
                Some(count) => (Some(count), "cache"),
                None if unanswered.contains(item) => (None, UNAVAILABLE),
                None => (Some(stored.get(item).map_or(0, |(c, _)| *c)), "database"),
            };
            json!({
                "item_type": item.item_type,
                "item_id": item.item_id,
                "count": count,
                "source": source,
                "projected_through": projected_through(&state, *item),
            })
        })
        .collect();
    let response = json(&json!({ "counts": counts }), StatusCode::OK);
    Ok(if unanswered.is_empty() {
        response
    } else {
        with_header(response, "retry-after", "1")
    })
}

/// GET whether a user likes an item, from PostgreSQL.
#[tracing::instrument(level = "debug", skip_all, fields(%item_type, %item_id))]
pub async fn user_likes(
    user_id: String,
    item_type: String,
    item_id: String,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    let user = query::user_path(&user_id)?;
    let item = parse_item_path(&item_type, &item_id)?;
    let liked = state
        .projection
        .likes(user, item)
        .await
        .map_err(|e| state.projection.unavailable("like store", &[&e]))?;
    let body = json!({
        "user_id": user,
        "item_type": item.item_type,
        "item_id": item.item_id,
        "liked": liked,
    });
    Ok(json(&body, StatusCode::OK))
}

/// GET the items a user likes, newest first, a page at a time: every shard
/// is asked for its first `limit + 1` after the cursor (one indexed query
/// each, all at once) and the answers are merged by time. A page needs every
/// shard's part, so any shard not answering makes it a 503.
#[tracing::instrument(level = "debug", skip_all)]
pub async fn liked_items(
    user_id: String,
    params: HashMap<String, String>,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    let user = query::user_path(&user_id)?;
    query::only(
        &params,
        &["item_type", "limit", "cursor"],
        "item_type, limit, cursor",
    )?;
    let item_type = query::item_type(&params)?;
    let limit = query::limit(&params, DEFAULT_LIKED_ITEMS, MAX_LIKED_ITEMS)?;
    let after = query::cursor(&params)?;
    let (page, more) = state
        .projection
        .liked_items(user, item_type, after, limit)
        .await
        .map_err(|failed| {
            let failed: Vec<_> = failed.iter().collect();
            state.projection.unavailable("like store", &failed)
        })?;
    let next_cursor = page.last().filter(|_| more).map(query::cursor_after);
    let likes: Vec<Value> = page
        .iter()
        .map(|l| {
            json!({
                "item_type": l.item.item_type,
                "item_id": l.item.item_id,
                "liked_at": l.liked_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            })
        })
        .collect();
    let body = json!({
        "user_id": user,
        "likes": likes,
        "next_cursor": next_cursor,
    });
    Ok(json(&body, StatusCode::OK))
}

/// GET an item's most recent likers, newest first, from Redis.
#[tracing::instrument(level = "debug", skip_all, fields(%item_type, %item_id))]
pub async fn likers(
    item_type: String,
    item_id: String,
    params: HashMap<String, String>,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    let item = parse_item_path(&item_type, &item_id)?;
    query::only(&params, &["limit"], "limit")?;
    let limit = query::limit(&params, DEFAULT_LIKERS, MAX_LIKERS)?;
    let likers = state.likers.recent(item, limit).await.map_err(|e| {
        tracing::warn!(error = %e, "likers read failed");
        ApiError::Unavailable("likers projection unavailable".into())
    })?;
    let likers: Vec<Value> = likers
        .into_iter()
        .map(|l| {
            let at = chrono::DateTime::from_timestamp_millis(l.liked_at_ms)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            json!({"user_id": l.user_id, "liked_at": at})
        })
        .collect();
    let body = json!({
        "item_type": item.item_type,
        "item_id": item.item_id,
        "likers": likers,
    });
    Ok(json(&body, StatusCode::OK))
}
