//! A single like's two protections in one round trip: the rate limit's token
//! ([`super::ratelimit`]) and the dedup memo's recall ([`super::dedup`]), run
//! by one script.
//!
//! Asked separately they are two calls before the produce (and a third, the
//! release of the recall's mark, when the token is refused). Both keys carry
//! the user's hash tag ([`super::Keys::rate`], [`super::Keys::dedup`]), so
//! they sit in one Redis Cluster slot and one script may touch both. The
//! script takes the token first and recalls only when it got one: a refused
//! like neither answers from the memo nor marks its pair, as the separate
//! calls ended (the handler released the mark). The Lua of each part exists
//! once, in its own module; this one only puts them in order.
//!
//! A batch's events of one user go the same way, one call per user: the
//! script takes a token per event and marks the publishes of the first
//! events, as many as it granted (batch events are marked, never answered
//! from the memo). Asked apart that is a bucket call per user and a mark per
//! event; a batch's users are mostly distinct, so the one script halves the
//! calls a protected batch event makes before its produce.

use likes_domain::{Action, ItemKey, UserId};
use tracing::instrument;

use super::dedup::{DedupMemos, MARK_FN, Memo, RECALL_FN};
use super::millis;
use super::ratelimit::{Grant, Rate, RateLimiter, TAKE};
use crate::Error;

/// KEYS[1] the user's bucket, KEYS[2] the pair's memo. ARGV: rate per
/// second, burst, action symbol, window ms, hold ms. Returns {granted,
/// wait_ms, action, partition, offset, event id}, the last four false unless
/// the memo answered.
const ADMIT: &str = r#"
local granted, wait = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), 1)
if granted < 1 then
  return {0, wait, false, false, false, false}
end
local memo = recall(KEYS[2], ARGV[3], tonumber(ARGV[4]), ARGV[5])
if memo then
  return {1, 0, memo[1], memo[2], memo[3], memo[4]}
end
return {1, 0, false, false, false, false}
"#;

/// KEYS[1] the user's bucket, KEYS[2..] the memos of the user's events in
/// request order (a pair listed twice is marked twice). ARGV: rate per
/// second, burst, hold ms. Takes a token per event, marks the first events'
/// publishes, as many as granted. Returns {granted, wait_ms}.
const ADMIT_MARKS: &str = r#"
local granted, wait = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), #KEYS - 1)
for i = 2, granted + 1 do
  mark(KEYS[i], ARGV[3])
end
return {granted, wait}
"#;

/// What one admission decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// No token: refuse; the pair was not marked.
    Refused { retry_after_ms: u64 },
    /// A token was taken and the same action is the latest logged one:
    /// answer with it, do not produce.
    Answer(Memo),
    /// A token was taken and a publish of the pair is now marked; it must be
    /// settled ([`DedupMemos::settle`]).
    Marked,
}

/// The rate limit and the dedup memo of one deployment, asked together;
/// cheap to clone.
#[derive(Clone)]
pub struct Admission {
    rate: Rate,
    /// Its Redis, window and hold are the admission's too.
    memos: DedupMemos,
    script: redis::Script,
    batch: redis::Script,
}

impl Admission {
    /// Both protections as `limiter` and `memos` keep them.
    pub fn new(limiter: &RateLimiter, memos: &DedupMemos) -> Self {
        Self {
            rate: limiter.rate(),
            memos: memos.clone(),
            script: redis::Script::new(&format!("{TAKE}{MARK_FN}{RECALL_FN}{ADMIT}")),
            batch: redis::Script::new(&format!("{TAKE}{MARK_FN}{ADMIT_MARKS}")),
        }
    }

    /// Takes one token from `user`'s bucket and, if it got one, recalls (or
    /// marks) the user's `action` on `item`.
    #[instrument(level = "debug", skip_all, fields(item = %item))]
    pub async fn admit(
        &self,
        user: UserId,
        item: ItemKey,
        action: Action,
    ) -> Result<Admitted, Error> {
        type Reply = (
            i64,
            i64,
            Option<String>,
            Option<i32>,
            Option<i64>,
            Option<String>,
        );
        let redis = self.memos.redis();
        let (window, hold) = self.memos.window_and_hold();
        let keys = redis.keys();
        let (granted, wait, symbol, partition, offset, event_id): Reply = self
            .script
            .key(keys.rate(user))
            .key(keys.dedup(user, item))
            .arg(self.rate.per_second)
            .arg(self.rate.burst)
            .arg(action.symbol())
            .arg(millis(window))
            .arg(millis(hold))
            .invoke_async(&mut redis.connection())
            .await?;
        if granted < 1 {
            return Ok(Admitted::Refused {
                retry_after_ms: Grant::from_reply(granted, wait).retry_after_ms,
            });
        }
        match (symbol, partition, offset, event_id) {
            (None, None, None, None) => Ok(Admitted::Marked),
            (Some(symbol), Some(partition), Some(offset), Some(event_id)) => self
                .memos
                .read(user, item, (symbol, partition, offset, event_id))
                .map(Admitted::Answer),
            // The recall answers with all four fields or none.
            _ => Err(self.memos.unreadable(user, item)),
        }
    }

    /// Takes one token per item from `user`'s bucket and marks the publishes
    /// of the first items (`items` in request order), as many as granted:
    /// those, and only those, go to the producer and must be settled.
    #[instrument(level = "debug", skip_all, fields(events = items.len()))]
    pub async fn admit_batch(&self, user: UserId, items: &[ItemKey]) -> Result<Grant, Error> {
        let redis = self.memos.redis();
        let (_, hold) = self.memos.window_and_hold();
        let keys = redis.keys();
        let mut call = self.batch.key(keys.rate(user));
        for item in items {
            call.key(keys.dedup(user, *item));
        }
        let (granted, wait): (i64, i64) = call
            .arg(self.rate.per_second)
            .arg(self.rate.burst)
            .arg(millis(hold))
            .invoke_async(&mut redis.connection())
            .await?;
        Ok(Grant::from_reply(granted, wait))
    }
}
