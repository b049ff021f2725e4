//! The Avro codec of `like-events`: the schema in `schemas/like_event.avsc`,
//! registered under the topic's value subject, and the Confluent wire format
//! (magic byte 0, 4-byte schema id, Avro binary). The writer schema is
//! registered once and its id kept; each record is then written directly in
//! that schema's layout ([`binary`]), never resolved per record. Decoding
//! fetches and resolves each writer schema once per id (schema_registry_converter
//! caches both), so events written by other schema versions still decode.

mod binary;

use std::sync::OnceLock;
use std::time::Duration;

use apache_avro::types::Value;
use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};

use crate::Error;

/// The writer schema this build produces events with.
pub const SCHEMA: &str = include_str!("../../../schemas/like_event.avsc");

/// The registry id of [`SCHEMA`], as [`EventCodec::ready`] returns it: only
/// a registered id can be written into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaId(u32);

/// Encodes and decodes like events through the schema registry.
pub struct EventCodec {
    /// The registered id of [`SCHEMA`], once known.
    schema_id: OnceLock<u32>,
    encoder: AvroEncoder,
    decoder: AvroDecoder,
    strategy: SubjectNameStrategy,
}

impl EventCodec {
    /// A codec for `topic`'s value subject (`<topic>-value`) on the registry at
    /// `registry_url` (a Confluent-compatible base URL).
    pub fn new(registry_url: &str, topic: &str) -> Result<Self, Error> {
        let settings = || {
            SrSettings::new_builder(registry_url.to_string())
                .set_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| Error::Setting {
                    name: "SCHEMA_REGISTRY_URL",
                    message: e.to_string(),
                })
        };
        let supplied = SuppliedSchema::new(None, SchemaType::Avro, SCHEMA.to_string());
        Ok(Self {
            schema_id: OnceLock::new(),
            encoder: AvroEncoder::new(settings()?),
            decoder: AvroDecoder::new(settings()?),
            strategy: SubjectNameStrategy::TopicNameStrategyWithSchema(
                topic.to_string(),
                false,
                supplied,
            ),
        })
    }

    /// Registers the schema (idempotent) and returns its id. Call at start-up so a
    /// registry problem shows before the first request. A registry that fails
    /// once (say, while its own database connections recover from a restart) is
    /// asked again a few times before this gives up.
    pub async fn register(&self) -> Result<u32, Error> {
        let subject = self.strategy.get_subject().map_err(registry_error)?;
        let mut delay = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            match self
                .encoder
                .get_schema_and_id(&subject, self.strategy.clone())
                .await
            {
                Ok(schema) => {
                    let _ = self.schema_id.set(schema.id);
                    return Ok(schema.id);
                }
                Err(e) => {
                    self.encoder.remove_errors_from_cache();
                    if attempt == 5 {
                        return Err(registry_error(e));
                    }
                    tracing::warn!(error = %e, attempt, "schema registration failed, retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// The schema id, registering the schema first if [`EventCodec::register`]
    /// was not called yet.
    pub async fn ready(&self) -> Result<SchemaId, Error> {
        match self.schema_id.get() {
            Some(id) => Ok(SchemaId(*id)),
            None => self.register().await.map(SchemaId),
        }
    }

    /// The Confluent-framed Avro bytes of `event` under a registered id,
    /// without any await.
    pub fn encode_as(&self, id: SchemaId, event: &LikeEvent) -> Vec<u8> {
        binary::framed(id.0, event)
    }

    /// The Confluent-framed Avro bytes of `event`. The first call registers
    /// the schema if [`EventCodec::register`] was not called yet.
    pub async fn encode(&self, event: &LikeEvent) -> Result<Vec<u8>, Error> {
        let id = self.ready().await?;
        Ok(self.encode_as(id, event))
    }

    /// Decodes a Confluent-framed record into a validated event.
    ///
    /// [`Error::Poison`] means the record can never be decoded (not our framing,
    /// unknown schema id, bytes that do not match the schema, invalid values);
    /// [`Error::RegistryUnavailable`] means try again later.
    pub async fn decode(&self, payload: Option<&[u8]>) -> Result<LikeEvent, Error> {
        let bytes = payload.ok_or_else(|| Error::Poison("record has no value".into()))?;
        if bytes.len() < 5 || bytes[0] != 0 {
            return Err(Error::Poison(
                "not in the Confluent wire format (magic byte 0 and a schema id)".into(),
            ));
        }
        match self.decoder.decode(Some(bytes)).await {
            Ok(result) => from_value(result.value),
            Err(e) => {
                // The decoder caches non-retryable failures per schema id; only a
                // registry that says "no such schema" makes a record poison, so any
                // other failure is dropped from its cache and retried by the caller.
                let message = e.to_string();
                if message.contains("status 404") || message.contains("transform bytes") {
                    Err(Error::Poison(message))
                } else {
                    self.decoder.remove_errors_from_cache();
                    Err(Error::RegistryUnavailable(message))
                }
            }
        }
    }
}

/// The schema id in a Confluent-framed record, if it is one.
pub fn schema_id(payload: &[u8]) -> Option<u32> {
    match payload {
        [0, a, b, c, d, ..] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => None,
    }
}

fn registry_error(e: SRCError) -> Error {
    Error::RegistryUnavailable(e.to_string())
}

/// The event as a generic Avro value (the reference the direct encoding is
/// tested against).
#[cfg(test)]
fn to_value(event: &LikeEvent) -> Value {
    let (index, symbol) = match event.action {
        Action::Like => (0, "LIKE"),
        Action::Unlike => (1, "UNLIKE"),
    };
    Value::Record(vec![
        ("event_id".into(), Value::Uuid(*event.event_id.as_uuid())),
        ("user_id".into(), Value::Long(event.user_id.get())),
        ("item_id".into(), Value::Long(event.item.item_id.get())),
        ("item_type".into(), Value::Int(event.item.item_type.get())),
        ("action".into(), Value::Enum(index, symbol.into())),
        (
            "timestamp".into(),
            Value::TimestampMillis(event.timestamp.timestamp_millis()),
        ),
    ])
}

fn from_value(value: Value) -> Result<LikeEvent, Error> {
    let Value::Record(fields) = value else {
        return Err(Error::Poison("value is not a record".into()));
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| Error::Poison(format!("missing field {name}")))
    };
    let poison = |e: likes_domain::ValidationError| Error::Poison(e.to_string());
    let event_id = match field("event_id")? {
        Value::Uuid(u) => EventId::from_uuid(*u).map_err(poison)?,
        Value::String(s) => EventId::parse(s).map_err(poison)?,
        other => return Err(Error::Poison(format!("event_id: unexpected {other:?}"))),
    };
    let long = |name: &str| match field(name)? {
        Value::Long(v) => Ok(*v),
        Value::Int(v) => Ok(i64::from(*v)),
        other => Err(Error::Poison(format!("{name}: unexpected {other:?}"))),
    };
    let action = match field("action")? {
        Value::Enum(_, symbol) => Action::from_symbol(symbol).map_err(poison)?,
        other => return Err(Error::Poison(format!("action: unexpected {other:?}"))),
    };
    let millis = match field("timestamp")? {
        Value::TimestampMillis(v) | Value::Long(v) => *v,
        other => return Err(Error::Poison(format!("timestamp: unexpected {other:?}"))),
    };
    let timestamp = chrono::DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| Error::Poison(format!("timestamp out of range: {millis}")))?;
    Ok(LikeEvent {
        event_id,
        user_id: UserId::parse(long("user_id")?).map_err(poison)?,
        item: ItemKey::parse(long("item_type")?, long("item_id")?).map_err(poison)?,
        action,
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> LikeEvent {
        LikeEvent {
            event_id: EventId::generate(),
            user_id: UserId::parse(42).unwrap(),
            item: ItemKey::parse(3, 9_000_000_000).unwrap(),
            action: Action::Unlike,
            timestamp: chrono::DateTime::from_timestamp_millis(1_700_000_000_123).unwrap(),
        }
    }

    #[test]
    fn an_event_survives_the_avro_round_trip_through_the_schema() {
        let schema = apache_avro::Schema::parse_str(SCHEMA).unwrap();
        let event = sample();
        let bytes = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(to_value(&event))
            .unwrap();
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&schema)
            .build()
            .unwrap()
            .read_value(&mut bytes.as_slice())
            .unwrap();
        assert_eq!(from_value(value).unwrap(), event);
    }

    #[test]
    fn values_that_fail_validation_are_poison() {
        let mut value = to_value(&sample());
        if let Value::Record(fields) = &mut value {
            fields[1].1 = Value::Long(-1);
        }
        assert!(matches!(from_value(value), Err(Error::Poison(m)) if m.contains("user_id")));
    }

    #[test]
    fn schema_id_reads_the_confluent_header() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 99]), Some(258));
        assert_eq!(schema_id(&[1, 0, 0, 1, 2]), None);
        assert_eq!(schema_id(&[0, 0]), None);
    }
}
