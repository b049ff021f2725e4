//! Read-your-writes waits are bounded: a token naming a partition the topic
//! does not have is refused at once, waiting requests share one poller of the
//! projected offsets (so hundreds of them cost the database what one does and
//! other reads keep answering), and beyond a cap a wait is refused with 503.

use std::time::{Duration, Instant};

use likes_ingest::Limits;
use likes_tests::TestEnv;
use likes_tests::api::{quiet_limits, send, start_ingest};

/// Transactions committed in the test's own database so far.
async fn transactions(env: &TestEnv) -> anyhow::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&env.db)
    .await?;
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_a_partition_the_topic_does_not_have_is_refused() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, quiet_limits()).await?;
    let http = reqwest::Client::new();
    for token in ["2:0", "9999:0"] {
        let read =
            send(http.get(ingest.url(&format!("/v1/items/1/7/count?after={token}")))).await?;
        assert_eq!(read.status, 400, "after={token}: {}", read.body);
        assert_eq!(read.body["error"]["code"], "invalid_field");
        assert_eq!(read.body["error"]["field"], "after");
        let message = read.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("has 2"), "{message}");
    }
    // The partitions the topic has are still waited for.
    let read = send(http.get(ingest.url("/v1/items/1/7/count?after=1:0"))).await?;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(read.header("x-write-included"), Some("false"));
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_waiting_counts_share_one_poller_while_other_reads_answer()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(
        &env,
        Limits {
            read_your_writes_timeout: Duration::from_secs(2),
            ..quiet_limits()
        },
    )
    .await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(600)
        .build()?;
    let before = transactions(&env).await?;
    let waits: Vec<_> = (0..500)
        .map(|_| {
            let request = http.get(ingest.url("/v1/items/1/7/count?after=0:1000000000"));
            tokio::spawn(send(request))
        })
        .collect();
    // Meanwhile, plain reads of another item keep answering with its count.
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let started = Instant::now();
        let read = send(http.get(ingest.url("/v1/items/1/8/count"))).await?;
        slowest = slowest.max(started.elapsed());
        assert_eq!(read.status, 200, "{}", read.body);
        assert_eq!(read.body["count"], 0);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut not_included = 0;
    for wait in waits {
        let read = wait.await??;
        assert_eq!(read.status, 200, "{}", read.body);
        if read.header("x-write-included") == Some("false") {
            not_included += 1;
        }
    }
    assert_eq!(not_included, 500, "no offset that far was ever projected");
    // Closing the ingest's connections makes PostgreSQL publish their statistics.
    ingest.running.stop().await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let spent = transactions(&env).await? - before;
    println!(
        "FIGURES | 500 waiting counts for 2 s | {spent} database transactions | slowest other read {} ms",
        slowest.as_millis()
    );
    // One poller reads every 50 ms: about 40 reads for the 2 s, plus the plain
    // reads; a poll per waiter would be 500 x 40 = 20,000.
    assert!(spent < 1_000, "{spent} transactions for 500 waiters");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_beyond_the_cap_are_refused_with_retry_after() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(
        &env,
        Limits {
            read_your_writes_timeout: Duration::from_secs(2),
            read_your_writes_max_waiters: 10,
            ..quiet_limits()
        },
    )
    .await?;
    let http = reqwest::Client::new();
    let waits: Vec<_> = (0..30)
        .map(|_| {
            let request = http.get(ingest.url("/v1/items/1/7/count?after=1:1000000000"));
            tokio::spawn(send(request))
        })
        .collect();
    let (mut waited, mut refused) = (0, 0);
    for wait in waits {
        let read = wait.await??;
        match read.status {
            200 => {
                assert_eq!(read.header("x-write-included"), Some("false"));
                waited += 1;
            }
            503 => {
                assert_eq!(read.body["error"]["code"], "overloaded", "{}", read.body);
                assert_eq!(read.header("retry-after"), Some("1"));
                refused += 1;
            }
            other => anyhow::bail!("unexpected {other}: {}", read.body),
        }
    }
    assert!(waited <= 10, "{waited} waited at once with a cap of 10");
    assert_eq!(waited + refused, 30);
    assert!(refused >= 20, "{refused} refused");
    ingest.running.stop().await?;
    Ok(())
}
