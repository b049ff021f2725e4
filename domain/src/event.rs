//! The event that is the source of truth: one user liking or unliking one item.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{EventId, ItemKey, UserId, ValidationError};

/// What the user did. Its names on every wire live here: the Avro enum's
/// symbol and position ([`Action::symbol`], [`Action::ordinal`]) and the word
/// clients send and metrics show ([`Action::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Like,
    Unlike,
}

impl Action {
    /// The position of this action's symbol in the Avro enum (what the binary
    /// encoding writes).
    pub fn ordinal(self) -> u32 {
        match self {
            Action::Like => 0,
            Action::Unlike => 1,
        }
    }

    /// The word the HTTP API and the metrics use.
    pub fn name(self) -> &'static str {
        match self {
            Action::Like => "like",
            Action::Unlike => "unlike",
        }
    }

    /// Reads the word the HTTP API uses.
    pub fn from_name(name: &str) -> Option<Self> {
        [Action::Like, Action::Unlike]
            .into_iter()
            .find(|a| a.name() == name)
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_reads_back_from_its_name_and_its_symbol() {
        for action in [Action::Like, Action::Unlike] {
            assert_eq!(Action::from_name(action.name()), Some(action));
            assert_eq!(Action::from_symbol(action.symbol()).ok(), Some(action));
        }
        assert_eq!(Action::from_name("LIKE"), None);
        assert_ne!(Action::Like.ordinal(), Action::Unlike.ordinal());
    }
}
