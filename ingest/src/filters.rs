//! Route matching: which request goes to which handler, and what it extracts.
//! Every response, error or not, passes through [`observability::observe`].

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::Filter;
use warp::http::{HeaderMap, Method, header};

use crate::handlers::{batch, ops, read, write};
use crate::request::require_identity;
use crate::{ApiError, State, observability, recover};
use likes_domain::Action;

/// Every route of the API, with errors rendered as JSON.
pub fn routes(
    state: Arc<State>,
    max_body_bytes: u64,
) -> impl Filter<Extract = (impl warp::Reply,), Error = std::convert::Infallible> + Clone {
    let likes = warp::path!("v1" / "likes");
    let like =
        likes
            .and(warp::post())
            .and(action_body(Action::Like, state.clone(), max_body_bytes));
    let unlike_delete = likes
        .and(warp::method())
        .and_then(|m: Method| async move {
            if m == Method::DELETE {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(action_body(Action::Unlike, state.clone(), max_body_bytes));
    let unlike_post = warp::path!("v1" / "unlikes")
        .and(warp::post())
        .and(action_body(Action::Unlike, state.clone(), max_body_bytes));
    // The colon makes `likes:batch` one path segment, matched whole.
    let like_batch = warp::path("v1")
        .and(warp::path("likes:batch"))
        .and(warp::path::end())
        .and(warp::post())
        .and(warp::header::optional::<String>("content-type"))
        .and(identity_coding())
        .and(warp::body::content_length_limit(
            state.limits.max_batch_body_bytes,
        ))
        .and(body_bytes())
        .and(with_state(state.clone()))
        .and_then(batch::publish_batch);
    let writes = like.or(unlike_delete).or(unlike_post).or(like_batch);

    let count = warp::path!("v1" / "items" / String / String / "count")
        .and(warp::get())
        .and(params())
        .and(with_state(state.clone()))
        .and_then(read::count);
    let counts = warp::path!("v1" / "counts")
        .and(warp::get())
        .and(params())
        .and(with_state(state.clone()))
        .and_then(read::counts);
    let user_likes = warp::path!("v1" / "users" / String / "likes" / String / String)
        .and(warp::get())
        .and(with_state(state.clone()))
        .and_then(read::user_likes);
    let likers = warp::path!("v1" / "items" / String / String / "likers")
        .and(warp::get())
        .and(params())
        .and(with_state(state.clone()))
        .and_then(read::likers);
    let reads = count.or(counts).or(user_likes).or(likers);

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and_then(ops::healthz);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state(state.clone()))
        .and_then(ops::readyz);
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .and_then(ops::metrics);
    let probes = healthz.or(readyz).or(metrics);

    writes
        .or(reads)
        .or(probes)
        .recover(recover::recover)
        .with(warp::log::custom(observability::observe))
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
        .and_then(write::publish)
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
