//! Per-user rate limiting in Redis, shared by every ingest instance.
//!
//! The algorithm is a token bucket (`burst` tokens, refilled at `rate` per
//! second, a user never seen starts full) kept as GCRA, the generic cell rate
//! algorithm: instead of a token count and a timestamp, one Redis string per
//! user ([`super::Keys::rate`]) holds the theoretical arrival time, `tat`,
//! the instant at which the bucket is full again, in microseconds of the
//! server's clock (`TIME`, so the instances' clocks do not matter). The
//! tokens at `now` are `burst − (tat − now) × rate`, so the two forms grant
//! and refuse the same requests; GCRA's state is one integer, read with one
//! `GET` and written with one `SET … PX`, where the pair of fields took a
//! hash read, a hash write and an expiry, each with float-to-text work. A Lua
//! script, atomic on the server:
//! 1. takes `tat = max(stored tat, now)` (a missing key is a full bucket);
//! 2. grants `min(⌊tokens⌋, cost)` tokens and moves `tat` on by
//!    `granted / rate` seconds;
//! 3. when it granted less than asked, answers how long until one more token
//!    is there (the `Retry-After` of the refused part);
//! 4. lets the key expire at `tat`, when it would read as full anyway; a
//!    request granted nothing writes nothing.
//!
//! A batch asks for one token per event of the user; it may be granted part.

use likes_domain::UserId;
use tracing::instrument;

use super::Redis;
use crate::Error;

/// Takes up to `cost` tokens from the bucket at `key` (a Lua function, so
/// [`super::admission`] can run it in the same script as the dedup recall).
/// `rate` per second, `burst`, `cost` are numbers. Returns granted, wait_ms.
/// Times are microseconds: at 1.7e15 they are exact in Lua's doubles (up to
/// 2^53), and `%d` writes them whole where `tostring` would round to 14 digits.
pub(super) const TAKE: &str = r#"
local function take(key, rate, burst, cost)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local interval = 1000000 / rate
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  local granted = math.min(math.floor(burst - (tat - now) / interval), cost)
  if granted < 0 then granted = 0 end
  tat = tat + granted * interval
  local wait = 0
  if granted < cost then
    wait = math.ceil((tat - now - (burst - 1) * interval) / 1000)
    if wait < 1 then wait = 1 end
  end
  if granted > 0 then
    redis.call('SET', key, string.format('%d', math.ceil(tat)),
      'PX', math.ceil((tat - now) / 1000) + 1)
  end
  return granted, wait
end
"#;

/// KEYS[1]: the bucket. ARGV: rate per second, burst, cost. Returns {granted, wait_ms}.
const TOKEN_BUCKET: &str = r#"
local granted, wait = take(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {granted, wait}
"#;

/// How much a user may send: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

/// What the bucket allowed for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Tokens granted, at most the cost asked.
    pub granted: u32,
    /// When fewer were granted than asked: milliseconds until the next token.
    pub retry_after_ms: u64,
}

/// The shared limiter; cheap to clone.
#[derive(Clone)]
pub struct RateLimiter {
    redis: Redis,
    rate: Rate,
    script: redis::Script,
}

impl RateLimiter {
    /// A limiter allowing `rate` per user, its buckets kept in `redis`.
    pub fn new(redis: &Redis, rate: Rate) -> Self {
        Self {
            redis: redis.clone(),
            rate,
            script: redis::Script::new(&format!("{TAKE}{TOKEN_BUCKET}")),
        }
    }

    /// The allowance this limiter grants.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes up to `cost` tokens from `user`'s bucket.
    #[instrument(level = "debug", skip_all, fields(cost))]
    pub async fn acquire(&self, user: UserId, cost: u32) -> Result<Grant, Error> {
        let (granted, wait): (i64, i64) = self
            .script
            .key(self.redis.keys().rate(user))
            .arg(self.rate.per_second)
            .arg(self.rate.burst)
            .arg(cost)
            .invoke_async(&mut self.redis.connection())
            .await?;
        Ok(Grant::from_reply(granted, wait))
    }
}

impl Grant {
    /// A take's reply, `{granted, wait_ms}` as the Lua `take` returns them.
    pub(super) fn from_reply(granted: i64, wait_ms: i64) -> Self {
        Self {
            granted: u32::try_from(granted.max(0)).unwrap_or(0),
            retry_after_ms: u64::try_from(wait_ms.max(0)).unwrap_or(0),
        }
    }
}
