//! Building and running the service: connect to the stack, bind, serve until
//! the shutdown future resolves, then flush the producer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use likes_infra::kafka::Publisher;
use likes_infra::kafka::ends::LogEnds;
use likes_infra::redis::Redis;
use likes_infra::redis::counts::CountCache;
use likes_infra::redis::likers::{self, RecentLikers};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::freshness::Freshness;
use crate::lookups::Lookups;
use crate::progress::Progress;
use crate::projection::Projection;
use crate::protection::Protection;
use crate::readiness::Readiness;
use crate::{Limits, Settings, filters, observability};

/// What the handlers share.
pub struct State {
    pub publisher: Publisher,
    /// The Redis connection the adapters below share (readiness pings it).
    pub redis: Redis,
    pub cache: CountCache,
    /// The PostgreSQL projection, a pool per shard.
    pub projection: Arc<Projection>,
    /// Batched projection lookups for the optimistic count.
    pub lookups: Lookups,
    /// Read-your-writes waits: one shared poller of the projected offsets.
    pub progress: Progress,
    /// The projection watch: how fresh each partition's counts are.
    pub freshness: Freshness,
    pub likers: RecentLikers,
    pub protection: Protection,
    pub limits: Limits,
    pub readiness: Readiness,
    /// `None` when another metrics recorder owns the process.
    pub metrics: Option<PrometheusHandle>,
}

/// A bound, ready-to-serve ingest service.
pub struct Application {
    listener: TcpListener,
    state: Arc<State>,
    max_body_bytes: u64,
}

/// The count cache: single counts read through a client-side cache when
/// `REDIS_CLIENT_CACHE_ENTRIES` is set and Redis is one node.
async fn count_cache(
    stack: &likes_infra::settings::StackSettings,
    redis: &Redis,
    limits: &Limits,
) -> anyhow::Result<CountCache> {
    let Some(entries) = limits.redis_client_cache else {
        return Ok(CountCache::new(redis));
    };
    let reads =
        Redis::connect_client_cached(&stack.redis_address(), &stack.redis_key_prefix, entries)
            .await?;
    Ok(match reads {
        Some(reads) => CountCache::reading_through(redis, &reads),
        None => {
            tracing::warn!("redis client cache ignored: on a cluster counts are read from redis");
            CountCache::new(redis)
        }
    })
}

impl Application {
    /// Connects to Kafka, the registry (registering the schema), PostgreSQL and
    /// Redis, and binds the listen address; `limits` come from
    /// [`Limits::from_env`] in the binary, from the test harness otherwise.
    /// PostgreSQL need not be up (nor Kafka, with one shard: several shards
    /// need the topic's partition count), but a shard that answers with a
    /// recorded shard map other than ours refuses the start (see
    /// [`crate::projection`]).
    pub async fn build(settings: &Settings, limits: Limits) -> anyhow::Result<Self> {
        let stack = &settings.stack;
        let publisher = Publisher::new(
            &stack.kafka_bootstrap,
            &stack.topic,
            &stack.schema_registry_url,
            settings.produce_timeout,
            settings.producer_linger,
        )?;
        let schema_id = publisher.codec().register().await?;
        tracing::info!(schema_id, "schema registered");
        let redis = Redis::connect(&stack.redis_address(), &stack.redis_key_prefix).await?;
        let projection = Arc::new(Projection::connect(stack).await?);
        let listener = TcpListener::bind(settings.listen_addr).await?;
        let readiness = Readiness::new(
            &stack.kafka_bootstrap,
            &stack.topic,
            &stack.schema_registry_url,
        )?;
        let metrics = observability::install(limits.max_in_flight);
        Ok(Self {
            listener,
            state: Arc::new(State {
                publisher,
                likers: RecentLikers::new(&redis, likers::DEFAULT_KEEP),
                protection: Protection::new(&redis, &limits, settings.produce_timeout),
                cache: count_cache(stack, &redis, &limits).await?,
                redis,
                lookups: Lookups::spawn(
                    projection.clone(),
                    crate::lookups::batch_wait(settings.producer_linger),
                ),
                progress: Progress::spawn(projection.clone(), limits.read_your_writes_max_waiters),
                freshness: Freshness::spawn(
                    projection.clone(),
                    LogEnds::new(&stack.kafka_bootstrap, &stack.topic)?,
                ),
                projection,
                limits,
                readiness,
                metrics,
            }),
            max_body_bytes: settings.max_body_bytes,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, lets in-flight requests finish, then
    /// waits for the producer to deliver what it holds.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let addr = self.local_addr().ok();
        tracing::info!(?addr, "ingest listening");
        let routes = filters::routes(self.state.clone(), self.max_body_bytes);
        warp::serve(routes)
            .incoming(self.listener)
            .graceful(shutdown)
            .run()
            .await;
        if let Err(e) = self.state.publisher.flush(Duration::from_secs(10)) {
            tracing::error!(error = %e, "producer flush on shutdown failed");
        }
        tracing::info!("ingest stopped");
    }
}
