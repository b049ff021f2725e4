//! Query strings and path segments of the read routes: item lists, limits and
//! read-your-writes tokens.

use std::collections::HashMap;

use likes_domain::{ItemKey, Position, UserId, ValidationError};

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
}
