//! The schema registry's subject-level API, spoken over its Confluent-compatible
//! REST interface (`SCHEMA_REGISTRY_URL`, e.g. Apicurio's `/apis/ccompat/v7`):
//! the subject's compatibility level, asking whether a schema is compatible,
//! the registered versions, and registering a schema. The codec's per-id
//! lookups stay in [`crate::codec`]; this is the gate a schema change passes.
//!
//! Answers are classified from typed facts only (HTTP status and the
//! Confluent `error_code` of the body): 409 or 42201/42202 mean the registry
//! refuses the schema (permanent), a 404xx means "no such subject", anything
//! else that is not a success means the registry is not usable now
//! (transient). The registry's message is kept for the operator, never matched.

pub mod changes;

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::Error;

/// The compatibility level `likes-replay setup` sets on the value subject.
///
/// Transitive because the log (and its archive) keeps every version forever:
/// each new schema must read, and be read by, every older one, not only the
/// last. Full (both directions) because readers and writers roll out in any
/// order: an old projector must read records of a new ingest and a new one
/// old records. Under BACKWARD a removed field would pass; here it is refused
/// unless it had a default.
pub const COMPATIBILITY: &str = "FULL_TRANSITIVE";

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

/// One registered version of a subject.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Version {
    pub version: u32,
    pub id: u32,
    pub schema: String,
}

/// Whether the registry would accept a schema under the subject's level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub compatible: bool,
    /// The registry's reasons, when it gives any (Apicurio gives none here).
    pub messages: Vec<String>,
}

/// A client of one registry.
#[derive(Debug, Clone)]
pub struct Registry {
    http: reqwest::Client,
    base: String,
}

/// The body of a registry error answer.
#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error_code: i64,
    #[serde(default)]
    message: String,
}

/// A failed call, before it is given a meaning.
enum Failure {
    /// No such subject or version (Confluent 404xx).
    NotFound,
    /// The registry refuses the schema: incompatible (409) or invalid (422xx).
    Refused { code: i64, message: String },
    /// The registry cannot be used right now.
    Unavailable(String),
}

impl Registry {
    /// A client of the registry at `registry_url` (a Confluent-compatible base URL).
    pub fn new(registry_url: &str) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| Error::RegistryUnavailable(format!("no http client: {e}")))?;
        Ok(Self {
            http,
            base: registry_url.trim_end_matches('/').to_string(),
        })
    }

    /// The compatibility level set on `subject` itself, if any.
    pub async fn compatibility(&self, subject: &str) -> Result<Option<String>, Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Config {
            compatibility_level: Option<String>,
            compatibility: Option<String>,
        }
        let url = format!("{}/config/{}", self.base, subject);
        match self.call::<Config>(self.http.get(url)).await {
            Ok(c) => Ok(c.compatibility_level.or(c.compatibility)),
            Err(Failure::NotFound) => Ok(None),
            Err(f) => Err(unavailable(f)),
        }
    }

    /// Sets `subject`'s compatibility level.
    pub async fn set_compatibility(&self, subject: &str, level: &str) -> Result<(), Error> {
        let url = format!("{}/config/{}", self.base, subject);
        let request = self
            .http
            .put(url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(json!({ "compatibility": level }).to_string());
        self.call::<serde_json::Value>(request)
            .await
            .map(drop)
            .map_err(unavailable)
    }

    /// Whether `schema` may be registered under `subject` at its level (a
    /// subject without versions accepts anything).
    pub async fn check(&self, subject: &str, schema: &str) -> Result<Verdict, Error> {
        #[derive(Deserialize)]
        struct Answer {
            is_compatible: bool,
            #[serde(default)]
            messages: Vec<String>,
        }
        let url = format!(
            "{}/compatibility/subjects/{}/versions/latest?verbose=true",
            self.base, subject
        );
        match self.call::<Answer>(self.post_schema(url, schema)).await {
            Ok(a) => Ok(Verdict {
                compatible: a.is_compatible,
                messages: a.messages,
            }),
            Err(Failure::NotFound) => Ok(Verdict {
                compatible: true,
                messages: Vec::new(),
            }),
            Err(Failure::Refused { message, .. }) => Ok(Verdict {
                compatible: false,
                messages: vec![message],
            }),
            Err(f) => Err(unavailable(f)),
        }
    }

    /// Every registered version of `subject`, oldest first (none when the
    /// subject does not exist).
    pub async fn versions(&self, subject: &str) -> Result<Vec<Version>, Error> {
        let url = format!("{}/subjects/{}/versions", self.base, subject);
        let numbers: Vec<u32> = match self.call(self.http.get(url)).await {
            Ok(numbers) => numbers,
            Err(Failure::NotFound) => return Ok(Vec::new()),
            Err(f) => return Err(unavailable(f)),
        };
        let mut versions = Vec::with_capacity(numbers.len());
        for number in numbers {
            let url = format!("{}/subjects/{}/versions/{}", self.base, subject, number);
            match self.call::<Version>(self.http.get(url)).await {
                Ok(v) => versions.push(v),
                // Deleted between the two calls: it is no longer a version.
                Err(Failure::NotFound) => {}
                Err(f) => return Err(unavailable(f)),
            }
        }
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    /// The latest registered version of `subject`, if it has any.
    pub async fn latest(&self, subject: &str) -> Result<Option<Version>, Error> {
        let url = format!("{}/subjects/{}/versions/latest", self.base, subject);
        match self.call::<Version>(self.http.get(url)).await {
            Ok(v) => Ok(Some(v)),
            Err(Failure::NotFound) => Ok(None),
            Err(f) => Err(unavailable(f)),
        }
    }

    /// Registers `schema` under `subject` (idempotent: a schema registered
    /// before keeps its id) and returns its id. A schema the registry refuses
    /// is [`Error::SchemaRefused`], naming the changes that make it
    /// incompatible with the registered versions.
    pub async fn register(&self, subject: &str, schema: &str) -> Result<u32, Error> {
        #[derive(Deserialize)]
        struct Registered {
            id: u32,
        }
        let url = format!("{}/subjects/{}/versions", self.base, subject);
        match self.call::<Registered>(self.post_schema(url, schema)).await {
            Ok(r) => Ok(r.id),
            Err(Failure::Refused { code, message }) => {
                let changes = match self.versions(subject).await {
                    Ok(versions) => changes::against_versions(&versions, schema),
                    Err(_) => Vec::new(),
                };
                Err(Error::SchemaRefused {
                    subject: subject.to_string(),
                    changes,
                    registry: format!("{code}: {message}"),
                })
            }
            Err(f) => Err(unavailable(f)),
        }
    }

    fn post_schema(&self, url: String, schema: &str) -> reqwest::RequestBuilder {
        self.http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(json!({ "schema": schema }).to_string())
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, Failure> {
        let response = request
            .send()
            .await
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| Failure::Unavailable(e.to_string()))?;
        if status.is_success() {
            return serde_json::from_slice(&body)
                .map_err(|e| Failure::Unavailable(format!("unexpected answer ({status}): {e}")));
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let code = error.as_ref().map_or(0, |e| e.error_code);
        let message = error.map_or_else(
            || String::from_utf8_lossy(&body).into_owned(),
            |e| e.message,
        );
        Err(classify(status.as_u16(), code, message))
    }
}

/// The meaning of a failed answer: its HTTP status and Confluent error code.
fn classify(status: u16, code: i64, message: String) -> Failure {
    match (status, code) {
        (404, _) => Failure::NotFound,
        (409, _) | (_, 409) | (422, _) | (_, 42201) | (_, 42202) => {
            Failure::Refused { code, message }
        }
        _ => Failure::Unavailable(format!("registry answered {status} ({code}): {message}")),
    }
}

fn unavailable(f: Failure) -> Error {
    match f {
        Failure::NotFound => Error::RegistryUnavailable("registry answered 404".into()),
        Failure::Refused { code, message } => {
            Error::RegistryUnavailable(format!("registry refused the request ({code}): {message}"))
        }
        Failure::Unavailable(reason) => Error::RegistryUnavailable(reason),
    }
}

/// The value subject of `topic` (the Confluent topic-name strategy).
pub fn value_subject(topic: &str) -> String {
    format!("{topic}-value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conflict_or_an_invalid_schema_is_a_refusal_and_other_errors_are_not() {
        assert!(matches!(
            classify(409, 409, "m".into()),
            Failure::Refused { .. }
        ));
        assert!(matches!(
            classify(422, 42201, "m".into()),
            Failure::Refused { .. }
        ));
        assert!(matches!(
            classify(404, 40401, "m".into()),
            Failure::NotFound
        ));
        assert!(matches!(
            classify(500, 50001, "m".into()),
            Failure::Unavailable(_)
        ));
        assert!(matches!(
            classify(503, 0, "m".into()),
            Failure::Unavailable(_)
        ));
    }
}
