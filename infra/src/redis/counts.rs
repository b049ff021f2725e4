//! The Redis projection: cached counts, written only after PostgreSQL committed.
//!
//! Each count is stored as `"<count>:<stamp>"` under its item's count key
//! ([`super::Keys::count`]), where the stamp is the log offset the count reflects. A small script refuses
//! to replace a newer stamp with an older one, so writes may be repeated, raced
//! or replayed in any order and the cache still converges on the newest count.
//!
//! A read that misses refills the key from PostgreSQL. An item PostgreSQL has
//! never counted is refilled as `"0:-1"` (any projected count replaces it)
//! with a TTL, or not at all: reads of random ids must not grow Redis without
//! bound. Every other count has no TTL and is bounded by the items that exist;
//! Redis runs with `maxmemory` and `allkeys-lru` (see `dev/config/redis.conf`),
//! so an evicted count is simply a miss, read again from PostgreSQL.

use likes_domain::ItemKey;
use redis::Value;
use tracing::instrument;

use super::{Keyed, Redis, evalsha};
use crate::Error;
use crate::postgres::writer::CountUpdate;

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

/// A handle on the cached counts; cheap to clone.
#[derive(Clone)]
pub struct CountCache {
    redis: Redis,
    /// Where [`Self::count`] reads: `redis`, or a client-cached handle on it
    /// ([`Redis::connect_client_cached`]).
    reads: Redis,
    script: redis::Script,
}

impl CountCache {
    /// The counts kept in `redis`.
    pub fn new(redis: &Redis) -> Self {
        Self::reading_through(redis, redis)
    }

    /// The counts kept in `redis`, single counts read through `reads` (the
    /// same Redis, e.g. with a client-side cache).
    pub fn reading_through(redis: &Redis, reads: &Redis) -> Self {
        Self {
            redis: redis.clone(),
            reads: reads.clone(),
            script: redis::Script::new(SET_IF_NEWER),
        }
    }

    /// The cached count of `item`, if Redis has it.
    #[instrument(level = "debug", skip_all, fields(item = %item))]
    pub async fn count(&self, item: ItemKey) -> Result<Option<i64>, Error> {
        let value: Option<String> = redis::cmd("GET")
            .arg(self.reads.keys().count(item))
            .query_async(&mut self.reads.connection())
            .await?;
        Ok(value.as_deref().and_then(parse_count))
    }

    /// The cached counts of `items` in one MGET, in the same order (`None` = miss).
    #[instrument(level = "debug", skip_all, fields(items = items.len()))]
    pub async fn counts(&self, items: &[ItemKey]) -> Result<Vec<Option<i64>>, Error> {
        let values = raw_counts(&self.redis, items).await?;
        Ok(values
            .iter()
            .map(|v| v.as_deref().and_then(parse_count))
            .collect())
    }

    /// Writes counts stamped with the offsets they reflect, in one round trip;
    /// older stamps never overwrite newer ones.
    #[instrument(skip_all, fields(items = updates.len()))]
    pub async fn put_counts(&self, updates: &[CountUpdate]) -> Result<(), Error> {
        let calls: Vec<Keyed> = updates
            .iter()
            .map(|u| self.set_if_newer(u.item, u.count, u.last_offset))
            .collect();
        self.run(calls).await
    }

    /// Refills the keys of counts read from PostgreSQL after a miss: each item
    /// with its `(count, stamp)`, or `None` when PostgreSQL never counted it.
    /// Those are stored as 0 expiring after `absent_ttl`, or not at all when
    /// `absent_ttl` is `None`. Newer stamps already in Redis are kept.
    #[instrument(level = "debug", skip_all, fields(items = found.len()))]
    pub async fn refill_counts(
        &self,
        found: &[(ItemKey, Option<(i64, i64)>)],
        absent_ttl: Option<std::time::Duration>,
    ) -> Result<(), Error> {
        let ttl_ms = absent_ttl.map(super::millis);
        let calls: Vec<Keyed> = found
            .iter()
            .filter_map(|(item, stored)| match (stored, ttl_ms) {
                (Some((count, stamp)), _) => Some(self.set_if_newer(*item, *count, *stamp)),
                (None, Some(ms)) => {
                    let mut call = self.set_if_newer(*item, 0, NEVER_COUNTED);
                    call.cmd.arg(ms);
                    Some(call)
                }
                (None, None) => None,
            })
            .collect();
        self.run(calls).await
    }

    fn set_if_newer(&self, item: ItemKey, count: i64, stamp: i64) -> Keyed {
        let mut call = evalsha(&self.script, &self.redis.keys().count(item));
        call.cmd.arg(count).arg(stamp);
        call
    }

    /// Sends the script calls pipelined (split by slot on a cluster).
    async fn run(&self, calls: Vec<Keyed>) -> Result<(), Error> {
        self.redis
            .pipelined::<Value>(Some(&self.script), calls)
            .await
            .map(drop)
    }
}

/// The raw stored values (`"<count>:<stamp>"`) of `items`, in order, in one
/// MGET (on a cluster the client splits it by slot and sends the parts at once).
#[instrument(level = "debug", skip_all, fields(items = items.len()))]
pub async fn raw_counts(redis: &Redis, items: &[ItemKey]) -> Result<Vec<Option<String>>, Error> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = items.iter().map(|i| redis.keys().count(*i)).collect();
    Ok(redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut redis.connection())
        .await?)
}

/// Reads both parts of a stored `"<count>:<stamp>"`.
pub fn parse_stamped(value: &str) -> Option<(i64, i64)> {
    let (count, stamp) = value.split_once(':')?;
    Some((count.parse().ok()?, stamp.parse().ok()?))
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
