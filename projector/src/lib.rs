//! `likes-projector`: consumes `like-events` in short batches and builds the
//! PostgreSQL projection (`user_likes`, `counters`) exactly once — the rows and
//! the partitions' offsets commit in one transaction, fenced by an owner epoch —
//! then the Redis projection from the counts PostgreSQL returned.

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
