//! Reading a test topic back, record by record, independently of the services:
//! the schema is fetched from the registry by the id in each record's header.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use apache_avro::Schema;
use apache_avro::types::Value;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

/// A record read back: where it was and what it decoded to.
#[derive(Debug)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub schema_id: u32,
    pub value: Value,
}

/// Reads every record of `topic` (all `partitions`, from the start to the current
/// end) and decodes each with the schema the registry holds under its header's id.
pub async fn read_all(
    bootstrap: &str,
    registry_url: &str,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<Vec<Record>> {
    let consumer: BaseConsumer =
        likes_infra::kafka::consumer_config(bootstrap, "topic-reader").create()?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
            remaining.insert(p, high);
        }
    }
    consumer.assign(&tpl)?;
    let http = reqwest::Client::new();
    let mut schemas: HashMap<u32, Schema> = HashMap::new();
    let mut records = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !remaining.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "topic not read in time"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        // A broker that is down shows as an error event; the others serve the
        // read (bounded by the deadline above).
        let Ok(message) = message else {
            continue;
        };
        let payload = message.payload().context("record without value")?;
        let schema_id = likes_infra::codec::schema_id(payload).context("not Confluent framed")?;
        if let std::collections::hash_map::Entry::Vacant(slot) = schemas.entry(schema_id) {
            let body: serde_json::Value = http
                .get(format!("{registry_url}/schemas/ids/{schema_id}"))
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let text = body["schema"]
                .as_str()
                .context("registry answer without schema")?;
            slot.insert(Schema::parse_str(text)?);
        }
        let schema = &schemas[&schema_id];
        let mut reader = &payload[5..];
        let value = apache_avro::reader::datum::GenericDatumReader::builder(schema)
            .build()?
            .read_value(&mut reader)?;
        anyhow::ensure!(reader.is_empty(), "trailing bytes after the datum");
        records.push(Record {
            partition: message.partition(),
            offset: message.offset(),
            key: message
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            schema_id,
            value,
        });
        if let Some(high) = remaining.get(&message.partition())
            && message.offset() + 1 >= *high
        {
            remaining.remove(&message.partition());
        }
    }
    Ok(records)
}

/// How many times each event id is in `env`'s topic.
pub async fn event_copies(env: &crate::TestEnv) -> anyhow::Result<HashMap<uuid::Uuid, usize>> {
    let records = read_all(
        &env.stack.kafka_bootstrap,
        &env.stack.schema_registry_url,
        &env.stack.topic,
        env.partitions,
    )
    .await?;
    let mut copies: HashMap<uuid::Uuid, usize> = HashMap::new();
    for r in &records {
        if let Value::Record(fields) = &r.value
            && let Some((_, Value::Uuid(id))) = fields.iter().find(|(n, _)| n == "event_id")
        {
            *copies.entry(*id).or_default() += 1;
        }
    }
    Ok(copies)
}
