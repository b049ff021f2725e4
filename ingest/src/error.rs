//! The errors the API answers with, each mapped to a status and a stable code.

use likes_domain::ValidationError;
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
    /// The content type is not `application/json`.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// A batch holds more events than allowed.
    #[error("a batch holds at most {limit} events")]
    BatchTooLarge { limit: usize },
    /// The user sent more than the rate limit allows; retry after the delay.
    #[error("rate limit exceeded; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// Too many events wait for the broker: shed load at once.
    #[error("overloaded, retry later")]
    Overloaded,
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
            ApiError::Invalid(_) | ApiError::UnknownField { .. } | ApiError::MalformedJson(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::BatchTooLarge { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Overloaded | ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid_field",
            ApiError::UnknownField { .. } => "unknown_field",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::BatchTooLarge { .. } => "batch_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Overloaded => "overloaded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid(e) => Some(e.field),
            ApiError::UnknownField { name, .. } => Some(name),
            ApiError::BatchTooLarge { .. } => Some("events"),
            _ => None,
        }
    }

    /// The `Retry-After` (seconds) of an error worth retrying later.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some((*retry_after_secs).max(1)),
            ApiError::Overloaded | ApiError::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The error's JSON body: `{"code", "message", "field"?}`.
    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({"code": self.code(), "message": self.to_string()});
        if let Some(field) = self.field() {
            error["field"] = serde_json::json!(field);
        }
        error
    }
}
