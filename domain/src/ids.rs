//! Newtypes for the identifiers of the model. Each can only be built through
//! `parse`, so a value of one of these types is valid by construction.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ValidationError;

/// A user who likes things: a positive 64-bit id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserId(i64);

/// The id of an item within its type: a positive 64-bit id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemId(i64);

/// The kind of item (post, comment, photo, ...): 1 to 32767, so it fits a SQL `smallint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemType(i32);

/// An item is identified by its type and its id together; counts are kept per item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ItemKey {
    pub item_type: ItemType,
    pub item_id: ItemId,
}

/// The identity of one like or unlike request; retries of the same request carry the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

fn positive(field: &'static str, value: i64) -> Result<i64, ValidationError> {
    if value > 0 {
        Ok(value)
    } else {
        Err(ValidationError::new(field, "must be a positive integer"))
    }
}

impl UserId {
    /// Accepts any positive id.
    pub fn parse(value: i64) -> Result<Self, ValidationError> {
        positive("user_id", value).map(Self)
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

impl ItemId {
    /// Accepts any positive id.
    pub fn parse(value: i64) -> Result<Self, ValidationError> {
        positive("item_id", value).map(Self)
    }
    pub fn get(self) -> i64 {
        self.0
    }
}

impl ItemType {
    /// The largest item type; types are stored as SQL `smallint`.
    pub const MAX: i32 = i16::MAX as i32;

    /// Accepts 1 to [`ItemType::MAX`].
    pub fn parse(value: i64) -> Result<Self, ValidationError> {
        if (1..=i64::from(Self::MAX)).contains(&value) {
            Ok(Self(value as i32))
        } else {
            Err(ValidationError::new(
                "item_type",
                format!("must be an integer from 1 to {}", Self::MAX),
            ))
        }
    }
    pub fn get(self) -> i32 {
        self.0
    }
}

impl ItemKey {
    /// Validates both parts of an item's identity.
    pub fn parse(item_type: i64, item_id: i64) -> Result<Self, ValidationError> {
        Ok(Self {
            item_type: ItemType::parse(item_type)?,
            item_id: ItemId::parse(item_id)?,
        })
    }
}

impl fmt::Display for ItemKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.item_type.0, self.item_id.0)
    }
}

impl EventId {
    /// A fresh, time-ordered (v7) id for a request that did not bring its own.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses a client-supplied UUID in any standard text form; the nil UUID is refused
    /// because clients that forget to set an id tend to send it.
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let uuid = Uuid::parse_str(value)
            .map_err(|_| ValidationError::new("event_id", "must be a UUID"))?;
        Self::from_uuid(uuid)
    }

    /// Wraps an already-decoded UUID, refusing the nil UUID.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, ValidationError> {
        if uuid.is_nil() {
            Err(ValidationError::new("event_id", "must not be the nil UUID"))
        } else {
            Ok(Self(uuid))
        }
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_positive() {
        assert!(UserId::parse(1).is_ok());
        assert_eq!(UserId::parse(0).unwrap_err().field, "user_id");
        assert_eq!(ItemId::parse(-5).unwrap_err().field, "item_id");
        assert_eq!(ItemId::parse(i64::MAX).unwrap().get(), i64::MAX);
    }

    #[test]
    fn item_type_is_bounded_to_a_smallint() {
        assert!(ItemType::parse(1).is_ok());
        assert!(ItemType::parse(32_767).is_ok());
        assert_eq!(ItemType::parse(0).unwrap_err().field, "item_type");
        assert_eq!(ItemType::parse(32_768).unwrap_err().field, "item_type");
        assert_eq!(ItemType::parse(i64::MAX).unwrap_err().field, "item_type");
    }

    #[test]
    fn event_id_refuses_garbage_and_nil() {
        assert!(EventId::parse("0194e4c4-6f5c-7d2a-9a4e-2f6f3c1a9b10").is_ok());
        assert_eq!(EventId::parse("nope").unwrap_err().field, "event_id");
        assert!(EventId::parse("00000000-0000-0000-0000-000000000000").is_err());
    }

    #[test]
    fn generated_event_ids_differ() {
        assert_ne!(EventId::generate(), EventId::generate());
    }
}
