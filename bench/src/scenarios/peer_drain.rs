//! Scenario 3's peer: the Kafka Streams application of
//! `bench/peers/kafka-streams/` drains the very topic our projector just
//! drained (same events, same run), for its events/s and CPU next to ours,
//! then serves as the oracle: every item's count from the peer must equal
//! `counters` and Redis, all items, or the scenario fails and the differing
//! items go into the results.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use likes_domain::ItemKey;
use likes_infra::redis::counts::CountCache;
use likes_tests::peer::Peer;
use tokio::time::Instant;

use crate::cpu;
use crate::env::BenchEnv;
use crate::load::per;
use crate::report::{Oracle, Report, Row};

/// How long the peer's output may trail its committed input (an output
/// interval and a commit interval, a second each, with room).
const OUTPUT_SETTLES: Duration = Duration::from_secs(20);

/// The peer fails when its committed input stops moving this long: a slow
/// peer is a figure to report, a stuck one is a failure. (A fixed bound on
/// the whole drain cut a 5M-event run short at 4.6M.)
const STALLED: Duration = Duration::from_secs(120);

/// Runs the peer over `env`'s topic (`total` events, already drained by our
/// projector at `ours` events/s from its first commit) and checks its counts.
pub async fn peer_drain(
    scenario: &str,
    env: &BenchEnv,
    total: i64,
    ours: f64,
    report: &mut Report,
) -> anyhow::Result<()> {
    // The jar is built (once) before the clock starts.
    likes_tests::peer::jar().await?;
    let before = cpu::snapshot();
    let started = Instant::now();
    let mut peer = Peer::start_in(&env.stack, &env.suffix, &crate::env::scratch()).await?;
    let outcome = drain_and_check(scenario, env, &peer, total, ours, started, before, report).await;
    let stopped = peer.stop().await;
    peer.clean_up().await?;
    outcome?;
    stopped?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn drain_and_check(
    scenario: &str,
    env: &BenchEnv,
    peer: &Peer,
    total: i64,
    ours: f64,
    started: Instant,
    before: cpu::CpuUse,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut first: Option<(Instant, i64)> = None;
    let mut moved = (started, 0);
    loop {
        let (read, _) = peer.progress()?;
        if read > 0 && first.is_none() {
            first = Some((Instant::now(), read));
        }
        if read >= total {
            break;
        }
        if read > moved.1 {
            moved = (Instant::now(), read);
        }
        anyhow::ensure!(
            moved.0.elapsed() < STALLED,
            "the peer drained {read} of {total} and then nothing for {STALLED:?}"
        );
        // Each look is a consumer and a ListOffsets per partition on the
        // broker the peer is using: twice a second keeps that off its CPU
        // and the end within half a second (under 0.2 % of a full drain).
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let end = Instant::now();
    let used = cpu::snapshot().since(&before);
    let jvm_s = peer.pid().and_then(cpu::process_seconds).unwrap_or(0.0);
    let overall = total as f64 / (end - started).as_secs_f64();
    let steady = match first {
        Some((at, n)) if end > at && total > n => (total - n) as f64 / (end - at).as_secs_f64(),
        _ => overall,
    };
    let events = total as u64;
    report.notes.push(format!(
        "3: Kafka Streams peer (exactly_once_v2, commit 1 s, 1 stream thread, -Xmx256m): {overall:.0} events/s from start (JVM start and group join included), {steady:.0} events/s from its first commit; CPU per event: peer JVM {:.1} µs, Kafka {:.1} µs. It writes one store (Kafka: changelogs and output); our projector writes two (PostgreSQL rows and offsets, then Redis)",
        per(jvm_s, events),
        per(used.kafka_s, events),
    ));
    report.rows.push(
        Row::new(
            scenario,
            "events/s vs the Kafka Streams peer (from first commit)",
            ours,
            steady,
            true,
            "Kafka Streams peer on the same events (writes Kafka only; ours PostgreSQL + Redis)",
        )
        .goal_ratio(1.0),
    );
    check(env, peer, report).await
}

/// The oracle: every item's count from the peer, `counters` and Redis agree.
async fn check(env: &BenchEnv, peer: &Peer, report: &mut Report) -> anyhow::Result<()> {
    let counters = counters(env).await?;
    let settle = Instant::now() + OUTPUT_SETTLES;
    let mut from_peer = peer.counts()?;
    while differing(&from_peer, &counters) > 0 && Instant::now() < settle {
        tokio::time::sleep(Duration::from_millis(500)).await;
        from_peer = peer.counts()?;
    }
    let items: BTreeSet<String> = counters.keys().chain(from_peer.keys()).cloned().collect();
    let keys: Vec<ItemKey> = items.iter().filter_map(|k| parse_item(k)).collect();
    anyhow::ensure!(keys.len() == items.len(), "an item key does not parse");
    let redis =
        likes_infra::redis::Redis::connect(&env.stack.redis_address(), &env.stack.redis_key_prefix)
            .await?;
    let cache = CountCache::new(&redis);
    let mut cached = BTreeMap::new();
    for chunk in keys.chunks(1000) {
        for (item, count) in chunk.iter().zip(cache.counts(chunk).await?) {
            if let Some(n) = count {
                cached.insert(item.to_string(), n);
            }
        }
    }
    let mut differing_items = Vec::new();
    for item in &items {
        let p = from_peer.get(item).copied().unwrap_or(0);
        let c = counters.get(item).copied().unwrap_or(0);
        let r = cached.get(item).copied();
        if p != c || r.unwrap_or(0) != c || (r.is_none() && c != 0) {
            differing_items.push(format!("{item}: peer {p}, counters {c}, redis {r:?}"));
        }
    }
    let differing = differing_items.len();
    report.peer_oracle = Some(Oracle {
        items_compared: items.len(),
        differing: differing_items,
    });
    println!(
        "[3 projector drain] oracle: {} items compared, {differing} differ (peer, counters, Redis)",
        items.len()
    );
    anyhow::ensure!(
        differing == 0,
        "the peer and our projection differ on {differing} of {} items (listed in the results' peer_oracle)",
        items.len()
    );
    Ok(())
}

/// Every `counters` row of every shard, keyed `item_type:item_id`.
async fn counters(env: &BenchEnv) -> anyhow::Result<BTreeMap<String, i64>> {
    let mut all = BTreeMap::new();
    for (_, pool) in env.shards.iter() {
        let rows: Vec<(i16, i64, i64)> =
            sqlx::query_as("SELECT item_type, item_id, count FROM counters")
                .fetch_all(pool)
                .await?;
        for (t, i, n) in rows {
            all.insert(format!("{t}:{i}"), n);
        }
    }
    Ok(all)
}

fn differing(a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>) -> usize {
    a.keys()
        .chain(b.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|k| a.get(*k).copied().unwrap_or(0) != b.get(*k).copied().unwrap_or(0))
        .count()
}

fn parse_item(key: &str) -> Option<ItemKey> {
    let (t, i) = key.split_once(':')?;
    ItemKey::parse(t.parse().ok()?, i.parse().ok()?).ok()
}
