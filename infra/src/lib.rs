//! Adapters shared by the likes services and tools. One home per concern:
//! the Avro codec and schema registry ([`codec`]), Kafka clients ([`kafka`]),
//! the PostgreSQL projection ([`postgres`]) and the Redis projection ([`cache`]).
//! Settings helpers and logging set-up live here too so every binary reads its
//! environment and logs the same way.

pub mod cache;
pub mod cache_repair;
pub mod codec;
pub mod dedup;
mod error;
pub mod kafka;
pub mod likers;
pub mod postgres;
pub mod publisher;
pub mod ratelimit;
pub mod settings;
pub mod telemetry;

pub use error::{DecodeError, Error};
