//! `GET /readyz`: is each dependency of a write reachable right now? Kafka
//! (topic metadata), the schema registry and Redis, each checked with a short
//! timeout, all at once.

use std::sync::Arc;
use std::time::Duration;

use likes_infra::kafka;
use likes_infra::redis::Redis;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tracing::instrument;

const TIMEOUT: Duration = Duration::from_secs(2);

/// The probes of one instance.
pub struct Readiness {
    kafka: Arc<BaseConsumer>,
    topic: String,
    http: reqwest::Client,
    registry_url: String,
}

/// Why a dependency is not ready: a stable code for the public body. The
/// driver's own words (host names, addresses, library messages) go to the log
/// only, never to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Down {
    /// It could not be reached or refused the probe.
    Unreachable,
    /// It did not answer within the probe's timeout.
    TimedOut,
    /// Kafka answered, but the topic has no partitions (not set up).
    NoPartitions,
    /// It answered with an error status.
    BadAnswer,
}

impl Down {
    pub fn code(self) -> &'static str {
        match self {
            Down::Unreachable => "unreachable",
            Down::TimedOut => "timed_out",
            Down::NoPartitions => "no_partitions",
            Down::BadAnswer => "bad_answer",
        }
    }
}

/// One dependency's state: `None` when ready, else why not (and the detail,
/// for the log).
pub type Check = (&'static str, Option<(Down, String)>);

impl Readiness {
    pub fn new(bootstrap: &str, topic: &str, registry_url: &str) -> anyhow::Result<Self> {
        // Never subscribes: the client is only asked for metadata.
        let kafka: BaseConsumer =
            kafka::consumer_config(bootstrap, "likes-ingest-readiness").create()?;
        Ok(Self {
            kafka: Arc::new(kafka),
            topic: topic.to_string(),
            http: reqwest::Client::builder().timeout(TIMEOUT).build()?,
            registry_url: registry_url.trim_end_matches('/').to_string(),
        })
    }

    /// Probes Kafka, the registry and Redis concurrently.
    #[instrument(skip_all)]
    pub async fn check(&self, redis: &Redis) -> Vec<Check> {
        let (kafka, registry, redis) =
            tokio::join!(self.kafka(), self.registry(), self.redis(redis));
        vec![
            ("kafka", kafka),
            ("schema_registry", registry),
            ("redis", redis),
        ]
    }

    async fn kafka(&self) -> Option<(Down, String)> {
        let client = self.kafka.clone();
        let topic = self.topic.clone();
        let probe = tokio::task::spawn_blocking(move || {
            let metadata = client.fetch_metadata(Some(&topic), TIMEOUT)?;
            Ok::<usize, rdkafka::error::KafkaError>(
                metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.partitions().len())
                    .sum(),
            )
        });
        match probe.await {
            Ok(Ok(0)) => Some((
                Down::NoPartitions,
                format!("topic {} has no partitions", self.topic),
            )),
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some((Down::Unreachable, e.to_string())),
            Err(e) => Some((Down::Unreachable, e.to_string())),
        }
    }

    async fn registry(&self) -> Option<(Down, String)> {
        let url = format!("{}/subjects", self.registry_url);
        match self.http.get(url).send().await {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some((Down::BadAnswer, format!("registry answered {}", r.status()))),
            Err(e) if e.is_timeout() => Some((Down::TimedOut, e.to_string())),
            Err(e) => Some((Down::Unreachable, e.to_string())),
        }
    }

    async fn redis(&self, redis: &Redis) -> Option<(Down, String)> {
        match tokio::time::timeout(TIMEOUT, redis.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some((Down::Unreachable, e.to_string())),
            Err(_) => Some((Down::TimedOut, "no answer to PING".into())),
        }
    }
}
