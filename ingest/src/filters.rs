//! Route matching: which request goes to which handler, and what it extracts.

use std::sync::Arc;

use warp::Filter;
use warp::http::Method;

use crate::{State, handlers, recover};
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
    let count = warp::path!("v1" / "items" / String / String / "count")
        .and(warp::get())
        .and(with_state(state))
        .and_then(handlers::count);
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})));

    like.or(unlike_delete)
        .or(unlike_post)
        .or(count)
        .or(healthz)
        .recover(recover::recover)
}

fn with_state(
    state: Arc<State>,
) -> impl Filter<Extract = (Arc<State>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
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
        .and(warp::body::content_length_limit(max_body_bytes))
        .and(warp::body::bytes())
        .and(with_state(state))
        .and_then(handlers::publish)
}
