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
/// [`writer::prune_applied_events`]), in one shard (`db`): one pruner per
/// shard, so a shard that is away delays only its own pruning. Every
/// projector instance runs them; the deletes are idempotent.
pub async fn prune_forever(db: PgPool, shard: usize, topic: String, horizon: DedupHorizon) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        match writer::prune_applied_events(&db, &topic, horizon).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(shard, pruned = n, "applied event ids pruned"),
            Err(e) => tracing::warn!(error = %e, shard, "pruning applied event ids failed"),
        }
    }
}
