//! A projector that was away longer than retention meets records deleted
//! before it read them. When the archive holds them, it reads them from
//! there, in order and exactly once, and goes on with the topic: every count
//! is what the whole log says, and no partition parks. When the archive does
//! not hold all of the gap, the partition parks as before.

use std::time::Duration;

use likes_replay::archive::status;
use likes_tests::archive::{archive_everything, remove};
use likes_tests::log_surgery::delete_records_before;
use likes_tests::replay::{fill, live_counts, recount};
use likes_tests::{TestEnv, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_before_the_projector_read_them_are_read_from_the_archive()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    fill(&env, 3000, 20, 100).await?;
    archive_everything(&env).await?;
    let archived = status::run(&env.stack).await?;
    // More events after the archive's end: they stay in the topic.
    fill(&env, 500, 20, 100).await?;
    let expected = recount(&env).await?;
    // Retention deletes what the archive holds, before any projector ran.
    for row in &archived {
        delete_records_before(&env, row.partition, row.archived_to).await?;
    }
    let projector = env.start_projector();
    let projected = env.projected_everything(Duration::from_secs(90)).await;
    let counts = live_counts(&env).await?;
    projector.stop().await??;
    remove(&env);

    projected?;
    assert!(
        archived.iter().all(|r| r.archived_to > 1000),
        "{archived:?}"
    );
    assert_eq!(counts, expected, "every count is what the whole log says");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_archive_does_not_hold_of_a_gap_parks_the_partition_there() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    fill(&env, 200, 5, 20).await?;
    archive_everything(&env).await?;
    let archived_to = status::run(&env.stack).await?[0].archived_to;
    let archived_counts = recount(&env).await?;
    fill(&env, 200, 5, 20).await?;
    // Deleted past the archive's end: offsets archived_to..archived_to+50 are nowhere.
    delete_records_before(&env, 0, archived_to + 50).await?;
    let projector = env.start_projector();
    let filled = eventually(Duration::from_secs(60), || async {
        let stored = likes_infra::postgres::offsets::positions(&env.db, &env.stack.topic).await?;
        Ok(stored.iter().map(|p| p.1).collect::<Vec<_>>() == vec![archived_to])
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stored = likes_infra::postgres::offsets::positions(&env.db, &env.stack.topic).await?;
    let counts = live_counts(&env).await?;
    projector.stop().await??;
    remove(&env);

    filled?;
    assert_eq!(
        stored.iter().map(|p| p.1).collect::<Vec<_>>(),
        vec![archived_to],
        "the archived part is projected, nothing past the records that are nowhere"
    );
    assert_eq!(counts, archived_counts);
    Ok(())
}
