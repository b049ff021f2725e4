//! Command-line parsing helpers shared by the commands: ids and times given on
//! the command line, validated with the domain's own rules.

use chrono::{DateTime, Utc};
use likes_domain::{ItemKey, UserId};

/// Parses an RFC 3339 time (`2026-11-29T12:00:00Z`).
pub fn parse_time(value: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-11-29T12:00:00Z ({e})"))
}

/// An item from its type and id.
pub fn item(item_type: i64, item_id: i64) -> anyhow::Result<ItemKey> {
    Ok(ItemKey::parse(item_type, item_id)?)
}

/// A user id.
pub fn user(user_id: i64) -> anyhow::Result<UserId> {
    Ok(UserId::parse(user_id)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_must_be_rfc3339() {
        assert_eq!(
            parse_time("2026-11-29T12:00:00+01:00").map(|t| t.timestamp()),
            Ok(1_795_950_000)
        );
        assert!(parse_time("yesterday").is_err());
    }

    #[test]
    fn ids_are_validated_like_the_api_does() {
        assert!(item(1, 5).is_ok());
        assert!(item(0, 5).is_err());
        assert!(user(-1).is_err());
    }
}
