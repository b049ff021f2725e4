//! `likes-replay rebuild redis` brings back every item's recent likers from
//! the log (unlikes honoured, the projector's size limit), exactly as the
//! projector had built them, and does so while likes and unlikes keep being
//! projected without undoing any of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use likes_domain::{EventId, ItemKey, LikeState, NetChange, Position, UserId};
use likes_infra::postgres::offsets;
use likes_infra::redis::likers::{DEFAULT_KEEP, RecentLikers};
use likes_infra::redis::{Keys, Redis};
use likes_replay::rebuild;
use likes_replay::rebuild::likers::{LikersOptions, Source, SourceRange};
use likes_tests::cli::likes_replay;
use likes_tests::likers_sets::{self, Likers};
use likes_tests::load::ITEM_TYPE;
use likes_tests::log_surgery::delete_records_before;
use likes_tests::{Ingest, TestEnv};
use serde_json::json;

/// Sends one like or unlike through the API; anything but 202 is an error.
async fn send(ingest: &Ingest, like: bool, user: i64, item: i64) -> anyhow::Result<()> {
    let path = if like { "/v1/likes" } else { "/v1/unlikes" };
    let response = reqwest::Client::new()
        .post(ingest.url(path))
        .json(&json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
    Ok(())
}

/// The projector's stored next offset per partition.
async fn projector_offsets(env: &TestEnv) -> anyhow::Result<BTreeMap<i32, i64>> {
    Ok(offsets::positions(&env.db, &env.stack.topic)
        .await?
        .into_iter()
        .collect())
}

fn empty(items: &[i64]) -> BTreeMap<i64, Likers> {
    items.iter().map(|&i| (i, Vec::new())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_rebuild_restores_every_likers_set_the_projector_built() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let items: Vec<i64> = (1..=7).collect();
    // Items 1-6 get a few likers each, item 7 more than the projector keeps.
    for item in 1..=6 {
        for user in 1..=item + 3 {
            send(&ingest, true, user, item).await?;
        }
    }
    for user in 1..=(DEFAULT_KEEP as i64 + 5) {
        send(&ingest, true, user, 7).await?;
    }
    env.projected_everything(Duration::from_secs(60)).await?;
    // Then some unlike, and some of those like again (each step its own
    // batches, so every step is a change of its own in PostgreSQL too).
    for (user, item) in [
        (1, 1),
        (1, 2),
        (1, 3),
        (1, 4),
        (1, 5),
        (1, 6),
        (2, 3),
        (4, 5),
    ] {
        send(&ingest, false, user, item).await?;
    }
    env.projected_everything(Duration::from_secs(60)).await?;
    for (user, item) in [(1, 2), (1, 4)] {
        send(&ingest, true, user, item).await?;
    }
    env.projected_everything(Duration::from_secs(60)).await?;
    projector.stop().await??;
    ingest.running.stop().await?;

    let built = likers_sets::in_redis(&env, &items).await?;
    assert_eq!(
        built,
        likers_sets::in_postgres(&env, &items, DEFAULT_KEEP).await?,
        "the projector's sets are the newest likers user_likes holds"
    );
    assert_eq!(built[&7].len(), DEFAULT_KEEP);
    assert!(!built[&1].iter().any(|(user, _)| *user == 1));
    assert!(built[&2].iter().any(|(user, _)| *user == 1));

    likers_sets::drop_all(&env, &items).await?;
    assert_eq!(likers_sets::in_redis(&env, &items).await?, empty(&items));

    let done = rebuild::redis::run(&env.stack).await?;

    let rebuilt = likers_sets::in_redis(&env, &items).await?;
    assert_eq!(rebuilt, built, "every set as the projector built it");
    let likers = &done.likers;
    assert_eq!(likers.keep, DEFAULT_KEEP);
    assert_eq!(likers.sets_written, items.len() as u64);
    assert_eq!((likers.caught_up, likers.left_to_projector), (0, 0));
    assert_eq!(likers.events, env.end_offsets()? as u64);
    let read: BTreeMap<i32, (bool, Vec<SourceRange>)> = likers
        .partitions
        .iter()
        .map(|p| (p.partition, (p.whole_history, p.read.clone())))
        .collect();
    let expected: BTreeMap<i32, (bool, Vec<SourceRange>)> = projector_offsets(&env)
        .await?
        .into_iter()
        .filter(|(_, end)| *end > 0)
        .map(|(partition, end)| {
            let range = SourceRange {
                source: Source::Log,
                from: 0,
                to: end,
            };
            (partition, (true, vec![range]))
        })
        .collect();
    assert_eq!(
        read, expected,
        "each partition read from the log, 0 to the projector's offset"
    );

    // The command says the same, and a second rebuild changes nothing.
    let out = likes_replay(&env, &["rebuild", "redis"]).await?;
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    eprintln!("likes-replay rebuild redis printed:\n{printed}");
    assert!(
        printed.contains(&format!(
            "likers rebuilt: 7 sets written (newest {DEFAULT_KEEP} per item; 0 caught up"
        )),
        "{printed}"
    );
    for (partition, (_, ranges)) in &expected {
        let line = format!("partition {partition}: read log 0..{}", ranges[0].to);
        assert!(printed.contains(&line), "{line} in {printed}");
    }
    assert_eq!(likers_sets::in_redis(&env, &items).await?, built);
    likers_sets::clean_up(&env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likers_rebuilt_while_likes_and_unlikes_keep_coming_end_as_postgres_says()
-> anyhow::Result<()> {
    const USERS: i64 = 12;
    // Traffic runs until the rebuild is done and then AFTER more ops: a
    // fixed count could end before a slow rebuild does (a busy machine).
    const AFTER: usize = 20;
    const MAX_OPS: usize = 5_000;
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let items: Vec<i64> = (1..=5).collect();
    let mut liked: BTreeSet<(i64, i64)> = BTreeSet::new();
    for &item in &items {
        for user in 1..=USERS {
            send(&ingest, true, user, item).await?;
            liked.insert((user, item));
        }
    }
    env.projected_everything(Duration::from_secs(60)).await?;
    likers_sets::drop_all(&env, &items).await?;

    // Live traffic: every op flips one pair; a pair comes round again only
    // after every other pair (seconds later), so no batch holds two of its
    // events and user_likes.liked_at is the like's own time.
    let url = ingest.url("");
    let (rebuilt, rebuild_done) = tokio::sync::watch::channel(false);
    let traffic = tokio::spawn(async move {
        let mut sent_at = Vec::new();
        let mut left_after: Option<usize> = None;
        let client = reqwest::Client::new();
        for i in 0..MAX_OPS {
            match left_after {
                None if *rebuild_done.borrow() => left_after = Some(AFTER),
                Some(0) => break,
                Some(ref mut n) => *n -= 1,
                None => {}
            }
            let pair = i as i64 % (USERS * 5);
            let (user, item) = (pair % USERS + 1, pair / USERS + 1);
            let like = !liked.contains(&(user, item));
            let path = if like { "/v1/likes" } else { "/v1/unlikes" };
            let response = client
                .post(format!("{url}{path}"))
                .json(&json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE}))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
            if like {
                liked.insert((user, item));
            } else {
                liked.remove(&(user, item));
            }
            sent_at.push(Instant::now());
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        anyhow::Ok((liked, sent_at))
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let started = Instant::now();
    // Small passes: more reads of each partition, so the projector moves on
    // while the rebuild is still writing.
    let options = LikersOptions {
        records_per_pass: 40,
        ..LikersOptions::default()
    };
    let done = rebuild::redis::run_with(&env.stack, options).await;
    let finished = Instant::now();
    rebuilt.send_replace(true);
    let done = done?;
    let (liked, sent_at) = traffic.await??;
    env.projected_everything(Duration::from_secs(60)).await?;

    let during = sent_at
        .iter()
        .filter(|t| **t >= started && **t <= finished)
        .count();
    let after = sent_at.iter().filter(|t| **t > finished).count();
    eprintln!(
        "likers rebuild: {} sets written, {} caught up, {} left to the projector, {} passes; \
         {during} of {} live ops sent during it, {after} after",
        done.likers.sets_written,
        done.likers.caught_up,
        done.likers.left_to_projector,
        done.likers.partitions.iter().map(|p| p.passes).sum::<u64>(),
        sent_at.len()
    );
    assert!(during > 0, "the rebuild ran beside live traffic");
    assert!(after > 0, "live traffic went on after the rebuild");
    assert_eq!(done.likers.left_to_projector, 0);

    let in_postgres = likers_sets::in_postgres(&env, &items, DEFAULT_KEEP).await?;
    let expected_pairs: BTreeSet<(i64, i64)> = in_postgres
        .iter()
        .flat_map(|(item, likers)| likers.iter().map(move |(user, _)| (*user, *item)))
        .collect();
    assert_eq!(
        expected_pairs, liked,
        "user_likes holds every accepted action"
    );
    assert_eq!(likers_sets::in_redis(&env, &items).await?, in_postgres);
    projector.stop().await??;
    ingest.running.stop().await?;
    likers_sets::clean_up(&env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuilt_set_and_a_projector_write_each_yield_only_to_a_newer_stamp() -> anyhow::Result<()>
{
    let env = TestEnv::new(1).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let items = [1, 2];
    for item in items {
        for user in 1..=3 {
            send(&ingest, true, user, item).await?;
        }
    }
    env.projected_everything(Duration::from_secs(60)).await?;
    projector.stop().await??;
    ingest.running.stop().await?;
    let built = likers_sets::in_redis(&env, &items).await?;
    let end = projector_offsets(&env).await?[&0];

    // Item 1 as if the projector had applied a like past the offsets the
    // rebuild folds up to (after a flush: only that like is in the set).
    let keys = Keys::new(&env.stack.redis_key_prefix);
    let item1 = ItemKey::parse(ITEM_TYPE.into(), 1)?;
    likers_sets::drop_all(&env, &items).await?;
    let mut redis = env.redis.clone();
    redis::cmd("ZADD")
        .arg(keys.likers(item1))
        .arg(5_000)
        .arg(99)
        .query_async::<()>(&mut redis)
        .await?;
    redis::cmd("SET")
        .arg(keys.likers_stamp(item1))
        .arg(end + 10)
        .query_async::<()>(&mut redis)
        .await?;

    let done = rebuild::redis::run(&env.stack).await?;

    let after = likers_sets::in_redis(&env, &items).await?;
    assert_eq!(
        after[&1],
        vec![(99, 5_000)],
        "the newer set is left as it is"
    );
    assert_eq!(after[&2], built[&2], "the other set is rebuilt");
    assert_eq!(
        (done.likers.sets_written, done.likers.left_to_projector),
        (1, 1)
    );

    // A projector write of a batch the rebuilt set already holds (an unlike
    // at an offset below its stamp, arriving late) changes nothing.
    let connection =
        Redis::connect(&env.stack.redis_address(), &env.stack.redis_key_prefix).await?;
    let late = NetChange {
        user_id: UserId::parse(built[&2][0].0)?,
        item: ItemKey::parse(ITEM_TYPE.into(), 2)?,
        state: LikeState::NotLiked,
        event_id: EventId::generate(),
        timestamp: chrono::Utc::now(),
        position: Position {
            partition: 0,
            offset: end - 1,
        },
    };
    RecentLikers::new(&connection, DEFAULT_KEEP)
        .apply(std::slice::from_ref(&late))
        .await?;
    assert_eq!(likers_sets::in_redis(&env, &[2]).await?[&2], built[&2]);
    // One past the stamp is newer: applied.
    let newer = NetChange {
        position: Position {
            partition: 0,
            offset: end,
        },
        ..late
    };
    RecentLikers::new(&connection, DEFAULT_KEEP)
        .apply(&[newer])
        .await?;
    assert_eq!(likers_sets::in_redis(&env, &[2]).await?[&2], built[&2][1..]);
    likers_sets::clean_up(&env).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_retention_deleted_the_start_stored_likers_the_log_never_saw_are_kept()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    for user in 1..=3 {
        send(&ingest, true, user, 1).await?;
    }
    env.projected_everything(Duration::from_secs(60)).await?;
    let before_retention = likers_sets::in_redis(&env, &[1]).await?[&1].clone();
    delete_records_before(&env, 0, 3).await?;
    send(&ingest, false, 1, 1).await?;
    send(&ingest, true, 4, 1).await?;
    env.projected_everything(Duration::from_secs(60)).await?;
    projector.stop().await??;
    ingest.running.stop().await?;
    let built = likers_sets::in_redis(&env, &[1]).await?;

    // An older copy of the set comes back (user 1 still in it, user 4 not
    // yet, no stamp): the log still says user 1 unliked and user 4 liked,
    // but knows nothing of users 2 and 3 any more.
    likers_sets::drop_all(&env, &[1]).await?;
    let keys = Keys::new(&env.stack.redis_key_prefix);
    for (user, at) in &before_retention {
        redis::cmd("ZADD")
            .arg(keys.likers(ItemKey::parse(ITEM_TYPE.into(), 1)?))
            .arg(*at)
            .arg(*user)
            .query_async::<()>(&mut env.redis.clone())
            .await?;
    }

    let done = rebuild::redis::run(&env.stack).await?;

    assert_eq!(likers_sets::in_redis(&env, &[1]).await?, built);
    assert_eq!(
        built[&1].iter().map(|l| l.0).collect::<Vec<_>>(),
        vec![4, 3, 2]
    );
    let partition = &done.likers.partitions[0];
    assert!(!partition.whole_history);
    let end = projector_offsets(&env).await?[&0];
    assert_eq!(
        partition.read,
        vec![SourceRange {
            source: Source::Log,
            from: 3,
            to: end
        }]
    );
    likers_sets::clean_up(&env).await
}
