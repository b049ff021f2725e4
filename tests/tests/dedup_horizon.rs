//! The dedup horizon is one rule, by record time, for the projector and the
//! rebuild: an event is a duplicate iff the same (item, event id) was applied
//! at a log time no more than the horizon before this record's. A projector
//! outage longer than the horizon changes nothing (the projector forgets by how
//! far each partition's log was applied, never by the wall clock), and a
//! rebuild of the same topic gives the same tables.

use std::time::Duration;

use likes_domain::{DedupHorizon, LoggedEvent, Position};
use likes_infra::postgres::offsets;
use likes_infra::postgres::writer::{BatchRules, OffsetCommit, apply_batch, prune_applied_events};
use likes_replay::rebuild::{self, RebuildFrom, RebuildOptions};
use likes_tests::replay::{live_counts, live_rows};
use likes_tests::timed_records::{TimedProducer, like_event, now_millis};
use likes_tests::{TestDb, TestEnv};

const HORIZON: Duration = Duration::from_secs(4);

fn rules() -> BatchRules<'static> {
    BatchRules {
        horizon: DedupHorizon::new(HORIZON),
        cached_until: &[],
    }
}

fn logged(offset: i64, record_time: i64, event: &likes_domain::LikeEvent) -> LoggedEvent {
    LoggedEvent {
        position: Position {
            partition: 0,
            offset,
        },
        record_time,
        event: event.clone(),
    }
}

/// Applies `events` (offsets from `from`) as one batch of partition 0.
async fn batch(
    db: &TestDb,
    epoch: i64,
    from: i64,
    events: Vec<(i64, likes_domain::LikeEvent)>,
) -> anyhow::Result<usize> {
    let logged: Vec<LoggedEvent> = events
        .iter()
        .enumerate()
        .map(|(i, (t, e))| logged(from + i as i64, *t, e))
        .collect();
    let commit = [OffsetCommit {
        epoch,
        next: Position {
            partition: 0,
            offset: from + logged.len() as i64,
        },
    }];
    Ok(apply_batch(&db.pool, "t", &commit, &logged, rules())
        .await?
        .duplicates)
}

#[tokio::test]
async fn a_retry_within_the_horizon_of_its_record_time_is_a_duplicate_even_after_pruning()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let epoch = offsets::claim(&db.pool, "t", &[0]).await?[0].epoch;
    let t0 = 1_000_000;
    let like = like_event(1, 10, true)?;
    let unlike = like_event(1, 10, false)?;
    batch(&db, epoch, 0, vec![(t0, like.clone())]).await?;
    // Long after, by the wall clock, the pruner runs: the partition's log has
    // not moved past the horizon, so the memory stays.
    tokio::time::sleep(Duration::from_millis(50)).await;
    prune_applied_events(&db.pool, "t", DedupHorizon::new(Duration::ZERO)).await?;
    prune_applied_events(&db.pool, "t", DedupHorizon::new(HORIZON)).await?;
    batch(&db, epoch, 1, vec![(t0 + 1000, unlike)]).await?;
    let duplicates = batch(&db, epoch, 2, vec![(t0 + 3000, like)]).await?;
    assert_eq!(
        duplicates, 1,
        "the retry 3 s after its original is a duplicate"
    );
    assert_eq!(db.count(10).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_retry_past_the_horizon_counts_as_new_and_memories_go_once_the_log_passed_them()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let epoch = offsets::claim(&db.pool, "t", &[0]).await?[0].epoch;
    let t0 = 1_000_000;
    let like = like_event(1, 10, true)?;
    batch(
        &db,
        epoch,
        0,
        vec![(t0, like.clone()), (t0 + 100, like_event(1, 10, false)?)],
    )
    .await?;
    let remembered = || async {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM applied_events")
            .fetch_one(&db.pool)
            .await?;
        anyhow::Ok(n)
    };
    // The log reaches t0 + 4.1 s: the like (t0) no longer matters, the unlike does.
    batch(&db, epoch, 2, vec![(t0 + 4100, like_event(2, 11, true)?)]).await?;
    // Redis is known current everywhere (a mark far ahead), so only the horizon decides.
    offsets::record_cache_marks(&db.pool, "t", &[(0, epoch, i64::MAX)]).await?;
    let pruned = prune_applied_events(&db.pool, "t", DedupHorizon::new(HORIZON)).await?;
    assert_eq!((pruned, remembered().await?), (1, 2));
    // A retry of the like past the horizon is a new like, as in the rebuild.
    let duplicates = batch(&db, epoch, 3, vec![(t0 + 4200, like)]).await?;
    assert_eq!(duplicates, 0);
    assert_eq!(db.count(10).await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_memory_renewed_past_the_horizon_judges_the_next_retry_from_its_renewal()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let epoch = offsets::claim(&db.pool, "t", &[0]).await?[0].epoch;
    let t0 = 1_000_000;
    let (like, unlike) = (like_event(1, 10, true)?, like_event(1, 10, false)?);
    // In one batch: the like, its unlike, and a retry of the like past the
    // horizon (a new like, whose application renews the memory).
    let duplicates = batch(
        &db,
        epoch,
        0,
        vec![
            (t0, like.clone()),
            (t0 + 100, unlike.clone()),
            (t0 + 4200, like.clone()),
        ],
    )
    .await?;
    assert_eq!((duplicates, db.count(10).await?), (0, 1));
    // Then the unlike's retry past its own horizon (applied: the count drops)
    // and a retry of the like 3 s after its renewal: a duplicate, since the
    // memory is the renewal's, not the first sight's.
    let duplicates = batch(
        &db,
        epoch,
        3,
        vec![(t0 + 4300, unlike), (t0 + 7200, like.clone())],
    )
    .await?;
    assert_eq!(
        duplicates, 1,
        "the like 3 s after its renewal is a duplicate"
    );
    assert_eq!(db.count(10).await?, 0);
    // Across batches too: the like renewed in a batch of its own past the horizon.
    let duplicates = batch(&db, epoch, 5, vec![(t0 + 11_300, like.clone())]).await?;
    assert_eq!((duplicates, db.count(10).await?), (0, 1));
    let duplicates = batch(&db, epoch, 6, vec![(t0 + 14_300, like)]).await?;
    assert_eq!(
        duplicates, 1,
        "the like 3 s after its renewal in its own batch is a duplicate"
    );
    Ok(())
}

#[tokio::test]
async fn the_same_event_id_on_two_items_in_one_batch_counts_on_both() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let epoch = offsets::claim(&db.pool, "t", &[0]).await?[0].epoch;
    let first = like_event(1, 10, true)?;
    let mut second = like_event(1, 11, true)?;
    second.event_id = first.event_id;
    let duplicates = batch(&db, epoch, 0, vec![(1, first), (2, second)]).await?;
    assert_eq!(duplicates, 0);
    assert_eq!((db.count(10).await?, db.count(11).await?), (1, 1));
    Ok(())
}

/// A projector in-process with the short horizon; stopped through the sender.
fn projector(
    env: &TestEnv,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), likes_projector::ProjectorError>>,
) {
    let settings = likes_projector::Settings {
        dedup_horizon: HORIZON,
        ..env.projector_settings()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(likes_projector::run(settings, async {
        let _ = stopped.await;
    }));
    (stop, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_near_its_original_counts_once_after_an_outage_longer_than_the_horizon_and_a_rebuild_agrees()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let producer = TimedProducer::new(&env)?;
    let t0 = now_millis();
    let like = like_event(7, 42, true)?;
    producer.send(&like, t0).await?;
    producer.send(&like_event(8, 43, true)?, t0).await?;

    let (stop, running) = projector(&env);
    env.projected_everything(Duration::from_secs(60)).await?;
    assert_eq!(env.db_count(1, 42).await?, 1);
    stop.send(()).ok();
    running.await??;

    // The client unliked a second later and its late retry of the like reached
    // the log a second after that, while the projector was down; the outage
    // lasts longer than the horizon by the wall clock.
    producer.send(&like_event(7, 42, false)?, t0 + 1000).await?;
    producer.send(&like, t0 + 2000).await?;
    tokio::time::sleep(HORIZON + Duration::from_secs(2)).await;

    // Restarted: its pruner runs at start, before the group is joined.
    let (stop, running) = projector(&env);
    env.projected_everything(Duration::from_secs(60)).await?;
    let live = (live_counts(&env).await?, live_rows(&env).await?.1);
    stop.send(()).ok();
    running.await??;
    let (count, likers) = (env.db_count(1, 42).await?, env.db_likers(1, 42).await?);
    println!("item 42: acked 3 (like, unlike, retry of the like), counted {count}, expected 0");
    assert_eq!(
        (count, likers),
        (0, 0),
        "the retry of the like counted again"
    );

    // The rebuild, with the same horizon, builds the same tables and swaps them in.
    let report = rebuild::run(
        &env.stack,
        &RebuildOptions {
            dedup_horizon: HORIZON,
            ..RebuildOptions::new(RebuildFrom::Earliest)
        },
    )
    .await?;
    assert_eq!(
        report.duplicates, 1,
        "the rebuild calls the retry a duplicate too"
    );
    assert_eq!(report.live_differences, 0);
    // Equal non-zero counts and equal user_likes rows (a counter the log
    // brought back to 0 is a row live and absent when rebuilt in one pass).
    let rebuilt = (live_counts(&env).await?, live_rows(&env).await?.1);
    assert_eq!(rebuilt, live, "rebuilt tables equal the live ones");
    Ok(())
}
