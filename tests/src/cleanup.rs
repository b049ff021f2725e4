//! What a test leaves on the shared stack, removed when its [`crate::TestEnv`]
//! (or [`crate::TestDb`]) goes: its databases, every topic named after its
//! suffix (the log, its dead letters, a peer's output and internal topics),
//! its Redis keys and its archive directory. A suite run otherwise leaves
//! hundreds of databases and topics on the one broker and server every later
//! test and benchmark shares.
//!
//! Clean-up runs on a thread of its own with its own runtime, so it works from
//! `Drop` (also while a failing test unwinds) whatever runtime the test used.
//! `LIKES_TEST_KEEP=1` keeps everything, to look at a failure afterwards.

use std::time::Duration;

use anyhow::Context;
use likes_infra::settings::StackSettings;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// Removes what its slice of the stack holds when the last holder drops it.
/// `TestEnv`s made by [`crate::rewire::rewired`] share one.
pub struct Leftovers {
    databases: Vec<String>,
    /// The slice's settings and the suffix its topics, key prefix and archive
    /// directory are named after.
    slice: Option<(StackSettings, String)>,
}

impl Leftovers {
    /// Also everything named after a test's suffix in `stack`: its topics,
    /// Redis keys and archive directory.
    pub fn with_slice(mut self, stack: StackSettings, suffix: String) -> Self {
        self.slice = Some((stack, suffix));
        self
    }

    /// A bare set of databases (no topic, no Redis keys).
    pub fn databases(urls: Vec<String>) -> Self {
        Self {
            databases: urls,
            slice: None,
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if std::env::var_os("LIKES_TEST_KEEP").is_some() {
            return;
        }
        let databases = std::mem::take(&mut self.databases);
        let slice = self.slice.take();
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("clean-up runtime")?
                .block_on(remove(&databases, slice.as_ref()))
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            // A clean-up that fails must not hide the test's own outcome.
            Ok(Err(e)) => eprintln!("test clean-up: {e:#}"),
            Err(_) => eprintln!("test clean-up panicked"),
        }
    }
}

/// Drops the test databases among `databases` and, for a slice, deletes its
/// topics, Redis keys and archive directory.
pub async fn remove(
    databases: &[String],
    slice: Option<&(StackSettings, String)>,
) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for url in databases {
        if let Err(e) = drop_database(url).await {
            failures.push(format!("{e:#}"));
        }
    }
    if let Some((stack, suffix)) = slice {
        // Everything below is found by the suffix: an empty one would match
        // every topic and key of the stack.
        anyhow::ensure!(suffix.len() >= 8, "a test suffix is 12 hex digits");
        if let Err(e) = delete_topics_named_after(&stack.kafka_bootstrap, suffix).await {
            failures.push(format!("{e:#}"));
        }
        if stack.redis_key_prefix.contains(suffix.as_str())
            && let Err(e) = delete_keys(stack).await
        {
            failures.push(format!("{e:#}"));
        }
        if stack.archive_url.contains(suffix.as_str())
            && let Err(e) = remove_dir(&stack.archive_url)
        {
            failures.push(format!("{e:#}"));
        }
    }
    anyhow::ensure!(failures.is_empty(), "{}", failures.join("; "));
    Ok(())
}

/// The name of a test database in `url`, when it is one (`likes_test_…`):
/// nothing else is ever dropped.
pub fn test_database(url: &str) -> Option<&str> {
    let name = url.rsplit('/').next()?;
    let name = name.split('?').next()?;
    name.starts_with("likes_test_").then_some(name)
}

async fn drop_database(url: &str) -> anyhow::Result<()> {
    let Some(name) = test_database(url) else {
        return Ok(());
    };
    let admin_url = crate::stack_database_on_server_of(url);
    let admin = sqlx::PgPool::connect(&admin_url)
        .await
        .with_context(|| format!("connect to drop {name}"))?;
    // FORCE: a service the test started may still hold connections. The name
    // is ours: a fixed prefix and hex digits.
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&admin)
    .await
    .with_context(|| format!("drop database {name}"));
    admin.close().await;
    dropped.map(|_| ())
}

/// Deletes every topic whose name holds `suffix`.
async fn delete_topics_named_after(bootstrap: &str, suffix: &str) -> anyhow::Result<()> {
    let topics = topics_where(bootstrap, |name| name.contains(suffix))?;
    delete_topics(bootstrap, &topics).await
}

/// The broker's topics whose names `keep` accepts.
pub fn topics_where(bootstrap: &str, keep: impl Fn(&str) -> bool) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer =
        likes_infra::kafka::consumer_config(bootstrap, "test-clean-up").create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    Ok(metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|name| keep(name))
        .collect())
}

/// Deletes `topics` (none: nothing to ask the broker).
pub async fn delete_topics(bootstrap: &str, topics: &[String]) -> anyhow::Result<()> {
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        likes_infra::kafka::consumer_config(bootstrap, "test-clean-up").create()?;
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.delete_topics(&names, &options).await? {
        result.map_err(|(topic, e)| anyhow::anyhow!("delete topic {topic}: {e}"))?;
    }
    Ok(())
}

/// Removes `dir` and everything in it; one that is not there is fine.
pub fn remove_dir(dir: impl AsRef<std::path::Path>) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir.as_ref()) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::anyhow!("remove {}: {e}", dir.as_ref().display()))
        }
        _ => Ok(()),
    }
}

async fn delete_keys(stack: &StackSettings) -> anyhow::Result<()> {
    let redis =
        likes_infra::redis::Redis::connect(&stack.redis_address(), &stack.redis_key_prefix).await?;
    likes_infra::redis::repair::delete_all_keys(&redis).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::test_database;

    #[test]
    fn only_test_databases_are_dropped() {
        assert_eq!(
            test_database("postgres://likes:likes@127.0.0.1:5432/likes_test_0123456789ab"),
            Some("likes_test_0123456789ab")
        );
        assert_eq!(
            test_database("postgres://likes:likes@127.0.0.1:5432/likes"),
            None
        );
        assert_eq!(
            test_database("postgres://likes:likes@127.0.0.1:5433/likes_cluster"),
            None
        );
    }
}
