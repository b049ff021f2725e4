//! Nodes killed under load on the cluster topology (3 KRaft brokers, topics
//! replicated 3 times with `min.insync.replicas` 2, and a Redis Cluster of 3
//! primaries + 3 replicas): nothing acknowledged is lost, nothing is counted
//! twice, and Redis comes back to PostgreSQL's counts without an operator.
//! Also what only a Redis Cluster can break: the protections' one script per
//! like, whose two keys must share a slot.
//!
//! Run by `dev/stack test --cluster` only (declared `test = false`): the tests
//! kill and restart the cluster's nodes, one test at a time. Each prints a
//! `FIGURES |` row for the README's cluster fault table.

use std::time::{Duration, Instant};

use likes_tests::cli::likes_replay;
use likes_tests::cluster;
use likes_tests::figures::{api_agrees, converge, counter_drift};
use likes_tests::load::{ITEM_TYPE, Ledger, Load};
use likes_tests::probes::{Probes, quantile};
use likes_tests::process::ProjectorProcess;
use likes_tests::{Ingest, TestEnv, eventually};
use serde_json::json;
use tokio::sync::Mutex;

static SERIAL: Mutex<()> = Mutex::const_new(());

/// Partitions of each test's topic: enough that every broker leads some.
const PARTITIONS: i32 = 12;

fn load() -> Load {
    Load {
        users: 24,
        items: (1..=12).collect(),
        pace: Duration::from_millis(20),
        give_up_after: Duration::from_secs(120),
    }
}

/// One test's slice of the cluster: its topic, database and Redis prefix,
/// an ingest and the projectors it runs.
struct Run {
    env: TestEnv,
    ingest: Ingest,
    projectors: Vec<ProjectorProcess>,
}

impl Run {
    /// A fresh slice with every replica in sync, an ingest and `projectors`.
    async fn start(projectors: usize) -> anyhow::Result<Self> {
        Self::sharded(projectors, 1).await
    }

    /// As [`Run::start`], with the projection on `shards` (one per PostgreSQL
    /// server of the cluster topology: shard 1 on postgres-2).
    async fn sharded(projectors: usize, shards: usize) -> anyhow::Result<Self> {
        cluster::heal().await?;
        let env = TestEnv::sharded(PARTITIONS, shards).await?;
        cluster::wait_in_sync(&env.stack.kafka_bootstrap, &env.stack.topic).await?;
        let ingest = env.start_ingest().await?;
        let projectors = (0..projectors)
            .map(|_| ProjectorProcess::start(&env))
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            env,
            ingest,
            projectors,
        })
    }

    fn url(&self) -> String {
        self.ingest.url("")
    }

    /// `user` likes `item` through the API: whether it was accepted (202).
    async fn like(&self, user: i64, item: i64) -> anyhow::Result<bool> {
        let answer = reqwest::Client::new()
            .post(self.ingest.url("/v1/likes"))
            .json(&json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE}))
            .send()
            .await?;
        Ok(answer.status() == 202)
    }

    /// Converges, compares the API, the log and Redis with what the clients
    /// were told, stops everything, then asserts.
    async fn finish(
        self,
        scenario: &'static str,
        ledger: Ledger,
        items: &[i64],
    ) -> anyhow::Result<()> {
        let env = &self.env;
        cluster::wait_in_sync(&env.stack.kafka_bootstrap, &env.stack.topic).await?;
        let figures = converge(env, scenario, &ledger, items).await?;
        api_agrees(&self.url(), &ledger, items).await?;
        cluster::redis_catches_up(env, items, Instant::now()).await?;
        let copies = cluster::log_copies(env, &ledger).await?;
        for p in self.projectors {
            p.terminate().await?;
        }
        self.ingest.running.stop().await?;
        let window = ledger
            .refused_between
            .map_or(0.0, |(first, last)| (last - first).as_secs_f64());
        println!(
            "FIGURES | {scenario} | refused (503 or no answer) {} over {window:.1} s | acked missing from the log {} | written twice (refused, landed, retried) {}",
            ledger.refused, copies.acked_missing, copies.written_twice
        );
        figures.assert_exact();
        assert_eq!(copies.acked_missing, 0, "{copies:?}");
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_leading_most_partitions_killed_and_back_20_s_later_loses_and_doubles_nothing()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let run = Run::start(1).await?;
    let load = load();
    let running = load.start(&run.url());
    running.wait_for_requests(500).await;
    let leader = cluster::busiest_leader(&run.env.stack.kafka_bootstrap, &run.env.stack.topic)?;
    let name = format!("kafka-{leader}");
    cluster::node("kill", &name).await?;
    tokio::time::sleep(Duration::from_secs(20)).await;
    cluster::node("start", &name).await?;
    running.wait_for_requests(500).await;
    let ledger = running.stop().await;
    run.finish(
        "cluster: leader broker SIGKILL, back after 20 s",
        ledger,
        &load.items,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_brokers_down_writes_are_refused_never_acked_and_resume_when_one_returns()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let run = Run::start(1).await?;
    // Warm: every partition's leader known to the producer.
    for item in 1..=24 {
        assert!(run.like(1, item).await?);
    }
    let http = reqwest::Client::new();
    cluster::node("kill", "kafka-2").await?;
    cluster::node("kill", "kafka-3").await?;
    // Below min.insync.replicas (and without a KRaft quorum): every write
    // must be refused, none acknowledged.
    let started = Instant::now();
    let mut answers = Vec::new();
    for user in 2..=13 {
        let http = http.clone();
        let url = run.ingest.url("/v1/likes");
        answers.push(tokio::spawn(async move {
            let r = http
                .post(url)
                .json(&json!({"user_id": user, "item_id": user, "item_type": ITEM_TYPE}))
                .send()
                .await?;
            let retry_after = r.headers().get("retry-after").is_some();
            anyhow::Ok((r.status().as_u16(), retry_after))
        }));
    }
    let mut refused = 0;
    for a in answers {
        let (status, retry_after) = a.await??;
        assert_eq!(
            (status, retry_after),
            (503, true),
            "a write with two of three brokers down"
        );
        refused += 1;
    }
    let refused_in = started.elapsed();
    cluster::node("start", "kafka-2").await?;
    // Writes resume with one broker still down (2 in sync = min.insync.replicas).
    let resumed = Instant::now();
    eventually(Duration::from_secs(90), || run.like(99, 1)).await?;
    let resumed_in = resumed.elapsed();
    cluster::node("start", "kafka-3").await?;
    cluster::wait_in_sync(&run.env.stack.kafka_bootstrap, &run.env.stack.topic).await?;
    println!(
        "FIGURES | cluster: two brokers down | writes refused with 503 + Retry-After {refused} of {refused} (answered within {:.1} s) | acked while below min.insync 0 | writes accepted again {:.1} s after one broker returned",
        refused_in.as_secs_f64(),
        resumed_in.as_secs_f64()
    );
    // What was refused may still have been written: the projection must hold
    // exactly what the log holds, and item 1 has users 1 and 99.
    eventually(Duration::from_secs(60), || async {
        Ok(run.env.db_count(ITEM_TYPE, 1).await? == 2)
    })
    .await?;
    assert_eq!(counter_drift(&run.env).await?, 0);
    for p in run.projectors {
        p.terminate().await?;
    }
    run.ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_primary_killed_keeps_reads_right_and_redis_catches_up_on_its_own()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    cluster::wait_redis_ok().await?;
    let run = Run::start(1).await?;
    let load = load();
    let running = load.start(&run.url());
    running.wait_for_requests(500).await;
    // A reader asks for counts all along; each answer must be a count.
    let stop_reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop_reading.clone();
        let url = run.ingest.url("");
        let items = load.items.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?;
            let (mut reads, mut failed, mut slowest) = (0u64, 0u64, Duration::ZERO);
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let item = items[i % items.len()];
                i += 1;
                let started = Instant::now();
                let answer = http
                    .get(format!("{url}/v1/items/{ITEM_TYPE}/{item}/count"))
                    .send()
                    .await;
                slowest = slowest.max(started.elapsed());
                reads += 1;
                match answer {
                    Ok(r) if r.status() == 200 => {
                        let body: serde_json::Value = r.json().await?;
                        if body["count"].as_i64().is_none() {
                            failed += 1;
                        }
                    }
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            anyhow::Ok((reads, failed, slowest))
        })
    };
    let primary = cluster::serving_primary().await?;
    let killed = Instant::now();
    cluster::node("kill", &primary).await?;
    running.wait_for_requests(800).await;
    let ledger = running.stop().await;
    let caught_up = cluster::redis_catches_up(&run.env, &load.items, killed).await?;
    stop_reading.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, failed, slowest) = reader.await??;
    cluster::node("start", &primary).await?;
    cluster::wait_redis_ok().await?;
    println!(
        "FIGURES | cluster: Redis primary {primary} SIGKILL | reads {reads} | failed {failed} | slowest read {} ms | Redis equal to PostgreSQL {:.1} s after the kill",
        slowest.as_millis(),
        caught_up.as_secs_f64()
    );
    assert_eq!(failed, 0, "every read during the failover answered a count");
    run.finish("cluster: Redis primary SIGKILL", ledger, &load.items)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_broker_loses_and_doubles_nothing() -> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let run = Run::start(1).await?;
    let load = load();
    let running = load.start(&run.url());
    running.wait_for_requests(300).await;
    for n in 1..=3 {
        cluster::node("restart", &format!("kafka-{n}")).await?;
        // The next broker goes only when this one is back in every ISR, as an
        // operator's rolling restart would.
        cluster::wait_in_sync(&run.env.stack.kafka_bootstrap, &run.env.stack.topic).await?;
        running.wait_for_requests(150).await;
    }
    let ledger = running.stop().await;
    run.finish("cluster: rolling restart of 3 brokers", ledger, &load.items)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_during_a_broker_restart_loses_and_doubles_nothing() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    let run = Run::start(1).await?;
    let doomed = ProjectorProcess::start(&run.env)?;
    let load = load();
    let running = load.start(&run.url());
    running.wait_for_requests(400).await;
    let restart = tokio::spawn(cluster::node("restart", "kafka-1"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    doomed.kill().await?;
    restart.await??;
    running.wait_for_requests(400).await;
    let ledger = running.stop().await;
    run.finish(
        "cluster: projector SIGKILL during a broker restart",
        ledger,
        &load.items,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_the_projector_and_the_tools_work_while_the_first_listed_broker_is_down()
-> anyhow::Result<()> {
    let _serial = SERIAL.lock().await;
    let run = Run::start(1).await?;
    let first = run
        .env
        .stack
        .kafka_bootstrap
        .split(',')
        .next()
        .unwrap_or_default();
    assert!(
        first.ends_with(":19092"),
        "kafka-1 is listed first: {first}"
    );
    cluster::node("kill", "kafka-1").await?;
    eventually(Duration::from_secs(60), || run.like(1, 5)).await?;
    eventually(Duration::from_secs(60), || async {
        Ok(run.env.db_count(ITEM_TYPE, 5).await? == 1)
    })
    .await?;
    let count = likes_replay(&run.env, &["count", "1", "5"]).await?;
    assert!(
        count.status.success(),
        "{}",
        String::from_utf8_lossy(&count.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "1");
    let setup = likes_replay(
        &run.env,
        &["setup", "--partitions", &PARTITIONS.to_string()],
    )
    .await?;
    assert!(
        setup.status.success(),
        "{}",
        String::from_utf8_lossy(&setup.stderr)
    );
    assert!(
        String::from_utf8_lossy(&setup.stdout).contains("kept"),
        "{}",
        String::from_utf8_lossy(&setup.stdout)
    );
    cluster::node("start", "kafka-1").await?;
    cluster::wait_in_sync(&run.env.stack.kafka_bootstrap, &run.env.stack.topic).await?;
    println!(
        "FIGURES | cluster: first listed broker down | like accepted and projected, likes-replay count and setup answered | yes"
    );
    for p in run.projectors {
        p.terminate().await?;
    }
    run.ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_repair_and_rebuild_redis_reach_every_primary_of_the_cluster() -> anyhow::Result<()>
{
    let _serial = SERIAL.lock().await;
    cluster::wait_redis_ok().await?;
    let run = Run::start(1).await?;
    let items: Vec<i64> = (1..=30).collect();
    for item in &items {
        assert!(run.like(1, *item).await?, "like of item {item} accepted");
    }
    cluster::redis_catches_up(&run.env, &items, Instant::now()).await?;
    // Ten counts go wrong in Redis, spread over the slots of every primary.
    let keys = likes_infra::redis::Keys::new(&run.env.stack.redis_key_prefix);
    let mut conn = run.env.redis.clone();
    for item in &items[..10] {
        let key = keys.count(likes_domain::ItemKey::parse(ITEM_TYPE.into(), *item)?);
        redis::cmd("SET")
            .arg(&key)
            .arg("7:999999")
            .query_async::<()>(&mut conn)
            .await?;
    }
    let verify = likes_replay(&run.env, &["verify", "--repair"]).await?;
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(said.contains("10 Redis drift (10 repaired)"), "{said}");
    cluster::redis_catches_up(&run.env, &items, Instant::now()).await?;
    let rebuild = likes_replay(&run.env, &["rebuild", "redis"]).await?;
    let said = String::from_utf8_lossy(&rebuild.stdout);
    assert!(
        rebuild.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    // Every primary was scanned: all 30 cached counts were found and dropped.
    assert!(
        said.contains("30 cached counts dropped, 30 written from PostgreSQL"),
        "{said}"
    );
    cluster::redis_catches_up(&run.env, &items, Instant::now()).await?;
    println!(
        "FIGURES | cluster: verify --repair and rebuild redis | 10 of 10 drifted counts repaired | 30 of 30 counts dropped over every primary and rewritten"
    );
    for p in run.projectors {
        p.terminate().await?;
    }
    run.ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_stopped_for_20_s_holds_back_only_its_own_items_and_loses_and_doubles_nothing()
-> anyhow::Result<()> {
    const OUTAGE: Duration = Duration::from_secs(20);
    let _serial = SERIAL.lock().await;
    let run = Run::sharded(1, 2).await?;
    let map = run.env.shards.map();
    let load = load();
    let on = |shard| {
        load.items
            .iter()
            .filter(move |i| map.shard_of_item(**i) == shard)
            .count()
    };
    assert!(on(0) > 0 && on(1) > 0, "the load touches both shards");
    // Items read once before the outage, so Redis has them; and items nobody
    // ever read, one per shard.
    let cached = |shard| {
        (100..)
            .find(|i| map.shard_of_item(*i) == shard)
            .unwrap_or(100)
    };
    let (cached_0, cached_1) = (cached(0), cached(1));
    for item in [cached_0, cached_1] {
        assert!(run.like(1, item).await?);
    }
    cluster::redis_catches_up(&run.env, &[cached_0, cached_1], Instant::now()).await?;
    let fresh = |shard| {
        (200..)
            .find(|i| map.shard_of_item(*i) == shard)
            .unwrap_or(200)
    };
    let (fresh_0, fresh_1) = (fresh(0), fresh(1));

    let running = load.start(&run.url());
    running.wait_for_requests(300).await;
    let probes = Probes::start(&run.env, &run.url(), Duration::from_millis(100), 10_000);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let down = Instant::now();
    cluster::node("stop", "postgres-2").await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let http = reqwest::Client::new();
    let read = |item: i64| {
        let http = http.clone();
        let url = run
            .ingest
            .url(&format!("/v1/items/{ITEM_TYPE}/{item}/count"));
        async move {
            let answer = http.get(url).send().await?;
            let status = answer.status().as_u16();
            let retry_after = answer.headers().contains_key("retry-after");
            let body: serde_json::Value = answer.json().await.unwrap_or_default();
            anyhow::Ok((status, retry_after, body))
        }
    };
    let (cached_status, _, cached_body) = read(cached_1).await?;
    let (fresh_status, fresh_retry, fresh_body) = read(fresh_1).await?;
    let (other_status, _, other_body) = read(fresh_0).await?;
    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    // Taken before the start: the projector catches up within moments of the
    // server accepting connections, before `dev/stack start` returns.
    let up = Instant::now();
    cluster::node("start", "postgres-2").await?;
    running.wait_for_requests(300).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let probes = probes.stop().await?;
    let ledger = running.stop().await;

    // Probes acknowledged while shard 1 was away (with a margin on both sides).
    let during: Vec<_> = probes
        .iter()
        .filter(|p| {
            p.acked.is_some_and(|a| {
                a > down + Duration::from_secs(2) && a + Duration::from_secs(2) < up
            })
        })
        .collect();
    let mut kept_converging: Vec<Duration> = during
        .iter()
        .filter(|p| p.shard == 0)
        .filter_map(|p| p.convergence())
        .collect();
    let shard_0 = during.iter().filter(|p| p.shard == 0).count();
    let visible_in_outage = during
        .iter()
        .filter(|p| p.shard == 0 && p.visible.is_some_and(|v| v < up))
        .count();
    let held_back = during.iter().filter(|p| p.shard == 1).count();
    let held_back_visible_in_outage = during
        .iter()
        .filter(|p| p.shard == 1 && p.visible.is_some_and(|v| v < up))
        .count();
    let never_visible = probes
        .iter()
        .filter(|p| p.acked.is_some() && p.visible.is_none())
        .count();
    let mut latency: Vec<Duration> = during
        .iter()
        .filter(|p| p.shard == 0)
        .filter_map(|p| p.latency())
        .collect();
    let latency_p99 = quantile(&mut latency, 0.99).unwrap_or_default();
    let p50 = quantile(&mut kept_converging, 0.5).unwrap_or_default();
    let p99 = quantile(&mut kept_converging, 0.99).unwrap_or_default();
    println!(
        "FIGURES | cluster: shard 1 (postgres-2) stopped {} s | shard 0 probes during the outage {shard_0}, visible before the restart {visible_in_outage}, convergence (request sent to Redis) P50 {} ms P99 {} ms, like latency P99 {} ms | shard 1 probes {held_back}, visible before the restart {held_back_visible_in_outage} | never visible {never_visible} | reads of shard 1: cached {cached_status}, uncached {fresh_status} (Retry-After {fresh_retry}); shard 0 uncached {other_status}",
        OUTAGE.as_secs(),
        p50.as_millis(),
        p99.as_millis(),
        latency_p99.as_millis()
    );
    assert!(
        shard_0 > 0 && held_back > 0,
        "probes reached both shards during the outage"
    );
    assert_eq!(
        visible_in_outage, shard_0,
        "every like of shard 0's items converged while shard 1 was away"
    );
    assert_eq!(
        held_back_visible_in_outage, 0,
        "no like of shard 1's items can be projected while its database is away"
    );
    assert_eq!(
        never_visible, 0,
        "every acknowledged probe became visible after the restart"
    );
    assert_eq!(
        (cached_status, cached_body["count"].as_i64()),
        (200, Some(1)),
        "{cached_body}"
    );
    assert_eq!((fresh_status, fresh_retry), (503, true), "{fresh_body}");
    assert_eq!(
        (other_status, other_body["count"].as_i64()),
        (200, Some(0)),
        "{other_body}"
    );
    run.finish(
        "cluster: a PostgreSQL shard stopped for 20 s",
        ledger,
        &load.items,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_protections_hold_on_the_redis_cluster_in_one_call_per_like_and_per_batch_user()
-> anyhow::Result<()> {
    use likes_infra::redis::ratelimit::Rate;
    let _serial = SERIAL.lock().await;
    let run = Run::start(0).await?;
    // The token and the memo are asked in one script, which Redis Cluster
    // runs only when both keys hash to one slot; a script refused would fail
    // open, so the memo's answer and the refusal below are what show it ran.
    let limits = likes_ingest::Limits {
        rate: Some(Rate {
            per_second: 0.01,
            burst: 2,
        }),
        dedup_window: Some(Duration::from_secs(60)),
        ..likes_ingest::Limits::unprotected()
    };
    let ingest = likes_tests::api::start_with(run.env.ingest_settings(), limits).await?;
    let http = reqwest::Client::new();
    let like = |user, item| likes_tests::api::post_like(&http, &ingest, user, item);
    let before = run.env.end_offsets()?;
    // Users whose keys land on every primary.
    let users: Vec<i64> = (1..=9).collect();
    for &user in &users {
        let first = like(user, 7).await?;
        let again = like(user, 7).await?;
        let refused = like(user, 8).await?;
        assert_eq!(
            [first.status, again.status, refused.status],
            [202, 202, 429],
            "user {user}: {} {}",
            again.body,
            refused.body
        );
        assert_eq!(first.body["deduplicated"], false, "user {user}");
        assert_eq!(
            again.body["deduplicated"], true,
            "user {user}: the memo answers the repeat"
        );
    }
    assert_eq!(
        run.env.end_offsets()? - before,
        users.len() as i64,
        "one like produced per user"
    );

    // A batch asks the same way, one script per user over the user's bucket
    // and memos: three events of a user with a burst of two.
    let before = run.env.end_offsets()?;
    let likes: Vec<(i64, i64)> = (11..=19)
        .flat_map(|user| (7..=9).map(move |item| (user, item)))
        .collect();
    let batch = likes_tests::api::post_batch(&http, &ingest, &likes).await?;
    let statuses = likes_tests::api::batch_statuses(&batch);
    assert_eq!(
        statuses,
        [202, 202, 429].repeat(9),
        "each user's third event is refused: {}",
        batch.body
    );
    assert_eq!(run.env.end_offsets()? - before, 18);
    ingest.running.stop().await?;
    run.ingest.running.stop().await?;
    Ok(())
}
