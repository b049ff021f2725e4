//! Turning request bodies and path segments into validated domain values.
//! Unknown fields are rejected (400 naming the field) so a typo such as
//! `itemid` never silently becomes "missing".
//!
//! Bodies are read by typed visitors straight into domain values ([`json`],
//! [`fields`]), never through a `serde_json::Value`, so a valid event
//! allocates nothing but its output. The answers are the same as reading
//! through a `Value` would give (save for serde_json's private raw-value key,
//! an unknown field like any other), which the `same_as_value` tests check
//! against a `Value`-based reference reader.

mod fields;
mod json;
#[cfg(test)]
mod same_as_value;

use likes_domain::{EventId, ItemKey, UserId};

pub use fields::{Fields, LikeObject, Shape, note_unknown};
pub use json::{Read, Reader, Scalar, Scalars, Skip, read_body};

use crate::ApiError;

/// A validated like or unlike request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikeRequest {
    pub user_id: UserId,
    pub item: ItemKey,
    /// The client's own id for the request, making retries idempotent.
    pub event_id: Option<EventId>,
}

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

/// Checks every `Content-Encoding` value: only `identity` (or none) is
/// accepted; the first other coding is named in the 415.
pub fn require_identity<'a>(
    values: impl IntoIterator<Item = &'a warp::http::HeaderValue>,
) -> Result<(), ApiError> {
    for value in values {
        let text = String::from_utf8_lossy(value.as_bytes());
        for coding in text.split(',').map(str::trim) {
            if !coding.is_empty() && !coding.eq_ignore_ascii_case("identity") {
                return Err(ApiError::UnsupportedContentEncoding {
                    coding: coding.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// How a single like/unlike body is read: `action` is in the path, so it is
/// an unknown key in the body.
const SINGLE: Shape = Shape {
    action: false,
    listed: "user_id, item_id, item_type, event_id",
    not_object: "the body must be a JSON object",
};

/// Parses a like/unlike body; `idempotency_key` is the header of that name.
pub fn parse_like(body: &[u8], idempotency_key: Option<&str>) -> Result<LikeRequest, ApiError> {
    let request = read_body(body, LikeObject(SINGLE))?.and_then(Fields::like_request)?;
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
    fn the_typed_reader_keeps_the_rules_of_a_parsed_value() {
        let like = |body: &str| parse_like(body.as_bytes(), None);
        let message = |body: &str| like(body).unwrap_err().to_string();
        // A repeated key: the last one wins, null included.
        let r = like(r#"{"user_id":"x","user_id":1,"item_id":2,"item_type":3}"#).unwrap();
        assert_eq!(r.user_id.get(), 1);
        assert_eq!(
            field_of(like(
                r#"{"user_id":1,"item_id":2,"item_type":3,"user_id":null}"#
            )),
            Some("user_id".into())
        );
        // Nested values are consumed and named as the wrong type.
        assert!(
            message(r#"{"user_id":{"a":[1]},"item_id":2,"item_type":3}"#).contains("an integer")
        );
        assert!(
            message(r#"{"user_id":1,"item_id":2,"item_type":3,"event_id":[]}"#).contains("UUID")
        );
        // Numbers that are not an i64.
        for n in ["9223372036854775808", "1.0", "1e2", "18446744073709551616"] {
            let body = format!(r#"{{"user_id":1,"item_id":{n},"item_type":3}}"#);
            assert!(message(&body).contains("within 64 bits"), "{n}");
        }
        // Fields are judged in a fixed order whatever the order of the keys.
        assert_eq!(
            field_of(like(r#"{"item_id":"2","item_type":"3","user_id":0}"#)),
            Some("user_id".into())
        );
        assert_eq!(
            field_of(like(r#"{"item_id":"2","item_type":"3","user_id":1}"#)),
            Some("item_type".into())
        );
        // Both types are checked before the item's range.
        assert_eq!(
            field_of(like(r#"{"item_id":"2","item_type":0,"user_id":1}"#)),
            Some("item_id".into())
        );
        // A null event_id is no event_id; escapes are read.
        let r = like(r#"{"user_id":1,"item_id":2,"item_type":3,"event_id":null}"#).unwrap();
        assert!(r.event_id.is_none());
        assert!(like(r#"{"us\u0065r_id":1,"item_id":2,"item_type":3}"#).is_ok());
    }

    #[test]
    fn the_first_unknown_key_in_byte_order_is_named() {
        let r = parse_like(
            br#"{"z":1,"user_id":1,"b":2,"item_id":2,"item_type":3}"#,
            None,
        );
        assert_eq!(field_of(r), Some("b".into()));
        // `action` belongs to the path of a single like, not to its body.
        let r = parse_like(
            br#"{"action":"like","user_id":1,"item_id":2,"item_type":3}"#,
            None,
        );
        assert!(matches!(r, Err(ApiError::UnknownField { ref name, .. }) if name == "action"));
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
    fn only_the_identity_coding_is_accepted() {
        use warp::http::HeaderValue;
        let check = |values: &[&'static str]| {
            let values: Vec<HeaderValue> =
                values.iter().map(|v| HeaderValue::from_static(v)).collect();
            require_identity(values.iter())
        };
        assert!(check(&[]).is_ok());
        assert!(check(&["identity"]).is_ok());
        assert!(check(&["Identity, identity"]).is_ok());
        for refused in [
            &["gzip"][..],
            &["identity, gzip"],
            &["identity", "br"],
            &["x-custom"],
        ] {
            let err = check(refused).unwrap_err();
            assert!(
                matches!(err, ApiError::UnsupportedContentEncoding { .. }),
                "{refused:?}"
            );
            assert_eq!(err.field(), Some("Content-Encoding"));
        }
    }

    #[test]
    fn content_type_must_be_json() {
        assert!(require_json(Some("application/json; charset=utf-8")).is_ok());
        assert!(require_json(Some("text/plain")).is_err());
        assert!(require_json(None).is_err());
    }
}
