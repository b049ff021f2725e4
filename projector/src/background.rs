//! The projector's background chores: pruning applied event ids past the dedup
//! horizon.

use std::time::Duration;

use likes_infra::store::PgPool;
use likes_infra::store::writer;

/// Forgets applied event ids past the dedup horizon, once a minute. Every
/// projector instance runs it; the deletes are idempotent.
pub async fn prune_forever(db: PgPool, horizon: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match writer::prune_applied_events(&db, horizon.as_secs() as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "applied event ids pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning applied event ids failed"),
        }
    }
}
