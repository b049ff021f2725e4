//! The one backoff helper, and every retry policy of the services in one
//! place. A policy says how long to wait after each failure (a delay that
//! doubles up to a bound) and how many tries there are; the callers say which
//! failures are worth another try: as a rule only transient ones
//! ([`Error::is_transient`]), so a permanent failure comes back at once for
//! the caller to deal with (dead-letter the record, park the partition),
//! never retried blindly.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use crate::Error;

/// How a failed operation is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The delay after the first failure; it doubles after each further one.
    pub first: Duration,
    /// The delay never grows past this, so a service that comes back is used soon.
    pub max: Duration,
    /// How many tries in all (the first included); `None`: no limit.
    pub attempts: Option<u32>,
}

/// Work that must eventually succeed (a batch write, a record's decoding, a
/// dead letter): tried while the failure is transient, without limit.
pub const TRANSIENT: Policy = Policy {
    first: Duration::from_millis(100),
    max: Duration::from_secs(5),
    attempts: None,
};

/// Start-up steps (migrations, the first Redis connection): a service that is
/// not up yet can surface as any error, and there is nothing to park or
/// dead-letter, so every failure is tried again.
pub const START_UP: Policy = TRANSIENT;

/// Claiming partitions inside Kafka's rebalance callback, which blocks the
/// consumer: a few seconds of tries, then the assignment is given up and the
/// group rejoined.
pub const CLAIM: Policy = Policy {
    first: Duration::from_millis(100),
    max: Duration::from_secs(3),
    attempts: Some(10),
};

/// Registering the writer schema at start-up: a registry that fails once
/// (its own database connections recovering from a restart, say) is asked a
/// few more times before the service reports it.
pub const REGISTER_SCHEMA: Policy = Policy {
    first: Duration::from_millis(200),
    max: Duration::from_secs(5),
    attempts: Some(5),
};

/// Asking the registry again about a schema id it does not know: the number of
/// tries is bounded by the grace period (`UNKNOWN_SCHEMA_RETRY_SECONDS`), not
/// by this policy.
pub const UNKNOWN_SCHEMA: Policy = Policy {
    first: Duration::from_millis(200),
    max: Duration::from_secs(5),
    attempts: None,
};

/// Redis work the projector retries on a fixed tick rather than with a
/// backoff (the refresh of newly claimed partitions, writes that failed):
/// Redis is a cache, the next batch retries them too, and a tick keeps the
/// writer task's loop simple.
pub const REDIS_CATCH_UP_EVERY: Duration = Duration::from_secs(1);

impl Policy {
    /// The delays of one operation's retries.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            next: self.first,
            failures: 0,
        }
    }
}

/// The delays of one operation, failure after failure.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    next: Duration,
    failures: u32,
}

impl Backoff {
    /// The delay before the next try after one more failure, or `None` when
    /// the policy's tries are used up.
    pub fn after_failure(&mut self) -> Option<Duration> {
        self.failures += 1;
        if self.policy.attempts.is_some_and(|n| self.failures >= n) {
            return None;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.policy.max);
        Some(delay)
    }

    /// How many failures were seen so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

/// Runs `op` until it succeeds, fails in a way `retryable` refuses, or the
/// policy's tries are used up (the last error is returned). `on_retry` sees
/// each failure that is tried again; `what` names the operation in the log.
pub async fn run<T, E, F, Fut>(
    policy: &Policy,
    what: &'static str,
    retryable: impl Fn(&E) -> bool,
    mut on_retry: impl FnMut(&E),
    mut op: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = policy.backoff();
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if retryable(&e) => {
                let Some(delay) = backoff.after_failure() else {
                    return Err(e);
                };
                on_retry(&e);
                log_retry(what, backoff.failures(), delay, &e);
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// [`run`] for a blocking caller (Kafka's rebalance callback): the delays are
/// slept on the calling thread.
pub fn blocking<T, E: Display>(
    policy: &Policy,
    what: &'static str,
    retryable: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let mut backoff = policy.backoff();
    loop {
        match op() {
            Ok(value) => return Ok(value),
            Err(e) if retryable(&e) => {
                let Some(delay) = backoff.after_failure() else {
                    return Err(e);
                };
                log_retry(what, backoff.failures(), delay, &e);
                std::thread::sleep(delay);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `op` while its failures are transient, under `policy`.
pub async fn transient<T, F, Fut>(policy: &Policy, what: &'static str, op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    run(policy, what, Error::is_transient, |_| {}, op).await
}

/// Runs `op` until it succeeds, whatever the failure: only for
/// [`START_UP`]-like steps, where a service not up yet can fail in any way.
pub async fn forever<T, F, Fut>(policy: &Policy, what: &'static str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let unlimited = Policy {
        attempts: None,
        ..*policy
    };
    let mut backoff = unlimited.backoff();
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => {
                let delay = backoff.after_failure().unwrap_or(unlimited.max);
                log_retry(what, backoff.failures(), delay, &e);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn log_retry(what: &'static str, failures: u32, delay: Duration, e: &impl Display) {
    tracing::warn!(
        error = %e,
        what,
        failures,
        delay_ms = delay.as_millis() as u64,
        "failed, retrying"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn delays(policy: Policy, n: usize) -> Vec<u128> {
        let mut backoff = policy.backoff();
        (0..n)
            .map_while(|_| backoff.after_failure())
            .map(|d| d.as_millis())
            .collect()
    }

    #[test]
    fn the_delay_doubles_and_stops_growing_at_its_bound() {
        assert_eq!(
            delays(TRANSIENT, 10),
            vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
    }

    #[test]
    fn a_bounded_policy_gives_one_delay_fewer_than_its_tries() {
        assert_eq!(delays(REGISTER_SCHEMA, 10), vec![200, 400, 800, 1600]);
        assert_eq!(
            delays(CLAIM, 20),
            vec![100, 200, 400, 800, 1600, 3000, 3000, 3000, 3000]
        );
    }

    const QUICK: Policy = Policy {
        first: Duration::from_millis(1),
        max: Duration::from_millis(2),
        attempts: None,
    };

    #[tokio::test]
    async fn transient_failures_are_retried_until_the_operation_succeeds() {
        let calls = AtomicU32::new(0);
        let result = transient(&QUICK, "test", || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(Error::RegistryUnavailable("down".into())),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(result.ok(), Some(2));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_permanent_failure_is_returned_without_a_retry() {
        let calls = AtomicU32::new(0);
        let result: Result<(), Error> = transient(&QUICK, "test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::Poison("never".into()))
        })
        .await;
        assert!(matches!(result, Err(Error::Poison(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_blocking_retry_gives_up_after_the_policys_tries() {
        let policy = Policy {
            attempts: Some(3),
            ..QUICK
        };
        let calls = AtomicU32::new(0);
        let result: Result<(), Error> = blocking(&policy, "test", Error::is_transient, || {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::RegistryUnavailable("down".into()))
        });
        assert!(result.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }
}
