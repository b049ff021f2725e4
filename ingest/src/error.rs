//! The errors the API answers with, each mapped to a status and a stable code.

use likes_domain::{EventId, ValidationError};
use warp::http::StatusCode;

/// An error that ends a request; [`crate::recover`] renders it as
/// `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field is missing, of the wrong type or out of range.
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    /// The body has a field the API does not know (typos must not pass silently).
    #[error("unknown field {name:?}; allowed: {allowed}")]
    UnknownField { name: String, allowed: &'static str },
    /// The body is not JSON (or not an object).
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// The path is served, but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// The content type is not `application/json`.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// The body is labelled with a content coding (`gzip`, ...) the API does
    /// not decode: reading it as plain JSON would accept what was not meant.
    #[error("content coding {coding:?} is not supported; send the body unencoded (identity)")]
    UnsupportedContentEncoding { coding: String },
    /// The connection ended before the body reached its `Content-Length`
    /// (or the chunked body was malformed): the client's request is cut short.
    #[error("the request body ended before its declared length")]
    IncompleteBody,
    /// A batch holds more events than allowed.
    #[error("a batch holds at most {limit} events")]
    BatchTooLarge { limit: usize },
    /// The user sent more than the rate limit allows; retry after the delay.
    #[error("rate limit exceeded; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Too many events wait for the broker: shed load at once.
    #[error("overloaded, retry later")]
    Overloaded,
    /// The broker did not acknowledge in time: the event may still be logged,
    /// so the client retries with this event id (given back in the body).
    #[error("the event log did not acknowledge in time; retry with the same event_id")]
    NotAcked { event_id: EventId },
    /// The broker is slow or away; retry later with the same event id.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: a bug or a broken invariant.
    #[error("internal error")]
    Internal(String),
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    /// A field that is required and absent.
    pub fn missing(field: &'static str) -> Self {
        ApiError::Invalid(ValidationError {
            field,
            message: "is required".into(),
        })
    }

    /// A field of the wrong JSON type.
    pub fn wrong_type(field: &'static str, expected: &str) -> Self {
        ApiError::Invalid(ValidationError {
            field,
            message: format!("must be {expected}"),
        })
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid(_)
            | ApiError::UnknownField { .. }
            | ApiError::MalformedJson(_)
            | ApiError::IncompleteBody => StatusCode::BAD_REQUEST,
            ApiError::BatchTooLarge { .. } => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::UnsupportedMediaType | ApiError::UnsupportedContentEncoding { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded | ApiError::NotAcked { .. } | ApiError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid_field",
            ApiError::UnknownField { .. } => "unknown_field",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::UnsupportedContentEncoding { .. } => "unsupported_content_encoding",
            ApiError::IncompleteBody => "incomplete_body",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded => "overloaded",
            ApiError::NotAcked { .. } | ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid(e) => Some(e.field),
            ApiError::UnknownField { name, .. } => Some(name),
            ApiError::BatchTooLarge { .. } => Some("events"),
            ApiError::UnsupportedContentEncoding { .. } => Some("Content-Encoding"),
            ApiError::IncompleteBody => Some("Content-Length"),
            _ => None,
        }
    }

    /// The `Retry-After` (seconds) of an error worth retrying later.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some((*retry_after_secs).max(1)),
            ApiError::Overloaded | ApiError::NotAcked { .. } | ApiError::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The event id to retry with, when the event may have been logged.
    pub fn event_id(&self) -> Option<EventId> {
        match self {
            ApiError::NotAcked { event_id } => Some(*event_id),
            _ => None,
        }
    }

    /// The error's JSON body: `{"code", "message", "field"?, "event_id"?}`.
    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({"code": self.code(), "message": self.to_string()});
        if let Some(field) = self.field() {
            error["field"] = serde_json::json!(field);
        }
        if let Some(event_id) = self.event_id() {
            error["event_id"] = serde_json::json!(event_id.to_string());
        }
        error
    }
}
