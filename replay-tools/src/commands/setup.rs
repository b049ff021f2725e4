//! `likes-replay setup`: makes a stack ready for the services, idempotently —
//! creates the events topic and its dead-letter topic, applies the database
//! migrations, sets the value subject's compatibility level
//! ([`likes_infra::registry::COMPATIBILITY`]) and registers the Avro schema,
//! refusing (exit 1, naming the changes) a schema the registry rejects.

use std::process::ExitCode;

use std::path::PathBuf;

use likes_infra::codec::SCHEMA;
use likes_infra::kafka::{self, RETENTION_MS, TopicSpec};
use likes_infra::postgres::shards::Shards;
use likes_infra::registry::{self, COMPATIBILITY, Registry};
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
    /// Register this Avro schema file instead of the build's
    /// `schemas/like_event.avsc` (a new version, ahead of its rollout).
    #[arg(long, value_name = "FILE.avsc")]
    schema: Option<PathBuf>,
}

/// Runs `setup`.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    let replication = match args.replication {
        Some(r) if r < 1 => anyhow::bail!("--replication must be at least 1 (got {r})"),
        Some(r) => r,
        None => likes_infra::kafka::default_replication(&stack.kafka_bootstrap).await?,
    };
    let schema = match &args.schema {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--schema {}: cannot read it: {e}", path.display()))?,
        ),
        None => None,
    };
    let layout = Layout {
        partitions: args.partitions,
        replication,
    };
    match run_with_schema(stack, layout, schema.as_deref().unwrap_or(SCHEMA)).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if refused(&e) => {
            eprintln!("setup refused: {e:#}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e),
    }
}

/// Whether setup failed because the schema itself is refused (not because
/// something could not be reached).
fn refused(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<likes_infra::Error>(),
        Some(likes_infra::Error::SchemaRefused { .. } | likes_infra::Error::InvalidSchema { .. })
    )
}

/// How the topics are laid out.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Partitions of the events topic (64 for the product; fixed once chosen).
    pub partitions: i32,
    /// Replication factor (1 on a single dev broker).
    pub replication: i32,
}

/// Creates what is missing with the build's schema; leaves what exists alone.
pub async fn run(stack: &StackSettings, layout: Layout) -> anyhow::Result<()> {
    run_with_schema(stack, layout, SCHEMA).await
}

/// Creates what is missing, registering `schema` (Avro schema text).
pub async fn run_with_schema(
    stack: &StackSettings,
    layout: Layout,
    schema: &str,
) -> anyhow::Result<()> {
    // Before anything is created: a schema that does not parse is refused.
    apache_avro_check(schema)?;
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
    let id = gate(stack, schema).await?;
    tracing::info!(topic = %stack.topic, schema_id = id, "stack ready");
    println!(
        "ready: topic {} ({} partitions), schema id {id}",
        stack.topic, layout.partitions
    );
    Ok(())
}

/// Sets the value subject's compatibility level, then registers `schema`
/// under it; the registry refuses an incompatible schema
/// ([`likes_infra::Error::SchemaRefused`], naming the changes).
async fn gate(stack: &StackSettings, schema: &str) -> anyhow::Result<u32> {
    let registry = Registry::new(&stack.schema_registry_url)?;
    let subject = registry::value_subject(&stack.topic);
    let before = registry.compatibility(&subject).await?;
    if before.as_deref() != Some(COMPATIBILITY) {
        registry.set_compatibility(&subject, COMPATIBILITY).await?;
    }
    println!(
        "subject {subject}: compatibility {COMPATIBILITY} ({})",
        match before.as_deref() {
            Some(level) if level == COMPATIBILITY => "kept".to_string(),
            Some(level) => format!("was {level}"),
            None => "set".to_string(),
        }
    );
    let id = registry.register(&subject, schema).await?;
    let versions = registry.versions(&subject).await?;
    let version = versions
        .iter()
        .find(|v| v.id == id)
        .map_or_else(|| "?".to_string(), |v| v.version.to_string());
    println!(
        "subject {subject}: schema id {id} is version {version} of {}",
        versions.len()
    );
    Ok(id)
}

/// Refuses a schema text that is not an Avro schema.
fn apache_avro_check(schema: &str) -> Result<(), likes_infra::Error> {
    likes_infra::registry::changes::parse("the schema to register", schema).map(drop)
}
