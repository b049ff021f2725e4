//! The projector on a projection sharded over two databases (two databases
//! on the one server: two shards for everything but stopping a server):
//! every count lands in its item's shard with that shard's offsets, a shard
//! that is cut off stops only its own partitions, a projector killed while one
//! shard has committed and the other not loses and doubles nothing, and a
//! shard whose recorded map differs from the projector's is refused.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use likes_tests::pg_proxy::shard_through_proxy;
use likes_tests::process::{ProjectorProcess, binary, service_env};
use likes_tests::projector_http::ObservedProjector;
use likes_tests::rewire::rewired;
use likes_tests::shard_projection::{
    Trickle, count_in, items_by_shard, likers_everywhere, shard_caught_up, stored_offsets,
};
use likes_tests::timed_records::{TimedProducer, like_event, now_millis};
use likes_tests::{TestEnv, eventually};
use tokio::sync::oneshot;

const PARTITIONS: i32 = 4;
const SHARDS: usize = 2;

/// Sends `likes` likes (by users `first..`) of each item; returns how many per item.
async fn like_each(
    producer: &TimedProducer,
    items: &[i64],
    first_user: i64,
    likes: i64,
) -> anyhow::Result<BTreeMap<i64, i64>> {
    for user in first_user..first_user + likes {
        for item in items {
            producer
                .send(&like_event(user, *item, true)?, now_millis())
                .await?;
        }
    }
    Ok(items.iter().map(|i| (*i, likes)).collect())
}

async fn counts(env: &TestEnv, items: &[i64]) -> anyhow::Result<BTreeMap<i64, i64>> {
    let mut out = BTreeMap::new();
    for item in items {
        out.insert(*item, env.db_count(1, *item).await?);
    }
    Ok(out)
}

/// Waits until both shards stored the end of the log and every count is `expected`.
async fn converged(env: &TestEnv, expected: &BTreeMap<i64, i64>) -> anyhow::Result<()> {
    let items: Vec<i64> = expected.keys().copied().collect();
    eventually(Duration::from_secs(90), || async {
        for shard in 0..SHARDS {
            if !shard_caught_up(env, shard).await? {
                return Ok(false);
            }
        }
        Ok(&counts(env, &items).await? == expected)
    })
    .await
}

/// Every item's `user_likes` rows over all shards, the acked likes, and the
/// figures: (acked, counted, lost, doubled).
async fn figures(
    env: &TestEnv,
    acked: &BTreeMap<i64, i64>,
) -> anyhow::Result<(i64, i64, i64, i64)> {
    let (mut total, mut counted, mut lost, mut doubled) = (0, 0, 0, 0);
    for (item, n) in acked {
        let rows = likers_everywhere(env, *item).await?;
        let count = env.db_count(1, *item).await?;
        assert_eq!(
            rows, count,
            "item {item}: counters = COUNT(*) of user_likes"
        );
        total += n;
        counted += count;
        lost += (n - count).max(0);
        doubled += (count - n).max(0);
    }
    Ok((total, counted, lost, doubled))
}

async fn redis_agrees(env: &TestEnv, items: &[i64]) -> anyhow::Result<()> {
    eventually(Duration::from_secs(15), || async {
        for item in items {
            if env.redis_count(1, *item).await? != Some(env.db_count(1, *item).await?) {
                return Ok(false);
            }
        }
        Ok(true)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likes_of_items_on_both_shards_are_counted_each_in_its_own_shard_with_its_partitions_offsets()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    let by_shard = items_by_shard(&env, 3);
    let items: Vec<i64> = by_shard.iter().flatten().copied().collect();
    let producer = TimedProducer::new(&env)?;
    let projector = env.start_projector();
    let mut expected = BTreeMap::new();
    for (n, item) in items.iter().enumerate() {
        let likes = 2 + n as i64;
        like_each(&producer, &[*item], 1, likes).await?;
        expected.insert(*item, likes);
    }
    let settled = converged(&env, &expected).await;
    let redis = redis_agrees(&env, &items).await;
    projector.stop().await??;
    settled?;
    redis?;

    for (shard, mine) in by_shard.iter().enumerate() {
        let other = 1 - shard;
        for item in mine {
            assert_eq!(
                count_in(&env, shard, *item).await?,
                Some(expected[item]),
                "item {item} is counted in its shard {shard}"
            );
            assert_eq!(
                count_in(&env, other, *item).await?,
                None,
                "item {item} has no row in shard {other}"
            );
        }
        let stored: Vec<i32> = stored_offsets(&env, shard)
            .await?
            .iter()
            .map(|o| o.0)
            .collect();
        let owned: Vec<i32> = env
            .shards
            .map()
            .partitions_of(shard)
            .map(|r| r.collect())
            .unwrap_or_default();
        assert_eq!(
            stored, owned,
            "shard {shard} stores exactly its partitions' offsets"
        );
    }
    let (acked, counted, lost, doubled) = figures(&env, &expected).await?;
    println!(
        "FIGURES | two shards, likes on both | acked {acked} | counted {counted} | lost {lost} | double {doubled}"
    );
    assert_eq!((lost, doubled), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_cut_off_stops_only_its_own_partitions_and_catches_up_exactly_when_it_is_back()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    let by_shard = items_by_shard(&env, 2);
    let items: Vec<i64> = by_shard.iter().flatten().copied().collect();
    let (proxy, cut_off) = shard_through_proxy(&env, 1).await?;
    // Small batches, so shard 1's batch fills while its writer is stuck and
    // its partitions are held back (paused) while shard 0's go on.
    let mut settings = cut_off.projector_settings();
    settings.max_batch_events = 20;
    let (stop, stopped) = oneshot::channel::<()>();
    let projector = tokio::spawn(likes_projector::run(settings, async {
        let _ = stopped.await;
    }));
    let trickle = Trickle::start(&env, items.clone(), Duration::from_millis(25))?;
    eventually(Duration::from_secs(60), || async {
        Ok(counts(&env, &items).await?.values().all(|n| *n >= 3))
    })
    .await?;

    proxy.cut();
    // A commit in flight when the cut came may still land: let it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let shard1_at_cut = counts(&env, &by_shard[1]).await?;
    let acked_during_cut = trickle.acked();
    let shard0_kept_going = eventually(Duration::from_secs(30), || async {
        let now = counts(&env, &by_shard[0]).await?;
        Ok(by_shard[0].iter().all(|i| now[i] >= acked_during_cut[i]))
    })
    .await;
    let shard1_during_cut = counts(&env, &by_shard[1]).await?;
    let shard0_during_cut = counts(&env, &by_shard[0]).await?;
    println!(
        "during the cut: acked {acked_during_cut:?}, shard 0 counts {shard0_during_cut:?}, shard 1 counts {shard1_at_cut:?} -> {shard1_during_cut:?}"
    );

    proxy.restore();
    let acked = trickle.stop().await?;
    let settled = converged(&env, &acked).await;
    let redis = redis_agrees(&env, &items).await;
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), projector).await???;
    shard0_kept_going?;
    assert_eq!(
        shard1_during_cut, shard1_at_cut,
        "shard 1 was cut off: nothing of it committed"
    );
    assert!(
        by_shard[1]
            .iter()
            .any(|i| shard1_during_cut[i] < acked_during_cut[i]),
        "likes of shard 1's items waited for it"
    );
    settled?;
    redis?;
    let (acked, counted, lost, doubled) = figures(&env, &acked).await?;
    println!(
        "FIGURES | one of two shards cut off under a trickle, then back | acked {acked} | counted {counted} | lost {lost} | double {doubled}"
    );
    assert_eq!((lost, doubled), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_after_one_shard_committed_and_the_other_not_loses_and_doubles_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    let by_shard = items_by_shard(&env, 2);
    let items: Vec<i64> = by_shard.iter().flatten().copied().collect();
    let (proxy, slow_shard_1) = shard_through_proxy(&env, 1).await?;
    let producer = TimedProducer::new(&env)?;
    let projector = ProjectorProcess::start(&slow_shard_1)?;
    let first = like_each(&producer, &items, 1, 5).await?;
    converged(&env, &first).await?;

    // Shard 1 stops answering (as slow as can be): the records collected
    // next span both shards; shard 0 commits its part, shard 1 cannot.
    proxy.cut();
    like_each(&producer, &items, 6, 5).await?;
    eventually(Duration::from_secs(60), || async {
        Ok(counts(&env, &by_shard[0]).await?.values().all(|n| *n == 10))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let shard1_before_kill = counts(&env, &by_shard[1]).await?;
    projector.kill().await?;
    assert!(
        shard1_before_kill.values().all(|n| *n == 5),
        "shard 1 committed nothing of the second round: {shard1_before_kill:?}"
    );

    proxy.restore();
    let projector = ProjectorProcess::start(&env)?;
    let expected: BTreeMap<i64, i64> = items.iter().map(|i| (*i, 10)).collect();
    let settled = converged(&env, &expected).await;
    let redis = redis_agrees(&env, &items).await;
    projector.terminate().await?;
    settled?;
    redis?;
    let (acked, counted, lost, doubled) = figures(&env, &expected).await?;
    println!(
        "FIGURES | projector SIGKILLed with shard 0's part committed and shard 1's not, restarted | acked {acked} | counted {counted} | lost {lost} | double {doubled}"
    );
    assert_eq!((lost, doubled), (0, 0));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_projector_refuses_shards_whose_recorded_map_differs_and_commits_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    let items: Vec<i64> = items_by_shard(&env, 1).concat();
    let producer = TimedProducer::new(&env)?;
    like_each(&producer, &items, 1, 3).await?;
    let swapped = rewired(&env, |stack| stack.database_urls.reverse());

    let ran = tokio::time::timeout(
        Duration::from_secs(60),
        likes_projector::run(swapped.projector_settings(), std::future::pending()),
    )
    .await?;
    assert!(
        matches!(
            ran,
            Err(likes_projector::ProjectorError::Infra(
                likes_infra::Error::ShardMapMismatch { .. }
            ))
        ),
        "the projector refuses the swapped shards: {ran:?}"
    );

    let mut command = tokio::process::Command::new(binary("likes-projector")?);
    service_env(&mut command, &swapped);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        command
            .env("PROJECTOR_GROUP_ID", format!("refused-{}", env.suffix))
            .env("PROJECTOR_METRICS_ADDR", "off")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "likes-projector on swapped shards: {}; {stderr}",
        out.status
    );
    assert!(!out.status.success(), "it exits non-zero");
    assert!(
        stderr.contains("was set up as shard 1 of 2") && stderr.contains("DATABASE_URLS"),
        "the message names the shard and the setting: {stderr}"
    );

    for shard in 0..SHARDS {
        assert!(
            stored_offsets(&env, shard).await?.is_empty(),
            "shard {shard}: no partition claimed"
        );
        for item in &items {
            assert_eq!(count_in(&env, shard, *item).await?, None, "shard {shard}");
        }
    }
    Ok(())
}

// Two in-process projectors block a runtime thread each in Kafka's rebalance
// callback while their claims go through the proxy, which runs on this same
// runtime: it needs a thread of its own left.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partitions_assigned_while_their_shard_is_cut_off_wait_unclaimed_while_the_others_go_on()
-> anyhow::Result<()> {
    let env = TestEnv::sharded(PARTITIONS, SHARDS).await?;
    let by_shard = items_by_shard(&env, 2);
    let items: Vec<i64> = by_shard.iter().flatten().copied().collect();
    let (proxy, cut_off) = shard_through_proxy(&env, 1).await?;
    let staying = ObservedProjector::start(&cut_off)?;
    let leaving = ObservedProjector::start(&cut_off)?;
    let trickle = Trickle::start(&env, items.clone(), Duration::from_millis(25))?;
    eventually(Duration::from_secs(60), || async {
        Ok(counts(&env, &items).await?.values().all(|n| *n >= 3))
    })
    .await?;

    // Shard 1 goes away, then a projector leaves: the group rebalances and
    // the one staying is assigned every partition, but can claim only shard 0's.
    proxy.cut();
    leaving.stop().await?;
    let waited = eventually(Duration::from_secs(60), || async {
        let (status, body) = staying.readiness().await?;
        Ok(status == 503 && body["unclaimed_partitions"] == 2 && body["owned_partitions"] == 2)
    })
    .await;
    let (_, readiness_during_cut) = staying.readiness().await?;
    let acked_during_cut = trickle.acked();
    let shard0_kept_going = eventually(Duration::from_secs(30), || async {
        let now = counts(&env, &by_shard[0]).await?;
        Ok(by_shard[0].iter().all(|i| now[i] >= acked_during_cut[i]))
    })
    .await;
    println!(
        "during the cut: readiness {readiness_during_cut}, acked {acked_during_cut:?}, counts {:?}",
        counts(&env, &items).await?
    );

    proxy.restore();
    let acked = trickle.stop().await?;
    let settled = converged(&env, &acked).await;
    let ready_again = eventually(Duration::from_secs(30), || async {
        let (status, body) = staying.readiness().await?;
        Ok(status == 200 && body["unclaimed_partitions"] == 0 && body["owned_partitions"] == 4)
    })
    .await;
    let redis = redis_agrees(&env, &items).await;
    staying.stop().await?;
    waited?;
    shard0_kept_going?;
    settled?;
    ready_again?;
    redis?;
    let (acked, counted, lost, doubled) = figures(&env, &acked).await?;
    println!(
        "FIGURES | rebalance while one of two shards is cut off, then back | acked {acked} | counted {counted} | lost {lost} | double {doubled}"
    );
    assert_eq!((lost, doubled), (0, 0));
    Ok(())
}
