//! Rows of the projection written straight through infra's batch writer, each
//! event on the shard that owns its item's partition, as the projector would
//! commit them: for tests of the read side that need rows on several shards
//! without running a projector.

use std::collections::{BTreeMap, BTreeSet};

use likes_domain::{
    Action, DedupHorizon, EventId, ItemKey, LikeEvent, LoggedEvent, Position, UserId,
};
use likes_infra::kafka::partitioner::partition_for_item;
use likes_infra::postgres::offsets;
use likes_infra::postgres::writer::{self, BatchRules, OffsetCommit};

use crate::TestEnv;

/// A like (or, with `like: false`, an unlike) of item (`item_type`, `item_id`)
/// by `user` at `at_ms` (milliseconds since the epoch).
pub fn event(
    user: i64,
    item_type: i64,
    item_id: i64,
    like: bool,
    at_ms: i64,
) -> anyhow::Result<LikeEvent> {
    Ok(LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(user)?,
        item: ItemKey::parse(item_type, item_id)?,
        action: if like { Action::Like } else { Action::Unlike },
        timestamp: chrono::DateTime::from_timestamp_millis(at_ms)
            .ok_or_else(|| anyhow::anyhow!("no time at {at_ms} ms"))?,
    })
}

/// Commits `events` (in order) each at the next offset its partition's
/// stored position gives, one batch per shard.
pub async fn project(env: &TestEnv, events: &[LikeEvent]) -> anyhow::Result<()> {
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    for shard in 0..env.shards.len() {
        for (partition, offset) in
            offsets::positions(env.shards.pool(shard), &env.stack.topic).await?
        {
            next.insert(partition, offset);
        }
    }
    let positioned: Vec<(Position, LikeEvent)> = events
        .iter()
        .map(|e| {
            let partition = partition_for_item(e.item.item_id.get(), env.partitions);
            let offset = next.entry(partition).or_insert(0);
            let position = Position {
                partition,
                offset: *offset,
            };
            *offset += 1;
            (position, e.clone())
        })
        .collect();
    project_at(env, &positioned).await
}

/// Commits `events` at the given log positions (e.g. the token of a write
/// the API logged), one batch per shard, moving each partition's offset past
/// its last event.
pub async fn project_at(env: &TestEnv, events: &[(Position, LikeEvent)]) -> anyhow::Result<()> {
    let groups = env
        .shards
        .map()
        .group(events.iter().cloned(), |(position, _)| position.partition);
    for (shard, group) in groups.into_iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        let pool = env.shards.pool(shard);
        let partitions: Vec<i32> = group
            .iter()
            .map(|(p, _)| p.partition)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let claims = offsets::claim(pool, &env.stack.topic, &partitions).await?;
        let commits: Vec<OffsetCommit> = claims
            .iter()
            .map(|claim| {
                let partition = claim.next.partition;
                let last = group
                    .iter()
                    .filter(|(p, _)| p.partition == partition)
                    .map(|(p, _)| p.offset)
                    .max()
                    .unwrap_or(claim.next.offset - 1);
                OffsetCommit {
                    epoch: claim.epoch,
                    next: Position {
                        partition,
                        offset: (last + 1).max(claim.next.offset),
                    },
                }
            })
            .collect();
        let logged: Vec<LoggedEvent> = group
            .into_iter()
            .map(|(position, event)| LoggedEvent {
                position,
                record_time: event.timestamp.timestamp_millis(),
                event,
            })
            .collect();
        writer::apply_batch(
            pool,
            &env.stack.topic,
            &commits,
            &logged,
            BatchRules {
                horizon: DedupHorizon::new(std::time::Duration::from_secs(3600)),
                cached_until: &[],
            },
        )
        .await?;
    }
    Ok(())
}

/// Item ids of type 1 from `from` upwards, `n` of them on each shard
/// (index = shard).
pub fn items_per_shard(env: &TestEnv, from: i64, n: usize) -> Vec<Vec<i64>> {
    let mut out: Vec<Vec<i64>> = vec![Vec::new(); env.shards.len()];
    let mut id = from;
    while out.iter().any(|items| items.len() < n) {
        let shard = env.shards.map().shard_of_item(id);
        if out[shard].len() < n {
            out[shard].push(id);
        }
        id += 1;
    }
    out
}
