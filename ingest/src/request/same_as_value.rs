//! The typed readers answer exactly as the `serde_json::Value` parsing they
//! replaced: that implementation is kept here as the reference, and both are
//! run on many generated bodies (valid, invalid, repeated and unknown keys,
//! wrong types, syntax errors).

use likes_domain::{Action, EventId, ItemKey, UserId};
use serde_json::{Map, Value};

use super::{LikeRequest, parse_like};
use crate::ApiError;
use crate::batch_body::{BatchEvent, parse_batch};

mod reference {
    use super::*;

    fn json_object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        match value {
            Value::Object(map) => Ok(map),
            _ => Err(ApiError::MalformedJson(
                "the body must be a JSON object".into(),
            )),
        }
    }

    fn reject_unknown(
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

    fn integer(map: &Map<String, Value>, field: &'static str) -> Result<i64, ApiError> {
        match map.get(field) {
            None | Some(Value::Null) => Err(ApiError::missing(field)),
            Some(Value::Number(n)) => n
                .as_i64()
                .ok_or_else(|| ApiError::wrong_type(field, "an integer within 64 bits")),
            Some(_) => Err(ApiError::wrong_type(field, "an integer")),
        }
    }

    fn like_fields(map: &Map<String, Value>) -> Result<LikeRequest, ApiError> {
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

    /// `parse_like` without the Idempotency-Key, which did not change.
    pub fn like(body: &[u8]) -> Result<LikeRequest, ApiError> {
        let map = json_object(body)?;
        reject_unknown(
            &map,
            &["user_id", "item_id", "item_type", "event_id"],
            "user_id, item_id, item_type, event_id",
        )?;
        like_fields(&map)
    }

    pub fn batch(
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
        Ok(events.iter().map(event).collect())
    }

    fn event(value: &Value) -> Result<BatchEvent, ApiError> {
        let Value::Object(map) = value else {
            return Err(ApiError::MalformedJson(
                "each event must be a JSON object".into(),
            ));
        };
        let listed = "action, user_id, item_id, item_type, event_id";
        reject_unknown(
            map,
            &["action", "user_id", "item_id", "item_type", "event_id"],
            listed,
        )?;
        let action = match map.get("action") {
            None | Some(Value::Null) => return Err(ApiError::missing("action")),
            Some(value) => value
                .as_str()
                .and_then(Action::from_name)
                .ok_or_else(|| ApiError::wrong_type("action", "\"like\" or \"unlike\""))?,
        };
        Ok(BatchEvent {
            action,
            request: like_fields(map)?,
        })
    }
}

/// Everything a client can observe of an error.
fn seen(e: &ApiError) -> (u16, &'static str, String, Option<String>) {
    (
        e.status().as_u16(),
        e.code(),
        e.to_string(),
        e.field().map(str::to_string),
    )
}

fn same<T: PartialEq + std::fmt::Debug>(
    body: &[u8],
    new: &Result<T, ApiError>,
    old: &Result<T, ApiError>,
) {
    let text = String::from_utf8_lossy(body);
    match (new, old) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
        (Err(a), Err(b)) => assert_eq!(seen(a), seen(b), "{text}"),
        _ => panic!("{text}: new {new:?}, old {old:?}"),
    }
}

fn check(body: &[u8]) {
    same(body, &parse_like(body, None), &reference::like(body));
    for max in [0, 1, 2, 3] {
        let (new, old) = (parse_batch(body, max), reference::batch(body, max));
        match (&new, &old) {
            (Ok(a), Ok(b)) => {
                assert_eq!(a.len(), b.len());
                for (a, b) in a.iter().zip(b) {
                    same(body, a, b);
                }
            }
            _ => same(body, &new.map(|_| ()), &old.map(|_| ())),
        }
    }
}

/// A small deterministic generator (xorshift), enough to mix the cases.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.roll(from.len())]
    }
}

const KEYS: &[&str] = &[
    "action",
    "user_id",
    "item_id",
    "item_type",
    "event_id",
    "x",
    "a",
    "zz",
    "events",
    "us\\u0065r_id",
];
const VALUES: &[&str] = &[
    "null",
    "1",
    "2",
    "0",
    "-1",
    "1.5",
    "1.0",
    "-0",
    "1e2",
    "true",
    "\"2\"",
    "\"like\"",
    "\"unlike\"",
    "\"lik\\u0065\"",
    "\"LIKE\"",
    "[]",
    "{}",
    "[1,{\"a\":[2]}]",
    "{\"action\":\"like\"}",
    "32767",
    "32768",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "\"0194e4c4-6f5c-7d2a-9a4e-2f6f3c1a9b10\"",
    "\"00000000-0000-0000-0000-000000000000\"",
    "\"x\"",
];

fn object(dice: &mut Dice) -> String {
    let n = dice.roll(7);
    let members: Vec<String> = (0..n)
        .map(|_| format!("\"{}\":{}", dice.pick(KEYS), dice.pick(VALUES)))
        .collect();
    format!("{{{}}}", members.join(","))
}

fn event(dice: &mut Dice) -> String {
    match dice.roll(6) {
        0 => dice.pick(VALUES).to_string(),
        1 => object(dice),
        _ => {
            let mut members = vec![
                format!(
                    "\"action\":{}",
                    dice.pick(&["\"like\"", "\"unlike\"", "null", "1"])
                ),
                format!(
                    "\"user_id\":{}",
                    dice.pick(&["1", "7", "0", "\"1\"", "1.5"])
                ),
                format!(
                    "\"item_type\":{}",
                    dice.pick(&["1", "3", "0", "32768", "[]"])
                ),
                format!(
                    "\"item_id\":{}",
                    dice.pick(&["2", "9", "-2", "9223372036854775808"])
                ),
            ];
            if dice.roll(2) == 0 {
                members.push(format!("\"{}\":{}", dice.pick(KEYS), dice.pick(VALUES)));
            }
            let cut = dice.roll(members.len() + 1);
            members.truncate(members.len().max(1).max(cut));
            let first = dice.roll(members.len());
            members.swap(0, first);
            format!("{{{}}}", members.join(","))
        }
    }
}

#[test]
fn generated_bodies_get_the_same_answers() {
    let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        check(object(&mut dice).as_bytes());
        check(event(&mut dice).as_bytes());
        let events: Vec<String> = (0..dice.roll(5)).map(|_| event(&mut dice)).collect();
        let mut envelope = format!("{{\"events\":[{}]", events.join(","));
        if dice.roll(4) == 0 {
            envelope.push_str(&format!(",\"{}\":{}", dice.pick(KEYS), dice.pick(VALUES)));
        }
        envelope.push('}');
        check(envelope.as_bytes());
    }
}

#[test]
fn syntax_errors_get_the_same_messages() {
    let valid = r#"{"events":[{"action":"like","user_id":1,"item_id":2,"item_type":3,"event_id":"0194e4c4-6f5c-7d2a-9a4e-2f6f3c1a9b10"},{"x":[1,{"y":"z"}]}]}"#;
    for cut in 0..valid.len() {
        check(&valid.as_bytes()[..cut]);
        let mut broken = valid.as_bytes().to_vec();
        broken.insert(cut, b'}');
        check(&broken);
    }
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    for body in [
        format!(r#"{{"events":[{{"x":{deep}}}]}}"#),
        format!(r#"{{"user_id":1,"x":{deep}}}"#),
        r#"{"events":[{"x":1e400}]}"#.into(),
        r#"{"x":"\ud800"}"#.into(),
        r#"{"events":[{"x":"\ud800"}],"more":1}"#.into(),
        r#"{"events":[{"x":"a	b"}]}"#.into(),
        r#"{"events":[{"action":"like"}]} x"#.into(),
        r#"{"events":[{"action":"like"}]}   "#.into(),
        "\u{feff}{}".into(),
        "".into(),
        "null".into(),
        "[{}]".into(),
        "\"events\"".into(),
    ] {
        check(body.as_bytes());
    }
}

/// The one deliberate difference: with serde_json's `raw_value` feature (on
/// through other crates), a `Value` read an object whose first key is its
/// private raw-value token as the JSON text of its string value, smuggling a
/// body inside a string. That key is now an unknown field like any other.
#[test]
fn the_raw_value_token_is_an_unknown_field() {
    let token = "$serde_json::private::RawValue";
    let inner = r#"{\"user_id\":1,\"item_id\":2,\"item_type\":3}"#;
    let body = format!(r#"{{"{token}":"{inner}"}}"#);
    assert!(reference::like(body.as_bytes()).is_ok());
    let err = parse_like(body.as_bytes(), None).unwrap_err();
    assert_eq!(err.field(), Some(token));
    let body = format!(r#"{{"events":[{{"{token}":5}}]}}"#);
    assert!(reference::batch(body.as_bytes(), 5).is_err());
    let events = parse_batch(body.as_bytes(), 5).unwrap();
    assert_eq!(events[0].as_ref().unwrap_err().field(), Some(token));
}
