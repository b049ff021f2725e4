//! `likes-ingest`: the HTTP API that accepts likes and unlikes, appends them to
//! Kafka (answering only once the broker acked) and serves cached counts.
//!
//! Routes are split the warp way: [`filters`] match requests, [`handlers`] do
//! the work, [`recover`] turns every error into one JSON shape.

mod batch;
mod error;
pub mod filters;
mod handlers;
mod limits;
mod lookups;
mod observability;
mod progress;
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
