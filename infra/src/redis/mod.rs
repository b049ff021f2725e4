//! Everything this project keeps in Redis. Redis holds only projections and
//! conveniences: it may lose everything at any time, and nothing is true only
//! here.
//!
//! A tour:
//! - [`Redis`] (this file): the one connection handle, with the deployment's
//!   key prefix; every adapter below takes it. It speaks to one node or to a
//!   Redis Cluster (`REDIS_CLUSTER_NODES`, the redis crate's cluster client,
//!   which follows MOVED/ASK and learns the slot map itself); the adapters do
//!   not know which. What differs lives here: a pipeline is split by slot on
//!   a cluster ([`Redis::pipelined`]), and a SCAN visits every primary
//!   ([`Redis::scan_nodes`]).
//! - [`keys`]: the name of every key, and the SCAN pattern of the counts.
//! - [`counts`]: the cached count per item, stamped with the log offset it
//!   reflects, written by the projector after PostgreSQL committed, read and
//!   refilled by the API.
//! - [`likers`]: each item's most recent likers, stamped with the offset
//!   they reflect (written by the projector, rebuilt by `rebuild redis`).
//! - [`ratelimit`]: the per-user token bucket the API checks.
//! - [`dedup`]: the API's quick-dedup memo (answers a repeated identical
//!   action without producing it again).
//! - [`admission`]: a single like's rate limit and dedup recall in one
//!   script, one round trip.
//! - [`repair`]: the operator tools' writes over the counts (verify's repair,
//!   the rebuilds).

pub mod admission;
pub mod counts;
pub mod dedup;
pub mod keys;
pub mod likers;
pub mod ratelimit;
pub mod repair;

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use redis::aio::ConnectionLike;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, Slot};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Value};
use tracing::instrument;

use crate::Error;
use crate::settings::RedisAddress;
pub use keys::Keys;

/// How long one command may take before it fails (and a read falls back to
/// PostgreSQL); on a cluster this also bounds a request waiting for a slot
/// whose primary died until its replica is promoted.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// How far back, in log time, a writer re-puts counts after Redis failed it.
/// Redis replicates asynchronously: a primary that dies may have acknowledged
/// writes its replica never received, and the replica promoted in its place
/// then holds older counts with nothing to say so. Those writes come just
/// before the failures the writer sees, so re-putting every count applied
/// this long before the last known-current mark covers them (the stamps keep
/// the repeat harmless).
pub const FAILOVER_LOOKBACK: Duration = Duration::from_secs(10);

/// The connection every adapter sends its commands on: multiplexed, cheap to
/// clone, reconnecting on its own; one node or a cluster.
#[derive(Clone)]
pub enum Connection {
    Node(redis::aio::ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Node(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Node(c) => c.req_packed_commands(cmd, offset, count),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Node(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

/// A command on one key, for [`Redis::pipelined`].
pub(crate) struct Keyed {
    pub key: String,
    pub cmd: Cmd,
}

/// Where one SCAN runs: the single node, or one primary of the cluster.
#[derive(Debug, Clone)]
pub struct ScanNode(Option<(String, u16)>);

/// A handle on one deployment's Redis (a connection and a key prefix); cheap
/// to clone.
#[derive(Clone)]
pub struct Redis {
    conn: Connection,
    keys: Keys,
}

/// How a connection to one node gives up and retries: the same for every
/// handle on it.
fn node_config() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(RESPONSE_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
}

impl Redis {
    /// Connects to `address`; every key this handle touches starts with `prefix`.
    pub async fn connect(address: &RedisAddress, prefix: &str) -> Result<Self, Error> {
        let conn = match address {
            RedisAddress::Node(url) => {
                let client = redis::Client::open(url.as_str()).map_err(|e| Error::Setting {
                    name: "REDIS_URL",
                    message: e.to_string(),
                })?;
                Connection::Node(
                    redis::aio::ConnectionManager::new_with_config(client, node_config()).await?,
                )
            }
            RedisAddress::Cluster(nodes) => {
                let client =
                    redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                        .connection_timeout(RESPONSE_TIMEOUT)
                        .response_timeout(RESPONSE_TIMEOUT)
                        .retries(3)
                        .build()
                        .map_err(|e| Error::Setting {
                            name: "REDIS_CLUSTER_NODES",
                            message: e.to_string(),
                        })?;
                Connection::Cluster(client.get_async_connection().await?)
            }
        };
        Ok(Self {
            conn,
            keys: Keys::new(prefix),
        })
    }

    /// A handle on one node whose reads are answered from an in-process cache
    /// of up to `entries` keys, kept exact by the server: the connection
    /// speaks RESP3 with client tracking, so Redis pushes an invalidation for
    /// every cached key that changes or expires, and a reconnect drops the
    /// whole cache (an invalidation may have been missed meanwhile). A read
    /// may see the old value for as long as the push takes to arrive, the
    /// same as any asynchronous cache. `None` on a cluster: its client does
    /// not track keys across slot moves here, so reads stay on the server.
    pub async fn connect_client_cached(
        address: &RedisAddress,
        prefix: &str,
        entries: std::num::NonZeroUsize,
    ) -> Result<Option<Self>, Error> {
        let RedisAddress::Node(url) = address else {
            return Ok(None);
        };
        let setting = |e: redis::RedisError| Error::Setting {
            name: "REDIS_URL",
            message: e.to_string(),
        };
        let info =
            redis::IntoConnectionInfo::into_connection_info(url.as_str()).map_err(setting)?;
        let resp3 = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(resp3)).map_err(setting)?;
        let config =
            node_config().set_cache_config(redis::caching::CacheConfig::new().set_size(entries));
        Ok(Some(Self {
            conn: Connection::Node(
                redis::aio::ConnectionManager::new_with_config(client, config).await?,
            ),
            keys: Keys::new(prefix),
        }))
    }

    /// The key names of this deployment.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Whether Redis answers (readiness). On a cluster, any node answering is
    /// enough: a slot without a primary shows as failing reads, which fall
    /// back to PostgreSQL.
    #[instrument(level = "debug", skip_all)]
    pub async fn ping(&self) -> Result<(), Error> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.connection())
            .await?;
        Ok(())
    }

    /// A clone of the multiplexed connection (for the adapters of this module,
    /// and for tests that inspect keys).
    pub fn connection(&self) -> Connection {
        self.conn.clone()
    }

    /// Sends commands that each touch one key in as few round trips as the
    /// topology allows: one pipeline on a node; on a cluster (where a pipeline
    /// must stay in one slot) one pipeline per slot, all in flight at once.
    /// Answers come back in the order of `calls`. With `script`, a Redis that
    /// forgot it (restart, failover) gets it loaded and the pipeline is sent
    /// again, which is safe because every script call here may be repeated.
    pub(crate) async fn pipelined<T: FromRedisValue>(
        &self,
        script: Option<&redis::Script>,
        calls: Vec<Keyed>,
    ) -> Result<Vec<T>, Error> {
        if calls.is_empty() {
            return Ok(Vec::new());
        }
        let count = calls.len();
        let groups: Vec<(Vec<usize>, Pipeline)> = match &self.conn {
            Connection::Node(_) => {
                let mut pipe = redis::pipe();
                for call in calls {
                    pipe.add_command(call.cmd);
                }
                vec![((0..count).collect(), pipe)]
            }
            Connection::Cluster(_) => {
                let mut by_slot: HashMap<Slot, (Vec<usize>, Pipeline)> = HashMap::new();
                for (i, call) in calls.into_iter().enumerate() {
                    let (indices, pipe) = by_slot
                        .entry(Slot::for_key(&call.key))
                        .or_insert_with(|| (Vec::new(), redis::pipe()));
                    indices.push(i);
                    pipe.add_command(call.cmd);
                }
                by_slot.into_values().collect()
            }
        };
        let answers = join_all(groups.iter().map(|(_, pipe)| {
            let mut conn = self.connection();
            async move { send_pipeline(&mut conn, script, pipe).await }
        }))
        .await;
        let mut values: Vec<Option<Value>> = vec![None; count];
        for ((indices, _), answer) in groups.iter().zip(answers) {
            for (i, value) in indices.iter().zip(answer?) {
                values[*i] = Some(value);
            }
        }
        values
            .into_iter()
            .map(|v| parse(v.unwrap_or(Value::Nil)))
            .collect()
    }

    /// Where a full SCAN must run: the node itself, or every primary of the
    /// cluster (each holds only its slots' keys).
    pub async fn scan_nodes(&self) -> Result<Vec<ScanNode>, Error> {
        match &self.conn {
            Connection::Node(_) => Ok(vec![ScanNode(None)]),
            Connection::Cluster(c) => {
                let nodes: String = parse(
                    c.clone()
                        .route_command(
                            redis::cmd("CLUSTER").arg("NODES").clone(),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                        )
                        .await?,
                )?;
                Ok(primaries(&nodes)
                    .into_iter()
                    .map(|addr| ScanNode(Some(addr)))
                    .collect())
            }
        }
    }

    /// One page of `SCAN cursor MATCH pattern` on `node`: the next cursor (0
    /// when done) and the keys.
    pub async fn scan_page(
        &self,
        node: &ScanNode,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<String>), Error> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        match (&self.conn, &node.0) {
            (Connection::Cluster(c), Some((host, port))) => parse(
                c.clone()
                    .route_command(
                        cmd,
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host: host.clone(),
                            port: *port,
                        }),
                    )
                    .await?,
            ),
            _ => Ok(cmd.query_async(&mut self.connection()).await?),
        }
    }
}

/// The addresses of the primaries in a `CLUSTER NODES` answer that serve
/// slots and are not marked failed.
fn primaries(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let serving = fields.len() > 8;
            if !flags.split(',').any(|f| f == "master")
                || flags.split(',').any(|f| f == "fail" || f == "noaddr")
                || !serving
            {
                return None;
            }
            // ip:port@cport[,hostname]
            let addr = fields.get(1)?.split('@').next()?;
            let (host, port) = addr.rsplit_once(':')?;
            Some((host.to_string(), port.parse().ok()?))
        })
        .collect()
}

/// Reads a raw answer as `T`.
fn parse<T: FromRedisValue>(value: Value) -> Result<T, Error> {
    redis::from_redis_value(value).map_err(|e| Error::Redis(e.into()))
}

/// Sends `pipe`; when Redis forgot `script`, loads it and sends again.
async fn send_pipeline(
    conn: &mut Connection,
    script: Option<&redis::Script>,
    pipe: &Pipeline,
) -> Result<Vec<Value>, Error> {
    match (pipe.query_async::<Vec<Value>>(conn).await, script) {
        (Err(e), Some(script))
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
        {
            script.prepare_invoke().load_async(conn).await?;
            Ok(pipe.query_async(conn).await?)
        }
        (other, _) => Ok(other?),
    }
}

/// An EVALSHA of `script` on one key (not one script over many keys), which
/// keeps the call valid on Redis Cluster, where a script may touch one slot.
fn evalsha(script: &redis::Script, key: &str) -> Keyed {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(1).arg(key);
    Keyed {
        key: key.to_string(),
        cmd,
    }
}

/// A duration as whole milliseconds, at least 1 (Redis refuses a 0 expiry).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::primaries;

    #[test]
    fn only_serving_healthy_primaries_are_scanned() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
b2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
c3 127.0.0.1:7002@17002 master,fail - 0 0 3 connected
d4 127.0.0.1:7003@17003 slave a1 0 0 1 connected
e5 127.0.0.1:7005@17005 master - 0 0 7 connected 10923-16383
";
        assert_eq!(
            primaries(nodes),
            vec![
                ("127.0.0.1".to_string(), 7000),
                ("127.0.0.1".to_string(), 7001),
                ("127.0.0.1".to_string(), 7005)
            ]
        );
    }
}
