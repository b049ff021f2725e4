//! The projector's transactions wait a bounded time for the offset rows: a
//! batch commit or a claim that meets them locked (by a rebuild's swap, or
//! anything else) fails as a transient error, which the projector retries,
//! instead of waiting for as long as the holder holds them.

use std::time::Duration;

use chrono::Utc;
use likes_domain::{
    Action, DedupHorizon, EventId, ItemKey, LikeEvent, LoggedEvent, Position, UserId,
};
use likes_infra::postgres::offsets;
use likes_infra::postgres::writer::{BatchRules, OffsetCommit, apply_batch};
use likes_tests::TestDb;

/// Far longer than the store's lock timeout, far shorter than "forever".
const GENEROUS: Duration = Duration::from_secs(30);

fn like(offset: i64) -> anyhow::Result<LoggedEvent> {
    let event = LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(1)?,
        item: ItemKey::parse(1, 10)?,
        action: Action::Like,
        timestamp: Utc::now(),
    };
    Ok(LoggedEvent {
        position: Position {
            partition: 0,
            offset,
        },
        record_time: event.timestamp.timestamp_millis(),
        event,
    })
}

/// Holds `FOR UPDATE` on topic `t`'s offset rows, as a swap does, until dropped.
async fn lock_offsets(db: &TestDb) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut holder = db.pool.begin().await?;
    sqlx::query("SELECT * FROM projector_offsets WHERE topic = 't' FOR UPDATE")
        .execute(&mut *holder)
        .await?;
    Ok(holder)
}

#[tokio::test]
async fn a_commit_or_claim_behind_a_held_offsets_lock_fails_as_transient_and_then_succeeds()
-> anyhow::Result<()> {
    let db = TestDb::new().await?;
    let claim = offsets::claim(&db.pool, "t", &[0]).await?[0];
    let commit = [OffsetCommit {
        epoch: claim.epoch,
        next: Position {
            partition: 0,
            offset: 1,
        },
    }];
    let rules = || BatchRules {
        horizon: DedupHorizon::new(Duration::from_secs(3600)),
        cached_until: &[],
    };
    let events = [like(0)?];
    let holder = lock_offsets(&db).await?;

    let blocked_commit = tokio::time::timeout(
        GENEROUS,
        apply_batch(&db.pool, "t", &commit, &events, rules()),
    )
    .await;
    let blocked_claim =
        tokio::time::timeout(GENEROUS, offsets::claim(&db.pool, "t", &[1, 0])).await;
    holder.rollback().await?;

    let commit_error = blocked_commit
        .map_err(|_| anyhow::anyhow!("the commit still waited after {GENEROUS:?}"))?
        .err()
        .ok_or(anyhow::anyhow!("the commit went through a held lock"))?;
    assert!(commit_error.is_transient(), "{commit_error}");
    let claim_error = blocked_claim
        .map_err(|_| anyhow::anyhow!("the claim still waited after {GENEROUS:?}"))?
        .err()
        .ok_or(anyhow::anyhow!("the claim went through a held lock"))?;
    assert!(claim_error.is_transient(), "{claim_error}");
    let retried = apply_batch(&db.pool, "t", &commit, &events, rules()).await?;
    assert_eq!(retried.liked, 1, "the retried batch applies once");
    assert_eq!(db.count(10).await?, 1);
    Ok(())
}
