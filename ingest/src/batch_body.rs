//! Parsing a `POST /v1/likes:batch` body: `{"events": [...]}`, each event
//! `{action, user_id, item_id, item_type, event_id?}`. The envelope must be
//! right for anything to happen (400 otherwise); each event is then judged on
//! its own, so one bad event never rejects the others.
//!
//! The body is streamed once by typed readers (see [`crate::request`]): valid
//! events allocate nothing but the output vector.

use likes_domain::Action;
use serde::de::{MapAccess, SeqAccess};

use crate::ApiError;
use crate::request::{
    Fields, LikeObject, LikeRequest, Read, Reader, Scalar, Scalars, Shape, Skip, note_unknown,
    read_body,
};

/// How each event of a batch is read.
const EVENT: Shape = Shape {
    action: true,
    listed: "action, user_id, item_id, item_type, event_id",
    not_object: "each event must be a JSON object",
};

/// One valid event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEvent {
    pub action: Action,
    pub request: LikeRequest,
}

/// The parsed events, or the error that refuses the whole batch.
type Parsed = Result<Vec<Result<BatchEvent, ApiError>>, ApiError>;

/// Parses the envelope; each element is the event or the error naming its field.
pub fn parse_batch(body: &[u8], max_events: usize) -> Parsed {
    read_body(body, Envelope { max_events })?
}

/// The `{"events": ...}` object.
struct Envelope {
    max_events: usize,
}

impl<'de> Reader<'de> for Envelope {
    type Value = Parsed;

    fn scalar(self, _: Scalar<'_>) -> Parsed {
        Err(ApiError::MalformedJson(
            "the body must be a JSON object".into(),
        ))
    }

    fn map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed, A::Error> {
        let mut unknown = None;
        // `None` while `events` is absent or null; a repeated key replaces it.
        let mut events = None;
        loop {
            let seen = &mut unknown;
            let key = map.next_key_seed(Read(Scalars(|key: Scalar<'_>| match key {
                Scalar::Str("events") => true,
                Scalar::Str(other) => {
                    note_unknown(seen, other);
                    false
                }
                _ => false,
            })))?;
            match key {
                None => break,
                Some(true) => {
                    events = map.next_value_seed(Read(Events {
                        max_events: self.max_events,
                    }))?
                }
                Some(false) => {
                    map.next_value::<Skip>()?;
                }
            }
        }
        Ok(match (unknown, events) {
            (Some(name), _) => Err(ApiError::UnknownField {
                name,
                allowed: "events",
            }),
            (None, None) => Err(ApiError::missing("events")),
            (None, Some(events)) => events,
        })
    }
}

/// The `events` value: `None` when null.
struct Events {
    max_events: usize,
}

impl<'de> Reader<'de> for Events {
    type Value = Option<Parsed>;

    fn scalar(self, value: Scalar<'_>) -> Option<Parsed> {
        match value {
            Scalar::Null => None,
            _ => Some(Err(ApiError::wrong_type("events", "an array"))),
        }
    }

    fn seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Option<Parsed>, A::Error> {
        let mut events = Vec::new();
        while events.len() < self.max_events {
            match seq.next_element_seed(Read(LikeObject(EVENT)))? {
                Some(event) => events.push(event.and_then(batch_event)),
                None => break,
            }
        }
        // Past the limit the batch is refused whole: the rest is only
        // checked for syntax, never built.
        let mut over = false;
        while seq.next_element::<Skip>()?.is_some() {
            over = true;
        }
        Ok(Some(if over {
            Err(ApiError::BatchTooLarge {
                limit: self.max_events,
            })
        } else if events.is_empty() {
            Err(ApiError::Invalid(likes_domain::ValidationError {
                field: "events",
                message: "must hold at least one event".into(),
            }))
        } else {
            Ok(events)
        }))
    }
}

fn batch_event(fields: Fields) -> Result<BatchEvent, ApiError> {
    let (action, request) = fields.batch_event()?;
    Ok(BatchEvent { action, request })
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

    #[test]
    fn the_envelope_checks_keep_their_order() {
        let message = |body: &[u8]| parse_batch(body, 1).unwrap_err().to_string();
        assert!(message(br#"{"events":null}"#).contains("required"));
        assert!(message(br#"{"events":{"a":[1]}}"#).contains("an array"));
        assert!(message(br#"{"events":[{},{}],"b":1,"a":2}"#).contains("\"a\""));
        assert!(message(br#"{"events":[],"events":[{},{}]}"#).contains("at most 1"));
        // A repeated key replaces the earlier value.
        assert_eq!(
            parse_batch(br#"{"events":[{},{}],"events":[{}]}"#, 1)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn syntax_errors_past_the_limit_still_refuse_the_body() {
        let err = parse_batch(br#"{"events":[{},{},{"a":1e400}]}"#, 1).unwrap_err();
        assert!(matches!(err, ApiError::MalformedJson(_)), "{err}");
        let err = parse_batch(br#"{"events":[{}, [}]}"#, 1).unwrap_err();
        assert!(matches!(err, ApiError::MalformedJson(_)), "{err}");
    }
}
