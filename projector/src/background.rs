//! The projector's background chores: pruning applied event ids past the dedup
//! horizon, and reporting the partitions by state.

use std::sync::Arc;
use std::time::Duration;

use likes_domain::DedupHorizon;
use likes_infra::postgres::PgPool;
use likes_infra::postgres::writer;

use crate::ownership::Ownership;

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

/// How often the partitions by state are reported.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Sets [`crate::metrics::PARTITIONS`] every second from what this instance
/// owns, has parked, and was assigned but could not claim.
pub async fn report_partitions_forever(ownership: Arc<Ownership>) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    loop {
        tick.tick().await;
        let owned = ownership.owned();
        let parked = ownership.parked().len();
        crate::metrics::partitions(
            owned.saturating_sub(parked),
            parked,
            ownership.unclaimed_count(),
        );
    }
}
