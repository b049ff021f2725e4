//! The typed reader of one like/unlike object, shared by the single-like body
//! and each event of a batch: `{action?, user_id, item_id, item_type, event_id?}`.
//!
//! Fields are recorded as they stream by and judged once the object ends, in
//! the documented order, so the error a client gets does not depend on the
//! order of its keys; a repeated key replaces the earlier value.

use likes_domain::{Action, EventId, ItemKey, UserId};
use serde::de::MapAccess;

use super::LikeRequest;
use super::json::{Read, Reader, Scalar, Scalars, Skip};
use crate::ApiError;

/// Which object is read: whether it carries `action`, and how errors word it.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Whether `action` is a field (batch events) or an unknown key (single like).
    pub action: bool,
    /// The allowed keys, as an unknown-key error lists them.
    pub listed: &'static str,
    /// The message for a value that is not an object.
    pub not_object: &'static str,
}

enum Field {
    Action,
    UserId,
    ItemId,
    ItemType,
    EventId,
}

/// One field as read: `None` when absent or `null`.
type Slot<T> = Option<Result<T, ApiError>>;

/// The fields of one object, read but not yet judged.
pub struct Fields {
    /// The allowed keys, as an unknown-key error lists them.
    listed: &'static str,
    /// The unknown key reported: the first in byte order, as the sorted map
    /// the body was once parsed into reported it.
    unknown: Option<String>,
    action: Slot<Action>,
    user_id: Slot<i64>,
    item_id: Slot<i64>,
    item_type: Slot<i64>,
    event_id: Slot<EventId>,
}

impl Fields {
    fn new(listed: &'static str) -> Self {
        Self {
            listed,
            unknown: None,
            action: None,
            user_id: None,
            item_id: None,
            item_type: None,
            event_id: None,
        }
    }

    /// The object as a like request: an unknown key first, then `user_id`,
    /// `item_type`, `item_id` and `event_id`.
    pub fn like_request(mut self) -> Result<LikeRequest, ApiError> {
        self.known_only()?;
        self.request()
    }

    /// The object as a batch event: an unknown key first, then `action`,
    /// then as [`Fields::like_request`].
    pub fn batch_event(mut self) -> Result<(Action, LikeRequest), ApiError> {
        self.known_only()?;
        let action = required(self.action.take(), "action")?;
        Ok((action, self.request()?))
    }

    fn known_only(&mut self) -> Result<(), ApiError> {
        match self.unknown.take() {
            Some(name) => Err(ApiError::UnknownField {
                name,
                allowed: self.listed,
            }),
            None => Ok(()),
        }
    }

    fn request(self) -> Result<LikeRequest, ApiError> {
        let user_id = UserId::parse(required(self.user_id, "user_id")?)?;
        let item_type = required(self.item_type, "item_type")?;
        let item_id = required(self.item_id, "item_id")?;
        Ok(LikeRequest {
            user_id,
            item: ItemKey::parse(item_type, item_id)?,
            event_id: self.event_id.transpose()?,
        })
    }
}

fn required<T>(slot: Slot<T>, field: &'static str) -> Result<T, ApiError> {
    slot.unwrap_or_else(|| Err(ApiError::missing(field)))
}

fn integer(field: &'static str, value: Scalar<'_>) -> Slot<i64> {
    match value {
        Scalar::Null => None,
        Scalar::Integer(n) => Some(Ok(n)),
        Scalar::Number => Some(Err(ApiError::wrong_type(
            field,
            "an integer within 64 bits",
        ))),
        Scalar::Str(_) | Scalar::Other => Some(Err(ApiError::wrong_type(field, "an integer"))),
    }
}

/// Reads the value of an integer field.
fn next_integer<'de, A: MapAccess<'de>>(
    map: &mut A,
    field: &'static str,
) -> Result<Slot<i64>, A::Error> {
    map.next_value_seed(Read(Scalars(|v: Scalar<'_>| integer(field, v))))
}

fn action(value: Scalar<'_>) -> Slot<Action> {
    let name = match value {
        Scalar::Null => return None,
        Scalar::Str(name) => Action::from_name(name),
        _ => None,
    };
    Some(name.ok_or_else(|| ApiError::wrong_type("action", "\"like\" or \"unlike\"")))
}

fn event_id(value: Scalar<'_>) -> Slot<EventId> {
    match value {
        Scalar::Null => None,
        Scalar::Str(s) => Some(EventId::parse(s).map_err(ApiError::from)),
        _ => Some(Err(ApiError::wrong_type("event_id", "a UUID string"))),
    }
}

/// Keeps the first unknown key in byte order, allocating only for a new first.
pub fn note_unknown(unknown: &mut Option<String>, key: &str) {
    if unknown.as_deref().is_none_or(|first| key < first) {
        *unknown = Some(key.to_owned());
    }
}

/// Reads one object of `shape`; anything else is `MalformedJson`.
pub struct LikeObject(pub Shape);

impl<'de> Reader<'de> for LikeObject {
    type Value = Result<Fields, ApiError>;

    fn scalar(self, _: Scalar<'_>) -> Self::Value {
        Err(ApiError::MalformedJson(self.0.not_object.into()))
    }

    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let with_action = self.0.action;
        let mut fields = Fields::new(self.0.listed);
        loop {
            let unknown = &mut fields.unknown;
            let key = map.next_key_seed(Read(Scalars(|key: Scalar<'_>| {
                // JSON keys are always strings.
                let Scalar::Str(key) = key else {
                    return None;
                };
                match key {
                    "action" if with_action => Some(Field::Action),
                    "user_id" => Some(Field::UserId),
                    "item_id" => Some(Field::ItemId),
                    "item_type" => Some(Field::ItemType),
                    "event_id" => Some(Field::EventId),
                    _ => {
                        note_unknown(unknown, key);
                        None
                    }
                }
            })))?;
            let Some(key) = key else {
                break;
            };
            match key {
                Some(Field::Action) => {
                    fields.action = map.next_value_seed(Read(Scalars(action)))?
                }
                Some(Field::UserId) => fields.user_id = next_integer(&mut map, "user_id")?,
                Some(Field::ItemId) => fields.item_id = next_integer(&mut map, "item_id")?,
                Some(Field::ItemType) => fields.item_type = next_integer(&mut map, "item_type")?,
                Some(Field::EventId) => {
                    fields.event_id = map.next_value_seed(Read(Scalars(event_id)))?
                }
                None => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(Ok(fields))
    }
}
