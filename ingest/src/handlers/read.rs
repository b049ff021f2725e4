//! Reads of the projections: one count (optionally waiting for a write to be
//! projected), many counts at once, whether a user likes an item, and an
//! item's most recent likers.

use std::collections::HashMap;
use std::sync::Arc;

use likes_domain::ItemKey;
use likes_infra::postgres;
use serde_json::{Value, json};
use warp::http::StatusCode;
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

/// A store that failed: the client learns which, the log learns why.
fn unavailable(what: &str, e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, what, "read failed");
    ApiError::Unavailable(format!("{what} unavailable"))
}

/// GET an item's count: Redis first, PostgreSQL on a miss (refilling Redis;
/// a never-counted item's refill expires, see `CACHE_REFILL_TTL_SECONDS`).
/// With `after=<token>`, first waits (bounded) until the projector applied
/// that offset and then reads PostgreSQL, the committed truth.
#[tracing::instrument(skip_all, fields(%item_type, %item_id))]
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
        let stored = postgres::reads::count(&state.db, item)
            .await
            .map_err(|e| unavailable("count store", e))?;
        (stored.map_or(0, |(count, _)| count), "database")
    } else {
        cached_count(&state, item).await?
    };
    let body = json!({
        "item_type": item.item_type,
        "item_id": item.item_id,
        "count": count,
    });
    let response = with_header(json(&body, StatusCode::OK), "x-count-source", source);
    Ok(match included {
        Some(true) => with_header(response, "x-write-included", "true"),
        Some(false) => with_header(response, "x-write-included", "false"),
        None => response,
    })
}

async fn cached_count(state: &State, item: ItemKey) -> Result<(i64, &'static str), ApiError> {
    match state.cache.count(item).await {
        Ok(Some(count)) => return Ok((count, "cache")),
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "redis read failed, falling back to postgres"),
    }
    let stored = postgres::reads::count(&state.db, item)
        .await
        .map_err(|e| unavailable("count store", e))?;
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

/// GET many counts: one MGET, one PostgreSQL query for the misses, misses refilled.
#[tracing::instrument(skip_all)]
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
    if !misses.is_empty() {
        for (item, count, stamp) in postgres::reads::counts(&state.db, &misses)
            .await
            .map_err(|e| unavailable("count store", e))?
        {
            stored.insert(item, (count, stamp));
        }
        let refill: Vec<(ItemKey, Option<(i64, i64)>)> = misses
            .iter()
            .map(|item| (*item, stored.get(item).copied()))
            .collect();
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
                Some(count) => (count, "cache"),
                None => (stored.get(item).map_or(0, |(c, _)| *c), "database"),
            };
            json!({
                "item_type": item.item_type,
                "item_id": item.item_id,
                "count": count,
                "source": source,
            })
        })
        .collect();
    Ok(json(&json!({ "counts": counts }), StatusCode::OK))
}

/// GET whether a user likes an item, from PostgreSQL.
#[tracing::instrument(skip_all, fields(%item_type, %item_id))]
pub async fn user_likes(
    user_id: String,
    item_type: String,
    item_id: String,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    let user = query::user_path(&user_id)?;
    let item = parse_item_path(&item_type, &item_id)?;
    let liked = postgres::reads::likes(&state.db, user, item)
        .await
        .map_err(|e| unavailable("like store", e))?;
    let body = json!({
        "user_id": user,
        "item_type": item.item_type,
        "item_id": item.item_id,
        "liked": liked,
    });
    Ok(json(&body, StatusCode::OK))
}

/// GET an item's most recent likers, newest first, from Redis.
#[tracing::instrument(skip_all, fields(%item_type, %item_id))]
pub async fn likers(
    item_type: String,
    item_id: String,
    params: HashMap<String, String>,
    state: Arc<State>,
) -> Result<Response, warp::Rejection> {
    let item = parse_item_path(&item_type, &item_id)?;
    query::only(&params, &["limit"], "limit")?;
    let limit = query::limit(&params, DEFAULT_LIKERS, MAX_LIKERS)?;
    let likers = state
        .likers
        .recent(item, limit)
        .await
        .map_err(|e| unavailable("likers projection", e))?;
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
