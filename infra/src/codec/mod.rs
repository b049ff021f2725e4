//! The Avro codec of `like-events`: the schema in `schemas/like_event.avsc`,
//! registered under the topic's value subject, and the Confluent wire format
//! (magic byte 0, 4-byte schema id, Avro binary). The writer schema is
//! registered once and its id kept; each record is then written directly in
//! that schema's layout ([`binary`]), never resolved per record.
//!
//! Decoding uses Avro schema resolution: the writer schema is the one the
//! record's id names (fetched once per id and kept, parsed and with its named
//! types resolved), the reader schema is this build's [`SCHEMA`] (or, for
//! `likes-replay schema check`, a candidate schema). So records written by an
//! older or a newer compatible version decode alike: fields the reader does
//! not know are skipped, fields the writer did not have take the reader's
//! default.
//!
//! Why a record does not decode is classified here and only here, as a typed
//! [`DecodeError`]: a schema id the registry does not know is asked again with
//! backoff for `UNKNOWN_SCHEMA_RETRY_SECONDS` before the record is poison (a
//! replica that is behind must not send good records to the dead-letter
//! topic), a JSON or Protobuf schema id or an unparsable schema is poison at
//! once, and a registry that cannot be asked is transient.

mod binary;
mod lookup;
mod probe;
mod resolution;

use std::sync::OnceLock;
use std::time::Duration;

use apache_avro::types::Value;
use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use schema_registry_converter::async_impl::avro::AvroDecoder;
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::avro_common::AvroSchema;

use crate::registry::{self, Registry};
use crate::{DecodeError, Error, retry};
use lookup::{Lookup, UnknownIds};
pub use probe::RegistryProbe;
use resolution::{ReaderSchema, Resolutions};

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
    /// Fetches and keeps each writer schema by id.
    decoder: AvroDecoder,
    /// For asking the registry about an id the decoder could not resolve.
    registry: SrSettings,
    /// For registering [`SCHEMA`] under the value subject.
    subjects: Registry,
    subject: String,
    /// The schema records are resolved to.
    reader: &'static ReaderSchema,
    /// Each writer schema id's resolution to `reader`, made once.
    resolutions: Resolutions,
    /// How long an id the registry does not know is asked for again.
    unknown_schema_retry: Duration,
    unknown: UnknownIds,
}

impl EventCodec {
    /// A codec for `topic`'s value subject (`<topic>-value`) on the registry at
    /// `registry_url` (a Confluent-compatible base URL). Reads
    /// `UNKNOWN_SCHEMA_RETRY_SECONDS` ([`crate::settings::unknown_schema_retry`]).
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
        Ok(Self {
            schema_id: OnceLock::new(),
            decoder: AvroDecoder::new(settings()?),
            registry: settings()?,
            subjects: Registry::new(registry_url)?,
            subject: registry::value_subject(topic),
            reader: ReaderSchema::build(),
            resolutions: Resolutions::default(),
            unknown_schema_retry: crate::settings::unknown_schema_retry()?,
            unknown: UnknownIds::default(),
        })
    }

    /// The same codec with another grace period for unknown schema ids (tools
    /// and tests; services use the setting).
    pub fn with_unknown_schema_retry(mut self, grace: Duration) -> Self {
        self.unknown_schema_retry = grace;
        self
    }

    /// The same codec resolving records to `schema` (Avro schema text) instead
    /// of this build's [`SCHEMA`]: how a candidate schema is tried against the
    /// log before it is registered. `source_name` names the schema in errors.
    pub fn with_reader_schema(mut self, source_name: &str, schema: &str) -> Result<Self, Error> {
        self.reader = ReaderSchema::leak(source_name, schema)?;
        self.resolutions = Resolutions::default();
        Ok(self)
    }

    /// Registers the schema (idempotent) and returns its id. Call at start-up so a
    /// registry problem shows before the first request. A registry that fails
    /// once (say, while its own database connections recover from a restart) is
    /// asked again a few times before this gives up; a registry that refuses
    /// the schema as incompatible ([`Error::SchemaRefused`]) is not asked again.
    ///
    /// Registering an older version than the subject's latest is allowed: it
    /// keeps its id, and under the subject's FULL_TRANSITIVE level its records
    /// are read by every reader (an ingest rolled back, or not yet rolled out).
    pub async fn register(&self) -> Result<u32, Error> {
        let id = retry::run(
            &retry::REGISTER_SCHEMA,
            "schema registration",
            Error::is_transient,
            |_| {},
            || self.subjects.register(&self.subject, SCHEMA),
        )
        .await?;
        let _ = self.schema_id.set(id);
        if let Ok(Some(latest)) = self.subjects.latest(&self.subject).await
            && latest.id != id
        {
            tracing::warn!(
                subject = %self.subject,
                schema_id = id,
                latest_schema_id = latest.id,
                latest_version = latest.version,
                "this build writes with an older schema version than the subject's latest"
            );
        }
        Ok(id)
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
    /// [`Error::Poison`] means the record can never be decoded,
    /// [`Error::RegistryUnavailable`] means try again later; the kinds behind
    /// them are [`EventCodec::decode_event`]'s.
    pub async fn decode(&self, payload: Option<&[u8]>) -> Result<LikeEvent, Error> {
        self.decode_event(payload).await.map_err(Error::from)
    }

    /// Decodes a Confluent-framed record into a validated event, or says why
    /// not. An id the registry does not know is looked up again with backoff
    /// until it has been unknown for the grace period (counted from the first
    /// record that met it, so later records with the same id do not wait
    /// again); only then is it [`DecodeError::UnknownSchemaId`].
    pub async fn decode_event(&self, payload: Option<&[u8]>) -> Result<LikeEvent, DecodeError> {
        let bytes = payload.ok_or(DecodeError::NoValue)?;
        let id = schema_id(bytes).ok_or(DecodeError::NotFramed)?;
        let writer = self.resolve(id).await?;
        // The writer schema is known now: a failure here is the record's (its
        // bytes, or a writer schema this reader cannot resolve).
        let value = self
            .resolutions
            .get_or_make(id, &writer.parsed, self.reader)
            .and_then(|resolution| resolution.read(self.reader, &bytes[5..]))
            .map_err(|reason| DecodeError::Malformed { id, reason })?;
        from_value(value)
    }

    /// The writer schema of `id` (fetched once and kept by the decoder), or
    /// why it cannot be had.
    async fn resolve(&self, id: u32) -> Result<std::sync::Arc<AvroSchema>, DecodeError> {
        let mut backoff = retry::UNKNOWN_SCHEMA.backoff();
        let mut found_since = false;
        loop {
            let failure = match self.decoder.get_schema(id).await {
                Ok(schema) => {
                    self.unknown.forget(id);
                    return Ok(schema);
                }
                Err(e) => e,
            };
            // The decoder remembers failures it deems final per id (a 404 among
            // them) and would replay them without asking the registry again.
            self.decoder.remove_errors_from_cache();
            match lookup::inspect(&self.registry, id).await {
                Lookup::NotFound => {
                    let grace = self.unknown_schema_retry;
                    let waited = self.unknown.unknown_for(id, grace);
                    if waited >= grace {
                        return Err(DecodeError::UnknownSchemaId { id, waited });
                    }
                    tracing::warn!(
                        schema_id = id,
                        waited_ms = waited.as_millis() as u64,
                        grace_ms = grace.as_millis() as u64,
                        "schema id unknown to the registry, asking again"
                    );
                    let pause = backoff.after_failure().unwrap_or(retry::UNKNOWN_SCHEMA.max);
                    tokio::time::sleep(pause.min(grace - waited)).await;
                }
                Lookup::NotAvro(schema_type) => {
                    return Err(DecodeError::NotAvro { id, schema_type });
                }
                Lookup::Unparsable(reason) => {
                    return Err(DecodeError::UnparsableSchema { id, reason });
                }
                Lookup::Unavailable(reason) => {
                    return Err(DecodeError::RegistryUnavailable { id, reason });
                }
                Lookup::Avro if !found_since => {
                    // Found now (a replica caught up, say): the decoder asks
                    // again at once.
                    found_since = true;
                }
                Lookup::Avro => {
                    // The registry serves the schema, yet the decoder could
                    // not take it twice: nothing says the record is bad, so
                    // the caller tries again later.
                    return Err(DecodeError::RegistryUnavailable {
                        id,
                        reason: failure.to_string(),
                    });
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

/// Whether the registry serves `id` as an Avro schema that parses:
/// `Some(false)` is a typed no (not found, another type, unparsable),
/// `None` that it could not be asked.
pub async fn serves_avro(registry: &SrSettings, id: u32) -> Option<bool> {
    match lookup::inspect(registry, id).await {
        Lookup::Avro => Some(true),
        Lookup::NotFound | Lookup::NotAvro(_) | Lookup::Unparsable(_) => Some(false),
        Lookup::Unavailable(_) => None,
    }
}

/// The event as a generic Avro value (the reference the direct encoding is
/// tested against).
#[cfg(test)]
fn to_value(event: &LikeEvent) -> Value {
    let (index, symbol) = (event.action.ordinal(), event.action.symbol());
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

fn from_value(value: Value) -> Result<LikeEvent, DecodeError> {
    let Value::Record(fields) = value else {
        return Err(DecodeError::InvalidEvent("value is not a record".into()));
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
            .ok_or_else(|| DecodeError::InvalidEvent(format!("missing field {name}")))
    };
    let poison = |e: likes_domain::ValidationError| DecodeError::InvalidEvent(e.to_string());
    let event_id = match field("event_id")? {
        Value::Uuid(u) => EventId::from_uuid(*u).map_err(poison)?,
        Value::String(s) => EventId::parse(s).map_err(poison)?,
        other => {
            return Err(DecodeError::InvalidEvent(format!(
                "event_id: unexpected {other:?}"
            )));
        }
    };
    let long = |name: &str| match field(name)? {
        Value::Long(v) => Ok(*v),
        Value::Int(v) => Ok(i64::from(*v)),
        other => Err(DecodeError::InvalidEvent(format!(
            "{name}: unexpected {other:?}"
        ))),
    };
    let action = match field("action")? {
        Value::Enum(_, symbol) => Action::from_symbol(symbol).map_err(poison)?,
        other => {
            return Err(DecodeError::InvalidEvent(format!(
                "action: unexpected {other:?}"
            )));
        }
    };
    let millis = match field("timestamp")? {
        Value::TimestampMillis(v) | Value::Long(v) => *v,
        other => {
            return Err(DecodeError::InvalidEvent(format!(
                "timestamp: unexpected {other:?}"
            )));
        }
    };
    let timestamp = chrono::DateTime::from_timestamp_millis(millis)
        .ok_or_else(|| DecodeError::InvalidEvent(format!("timestamp out of range: {millis}")))?;
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
        assert!(
            matches!(from_value(value), Err(DecodeError::InvalidEvent(m)) if m.contains("user_id"))
        );
    }

    #[test]
    fn schema_id_reads_the_confluent_header() {
        assert_eq!(schema_id(&[0, 0, 0, 1, 2, 99]), Some(258));
        assert_eq!(schema_id(&[1, 0, 0, 1, 2]), None);
        assert_eq!(schema_id(&[0, 0]), None);
    }
}
