//! `likes-replay setup`: makes a stack ready for the services, idempotently —
//! creates the events topic and its dead-letter topic, applies the database
//! migrations and registers the Avro schema.

use std::process::ExitCode;

use likes_infra::codec::EventCodec;
use likes_infra::kafka::{self, RETENTION_MS, TopicSpec};
use likes_infra::postgres::shards::Shards;
use likes_infra::settings::StackSettings;

/// `likes-replay setup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Partitions of the events topic; choose once, it bounds projector parallelism.
    #[arg(long, default_value_t = 64)]
    partitions: i32,
    /// Replication factor of the topics (default: min(3, brokers));
    /// `min.insync.replicas` is one less (at least 1).
    #[arg(long)]
    replication: Option<i32>,
}

/// Runs `setup`.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    let replication = match args.replication {
        Some(r) if r < 1 => anyhow::bail!("--replication must be at least 1 (got {r})"),
        Some(r) => r,
        None => likes_infra::kafka::default_replication(&stack.kafka_bootstrap).await?,
    };
    let layout = Layout {
        partitions: args.partitions,
        replication,
    };
    run(stack, layout).await?;
    Ok(ExitCode::SUCCESS)
}

/// How the topics are laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Partitions of the events topic (64 for the product; fixed once chosen).
    pub partitions: i32,
    /// Replication factor (1 on a single dev broker).
    pub replication: i32,
}

/// Creates what is missing; leaves what exists alone.
pub async fn run(stack: &StackSettings, layout: Layout) -> anyhow::Result<()> {
    let topics = [
        TopicSpec::new(
            stack.topic.clone(),
            layout.partitions,
            layout.replication,
            RETENTION_MS,
        ),
        // Poison must outlive the investigation: keep it four weeks.
        TopicSpec::new(stack.dlq_topic(), 1, layout.replication, 4 * RETENTION_MS),
    ];
    for topic in kafka::ensure_topics(&stack.kafka_bootstrap, &topics).await? {
        println!(
            "topic {} {}: {} partitions, replication {}, min.insync.replicas {}, unclean leader election off",
            topic.name,
            if topic.created { "created" } else { "kept" },
            topic.partitions,
            topic.replication,
            topic.min_insync_replicas
        );
    }
    // Every shard is migrated and records the map it was set up for (so a
    // later process with another map is refused, see `postgres::shards`).
    let shards = Shards::connect_lazy(&stack.database_urls, Some(layout.partitions), 2)?;
    shards.migrate().await?;
    shards.record_map(&stack.topic).await?;
    for (shard, _) in shards.iter() {
        let owns = shards
            .map()
            .partitions_of(shard)
            .map_or_else(String::new, |r| format!("{}-{}", r.start, r.end - 1));
        println!(
            "shard {shard} of {} ({}): migrated; partitions {owns}",
            shards.len(),
            shards.name(shard)
        );
    }
    shards.close().await;
    let codec = EventCodec::new(&stack.schema_registry_url, &stack.topic)?;
    let id = codec.register().await?;
    tracing::info!(topic = %stack.topic, schema_id = id, "stack ready");
    println!(
        "ready: topic {} ({} partitions), schema id {id}",
        stack.topic, layout.partitions
    );
    Ok(())
}
