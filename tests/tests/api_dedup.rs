//! Quick dedup on the real stack (ingest and projector in-process, memo on):
//! the memo answers only a repeat of the user's latest logged action on the
//! item, whichever path (single or batch) logged it and in whatever order
//! concurrent requests settle, so no acknowledged action is ever swallowed.

use std::time::Duration;

use likes_domain::{Action, EventId, ItemKey, Position, UserId};
use likes_infra::redis::Redis;
use likes_infra::redis::dedup::{DedupMemos, Memo, Outcome, Recall, Settle};
use likes_ingest::Limits;
use likes_tests::api::{Answer, quiet_limits, send, start_ingest};
use likes_tests::{Ingest, TestEnv, eventually};
use serde_json::{Value, json};

const CONVERGE: Duration = Duration::from_secs(60);

fn with_memo() -> Limits {
    Limits {
        dedup_window: Some(Duration::from_secs(60)),
        ..quiet_limits()
    }
}

fn pair(user: i64, item: i64) -> Value {
    json!({"user_id": user, "item_id": item, "item_type": 1})
}

async fn single(
    http: &reqwest::Client,
    ingest: &Ingest,
    action: Action,
    user: i64,
    item: i64,
) -> anyhow::Result<Answer> {
    let request = match action {
        Action::Like => http.post(ingest.url("/v1/likes")),
        Action::Unlike => http.delete(ingest.url("/v1/likes")),
    };
    let answer = send(request.json(&pair(user, item))).await?;
    anyhow::ensure!(answer.status == 202, "{action:?}: {}", answer.body);
    Ok(answer)
}

async fn batch(
    http: &reqwest::Client,
    ingest: &Ingest,
    action: &str,
    user: i64,
    item: i64,
) -> anyhow::Result<()> {
    let event = json!({"action": action, "user_id": user, "item_id": item, "item_type": 1});
    let answer = send(
        http.post(ingest.url("/v1/likes:batch"))
            .json(&json!({ "events": [event] })),
    )
    .await?;
    anyhow::ensure!(answer.status == 200, "{}", answer.body);
    anyhow::ensure!(
        answer.body["results"][0]["status"] == 202,
        "{}",
        answer.body
    );
    Ok(())
}

/// What the API says: whether `user` likes `item`, and the item's count.
async fn api_state(
    http: &reqwest::Client,
    ingest: &Ingest,
    user: i64,
    item: i64,
) -> anyhow::Result<(bool, i64)> {
    let liked = send(http.get(ingest.url(&format!("/v1/users/{user}/likes/1/{item}")))).await?;
    let count = send(http.get(ingest.url(&format!("/v1/items/1/{item}/count")))).await?;
    Ok((
        liked.body["liked"].as_bool().unwrap_or(false),
        count.body["count"].as_i64().unwrap_or(-1),
    ))
}

/// Waits until the API says `want` (Redis is written just after PostgreSQL).
async fn api_says(
    http: &reqwest::Client,
    ingest: &Ingest,
    user: i64,
    item: i64,
    want: (bool, i64),
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let seen = api_state(http, ingest, user, item).await?;
        if seen == want {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "API of {item}: {seen:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn db_liked(env: &TestEnv, user: i64, item: i64) -> anyhow::Result<bool> {
    let (n,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM user_likes WHERE user_id = $1 AND item_type = 1 AND item_id = $2",
    )
    .bind(user)
    .bind(item)
    .fetch_one(&env.db)
    .await?;
    Ok(n == 1)
}

/// Waits until every record of the topic is projected.
async fn projected_everything(env: &TestEnv) -> anyhow::Result<()> {
    let end = env.end_offsets()?;
    eventually(CONVERGE, || async {
        let (applied,): (Option<i64>,) =
            sqlx::query_as("SELECT SUM(next_offset)::BIGINT FROM projector_offsets")
                .fetch_one(&env.db)
                .await?;
        Ok(applied == Some(end))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_like_after_a_batch_unlike_is_produced_and_counted() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, with_memo()).await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();
    let (user, item) = (777, 5005);

    let first = single(&http, &ingest, Action::Like, user, item).await?;
    assert_eq!(first.body["deduplicated"], false);
    batch(&http, &ingest, "unlike", user, item).await?;
    let again = single(&http, &ingest, Action::Like, user, item).await?;
    assert_eq!(
        again.body["deduplicated"], false,
        "the batch's unlike is the latest action, so this like is new: {}",
        again.body
    );
    assert_ne!(again.body["event_id"], first.body["event_id"]);
    assert_eq!(
        env.end_offsets()?,
        3,
        "like, unlike and like are all logged"
    );

    projected_everything(&env).await?;
    assert!(db_liked(&env, user, item).await?, "user_likes has the like");
    assert_eq!(env.db_count(1, item).await?, 1);
    api_says(&http, &ingest, user, item, (true, 1)).await?;

    projector.stop().await??;
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlike_after_a_batch_like_is_produced_and_counted() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, with_memo()).await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();
    let (user, item) = (778, 5006);

    single(&http, &ingest, Action::Like, user, item).await?;
    let first = single(&http, &ingest, Action::Unlike, user, item).await?;
    assert_eq!(first.body["deduplicated"], false);
    batch(&http, &ingest, "like", user, item).await?;
    let again = single(&http, &ingest, Action::Unlike, user, item).await?;
    assert_eq!(
        again.body["deduplicated"], false,
        "the batch's like is the latest action, so this unlike is new: {}",
        again.body
    );
    assert_eq!(env.end_offsets()?, 4);

    projected_everything(&env).await?;
    assert!(!db_liked(&env, user, item).await?, "user_likes has no like");
    assert_eq!(env.db_count(1, item).await?, 0);
    api_says(&http, &ingest, user, item, (false, 0)).await?;

    projector.stop().await??;
    ingest.running.stop().await?;
    Ok(())
}

/// The action and offset of an answer.
fn logged(answer: &Answer, action: Action) -> anyhow::Result<(i64, Action)> {
    let offset = answer.body["offset"]
        .as_i64()
        .ok_or_else(|| anyhow::anyhow!("no offset: {}", answer.body))?;
    Ok((offset, action))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_likes_and_unlikes_end_in_the_state_of_the_highest_acknowledged_offset()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, with_memo()).await?;
    let projector = env.start_projector();
    let http = reqwest::Client::new();
    let user = 779;
    const ROUNDS: i64 = 60;
    let mut expected = Vec::new();
    let mut swallowed = Vec::new();
    let mut repeats_answered = 0;

    for round in 0..ROUNDS {
        let item = 6000 + round;
        // A like and an unlike at once: either may land last.
        let (like, unlike) = tokio::join!(
            single(&http, &ingest, Action::Like, user, item),
            single(&http, &ingest, Action::Unlike, user, item)
        );
        let mut answers = vec![
            logged(&like?, Action::Like)?,
            logged(&unlike?, Action::Unlike)?,
        ];
        answers.sort_by_key(|(offset, _)| *offset);
        // Then, alone, the action the log superseded: it is a change, so it
        // must be produced, at an offset above both.
        let (_, superseded) = answers[0];
        let last = single(&http, &ingest, superseded, user, item).await?;
        if last.body["deduplicated"] != false {
            swallowed.push((item, answers.clone(), last.body.clone()));
        }
        answers.push(logged(&last, superseded)?);
        answers.sort_by_key(|(offset, _)| *offset);
        let (_, latest) = answers[answers.len() - 1];
        expected.push((item, latest == Action::Like));
        // The memo still serves its purpose: a true repeat is answered from it.
        if last.body["deduplicated"] == false {
            let repeat = single(&http, &ingest, superseded, user, item).await?;
            if repeat.body["deduplicated"] == true && repeat.body["offset"] == last.body["offset"] {
                repeats_answered += 1;
            }
        }
    }
    let produced = env.end_offsets()?;
    println!(
        "{ROUNDS} rounds: {} requests answered 202, {produced} produced, {} changes answered \
         from a stale memo, {repeats_answered} true repeats answered from the memo",
        ROUNDS * 4,
        swallowed.len()
    );
    assert!(
        swallowed.is_empty(),
        "a change answered from a stale memo: {swallowed:?}"
    );
    assert_eq!(
        produced,
        ROUNDS * 3,
        "every like and unlike that changed something"
    );
    assert_eq!(repeats_answered, ROUNDS, "the memo answers true repeats");

    projected_everything(&env).await?;
    for (item, liked) in expected {
        let want = (liked, i64::from(liked));
        assert_eq!(
            db_liked(&env, user, item).await?,
            liked,
            "user_likes of {item}"
        );
        assert_eq!(env.db_count(1, item).await?, want.1, "counters of {item}");
        api_says(&http, &ingest, user, item, want).await?;
    }

    projector.stop().await??;
    ingest.running.stop().await?;
    Ok(())
}

/// The memo's rule itself, on the shared Redis under this test's prefix:
/// settles arriving out of order, a publish still in flight, and a publish of
/// unknown outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memo_answers_only_for_the_highest_settled_offset_with_nothing_in_flight()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let redis = Redis::connect(&env.stack.redis_address(), &env.stack.redis_key_prefix).await?;
    let memos = DedupMemos::new(&redis, Duration::from_secs(60), Duration::from_secs(90));
    let (user, item) = (UserId::parse(5)?, ItemKey::parse(1, 50)?);
    let memo = |action, offset| Memo {
        action,
        event_id: EventId::generate(),
        ack: Position {
            partition: 0,
            offset,
        },
    };
    let acked = |m| Settle {
        user,
        item,
        outcome: Outcome::Acked(m),
        marked: true,
    };

    // A like (offset 10) and an unlike (offset 11) in flight together; the
    // unlike settles first. The like's later settle must not win.
    assert_eq!(
        memos.recall(user, item, Action::Like).await?,
        Recall::Marked
    );
    assert_eq!(
        memos.recall(user, item, Action::Unlike).await?,
        Recall::Marked
    );
    let unlike = memo(Action::Unlike, 11);
    memos.settle(&[acked(unlike)]).await?;
    assert_eq!(
        memos.recall(user, item, Action::Unlike).await?,
        Recall::Marked,
        "the like is still in flight: nothing answers"
    );
    memos
        .settle(&[Settle {
            outcome: Outcome::Released,
            ..acked(unlike)
        }])
        .await?;
    memos.settle(&[acked(memo(Action::Like, 10))]).await?;
    assert_eq!(
        memos.recall(user, item, Action::Like).await?,
        Recall::Marked,
        "the like at 10 is older than the unlike at 11"
    );
    memos
        .settle(&[Settle {
            outcome: Outcome::Released,
            ..acked(unlike)
        }])
        .await?;
    assert_eq!(
        memos.recall(user, item, Action::Unlike).await?,
        Recall::Answer(unlike)
    );

    // A publish whose outcome is unknown leaves the pair unanswerable.
    let other = ItemKey::parse(1, 51)?;
    let settle = |outcome| Settle {
        user,
        item: other,
        outcome,
        marked: true,
    };
    assert_eq!(
        memos.recall(user, other, Action::Like).await?,
        Recall::Marked
    );
    memos
        .settle(&[settle(Outcome::Acked(memo(Action::Like, 3)))])
        .await?;
    assert_eq!(memos.mark(&[(user, other)]).await?, ());
    memos.settle(&[settle(Outcome::Uncertain)]).await?;
    assert_eq!(
        memos.recall(user, other, Action::Like).await?,
        Recall::Marked,
        "an unlike may be in the log after the like at 3"
    );
    Ok(())
}
