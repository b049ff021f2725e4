//! The projector's one retry policy: an operation is tried again only while its
//! failure is transient ([`Error::is_transient`]), with a delay that doubles up
//! to a bound; a permanent failure is returned at once, for the caller to deal
//! with (dead-letter the record, park the partition), never retried blindly.

use std::future::Future;
use std::time::Duration;

use likes_infra::Error;

/// The first delay after a transient failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The delay never grows past this, so a service that comes back is used soon.
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Runs `op` until it succeeds or fails permanently, backing off between
/// transient failures; `what` names the operation in the log.
pub async fn transient<T, F, Fut>(what: &'static str, op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    counted(what, None, op).await
}

/// [`transient`], counting each retry in the counter `retries`.
pub async fn counted<T, F, Fut>(
    what: &'static str,
    retries: Option<&'static str>,
    mut op: F,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut delay = FIRST_DELAY;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(e) if e.is_transient() => {
                if let Some(name) = retries {
                    metrics::counter!(name).increment(1);
                }
                tracing::warn!(error = %e, what, delay_ms = delay.as_millis() as u64, "transient failure, retrying");
                tokio::time::sleep(delay).await;
                delay = next_delay(delay);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Runs `op` until it succeeds, whatever the failure. Only for start-up
/// (migrations, the first Redis connection), where a service that is not up yet
/// can surface as any error and there is nothing to park or dead-letter.
pub async fn forever<T, F, Fut>(what: &'static str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut delay = FIRST_DELAY;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => {
                tracing::warn!(error = %e, what, "start-up step failed, retrying");
                tokio::time::sleep(delay).await;
                delay = next_delay(delay);
            }
        }
    }
}

/// Doubles `delay`, bounded by [`MAX_DELAY`].
fn next_delay(delay: Duration) -> Duration {
    (delay * 2).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn the_delay_doubles_and_stops_growing_at_its_bound() {
        let mut delay = FIRST_DELAY;
        let mut seen = Vec::new();
        for _ in 0..10 {
            seen.push(delay.as_millis());
            delay = next_delay(delay);
        }
        assert_eq!(
            seen,
            vec![100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_the_operation_succeeds() {
        let calls = AtomicU32::new(0);
        let result = transient("test", || async {
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
        let result: Result<(), Error> = transient("test", || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(Error::Poison("never".into()))
        })
        .await;
        assert!(matches!(result, Err(Error::Poison(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
