//! The PostgreSQL batch writer on a real database: transitions are counted
//! once, a redelivered batch changes nothing, and a fenced owner writes nothing.

use chrono::Utc;
use likes_domain::{
    Action, DedupHorizon, EventId, ItemKey, LikeEvent, LoggedEvent, Position, UserId,
};
use likes_infra::Error;
use likes_infra::postgres::offsets;
use likes_infra::postgres::writer::{BatchRules, OffsetCommit, apply_batch, apply_in};
use likes_tests::TestDb;

/// The product's default horizon; no Redis marks.
fn rules() -> BatchRules<'static> {
    BatchRules {
        horizon: DedupHorizon::new(std::time::Duration::from_secs(3600)),
        cached_until: &[],
    }
}

fn event(user: i64, item: i64, action: Action) -> LikeEvent {
    LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(user).unwrap(),
        item: ItemKey::parse(1, item).unwrap(),
        action,
        timestamp: Utc::now(),
    }
}

fn at(start: i64, events: Vec<LikeEvent>) -> Vec<LoggedEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| LoggedEvent {
            position: Position {
                partition: 0,
                offset: start + i as i64,
            },
            record_time: e.timestamp.timestamp_millis(),
            event: e,
        })
        .collect()
}

fn events(list: &[(i64, i64, Action)]) -> Vec<LoggedEvent> {
    at(0, list.iter().map(|(u, i, a)| event(*u, *i, *a)).collect())
}

#[tokio::test]
async fn a_redelivered_batch_changes_nothing() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let claim = offsets::claim(&db.pool, "t", &[0]).await?[0];
    let changes = events(&[
        (1, 10, Action::Like),
        (2, 10, Action::Like),
        (3, 11, Action::Unlike),
    ]);
    let commit = [OffsetCommit {
        epoch: claim.epoch,
        next: Position {
            partition: 0,
            offset: 3,
        },
    }];
    let first = apply_batch(&db.pool, "t", &commit, &changes, rules()).await?;
    assert_eq!((first.liked, first.unliked), (2, 0));
    let again = apply_batch(&db.pool, "t", &commit, &changes, rules()).await?;
    assert_eq!((again.liked, again.unliked, again.duplicates), (0, 0, 3));
    // Its items' committed counts come back all the same, for Redis.
    let counts: Vec<(i64, i64)> = again
        .counts
        .iter()
        .map(|c| (c.item.item_id.get(), c.count))
        .collect();
    assert_eq!(counts, vec![(10, 2)]);
    assert_eq!(db.count(10).await?, 2);
    assert_eq!(db.count(11).await?, 0);
    Ok(())
}

#[tokio::test]
async fn unlike_of_never_liked_item_changes_nothing() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let claim = offsets::claim(&db.pool, "t", &[0]).await?[0];
    let commit = [OffsetCommit {
        epoch: claim.epoch,
        next: Position {
            partition: 0,
            offset: 1,
        },
    }];
    let applied = apply_batch(
        &db.pool,
        "t",
        &commit,
        &events(&[(1, 10, Action::Unlike)]),
        rules(),
    )
    .await?;
    assert_eq!(applied.unliked, 0);
    assert!(applied.counts.is_empty());
    assert_eq!(db.count(10).await?, 0);
    Ok(())
}

#[tokio::test]
async fn an_owner_fenced_by_a_new_claim_writes_nothing() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let old = offsets::claim(&db.pool, "t", &[0]).await?[0];
    let new = offsets::claim(&db.pool, "t", &[0]).await?[0];
    assert!(new.epoch > old.epoch);
    let commit = [OffsetCommit {
        epoch: old.epoch,
        next: Position {
            partition: 0,
            offset: 1,
        },
    }];
    let result = apply_batch(
        &db.pool,
        "t",
        &commit,
        &events(&[(1, 10, Action::Like)]),
        rules(),
    )
    .await;
    assert!(
        matches!(result, Err(Error::Fenced { partition: 0 })),
        "{result:?}"
    );
    assert_eq!(db.count(10).await?, 0);
    assert_eq!(offsets::positions(&db.pool, "t").await?, vec![(0, 0)]);
    Ok(())
}

#[tokio::test]
async fn the_same_event_delivered_in_two_batches_far_apart_is_applied_once() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let claim = offsets::claim(&db.pool, "t", &[0]).await?[0];
    let like = event(1, 10, Action::Like);
    let unlike = event(1, 10, Action::Unlike);
    let first = [OffsetCommit {
        epoch: claim.epoch,
        next: Position {
            partition: 0,
            offset: 1,
        },
    }];
    apply_batch(&db.pool, "t", &first, &at(0, vec![like.clone()]), rules()).await?;
    let second = [OffsetCommit {
        epoch: claim.epoch,
        next: Position {
            partition: 0,
            offset: 2,
        },
    }];
    apply_batch(&db.pool, "t", &second, &at(1, vec![unlike]), rules()).await?;
    assert_eq!(db.count(10).await?, 0);
    // The client's retry of the first like reaches the log much later.
    let third = [OffsetCommit {
        epoch: claim.epoch,
        next: Position {
            partition: 0,
            offset: 3,
        },
    }];
    let applied = apply_batch(&db.pool, "t", &third, &at(2, vec![like]), rules()).await?;
    assert_eq!((applied.duplicates, applied.liked), (1, 0));
    assert_eq!(db.count(10).await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_holding_its_transaction_cannot_commit_after_a_takeover() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let zombie = offsets::claim(&db.pool, "t", &[0]).await?[0];
    // The old owner is inside its batch transaction, not yet committed...
    let mut tx = db.pool.begin().await?;
    let commit = [OffsetCommit {
        epoch: zombie.epoch,
        next: Position {
            partition: 0,
            offset: 1,
        },
    }];
    apply_in(
        &mut tx,
        "t",
        &commit,
        &at(0, vec![event(1, 10, Action::Like)]),
        rules(),
    )
    .await?;
    // ...when a new owner claims the partition: the claim waits on the batch's row lock.
    let pool = db.pool.clone();
    let takeover = tokio::spawn(async move { offsets::claim(&pool, "t", &[0]).await });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !takeover.is_finished(),
        "the claim must wait for the open batch"
    );
    tx.commit().await?;
    // The new owner starts right after the batch that got in: nothing replays twice.
    let new = takeover.await??[0];
    assert_eq!((new.epoch, new.next.offset), (zombie.epoch + 1, 1));
    // The old owner's next batch is refused and writes nothing.
    let next = [OffsetCommit {
        epoch: zombie.epoch,
        next: Position {
            partition: 0,
            offset: 2,
        },
    }];
    let late = apply_batch(
        &db.pool,
        "t",
        &next,
        &at(1, vec![event(2, 10, Action::Like)]),
        rules(),
    )
    .await;
    assert!(
        matches!(late, Err(Error::Fenced { partition: 0 })),
        "{late:?}"
    );
    assert_eq!(db.count(10).await?, 1);
    assert_eq!(offsets::positions(&db.pool, "t").await?, vec![(0, 1)]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_that_resumes_after_a_takeover_is_fenced() -> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let zombie = offsets::claim(&db.pool, "t", &[0]).await?[0];
    // The new owner claims while the old one is paused between batches...
    let new = offsets::claim(&db.pool, "t", &[0]).await?[0];
    // ...and the old one wakes up inside a transaction and tries to write.
    let mut tx = db.pool.begin().await?;
    let commit = [OffsetCommit {
        epoch: zombie.epoch,
        next: Position {
            partition: 0,
            offset: 1,
        },
    }];
    let result = apply_in(
        &mut tx,
        "t",
        &commit,
        &at(0, vec![event(1, 10, Action::Like)]),
        rules(),
    )
    .await;
    assert!(
        matches!(result, Err(Error::Fenced { partition: 0 })),
        "{result:?}"
    );
    tx.rollback().await?;
    let mine = [OffsetCommit {
        epoch: new.epoch,
        next: Position {
            partition: 0,
            offset: 1,
        },
    }];
    apply_batch(
        &db.pool,
        "t",
        &mine,
        &at(0, vec![event(1, 10, Action::Like)]),
        rules(),
    )
    .await?;
    assert_eq!(db.count(10).await?, 1);
    Ok(())
}
