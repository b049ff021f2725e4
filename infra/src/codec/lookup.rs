//! What the registry says about a writer schema id the decoder could not
//! resolve, told from typed facts only: the Confluent error code of the
//! registry's answer, the schema type it names, whether the schema parses.
//! The decoder's own error says none of this in a typed way (a JSON schema id
//! and a malformed answer are both a bare message), so the codec asks once
//! more, only on that failure path.
//!
//! Also the memory of ids the registry did not know: the grace period of an
//! unknown id runs from the first time it was not found, so many records with
//! one unknown id wait once in total, not once each.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use schema_registry_converter::async_impl::schema_registry::{SrSettings, get_schema_by_id};
use schema_registry_converter::error::SRCError;
use schema_registry_converter::schema_registry_common::{RawError, SchemaType};

/// The registry's verdict on one schema id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Lookup {
    /// An Avro schema that parses: the decoder's failure was the registry's
    /// state at that moment, not the id's.
    Avro,
    /// The registry says there is no such schema (Confluent error 404xx).
    NotFound,
    /// A schema of another type.
    NotAvro(String),
    /// An Avro schema that does not parse.
    Unparsable(String),
    /// The registry could not be asked, or did not answer with a schema.
    Unavailable(String),
}

/// Asks the registry about `id` and classifies the answer.
pub(super) async fn inspect(settings: &SrSettings, id: u32) -> Lookup {
    match get_schema_by_id(id, settings).await {
        Err(e) if is_not_found(&e) => Lookup::NotFound,
        Err(e) => Lookup::Unavailable(e.to_string()),
        Ok(schema) => match schema.schema_type {
            SchemaType::Avro if !schema.references.is_empty() => {
                // Only the decoder resolves references; it will be asked again.
                Lookup::Avro
            }
            SchemaType::Avro => match apache_avro::Schema::parse_str(&schema.schema) {
                Ok(_) => Lookup::Avro,
                Err(e) => Lookup::Unparsable(e.to_string()),
            },
            SchemaType::Json => Lookup::NotAvro("JSON".into()),
            SchemaType::Protobuf => Lookup::NotAvro("PROTOBUF".into()),
            SchemaType::Other(other) => Lookup::NotAvro(other),
            other => Lookup::NotAvro(format!("{other:?}")),
        },
    }
}

/// Whether the registry answered "not found": the converter keeps the
/// registry's error body as the error's source, with its Confluent code
/// (40403 "schema not found" for an id; 404xx are all "not found").
fn is_not_found(e: &SRCError) -> bool {
    std::error::Error::source(e)
        .and_then(|source| source.downcast_ref::<RawError>())
        .is_some_and(|raw| raw.error_code == 404 || raw.error_code / 100 == 404)
}

/// Schema ids the registry did not know, with when that was first seen.
#[derive(Debug, Default)]
pub(super) struct UnknownIds {
    since: Mutex<HashMap<u32, Instant>>,
}

/// Beyond this many remembered ids, those whose grace has long passed are
/// forgotten (they get a fresh grace if they come back): garbage with a
/// plausible header must not grow memory without bound.
const REMEMBERED: usize = 1024;

impl UnknownIds {
    /// How long `id` has been unknown, starting its clock now if it was not.
    pub(super) fn unknown_for(&self, id: u32, grace: Duration) -> Duration {
        let mut since = self
            .since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if since.len() >= REMEMBERED && !since.contains_key(&id) {
            since.retain(|_, at| at.elapsed() < grace * 2);
        }
        since.entry(id).or_insert_with(Instant::now).elapsed()
    }

    /// `id` resolved: a later "not found" starts a new grace period.
    pub(super) fn forget(&self, id: u32) {
        self.since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confluent_not_found_body_means_not_found_and_other_answers_do_not() {
        let with_body = |code: u32| {
            let body: RawError =
                serde_json::from_str(&format!(r#"{{"error_code":{code},"message":"m"}}"#))
                    .expect("a registry error body");
            SRCError::non_retryable_with_cause(body, "status")
        };
        assert!(is_not_found(&with_body(40403)));
        assert!(is_not_found(&with_body(40401)));
        assert!(!is_not_found(&with_body(50001)));
        assert!(
            !is_not_found(&with_body(0)),
            "a body that is not the registry's"
        );
        assert!(!is_not_found(&SRCError::retryable_with_cause(
            std::io::Error::other("connection refused"),
            "http call to schema registry failed"
        )));
        assert!(!is_not_found(&SRCError::non_retryable_without_cause(
            "type Json, is not correct"
        )));
    }

    #[test]
    fn an_unknown_id_keeps_the_clock_of_its_first_sighting_until_it_resolves() {
        let ids = UnknownIds::default();
        let grace = Duration::from_secs(60);
        assert!(ids.unknown_for(7, grace) < Duration::from_millis(50));
        std::thread::sleep(Duration::from_millis(60));
        assert!(ids.unknown_for(7, grace) >= Duration::from_millis(60));
        assert!(ids.unknown_for(8, grace) < Duration::from_millis(50));
        ids.forget(7);
        assert!(ids.unknown_for(7, grace) < Duration::from_millis(50));
    }
}
