//! The event that is the source of truth: one user liking or unliking one item.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{EventId, ItemKey, UserId, ValidationError};

/// What the user did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Like,
    Unlike,
}

impl Action {
    /// The Avro enum symbol of this action.
    pub fn symbol(self) -> &'static str {
        match self {
            Action::Like => "LIKE",
            Action::Unlike => "UNLIKE",
        }
    }

    /// Reads an Avro enum symbol.
    pub fn from_symbol(symbol: &str) -> Result<Self, ValidationError> {
        match symbol {
            "LIKE" => Ok(Action::Like),
            "UNLIKE" => Ok(Action::Unlike),
            _ => Err(ValidationError::new("action", "must be LIKE or UNLIKE")),
        }
    }
}

/// One like or unlike, as stored in the `like-events` topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikeEvent {
    pub event_id: EventId,
    pub user_id: UserId,
    pub item: ItemKey,
    pub action: Action,
    /// When the service accepted the request (millisecond precision on the wire).
    pub timestamp: DateTime<Utc>,
}

/// Where an event sits in the log: its partition and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    pub partition: i32,
    pub offset: i64,
}
