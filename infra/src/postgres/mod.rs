//! Everything that speaks PostgreSQL, by role:
//! - the live projection: connecting and migrating (here), partition
//!   ownership and offsets ([`offsets`]), the batch writer ([`writer`]) over
//!   the one counting SQL (`changes.rs`, for live and shadow tables alike),
//!   reads for the API and the tools ([`reads`]), accepted losses ([`losses`]);
//! - the rebuild: its shadow tables, checks and swap ([`shadow`]), its
//!   resumable progress and lock ([`rebuild_progress`]), and the lock that
//!   keeps a swap and a snapshot apart ([`swap_lock`]);
//! - snapshots of the projection ([`snapshots`]);
//! - the shards: which database owns which partitions, and a pool per shard
//!   ([`shards`]); connections held outside a pool for the hottest read
//!   ([`held`]).
//!
//! Callers hold connections and transactions ([`PgPool`], [`PgConnection`],
//! [`PgTransaction`]) but never write SQL: every statement lives here.

mod changes;
pub mod held;
pub mod losses;
pub mod offsets;
pub mod reads;
pub mod rebuild_progress;
pub mod shadow;
pub mod shards;
pub mod snapshots;
pub mod swap_lock;
pub mod writer;

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
pub use sqlx::{PgConnection, PgPool};
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
            name: "DATABASE_URLS",
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

/// A transaction on the projection's database.
pub type PgTransaction<'c> = sqlx::Transaction<'c, sqlx::Postgres>;

/// Begins a transaction on `conn` (a pooled connection the caller holds).
pub async fn begin(conn: &mut PgConnection) -> Result<PgTransaction<'_>, Error> {
    Ok(sqlx::Connection::begin(conn).await?)
}
