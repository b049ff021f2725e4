//! One archive file: an Avro Object Container File anyone can read without
//! this project. Its schema (in the header, as OCF requires) is a wrapper
//! record per log record: the Kafka offset, broker timestamp and key, the
//! registry id of the event's writer schema, and the event itself typed by
//! that writer schema, so a generic Avro reader sees ordinary fields. A file
//! holds the events of one writer schema (the archiver starts a new file when
//! the id changes), so the header always names the schema its events were
//! written with.
//!
//! A record the writer schema cannot decode (poison, a schema id the registry
//! does not know, not framed at all) is kept byte for byte in `raw`: the
//! archive copies every record of the log, decodable or not, and hands each
//! back exactly as the topic held it (`Record::payload`), so readers decode
//! archived and live records with one codec.

use std::collections::HashMap;

use apache_avro::types::Value;
use apache_avro::{Codec, DeflateSettings, Reader, Schema, Writer};

use crate::Error;

/// File metadata keys (OCF user metadata), for tools and auditors.
pub const META_TOPIC: &str = "likes.topic";
pub const META_PARTITION: &str = "likes.partition";
pub const META_FIRST_OFFSET: &str = "likes.first_offset";
pub const META_LAST_OFFSET: &str = "likes.last_offset";
pub const META_SCHEMA_ID: &str = "likes.schema_id";

/// One record of the log as the topic holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: i64,
    /// The broker's timestamp, milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    /// The value: Confluent-framed Avro for every good record.
    pub payload: Option<Vec<u8>>,
}

/// The registry id of a writer schema and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterSchema {
    pub id: u32,
    pub json: String,
}

/// The file schema around events of `writer` (none: a file of raw records).
fn wrapper_schema(writer: Option<&WriterSchema>) -> Result<(Schema, Option<Schema>), String> {
    let event_type = match writer {
        Some(w) => {
            let parsed: serde_json::Value =
                serde_json::from_str(&w.json).map_err(|e| e.to_string())?;
            serde_json::json!(["null", parsed])
        }
        None => serde_json::json!("null"),
    };
    let wrapper = serde_json::json!({
        "type": "record",
        "name": "ArchivedRecord",
        "namespace": "io.likes.archive",
        "doc": "One record of the like-events log: where it sat, and the event as written (or its raw bytes when it could not be decoded).",
        "fields": [
            {"name": "offset", "type": "long", "doc": "Offset in the partition."},
            {"name": "timestamp", "type": ["null", {"type": "long", "logicalType": "timestamp-millis"}], "default": null, "doc": "Broker timestamp."},
            {"name": "key", "type": ["null", "bytes"], "default": null, "doc": "Kafka key (the item id as decimal text)."},
            {"name": "schema_id", "type": ["null", "int"], "default": null, "doc": "Registry id of the event's writer schema."},
            {"name": "event", "type": event_type, "default": null, "doc": "The event, typed by its writer schema."},
            {"name": "raw", "type": ["null", "bytes"], "default": null, "doc": "The record's value as the topic held it, when it is not an event of this file's schema."}
        ]
    });
    let schema = Schema::parse(&wrapper).map_err(|e| e.to_string())?;
    let event = match writer {
        Some(w) => Some(Schema::parse_str(&w.json).map_err(|e| e.to_string())?),
        None => None,
    };
    Ok((schema, event))
}

/// The Confluent frame of a datum written with schema `id`.
fn framed(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(5 + datum.len());
    bytes.push(0);
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

fn optional(value: Option<Value>) -> Value {
    match value {
        Some(v) => Value::Union(1, Box::new(v)),
        None => Value::Union(0, Box::new(Value::Null)),
    }
}

/// A file being filled: the records of one partition from `first` on, whose
/// events share one writer schema.
pub struct FileBuilder {
    topic: String,
    partition: i32,
    first: i64,
    writer: Option<WriterSchema>,
    event_schema: Option<Schema>,
    values: Vec<Value>,
    bytes: usize,
}

impl FileBuilder {
    /// An empty file of `partition` starting at offset `first`, for events
    /// of `writer` (none: only raw records until one decodes).
    pub fn new(
        topic: &str,
        partition: i32,
        first: i64,
        writer: Option<WriterSchema>,
    ) -> Result<Self, Error> {
        let (_, event_schema) = wrapper_schema(writer.as_ref()).map_err(|reason| {
            Error::Encode(format!(
                "writer schema {:?} cannot be archived: {reason}",
                writer.as_ref().map(|w| w.id)
            ))
        })?;
        Ok(Self {
            topic: topic.to_string(),
            partition,
            first,
            writer,
            event_schema,
            values: Vec::new(),
            bytes: 0,
        })
    }

    /// The writer schema id the file's events have.
    pub fn schema_id(&self) -> Option<u32> {
        self.writer.as_ref().map(|w| w.id)
    }

    /// The first offset the file covers.
    pub fn first(&self) -> i64 {
        self.first
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Roughly how many bytes the records take before compression.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Adds a record: as a typed event when it is framed with this file's
    /// schema id and decodes with it, else as its raw bytes.
    pub fn push(&mut self, record: &Record) {
        let event = match (&self.writer, &self.event_schema, &record.payload) {
            (Some(w), Some(schema), Some(payload))
                if crate::codec::schema_id(payload) == Some(w.id) =>
            {
                let mut datum = &payload[5..];
                let read = apache_avro::reader::datum::GenericDatumReader::builder(schema)
                    .build()
                    .and_then(|r| r.read_value(&mut datum));
                match read {
                    Ok(value) if datum.is_empty() => Some(value),
                    _ => None,
                }
            }
            _ => None,
        };
        let (schema_id, raw) = match &event {
            Some(_) => (self.schema_id(), None),
            None => (None, record.payload.clone()),
        };
        self.bytes += 32 + record.payload.as_ref().map_or(0, Vec::len);
        self.values.push(Value::Record(vec![
            ("offset".into(), Value::Long(record.offset)),
            (
                "timestamp".into(),
                optional(record.timestamp_ms.map(Value::TimestampMillis)),
            ),
            ("key".into(), optional(record.key.clone().map(Value::Bytes))),
            (
                "schema_id".into(),
                optional(schema_id.map(|id| Value::Int(id as i32))),
            ),
            (
                "event".into(),
                match (&self.writer, event) {
                    (Some(_), e) => optional(e),
                    (None, _) => Value::Null,
                },
            ),
            ("raw".into(), optional(raw.map(Value::Bytes))),
        ]));
    }

    /// The OCF bytes of the file covering `first..=last` (deflate blocks).
    pub fn finish(self, last: i64) -> Result<Vec<u8>, Error> {
        let encode = |e: apache_avro::Error| Error::Encode(format!("archive file: {e}"));
        let (schema, _) = wrapper_schema(self.writer.as_ref()).map_err(Error::Encode)?;
        let mut metadata = HashMap::new();
        let mut meta = |key: &str, value: String| {
            metadata.insert(key.to_string(), Value::Bytes(value.into_bytes()));
        };
        meta(META_TOPIC, self.topic.clone());
        meta(META_PARTITION, self.partition.to_string());
        meta(META_FIRST_OFFSET, self.first.to_string());
        meta(META_LAST_OFFSET, last.to_string());
        if let Some(id) = self.schema_id() {
            meta(META_SCHEMA_ID, id.to_string());
        }
        let mut writer = Writer::builder()
            .schema(&schema)
            .writer(Vec::with_capacity(self.bytes / 2))
            .codec(Codec::Deflate(DeflateSettings::default()))
            .user_metadata(metadata)
            .build()
            .map_err(encode)?;
        writer.extend_from_slice(&self.values).map_err(encode)?;
        writer.into_inner().map_err(encode)
    }
}

/// A file read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedFile {
    pub partition: i32,
    pub first: i64,
    pub last: i64,
    pub schema_id: Option<u32>,
    pub records: Vec<Record>,
}

/// Reads a file's records back, each with the payload the topic held.
/// `path` is only for the error.
pub fn decode(bytes: &[u8], path: &str) -> Result<DecodedFile, Error> {
    let corrupt = |reason: String| Error::ArchiveCorrupt {
        path: path.to_string(),
        reason,
    };
    let reader = Reader::new(bytes).map_err(|e| corrupt(e.to_string()))?;
    let meta = |key: &str| -> Result<String, Error> {
        reader
            .user_metadata()
            .get(key)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .ok_or_else(|| corrupt(format!("no {key} in the header")))
    };
    let number = |key: &str| -> Result<i64, Error> {
        meta(key)?
            .parse::<i64>()
            .map_err(|e| corrupt(format!("{key}: {e}")))
    };
    let partition = i32::try_from(number(META_PARTITION)?)
        .map_err(|e| corrupt(format!("{META_PARTITION}: {e}")))?;
    let (first, last) = (number(META_FIRST_OFFSET)?, number(META_LAST_OFFSET)?);
    let schema_id = match reader.user_metadata().get(META_SCHEMA_ID) {
        Some(_) => Some(
            u32::try_from(number(META_SCHEMA_ID)?)
                .map_err(|e| corrupt(format!("{META_SCHEMA_ID}: {e}")))?,
        ),
        None => None,
    };
    let event_schema = event_schema(reader.writer_schema());
    let mut records = Vec::new();
    for value in reader {
        let value = value.map_err(|e| corrupt(e.to_string()))?;
        records.push(record(value, schema_id, event_schema.as_ref()).map_err(corrupt)?);
    }
    Ok(DecodedFile {
        partition,
        first,
        last,
        schema_id,
        records,
    })
}

/// The events' writer schema inside the file schema.
fn event_schema(file: &Schema) -> Option<Schema> {
    let Schema::Record(record) = file else {
        return None;
    };
    let field = record.fields.iter().find(|f| f.name == "event")?;
    match &field.schema {
        Schema::Union(union) => union.variants().get(1).cloned(),
        _ => None,
    }
}

fn record(value: Value, schema_id: Option<u32>, event: Option<&Schema>) -> Result<Record, String> {
    let Value::Record(fields) = value else {
        return Err("a record that is not a record".into());
    };
    let mut offset = None;
    let mut timestamp_ms = None;
    let mut key = None;
    let mut payload = None;
    for (name, value) in fields {
        let inner = match value {
            Value::Union(_, inner) => *inner,
            other => other,
        };
        match (name.as_str(), inner) {
            ("offset", Value::Long(o)) => offset = Some(o),
            ("timestamp", Value::TimestampMillis(t) | Value::Long(t)) => timestamp_ms = Some(t),
            ("key", Value::Bytes(k)) => key = Some(k),
            ("raw", Value::Bytes(raw)) => payload = Some(raw),
            ("event", Value::Null) | (_, Value::Null) => {}
            ("event", event_value) => {
                let (Some(id), Some(schema)) = (schema_id, event) else {
                    return Err("an event in a file without a writer schema".into());
                };
                let datum = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
                    .build()
                    .and_then(|w| w.write_value_to_vec(event_value))
                    .map_err(|e| format!("event does not fit its schema: {e}"))?;
                payload = Some(framed(id, &datum));
            }
            _ => {}
        }
    }
    Ok(Record {
        offset: offset.ok_or("a record without an offset")?,
        timestamp_ms,
        key,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = crate::codec::SCHEMA;

    fn event_payload(id: u32, user: i64) -> Vec<u8> {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let value = Value::Record(vec![
            (
                "event_id".into(),
                Value::Uuid(uuid::Uuid::from_u128(user as u128)),
            ),
            ("user_id".into(), Value::Long(user)),
            ("item_id".into(), Value::Long(7)),
            ("item_type".into(), Value::Int(1)),
            ("action".into(), Value::Enum(0, "LIKE".into())),
            (
                "timestamp".into(),
                Value::TimestampMillis(1_700_000_000_000),
            ),
        ]);
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap();
        framed(id, &datum)
    }

    fn writer(id: u32) -> WriterSchema {
        WriterSchema {
            id,
            json: SCHEMA.into(),
        }
    }

    #[test]
    fn a_file_gives_back_every_record_as_the_topic_held_it() {
        let records = vec![
            Record {
                offset: 10,
                timestamp_ms: Some(1_700_000_000_001),
                key: Some(b"7".to_vec()),
                payload: Some(event_payload(3, 1)),
            },
            // poison: kept byte for byte
            Record {
                offset: 12,
                timestamp_ms: None,
                key: None,
                payload: Some(vec![0, 0, 0, 0, 3, 255, 255]),
            },
            // another schema id: raw too
            Record {
                offset: 13,
                timestamp_ms: Some(5),
                key: Some(b"7".to_vec()),
                payload: Some(event_payload(4, 2)),
            },
            Record {
                offset: 14,
                timestamp_ms: Some(6),
                key: None,
                payload: None,
            },
        ];
        let mut file = FileBuilder::new("t", 5, 10, Some(writer(3))).unwrap();
        for r in &records {
            file.push(r);
        }
        let bytes = file.finish(15).unwrap();
        let back = decode(&bytes, "x").unwrap();
        assert_eq!((back.partition, back.first, back.last), (5, 10, 15));
        assert_eq!(back.schema_id, Some(3));
        assert_eq!(back.records, records);
    }

    #[test]
    fn a_file_without_a_writer_schema_holds_raw_records() {
        let record = Record {
            offset: 0,
            timestamp_ms: Some(1),
            key: None,
            payload: Some(b"not avro".to_vec()),
        };
        let mut file = FileBuilder::new("t", 0, 0, None).unwrap();
        file.push(&record);
        let back = decode(&file.finish(0).unwrap(), "x").unwrap();
        assert_eq!(back.schema_id, None);
        assert_eq!(back.records, vec![record]);
    }

    #[test]
    fn bytes_that_are_not_a_file_are_corrupt() {
        assert!(matches!(
            decode(b"Obj\x01garbage", "p"),
            Err(Error::ArchiveCorrupt { .. })
        ));
    }
}
