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
    #[error("unknown field {0:?}; allowed: user_id, item_id, item_type, event_id")]
    UnknownField(String),
    /// The body is not JSON (or not an object).
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    /// The content type is not `application/json`.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
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
            ApiError::Invalid(_) | ApiError::UnknownField(_) | ApiError::MalformedJson(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid(_) => "invalid_field",
            ApiError::UnknownField(_) => "unknown_field",
            ApiError::MalformedJson(_) => "malformed_json",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            ApiError::Invalid(e) => Some(e.field),
            ApiError::UnknownField(name) => Some(name),
            _ => None,
        }
    }
}
