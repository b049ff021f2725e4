//! Parsing a `POST /v1/likes:batch` body: `{"events": [...]}`, each event
//! `{action, user_id, item_id, item_type, event_id?}`. The envelope must be
//! right for anything to happen (400 otherwise); each event is then judged on
//! its own, so one bad event never rejects the others.

use likes_domain::Action;
use serde_json::Value;

use crate::ApiError;
use crate::request::{LikeRequest, json_object, like_fields, reject_unknown};

const EVENT_FIELDS: [&str; 5] = ["action", "user_id", "item_id", "item_type", "event_id"];
const EVENT_LISTED: &str = "action, user_id, item_id, item_type, event_id";

/// One valid event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvent {
    pub action: Action,
    pub request: LikeRequest,
}

/// Parses the envelope; each element is the event or the error naming its field.
pub fn parse_batch(
    body: &[u8],
    max_events: usize,
) -> Result<Vec<Result<BatchEvent, ApiError>>, ApiError> {
    let map = json_object(body)?;
    reject_unknown(&map, &["events"], "events")?;
    let events = match map.get("events") {
        Some(Value::Array(events)) => events,
        None | Some(Value::Null) => return Err(ApiError::missing("events")),
        Some(_) => return Err(ApiError::wrong_type("events", "an array")),
    };
    if events.is_empty() {
        return Err(ApiError::Invalid(likes_domain::ValidationError {
            field: "events",
            message: "must hold at least one event".into(),
        }));
    }
    if events.len() > max_events {
        return Err(ApiError::BatchTooLarge { limit: max_events });
    }
    Ok(events.iter().map(parse_event).collect())
}

fn parse_event(value: &Value) -> Result<BatchEvent, ApiError> {
    let Value::Object(map) = value else {
        return Err(ApiError::MalformedJson(
            "each event must be a JSON object".into(),
        ));
    };
    reject_unknown(map, &EVENT_FIELDS, EVENT_LISTED)?;
    let action = match map.get("action") {
        None | Some(Value::Null) => return Err(ApiError::missing("action")),
        Some(Value::String(s)) if s == "like" => Action::Like,
        Some(Value::String(s)) if s == "unlike" => Action::Unlike,
        Some(_) => return Err(ApiError::wrong_type("action", "\"like\" or \"unlike\"")),
    };
    Ok(BatchEvent {
        action,
        request: like_fields(map)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: &Result<BatchEvent, ApiError>) -> Option<&str> {
        r.as_ref().err().and_then(|e| e.field())
    }

    #[test]
    fn each_event_is_judged_on_its_own() {
        let body = br#"{"events":[
            {"action":"like","user_id":1,"item_id":2,"item_type":3},
            {"action":"dislike","user_id":1,"item_id":2,"item_type":3},
            {"action":"unlike","user_id":0,"item_id":2,"item_type":3},
            {"action":"like","user_id":1,"item_id":2,"item_type":3,"x":1},
            7
        ]}"#;
        let events = parse_batch(body, 10).unwrap();
        assert_eq!(events.len(), 5);
        assert_eq!(events[0].as_ref().unwrap().action, Action::Like);
        assert_eq!(field(&events[1]), Some("action"));
        assert_eq!(field(&events[2]), Some("user_id"));
        assert_eq!(field(&events[3]), Some("x"));
        assert!(matches!(events[4], Err(ApiError::MalformedJson(_))));
    }

    #[test]
    fn a_batch_over_the_limit_names_the_limit() {
        let body = br#"{"events":[{},{},{}]}"#;
        let err = parse_batch(body, 2).unwrap_err();
        assert!(matches!(err, ApiError::BatchTooLarge { limit: 2 }));
        assert!(err.to_string().contains('2'));
        assert_eq!(err.field(), Some("events"));
    }

    #[test]
    fn the_envelope_must_be_right() {
        assert_eq!(parse_batch(b"{}", 2).unwrap_err().field(), Some("events"));
        assert_eq!(
            parse_batch(br#"{"events":[]}"#, 2).unwrap_err().field(),
            Some("events")
        );
        assert_eq!(
            parse_batch(br#"{"events":[],"more":1}"#, 2)
                .unwrap_err()
                .field(),
            Some("more")
        );
        assert!(parse_batch(b"[]", 2).is_err());
    }
}
