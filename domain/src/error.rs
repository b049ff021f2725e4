//! The one error type of the domain: a value that failed validation, naming the field.

/// A value that is not acceptable for the field it was given for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The name of the offending field as clients spell it (`user_id`, `item_type`, ...).
    pub field: &'static str,
    /// What is wrong with it, in words a client can act on.
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
