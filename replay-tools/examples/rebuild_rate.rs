//! Measures `rebuild postgres` on a pre-filled topic: creates a fresh topic
//! (8 partitions) and database, produces `EVENTS` (default 1,000,000) likes and
//! unlikes through the product's publisher, marks them as projected (offsets at
//! the high watermarks, tables empty), then rebuilds from `earliest` and prints
//! the rate. Run against the local stack:
//! `EVENTS=1000000 cargo run --release -p likes-replay --example rebuild_rate`.

use std::time::{Duration, Instant};

use futures::future::try_join_all;
use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use likes_infra::kafka::{self, RETENTION_MS, TopicSpec};
use likes_infra::publisher::Publisher;
use likes_infra::settings::StackSettings;
use likes_infra::store;
use likes_replay::reader::TopicHandle;
use likes_replay::rebuild_postgres::{self, RebuildFrom};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: u64 = std::env::var("EVENTS").map_or(Ok(1_000_000), |v| v.parse())?;
    let mut stack = StackSettings::from_env()?;
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..12];
    stack.topic = format!("like-events-rate-{suffix}");
    let admin = store::connect_lazy(&stack.database_url, 1)?;
    let db_name = format!("likes_rate_{suffix}");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
        .execute(&admin)
        .await?;
    let base = stack.database_url.rsplit_once('/').map_or("", |(b, _)| b);
    stack.database_url = format!("{base}/{db_name}");
    kafka::ensure_topics(
        &stack.kafka_bootstrap,
        &[TopicSpec {
            name: stack.topic.clone(),
            partitions: 8,
            replication: 1,
            retention_ms: RETENTION_MS,
        }],
    )
    .await?;
    let pool = store::connect_lazy(&stack.database_url, 2)?;
    store::migrate(&pool).await?;

    let publisher = Publisher::new(
        &stack.kafka_bootstrap,
        &stack.topic,
        &stack.schema_registry_url,
        Duration::from_secs(30),
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
    let fill_secs = filled.elapsed().as_secs_f64();
    eprintln!(
        "filled {events} events in {fill_secs:.1} s ({:.0} events/s)",
        events as f64 / fill_secs
    );

    let handle = TopicHandle::open(&stack)?;
    for partition in 0..handle.partition_count()? {
        let (_, high) = handle.watermarks(partition)?;
        sqlx::query(
            "INSERT INTO projector_offsets (topic, partition, next_offset, epoch) VALUES ($1, $2, $3, 1)",
        )
        .bind(&stack.topic)
        .bind(partition)
        .bind(high)
        .execute(&pool)
        .await?;
    }
    let done = rebuild_postgres::run(&stack, RebuildFrom::Earliest, false).await?;
    println!(
        "rebuild postgres: {} events in {:.1} s = {:.0} events/s ({} items rebuilt vs empty live tables)",
        done.events, done.seconds, done.events_per_second, done.live_differences
    );
    pool.close().await;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {db_name}")))
        .execute(&admin)
        .await?;
    let kafka_admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
        kafka::consumer_config(&stack.kafka_bootstrap, "rate-admin").create()?;
    kafka_admin
        .delete_topics(&[&stack.topic], &rdkafka::admin::AdminOptions::new())
        .await?;
    Ok(())
}
