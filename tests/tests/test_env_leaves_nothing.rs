//! A test's slice of the shared stack goes with the test: its databases,
//! topics, Redis keys and archive directory. (Before, a suite run left
//! hundreds of databases and topics behind on the one server and broker that
//! every later test and benchmark shares.)

use std::time::Duration;

use likes_tests::{TestDb, TestEnv, eventually};

/// The names of the databases that exist on the stack's first server.
async fn databases(admin: &sqlx::PgPool) -> anyhow::Result<Vec<String>> {
    Ok(sqlx::query_scalar("SELECT datname::text FROM pg_database")
        .fetch_all(admin)
        .await?)
}

fn database_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or_default().to_string()
}

/// The broker's topics whose name holds `suffix`.
fn topics_named_after(bootstrap: &str, suffix: &str) -> anyhow::Result<Vec<String>> {
    likes_tests::cleanup::topics_where(bootstrap, |name| name.contains(suffix))
}

async fn keys_with_prefix(
    redis: &likes_infra::redis::Redis,
    prefix: &str,
) -> anyhow::Result<Vec<String>> {
    let mut found = Vec::new();
    for node in redis.scan_nodes().await? {
        let mut cursor = 0;
        loop {
            let (next, keys) = redis
                .scan_page(&node, cursor, &format!("{prefix}*"))
                .await?;
            found.extend(keys);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(found)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_test_env_leaves_no_database_topic_key_or_archive_behind() -> anyhow::Result<()> {
    let env = TestEnv::sharded(4, 2).await?;
    let stack = env.stack.clone();
    let suffix = env.suffix.clone();
    // Something in each place: rows, a record, a key, an archive file.
    let ingest = env.start_ingest().await?;
    ingest.like(1, 7).await?;
    ingest.running.stop().await?;
    let redis =
        likes_infra::redis::Redis::connect(&stack.redis_address(), &stack.redis_key_prefix).await?;
    let mut conn = redis.connection();
    redis::cmd("SET")
        .arg(format!("{}leftover", stack.redis_key_prefix))
        .arg(1)
        .query_async::<()>(&mut conn)
        .await?;
    std::fs::create_dir_all(&stack.archive_url)?;
    std::fs::write(format!("{}/segment", stack.archive_url), b"x")?;

    let admin = sqlx::PgPool::connect(&likes_tests::stack_database_url()).await?;
    let names: Vec<String> = stack
        .database_urls
        .iter()
        .map(|u| database_name(u))
        .collect();
    let before = databases(&admin).await?;
    assert!(names.iter().all(|n| before.contains(n)), "{names:?}");
    assert_eq!(
        topics_named_after(&stack.kafka_bootstrap, &suffix)?.len(),
        2
    );
    assert_eq!(
        keys_with_prefix(&redis, &stack.redis_key_prefix)
            .await?
            .len(),
        1
    );

    drop(env);

    let after = databases(&admin).await?;
    let left: Vec<&String> = names.iter().filter(|n| after.contains(n)).collect();
    assert!(left.is_empty(), "databases left behind: {left:?}");
    // Topic deletion completes on the broker shortly after it is accepted.
    eventually(Duration::from_secs(30), || async {
        Ok(topics_named_after(&stack.kafka_bootstrap, &suffix)?.is_empty())
    })
    .await?;
    assert_eq!(
        keys_with_prefix(&redis, &stack.redis_key_prefix).await?,
        Vec::<String>::new()
    );
    assert!(
        !std::path::Path::new(&stack.archive_url).exists(),
        "archive directory left behind: {}",
        stack.archive_url
    );
    admin.close().await;
    Ok(())
}

#[tokio::test]
async fn a_test_database_goes_with_the_test() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let name = database_name(&db.url);
    let admin = sqlx::PgPool::connect(&likes_tests::stack_database_url()).await?;
    assert!(databases(&admin).await?.contains(&name));

    drop(db);

    assert!(
        !databases(&admin).await?.contains(&name),
        "database {name} left behind"
    );
    admin.close().await;
    Ok(())
}

#[tokio::test]
async fn a_rewired_copy_leaves_the_slice_to_the_original() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let name = database_name(&env.stack.database_urls[0]);
    let admin = sqlx::PgPool::connect(&likes_tests::stack_database_url()).await?;

    drop(likes_tests::rewire::rewired(&env, |_| {}));

    assert!(
        databases(&admin).await?.contains(&name),
        "the original's database went with its copy"
    );
    assert_eq!(
        topics_named_after(&env.stack.kafka_bootstrap, &env.suffix)?.len(),
        2
    );
    drop(env);
    assert!(!databases(&admin).await?.contains(&name));
    admin.close().await;
    Ok(())
}
