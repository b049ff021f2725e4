//! The Redis projection of each item's most recent likers: a sorted set per
//! item ([`super::Keys::likers`]), member = user id, score = when the like
//! happened (milliseconds since the epoch), trimmed to the newest `keep`.
//!
//! The projector writes it after each PostgreSQL commit with the batch's net
//! changes ([`RecentLikers::apply`]); the API reads it ([`RecentLikers::recent`]);
//! `likes-replay rebuild redis` rewrites whole sets folded from the log
//! ([`RecentLikers::put_rebuilt`]). Like every Redis projection it may vanish
//! at any time: it is a convenience view, and `user_likes` in PostgreSQL stays
//! the truth.
//!
//! Each set has a stamp beside it ([`super::Keys::likers_stamp`], same cluster
//! slot): the log offset of the newest change the set reflects, as the counts
//! carry theirs. The projector applies a batch's changes to an item only when
//! they are newer than the stamp, and a rebuilt set replaces the stored one
//! only when the stamp is not newer than the rebuild's. So a late projector
//! write can never undo a rebuilt set that already includes it, and a rebuilt
//! set can never undo a like or an unlike the projector applied after the
//! offsets the rebuild folded up to (the rebuild is told, and folds further).
//! A set whose stamp is gone (evicted, or written before stamps existed)
//! takes any write.
//!
//! A like adds the user only if absent (`ZADD NX`): a repeated like of an item
//! already liked is no new like, and `user_likes.liked_at` keeps the first
//! too, so the set and PostgreSQL agree on the time.

use likes_domain::{ItemKey, LikeState, NetChange, UserId};
use tracing::instrument;

use super::{Keyed, Redis};
use crate::Error;
use std::collections::BTreeMap;

/// How many likers are kept per item by default.
pub const DEFAULT_KEEP: usize = 100;

/// One liker of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Liker {
    pub user_id: i64,
    /// When they liked it, milliseconds since the Unix epoch.
    pub liked_at_ms: i64,
}

/// The score argument that means "remove this user" in the scripts below.
const REMOVE: &str = "-";

/// The projector's write. KEYS: the set, its stamp. ARGV: the stamp of these
/// changes (their newest offset), keep, then (user, score or "-") pairs.
/// Skipped when the stored stamp is at or past ARGV[1]: those changes are in.
const APPLY_IF_NEWER: &str = r#"
local stored = tonumber(redis.call('GET', KEYS[2]) or '-1')
if stored >= tonumber(ARGV[1]) then
  return 0
end
for i = 3, #ARGV, 2 do
  if ARGV[i + 1] == '-' then
    redis.call('ZREM', KEYS[1], ARGV[i])
  else
    redis.call('ZADD', KEYS[1], 'NX', ARGV[i + 1], ARGV[i])
  end
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[2]) + 1))
redis.call('SET', KEYS[2], ARGV[1])
return 1
"#;

/// The rebuild's write. KEYS: the set, its stamp. ARGV: the offset the
/// rebuilt set reflects, keep, "replace" (the set is whole: drop what is
/// stored first) or "merge" (the log did not reach back far enough: keep
/// stored likers the rebuild knows nothing of), then (user, score or "-")
/// pairs. Skipped only when the stored stamp is strictly newer: an equal one
/// was written from the same last change, and the rebuilt set is whole.
const PUT_UNLESS_NEWER: &str = r#"
local stored = tonumber(redis.call('GET', KEYS[2]) or '-1')
if stored > tonumber(ARGV[1]) then
  return 0
end
if ARGV[3] == 'replace' then
  redis.call('DEL', KEYS[1])
end
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '-' then
    redis.call('ZREM', KEYS[1], ARGV[i])
  else
    redis.call('ZADD', KEYS[1], ARGV[i + 1], ARGV[i])
  end
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -(tonumber(ARGV[2]) + 1))
redis.call('SET', KEYS[2], ARGV[1])
return 1
"#;

/// How a rebuilt set meets the stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildMode {
    /// The fold saw the item's whole history: the rebuilt set is the set.
    Replace,
    /// The fold began after the log's start: stored likers it never saw stay
    /// (unless it saw them unlike), the rebuilt ones are added.
    Merge,
}

/// One item's likers as folded from the log up to (and including) `stamp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuiltLikers {
    pub item: ItemKey,
    /// The last offset of the item's partition the fold covers.
    pub stamp: i64,
    pub mode: RebuildMode,
    /// The likers (the newest `keep` suffice: the script trims).
    pub likers: Vec<Liker>,
    /// Users whose last event unliked the item (sent only in merge mode).
    pub unliked: Vec<i64>,
}

/// A handle on the likers projection; cheap to clone.
#[derive(Clone)]
pub struct RecentLikers {
    redis: Redis,
    keep: usize,
    apply_script: redis::Script,
    rebuild_script: redis::Script,
}

impl RecentLikers {
    /// The likers kept in `redis`, the newest `keep` per item.
    pub fn new(redis: &Redis, keep: usize) -> Self {
        Self {
            redis: redis.clone(),
            keep: keep.max(1),
            apply_script: redis::Script::new(APPLY_IF_NEWER),
            rebuild_script: redis::Script::new(PUT_UNLESS_NEWER),
        }
    }

    /// How many likers are kept per item.
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Applies a committed batch's net changes, one script call per item, in
    /// one round trip: a pair left liked is added (scored by its event time,
    /// unless already there) and the set trimmed; a pair left not liked is
    /// removed. An item whose stamp is at or past the batch's newest change
    /// of it is left alone (it already reflects them), so repeating the call
    /// is harmless.
    #[instrument(skip_all, fields(changes = changes.len()))]
    pub async fn apply(&self, changes: &[NetChange]) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut by_item: BTreeMap<ItemKey, (i64, Vec<&NetChange>)> = BTreeMap::new();
        for change in changes {
            let (stamp, of_item) = by_item.entry(change.item).or_insert((-1, Vec::new()));
            *stamp = (*stamp).max(change.position.offset);
            of_item.push(change);
        }
        let calls: Vec<Keyed> = by_item
            .into_iter()
            .map(|(item, (stamp, of_item))| {
                let mut call = self.call(&self.apply_script, item, stamp);
                for change in of_item {
                    call.cmd.arg(change.user_id.get());
                    match change.state {
                        LikeState::Liked => call.cmd.arg(change.timestamp.timestamp_millis()),
                        LikeState::NotLiked => call.cmd.arg(REMOVE),
                    };
                }
                call
            })
            .collect();
        self.redis
            .pipelined::<redis::Value>(Some(&self.apply_script), calls)
            .await
            .map(drop)
    }

    /// Writes sets rebuilt from the log, one script call per item, in one
    /// round trip; answers, in order, whether each was written (`false`: the
    /// stored stamp is newer than the rebuilt set's, the projector applied
    /// later changes, and the set was left as it is).
    #[instrument(skip_all, fields(sets = sets.len()))]
    pub async fn put_rebuilt(&self, sets: &[RebuiltLikers]) -> Result<Vec<bool>, Error> {
        let calls: Vec<Keyed> = sets
            .iter()
            .map(|set| {
                let mut call = self.call(&self.rebuild_script, set.item, set.stamp);
                call.cmd.arg(match set.mode {
                    RebuildMode::Replace => "replace",
                    RebuildMode::Merge => "merge",
                });
                for liker in &set.likers {
                    call.cmd.arg(liker.user_id).arg(liker.liked_at_ms);
                }
                for user in &set.unliked {
                    call.cmd.arg(*user).arg(REMOVE);
                }
                call
            })
            .collect();
        let written: Vec<i64> = self
            .redis
            .pipelined(Some(&self.rebuild_script), calls)
            .await?;
        Ok(written.into_iter().map(|w| w == 1).collect())
    }

    /// An EVALSHA of `script` on an item's set and stamp (one slot), with the
    /// stamp and `keep` as its first arguments.
    fn call(&self, script: &redis::Script, item: ItemKey, stamp: i64) -> Keyed {
        let key = self.redis.keys().likers(item);
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash())
            .arg(2)
            .arg(&key)
            .arg(self.redis.keys().likers_stamp(item))
            .arg(stamp)
            .arg(self.keep);
        Keyed { key, cmd }
    }

    /// The newest `limit` likers of `item`, newest first.
    #[instrument(level = "debug", skip_all, fields(item = %item, limit))]
    pub async fn recent(&self, item: ItemKey, limit: usize) -> Result<Vec<Liker>, Error> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = i64::try_from(limit).unwrap_or(i64::MAX) - 1;
        let rows: Vec<(i64, f64)> = redis::cmd("ZRANGE")
            .arg(self.redis.keys().likers(item))
            .arg(0)
            .arg(stop)
            .arg("REV")
            .arg("WITHSCORES")
            .query_async(&mut self.redis.connection())
            .await?;
        Ok(rows
            .into_iter()
            .filter(|(user, _)| UserId::parse(*user).is_ok())
            .map(|(user_id, score)| Liker {
                user_id,
                liked_at_ms: score as i64,
            })
            .collect())
    }
}
