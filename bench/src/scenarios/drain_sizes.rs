//! Scenario 3 by table size: the projector's drain rate with 3 sizes of
//! `user_likes` already present, each beside the raw UNNEST baseline writing
//! the same events into an identical database. The drain slows as the tables
//! grow; this shows how much of that PostgreSQL pays for any writer of these
//! rows (the baseline slows too) and how much is ours, with the table and
//! index sizes, B-tree depths, buffer reads and checkpoints that explain it.
//!
//! Each size gets a fresh database pre-filled by set-based SQL (not through
//! the projector): Zipf-like items, users that never appear in the new events
//! (odd ids; the new events' users are even, so every new like is an insert),
//! one `applied_events` row per `user_likes` row (the projector remembers every
//! applied event id for the dedup horizon) with UUIDv7-like ids of the last
//! half hour, and `counters` summing them. The filled database is then copied
//! file by file for the baseline, so both sides start from the same pages.

use std::time::Duration;

use anyhow::Context;
use likes_domain::{LikeEvent, UserId};
use likes_infra::postgres;
use likes_infra::postgres::shards::Shards;
use sqlx::PgPool;
use tokio::time::Instant;

use crate::env::{BenchEnv, copy_database, drop_database};
use crate::keys::Keys;
use crate::load::per;
use crate::report::{Report, Row};
use crate::scenarios::Config;
use crate::scenarios::drain::{
    DRAIN_VS_BASELINE, Load, NAME, UNNEST, baseline_into, fill, project,
};
use crate::scenarios::events;

/// The tables whose growth the drain meets.
const TABLES: [&str; 3] = ["user_likes", "applied_events", "counters"];

/// The topic's partitions, as the main drain.
const PARTITIONS: i32 = 8;

/// `user_likes` rows present before the drain, and the new events drained at
/// each size.
fn plan(cfg: &Config) -> ([u64; 3], u64) {
    if cfg.quick {
        ([10_000, 100_000, 300_000], 50_000)
    } else {
        ([100_000, 1_000_000, 5_000_000], 200_000)
    }
}

/// Runs the drain and its baseline at each size of [`plan`].
pub async fn by_table_size(cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    let (sizes, new) = plan(cfg);
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 18)?;
    let mut events = events::generate(&mut keys, new)?;
    // Even user ids: the pre-filled rows' users are odd, so none of these
    // events meets a row already there.
    for e in &mut events {
        e.user_id = UserId::parse(e.user_id.get() * 2)?;
    }
    for size in sizes {
        anyhow::ensure!(
            size <= cfg.users as u64,
            "the pre-fill gives every row its own user: {size} rows need as many users"
        );
        let mut env = BenchEnv::new(PARTITIONS).await?;
        let measured = at_size(cfg, size, &events, &mut env, report).await;
        env.clean().await?;
        measured.with_context(|| format!("at {size} rows"))?;
    }
    Ok(())
}

async fn at_size(
    cfg: &Config,
    size: u64,
    events: &[LikeEvent],
    env: &mut BenchEnv,
    report: &mut Report,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let pool = first_pool(&env.shards)?;
    prefill(&pool, size, cfg).await?;
    let prefilled = started.elapsed();
    // A file copy needs every connection to its source closed.
    drop(pool);
    env.shards.close().await;
    let copy = copy_database(&env.stack.database_urls[0]).await?;
    env.shards = Shards::connect_lazy(&env.stack.database_urls, Some(PARTITIONS), 10)?;
    let copied = started.elapsed() - prefilled;
    let measured = side_by_side(size, events, env, &copy, report).await;
    drop_database(&copy).await?;
    measured?;
    report.notes.push(format!(
        "3 at {size} rows: pre-filled by set-based SQL in {:.0} s, copied for the baseline in {:.0} s",
        prefilled.as_secs_f64(),
        copied.as_secs_f64()
    ));
    Ok(())
}

/// Drains `events` with the projector into `env`'s database, then writes their
/// net rows the baseline's way into `copy`; reports both.
async fn side_by_side(
    size: u64,
    events: &[LikeEvent],
    env: &BenchEnv,
    copy: &str,
    report: &mut Report,
) -> anyhow::Result<()> {
    let n = events.len() as u64;
    let ours_url = &env.stack.database_urls[0];
    let before = Shape::read(ours_url).await?;
    fill(env, events).await?;
    let settings = env.projector_settings();
    let batch = settings.max_batch_events;

    let start = Counters::read(ours_url).await?;
    let (ours, _, ours_used) = project(env, settings, 1, n as i64).await?;
    // Exited backends' statistics reach pg_stat_database as they leave.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ours_io = Counters::read(ours_url).await?.since(&start);
    let ours_after = Shape::read(ours_url).await?;

    let nets = events::net_batches(events, batch);
    let db = postgres::connect_lazy(copy, 2)?;
    let start = Counters::read(copy).await?;
    let measured = baseline_into(&db, &nets, events.len(), Load::Unnest).await;
    db.close().await;
    let (base, base_used) = measured?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let base_io = Counters::read(copy).await?.since(&start);
    let base_after = Shape::read(copy).await?;

    report.rows.push(
        Row::new(
            NAME,
            &format!("events/s at {size} rows already present ({n} new events)"),
            ours,
            base,
            true,
            UNNEST,
        )
        .goal_ratio(DRAIN_VS_BASELINE),
    );
    report.notes.push(format!(
        "3 at {size} rows, {n} new events, ours | baseline: PostgreSQL CPU {:.1} | {:.1} µs/event; \
         blocks read from outside shared_buffers {:.2} | {:.2} per event, found in them {:.1} | {:.1}; \
         checkpoints during the drain (server-wide) {} | {}",
        per(ours_used.postgres_s, n),
        per(base_used.postgres_s, n),
        ours_io.blocks_read as f64 / n as f64,
        base_io.blocks_read as f64 / n as f64,
        ours_io.blocks_hit as f64 / n as f64,
        base_io.blocks_hit as f64 / n as f64,
        ours_io.checkpoints,
        base_io.checkpoints,
    ));
    report.notes.push(format!(
        "3 at {size} rows, tables (heap + indexes, B-tree levels) before: {}; after ours: {}; after the baseline: {}",
        before.describe(),
        ours_after.describe(),
        base_after.describe()
    ));
    Ok(())
}

fn first_pool(shards: &Shards) -> anyhow::Result<PgPool> {
    shards
        .iter()
        .next()
        .map(|(_, pool)| pool.clone())
        .context("no shard")
}

/// Fills `user_likes` with `rows` rows, `applied_events` with one row per
/// like and `counters` with their sums, then vacuums, analyzes and
/// checkpoints so the drain starts from settled tables. Secondary indexes are
/// dropped during the fill and rebuilt from their own definitions (sorted
/// builds, minutes faster at 5M rows); the primary keys are filled in key
/// order. Rebuilt indexes are denser than grown ones: both sides share that.
async fn prefill(pool: &PgPool, rows: u64, cfg: &Config) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    // B-tree depths, where the server has the extension (the database is the
    // bench's own and is dropped with it); without it [`Shape`] leaves the
    // levels out, so a failure here is not one of the run.
    let _ = sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pageinspect")
        .execute(&mut *conn)
        .await;
    let tables: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
    let secondary: Vec<(String, String)> = sqlx::query_as(
        "SELECT i.indexname::text, i.indexdef FROM pg_indexes AS i
         WHERE i.schemaname = current_schema() AND i.tablename = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM pg_constraint AS c WHERE c.conname = i.indexname)",
    )
    .bind(&tables)
    .fetch_all(&mut *conn)
    .await?;
    for (name, _) in &secondary {
        // Names read from the catalog of the bench's own database.
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP INDEX \"{name}\"")))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("SELECT setseed(0.18)")
        .execute(&mut *conn)
        .await?;
    // Items: floor(items ^ u) for uniform u is Zipf with s = 1 (the
    // generator's exponent), hot items small. Users: odd, one per row
    // (1000003 is prime to any user count of 2s and 5s, so g -> user is one
    // to one while rows ≤ users). Ids: UUIDv7 layout (48-bit millisecond
    // time, version 7, variant 8) over the half hour ending ten minutes ago,
    // inside the dedup horizon so nothing is pruned mid-drain.
    let now_ms = chrono::Utc::now().timestamp_millis();
    sqlx::query(
        "INSERT INTO user_likes (item_id, item_type, user_id, liked_at, event_id)
         SELECT s.item, 1, s.user_id, to_timestamp(s.ms / 1000.0),
                (lpad(to_hex(s.ms), 12, '0') || '7' || substr(s.h, 1, 3) || '8' || substr(s.h, 4, 15))::uuid
         FROM (SELECT LEAST($1, floor(power($1::float8, random()))::int8) AS item,
                      2 * (1 + (g * 1000003) % $2) + 1 AS user_id,
                      $4 + g * $5 / $3 AS ms,
                      md5(g::text) AS h
               FROM generate_series(0::int8, $3 - 1) AS g) AS s
         ORDER BY s.item, s.user_id",
    )
    .bind(cfg.items as i64)
    .bind(cfg.users)
    .bind(rows as i64)
    .bind(now_ms - 40 * 60_000)
    .bind(30 * 60_000_i64)
    .execute(&mut *conn)
    .await?;
    // No partition: the rows stand for an earlier log's events, so the new
    // topic's first claim does not re-read all their items into Redis (a
    // one-off cost of its own, and the shared Redis's memory).
    sqlx::query(
        "INSERT INTO applied_events (item_id, item_type, event_id, applied_at, record_ms)
         SELECT item_id, item_type, event_id, liked_at, (extract(epoch FROM liked_at) * 1000)::int8
         FROM user_likes ORDER BY item_id, item_type, event_id",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO counters (item_id, item_type, count, last_offset)
         SELECT item_id, item_type, count(*), 0 FROM user_likes
         GROUP BY item_id, item_type ORDER BY item_id, item_type",
    )
    .execute(&mut *conn)
    .await?;
    for (_, definition) in &secondary {
        sqlx::raw_sql(sqlx::AssertSqlSafe(definition.clone()))
            .execute(&mut *conn)
            .await?;
    }
    sqlx::raw_sql("VACUUM ANALYZE user_likes, applied_events, counters")
        .execute(&mut *conn)
        .await?;
    sqlx::raw_sql("CHECKPOINT").execute(&mut *conn).await?;
    Ok(())
}

/// Running totals of one database's buffer use and the server's checkpoints.
#[derive(Debug, Clone, Copy)]
struct Counters {
    blocks_read: i64,
    blocks_hit: i64,
    checkpoints: i64,
}

impl Counters {
    /// Read on a connection of its own, so no idle backend holds back its
    /// statistics.
    async fn read(url: &str) -> anyhow::Result<Self> {
        let db = postgres::connect_lazy(url, 1)?;
        let (blocks_read, blocks_hit, checkpoints): (i64, i64, i64) = sqlx::query_as(
            "SELECT d.blks_read, d.blks_hit, b.checkpoints_timed + b.checkpoints_req
             FROM pg_stat_database AS d, pg_stat_bgwriter AS b
             WHERE d.datname = current_database()",
        )
        .fetch_one(&db)
        .await?;
        db.close().await;
        Ok(Self {
            blocks_read,
            blocks_hit,
            checkpoints,
        })
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            blocks_read: self.blocks_read - earlier.blocks_read,
            blocks_hit: self.blocks_hit - earlier.blocks_hit,
            checkpoints: self.checkpoints - earlier.checkpoints,
        }
    }
}

/// The sizes of [`TABLES`] and the levels of their B-tree indexes.
#[derive(Debug, Default)]
struct Shape {
    /// (table, heap bytes, index bytes)
    tables: Vec<(String, i64, i64)>,
    /// (index, levels from root to leaf)
    levels: Vec<(String, i32)>,
}

impl Shape {
    async fn read(url: &str) -> anyhow::Result<Self> {
        let db = postgres::connect_lazy(url, 1)?;
        let names: Vec<String> = TABLES.iter().map(|t| t.to_string()).collect();
        let tables: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT t.name, pg_total_relation_size(t.name::regclass) - pg_indexes_size(t.name::regclass),
                    pg_indexes_size(t.name::regclass)
             FROM UNNEST($1::text[]) WITH ORDINALITY AS t(name, n) ORDER BY t.n",
        )
        .bind(&names)
        .fetch_all(&db)
        .await?;
        let (inspectable,): (bool,) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pageinspect')",
        )
        .fetch_one(&db)
        .await?;
        let levels = if inspectable {
            sqlx::query_as(
                "SELECT i.relname::text, ((bt_metap(i.relname::text)).level + 1)::int4
                 FROM pg_index AS x
                 JOIN pg_class AS i ON i.oid = x.indexrelid
                 JOIN pg_class AS t ON t.oid = x.indrelid
                 JOIN pg_am AS a ON a.oid = i.relam
                 WHERE t.relname = ANY($1) AND a.amname = 'btree'
                 ORDER BY i.relname",
            )
            .bind(&names)
            .fetch_all(&db)
            .await?
        } else {
            Vec::new()
        };
        db.close().await;
        Ok(Self { tables, levels })
    }

    fn describe(&self) -> String {
        let mb = |b: i64| b as f64 / 1_048_576.0;
        let mut parts: Vec<String> = self
            .tables
            .iter()
            .map(|(t, heap, idx)| format!("{t} {:.1} + {:.1} MB", mb(*heap), mb(*idx)))
            .collect();
        if !self.levels.is_empty() {
            let levels: Vec<String> = self
                .levels
                .iter()
                .map(|(i, l)| format!("{i} {l}"))
                .collect();
            parts.push(format!("levels {}", levels.join(", ")));
        }
        parts.join(", ")
    }
}
