//! SIGTERM stops the projector within a bounded time even while PostgreSQL is
//! unreachable (for that projector only: a proxy in front of the shared
//! PostgreSQL is cut), with nothing half-committed; a new projector then
//! converges to exact counts: nothing acknowledged is lost or counted twice.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use likes_infra::postgres::offsets;
use likes_tests::pg_proxy::{backend, through};
use likes_tests::process::ProjectorProcess;
use likes_tests::rewire::rewired;
use likes_tests::tcp_proxy::TcpProxy;
use likes_tests::timed_records::{TimedProducer, like_event, now_millis};
use likes_tests::{TestEnv, eventually};

/// The bound the issue sets for a stop.
const STOP_BOUND: Duration = Duration::from_secs(15);
const ITEMS: [i64; 3] = [11, 12, 13];

async fn like_all(
    producer: &TimedProducer,
    users: std::ops::RangeInclusive<i64>,
) -> anyhow::Result<i64> {
    let mut acked = 0;
    for user in users {
        for item in ITEMS {
            producer
                .send(&like_event(user, item, true)?, now_millis())
                .await?;
            acked += 1;
        }
    }
    Ok(acked)
}

async fn counts(env: &TestEnv) -> anyhow::Result<BTreeMap<i64, i64>> {
    let mut out = BTreeMap::new();
    for item in ITEMS {
        out.insert(item, env.db_count(1, item).await?);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_projector_promptly_while_postgres_is_unreachable_and_nothing_is_lost_or_doubled()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let proxy = TcpProxy::start(backend(&env.stack.database_urls[0])?).await?;
    let cut_off = rewired(&env, |stack| {
        stack.database_urls = vec![through(&stack.database_urls[0], proxy.addr).unwrap_or_default()]
    });
    let producer = TimedProducer::new(&env)?;

    let projector = ProjectorProcess::start(&cut_off)?;
    let mut acked = like_all(&producer, 1..=10).await?;
    eventually(Duration::from_secs(60), || async {
        Ok(counts(&env).await?.values().all(|n| *n == 10))
    })
    .await?;

    // PostgreSQL goes away for this projector while likes keep coming.
    proxy.cut();
    acked += like_all(&producer, 11..=20).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let asked = Instant::now();
    let stopped = projector.terminate().await;
    let took = asked.elapsed();
    println!("projector stop with postgres unreachable: {took:?}, {stopped:?}");
    stopped?;
    assert!(took < STOP_BOUND, "the stop took {took:?}");

    // Back: a new projector applies everything, each like once.
    proxy.restore();
    let projector = ProjectorProcess::start(&env)?;
    let settled = eventually(Duration::from_secs(60), || async {
        let stored = offsets::positions(&env.db, &env.stack.topic).await?;
        Ok(stored.iter().map(|p| p.1).sum::<i64>() == env.end_offsets()?)
    })
    .await;
    projector.terminate().await?;
    settled?;
    let counted: i64 = counts(&env).await?.values().sum();
    let mut rows = 0;
    for item in ITEMS {
        rows += env.db_likers(1, item).await?;
    }
    println!(
        "acked {acked}, counted {counted}, lost {}, double-counted {}",
        (acked - counted).max(0),
        (counted - acked).max(0)
    );
    assert_eq!(
        counts(&env).await?.values().copied().collect::<Vec<_>>(),
        vec![20, 20, 20]
    );
    assert_eq!(rows, acked, "user_likes holds every acked like once");
    Ok(())
}
