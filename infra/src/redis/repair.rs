//! Repairing the Redis counts from PostgreSQL, for the operator tools.
//!
//! The normal write path ([`super::counts::CountCache::put_counts`]) refuses a
//! stamp that is not newer than the stored one, which is right for the
//! projector but keeps a wrong value with a high (or equal) stamp forever. A
//! repair therefore replaces a value only if it is still exactly the wrong
//! value the tool saw: if the projector wrote in between, its value came from a
//! newer PostgreSQL commit and is kept.

use likes_domain::ItemKey;
use tracing::instrument;

use super::{Keyed, Redis, evalsha};
use crate::Error;
use crate::postgres::writer::CountUpdate;

/// Replaces KEYS[1] by ARGV[2]:ARGV[3] (or deletes it when ARGV[2] is empty)
/// only while it still holds ARGV[1] ('' meaning absent).
const REPLACE_IF_UNCHANGED: &str = r#"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2] .. ':' .. ARGV[3])
end
return 1
"#;

/// Sets KEYS[1] to ARGV[1]:ARGV[2] unless it holds a stamp strictly newer
/// than ARGV[2]: unlike the projector's write, an equal stamp is replaced.
const SET_UNLESS_NEWER: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then
  local sep = string.find(current, ':', 1, true)
  if sep and tonumber(string.sub(current, sep + 1)) > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. ARGV[2])
return 1
"#;

/// One count to put right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountRepair {
    pub item: ItemKey,
    /// The raw value the tool saw and judged wrong (`None`: absent).
    pub seen: Option<String>,
    /// The right count and the offset it reflects (`None`: delete the key,
    /// PostgreSQL has no counter for the item).
    pub count: Option<(i64, i64)>,
}

/// Applies `repairs`, each only if its key still holds what was seen; returns
/// how many were written.
#[instrument(skip_all, fields(repairs = repairs.len()))]
pub async fn replace_counts(redis: &Redis, repairs: &[CountRepair]) -> Result<u64, Error> {
    let script = redis::Script::new(REPLACE_IF_UNCHANGED);
    let mut conn = redis.connection();
    let mut written = 0;
    for repair in repairs {
        let (count, stamp) = match repair.count {
            Some((count, stamp)) => (count.to_string(), stamp.to_string()),
            None => (String::new(), String::new()),
        };
        // One key per script call: valid on Redis Cluster too.
        let done: i64 = script
            .key(redis.keys().count(repair.item))
            .arg(repair.seen.as_deref().unwrap_or(""))
            .arg(count)
            .arg(stamp)
            .invoke_async(&mut conn)
            .await?;
        written += u64::try_from(done).unwrap_or(0);
    }
    Ok(written)
}

/// Writes counts that a swap of the PostgreSQL projection made true, each
/// stamped with the last offset the swap covered in its item's partition:
/// every value stamped at or below it (written from the replaced tables,
/// however late it arrives) is replaced, and one stamped above it (the
/// projector's commit after the swap) is kept. Returns how many were written.
#[instrument(skip_all, fields(items = updates.len()))]
pub async fn put_swapped_counts(redis: &Redis, updates: &[CountUpdate]) -> Result<u64, Error> {
    let script = redis::Script::new(SET_UNLESS_NEWER);
    let mut written = 0;
    for chunk in updates.chunks(1000) {
        // One key per script call (valid on Redis Cluster), a chunk per round trip.
        let calls: Vec<Keyed> = chunk
            .iter()
            .map(|update| {
                let mut call = evalsha(&script, &redis.keys().count(update.item));
                call.cmd.arg(update.count).arg(update.last_offset);
                call
            })
            .collect();
        let done: Vec<i64> = redis.pipelined(Some(&script), calls).await?;
        written += done
            .iter()
            .map(|n| u64::try_from(*n).unwrap_or(0))
            .sum::<u64>();
    }
    Ok(written)
}

/// Deletes every cached count of this deployment's prefix (SCAN, never KEYS,
/// so Redis keeps serving; on a cluster, on every primary); returns how many
/// keys went.
#[instrument(skip_all)]
pub async fn delete_all_counts(redis: &Redis) -> Result<u64, Error> {
    delete_matching(redis, &redis.keys().all_counts()).await
}

/// Deletes every key of this deployment's prefix (a test's or a benchmark's
/// leftovers); returns how many keys went.
#[instrument(skip_all)]
pub async fn delete_all_keys(redis: &Redis) -> Result<u64, Error> {
    delete_matching(redis, &redis.keys().everything()).await
}

async fn delete_matching(redis: &Redis, pattern: &str) -> Result<u64, Error> {
    let mut deleted = 0;
    for node in redis.scan_nodes().await? {
        let mut cursor: u64 = 0;
        loop {
            let (next, keys) = redis.scan_page(&node, cursor, pattern).await?;
            // UNLINK frees memory off the main thread; one key per command keeps
            // it valid on a cluster, pipelined.
            let calls: Vec<Keyed> = keys
                .into_iter()
                .map(|key| {
                    let mut cmd = redis::cmd("UNLINK");
                    cmd.arg(&key);
                    Keyed { key, cmd }
                })
                .collect();
            let removed: Vec<i64> = redis.pipelined(None, calls).await?;
            deleted += removed
                .iter()
                .map(|n| u64::try_from(*n).unwrap_or(0))
                .sum::<u64>();
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(deleted)
}
