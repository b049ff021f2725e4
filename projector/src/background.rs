//! The projector's background chores: retrying an operation through transient
//! failures, and pruning applied event ids past the dedup horizon.

use std::future::Future;
use std::time::Duration;

use likes_domain::DedupHorizon;
use likes_infra::Error;
use likes_infra::store::PgPool;
use likes_infra::store::writer;

/// Forgets applied events that can no longer make anything a duplicate, once
/// a minute (by each partition's log time, never the wall clock: see
/// [`writer::prune_applied_events`]). Every projector instance runs it; the
/// deletes are idempotent.
pub async fn prune_forever(db: PgPool, topic: String, horizon: DedupHorizon) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match writer::prune_applied_events(&db, &topic, horizon).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "applied event ids pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning applied event ids failed"),
        }
    }
}

/// Runs `op` until it succeeds, backing off between transient failures.
pub async fn retry_forever<T, F, Fut>(what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match op().await {
            Ok(value) => return value,
            Err(e) => {
                tracing::warn!(error = %e, what, "retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}
