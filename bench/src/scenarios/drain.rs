//! Scenario 3: the projector draining a pre-filled topic, against the raw
//! `INSERT … SELECT FROM UNNEST … ON CONFLICT DO UPDATE` of the same net rows
//! into the same (fresh) tables, arrays built in advance. Filling the topic is
//! itself a raw rdkafka producer loop with the product's producer settings,
//! its rate is reported as a side figure. The Kafka Streams peer then drains
//! the same topic and cross-checks every count ([`super::peer_drain`]).
//! Last, the same comparison with tables already holding rows, at three
//! sizes ([`super::drain_sizes`]).

use std::time::Duration;

use futures::future::join_all;
use likes_infra::codec::EventCodec;
use likes_infra::kafka;
use likes_infra::postgres;
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

pub(super) const NAME: &str = "3 projector drain";

/// Goals (issue 18): our drain rate ÷ the baseline's, and our PostgreSQL CPU
/// per event ÷ the baseline's.
pub(super) const DRAIN_VS_BASELINE: f64 = 0.75;
const POSTGRES_CPU_VS_BASELINE: f64 = 1.2;

pub(super) const UNNEST: &str = "raw UNNEST upserts of the same net rows";
const COPY: &str = "binary COPY into temp tables + set-based upserts of the same net rows";

/// How a baseline hands the net rows to PostgreSQL.
#[derive(Debug, Clone, Copy)]
pub(super) enum Load {
    /// Arrays bound as parameters, `UNNEST`ed by each statement.
    Unnest,
    /// Binary `COPY` into temporary staging tables (no WAL), then the same
    /// statements reading the staging tables.
    Copy,
}

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
    let ours_postgres = per(used.postgres_s, events.len() as u64);
    report.notes.push(format!(
        "3: projector {overall:.0} events/s from start (group join included), {ours:.0} events/s from its first commit; CPU per event: projector {:.1} µs, PostgreSQL {:.1} µs, Redis {:.1} µs, Kafka {:.1} µs",
        per(used.service_s, events.len() as u64),
        per(used.postgres_s, events.len() as u64),
        per(used.redis_s, events.len() as u64),
        per(used.kafka_s, events.len() as u64),
    ));
    let nets = events::net_batches(&events, batch);
    let n = events.len() as u64;
    let (unnest, unnest_used) = baseline(&nets, events.len(), Load::Unnest).await?;
    let (copy, copy_used) = baseline(&nets, events.len(), Load::Copy).await?;
    for (name, used) in [(UNNEST, &unnest_used), (COPY, &copy_used)] {
        report.notes.push(format!(
            "3: {name} CPU per event: bench process {:.1} µs, PostgreSQL {:.1} µs",
            per(used.service_s, n),
            per(used.postgres_s, n),
        ));
    }
    report.rows.push(Row::new(
        NAME,
        "baselines: events/s of COPY + set-based statements vs UNNEST",
        copy,
        unnest,
        true,
        UNNEST,
    ));
    // Our figures stand beside the faster of the two: PostgreSQL's limit
    // for these rows as far as we know it.
    let (base, used, name) = if copy > unnest {
        (copy, copy_used, COPY)
    } else {
        (unnest, unnest_used, UNNEST)
    };
    report.rows.push(
        Row::new(NAME, "events/s (from first commit)", ours, base, true, name)
            .goal_ratio(DRAIN_VS_BASELINE),
    );
    report.rows.push(
        Row::new(
            NAME,
            "PostgreSQL CPU µs per event",
            ours_postgres,
            per(used.postgres_s, n),
            false,
            name,
        )
        .goal_ratio(POSTGRES_CPU_VS_BASELINE),
    );
    let peer =
        crate::scenarios::peer_drain::peer_drain(NAME, &env, events.len() as i64, ours, report)
            .await;
    env.clean().await?;
    peer?;
    sharded(&events, ours, report).await?;
    crate::scenarios::drain_sizes::by_table_size(cfg, report).await
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
pub(super) async fn project(
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

/// Writes every net batch in its own transaction on a fresh database the
/// `load` way; answers events/s (events represented ÷ time) and the CPU used.
async fn baseline(nets: &[NetBatch], events: usize, load: Load) -> anyhow::Result<(f64, CpuUse)> {
    let url = fresh_database().await?;
    let db = postgres::connect_lazy(&url, 2)?;
    postgres::migrate(&db).await?;
    let measured = baseline_into(&db, nets, events, load).await;
    db.close().await;
    drop_database(&url).await?;
    measured
}

/// As [`baseline`], into the migrated database of `db` as it stands (empty
/// or pre-filled).
pub(super) async fn baseline_into(
    db: &sqlx::PgPool,
    nets: &[NetBatch],
    events: usize,
    load: Load,
) -> anyhow::Result<(f64, CpuUse)> {
    // One connection: the COPY way's staging tables are per session.
    let mut conn = db.acquire().await?;
    if let Load::Copy = load {
        for staging in STAGING {
            sqlx::query(sqlx::AssertSqlSafe(staging))
                .execute(&mut *conn)
                .await?;
        }
    }
    let started = Instant::now();
    let before = cpu::snapshot();
    for net in nets {
        match load {
            Load::Unnest => write_net(&mut conn, net).await?,
            Load::Copy => copy_net(&mut conn, net).await?,
        }
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    // Read before the pool closes: an exited backend's CPU is no longer seen.
    let used = cpu::snapshot().since(&before);
    drop(conn);
    Ok((rate, used))
}

/// The COPY way's staging tables: temporary (never WAL-logged), emptied by
/// each commit.
const STAGING: [&str; 3] = [
    "CREATE TEMP TABLE stage_likes (i int8, u int8, e uuid) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE stage_unlikes (i int8, u int8) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE stage_counts (i int8, d int8) ON COMMIT DELETE ROWS",
];

async fn copy_net(conn: &mut sqlx::PgConnection, net: &NetBatch) -> anyhow::Result<()> {
    if net.rows() == 0 {
        return Ok(());
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let likes = binary_copy(net.like_items.len(), 3, |i, out| {
        field(out, &net.like_items[i].to_be_bytes());
        field(out, &net.like_users[i].to_be_bytes());
        field(out, net.like_ids[i].as_bytes());
    });
    let unlikes = binary_copy(net.unlike_items.len(), 2, |i, out| {
        field(out, &net.unlike_items[i].to_be_bytes());
        field(out, &net.unlike_users[i].to_be_bytes());
    });
    let items: Vec<(i64, i64)> = net
        .up_items
        .iter()
        .zip(&net.up_deltas)
        .chain(net.down_items.iter().zip(&net.down_deltas))
        .map(|(i, d)| (*i, *d))
        .collect();
    let counts = binary_copy(items.len(), 2, |i, out| {
        field(out, &items[i].0.to_be_bytes());
        field(out, &items[i].1.to_be_bytes());
    });
    for (table, data) in [
        ("stage_likes", likes),
        ("stage_unlikes", unlikes),
        ("stage_counts", counts),
    ] {
        let mut copy = tx
            .copy_in_raw(&format!("COPY {table} FROM STDIN (FORMAT binary)"))
            .await?;
        copy.send(data).await?;
        copy.finish().await?;
    }
    sqlx::query(
        "INSERT INTO user_likes (item_id, item_type, user_id, liked_at, event_id) \
         SELECT i, 1, u, now(), e FROM stage_likes \
         ON CONFLICT (item_id, item_type, user_id) DO UPDATE SET liked_at = EXCLUDED.liked_at, event_id = EXCLUDED.event_id",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "DELETE FROM user_likes l USING stage_unlikes t \
         WHERE l.item_id = t.i AND l.item_type = 1 AND l.user_id = t.u",
    )
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO counters (item_id, item_type, count, last_offset) \
         SELECT i, 1, d, $1 FROM stage_counts WHERE d > 0 \
         ON CONFLICT (item_id, item_type) DO UPDATE SET count = counters.count + EXCLUDED.count, \
         last_offset = EXCLUDED.last_offset, updated_at = now()",
    )
    .bind(net.last_offset)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE counters c SET count = c.count + t.d, last_offset = $1, updated_at = now() \
         FROM stage_counts t WHERE t.d < 0 AND c.item_id = t.i AND c.item_type = 1",
    )
    .bind(net.last_offset)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// PostgreSQL's binary COPY stream of `rows` tuples of `fields` fields, each
/// written by `row` with [`field`]: the signature, no flags, no header
/// extension, the tuples (a field count, then each field's length and
/// bytes), the trailer.
fn binary_copy(rows: usize, fields: i16, mut row: impl FnMut(usize, &mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(21 + rows * (2 + 40));
    out.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    out.extend_from_slice(&0i32.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes());
    for i in 0..rows {
        out.extend_from_slice(&fields.to_be_bytes());
        row(i, &mut out);
    }
    out.extend_from_slice(&(-1i16).to_be_bytes());
    out
}

/// One field of a binary COPY tuple: its length, then its bytes.
fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

async fn write_net(conn: &mut sqlx::PgConnection, net: &NetBatch) -> anyhow::Result<()> {
    if net.rows() == 0 {
        return Ok(());
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
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
