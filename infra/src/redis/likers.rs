//! The Redis projection of each item's most recent likers: a sorted set per
//! item ([`super::Keys::likers`]), member = user id, score = when the like
//! happened (milliseconds since the epoch), trimmed to the newest `keep`.
//!
//! The projector writes it after each PostgreSQL commit with the batch's net
//! changes ([`RecentLikers::apply`]); the API reads it ([`RecentLikers::recent`]).
//! Like every Redis projection it may vanish at any time: it is a convenience
//! view, and `user_likes` in PostgreSQL stays the truth.

use likes_domain::{ItemKey, LikeState, NetChange, UserId};
use tracing::instrument;

use super::{Keyed, Redis};
use crate::Error;

/// How many likers are kept per item by default.
pub const DEFAULT_KEEP: usize = 100;

/// One liker of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Liker {
    pub user_id: i64,
    /// When they liked it, milliseconds since the Unix epoch.
    pub liked_at_ms: i64,
}

/// A handle on the likers projection; cheap to clone.
#[derive(Clone)]
pub struct RecentLikers {
    redis: Redis,
    keep: usize,
}

impl RecentLikers {
    /// The likers kept in `redis`, the newest `keep` per item.
    pub fn new(redis: &Redis, keep: usize) -> Self {
        Self {
            redis: redis.clone(),
            keep: keep.max(1),
        }
    }

    /// Applies a committed batch's net changes in one round trip: a pair left
    /// liked is added (scored by its event time) and the set trimmed; a pair left
    /// not liked is removed. Repeating the call is harmless.
    #[instrument(skip_all, fields(changes = changes.len()))]
    pub async fn apply(&self, changes: &[NetChange]) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let keep = i64::try_from(self.keep).unwrap_or(i64::MAX);
        let mut calls = Vec::with_capacity(changes.len() * 2);
        for change in changes {
            let key = self.redis.keys().likers(change.item);
            match change.state {
                LikeState::Liked => {
                    let mut add = redis::cmd("ZADD");
                    add.arg(&key)
                        .arg(change.timestamp.timestamp_millis())
                        .arg(change.user_id.get());
                    let mut trim = redis::cmd("ZREMRANGEBYRANK");
                    trim.arg(&key).arg(0).arg(-(keep + 1));
                    calls.push(Keyed {
                        key: key.clone(),
                        cmd: add,
                    });
                    calls.push(Keyed { key, cmd: trim });
                }
                LikeState::NotLiked => {
                    let mut rem = redis::cmd("ZREM");
                    rem.arg(&key).arg(change.user_id.get());
                    calls.push(Keyed { key, cmd: rem });
                }
            }
        }
        self.redis
            .pipelined::<redis::Value>(None, calls)
            .await
            .map(drop)
    }

    /// The newest `limit` likers of `item`, newest first.
    #[instrument(skip_all, fields(item = %item, limit))]
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
