//! The rate limit's bucket on the real Redis, asked directly: a new user's
//! bucket is full, a request is granted what is there and told how long until
//! the next token, the refill stops at the burst, and a bucket that is full
//! again leaves no key behind. The figures are chosen so that no answer
//! depends on how fast the test runs: either no refill can happen between two
//! calls, or the waits are long enough to fill the bucket to its cap.

use std::time::Duration;

use likes_domain::UserId;
use likes_infra::redis::Redis;
use likes_infra::redis::ratelimit::{Rate, RateLimiter};
use likes_tests::TestEnv;

async fn limiter(env: &TestEnv, rate: Rate) -> anyhow::Result<(Redis, RateLimiter)> {
    let redis = Redis::connect(&env.stack.redis_address(), &env.stack.redis_key_prefix).await?;
    let limiter = RateLimiter::new(&redis, rate);
    Ok((redis, limiter))
}

fn user(id: i64) -> anyhow::Result<UserId> {
    Ok(UserId::parse(id)?)
}

#[tokio::test]
async fn a_new_user_gets_the_burst_and_then_waits_one_interval_per_token() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    // One token per 100 s: nothing refills while the test runs.
    let (_, limiter) = limiter(
        &env,
        Rate {
            per_second: 0.01,
            burst: 3,
        },
    )
    .await?;
    let first = limiter.acquire(user(1)?, 2).await?;
    assert_eq!((first.granted, first.retry_after_ms), (2, 0));
    let partial = limiter.acquire(user(1)?, 5).await?;
    assert_eq!(partial.granted, 1, "only the burst's last token is left");
    assert!(
        (99_000..=100_000).contains(&partial.retry_after_ms),
        "the next token is one interval (100 s) away: {} ms",
        partial.retry_after_ms
    );
    let refused = limiter.acquire(user(1)?, 1).await?;
    assert_eq!(refused.granted, 0);
    assert!(
        refused.retry_after_ms <= partial.retry_after_ms && refused.retry_after_ms >= 99_000,
        "a refusal takes nothing, so the wait only shrinks: {} then {} ms",
        partial.retry_after_ms,
        refused.retry_after_ms
    );
    let other = limiter.acquire(user(2)?, 3).await?;
    assert_eq!(other.granted, 3, "another user has a bucket of their own");
    Ok(())
}

#[tokio::test]
async fn a_bucket_refills_up_to_its_burst_and_its_key_is_gone_once_full() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    // A token every 50 ms, two at most: 120 ms of rest fills the bucket.
    let (redis, limiter) = limiter(
        &env,
        Rate {
            per_second: 20.0,
            burst: 2,
        },
    )
    .await?;
    let key = redis.keys().rate(user(3)?);
    let drained = limiter.acquire(user(3)?, 2).await?;
    assert_eq!(drained.granted, 2);
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut redis.connection())
        .await?;
    assert!(
        (1..=101).contains(&ttl),
        "the key lives until the bucket is full again (100 ms): {ttl} ms"
    );

    tokio::time::sleep(Duration::from_millis(120)).await;
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut redis.connection())
        .await?;
    assert_eq!(exists, 0, "a full bucket keeps no key");
    let refilled = limiter.acquire(user(3)?, 5).await?;
    assert_eq!(
        (refilled.granted, refilled.retry_after_ms),
        (2, 50),
        "the refill stops at the burst; the next token is one interval away"
    );
    Ok(())
}
