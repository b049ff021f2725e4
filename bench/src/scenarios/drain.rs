//! Scenario 3: the projector draining a pre-filled topic, against the raw
//! `INSERT … SELECT FROM UNNEST … ON CONFLICT DO UPDATE` of the same net rows
//! into the same (fresh) tables, arrays built in advance. Filling the topic is
//! itself a raw rdkafka producer loop with the product's producer settings,
//! its rate is reported as a side figure. The Kafka Streams peer then drains
//! the same topic and cross-checks every count ([`super::peer_drain`]).

use std::time::Duration;

use futures::future::join_all;
use likes_infra::codec::EventCodec;
use likes_infra::kafka;
use likes_infra::postgres::{self, PgPool};
use rdkafka::producer::FutureRecord;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cpu::{self, CpuUse};
use crate::env::{BenchEnv, drop_database, fresh_database};
use crate::keys::Keys;
use crate::load::per;
use crate::report::{Report, Row};
use crate::scenarios::Config;
use crate::scenarios::events::{self, NetBatch};

const NAME: &str = "3 projector drain";

/// Runs scenario 3.
pub async fn drain(cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    let env = BenchEnv::new(8).await?;
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 3)?;
    let events = events::generate(&mut keys, cfg.drain_events)?;
    let (fill_rate, _) = fill(&env, &events).await?;
    report.notes.push(format!(
        "3: topic filled with {} events by a raw rdkafka producer loop (pre-encoded, product producer settings) at {fill_rate:.0} events/s",
        events.len()
    ));
    let settings = env.projector_settings();
    let batch = settings.max_batch_events;
    let (ours, overall, used) = project(&env, settings, 1, events.len() as i64).await?;
    report.notes.push(format!(
        "3: projector {overall:.0} events/s from start (group join included), {ours:.0} events/s from its first commit; CPU per event: projector {:.1} µs, PostgreSQL {:.1} µs, Redis {:.1} µs, Kafka {:.1} µs",
        per(used.service_s, events.len() as u64),
        per(used.postgres_s, events.len() as u64),
        per(used.redis_s, events.len() as u64),
        per(used.kafka_s, events.len() as u64),
    ));
    let nets = events::net_batches(&events, batch);
    let (base, used) = unnest_baseline(&nets, events.len()).await?;
    report.notes.push(format!(
        "3: raw UNNEST baseline CPU per event: bench process {:.1} µs, PostgreSQL {:.1} µs",
        per(used.service_s, events.len() as u64),
        per(used.postgres_s, events.len() as u64),
    ));
    report.rows.push(Row::new(
        NAME,
        "events/s (from first commit)",
        ours,
        base,
        true,
        "raw UNNEST upserts of the same net rows",
    ));
    let peer =
        crate::scenarios::peer_drain::peer_drain(NAME, &env, events.len() as i64, ours, report)
            .await;
    env.clean().await?;
    peer?;
    sharded(&events, ours, report).await
}

/// The same events drained from a fresh topic into 2 shards by 2 projector
/// instances (one group), against the one-shard drain of this run. On the
/// default topology both shards are databases of one server; on the cluster
/// topology, one server each. Either way every process shares the same cores,
/// so this shows the cost of the split, not its scaling.
async fn sharded(
    events: &[likes_domain::LikeEvent],
    one_shard: f64,
    report: &mut Report,
) -> anyhow::Result<()> {
    const SHARDS: usize = 2;
    let env = BenchEnv::sharded(8, SHARDS).await?;
    fill(&env, events).await?;
    let settings = env.projector_settings();
    let (ours, overall, used) = project(&env, settings, SHARDS, events.len() as i64).await?;
    report.notes.push(format!(
        "3: {SHARDS} shards, {SHARDS} projector instances: {overall:.0} events/s from start, {ours:.0} events/s from the first commit; CPU per event: projectors {:.1} µs, PostgreSQL {:.1} µs, Redis {:.1} µs, Kafka {:.1} µs",
        per(used.service_s, events.len() as u64),
        per(used.postgres_s, events.len() as u64),
        per(used.redis_s, events.len() as u64),
        per(used.kafka_s, events.len() as u64),
    ));
    report.rows.push(Row::new(
        NAME,
        "events/s, 2 shards and 2 projectors (from first commit)",
        ours,
        one_shard,
        true,
        "1 shard, 1 projector, same events, same run",
    ));
    env.clean().await
}

/// Encodes every event once, then produces them many in flight; answers
/// events/s and the CPU used while producing (encoding excluded).
pub async fn fill(
    env: &BenchEnv,
    events: &[likes_domain::LikeEvent],
) -> anyhow::Result<(f64, CpuUse)> {
    let codec = EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?;
    codec.register().await?;
    let mut encoded = Vec::with_capacity(events.len());
    for e in events {
        encoded.push((
            kafka::item_key(e.item.item_id.get()),
            codec.encode(e).await?,
        ));
    }
    let producer = kafka::producer(&env.stack.kafka_bootstrap, Duration::from_secs(60))?;
    let before = cpu::snapshot();
    let started = Instant::now();
    for chunk in encoded.chunks(50_000) {
        let mut deliveries = Vec::with_capacity(chunk.len());
        for (key, payload) in chunk {
            let record = FutureRecord::to(&env.stack.topic)
                .key(key.as_str())
                .payload(payload);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => anyhow::bail!("produce: {e}"),
            }
        }
        for delivery in join_all(deliveries).await {
            match delivery {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!("delivery: {e}"),
                Err(_) => anyhow::bail!("delivery canceled"),
            }
        }
    }
    let rate = events.len() as f64 / started.elapsed().as_secs_f64();
    Ok((rate, cpu::snapshot().since(&before)))
}

/// Runs `instances` projectors (one group) until they committed `total`
/// events; answers events/s from the first commit and from the start, and the
/// CPU used meanwhile (read before the projectors stop: their PostgreSQL
/// backends' CPU is gone once they exit).
async fn project(
    env: &BenchEnv,
    settings: likes_projector::Settings,
    instances: usize,
    total: i64,
) -> anyhow::Result<(f64, f64, CpuUse)> {
    let started = Instant::now();
    let before = cpu::snapshot();
    let mut running = Vec::with_capacity(instances);
    for _ in 0..instances {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(likes_projector::run(settings.clone(), async {
            let _ = stopped.await;
        }));
        running.push((stop, handle));
    }
    let deadline = started + Duration::from_secs(600);
    let mut first: Option<(Instant, i64)> = None;
    loop {
        let done = env.applied().await?;
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if done >= total {
            break;
        }
        anyhow::ensure!(
            running.iter().all(|(_, handle)| !handle.is_finished()),
            "a projector stopped early"
        );
        anyhow::ensure!(
            Instant::now() < deadline,
            "projector drained {done} of {total} in 600 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = Instant::now();
    let used = cpu::snapshot().since(&before);
    for (stop, handle) in running {
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(30), handle).await???;
    }
    let overall = total as f64 / (end - started).as_secs_f64();
    let steady = match first {
        Some((at, n)) if end > at && total > n => (total - n) as f64 / (end - at).as_secs_f64(),
        _ => overall,
    };
    Ok((steady, overall, used))
}

/// Writes every net batch in its own transaction on a fresh database; answers
/// events/s (events represented ÷ time) and the CPU used.
async fn unnest_baseline(nets: &[NetBatch], events: usize) -> anyhow::Result<(f64, CpuUse)> {
    let url = fresh_database().await?;
    let db = postgres::connect_lazy(&url, 2)?;
    postgres::migrate(&db).await?;
    let started = Instant::now();
    let before = cpu::snapshot();
    for net in nets {
        write_net(&db, net).await?;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    // Read before the pool closes: an exited backend's CPU is no longer seen.
    let used = cpu::snapshot().since(&before);
    db.close().await;
    drop_database(&url).await?;
    Ok((rate, used))
}

async fn write_net(db: &PgPool, net: &NetBatch) -> anyhow::Result<()> {
    if net.rows() == 0 {
        return Ok(());
    }
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO user_likes (item_id, item_type, user_id, liked_at, event_id) \
         SELECT i, 1, u, now(), e FROM UNNEST($1::int8[], $2::int8[], $3::uuid[]) AS t(i, u, e) \
         ON CONFLICT (item_id, item_type, user_id) DO UPDATE SET liked_at = EXCLUDED.liked_at, event_id = EXCLUDED.event_id",
    )
    .bind(&net.like_items)
    .bind(&net.like_users)
    .bind(&net.like_ids)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM user_likes l USING UNNEST($1::int8[], $2::int8[]) AS t(i, u) \
         WHERE l.item_id = t.i AND l.item_type = 1 AND l.user_id = t.u",
    )
    .bind(&net.unlike_items)
    .bind(&net.unlike_users)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO counters (item_id, item_type, count, last_offset) \
         SELECT i, 1, d, $3 FROM UNNEST($1::int8[], $2::int8[]) AS t(i, d) \
         ON CONFLICT (item_id, item_type) DO UPDATE SET count = counters.count + EXCLUDED.count, \
         last_offset = EXCLUDED.last_offset, updated_at = now()",
    )
    .bind(&net.up_items)
    .bind(&net.up_deltas)
    .bind(net.last_offset)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE counters c SET count = c.count + t.d, last_offset = $3, updated_at = now() \
         FROM UNNEST($1::int8[], $2::int8[]) AS t(i, d) WHERE c.item_id = t.i AND c.item_type = 1",
    )
    .bind(&net.down_items)
    .bind(&net.down_deltas)
    .bind(net.last_offset)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
