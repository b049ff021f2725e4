//! Building and running the service: connect to the stack, bind, serve until
//! the shutdown future resolves, then flush the producer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use likes_infra::cache::CountCache;
use likes_infra::likers::{self, RecentLikers};
use likes_infra::postgres;
use likes_infra::postgres::PgPool;
use likes_infra::publisher::Publisher;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::lookups::Lookups;
use crate::progress::Progress;
use crate::protection::Protection;
use crate::readiness::Readiness;
use crate::{Limits, Settings, filters, observability};

/// What the handlers share.
pub struct State {
    pub publisher: Publisher,
    pub cache: CountCache,
    pub db: PgPool,
    /// Batched projection lookups for the optimistic count.
    pub lookups: Lookups,
    /// Read-your-writes waits: one shared poller of the projected offsets.
    pub progress: Progress,
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

impl Application {
    /// [`Application::build_with`] without rate limiting or quick dedup (the
    /// walking skeleton's behaviour, which harnesses building [`Settings`] by
    /// hand rely on); the binary passes [`Limits::from_env`] instead.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Limits::unprotected()).await
    }

    /// Connects to Kafka, the registry (registering the schema), PostgreSQL and
    /// Redis, and binds the listen address.
    pub async fn build_with(settings: &Settings, limits: Limits) -> anyhow::Result<Self> {
        let stack = &settings.stack;
        let publisher = Publisher::new(
            &stack.kafka_bootstrap,
            &stack.topic,
            &stack.schema_registry_url,
            settings.produce_timeout,
        )?;
        let schema_id = publisher.codec().register().await?;
        tracing::info!(schema_id, "schema registered");
        let cache = CountCache::connect(&stack.redis_url, &stack.redis_key_prefix).await?;
        let db = postgres::connect_lazy(&stack.database_url, stack.database_max_connections)?;
        let listener = TcpListener::bind(settings.listen_addr).await?;
        let readiness = Readiness::new(
            &stack.kafka_bootstrap,
            &stack.topic,
            &stack.schema_registry_url,
        )?;
        Ok(Self {
            listener,
            state: Arc::new(State {
                publisher,
                likers: RecentLikers::new(
                    cache.connection(),
                    &stack.redis_key_prefix,
                    likers::DEFAULT_KEEP,
                ),
                protection: Protection::new(cache.clone(), &limits, settings.produce_timeout),
                cache,
                lookups: Lookups::spawn(db.clone()),
                progress: Progress::spawn(
                    db.clone(),
                    stack.topic.clone(),
                    limits.read_your_writes_max_waiters,
                ),
                db,
                limits,
                readiness,
                metrics: observability::install(),
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
