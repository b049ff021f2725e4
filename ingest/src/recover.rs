//! The one place where rejections become responses: every error, ours or
//! warp's, is answered as `{"error": {"code", "message", "field"?}}`.

use std::convert::Infallible;

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use crate::{ApiError, observability};

/// Renders any rejection as a JSON error with the right status.
pub async fn recover(rejection: warp::Rejection) -> Result<Response, Infallible> {
    let mut retry_after = None;
    let mut event_id = None;
    let (status, code, message, field) = if let Some(e) = rejection.find::<ApiError>() {
        if let ApiError::Internal(detail) = e {
            tracing::error!(%detail, "internal error");
        }
        retry_after = e.retry_after();
        event_id = e.event_id();
        (
            e.status(),
            e.code(),
            e.to_string(),
            e.field().map(str::to_string),
        )
    } else if rejection.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_string(),
            None,
        )
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        let message = "method not allowed on this route".to_string();
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            message,
            None,
        )
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        let message = "request body too large".to_string();
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            message,
            None,
        )
    } else if rejection.find::<warp::reject::LengthRequired>().is_some() {
        let message = "a content-length header is required".to_string();
        (
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            message,
            None,
        )
    } else if rejection
        .find::<warp::reject::UnsupportedMediaType>()
        .is_some()
    {
        let e = ApiError::UnsupportedMediaType;
        (e.status(), e.code(), e.to_string(), None)
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        let message = format!("invalid header {}", e.name());
        (
            StatusCode::BAD_REQUEST,
            "invalid_header",
            message,
            Some(e.name().to_string()),
        )
    } else if rejection.find::<warp::reject::InvalidQuery>().is_some() {
        let message = "malformed query string".to_string();
        (StatusCode::BAD_REQUEST, "invalid_query", message, None)
    } else {
        tracing::error!(?rejection, "unhandled rejection");
        let message = "internal error".to_string();
        (StatusCode::INTERNAL_SERVER_ERROR, "internal", message, None)
    };
    let mut error = json!({"code": code, "message": message});
    if let Some(field) = field {
        error["field"] = json!(field);
    }
    if let Some(event_id) = event_id {
        error["event_id"] = json!(event_id.to_string());
    }
    let mut response =
        warp::reply::with_status(warp::reply::json(&json!({ "error": error })), status)
            .into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        retry_after = retry_after.or(Some(1));
    }
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", warp::http::HeaderValue::from(seconds));
    }
    if status.is_client_error() || status.is_server_error() {
        observability::rejected(code);
    }
    Ok(response)
}
