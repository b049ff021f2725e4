//! Adapters shared by the likes services and tools. One home per concern:
//! the Avro codec and schema registry ([`codec`]), Kafka clients ([`kafka`]),
//! the PostgreSQL projection ([`store`]) and everything kept in Redis ([`redis`]).
//! Settings helpers and logging set-up live here too so every binary reads its
//! environment and logs the same way.

pub mod codec;
mod error;
pub mod kafka;
pub mod publisher;
pub mod redis;
pub mod settings;
pub mod store;
pub mod telemetry;

pub use error::{DecodeError, Error};
