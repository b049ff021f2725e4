//! `likes-replay rebuild postgres` killed half way: the live tables are
//! untouched at that point, and a re-run resumes from the progress recorded
//! with the shadow rows to a result equal to a full recount of the topic and to
//! the live projector's tables; and two rebuilds never interleave in one
//! database. Needs the binary: `cargo build -p likes-replay`.

use std::time::Duration;

use likes_replay::rebuild::{self, RebuildFrom, RebuildOptions};
use likes_tests::replay::{self, ReplayProcess, tables};
use likes_tests::{TestEnv, eventually};

const EVENTS: usize = 40_000;
/// An item no event touches, given a wrong count in the live `counters`.
const BOGUS_ITEM: i64 = 999_999;

/// The records the shadow tables reflect, per the progress table (0 when none).
async fn shadow_progress(env: &TestEnv) -> anyhow::Result<i64> {
    let (n,): (Option<i64>,) =
        sqlx::query_as("SELECT SUM(next_offset)::bigint FROM rebuild_progress WHERE topic = $1")
            .bind(&env.stack.topic)
            .fetch_one(&env.db)
            .await?;
    Ok(n.unwrap_or(0))
}

/// The progress a killed rebuild left: a COMMIT it sent just before the
/// kill may still land on the server after the process is gone, so the
/// progress is read once it has stood still for a moment (nothing else can
/// move it then).
async fn progress_left_by_the_kill(env: &TestEnv) -> anyhow::Result<i64> {
    let mut last = shadow_progress(env).await?;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = shadow_progress(env).await?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    anyhow::bail!("the progress of a killed rebuild kept moving")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_killed_half_way_leaves_live_tables_alone_and_a_rerun_resumes_to_a_full_recount()
-> anyhow::Result<()> {
    let env = TestEnv::new(4).await?;
    replay::fill(&env, EVENTS, 400, 300).await?;
    let total = env.end_offsets()?;
    let projector = env.start_projector();
    eventually(Duration::from_secs(120), || async {
        let stored = likes_infra::postgres::offsets::positions(&env.db, &env.stack.topic).await?;
        Ok(stored.iter().map(|p| p.1).sum::<i64>() == total)
    })
    .await?;
    let projected = replay::live_counts(&env).await?;
    sqlx::query(
        "INSERT INTO counters (item_id, item_type, count, last_offset) VALUES ($1, 1, 5, 0)",
    )
    .bind(BOGUS_ITEM)
    .execute(&env.db)
    .await?;
    let live_before = replay::live_rows(&env).await?;

    // Small batches on two workers: progress is committed often, so the kill
    // lands between commits with part of every partition still to read.
    let mut rebuild = ReplayProcess::start(
        &env,
        &[
            "rebuild",
            "postgres",
            "--parallel",
            "2",
            "--batch-events",
            "500",
        ],
    )?;
    eventually(Duration::from_secs(120), || async {
        Ok(shadow_progress(&env).await? >= total / 4)
    })
    .await?;
    anyhow::ensure!(
        rebuild.is_running()?,
        "the rebuild finished before the kill"
    );
    rebuild.kill().await?;
    let at_kill = progress_left_by_the_kill(&env).await?;
    let live_at_kill = replay::live_rows(&env).await?;
    let tables_at_kill = tables(&env).await?;

    let done = rebuild::run(
        &env.stack,
        &RebuildOptions {
            parallel: Some(2),
            accept_differences: true,
            ..RebuildOptions::new(RebuildFrom::Earliest)
        },
    )
    .await?;

    projector.stop().await??;
    eprintln!(
        "killed at {at_kill} of {total} records; the re-run read {} ({} duplicates) at {:.0} events/s",
        done.events, done.duplicates, done.events_per_second
    );
    assert!(
        at_kill < total,
        "killed half way: {at_kill} of {total} records"
    );
    assert!(
        live_at_kill == live_before,
        "live tables untouched until the swap"
    );
    assert_eq!(
        tables_at_kill,
        [
            "counters",
            "counters_rebuild",
            "user_likes",
            "user_likes_rebuild"
        ]
    );
    assert!(done.resumed && done.swapped, "{done:?}");
    assert_eq!(
        done.resumed_records, at_kill,
        "resumed where the kill left it"
    );
    assert_eq!(done.events as i64, total - at_kill, "nothing read twice");
    assert_eq!(done.inconsistent, 0);
    assert_eq!(done.live_differences, 1, "{:?}", done.listed_differences);
    assert_eq!(done.listed_differences[0].item_id, BOGUS_ITEM);
    let rebuilt = replay::live_counts(&env).await?;
    assert_eq!(
        rebuilt,
        replay::recount(&env).await?,
        "equals a full recount"
    );
    assert_eq!(rebuilt, projected, "equals the live projection");
    let (likers,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM user_likes")
        .fetch_one(&env.db)
        .await?;
    assert_eq!(likers, rebuilt.values().sum::<i64>());
    assert_eq!(tables(&env).await?, ["counters", "user_likes"]);
    assert_eq!(
        shadow_progress(&env).await?,
        0,
        "a swapped build is forgotten"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_rebuild_refuses_while_another_holds_the_database() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let mut running = env.db.acquire().await?;
    likes_infra::postgres::rebuild_progress::lock(&mut running).await?;

    let second = rebuild::run(&env.stack, &RebuildOptions::new(RebuildFrom::Earliest)).await;

    let message = format!("{:#}", second.err().ok_or(anyhow::anyhow!("not refused"))?);
    assert!(message.contains("another `rebuild postgres`"), "{message}");
    assert_eq!(
        tables(&env).await?,
        ["counters", "user_likes"],
        "nothing begun"
    );
    Ok(())
}
