//! `likes-ingest`: the HTTP API that accepts likes and unlikes, appends them to
//! Kafka (answering only once the broker acked) and serves cached counts.
//!
//! A tour:
//! - [`routes`]: the one table of routes (method, path template) that the
//!   router, the metrics labels and the OpenAPI test all read.
//! - [`filters`]: matches requests to handlers the warp way; `handlers/` does
//!   the work (`write` for a like or unlike, `batch` for `POST
//!   /v1/likes:batch`, `read` for counts, likers and a user's like, `ops` for
//!   probes and metrics); `recover` turns every error into one JSON shape
//!   ([`ApiError`], `error`).
//! - `request` and `batch_body`: parse and validate bodies and path segments
//!   into domain values (one like request; a whole batch body).
//! - `protection`: the per-user rate limit, the quick-dedup memo and load
//!   shedding in front of the producer (all in Redis through infra).
//! - `projection`: the PostgreSQL shards as the API reads them (each item
//!   from its shard, one query per shard, each shard's map checked before
//!   use); `lookups`, `progress`: batched reads for the optimistic count and
//!   for read-your-writes waits; `query`: the read routes' query strings
//!   and path segments (item lists, limits, read-your-writes tokens).
//! - `freshness`: the projection watch: lag per partition, and the time up
//!   to which each partition is projected, which counts carry.
//! - `readiness`, `observability`: `/readyz` probes and Prometheus metrics.
//! - [`Settings`], [`Limits`], [`Application`] (`startup`): configuration and
//!   building and running the service.

mod batch_body;
mod error;
pub mod filters;
mod freshness;
mod handlers;
mod limits;
mod lookups;
mod observability;
mod progress;
mod projection;
mod protection;
mod query;
mod readiness;
mod recover;
mod request;
pub mod routes;
mod settings;
mod startup;

pub use error::ApiError;
pub use limits::Limits;
pub use settings::Settings;
pub use startup::{Application, State};
