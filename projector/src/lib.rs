//! `likes-projector`: consumes `like-events` in short batches and builds the
//! PostgreSQL projection (`user_likes`, `counters`) exactly once — the rows and
//! the partitions' offsets commit in one transaction, fenced by an owner epoch —
//! then the Redis projection from the counts PostgreSQL returned.
//!
//! Where things live:
//! - [`run`] (`run.rs`): the wiring: connecting and checking the shards,
//!   the collector, a writer task per shard, background chores per shard, a
//!   bounded stop.
//! - `collect.rs`: one window's records, decoded and admitted per partition
//!   into one batch per shard; poison goes to the dead-letter topic (infra's
//!   `kafka::dead_letters`).
//! - `batch.rs`: a batch in the making (offsets in order, gaps refused) and its
//!   split into parts by partition.
//! - `commit.rs`: writing a shard's batch: fenced PostgreSQL transactions,
//!   then Redis, then Kafka's offsets for tooling; why shards stay independent.
//! - `consumer.rs`: what a rebalance means here (claim on assignment); the
//!   consumer itself is infra's `kafka::consumer::GroupConsumer`.
//! - `ownership.rs`: the partitions owned, claimed in their shards, their
//!   epochs, parked state and partitions whose shard could not be claimed in;
//!   `parking.rs`: stopping one partition and resuming it after an accepted loss;
//!   `backfill.rs`: reading a gap of deleted records from the archive instead.
//! - `health.rs` and `metrics.rs`: `/healthz`, `/readyz` and Prometheus;
//!   `background.rs`: pruning applied event ids; `settings.rs`: the environment.
//!
//! Retry policies are infra's (`likes_infra::retry`); this crate depends on
//! no Kafka, SQL or Redis client crate, only on infra's types.

mod backfill;
mod background;
mod batch;
mod collect;
mod commit;
mod consumer;
mod error;
mod health;
pub mod metrics;
mod ownership;
mod parking;
mod run;
mod settings;

pub use error::ProjectorError;
pub use run::run;
pub use settings::Settings;
