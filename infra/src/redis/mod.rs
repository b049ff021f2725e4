//! Everything this project keeps in Redis. Redis holds only projections and
//! conveniences: it may lose everything at any time, and nothing is true only
//! here.
//!
//! A tour:
//! - [`Redis`] (this file): the one connection handle, with the deployment's
//!   key prefix; every adapter below takes it. The connection type and how it
//!   is opened live only here, so moving to Redis Cluster changes this file.
//! - [`keys`]: the name of every key, and the SCAN pattern of the counts.
//! - [`counts`]: the cached count per item, stamped with the log offset it
//!   reflects, written by the projector after PostgreSQL committed, read and
//!   refilled by the API.
//! - [`likers`]: each item's most recent likers (written by the projector).
//! - [`ratelimit`]: the per-user token bucket the API checks.
//! - [`dedup`]: the API's quick-dedup memo (answers a repeated identical
//!   action without producing it again).
//! - [`repair`]: the operator tools' writes over the counts (verify's repair,
//!   the rebuilds).

pub mod counts;
pub mod dedup;
pub mod keys;
pub mod likers;
pub mod ratelimit;
pub mod repair;

use std::time::Duration;

use tracing::instrument;

use crate::Error;
pub use keys::Keys;

/// The connection every adapter sends its commands on: multiplexed, cheap to
/// clone, reconnecting on its own.
pub(crate) type Connection = redis::aio::ConnectionManager;

/// A handle on one deployment's Redis (a connection and a key prefix); cheap
/// to clone.
#[derive(Clone)]
pub struct Redis {
    conn: Connection,
    keys: Keys,
}

impl Redis {
    /// Connects to `url`; every key this handle touches starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::Setting {
            name: "REDIS_URL",
            message: e.to_string(),
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = Connection::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            keys: Keys::new(prefix),
        })
    }

    /// The key names of this deployment.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether Redis answers (readiness).
    #[instrument(skip_all)]
    pub async fn ping(&self) -> Result<(), Error> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.connection())
            .await?;
        Ok(())
    }

    /// A clone of the multiplexed connection, for the adapters of this module.
    pub(crate) fn connection(&self) -> Connection {
        self.conn.clone()
    }
}

/// Sends `pipe` (EVALSHA calls of `script`, and maybe other commands); when
/// Redis restarted and forgot the script, loads it and sends the pipeline
/// again, which is safe because every script call here may be repeated.
async fn query_with_script<T: redis::FromRedisValue>(
    conn: &mut Connection,
    script: &redis::Script,
    pipe: &redis::Pipeline,
) -> Result<T, Error> {
    match pipe.query_async(conn).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.prepare_invoke().load_async(conn).await?;
            Ok(pipe.query_async(conn).await?)
        }
        other => Ok(other?),
    }
}

/// An EVALSHA of `script` on one key (not one script over many keys), which
/// keeps the call valid on Redis Cluster, where a script may touch one slot.
fn evalsha(script: &redis::Script, key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(1).arg(key);
    cmd
}

/// A duration as whole milliseconds, at least 1 (Redis refuses a 0 expiry).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
