//! `GET /readyz`: is each dependency of a write reachable right now? Kafka
//! (topic metadata), the schema registry and Redis, each checked with a short
//! timeout, all at once; and does every PostgreSQL shard that answers hold
//! the shard map this process computes (`postgres_shard_map`: a shard that
//! does not answer is not a failure, since writes do not need it and its
//! counts are served from Redis, but a shard whose map differs is). The probes are infra's; this module decides what the
//! public body says about them.

use std::time::Duration;

use likes_infra::codec::RegistryProbe;
use likes_infra::kafka::readiness::KafkaProbe;
use likes_infra::redis::Redis;
use likes_infra::{Down, Unready};
use tracing::instrument;

use crate::projection::Projection;

const TIMEOUT: Duration = Duration::from_secs(2);

/// The probes of one instance.
pub struct Readiness {
    kafka: KafkaProbe,
    registry: RegistryProbe,
}

/// The stable code of why a dependency is not ready, for the public body.
/// The driver's own words (host names, addresses, library messages) go to
/// the log only, never to a client.
pub fn code(down: Down) -> &'static str {
    match down {
        Down::Unreachable => "unreachable",
        Down::TimedOut => "timed_out",
        Down::NoPartitions => "no_partitions",
        Down::BadAnswer => "bad_answer",
    }
}

/// One dependency's state: `None` when ready, else why not (and the detail,
/// for the log).
pub type Check = (&'static str, Option<(Down, String)>);

impl Readiness {
    pub fn new(bootstrap: &str, topic: &str, registry_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            kafka: KafkaProbe::new(bootstrap, "likes-ingest-readiness", topic)?,
            registry: RegistryProbe::new(registry_url, TIMEOUT)?,
        })
    }

    /// Probes Kafka, the registry, Redis and the shards' maps concurrently.
    #[instrument(level = "debug", skip_all)]
    pub async fn check(&self, redis: &Redis, projection: &Projection) -> Vec<Check> {
        let (kafka, registry, redis, shard_map) = tokio::join!(
            self.kafka.probe(TIMEOUT),
            self.registry.probe(),
            self.redis(redis),
            projection.map_problem(TIMEOUT)
        );
        vec![
            ("kafka", outcome(kafka)),
            ("schema_registry", outcome(registry)),
            ("redis", redis),
            (
                "postgres_shard_map",
                shard_map.map(|detail| (Down::BadAnswer, detail)),
            ),
        ]
    }

    async fn redis(&self, redis: &Redis) -> Option<(Down, String)> {
        match tokio::time::timeout(TIMEOUT, redis.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some((Down::Unreachable, e.to_string())),
            Err(_) => Some((Down::TimedOut, "no answer to PING".into())),
        }
    }
}

fn outcome(probe: Result<(), Unready>) -> Option<(Down, String)> {
    probe.err().map(|u| (u.down, u.detail))
}
