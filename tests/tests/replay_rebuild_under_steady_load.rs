//! A `rebuild postgres` while likes flow at a steady rate: the swap holds the
//! projector's offset rows only for a bounded tail, the projector's commits go
//! on around it (their gaps are measured and printed, not asserted), and every
//! count afterwards is exactly the log's, in PostgreSQL and in Redis.

use std::time::{Duration, Instant};

use likes_replay::rebuild::{self, RebuildFrom, RebuildOptions};
use likes_tests::TestEnv;
use likes_tests::commit_gaps::{CommitGaps, longest_gap};
use likes_tests::load::{ITEM_TYPE, Load};
use likes_tests::replay::{fill, live_counts, recount};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_under_a_steady_stream_of_likes_swaps_in_exact_counts_and_the_projector_keeps_committing()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    fill(&env, 20_000, 200, 2_000).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    env.projected_everything(Duration::from_secs(120)).await?;
    let items: Vec<i64> = (1001..=1005).collect();
    let load = Load {
        users: 20,
        items: items.clone(),
        pace: Duration::from_millis(10),
        give_up_after: Duration::from_secs(60),
    }
    .start(&ingest.url(""));
    let watch = CommitGaps::start(&env.db, &env.stack.topic);
    load.wait_for_requests(200).await;
    tokio::time::sleep(Duration::from_secs(3)).await; // a baseline of undisturbed commits

    let before = Instant::now();
    let done = rebuild::run(&env.stack, &RebuildOptions::new(RebuildFrom::Earliest)).await?;
    let after = Instant::now();

    load.wait_for_requests(200).await; // the projector keeps committing into the new tables
    let ledger = load.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let commits = watch.stop().await?;
    env.projected_everything(Duration::from_secs(120)).await?;
    projector.stop().await??;
    ingest.running.stop().await?;
    let first = commits.first().copied().unwrap_or(before);
    eprintln!(
        "rebuild: {} events, {} in the locked tail, {:.1} s; projector commits seen: {}; longest gap \
         between commits before the rebuild {:?}, during it (swap included) {:?}",
        done.events,
        done.tail_events,
        (after - before).as_secs_f64(),
        commits.len(),
        longest_gap(&commits, first, before),
        longest_gap(&commits, before, after + Duration::from_secs(2)),
    );
    assert!(done.swapped, "{done:?}");
    assert_eq!(
        (done.live_differences, done.inconsistent),
        (0, 0),
        "{:?}",
        done.listed_differences
    );
    assert!(
        done.tail_events <= 5_000,
        "the tail under the lock is bounded: {done:?}"
    );
    // Under the lock only the tail's items are compared again, never the
    // whole tables: what is checked there follows the tail, not the data.
    let in_tables = live_counts(&env).await?.len();
    eprintln!(
        "{} items checked again under the lock ({} items in the tables, tail {} events)",
        done.locked_items_checked, in_tables, done.tail_events
    );
    assert!(
        done.locked_items_checked <= done.tail_events.max(1)
            && (done.locked_items_checked as usize) < in_tables,
        "{done:?}"
    );
    assert_eq!(ledger.unresolved, 0);
    assert_eq!(
        live_counts(&env).await?,
        recount(&env).await?,
        "PostgreSQL = the log"
    );
    for (item, expected) in ledger.expected_counts(&items) {
        assert_eq!(
            env.db_count(ITEM_TYPE, item).await?,
            expected,
            "item {item}"
        );
        assert_eq!(
            env.redis_count(ITEM_TYPE, item).await?.unwrap_or(0),
            expected,
            "item {item} in Redis"
        );
    }
    Ok(())
}
