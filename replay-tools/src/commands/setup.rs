//! `likes-replay setup`: makes a stack ready for the services, idempotently —
//! creates the events topic and its dead-letter topic, applies the database
//! migrations and registers the Avro schema.

use std::process::ExitCode;

use likes_infra::codec::EventCodec;
use likes_infra::kafka::{self, RETENTION_MS, TopicSpec};
use likes_infra::postgres;
use likes_infra::settings::StackSettings;

/// `likes-replay setup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Partitions of the events topic; choose once, it bounds projector parallelism.
    #[arg(long, default_value_t = 64)]
    partitions: i32,
    /// Replication factor of the topics.
    #[arg(long, default_value_t = 1)]
    replication: i32,
}

/// Runs `setup`.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    let layout = Layout {
        partitions: args.partitions,
        replication: args.replication,
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
        TopicSpec {
            name: stack.topic.clone(),
            partitions: layout.partitions,
            replication: layout.replication,
            retention_ms: RETENTION_MS,
        },
        TopicSpec {
            name: stack.dlq_topic(),
            partitions: 1,
            replication: layout.replication,
            // Poison must outlive the investigation: keep it four weeks.
            retention_ms: 4 * RETENTION_MS,
        },
    ];
    kafka::ensure_topics(&stack.kafka_bootstrap, &topics).await?;
    let pool = postgres::connect_lazy(&stack.database_url, 2)?;
    postgres::migrate(&pool).await?;
    pool.close().await;
    let codec = EventCodec::new(&stack.schema_registry_url, &stack.topic)?;
    let id = codec.register().await?;
    tracing::info!(topic = %stack.topic, schema_id = id, "stack ready");
    println!(
        "ready: topic {} ({} partitions), schema id {id}",
        stack.topic, layout.partitions
    );
    Ok(())
}
