//! The projector's background chores: pruning applied event ids past the dedup
//! horizon.

use std::time::Duration;

use likes_domain::DedupHorizon;
use likes_infra::postgres::PgPool;
use likes_infra::postgres::writer;

/// How often applied event ids are pruned; a failed prune is simply done at
/// the next one.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Forgets applied events that can no longer make anything a duplicate, once
/// a minute (by each partition's log time, never the wall clock: see
/// [`writer::prune_applied_events`]). Every projector instance runs it; the
/// deletes are idempotent.
pub async fn prune_forever(db: PgPool, topic: String, horizon: DedupHorizon) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        match writer::prune_applied_events(&db, &topic, horizon).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(pruned = n, "applied event ids pruned"),
            Err(e) => tracing::warn!(error = %e, "pruning applied event ids failed"),
        }
    }
}
