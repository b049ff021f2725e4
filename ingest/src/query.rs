//! Query strings and path segments of the read routes: item lists, limits,
//! read-your-writes tokens and the cursor of a user's likes.

use std::collections::HashMap;

use likes_domain::{ItemKey, ItemType, Position, UserId, ValidationError};
use likes_infra::postgres::reads::LikedItem;

use crate::ApiError;

/// The read-your-writes token: where an accepted event sits in the log,
/// handed to the client as the opaque text `"<partition>:<offset>"`; a count
/// request may pass it back as `after`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(pub Position);

impl std::fmt::Display for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0.partition, self.0.offset)
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(ValidationError {
        field,
        message: message.into(),
    })
}

/// Refuses query parameters other than `allowed` (`listed` names them).
pub fn only(
    query: &HashMap<String, String>,
    allowed: &[&str],
    listed: &'static str,
) -> Result<(), ApiError> {
    match query.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(name) => Err(ApiError::UnknownField {
            name: name.clone(),
            allowed: listed,
        }),
        None => Ok(()),
    }
}

/// Parses the optional `after` token.
pub fn token(query: &HashMap<String, String>) -> Result<Option<Token>, ApiError> {
    let Some(text) = query.get("after") else {
        return Ok(None);
    };
    let bad = || {
        invalid(
            "after",
            "must be a token \"<partition>:<offset>\" from a write",
        )
    };
    let (partition, offset) = text.split_once(':').ok_or_else(bad)?;
    let partition: i32 = partition.parse().map_err(|_| bad())?;
    let offset: i64 = offset.parse().map_err(|_| bad())?;
    if partition < 0 || offset < 0 {
        return Err(bad());
    }
    Ok(Some(Token(Position { partition, offset })))
}

/// Parses `items=type:id,type:id,...` (1 to `max` items).
pub fn items(query: &HashMap<String, String>, max: usize) -> Result<Vec<ItemKey>, ApiError> {
    let text = query
        .get("items")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::missing("items"))?;
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() > max {
        return Err(invalid("items", format!("at most {max} items per request")));
    }
    parts
        .into_iter()
        .map(|part| {
            let bad = || {
                invalid(
                    "items",
                    format!("{part:?} is not \"<item_type>:<item_id>\""),
                )
            };
            let (ty, id) = part.split_once(':').ok_or_else(bad)?;
            let ty: i64 = ty.parse().map_err(|_| bad())?;
            let id: i64 = id.parse().map_err(|_| bad())?;
            ItemKey::parse(ty, id).map_err(|e| invalid("items", format!("{part:?}: {e}")))
        })
        .collect()
}

/// Parses the optional `limit` (1 to `max`, `default` when absent).
pub fn limit(
    query: &HashMap<String, String>,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match query.get("limit") {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(invalid(
                "limit",
                format!("must be an integer from 1 to {max}"),
            )),
        },
    }
}

/// Parses a `{user_id}` path segment.
pub fn user_path(user_id: &str) -> Result<UserId, ApiError> {
    let n: i64 = user_id
        .parse()
        .map_err(|_| ApiError::wrong_type("user_id", "an integer"))?;
    Ok(UserId::parse(n)?)
}

/// Parses the optional `item_type` filter.
pub fn item_type(query: &HashMap<String, String>) -> Result<Option<ItemType>, ApiError> {
    let Some(text) = query.get("item_type") else {
        return Ok(None);
    };
    let n: i64 = text
        .parse()
        .map_err(|_| ApiError::wrong_type("item_type", "an integer"))?;
    Ok(Some(ItemType::parse(n)?))
}

/// The version byte leading every cursor, so its layout can change later
/// without misreading an old one.
const CURSOR_VERSION: u8 = 1;

/// The opaque cursor after `last`, the last like of a page: its exact
/// `liked_at` (microseconds), item type and item id, in hex.
pub fn cursor_after(last: &LikedItem) -> String {
    let mut bytes = Vec::with_capacity(19);
    bytes.push(CURSOR_VERSION);
    bytes.extend_from_slice(&last.liked_at.timestamp_micros().to_be_bytes());
    // ItemType is 1..=i16::MAX by construction.
    bytes.extend_from_slice(&(last.item.item_type.get() as i16).to_be_bytes());
    bytes.extend_from_slice(&last.item.item_id.get().to_be_bytes());
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses the optional `cursor` a previous page gave as `next_cursor`.
pub fn cursor(query: &HashMap<String, String>) -> Result<Option<LikedItem>, ApiError> {
    let Some(text) = query.get("cursor") else {
        return Ok(None);
    };
    decode_cursor(text)
        .map(Some)
        .ok_or_else(|| invalid("cursor", "must be a `next_cursor` from a previous page"))
}

fn decode_cursor(text: &str) -> Option<LikedItem> {
    if text.len() != 38 || !text.is_ascii() {
        return None;
    }
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect::<Option<_>>()?;
    if bytes[0] != CURSOR_VERSION {
        return None;
    }
    let micros = i64::from_be_bytes(bytes[1..9].try_into().ok()?);
    let item_type = i16::from_be_bytes(bytes[9..11].try_into().ok()?);
    let item_id = i64::from_be_bytes(bytes[11..19].try_into().ok()?);
    Some(LikedItem {
        item: ItemKey::parse(i64::from(item_type), item_id).ok()?,
        liked_at: chrono::DateTime::from_timestamp_micros(micros)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn items_parse_in_order_and_bad_ones_are_named() {
        let parsed = items(&q(&[("items", "1:10,2:20")]), 5).unwrap();
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[1].item_id.get(), 20);
        for bad in ["", "1", "1:0", "x:1", "1:2,"] {
            let err = items(&q(&[("items", bad)]), 5).unwrap_err();
            assert_eq!(err.field(), Some("items"), "{bad}");
        }
        assert!(items(&q(&[("items", "1:1,1:2,1:3")]), 2).is_err());
    }

    #[test]
    fn tokens_round_trip_and_garbage_is_refused() {
        let t = Token(Position {
            partition: 3,
            offset: 42,
        });
        assert_eq!(token(&q(&[("after", &t.to_string())])).unwrap(), Some(t));
        assert_eq!(token(&q(&[])).unwrap(), None);
        for bad in ["3", "a:1", "1:-1", "-1:1"] {
            assert!(token(&q(&[("after", bad)])).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(&q(&[]), 20, 100).unwrap(), 20);
        assert_eq!(limit(&q(&[("limit", "100")]), 20, 100).unwrap(), 100);
        assert!(limit(&q(&[("limit", "0")]), 20, 100).is_err());
        assert!(limit(&q(&[("limit", "101")]), 20, 100).is_err());
    }

    #[test]
    fn cursors_round_trip_exactly_and_anything_else_is_refused() {
        let last = LikedItem {
            item: ItemKey::parse(7, 123_456_789).unwrap(),
            liked_at: chrono::DateTime::from_timestamp_micros(1_764_000_000_123_456).unwrap(),
        };
        let text = cursor_after(&last);
        assert_eq!(cursor(&q(&[("cursor", &text)])).unwrap(), Some(last));
        assert_eq!(cursor(&q(&[])).unwrap(), None);
        let mut wrong_version = text.clone();
        wrong_version.replace_range(0..2, "02");
        let zero_item = cursor_after(&LikedItem {
            item: ItemKey::parse(7, 1).unwrap(),
            ..last
        })
        .replace("0000000000000001", "0000000000000000");
        for bad in [
            "",
            "x",
            &text[..36],
            &format!("{text}00"),
            &wrong_version,
            &zero_item,
            &"zz".repeat(19),
            "é".repeat(19).as_str(),
        ] {
            let err = cursor(&q(&[("cursor", bad)])).unwrap_err();
            assert_eq!(err.field(), Some("cursor"), "{bad:?}");
        }
    }

    #[test]
    fn the_item_type_filter_is_optional_and_bounded() {
        assert_eq!(item_type(&q(&[])).unwrap(), None);
        assert_eq!(
            item_type(&q(&[("item_type", "2")]))
                .unwrap()
                .map(|t| t.get()),
            Some(2)
        );
        for bad in ["0", "32768", "x", ""] {
            let err = item_type(&q(&[("item_type", bad)])).unwrap_err();
            assert_eq!(err.field(), Some("item_type"), "{bad}");
        }
    }
}
