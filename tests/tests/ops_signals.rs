//! What an operator sees, read from the real services' `/metrics` and count
//! responses: the projection lag per partition grows while no projector runs
//! and falls to zero once one does; a count says up to when its partition is
//! projected, which stops moving while the projector is stopped; the projector
//! reports its partitions by state, append-to-visible freshness, batch sizes,
//! commit durations, the newest record it applied, and dead letters by reason.

use std::time::Duration;

use chrono::{DateTime, Utc};
use likes_infra::kafka::partitioner::partition_for_item;
use likes_tests::process::{IngestProcess, ProjectorProcess};
use likes_tests::scrape::Scrape;
use likes_tests::{TestEnv, eventually};
use serde_json::Value;

const ITEM: i64 = 4242;

/// The item's count, and the time its partition is projected through (from
/// the body, checked against the header).
async fn count(ingest: &IngestProcess) -> anyhow::Result<(i64, Option<DateTime<Utc>>)> {
    let response = reqwest::get(format!("http://{}/v1/items/1/{ITEM}/count", ingest.addr))
        .await?
        .error_for_status()?;
    let header = response
        .headers()
        .get("x-projected-through")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body: Value = response.json().await?;
    let through = match &body["projected_through"] {
        Value::Null => None,
        Value::String(s) => Some(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc)),
        other => anyhow::bail!("projected_through is {other}"),
    };
    anyhow::ensure!(
        header.as_deref() == body["projected_through"].as_str(),
        "header {header:?} and body {} disagree",
        body["projected_through"]
    );
    Ok((body["count"].as_i64().unwrap_or(-1), through))
}

async fn ingest_metrics(ingest: &IngestProcess) -> anyhow::Result<Scrape> {
    Scrape::get(ingest.addr, "/metrics").await
}

async fn projector_metrics(projector: &ProjectorProcess) -> anyhow::Result<Scrape> {
    let addr = projector
        .metrics_addr
        .ok_or_else(|| anyhow::anyhow!("the projector serves no metrics"))?;
    Scrape::get(addr, "/metrics").await
}

/// Waits until the ingest reports `lag` records unprojected over all partitions.
async fn lag_reaches(ingest: &IngestProcess, lag: f64) -> anyhow::Result<()> {
    eventually(Duration::from_secs(60), || async {
        Ok(ingest_metrics(ingest)
            .await?
            .sum("likes_projection_lag_records", &[])
            == lag)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_grows_while_no_projector_runs_falls_once_one_does_and_counts_say_how_fresh_they_are()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let partition = partition_for_item(ITEM, 2).to_string();
    let ingest = IngestProcess::start(&env).await?;

    // No projector yet: every like waits, and the count is no fresher than
    // before the likes (the partition was empty, so fully projected, until then).
    let before_likes = Utc::now();
    for user in 1..=10 {
        ingest.like(user, ITEM).await?;
    }
    lag_reaches(&ingest, 10.0).await?;
    let scrape = ingest_metrics(&ingest).await?;
    assert_eq!(
        scrape.value("likes_projection_lag_records", &[("partition", &partition)]),
        Some(10.0),
        "the item's partition holds the 10 waiting likes"
    );
    let (_, through) = count(&ingest).await?;
    assert!(
        through.is_none_or(|t| t <= before_likes),
        "projected through {through:?}, after the likes were sent at {before_likes}"
    );

    // A projector runs: the lag falls to zero, the count is fresh.
    let projector = ProjectorProcess::start_with_metrics(&env)?;
    lag_reaches(&ingest, 0.0).await?;
    let caught_up = Utc::now();
    eventually(Duration::from_secs(30), || async {
        let (n, through) = count(&ingest).await?;
        Ok(n == 10 && through.is_some_and(|t| t >= caught_up))
    })
    .await?;
    let (n, through) = count(&ingest).await?;
    assert_eq!(n, 10);
    let through = through.ok_or_else(|| anyhow::anyhow!("no projected_through"))?;
    assert!(
        through <= Utc::now(),
        "projected through {through}, which is in the future"
    );

    let scrape = projector_metrics(&projector).await?;
    assert_eq!(
        scrape.value("likes_projector_partitions", &[("state", "active")]),
        Some(2.0)
    );
    assert_eq!(
        scrape.value("likes_projector_partitions", &[("state", "parked")]),
        Some(0.0)
    );
    assert!(scrape.sum("likes_projector_freshness_seconds_count", &[]) >= 1.0);
    assert!(
        scrape.sum(
            "likes_projector_freshness_seconds_bucket",
            &[("le", "+Inf")]
        ) >= 1.0
    );
    assert_eq!(
        scrape.sum("likes_projector_batch_events_sum", &[]),
        10.0,
        "the batches held the 10 likes"
    );
    assert!(scrape.sum("likes_projector_commit_seconds_count", &[]) >= 1.0);
    let applied = scrape
        .value(
            "likes_projector_applied_timestamp_seconds",
            &[("partition", &partition)],
        )
        .ok_or_else(|| anyhow::anyhow!("no applied timestamp for the partition"))?;
    assert!(
        applied <= Utc::now().timestamp() as f64 + 1.0
            && applied >= caught_up.timestamp() as f64 - 120.0,
        "the newest applied record is from {applied}"
    );

    // The projector stops: new likes wait, the lag says how many, and the
    // count's time stays before them while its staleness grows.
    projector.terminate().await?;
    let before_new_likes = Utc::now();
    for user in 11..=15 {
        ingest.like(user, ITEM).await?;
    }
    lag_reaches(&ingest, 5.0).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (n, through) = count(&ingest).await?;
    assert_eq!(n, 10, "the 5 new likes are not projected");
    let through = through.ok_or_else(|| anyhow::anyhow!("no projected_through"))?;
    assert!(
        through <= before_new_likes,
        "projected through {through}, after the new likes were sent at {before_new_likes}"
    );
    let staleness = ingest_metrics(&ingest)
        .await?
        .value(
            "likes_projection_staleness_seconds",
            &[("partition", &partition)],
        )
        .ok_or_else(|| anyhow::anyhow!("no staleness for the partition"))?;
    assert!(
        staleness >= 3.0,
        "counts are at least 3 s old, staleness says {staleness}"
    );

    // It runs again: everything is projected and the count is fresh again.
    let restarted = Utc::now();
    let projector = ProjectorProcess::start_with_metrics(&env)?;
    lag_reaches(&ingest, 0.0).await?;
    eventually(Duration::from_secs(30), || async {
        let (n, through) = count(&ingest).await?;
        Ok(n == 15 && through.is_some_and(|t| t >= restarted))
    })
    .await?;
    projector.terminate().await?;
    ingest.terminate().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_counted_by_reason_from_the_start() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let projector = ProjectorProcess::start_with_metrics(&env)?;
    eventually(Duration::from_secs(30), || async {
        Ok(projector_metrics(&projector).await.is_ok_and(|s| {
            s.value(
                "likes_projector_poison_records_total",
                &[("reason", "not_framed")],
            ) == Some(0.0)
        }))
    })
    .await?;

    likes_tests::dead_letters::send_raw(&env, "1", b"hello, world").await?;
    eventually(Duration::from_secs(60), || async {
        Ok(projector_metrics(&projector).await?.value(
            "likes_projector_poison_records_total",
            &[("reason", "not_framed")],
        ) == Some(1.0))
    })
    .await?;
    let scrape = projector_metrics(&projector).await?;
    for reason in likes_infra::DecodeError::KINDS {
        let expected = if reason == "not_framed" { 1.0 } else { 0.0 };
        assert_eq!(
            scrape.value(
                "likes_projector_poison_records_total",
                &[("reason", reason)]
            ),
            Some(expected),
            "dead letters for {reason}"
        );
    }
    projector.terminate().await?;
    Ok(())
}
