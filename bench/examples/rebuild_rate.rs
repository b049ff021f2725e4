//! Measures `rebuild postgres` next to the live projector on the same events:
//! creates a fresh topic (8 partitions), database and Redis prefix, produces
//! `EVENTS` (default 1,000,000) likes and unlikes through the product's
//! publisher, then
//! 1. runs the projector library (a fresh group) until its stored offsets reach
//!    the end of every partition: the live drain rate, start-up included;
//! 2. rebuilds from `earliest` with one worker (`--dry-run`), then with the
//!    default workers (swapping in): the rebuild rates, and the check that the
//!    rebuilt counts equal the projector's.
//!
//! Run against the local stack:
//! `EVENTS=1000000 cargo run --release -p likes-replay --example rebuild_rate`.

use std::time::{Duration, Instant};

use futures::future::try_join_all;
use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use likes_infra::kafka::Publisher;
use likes_infra::kafka::{self, RETENTION_MS, TopicSpec};
use likes_infra::postgres::{self, PgPool};
use likes_infra::settings::StackSettings;
use likes_replay::rebuild::{self, PostgresRebuild, RebuildFrom, RebuildOptions};
use tokio::sync::oneshot;

const PARTITIONS: i32 = 8;

/// The first listed database's URL without its database name: the run makes
/// its own one-shard database on that server.
fn admin_url(stack: &StackSettings) -> anyhow::Result<String> {
    let url = &stack.database_urls[0];
    Ok(url.rsplit_once('/').map_or("", |(b, _)| b).to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::var("EVENTS").map_or(Ok(1_000_000), |v| v.parse())?;
    let mut stack = StackSettings::from_env()?;
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    stack.topic = format!("like-events-rate-{suffix}");
    stack.redis_key_prefix = format!("rate:{suffix}:");
    let admin = postgres::connect_lazy(&stack.database_urls[0], 1)?;
    let db_name = format!("likes_rate_{suffix}");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&admin)
        .await?;
    let base = admin_url(&stack)?;
    stack.database_urls = vec![format!("{base}/{db_name}")];
    kafka::ensure_topics(
        &stack.kafka_bootstrap,
        &[TopicSpec::new(
            stack.topic.clone(),
            PARTITIONS,
            kafka::default_replication(&stack.kafka_bootstrap).await?,
            RETENTION_MS,
        )],
    )
    .await?;
    let pool = postgres::connect_lazy(&stack.database_urls[0], 2)?;
    postgres::migrate(&pool).await?;

    let total = fill(&stack, events).await?;
    let drain = drain(&stack, &pool, total).await?;
    // The ratio is taken against the drain from the projector's first commit:
    // the rebuild's own clock also starts after its setup.
    let drain_rate = events as f64 / drain.1;
    println!(
        "{:<22}{events} events in {:.1} s = {:.0} events/s from start (group join \
         included); {drain_rate:.0} events/s from its first commit",
        "projector drain:",
        drain.0,
        events as f64 / drain.0,
    );
    let single = rebuild(&stack, Some(1), true).await?;
    let parallel = rebuild(&stack, None, false).await?;
    for done in [&single, &parallel] {
        println!(
            "{:<22}{} events in {:.1} s = {:.0} events/s = {:.2}x the drain \
             ({} items differ from the projector's tables)",
            format!("rebuild, {} worker(s):", done.parallel),
            done.events,
            done.seconds,
            done.events_per_second,
            done.events_per_second / drain_rate,
            done.live_differences
        );
    }
    pool.close().await;
    cleanup(&stack, &admin, &db_name).await
}

/// Produces `events` likes and unlikes (3 in 4 likes, 50,000 users, 5,000
/// items); returns how many records the topic holds.
async fn fill(stack: &StackSettings, events: u64) -> anyhow::Result<i64> {
    let publisher = Publisher::new(
        &stack.kafka_bootstrap,
        &stack.topic,
        &stack.schema_registry_url,
        Duration::from_secs(30),
        Duration::from_millis(likes_infra::settings::DEFAULT_PRODUCER_LINGER_MS),
    )?;
    publisher.codec().register().await?;
    let filled = Instant::now();
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut produced = 0;
    while produced < events {
        let chunk = (events - produced).min(20_000);
        let batch: Vec<LikeEvent> = (0..chunk)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let like = !seed.is_multiple_of(4);
                Ok::<_, anyhow::Error>(LikeEvent {
                    event_id: EventId::generate(),
                    user_id: UserId::parse(((seed >> 8) % 50_000 + 1) as i64)?,
                    item: ItemKey::parse(1, ((seed >> 32) % 5_000 + 1) as i64)?,
                    action: if like { Action::Like } else { Action::Unlike },
                    timestamp: chrono::Utc::now(),
                })
            })
            .collect::<Result<_, _>>()?;
        try_join_all(batch.iter().map(|e| publisher.publish(e)))
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e:?}"))?;
        produced += chunk;
    }
    let secs = filled.elapsed().as_secs_f64();
    eprintln!(
        "filled {events} events in {secs:.1} s ({:.0} events/s)",
        events as f64 / secs
    );
    let handle = likes_infra::kafka::reader::TopicHandle::open(stack)?;
    let mut total = 0;
    for partition in 0..PARTITIONS {
        total += handle.watermarks(partition)?.1;
    }
    Ok(total)
}

/// Runs the live projector (library, fresh group) until its offsets reach
/// `total`; returns the seconds from start and from its first commit.
async fn drain(stack: &StackSettings, pool: &PgPool, total: i64) -> anyhow::Result<(f64, f64)> {
    let settings = likes_projector::Settings {
        stack: stack.clone(),
        group_id: format!("rate-projector-{}", stack.topic),
        metrics_addr: None,
        ..likes_projector::Settings::from_env()?
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let started = Instant::now();
    let projector = tokio::spawn(likes_projector::run(settings, async {
        let _ = stopped.await;
    }));
    let mut first_commit = None;
    loop {
        let stored = postgres::offsets::positions(pool, &stack.topic).await?;
        let applied: i64 = stored.iter().map(|p| p.1).sum();
        if applied > 0 && first_commit.is_none() {
            first_commit = Some(Instant::now());
        }
        if applied >= total {
            break;
        }
        anyhow::ensure!(
            !projector.is_finished(),
            "the projector stopped before draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let steady = first_commit.map_or(secs, |t| t.elapsed().as_secs_f64());
    let _ = stop.send(());
    projector.await??;
    Ok((secs, steady))
}

async fn rebuild(
    stack: &StackSettings,
    parallel: Option<usize>,
    dry_run: bool,
) -> anyhow::Result<PostgresRebuild> {
    let options = RebuildOptions {
        parallel,
        dry_run,
        ..RebuildOptions::new(RebuildFrom::Earliest)
    };
    rebuild::run(stack, &options).await
}

/// Drops what the run created: the database, the topic, the Redis keys.
async fn cleanup(stack: &StackSettings, admin: &PgPool, db_name: &str) -> anyhow::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE {db_name} WITH (FORCE)"
    )))
    .execute(admin)
    .await?;
    let kafka_admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        kafka::consumer_config(&stack.kafka_bootstrap, "rate-admin").create()?;
    kafka_admin
        .delete_topics(&[&stack.topic], &rdkafka::admin::AdminOptions::new())
        .await?;
    let mut redis = redis::Client::open(stack.redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    // SCAN, not KEYS: the Redis is shared and must not stall on this.
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{}*", stack.redis_key_prefix))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut redis)
            .await?;
        if !keys.is_empty() {
            let _: () = redis::cmd("DEL").arg(&keys).query_async(&mut redis).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
