//! How every command reaches the projection: a pool per shard of
//! `DATABASE_URLS` (`likes_infra::postgres::shards`), each shard's recorded map
//! checked against ours before the command reads or writes it, so a tool run
//! with the shards listed in another order (or another count) refuses instead
//! of reading or rebuilding the wrong slice. Shards are numbered from 0, like
//! partitions.

use anyhow::{Context, bail};
use likes_infra::postgres::shards::Shards;
use likes_infra::settings::StackSettings;

/// Pools to every shard (`max_connections` each), none checked yet.
pub async fn connect(stack: &StackSettings, max_connections: u32) -> anyhow::Result<Shards> {
    Shards::connect(stack, max_connections)
        .await
        .context("connect to the shards of DATABASE_URLS")
}

/// Checks the recorded map of each of `touched` (a mismatch is
/// `Error::ShardMapMismatch`, naming the shard; no retry cures it).
pub async fn check(shards: &Shards, topic: &str, touched: &[usize]) -> anyhow::Result<()> {
    let checks = touched.iter().map(|&s| shards.check_map(s, topic));
    futures::future::try_join_all(checks).await?;
    Ok(())
}

/// Pools to every shard with every shard's map checked.
pub async fn connect_all(stack: &StackSettings, max_connections: u32) -> anyhow::Result<Shards> {
    let shards = connect(stack, max_connections).await?;
    let all: Vec<usize> = (0..shards.len()).collect();
    if let Err(e) = check(&shards, &stack.topic, &all).await {
        shards.close().await;
        return Err(e);
    }
    Ok(shards)
}

/// The shards a command works on: `Some(n)` (0-based, from `--shard`), else all.
pub fn selected(shards: &Shards, shard: Option<usize>) -> anyhow::Result<Vec<usize>> {
    match shard {
        None => Ok((0..shards.len()).collect()),
        Some(s) if s < shards.len() => Ok(vec![s]),
        Some(s) => bail!(
            "--shard {s}: DATABASE_URLS lists {} shard{} (numbered 0 to {})",
            shards.len(),
            if shards.len() == 1 { "" } else { "s" },
            shards.len() - 1
        ),
    }
}

/// The partitions `shard` owns, `first-last` (all of `partitions` for one shard).
pub fn owned(shards: &Shards, shard: usize, partitions: i32) -> std::ops::Range<i32> {
    shards.map().partitions_of(shard).unwrap_or(0..partitions)
}

/// A range of partitions as people read it: `3`, `0-31`.
pub fn describe(range: &std::ops::Range<i32>) -> String {
    match range.end - range.start {
        1 => range.start.to_string(),
        _ => format!("{}-{}", range.start, range.end - 1),
    }
}

/// The partitions `shard` owns as people read them; `all` with one shard
/// (which owns every partition, however many).
pub fn owns(shards: &Shards, shard: usize) -> String {
    shards
        .map()
        .partitions_of(shard)
        .map_or_else(|| "all".to_string(), |r| describe(&r))
}
