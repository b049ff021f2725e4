//! The PostgreSQL projection: connecting, migrating, partition ownership and
//! offsets ([`offsets`]), the batch writer ([`writer`]) and reads ([`reads`]).

mod changes;
pub mod losses;
pub mod offsets;
pub mod reads;
pub mod writer;

use std::time::Duration;

pub use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tracing::instrument;

use crate::Error;

/// A pool to the database at `url`; connections are made lazily, so a database that
/// is down at start-up shows as errors on first use, which callers retry.
pub fn connect_lazy(url: &str, max_connections: u32) -> Result<PgPool, Error> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(url)
        .map_err(|e| Error::Setting {
            name: "DATABASE_URL",
            message: e.to_string(),
        })
}

/// Applies the migrations under `migrations/` that the database has not seen yet.
#[instrument(skip_all)]
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    sqlx::migrate!("../migrations").run(pool).await?;
    Ok(())
}
