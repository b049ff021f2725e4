//! Exactly once under failure, on the real stack: a steady load of likes and
//! unlikes flows through `likes-ingest` while one thing breaks per test; at the
//! end nothing acked is lost and nothing is counted twice. These tests restart
//! shared services, so they run one at a time (and their binary runs alone).

use std::future::Future;
use std::time::{Duration, Instant};

use likes_tests::figures::{Figures, api_agrees, converge};
use likes_tests::load::{ITEM_TYPE, Load};
use likes_tests::process::{ProjectorProcess, stack};
use likes_tests::{Ingest, TestEnv, eventually};
use serde_json::json;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

fn load() -> Load {
    Load {
        users: 12,
        items: (1..=6).collect(),
        pace: Duration::from_millis(20),
        give_up_after: Duration::from_secs(90),
    }
}

/// Runs the load, breaks something in the middle of it, lets the load go on,
/// then waits for convergence and measures. `fault` returns the projector
/// processes it started, which are stopped cleanly at the end.
async fn under_load<F, Fut>(
    scenario: &'static str,
    env: &TestEnv,
    ingest: &Ingest,
    fault: F,
) -> anyhow::Result<(Figures, Vec<ProjectorProcess>)>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = anyhow::Result<Vec<ProjectorProcess>>>,
{
    let load = load();
    let running = load.start(&ingest.url(""));
    running.wait_for_requests(400).await;
    let started = fault().await?;
    running.wait_for_requests(400).await;
    let ledger = running.stop().await;
    let figures = converge(env, scenario, &ledger, &load.items).await?;
    api_agrees(&ingest.url(""), &ledger, &load.items).await?;
    Ok((figures, started))
}

/// Stops the processes and the ingest, then checks the figures.
async fn finish(
    figures: Figures,
    processes: Vec<ProjectorProcess>,
    ingest: Ingest,
) -> anyhow::Result<()> {
    for p in processes {
        p.terminate().await?;
    }
    ingest.running.stop().await?;
    figures.assert_exact();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_under_load_and_restarted_loses_and_doubles_nothing()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new(4).await?;
    let ingest = env.start_ingest().await?;
    let first = ProjectorProcess::start(&env)?;
    let (figures, started) = under_load("projector SIGKILL", &env, &ingest, || async {
        first.kill().await?;
        // Likes keep coming while no projector runs.
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(vec![ProjectorProcess::start(&env)?])
    })
    .await?;
    finish(figures, started, ingest).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalances_between_two_projectors_lose_and_double_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new(4).await?;
    let ingest = env.start_ingest().await?;
    let steady = ProjectorProcess::start(&env)?;
    let flapping = ProjectorProcess::start(&env)?;
    let scenario = "two projectors, rebalances";
    let (figures, started) = under_load(scenario, &env, &ingest, || async {
        flapping.terminate().await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(vec![ProjectorProcess::start(&env)?, steady])
    })
    .await?;
    finish(figures, started, ingest).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_restart_loses_no_acked_like_and_the_api_recovers() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new(4).await?;
    // The same ingest instance, never restarted, must accept likes again.
    let ingest = env.start_ingest().await?;
    let projector = ProjectorProcess::start(&env)?;
    let load = load();
    let running = load.start(&ingest.url(""));
    running.wait_for_requests(400).await;
    stack(&["restart", "kafka"]).await?;
    running.wait_for_requests(400).await;
    let ledger = running.stop().await;
    let figures = converge(&env, "kafka restart", &ledger, &load.items).await?;
    api_agrees(&ingest.url(""), &ledger, &load.items).await?;
    // A 503 may mean "possibly written": the broker can store an event whose ack
    // never arrived. The client's retry with the same id then puts it in the log
    // twice, and the projector must count it once (which `figures` checks).
    let copies = likes_tests::topic::event_copies(&env).await?;
    let in_log = |n: usize| {
        ledger
            .refused_ids
            .iter()
            .filter(|id| copies.get(id) == Some(&n))
            .count()
    };
    let (refused_once, refused_twice) = (in_log(1), in_log(2));
    println!(
        "FIGURES | kafka restart | refused events {} | in the log once (only the retry) {refused_once} | twice (refused yet written, then retried) {refused_twice}",
        ledger.refused_ids.len()
    );
    assert_eq!(
        refused_once + refused_twice,
        ledger.refused_ids.len(),
        "every refused event was retried into the log"
    );
    finish(figures, vec![projector], ingest).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_is_retried_without_skipping_or_doubling() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new(4).await?;
    let ingest = env.start_ingest().await?;
    let projector = ProjectorProcess::start(&env)?;
    let (figures, started) = under_load("postgres restart", &env, &ingest, || async {
        stack(&["restart", "postgres"]).await?;
        Ok(vec![projector])
    })
    .await?;
    finish(figures, started, ingest).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_flushall_is_repaired_and_reads_stay_right() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new(4).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let load = load();
    let running = load.start(&ingest.url(""));
    running.wait_for_requests(300).await;
    redis::cmd("FLUSHALL")
        .arg("ASYNC")
        .query_async::<()>(&mut env.redis.clone())
        .await?;
    running.wait_for_requests(300).await;
    let ledger = running.stop().await;
    let figures = converge(&env, "redis FLUSHALL", &ledger, &load.items).await?;
    // How long after the load stops until every read over the API is right again.
    let settled = Instant::now();
    api_agrees(&ingest.url(""), &ledger, &load.items).await?;
    println!(
        "FIGURES | redis FLUSHALL | reads right again {} ms after the last like",
        settled.elapsed().as_millis()
    );
    // The projection in Redis itself is whole again: every item that has likes
    // holds its exact count (written by the projector or refilled by the reads
    // above); an item with none may be absent, never wrong.
    for (item, count) in ledger.expected_counts(&load.items) {
        let cached = env.redis_count(ITEM_TYPE, item).await?;
        if count > 0 {
            assert_eq!(cached, Some(count), "item {item} in redis");
        } else {
            assert!(matches!(cached, None | Some(0)), "item {item}: {cached:?}");
        }
    }
    projector.stop().await??;
    ingest.running.stop().await?;
    figures.assert_exact();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_retried_many_times_is_applied_once() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();
    let like = uuid::Uuid::new_v4();
    let body = json!({"user_id": 1, "item_id": 7, "item_type": ITEM_TYPE, "event_id": like});
    // Ten at once, then ten in a row, and five more through the header.
    let mut sent = 0;
    let burst: Vec<_> = (0..10)
        .map(|_| http.post(ingest.url("/v1/likes")).json(&body).send())
        .collect();
    for answer in futures::future::join_all(burst).await {
        assert_eq!(answer?.status(), 202);
        sent += 1;
    }
    for _ in 0..10 {
        assert_eq!(
            http.post(ingest.url("/v1/likes"))
                .json(&body)
                .send()
                .await?
                .status(),
            202
        );
        sent += 1;
    }
    let keyed = json!({"user_id": 2, "item_id": 7, "item_type": ITEM_TYPE});
    let key = uuid::Uuid::new_v4().to_string();
    for _ in 0..5 {
        let answer = http
            .post(ingest.url("/v1/likes"))
            .header("idempotency-key", &key)
            .json(&keyed)
            .send()
            .await?;
        assert_eq!(answer.status(), 202);
        sent += 1;
    }
    // Like, unlike, and then the like's late retry: still unliked.
    let late = uuid::Uuid::new_v4();
    let late_like = json!({"user_id": 3, "item_id": 7, "item_type": ITEM_TYPE, "event_id": late});
    let unlike = json!({"user_id": 3, "item_id": 7, "item_type": ITEM_TYPE});
    let post = |path: &'static str, body: serde_json::Value| {
        let request = http.post(ingest.url(path)).json(&body);
        async move { anyhow::Ok(request.send().await?.status()) }
    };
    let count_is = |n: i64| {
        let env = &env;
        move || async move { Ok(env.db_count(ITEM_TYPE, 7).await? == n) }
    };
    assert_eq!(post("/v1/likes", late_like.clone()).await?, 202);
    eventually(Duration::from_secs(20), count_is(3)).await?;
    assert_eq!(post("/v1/unlikes", unlike).await?, 202);
    eventually(Duration::from_secs(20), count_is(2)).await?;
    assert_eq!(post("/v1/likes", late_like).await?, 202);
    sent += 3;
    // Let the projector see the late retry, then check nothing moved.
    let end = env.end_offsets()?;
    eventually(Duration::from_secs(20), || async {
        let positions =
            likes_infra::postgres::offsets::positions(&env.db, &env.stack.topic).await?;
        Ok(positions.iter().map(|(_, next)| next).sum::<i64>() >= end)
    })
    .await?;
    let count = env.db_count(ITEM_TYPE, 7).await?;
    println!(
        "FIGURES | same request retried | sent {sent} | distinct events 4 | counted {count} | expected 2"
    );
    assert_eq!(count, 2);
    projector.stop().await??;
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_restart_keeps_schema_ids_and_old_events_decode() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let http = reqwest::Client::new();
    for user in 1..=5 {
        let body = json!({"user_id": user, "item_id": 9, "item_type": ITEM_TYPE});
        assert_eq!(
            http.post(ingest.url("/v1/likes"))
                .json(&body)
                .send()
                .await?
                .status(),
            202
        );
    }
    ingest.running.stop().await?;
    let ids_before = schema_ids(&env).await?;
    stack(&["restart", "registry"]).await?;
    // A projector that has never seen the schema must fetch it by the old id.
    let projector = env.start_projector();
    eventually(Duration::from_secs(30), || async {
        Ok(env.db_count(ITEM_TYPE, 9).await? == 5)
    })
    .await?;
    let records = likes_tests::topic::read_all(
        &env.stack.kafka_bootstrap,
        &env.stack.schema_registry_url,
        &env.stack.topic,
        env.partitions,
    )
    .await?;
    assert_eq!(records.len(), 5);
    // The ids the records carry still name the same schema after the restart:
    // a fresh reader resolved each of them (above) and the subject still lists them.
    assert_eq!(
        schema_ids(&env).await?,
        ids_before,
        "schema ids survive a restart"
    );
    assert!(
        records.iter().all(|r| ids_before.contains(&r.schema_id)),
        "every record's id is a registered id"
    );
    projector.stop().await??;
    Ok(())
}

/// The schema ids registered under the topic's value subject, in version order.
async fn schema_ids(env: &TestEnv) -> anyhow::Result<Vec<u32>> {
    let http = reqwest::Client::new();
    let base = &env.stack.schema_registry_url;
    let subject = format!("{}-value", env.stack.topic);
    let versions: Vec<u32> = http
        .get(format!("{base}/subjects/{subject}/versions"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let mut ids = Vec::new();
    for version in versions {
        let body: serde_json::Value = http
            .get(format!("{base}/subjects/{subject}/versions/{version}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        ids.push(
            body["id"]
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| anyhow::anyhow!("version {version} without an id: {body}"))?,
        );
    }
    Ok(ids)
}
