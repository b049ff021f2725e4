//! Per-user rate limiting in Redis, shared by every ingest instance.
//!
//! The algorithm is a token bucket kept in one Redis hash per user
//! ([`super::Keys::rate`], with fields `tokens` and `ts`). A Lua script,
//! atomic on the server and timed by the server's own clock (`TIME`, so the
//! instances' clocks do not matter):
//! 1. refills the bucket by `elapsed × rate` tokens, capped at `burst`
//!    (a user never seen starts with a full bucket);
//! 2. grants `min(⌊tokens⌋, cost)` tokens and takes them away;
//! 3. when it granted less than asked, answers how long until one more token
//!    is there (the `Retry-After` of the refused part);
//! 4. lets an idle bucket expire once it would be full again anyway.
//!
//! A batch asks for one token per event of the user; it may be granted part.

use likes_domain::UserId;
use tracing::instrument;

use super::Redis;
use crate::Error;

/// Takes up to `cost` tokens from the bucket at `key` (a Lua function, so
/// [`super::admission`] can run it in the same script as the dedup recall).
/// `rate` per second, `burst`, `cost` are numbers. Returns granted, wait_ms.
pub(super) const TAKE: &str = r#"
local function take(key, rate, burst, cost)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local state = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(state[1])
  local ts = tonumber(state[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  local elapsed = now - ts
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(burst, tokens + elapsed * rate / 1000)
  local granted = math.min(math.floor(tokens), cost)
  tokens = tokens - granted
  local wait = 0
  if granted < cost then
    wait = math.ceil((1 - tokens) * 1000 / rate)
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', tostring(now))
  redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 1000)
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
    #[instrument(skip_all, fields(cost))]
    pub async fn acquire(&self, user: UserId, cost: u32) -> Result<Grant, Error> {
        let (granted, wait): (i64, i64) = self
            .script
            .key(self.redis.keys().rate(user))
            .arg(self.rate.per_second)
            .arg(self.rate.burst)
            .arg(cost)
            .invoke_async(&mut self.redis.connection())
            .await?;
        Ok(Grant {
            granted: u32::try_from(granted.max(0)).unwrap_or(0),
            retry_after_ms: u64::try_from(wait.max(0)).unwrap_or(0),
        })
    }
}
