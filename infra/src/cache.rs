//! The Redis projection: cached counts, written only after PostgreSQL committed.
//!
//! Each count is stored as `"<count>:<stamp>"` under `<prefix>count:<type>:<id>`,
//! where the stamp is the log offset the count reflects. A small script refuses
//! to replace a newer stamp with an older one, so writes may be repeated, raced
//! or replayed in any order and the cache still converges on the newest count.
//! Redis may lose everything at any time; nothing is true only here.
//!
//! A read that misses refills the key from PostgreSQL. An item PostgreSQL has
//! never counted is refilled as `"0:-1"` (any projected count replaces it)
//! with a TTL, or not at all: reads of random ids must not grow Redis without
//! bound. Every other count has no TTL and is bounded by the items that exist;
//! Redis runs with `maxmemory` and `allkeys-lru` (see `dev/config/redis.conf`),
//! so an evicted count is simply a miss, read again from PostgreSQL.

use likes_domain::ItemKey;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use tracing::instrument;

use crate::Error;

/// Sets KEYS[1] to ARGV[1]:ARGV[2] unless it already holds a stamp >= ARGV[2].
/// With ARGV[3] (milliseconds) the value expires; without, any TTL is cleared,
/// so a projected count replacing an expiring refill stays.
const SET_IF_NEWER: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, ':', 1, true)
  if sep and tonumber(string.sub(current, sep + 1)) >= tonumber(ARGV[2]) then
    return 0
  end
end
if ARGV[3] then
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2])
end
return 1
"#;

/// The stamp of a count PostgreSQL has never held: older than any offset.
const NEVER_COUNTED: i64 = -1;

/// A handle on the Redis projection; cheap to clone.
#[derive(Clone)]
pub struct CountCache {
    conn: ConnectionManager,
    prefix: String,
    script: redis::Script,
}

impl CountCache {
    /// Connects to `url`; every key this handle touches starts with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, Error> {
        let client = redis::Client::open(url).map_err(|e| Error::Setting {
            name: "REDIS_URL",
            message: e.to_string(),
        })?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_secs(2)))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_with_config(client, config).await?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            script: redis::Script::new(SET_IF_NEWER),
        })
    }

    /// The key of an item's count.
    pub fn count_key(&self, item: ItemKey) -> String {
        format!(
            "{}count:{}:{}",
            self.prefix,
            item.item_type.get(),
            item.item_id.get()
        )
    }

    /// The cached count of `item`, if Redis has it.
    #[instrument(skip_all, fields(item = %item))]
    pub async fn count(&self, item: ItemKey) -> Result<Option<i64>, Error> {
        let mut conn = self.conn.clone();
        let value: Option<String> = conn.get(self.count_key(item)).await?;
        Ok(value.as_deref().and_then(parse_count))
    }

    /// Writes counts stamped with the offsets they reflect, in one round trip;
    /// older stamps never overwrite newer ones.
    #[instrument(skip_all, fields(items = updates.len()))]
    pub async fn put_counts(&self, updates: &[(ItemKey, i64, i64)]) -> Result<(), Error> {
        let calls: Vec<redis::Cmd> = updates
            .iter()
            .map(|(item, count, stamp)| {
                evalsha(&self.script, &self.count_key(*item), *count, *stamp)
            })
            .collect();
        self.run(calls).await
    }

    /// Refills the keys of counts read from PostgreSQL after a miss: each item
    /// with its `(count, stamp)`, or `None` when PostgreSQL never counted it.
    /// Those are stored as 0 expiring after `absent_ttl`, or not at all when
    /// `absent_ttl` is `None`. Newer stamps already in Redis are kept.
    #[instrument(skip_all, fields(items = found.len()))]
    pub async fn refill_counts(
        &self,
        found: &[(ItemKey, Option<(i64, i64)>)],
        absent_ttl: Option<std::time::Duration>,
    ) -> Result<(), Error> {
        let ttl_ms = absent_ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1));
        let calls: Vec<redis::Cmd> = found
            .iter()
            .filter_map(|(item, stored)| {
                let key = self.count_key(*item);
                match (stored, ttl_ms) {
                    (Some((count, stamp)), _) => Some(evalsha(&self.script, &key, *count, *stamp)),
                    (None, Some(ms)) => {
                        let mut cmd = evalsha(&self.script, &key, 0, NEVER_COUNTED);
                        cmd.arg(ms);
                        Some(cmd)
                    }
                    (None, None) => None,
                }
            })
            .collect();
        self.run(calls).await
    }

    /// Sends the script calls in one pipeline.
    async fn run(&self, calls: Vec<redis::Cmd>) -> Result<(), Error> {
        if calls.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for call in calls {
            pipe.add_command(call).ignore();
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis restarted and forgot the script: load it and send again
                // (repeating a stamped write is harmless).
                self.script.prepare_invoke().load_async(&mut conn).await?;
                pipe.query_async::<()>(&mut conn).await?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

// Reads for the API's bulk and consistency paths, and the shared connection
// other Redis projections (likers, rate limits, dedup memos) ride on.
impl CountCache {
    /// The multiplexed connection, for other Redis adapters sharing it.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The key prefix of this deployment.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether Redis answers (readiness).
    #[instrument(skip_all)]
    pub async fn ping(&self) -> Result<(), Error> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }

    /// The cached count of `item` and the offset stamp it reflects.
    #[instrument(skip_all, fields(item = %item))]
    pub async fn count_stamped(&self, item: ItemKey) -> Result<Option<(i64, i64)>, Error> {
        let mut conn = self.conn.clone();
        let value: Option<String> = conn.get(self.count_key(item)).await?;
        Ok(value.as_deref().and_then(parse_stamped))
    }

    /// The cached counts of `items` in one MGET, in the same order (`None` = miss).
    #[instrument(skip_all, fields(items = items.len()))]
    pub async fn counts(&self, items: &[ItemKey]) -> Result<Vec<Option<i64>>, Error> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let keys: Vec<String> = items.iter().map(|i| self.count_key(*i)).collect();
        let values: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        Ok(values
            .iter()
            .map(|v| v.as_deref().and_then(parse_count))
            .collect())
    }
}

/// Reads both parts of a stored `"<count>:<stamp>"`.
pub fn parse_stamped(value: &str) -> Option<(i64, i64)> {
    let (count, stamp) = value.split_once(':')?;
    Some((count.parse().ok()?, stamp.parse().ok()?))
}

/// One EVALSHA per key (not one script over many keys) keeps the writes valid on
/// Redis Cluster, where one script may only touch one slot.
fn evalsha(script: &redis::Script, key: &str, count: i64, stamp: i64) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash())
        .arg(1)
        .arg(key)
        .arg(count)
        .arg(stamp);
    cmd
}

/// Reads the count part of a stored `"<count>:<stamp>"`.
pub fn parse_count(value: &str) -> Option<i64> {
    value.split(':').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_value_reads_back_its_count() {
        assert_eq!(parse_count("17:4096"), Some(17));
        assert_eq!(parse_count("garbage"), None);
    }

    #[test]
    fn stored_value_reads_back_its_count_and_stamp() {
        assert_eq!(parse_stamped("17:4096"), Some((17, 4096)));
        assert_eq!(parse_stamped("17:-1"), Some((17, -1)));
        assert_eq!(parse_stamped("17"), None);
    }
}
