//! Adapters shared by the likes services and tools. One home per concern:
//! the Avro codec and schema registry ([`codec`]), Kafka by role ([`kafka`]:
//! producer, consumers, admin, dead letters, readiness, the log reader of the
//! tools, the partitioner), the PostgreSQL projection and the tools' tables
//! ([`postgres`]), everything kept in Redis ([`redis`]), the archive of the
//! log beyond retention in an object store ([`archive`]) and the registry's
//! subject API, the gate of schema changes ([`registry`]).
//! Every retry policy and the one backoff helper are in [`retry`].
//! Settings helpers and logging set-up live here too so every binary reads its
//! environment and logs the same way.

pub mod archive;
pub mod codec;
mod error;
pub mod kafka;
pub mod postgres;
pub mod redis;
pub mod registry;
pub mod retry;
pub mod settings;
pub mod telemetry;

pub use error::{DecodeError, Down, Error, Unready};
