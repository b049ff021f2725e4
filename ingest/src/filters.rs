//! Route matching: which request goes to which handler, and what it extracts.
//! Every response, error or not, passes through [`observability::observe`].
//!
//! Each handler's future is boxed where its route hands over. A request's
//! future is one value sized by the largest route's state (the publish
//! handler's alone is 2.6 KB), and it is moved whole when hyper takes it
//! and at the combinators' state changes: a profile of the single like
//! showed those copies in hyper's dispatch. Boxed, the chain moves a pointer
//! per route and pays one allocation per request.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::Filter;
use warp::http::{HeaderMap, header};

use crate::handlers::{batch, ops, read, write};
use crate::request::require_identity;
use crate::routes::{self, at, on};
use crate::{ApiError, State, observability, recover};
use likes_domain::Action;

/// Every route of the API, with errors rendered as JSON.
pub fn routes(
    state: Arc<State>,
    max_body_bytes: u64,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let like = at(routes::LIKE).and(action_body(Action::Like, state.clone(), max_body_bytes));
    let unlike_delete =
        at(routes::UNLIKE_DELETE).and(action_body(Action::Unlike, state.clone(), max_body_bytes));
    let unlike_post =
        at(routes::UNLIKE).and(action_body(Action::Unlike, state.clone(), max_body_bytes));
    let like_batch = at(routes::LIKE_BATCH)
        .and(warp::header::optional::<String>("content-type"))
        .and(identity_coding())
        .and(warp::body::content_length_limit(
            state.limits.max_batch_body_bytes,
        ))
        .and(body_bytes())
        .and(with_state(state.clone()))
        .and_then(|content_type, body, state| {
            Box::pin(batch::publish_batch(content_type, body, state))
        });
    let writes = like.or(unlike_delete).or(unlike_post).or(like_batch);

    let count = on(routes::COUNT)
        .map(two)
        .untuple_one()
        .and(params())
        .and(with_state(state.clone()))
        .and_then(|item_type, item_id, params, state| {
            Box::pin(read::count(item_type, item_id, params, state))
        });
    let counts = at(routes::COUNTS)
        .and(params())
        .and(with_state(state.clone()))
        .and_then(|params, state| Box::pin(read::counts(params, state)));
    let user_likes = on(routes::USER_LIKES)
        .map(three)
        .untuple_one()
        .and(with_state(state.clone()))
        .and_then(|user_id, item_type, item_id, state| {
            Box::pin(read::user_likes(user_id, item_type, item_id, state))
        });
    let liked_items = on(routes::USER_LIKED_ITEMS)
        .map(one)
        .and(params())
        .and(with_state(state.clone()))
        .and_then(|user_id, params, state| Box::pin(read::liked_items(user_id, params, state)));
    let likers = on(routes::LIKERS)
        .map(two)
        .untuple_one()
        .and(params())
        .and(with_state(state.clone()))
        .and_then(|item_type, item_id, params, state| {
            Box::pin(read::likers(item_type, item_id, params, state))
        });
    let reads = count.or(counts).or(user_likes).or(liked_items).or(likers);

    let healthz = at(routes::HEALTHZ).and_then(ops::healthz);
    let readyz = at(routes::READYZ)
        .and(with_state(state.clone()))
        .and_then(ops::readyz);
    let metrics = at(routes::METRICS)
        .and(with_state(state))
        .and_then(ops::metrics);
    let probes = healthz.or(readyz).or(metrics);

    writes
        .or(reads)
        .or(probes)
        .or(routes::unserved())
        .recover(recover::recover)
        .with(warp::log::custom(observability::observe))
}

/// The one `{name}` segment of a route that has one (by its template).
fn one(params: Vec<String>) -> String {
    params.into_iter().next().unwrap_or_default()
}

/// The two `{name}` segments of a route that has two (by its template).
fn two(params: Vec<String>) -> (String, String) {
    let mut it = params.into_iter();
    (it.next().unwrap_or_default(), it.next().unwrap_or_default())
}

/// The three `{name}` segments of a route that has three (by its template).
fn three(params: Vec<String>) -> (String, String, String) {
    let mut it = params.into_iter();
    (
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
        it.next().unwrap_or_default(),
    )
}

fn with_state(
    state: Arc<State>,
) -> impl Filter<Extract = (Arc<State>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The query string as a map (empty when there is none).
fn params() -> impl Filter<Extract = (HashMap<String, String>,), Error = warp::Rejection> + Clone {
    warp::query::<HashMap<String, String>>()
}

/// The body of a like or unlike, handed to the publishing handler.
fn action_body(
    action: Action,
    state: Arc<State>,
    max_body_bytes: u64,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    warp::any()
        .map(move || action)
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("idempotency-key"))
        .and(identity_coding())
        .and(warp::body::content_length_limit(max_body_bytes))
        .and(body_bytes())
        .and(with_state(state))
        .and_then(|action, content_type, key, body, state| {
            Box::pin(write::publish(action, content_type, key, body, state))
        })
}

/// Refuses a body in any content coding but `identity` (415), before it is
/// read: a gzip body is not decoded, and a plain body labelled gzip must not
/// pass as if the label were absent. Every `Content-Encoding` header counts.
fn identity_coding() -> impl Filter<Extract = (), Error = warp::Rejection> + Copy {
    warp::header::headers_cloned()
        .and_then(|headers: HeaderMap| async move {
            require_identity(headers.get_all(header::CONTENT_ENCODING).iter())
                .map_err(warp::reject::custom)
        })
        .untuple_one()
}

/// The whole body. A body the connection cuts short of its `Content-Length`
/// (or a malformed chunked body) is the client's fault: 400, not the 500 that
/// warp's own body filter leaves as an unknown rejection.
fn body_bytes() -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Copy {
    warp::body::stream().and_then(collect)
}

async fn collect<B: bytes::Buf>(
    stream: impl Stream<Item = Result<B, warp::Error>>,
) -> Result<Bytes, warp::Rejection> {
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::debug!(error = %e, "request body unreadable");
            warp::reject::custom(ApiError::IncompleteBody)
        })?;
        bytes::BufMut::put(&mut body, chunk);
    }
    Ok(body.freeze())
}
