//! The dead-letter side of a test: making poison records and writing them raw
//! to the test's topic, limiting the size a test's dead-letter topic accepts,
//! reading back what reached it, and registering a schema of another type
//! (JSON) under a throwaway subject of the real registry.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;

use crate::TestEnv;

/// One record of the dead-letter topic.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// `datum` in the Confluent framing: magic byte 0, then `schema_id`.
pub fn frame(schema_id: u32, datum: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&schema_id.to_be_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

/// Bytes that do not compress (random), and are not in the Confluent framing.
pub fn garbage(len: usize) -> Vec<u8> {
    let mut bytes = b"garbage:".to_vec();
    while bytes.len() < len {
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// Writes `payload` under `key` to the test's topic as it is, past the
/// project's producer (which only writes framed events), and waits for the ack.
pub async fn send_raw(env: &TestEnv, key: &str, payload: &[u8]) -> anyhow::Result<(i32, i64)> {
    let producer: rdkafka::producer::FutureProducer =
        likes_infra::kafka::producer(&env.stack.kafka_bootstrap, Duration::from_secs(10))?;
    let delivered = producer
        .send(
            rdkafka::producer::FutureRecord::to(&env.stack.topic)
                .key(key)
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)?;
    Ok((delivered.partition, delivered.offset))
}

/// Sets the dead-letter topic's `max.message.bytes`: records larger than this
/// (after compression) are refused by the broker.
pub async fn limit_dead_letter_size(env: &TestEnv, bytes: usize) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> =
        likes_infra::kafka::consumer_config(&env.stack.kafka_bootstrap, "admin").create()?;
    let topic = env.stack.dlq_topic();
    let bytes = bytes.to_string();
    let config = AlterConfig::new(ResourceSpecifier::Topic(&topic))
        .set("max.message.bytes", &bytes)
        .set("cleanup.policy", "delete");
    for result in admin.alter_configs([&config], &AdminOptions::new()).await? {
        if let Err((resource, code)) = result {
            anyhow::bail!("alter {resource:?}: {code}");
        }
    }
    Ok(())
}

/// Reads the dead-letter topic from its start until `n` records arrived or
/// `timeout` passed.
pub fn read_dead_letters(
    env: &TestEnv,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Vec<DeadLetter>> {
    let consumer: BaseConsumer =
        likes_infra::kafka::consumer_config(&env.stack.kafka_bootstrap, "dlq-reader").create()?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset(&env.stack.dlq_topic(), 0, rdkafka::Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + timeout;
    while dead.len() < n && std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_string(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        dead.push(DeadLetter {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            headers,
        });
    }
    Ok(dead)
}

/// A JSON schema registered under a throwaway subject; deleted on `delete`.
pub struct JsonSchema {
    pub id: u32,
    subject: String,
    registry: String,
}

impl JsonSchema {
    /// Registers a small JSON schema under `throwaway-<suffix>`.
    pub async fn register(env: &TestEnv) -> anyhow::Result<Self> {
        let registry = env.stack.schema_registry_url.clone();
        let subject = format!("throwaway-json-{}", env.suffix);
        let body: serde_json::Value = reqwest::Client::new()
            .post(format!("{registry}/subjects/{subject}/versions"))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .json(&serde_json::json!({
                "schemaType": "JSON",
                "schema": r#"{"type":"object","properties":{"liked":{"type":"boolean"}}}"#,
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = body["id"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("registry answer without id: {body}"))?;
        Ok(Self {
            id: u32::try_from(id)?,
            subject,
            registry,
        })
    }

    /// Deletes the subject (soft, then permanently).
    pub async fn delete(self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let url = format!("{}/subjects/{}", self.registry, self.subject);
        http.delete(&url).send().await?.error_for_status()?;
        http.delete(format!("{url}?permanent=true"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}
