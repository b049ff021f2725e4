//! Connections held outside the pool for one hot read: the ingest's batched
//! optimistic lookups, a statement every few milliseconds.
//!
//! The pool pings a connection as it is taken (`test_before_acquire`) and
//! again, in a task it spawns, as it goes back: two extra round trips per
//! statement, about a quarter of the lookup's client CPU in a profile of the
//! single like (more than the statement's own round trip). These
//! connections skip both, so what the pings guarded is done here instead:
//! - a connection that died while idle (the server restarted, a proxy
//!   closed it) fails its next statement at once; a reused connection that
//!   fails is dropped and the statement is run again on a fresh one, which
//!   is safe because callers run reads only;
//! - a connection cut off while idle (no reset, its next statement hangs) is
//!   not bounded here: the caller bounds every call with a timeout, and a
//!   call dropped mid-statement drops its connection with it, so the next
//!   call connects anew;
//! - a connection whose statement failed is not kept.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use sqlx::Connection;
use sqlx::postgres::PgConnectOptions;

use super::{PgConnection, PgPool};
use crate::Error;

/// Connections to one database, made with its pool's options, at most `keep`
/// of them kept idle between calls.
pub struct HeldConnections {
    options: Arc<PgConnectOptions>,
    idle: Mutex<Vec<PgConnection>>,
    keep: usize,
}

impl HeldConnections {
    /// Connections like `pool`'s; none is made until the first call.
    pub fn like(pool: &PgPool, keep: usize) -> Self {
        Self {
            options: pool.connect_options(),
            idle: Mutex::new(Vec::with_capacity(keep)),
            keep,
        }
    }

    /// Runs `read` on an idle connection (a new one when none is idle); a
    /// reused connection that fails is dropped and `read` runs once more on a
    /// new one. Only reads: `read` may run twice.
    pub async fn read<T>(
        &self,
        read: impl for<'c> Fn(&'c mut PgConnection) -> BoxFuture<'c, Result<T, Error>>,
    ) -> Result<T, Error> {
        if let Some(mut conn) = self.take() {
            match read(&mut conn).await {
                Ok(value) => {
                    self.put_back(conn);
                    return Ok(value);
                }
                // Dropped: it died while idle, or its statement failed.
                Err(e) => tracing::debug!(error = %e, "held connection failed; connecting anew"),
            }
        }
        let mut conn = PgConnection::connect_with(&self.options).await?;
        let value = read(&mut conn).await?;
        self.put_back(conn);
        Ok(value)
    }

    fn take(&self) -> Option<PgConnection> {
        self.idle.lock().ok()?.pop()
    }

    fn put_back(&self, conn: PgConnection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < self.keep
        {
            idle.push(conn);
        }
    }
}
