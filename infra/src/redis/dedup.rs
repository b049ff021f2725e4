//! The quick-dedup memo in Redis: per user × item, the user's latest logged
//! action on the item, so a repeated identical action can be answered without
//! producing it again.
//!
//! The memo may answer only when its action is the user's latest logged action
//! on the item. One hash per pair ([`super::Keys::dedup`]), with the fields
//! - `a`, `p`, `o`, `e`, `t`: the acked action with the highest offset (its
//!   action symbol, partition, offset, event id, and the Redis server time in
//!   ms when it was settled, which starts the dedup window);
//! - `n`: how many publishes of the pair have started and not settled;
//! - `u`: present once a publish's outcome is unknown (not acked, maybe stored).
//!
//! Every publish of a pair, single or batch, first marks itself (`n + 1`) and,
//! once its outcome is known, settles (`n - 1`) with a compare-and-set that keeps
//! the highest offset: an item's events share one partition, so the offset
//! orders them whatever order the settles arrive in. A recall answers only when
//! `n = 0`, `u` is absent and the window is still open. Why that is enough: any
//! record of the pair already appended when a recall reads the hash was
//! appended by a publish that marked before it appended; if that publish has
//! not settled, `n > 0` and the recall does not answer; if it has, the memo's
//! offset is at least its offset. So an answering memo is the latest logged
//! action at the instant of the recall, and a publish that marks later is
//! concurrent with the recalled request and appends after that instant.
//!
//! Everything fails towards producing: a mark whose settle never comes (a
//! crash, a Redis error) or an unknown outcome keeps the pair unanswerable
//! until the hash expires `hold` after its last mark; an evicted hash simply
//! answers nothing. A duplicate produced is harmless (the projector counts
//! transitions); only a swallowed action would be wrong.

use futures::future::join_all;
use likes_domain::{Action, EventId, ItemKey, Position, UserId};
use std::time::Duration;
use tracing::instrument;

use super::{Redis, millis};
use crate::Error;

/// Marks one publish of the pair at `key`, which then stays unanswerable at
/// least `hold` ms (given as text) unless settled (a Lua function: the
/// recall, the batch's mark and [`super::admission`] run it).
pub(super) const MARK_FN: &str = r#"
local function mark(key, hold)
  redis.call('HINCRBY', key, 'n', 1)
  if redis.call('PTTL', key) < tonumber(hold) then
    redis.call('PEXPIRE', key, hold)
  end
end
"#;

/// Answers with the memo when it may answer; otherwise marks a publish (a
/// Lua function, so [`super::admission`] can run it after the rate limit's
/// in one script; it needs [`MARK_FN`] before it). `key` the pair's hash,
/// `symbol` the action's, `window` ms a number, `hold` ms as given. Returns
/// {action, partition, offset, event id}, or false when it marked.
pub(super) const RECALL_FN: &str = r#"
local function recall(key, symbol, window, hold)
  local m = redis.call('HMGET', key, 'a', 'p', 'o', 'e', 't', 'n', 'u')
  local clock = redis.call('TIME')
  local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
  if m[1] == symbol and m[2] and m[3] and m[4] and m[5]
    and (not m[6] or tonumber(m[6]) == 0) and not m[7]
    and now - tonumber(m[5]) < window then
    return {m[1], m[2], m[3], m[4]}
  end
  mark(key, hold)
  return false
end
"#;

/// KEYS[1] the pair's hash; ARGV: action symbol, window ms, hold ms.
/// Returns {action, partition, offset, event id} or nil (marked).
const RECALL: &str = r#"
return recall(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3])
"#;

/// Marks a publish without asking for an answer (the batch path).
/// KEYS[1] the pair's hash; ARGV: hold ms.
const MARK: &str = r#"
mark(KEYS[1], ARGV[1])
return 1
"#;

/// Settles a publish. KEYS[1] the pair's hash; ARGV: outcome (`ack`,
/// `release`, `uncertain`), marked (`1`/`0`), window ms, hold ms, then for an
/// ack its action symbol, partition, offset and event id.
const SETTLE: &str = r#"
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[1], 'n', -1)
end
if ARGV[1] == 'uncertain' then
  redis.call('HSET', KEYS[1], 'u', '1')
elseif ARGV[1] == 'ack' then
  local cur = redis.call('HMGET', KEYS[1], 'p', 'o')
  if cur[1] and tonumber(cur[1]) ~= tonumber(ARGV[6]) then
    -- Offsets of two partitions do not order (the topic was resized): trust neither.
    redis.call('HSET', KEYS[1], 'u', '1')
  elseif not cur[2] or tonumber(cur[2]) < tonumber(ARGV[7]) then
    redis.call('HSET', KEYS[1], 'a', ARGV[5], 'p', ARGV[6], 'o', ARGV[7], 'e', ARGV[8], 't', now)
  end
end
local m = redis.call('HMGET', KEYS[1], 'n', 'u', 't')
if (m[1] and tonumber(m[1]) ~= 0) or m[2] then
  if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  end
  return 0
end
local left = -1
if m[3] then
  left = tonumber(m[3]) + tonumber(ARGV[3]) - now
end
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return 0
end
redis.call('PEXPIRE', KEYS[1], left)
return 1
"#;

/// The user's latest logged action on an item and where the log stored it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memo {
    pub action: Action,
    pub event_id: EventId,
    pub ack: Position,
}

/// What a recall found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recall {
    /// The same action is the latest logged one: answer with it.
    Answer(Memo),
    /// No answer; a publish of the pair is now marked and must be settled.
    Marked,
}

/// How a marked (or, after a Redis failure, unmarked) publish ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The broker acked it at `memo.ack`.
    Acked(Memo),
    /// It never reached the producer (refused, queue full, not encodable).
    Released,
    /// It was handed to the producer but not acked: it may be in the log.
    Uncertain,
}

/// One settle: the pair, how its publish ended, and whether it was marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settle {
    pub user: UserId,
    pub item: ItemKey,
    pub outcome: Outcome,
    pub marked: bool,
}

/// The memos of one deployment; cheap to clone.
#[derive(Clone)]
pub struct DedupMemos {
    redis: Redis,
    window: Duration,
    hold: Duration,
    recall: redis::Script,
    mark: redis::Script,
    settle: redis::Script,
}

impl DedupMemos {
    /// Memos kept in `redis` answering within `window` of an ack; a pair with
    /// a publish in flight or of unknown outcome stays unanswerable for `hold`
    /// after its last mark (at least the window).
    pub fn new(redis: &Redis, window: Duration, hold: Duration) -> Self {
        Self {
            redis: redis.clone(),
            window,
            hold: hold.max(window),
            recall: redis::Script::new(&format!("{MARK_FN}{RECALL_FN}{RECALL}")),
            mark: redis::Script::new(&format!("{MARK_FN}{MARK}")),
            settle: redis::Script::new(SETTLE),
        }
    }

    /// The memo if `action` is the user's latest logged action on `item`
    /// within the window; otherwise marks a publish of the pair.
    #[instrument(level = "debug", skip_all, fields(item = %item))]
    pub async fn recall(
        &self,
        user: UserId,
        item: ItemKey,
        action: Action,
    ) -> Result<Recall, Error> {
        let mut conn = self.redis.connection();
        let found: Option<(String, i32, i64, String)> = self
            .recall
            .key(self.redis.keys().dedup(user, item))
            .arg(action.symbol())
            .arg(millis(self.window))
            .arg(millis(self.hold))
            .invoke_async(&mut conn)
            .await?;
        let Some(found) = found else {
            return Ok(Recall::Marked);
        };
        self.read(user, item, found).map(Recall::Answer)
    }

    /// The memo a recall answered with, from its fields as Redis sent them.
    /// Only this module writes the hash, so a field that does not read back
    /// is damage: an error, and the caller produces (not marked).
    pub(super) fn read(
        &self,
        user: UserId,
        item: ItemKey,
        (symbol, partition, offset, event_id): (String, i32, i64, String),
    ) -> Result<Memo, Error> {
        let memo = Action::from_symbol(&symbol)
            .ok()
            .zip(EventId::parse(&event_id).ok())
            .map(|(action, event_id)| Memo {
                action,
                event_id,
                ack: Position { partition, offset },
            });
        memo.ok_or_else(|| self.unreadable(user, item))
    }

    /// The error of a memo that does not read back.
    pub(super) fn unreadable(&self, user: UserId, item: ItemKey) -> Error {
        Error::Redis(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unreadable dedup memo",
            self.redis.keys().dedup(user, item),
        )))
    }

    /// The window a memo answers within, and how long a mark holds its pair.
    pub(super) fn window_and_hold(&self) -> (Duration, Duration) {
        (self.window, self.hold)
    }

    /// The Redis these memos live in.
    pub(super) fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Marks one publish per pair listed (a pair listed twice is marked twice).
    #[instrument(level = "debug", skip_all, fields(pairs = pairs.len()))]
    pub async fn mark(&self, pairs: &[(UserId, ItemKey)]) -> Result<(), Error> {
        let hold = millis(self.hold);
        let calls = pairs.iter().map(|(user, item)| {
            let mut conn = self.redis.connection();
            let key = self.redis.keys().dedup(*user, *item);
            async move {
                self.mark
                    .key(key)
                    .arg(hold)
                    .invoke_async::<i64>(&mut conn)
                    .await
            }
        });
        for result in join_all(calls).await {
            result?;
        }
        Ok(())
    }

    /// Settles publishes; an ack replaces the memo only if its offset is the
    /// highest seen for the pair. One script call per key (Redis Cluster
    /// allows a script one slot), all in flight at once on the multiplexed
    /// connection; each call is executed once even after a Redis restart
    /// dropped the scripts (the client loads it and sends it again only when
    /// Redis refused to run it).
    #[instrument(level = "debug", skip_all, fields(settles = settles.len()))]
    pub async fn settle(&self, settles: &[Settle]) -> Result<(), Error> {
        let (window, hold) = (millis(self.window), millis(self.hold));
        let calls = settles.iter().map(|s| {
            let mut conn = self.redis.connection();
            let mut call = self.settle.key(self.redis.keys().dedup(s.user, s.item));
            let outcome = match s.outcome {
                Outcome::Acked(_) => "ack",
                Outcome::Released => "release",
                Outcome::Uncertain => "uncertain",
            };
            call.arg(outcome)
                .arg(if s.marked { "1" } else { "0" })
                .arg(window)
                .arg(hold);
            if let Outcome::Acked(memo) = s.outcome {
                call.arg(memo.action.symbol())
                    .arg(memo.ack.partition)
                    .arg(memo.ack.offset)
                    .arg(memo.event_id.to_string());
            }
            async move { call.invoke_async::<i64>(&mut conn).await }
        });
        for result in join_all(calls).await {
            result?;
        }
        Ok(())
    }
}
