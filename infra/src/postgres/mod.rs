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

/// How long a projector transaction (a batch commit, a claim) waits for a lock
/// and how long one of its statements may run. A rebuild's swap holds the
/// offset rows for a bounded tail, and a claim runs inside Kafka's rebalance
/// callback: past these, the transaction fails as a transient error (55P03,
/// 57014) and the caller tries it again later, instead of waiting unbounded.
const LOCK_TIMEOUT: &str = "3s";
const STATEMENT_TIMEOUT: &str = "30s";

/// Bounds the waits of the caller's open transaction (see [`LOCK_TIMEOUT`]).
pub(crate) async fn bound_waits(tx: &mut sqlx::PgConnection) -> Result<(), Error> {
    sqlx::query(
        "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)",
    )
    .bind(LOCK_TIMEOUT)
    .bind(STATEMENT_TIMEOUT)
    .execute(tx)
    .await?;
    Ok(())
}

/// Applies the migrations under `migrations/` that the database has not seen yet.
#[instrument(skip_all)]
pub async fn migrate(pool: &PgPool) -> Result<(), Error> {
    sqlx::migrate!("../migrations").run(pool).await?;
    Ok(())
}
