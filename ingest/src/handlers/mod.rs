//! Request handlers: validate, act, answer. Errors are returned as rejections
//! carrying an [`ApiError`] and rendered by [`crate::recover`]. Writes live in
//! [`write`] and [`batch`], reads in [`read`], probes and metrics in [`ops`].

pub mod batch;
pub mod ops;
pub mod read;
pub mod write;

use serde::Serialize;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// A JSON answer with a status.
pub(crate) fn json(body: &impl Serialize, status: StatusCode) -> Response {
    warp::reply::with_status(warp::reply::json(body), status).into_response()
}

/// Adds a header whose value is known to be valid ASCII.
pub(crate) fn with_header(mut response: Response, name: &'static str, value: &str) -> Response {
    if let Ok(value) = warp::http::HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
}
