//! Turning request bodies and path segments into validated domain values.
//! Unknown fields are rejected (400 naming the field) so a typo such as
//! `itemid` never silently becomes "missing".

use likes_domain::{EventId, ItemKey, UserId};
use serde_json::{Map, Value};

use crate::ApiError;

/// A validated like or unlike request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikeRequest {
    pub user_id: UserId,
    pub item: ItemKey,
    /// The client's own id for the request, making retries idempotent.
    pub event_id: Option<EventId>,
}

const FIELDS: [&str; 4] = ["user_id", "item_id", "item_type", "event_id"];

/// Checks the content type: `application/json`, parameters allowed.
pub fn require_json(content_type: Option<&str>) -> Result<(), ApiError> {
    let essence = content_type
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => Ok(()),
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

/// Parses a like/unlike body; `idempotency_key` is the header of that name.
pub fn parse_like(body: &[u8], idempotency_key: Option<&str>) -> Result<LikeRequest, ApiError> {
    let map = json_object(body)?;
    reject_unknown(&map, &FIELDS, "user_id, item_id, item_type, event_id")?;
    let request = like_fields(&map)?;
    let header_id = idempotency_key
        .map(|k| {
            EventId::parse(k).map_err(|_| {
                ApiError::Invalid(likes_domain::ValidationError {
                    field: "Idempotency-Key",
                    message: "must be a UUID".into(),
                })
            })
        })
        .transpose()?;
    let event_id = match (request.event_id, header_id) {
        (Some(b), Some(h)) if b != h => {
            return Err(ApiError::Invalid(likes_domain::ValidationError {
                field: "event_id",
                message: "differs from the Idempotency-Key header".into(),
            }));
        }
        (b, h) => b.or(h),
    };
    Ok(LikeRequest {
        event_id,
        ..request
    })
}

/// Parses `body` as a JSON object.
pub fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(ApiError::MalformedJson(
            "the body must be a JSON object".into(),
        )),
    }
}

/// Refuses the first key of `map` that is not in `allowed` (`listed` names them).
pub fn reject_unknown(
    map: &Map<String, Value>,
    allowed: &[&str],
    listed: &'static str,
) -> Result<(), ApiError> {
    match map.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::UnknownField {
            name: unknown.clone(),
            allowed: listed,
        }),
        None => Ok(()),
    }
}

/// Reads `user_id`, `item_type`, `item_id` and the optional `event_id` of an
/// object whose keys were already checked.
pub fn like_fields(map: &Map<String, Value>) -> Result<LikeRequest, ApiError> {
    let user_id = UserId::parse(integer(map, "user_id")?)?;
    let item = ItemKey::parse(integer(map, "item_type")?, integer(map, "item_id")?)?;
    let event_id = match map.get("event_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(EventId::parse(s)?),
        Some(_) => return Err(ApiError::wrong_type("event_id", "a UUID string")),
    };
    Ok(LikeRequest {
        user_id,
        item,
        event_id,
    })
}

fn integer(map: &Map<String, Value>, field: &'static str) -> Result<i64, ApiError> {
    match map.get(field) {
        None | Some(Value::Null) => Err(ApiError::missing(field)),
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ApiError::wrong_type(field, "an integer within 64 bits")),
        Some(_) => Err(ApiError::wrong_type(field, "an integer")),
    }
}

/// Parses the `{item_type}/{item_id}` path segments.
pub fn parse_item_path(item_type: &str, item_id: &str) -> Result<ItemKey, ApiError> {
    let number = |field: &'static str, s: &str| {
        s.parse::<i64>()
            .map_err(|_| ApiError::wrong_type(field, "an integer"))
    };
    Ok(ItemKey::parse(
        number("item_type", item_type)?,
        number("item_id", item_id)?,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<LikeRequest, ApiError>) -> Option<String> {
        r.unwrap_err().field().map(str::to_string)
    }

    #[test]
    fn a_valid_body_parses() {
        let r = parse_like(br#"{"user_id":1,"item_id":2,"item_type":3}"#, None).unwrap();
        assert_eq!(r.user_id.get(), 1);
        assert_eq!(r.item.item_id.get(), 2);
        assert!(r.event_id.is_none());
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(
            field_of(parse_like(br#"{"item_id":2,"item_type":3}"#, None)),
            Some("user_id".into())
        );
        assert_eq!(
            field_of(parse_like(
                br#"{"user_id":1,"item_id":"2","item_type":3}"#,
                None
            )),
            Some("item_id".into())
        );
        assert_eq!(
            field_of(parse_like(
                br#"{"user_id":1,"item_id":2,"item_type":0}"#,
                None
            )),
            Some("item_type".into())
        );
        assert_eq!(
            field_of(parse_like(
                br#"{"user_id":1.5,"item_id":2,"item_type":3}"#,
                None
            )),
            Some("user_id".into())
        );
        assert_eq!(
            field_of(parse_like(
                br#"{"user_id":1,"item_id":2,"item_type":3,"event_id":"x"}"#,
                None
            )),
            Some("event_id".into())
        );
    }

    #[test]
    fn unknown_fields_and_non_objects_are_refused() {
        assert_eq!(
            field_of(parse_like(
                br#"{"user_id":1,"item_id":2,"item_type":3,"x":1}"#,
                None
            )),
            Some("x".into())
        );
        assert!(matches!(
            parse_like(b"[1]", None),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_like(b"{", None),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn idempotency_key_supplies_the_event_id() {
        let key = "0194e4c4-6f5c-7d2a-9a4e-2f6f3c1a9b10";
        let r = parse_like(br#"{"user_id":1,"item_id":2,"item_type":3}"#, Some(key)).unwrap();
        assert_eq!(r.event_id.unwrap().to_string(), key);
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(require_json(Some("application/json; charset=utf-8")).is_ok());
        assert!(require_json(Some("text/plain")).is_err());
        assert!(require_json(None).is_err());
    }
}
