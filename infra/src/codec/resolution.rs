//! Avro schema resolution of decoded records, prepared once per schema: the
//! reader schema (this build's, or a candidate's) and each writer schema id
//! are parsed and their named types resolved a single time, then reused for
//! every record. Resolution is skipped when a writer schema is the reader
//! schema (the usual case: records this build wrote).
//!
//! The resolved named types borrow their schema for `'static`, so each schema
//! is leaked once: one per distinct registry schema a codec meets and one per
//! candidate reader, which is the same residency the registry client's own
//! per-id caches already have (they never evict either).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use apache_avro::Schema;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::ResolvedSchema;
use apache_avro::types::Value;

use crate::Error;

/// A schema records are read as, with its named types resolved.
#[derive(Debug)]
pub(super) struct ReaderSchema {
    schema: &'static Schema,
    names: ResolvedSchema<'static>,
}

impl ReaderSchema {
    /// This build's schema ([`super::SCHEMA`]), made once per process.
    pub(super) fn build() -> &'static ReaderSchema {
        static BUILD: OnceLock<&'static ReaderSchema> = OnceLock::new();
        BUILD.get_or_init(|| {
            // The build's own schema file: a test proves it parses.
            ReaderSchema::leak("schemas/like_event.avsc", super::SCHEMA)
                .unwrap_or_else(|e| panic!("the build's event schema: {e}"))
        })
    }

    /// A reader schema made from `text`, kept for the process's lifetime.
    pub(super) fn leak(source_name: &str, text: &str) -> Result<&'static ReaderSchema, Error> {
        let invalid = |reason: String| Error::InvalidSchema {
            source_name: source_name.to_string(),
            reason,
        };
        let schema = Schema::parse_str(text).map_err(|e| invalid(e.to_string()))?;
        let schema: &'static Schema = Box::leak(Box::new(schema));
        let names = ResolvedSchema::try_from(schema).map_err(|e| invalid(e.to_string()))?;
        Ok(Box::leak(Box::new(ReaderSchema { schema, names })))
    }
}

/// How records of one writer schema are read.
#[derive(Debug)]
pub(super) struct Resolution {
    writer: &'static Schema,
    names: ResolvedSchema<'static>,
    /// The writer schema is the reader's: the value needs no resolution.
    same_as_reader: bool,
}

impl Resolution {
    /// The value of one Avro body written with this writer schema, resolved
    /// to `reader`.
    pub(super) fn read(&self, reader: &ReaderSchema, mut body: &[u8]) -> Result<Value, String> {
        let builder =
            GenericDatumReader::builder(self.writer).resolved_writer_schemata(self.names.clone());
        let datum = if self.same_as_reader {
            builder.build()
        } else {
            builder
                .reader_schema(reader.schema)
                .resolved_reader_schemata(reader.names.clone())
                .build()
        };
        datum
            .and_then(|d| d.read_value(&mut body))
            .map_err(|e| e.to_string())
    }
}

/// The resolutions of one codec, by writer schema id.
#[derive(Debug, Default)]
pub(super) struct Resolutions {
    by_id: RwLock<HashMap<u32, Arc<Resolution>>>,
}

impl Resolutions {
    /// The resolution of `id`, made from its writer schema the first time.
    pub(super) fn get_or_make(
        &self,
        id: u32,
        writer: &Schema,
        reader: &ReaderSchema,
    ) -> Result<Arc<Resolution>, String> {
        if let Some(found) = self
            .by_id
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&id)
        {
            return Ok(found.clone());
        }
        let mut by_id = self
            .by_id
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(found) = by_id.get(&id) {
            return Ok(found.clone());
        }
        let schema: &'static Schema = Box::leak(Box::new(writer.clone()));
        let names = ResolvedSchema::try_from(schema)
            .map_err(|e| format!("cannot resolve the writer schema: {e}"))?;
        let resolution = Arc::new(Resolution {
            writer: schema,
            names,
            same_as_reader: schema == reader.schema,
        });
        by_id.insert(id, resolution.clone());
        Ok(resolution)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"{"type": "record", "name": "LikeEvent", "namespace": "io.likes.events",
        "fields": [
            {"name": "event_id", "type": {"type": "string", "logicalType": "uuid"}},
            {"name": "user_id", "type": "long"},
            {"name": "item_id", "type": "long"},
            {"name": "item_type", "type": "int"},
            {"name": "action", "type": {"type": "enum", "name": "Action", "symbols": ["LIKE", "UNLIKE"]}},
            {"name": "timestamp", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "source", "type": ["null", "string"], "default": null}
        ]}"#;

    fn field<'v>(value: &'v Value, name: &str) -> Option<&'v Value> {
        match value {
            Value::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    fn written(schema: &Schema, value: Value) -> Vec<u8> {
        apache_avro::writer::datum::GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    fn v2_value(source: Option<&str>) -> Value {
        Value::Record(vec![
            ("event_id".into(), Value::Uuid(uuid::Uuid::new_v4())),
            ("user_id".into(), Value::Long(7)),
            ("item_id".into(), Value::Long(9)),
            ("item_type".into(), Value::Int(1)),
            ("action".into(), Value::Enum(1, "UNLIKE".into())),
            (
                "timestamp".into(),
                Value::TimestampMillis(1_700_000_000_000),
            ),
            (
                "source".into(),
                match source {
                    Some(s) => Value::Union(1, Box::new(Value::String(s.into()))),
                    None => Value::Union(0, Box::new(Value::Null)),
                },
            ),
        ])
    }

    #[test]
    fn a_record_of_a_newer_writer_is_read_as_the_build_schema_without_the_new_field() {
        let writer = Schema::parse_str(V2).unwrap();
        let body = written(&writer, v2_value(Some("mobile")));
        let reader = ReaderSchema::build();
        let resolution = Resolutions::default()
            .get_or_make(2, &writer, reader)
            .unwrap();
        assert!(!resolution.same_as_reader);
        let value = resolution.read(reader, &body).unwrap();
        assert_eq!(field(&value, "user_id"), Some(&Value::Long(7)));
        assert_eq!(field(&value, "source"), None);
    }

    #[test]
    fn a_record_of_an_older_writer_takes_the_new_fields_default() {
        let writer = Schema::parse_str(crate::codec::SCHEMA).unwrap();
        let mut body = Vec::new();
        let event = likes_domain::LikeEvent {
            event_id: likes_domain::EventId::generate(),
            user_id: likes_domain::UserId::parse(7).unwrap(),
            item: likes_domain::ItemKey::parse(1, 9).unwrap(),
            action: likes_domain::Action::Like,
            timestamp: chrono::Utc::now(),
        };
        super::super::binary::write(&mut body, &event);
        let reader = ReaderSchema::leak("v2", V2).unwrap();
        let resolution = Resolutions::default()
            .get_or_make(1, &writer, reader)
            .unwrap();
        let value = resolution.read(reader, &body).unwrap();
        assert_eq!(
            field(&value, "source"),
            Some(&Value::Union(0, Box::new(Value::Null)))
        );
        assert_eq!(field(&value, "item_id"), Some(&Value::Long(9)));
    }

    #[test]
    fn the_build_schema_reads_its_own_records_without_resolution() {
        let writer = Schema::parse_str(crate::codec::SCHEMA).unwrap();
        let resolution = Resolutions::default()
            .get_or_make(1, &writer, ReaderSchema::build())
            .unwrap();
        assert!(resolution.same_as_reader);
    }

    #[test]
    fn a_writer_whose_field_changed_type_does_not_resolve() {
        let changed = V2.replace(
            r#"{"name": "user_id", "type": "long"}"#,
            r#"{"name": "user_id", "type": "string"}"#,
        );
        let writer = Schema::parse_str(&changed).unwrap();
        let mut value = v2_value(None);
        if let Value::Record(fields) = &mut value {
            fields[1].1 = Value::String("seven".into());
        }
        let body = written(&writer, value);
        let reader = ReaderSchema::build();
        let resolution = Resolutions::default()
            .get_or_make(3, &writer, reader)
            .unwrap();
        assert!(resolution.read(reader, &body).is_err());
    }
}
