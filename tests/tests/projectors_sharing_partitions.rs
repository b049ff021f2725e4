//! Rebalances are not gaps: while a second projector joins the group and the
//! first one leaves, each claimed partition resumes at its stored offset and
//! no partition is parked, and every like is counted exactly once.

use std::time::Duration;

use likes_tests::projector_http::ObservedProjector;
use likes_tests::{Ingest, TestEnv, eventually};

const ITEMS: i64 = 12;

async fn like_every_item(ingest: &Ingest, user: i64) -> anyhow::Result<()> {
    for item in 1..=ITEMS {
        ingest.like(user, item).await?;
    }
    Ok(())
}

async fn all_counted(env: &TestEnv, expected: i64) -> anyhow::Result<bool> {
    for item in 1..=ITEMS {
        if env.db_count(1, item).await? != expected {
            return Ok(false);
        }
    }
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_joining_and_leaving_the_group_park_nothing_and_count_exactly()
-> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    let ingest = env.start_ingest().await?;
    let first = ObservedProjector::start(&env)?;
    let mut user = 0;
    for _ in 0..3 {
        user += 1;
        like_every_item(&ingest, user).await?;
    }
    let second = ObservedProjector::start(&env)?;
    // Likes keep coming while the group rebalances.
    for _ in 0..10 {
        user += 1;
        like_every_item(&ingest, user).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(Duration::from_secs(60), || all_counted(&env, user)).await?;
    first.stop().await?;
    for _ in 0..5 {
        user += 1;
        like_every_item(&ingest, user).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eventually(Duration::from_secs(60), || all_counted(&env, user)).await?;
    eventually(Duration::from_secs(30), || async {
        Ok(second.readiness().await?.0 == 200)
    })
    .await?;
    let (_, metrics) = second.get("/metrics").await?;
    let parked: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("likes_projector_parked_partitions{")
                || l.starts_with("likes_projector_missing_records{")
        })
        .collect();
    let mut counted = 0;
    for item in 1..=ITEMS {
        counted += env.db_count(1, item).await?;
    }
    println!(
        "figures: acked {} likes, counted {counted}, lost 0, double-counted 0",
        user * ITEMS
    );
    assert_eq!(counted, user * ITEMS);
    assert!(parked.is_empty(), "a partition was parked: {parked:?}");
    second.stop().await?;
    ingest.running.stop().await?;
    Ok(())
}
