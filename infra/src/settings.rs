//! Reading typed settings from the environment, once, with errors that name the
//! variable. Each binary builds its own `Settings` from these helpers.

use std::str::FromStr;

use crate::Error;

/// The value of `name`, or `default` when it is unset. An empty value counts as unset.
pub fn string(name: &'static str, default: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().to_string(),
        _ => default.to_string(),
    }
}

/// A comma-separated list of URLs (empty when unset); each must start with
/// one of `schemes`.
pub fn url_list(name: &'static str, schemes: &[&str]) -> Result<Vec<String>, Error> {
    let value = string(name, "");
    let urls: Vec<String> = value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    match urls
        .iter()
        .find(|u| !schemes.iter().any(|s| u.starts_with(&format!("{s}://"))))
    {
        Some(bad) => Err(Error::Setting {
            name,
            message: format!(
                "{bad:?} must be a URL starting with {}://",
                schemes.join(":// or ")
            ),
        }),
        None => Ok(urls),
    }
}

/// `DATABASE_URLS` when it lists any database, else `[DATABASE_URL]`.
fn database_urls() -> Result<Vec<String>, Error> {
    const SCHEMES: [&str; 2] = ["postgres", "postgresql"];
    let shards = url_list("DATABASE_URLS", &SCHEMES)?;
    if !shards.is_empty() {
        return Ok(shards);
    }
    Ok(vec![url(
        "DATABASE_URL",
        "postgres://likes:likes@localhost:5432/likes",
        &SCHEMES,
    )?])
}

/// Where the Redis projection lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisAddress {
    /// One node (`REDIS_URL`).
    Node(String),
    /// A Redis Cluster's seed nodes (`REDIS_CLUSTER_NODES`).
    Cluster(Vec<String>),
}

/// `DEDUP_HORIZON_SECONDS` by default: how long applied event ids are
/// remembered. The projector and a rebuild must agree on it, so both read
/// the same variable with this one default.
pub const DEFAULT_DEDUP_HORIZON_SECONDS: u64 = 3600;

/// `UNKNOWN_SCHEMA_RETRY_SECONDS` by default: how long a schema id the
/// registry answers "not found" for is looked up again (with backoff) before
/// its record is called poison. A registry replica that is behind, or one being
/// deployed, answers 404 for ids it will know moments later.
pub const DEFAULT_UNKNOWN_SCHEMA_RETRY_SECONDS: u64 = 30;

/// The longest `UNKNOWN_SCHEMA_RETRY_SECONDS` accepted: the projector holds its
/// batch while it waits, and must poll Kafka again within the consumer's
/// `max.poll.interval.ms` (60 s, [`crate::kafka::consumer_config`]) or lose its
/// partitions.
pub const MAX_UNKNOWN_SCHEMA_RETRY_SECONDS: u64 = 45;

/// The `UNKNOWN_SCHEMA_RETRY_SECONDS` setting, read by every codec.
pub fn unknown_schema_retry() -> Result<std::time::Duration, Error> {
    const NAME: &str = "UNKNOWN_SCHEMA_RETRY_SECONDS";
    let seconds = parse(NAME, DEFAULT_UNKNOWN_SCHEMA_RETRY_SECONDS)?;
    if seconds > MAX_UNKNOWN_SCHEMA_RETRY_SECONDS {
        return Err(Error::Setting {
            name: NAME,
            message: format!(
                "must be at most {MAX_UNKNOWN_SCHEMA_RETRY_SECONDS} (under the consumer's max.poll.interval.ms), got {seconds}"
            ),
        });
    }
    Ok(std::time::Duration::from_secs(seconds))
}

/// `KAFKA_PRODUCER_LINGER_MS` by default: how long the producer of accepted
/// events waits to fill a partition's batch before sending it. 5 ms packs
/// each partition's records into one request, which cuts the broker's CPU
/// per like (`docs/capacity.md` sizes the brokers on it) for 5 ms of the 20 ms
/// budget; 1 ms halves the single like's P50 and costs the brokers more
/// (`bench/results/`, the linger rows of the README's Performance section).
pub const DEFAULT_PRODUCER_LINGER_MS: u64 = 5;

/// The longest `KAFKA_PRODUCER_LINGER_MS` accepted: a like waits for its
/// batch before it can be acked, and the seed's P99 bound is 20 ms.
pub const MAX_PRODUCER_LINGER_MS: u64 = 20;

/// The `KAFKA_PRODUCER_LINGER_MS` setting, read by every producer of accepted
/// events (the ingest, the benchmark's durable-write baseline).
pub fn producer_linger() -> Result<std::time::Duration, Error> {
    linger(parse(PRODUCER_LINGER, DEFAULT_PRODUCER_LINGER_MS)?)
}

const PRODUCER_LINGER: &str = "KAFKA_PRODUCER_LINGER_MS";

fn linger(ms: u64) -> Result<std::time::Duration, Error> {
    if ms > MAX_PRODUCER_LINGER_MS {
        return Err(Error::Setting {
            name: PRODUCER_LINGER,
            message: format!(
                "must be at most {MAX_PRODUCER_LINGER_MS} (a like waits for its batch within the 20 ms budget), got {ms}"
            ),
        });
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// `REDIS_CLIENT_CACHE_ENTRIES` by default: the ingest keeps up to 100,000
/// counts in process (see [`redis_client_cache`]). A cached read costs the
/// service about 0.7 × a read from Redis and sustains about 1.5 × the rate
/// (README, scenario 5), and the invalidation pushes keep it exact. The
/// bound is on entries, so the memory it may take is set here, not by traffic.
pub const DEFAULT_REDIS_CLIENT_CACHE_ENTRIES: usize = 100_000;

/// The `REDIS_CLIENT_CACHE_ENTRIES` setting: how many counts the ingest keeps
/// in process, exact through Redis's invalidation pushes
/// (`crate::redis::Redis::connect_client_cached`); `None` (0) reads Redis on
/// every GET. Single node only: on a cluster it is ignored.
pub fn redis_client_cache() -> Result<Option<std::num::NonZeroUsize>, Error> {
    Ok(std::num::NonZeroUsize::new(parse(
        "REDIS_CLIENT_CACHE_ENTRIES",
        DEFAULT_REDIS_CLIENT_CACHE_ENTRIES,
    )?))
}

/// `CACHE_REFILL_TTL_SECONDS` by default: how long Redis keeps the count of an
/// item PostgreSQL has never counted, refilled by a read. Reads of random ids
/// must not grow Redis without bound: such a refill expires, while counts the
/// projector writes (and refills of counted items) do not. A minute keeps a hot
/// miss off PostgreSQL and bounds those keys to a minute of misses.
pub const DEFAULT_CACHE_REFILL_TTL_SECONDS: u64 = 60;

/// `CACHE_REFILL_TTL_SECONDS` (default [`DEFAULT_CACHE_REFILL_TTL_SECONDS`]):
/// `None` (0) stores no refill of a never-counted item at all.
pub fn cache_refill_ttl() -> Result<Option<std::time::Duration>, Error> {
    let seconds: u64 = parse("CACHE_REFILL_TTL_SECONDS", DEFAULT_CACHE_REFILL_TTL_SECONDS)?;
    Ok((seconds > 0).then(|| std::time::Duration::from_secs(seconds)))
}

/// The value of `name` parsed as `T`, or `default` when unset; a value that does
/// not parse is an error naming the variable.
pub fn parse<T>(name: &'static str, default: T) -> Result<T, Error>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|e: T::Err| Error::Setting {
            name,
            message: format!("{e} (got {v:?})"),
        }),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(default),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::Setting {
            name,
            message: "not valid unicode".into(),
        }),
    }
}

/// A URL setting that must use one of `schemes`.
pub fn url(name: &'static str, default: &str, schemes: &[&str]) -> Result<String, Error> {
    let value = string(name, default);
    if schemes
        .iter()
        .any(|s| value.starts_with(&format!("{s}://")))
    {
        Ok(value)
    } else {
        Err(Error::Setting {
            name,
            message: format!("must be a URL starting with {}://", schemes.join(":// or ")),
        })
    }
}

/// `url` fit for a log line: the password (or a bare token) of its user
/// info becomes `***`, and so does the value of every query parameter whose
/// name says it is a secret (`password`, `sslpassword`, `token`, `secret`,
/// `key`, `auth`, `credential`, in any case or as part of the name).
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match base.find("://") {
        Some(scheme_end) => {
            let rest = &base[scheme_end + 3..];
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(authority_end);
            let authority = match authority.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _password)) => format!("{user}:***@{host}"),
                    None => format!("***@{host}"),
                },
                None => authority.to_string(),
            };
            format!("{}{authority}{path}", &base[..scheme_end + 3])
        }
        None => base.to_string(),
    };
    if let Some(query) = query {
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_name(name) => format!("{name}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push('?');
        out.push_str(&parts.join("&"));
    }
    out
}

/// Whether a query parameter's name says its value is a secret.
fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token", "key", "auth", "credential"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linger_beyond_the_latency_budget_is_refused_naming_the_variable() {
        let message = linger(MAX_PRODUCER_LINGER_MS + 1).unwrap_err().to_string();
        assert!(message.contains("KAFKA_PRODUCER_LINGER_MS"), "{message}");
        assert_eq!(linger(0).unwrap(), std::time::Duration::ZERO);
        assert_eq!(
            linger(MAX_PRODUCER_LINGER_MS).unwrap(),
            std::time::Duration::from_millis(MAX_PRODUCER_LINGER_MS)
        );
    }

    #[test]
    fn redact_hides_every_secret_a_url_can_carry_and_nothing_else() {
        for (url, logged) in [
            (
                "postgres://likes:secret@127.0.0.1:5432/likes",
                "postgres://likes:***@127.0.0.1:5432/likes",
            ),
            (
                "redis://:secret@10.0.0.1:6379/0",
                "redis://:***@10.0.0.1:6379/0",
            ),
            (
                "https://sometoken@registry.example/apis/ccompat/v7",
                "https://***@registry.example/apis/ccompat/v7",
            ),
            (
                "https://user:p%40ss@registry.example/apis/ccompat/v7",
                "https://user:***@registry.example/apis/ccompat/v7",
            ),
            (
                "postgres://likes@db/likes?password=secret&sslmode=require",
                "postgres://***@db/likes?password=***&sslmode=require",
            ),
            (
                "postgres://db/likes?sslmode=verify-full&sslpassword=x&application_name=a",
                "postgres://db/likes?sslmode=verify-full&sslpassword=***&application_name=a",
            ),
            (
                "http://registry/apis?api_key=k&Auth_Token=t",
                "http://registry/apis?api_key=***&Auth_Token=***",
            ),
            (
                "http://127.0.0.1:8081/apis/ccompat/v7/mail@host",
                "http://127.0.0.1:8081/apis/ccompat/v7/mail@host",
            ),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "127.0.0.1:9092,127.0.0.1:9094",
                "127.0.0.1:9092,127.0.0.1:9094",
            ),
        ] {
            assert_eq!(redact(url), logged, "{url}");
        }
    }
}

/// Where the shared infrastructure is: read by every binary, same names and
/// defaults as the README's table and `docker-compose.yml`.
#[derive(Debug, Clone)]
pub struct StackSettings {
    /// `KAFKA_BOOTSTRAP_SERVERS`: Kafka brokers, comma separated.
    pub kafka_bootstrap: String,
    /// `KAFKA_TOPIC`: the topic of like events.
    pub topic: String,
    /// `SCHEMA_REGISTRY_URL`: Confluent-compatible registry base URL.
    pub schema_registry_url: String,
    /// The PostgreSQL projection's shards, in order (index = shard): the
    /// comma-separated `postgres://` URLs of `DATABASE_URLS` when set, else
    /// the one database of `DATABASE_URL` (one shard). Never empty. The order
    /// is part of the shard map (`postgres::shards`): every process must list
    /// the same URLs in the same order.
    pub database_urls: Vec<String>,
    /// `DATABASE_MAX_CONNECTIONS`: pool size per process.
    pub database_max_connections: u32,
    /// `REDIS_URL`: the Redis projection on one node.
    pub redis_url: String,
    /// `REDIS_CLUSTER_NODES`: seed nodes of a Redis Cluster, comma separated
    /// `redis://` URLs (any one reachable is enough; the client learns the
    /// slot map). Non-empty selects the cluster client and `REDIS_URL` is not
    /// used; empty (the default) means the single node of `REDIS_URL`.
    pub redis_cluster_nodes: Vec<String>,
    /// `REDIS_KEY_PREFIX`: prefix of every Redis key written or read.
    pub redis_key_prefix: String,
    /// `ARCHIVE_URL`: where the archive of the log beyond retention lives
    /// (`crate::archive`): a local directory (a path or `file://`) by default,
    /// `s3://`, `gs://` or `az://` for object stores.
    pub archive_url: String,
}

/// Where the archive lives when `ARCHIVE_URL` is not set: a directory beside
/// the process (`dev/stack` sets one under `.stack/`).
pub const DEFAULT_ARCHIVE_URL: &str = "archive";

impl StackSettings {
    /// Reads the shared settings; a malformed value is an error naming its variable.
    pub fn from_env() -> Result<Self, Error> {
        Ok(Self {
            kafka_bootstrap: string("KAFKA_BOOTSTRAP_SERVERS", "localhost:9092"),
            topic: string("KAFKA_TOPIC", "like-events"),
            schema_registry_url: url(
                "SCHEMA_REGISTRY_URL",
                "http://localhost:8081/apis/ccompat/v7",
                &["http", "https"],
            )?,
            database_urls: database_urls()?,
            database_max_connections: parse("DATABASE_MAX_CONNECTIONS", 10)?,
            redis_url: url(
                "REDIS_URL",
                "redis://localhost:6379/0",
                &["redis", "rediss"],
            )?,
            redis_cluster_nodes: url_list("REDIS_CLUSTER_NODES", &["redis", "rediss"])?,
            redis_key_prefix: string("REDIS_KEY_PREFIX", "likes:"),
            archive_url: string("ARCHIVE_URL", DEFAULT_ARCHIVE_URL),
        })
    }

    /// Which Redis the projection lives in: the cluster when seed nodes are
    /// listed, else the single node.
    pub fn redis_address(&self) -> RedisAddress {
        if self.redis_cluster_nodes.is_empty() {
            RedisAddress::Node(self.redis_url.clone())
        } else {
            RedisAddress::Cluster(self.redis_cluster_nodes.clone())
        }
    }

    /// Logs the values in use, without secrets.
    pub fn log(&self) {
        tracing::info!(
            kafka_bootstrap = %self.kafka_bootstrap,
            topic = %self.topic,
            schema_registry_url = %redact(&self.schema_registry_url),
            database_urls = %self
                .database_urls
                .iter()
                .map(|u| redact(u))
                .collect::<Vec<_>>()
                .join(","),
            database_max_connections = self.database_max_connections,
            redis_url = %redact(&self.redis_url),
            redis_cluster_nodes = %self
                .redis_cluster_nodes
                .iter()
                .map(|n| redact(n))
                .collect::<Vec<_>>()
                .join(","),
            redis_key_prefix = %self.redis_key_prefix,
            archive_url = %redact(&self.archive_url),
            "stack settings"
        );
    }

    /// The dead-letter topic that goes with the events topic.
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.topic)
    }
}
