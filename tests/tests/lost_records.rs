//! Records deleted from the log before the projector read them (retention while
//! it was down, or `retention.bytes`) are acknowledged likes that no projection
//! has. The projector never moves past such a gap on its own: that partition
//! stops, the others go on, and the log, a metric and `/readyz` name the
//! partition and the missing offsets, until an operator either rebuilds or
//! accepts the loss with `likes-replay accept-loss`, which is recorded. The
//! replay tools refuse to give a short answer in the same situation.

use std::collections::HashMap;
use std::time::Duration;

use likes_domain::ItemKey;
use likes_infra::kafka::partitioner::partition_for_item;
use likes_infra::postgres::losses;
use likes_replay::commands::accept_loss::{self, LossRequest};
use likes_replay::commands::count;
use likes_replay::commands::explain::{self, Verdict};
use likes_replay::commands::history::{self, HistoryQuery, Subject};
use likes_replay::output::Format;
use likes_replay::rebuild::{self, RebuildFrom, RebuildOptions};
use likes_tests::log_surgery::{delete_records_before, one_item_per_other_partition};
use likes_tests::projector_http::ObservedProjector;
use likes_tests::{TestEnv, eventually};
use serde_json::json;

const ITEM: i64 = 9009;
const PARTITIONS: i32 = 4;

async fn stored_offset(env: &TestEnv, partition: i32) -> anyhow::Result<Option<i64>> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT next_offset FROM projector_offsets WHERE topic = $1 AND partition = $2",
    )
    .bind(&env.stack.topic)
    .bind(partition)
    .fetch_optional(&env.db)
    .await?;
    Ok(row.map(|r| r.0))
}

async fn all_counted(env: &TestEnv, items: &[i64], expected: i64) -> anyhow::Result<bool> {
    for item in items {
        if env.db_count(1, *item).await? != expected {
            return Ok(false);
        }
    }
    Ok(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_unread_records_were_deleted_stops_until_the_loss_is_accepted()
-> anyhow::Result<()> {
    let env = TestEnv::new(PARTITIONS).await?;
    let ingest = env.start_ingest().await?;
    let lost = partition_for_item(ITEM, PARTITIONS);
    let others = one_item_per_other_partition(PARTITIONS, lost);

    // The projector is down: five likes of the item (offsets 0-4 of its
    // partition) and one like of an item in every other partition.
    for user in 1..=5 {
        ingest.like(user, ITEM).await?;
    }
    for item in &others {
        ingest.like(1, *item).await?;
    }
    // Retention deletes the first three before the projector reads them.
    delete_records_before(&env, lost, 3).await?;

    let projector = ObservedProjector::start(&env)?;
    eventually(Duration::from_secs(60), || all_counted(&env, &others, 1)).await?;
    // The other partitions keep flowing while this one is parked.
    for item in &others {
        ingest.like(2, *item).await?;
    }
    eventually(Duration::from_secs(30), || all_counted(&env, &others, 2)).await?;
    let count_while_parked = env.db_count(1, ITEM).await?;
    assert_eq!(
        count_while_parked, 0,
        "the two surviving likes must not be counted as if they were all"
    );
    eventually(Duration::from_secs(30), || async {
        let (_, body) = projector.readiness().await?;
        Ok(body["parked"].as_array().is_some_and(|p| !p.is_empty()))
    })
    .await?;

    let offset_while_parked = stored_offset(&env, lost).await?;
    let (status, readiness) = projector.readiness().await?;
    let missing = projector
        .metric_lines("likes_projector_missing_records")
        .await?;
    let parked = projector
        .metric_lines("likes_projector_parked_partitions")
        .await?;
    println!("while parked: count {count_while_parked}, stored offset {offset_while_parked:?}");
    println!("readyz {status}: {readiness}");
    println!("metrics: {missing:?} {parked:?}");

    assert_eq!(env.db_count(1, ITEM).await?, 0);
    assert_eq!(
        offset_while_parked,
        Some(0),
        "nothing committed past the gap"
    );
    assert_eq!(status, 503);
    assert_eq!(readiness["ready"], false);
    assert_eq!(
        readiness["parked"],
        json!([{
            "partition": lost,
            "reason": "gap",
            "missing_from_offset": 0,
            "missing_to_offset": 2,
            "detail": readiness["parked"][0]["detail"],
        }])
    );
    assert!(
        readiness["parked"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("records 0 to 2") && d.contains("accept-loss")),
        "{readiness}"
    );
    let names_gap = |l: &String| {
        l.contains(&format!("partition=\"{lost}\""))
            && l.contains("first_offset=\"0\"")
            && l.contains("last_offset=\"2\"")
    };
    assert!(
        missing.iter().any(|l| names_gap(l) && l.ends_with(" 3")),
        "{missing:?}"
    );
    assert!(
        parked
            .iter()
            .any(|l| l.contains(&format!("partition=\"{lost}\""))
                && l.contains("reason=\"gap\"")
                && l.ends_with(" 1")),
        "{parked:?}"
    );

    // Only the gap the projector stopped at can be accepted, and only once its
    // records are really gone.
    let accept = |from: i64, to: i64| LossRequest {
        partition: lost,
        from,
        to,
        by: "on-call: test".into(),
        reason: Some("retention ran while the projector was down".into()),
    };
    let not_the_gap = accept_loss::run(&env.stack, &accept(1, 2)).await;
    let still_there = accept_loss::run(&env.stack, &accept(0, 3)).await;
    assert!(
        format!(
            "{:#}",
            not_the_gap
                .as_ref()
                .err()
                .ok_or(anyhow::anyhow!("accepted"))?
        )
        .contains("stored offset"),
        "{not_the_gap:?}"
    );
    assert!(
        format!(
            "{:#}",
            still_there
                .as_ref()
                .err()
                .ok_or(anyhow::anyhow!("accepted"))?
        )
        .contains("not all deleted"),
        "{still_there:?}"
    );
    let accepted = accept_loss::run(&env.stack, &accept(0, 2)).await?;
    let mut printed = Vec::new();
    accept_loss::print(&mut printed, &accepted, Format::Table)?;
    println!("{}", String::from_utf8_lossy(&printed));

    // The partition moves past exactly that gap: the two surviving likes count.
    eventually(Duration::from_secs(30), || async {
        Ok(env.db_count(1, ITEM).await? == 2)
    })
    .await?;
    eventually(Duration::from_secs(30), || async {
        Ok(projector.readiness().await?.0 == 200)
    })
    .await?;
    let audit = losses::list(&env.db, &env.stack.topic).await?;
    let parked_after = projector
        .metric_lines("likes_projector_parked_partitions")
        .await?;
    assert_eq!(env.db_count(1, ITEM).await?, 2);
    assert_eq!(stored_offset(&env, lost).await?, Some(5));
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(
        (
            audit[0].partition,
            audit[0].from_offset,
            audit[0].to_offset,
            audit[0].accepted_by.as_str(),
            audit[0].reason.as_deref()
        ),
        (
            lost,
            0,
            2,
            "on-call: test",
            Some("retention ran while the projector was down")
        )
    );
    assert!(
        parked_after
            .iter()
            .any(|l| l.contains(&format!("partition=\"{lost}\""))
                && l.contains("reason=\"gap\"")
                && l.ends_with(" 0")),
        "{parked_after:?}"
    );
    println!(
        "figures: acked 5 of item {ITEM}, counted {}, lost 3 (accepted, audit row {}), double-counted 0",
        env.db_count(1, ITEM).await?,
        audit[0].id
    );

    projector.stop().await?;
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replay_tools_refuse_a_short_answer_when_unread_records_were_deleted()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let ingest = env.start_ingest().await?;
    for user in 1..=5 {
        ingest.like(user, ITEM).await?;
    }
    // Projected, then retention deletes the first three: a rebuild from the log
    // would now be short of them.
    let projector = env.start_projector();
    eventually(Duration::from_secs(60), || async {
        Ok(env.db_count(1, ITEM).await? == 5)
    })
    .await?;
    projector.stop().await??;
    ingest.running.stop().await?;
    delete_records_before(&env, 0, 3).await?;
    let item = ItemKey::parse(1, ITEM)?;

    let counted = count::run(&env.stack, item, None).await;
    let explained = explain::run(&env.stack, item).await?;
    let mut rows = 0;
    let history = history::run(
        &env.stack,
        &HistoryQuery {
            subject: Subject::Item(item),
            since: None,
            until: None,
        },
        &HashMap::new(),
        |_| {
            rows += 1;
            Ok(())
        },
    )
    .await?;
    let rebuilt = rebuild::run(&env.stack, &RebuildOptions::new(RebuildFrom::Earliest)).await;

    let refusal = format!(
        "{:#}",
        counted.err().ok_or(anyhow::anyhow!("count answered"))?
    );
    assert!(refusal.contains("refusing"), "{refusal}");
    assert_eq!(explained.verdict, Verdict::Incomplete, "{explained:#?}");
    assert_eq!(explained.log_start, 3);
    assert!(
        history.relative,
        "history must say its running counts start after the log's beginning"
    );
    assert_eq!((history.events, rows), (2, 2));
    let refusal = format!("{:#}", rebuilt.err().ok_or(anyhow::anyhow!("rebuild ran"))?);
    assert!(refusal.contains("refusing"), "{refusal}");
    assert_eq!(
        env.db_count(1, ITEM).await?,
        5,
        "the live count is left alone"
    );
    Ok(())
}
