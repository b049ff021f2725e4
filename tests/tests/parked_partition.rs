//! A partition whose batch can never be written (a constraint that drifted into
//! the database rejects its rows) is parked: it stops, with an ERROR log, a
//! metric and `/readyz` naming it, and nothing past the failure commits. The
//! other partitions, including those written in the same transaction as it
//! until then, go on, and the group is not made to rebalance over and over.
//! Once the cause is fixed, the next claim (a restart) writes it.

use std::collections::BTreeMap;
use std::time::Duration;

use likes_infra::kafka::partitioner::partition_for_item;
use likes_tests::log_surgery::one_item_per_other_partition;
use likes_tests::projector_http::ObservedProjector;
use likes_tests::{TestEnv, eventually};

const BAD: i64 = 6006;
const PARTITIONS: i32 = 4;

async fn counted(env: &TestEnv, items: &[i64], expected: i64) -> anyhow::Result<bool> {
    for item in items {
        if env.db_count(1, *item).await? != expected {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Each partition's (next offset, epoch) in `projector_offsets`.
async fn offsets(env: &TestEnv) -> anyhow::Result<BTreeMap<i32, (i64, i64)>> {
    let rows: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT partition, next_offset, epoch FROM projector_offsets WHERE topic = $1",
    )
    .bind(&env.stack.topic)
    .fetch_all(&env.db)
    .await?;
    Ok(rows.into_iter().map(|(p, o, e)| (p, (o, e))).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_writes_fail_permanently_is_parked_and_the_others_go_on()
-> anyhow::Result<()> {
    let env = TestEnv::new(PARTITIONS).await?;
    // Drift: a constraint the projector does not know about rejects one item's rows.
    sqlx::query("ALTER TABLE user_likes ADD CONSTRAINT drifted CHECK (item_id <> 6006)")
        .execute(&env.db)
        .await?;
    let ingest = env.start_ingest().await?;
    let bad = partition_for_item(BAD, PARTITIONS);
    let others = one_item_per_other_partition(PARTITIONS, bad);
    for item in others.iter().chain([&BAD]) {
        ingest.like(1, *item).await?;
    }

    let projector = ObservedProjector::start(&env)?;
    eventually(Duration::from_secs(60), || counted(&env, &others, 1)).await?;
    // The failing batch was tried by now: the others' rows were in it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let at_parking = offsets(&env).await?;
    // The others keep flowing, without the group rebalancing.
    for item in others.iter().chain([&BAD]) {
        ingest.like(2, *item).await?;
    }
    eventually(Duration::from_secs(30), || counted(&env, &others, 2)).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = offsets(&env).await?;
    println!("offsets (next, epoch) at parking {at_parking:?}, later {later:?}");
    let epochs = |o: &BTreeMap<i32, (i64, i64)>| o.values().map(|v| v.1).collect::<Vec<_>>();
    assert_eq!(epochs(&at_parking), epochs(&later), "no rebalance loop");
    assert_eq!(env.db_count(1, BAD).await?, 0);
    assert_eq!(
        later.get(&bad).map(|o| o.0),
        Some(0),
        "nothing committed past the failure"
    );
    let (status, readiness) = projector.readiness().await?;
    let parked = projector
        .metric_lines("likes_projector_parked_partitions")
        .await?;
    println!("readyz {status}: {readiness}");
    println!("metrics: {parked:?}");
    assert_eq!(status, 503);
    assert_eq!(
        readiness["parked"].as_array().map(Vec::len),
        Some(1),
        "{readiness}"
    );
    assert_eq!(readiness["parked"][0]["partition"], bad);
    assert_eq!(readiness["parked"][0]["reason"], "write_failed");
    assert!(
        parked
            .iter()
            .any(|l| l.contains(&format!("partition=\"{bad}\""))
                && l.contains("reason=\"write_failed\"")
                && l.ends_with(" 1")),
        "{parked:?}"
    );
    projector.stop().await?;

    // The cause is fixed; the next claim writes the parked partition's likes.
    sqlx::query("ALTER TABLE user_likes DROP CONSTRAINT drifted")
        .execute(&env.db)
        .await?;
    let projector = ObservedProjector::start(&env)?;
    eventually(Duration::from_secs(60), || async {
        Ok(env.db_count(1, BAD).await? == 2)
    })
    .await?;
    eventually(Duration::from_secs(30), || async {
        Ok(projector.readiness().await?.0 == 200)
    })
    .await?;
    assert!(counted(&env, &others, 2).await?);
    println!(
        "figures: acked {} likes, counted {} (0 of item {BAD} while parked), lost 0, double-counted 0",
        2 * (others.len() + 1),
        2 * (others.len() as i64 + 1)
    );
    projector.stop().await?;
    ingest.running.stop().await?;
    Ok(())
}
