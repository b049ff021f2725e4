//! The archive of the log beyond retention: once the archiver has copied a
//! partition and retention (Kafka's DeleteRecords here) deleted its start,
//! `history`, `explain`, `count --at` and `rebuild postgres --from earliest`
//! read the deleted offsets from the archive and the rest from the topic, and
//! give the answers they gave before the deletion. An archiver killed with
//! SIGKILL mid-file resumes without a gap or an overlap, and an archive file
//! reads the same with fastavro, an Avro implementation that is not ours.

use std::collections::BTreeSet;
use std::time::Duration;

use likes_domain::ItemKey;
use likes_infra::archive::Archive;
use likes_infra::codec::EventCodec;
use likes_infra::kafka::reader::TopicHandle;
use likes_replay::archive::{status, verify};
use likes_replay::commands::count;
use likes_replay::commands::explain::{self, Verdict};
use likes_replay::commands::history::{self, HistoryQuery, HistoryRow, Subject};
use likes_replay::rebuild::{self, RebuildFrom, RebuildOptions};
use likes_tests::archive::{archive_everything, fastavro_python, remove};
use likes_tests::cli::likes_replay_command;
use likes_tests::load::ITEM_TYPE;
use likes_tests::log_surgery::delete_records_before;
use likes_tests::replay::{a_moment, fill, live_counts, write_and_settle};
use likes_tests::{TestEnv, eventually};

const ITEM: i64 = 10;

async fn item_history(env: &TestEnv, item: ItemKey) -> anyhow::Result<Vec<HistoryRow>> {
    let mut rows = Vec::new();
    let query = HistoryQuery {
        subject: Subject::Item(item),
        since: None,
        until: None,
    };
    history::run(&env.stack, &query, &Default::default(), |row| {
        rows.push(row);
        Ok(())
    })
    .await?;
    Ok(rows)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_explain_count_and_rebuild_read_what_retention_deleted_from_the_archive()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let ingest = env.start_ingest().await?;
    let projector = env.start_projector();
    let item = ItemKey::parse(ITEM_TYPE.into(), ITEM)?;
    let write = |like, user| write_and_settle(&env, &ingest, like, user, ITEM);
    write(true, 1).await?;
    write(true, 2).await?;
    write(true, 1).await?; // already liked
    let at_two = a_moment().await;
    write(false, 2).await?;
    write(true, 3).await?;
    archive_everything(&env).await?;
    // One more event the archive has not seen: it will come from the topic.
    write(true, 4).await?;
    let rows_before = item_history(&env, item).await?;
    let counts_before = live_counts(&env).await?;

    // Retention: the archived records leave the topic.
    delete_records_before(&env, 0, 5).await?;
    let rows_after = item_history(&env, item).await?;
    let x = explain::run(&env.stack, item).await?;
    let mut text = Vec::new();
    explain::print(&mut text, &x, likes_replay::output::Format::Table)?;
    let now = count::run(&env.stack, item, None).await?;
    let then = count::run(&env.stack, item, Some(at_two)).await?;
    let rebuilt = rebuild::run(
        &env.stack,
        &RebuildOptions {
            accept_differences: false,
            ..RebuildOptions::new(RebuildFrom::Earliest)
        },
    )
    .await?;
    let counts_after = live_counts(&env).await?;
    let checks = verify::run(&env.stack).await?;
    projector.stop().await??;
    ingest.running.stop().await?;
    remove(&env);

    let key = |r: &HistoryRow| (r.offset, r.user_id, r.action, r.effect, r.count);
    assert_eq!(rows_before.len(), 6);
    assert_eq!(
        rows_after.iter().map(key).collect::<Vec<_>>(),
        rows_before.iter().map(key).collect::<Vec<_>>()
    );
    assert_eq!(x.log_start, 0, "archive and topic reach back to offset 0");
    assert_eq!((x.derived_count, x.stored_count), (3, Some(3)));
    assert_eq!(x.verdict, Verdict::Matches, "{x:#?}");
    assert!(x.snapshot.is_none(), "no snapshot needed");
    let read = String::from_utf8(text)?;
    assert!(
        read.contains("read: archive 0..5 (5 records), topic 5..6 (1 records)"),
        "{read}"
    );
    assert_eq!((now.count, now.events), (3, 6));
    assert_eq!((then.count, then.events), (2, 3));
    assert_eq!(
        (
            now.sources.archive[0].from,
            now.sources.archive[0].to,
            now.sources.topic[0].from
        ),
        (0, 5, 5)
    );
    assert!(rebuilt.swapped && rebuilt.events == 6, "{rebuilt:?}");
    assert_eq!(rebuilt.live_differences, 0, "{rebuilt:?}");
    let read = &rebuilt.shards[0].read;
    assert_eq!(
        read.describe(),
        "archive 0..5 (5 records), topic 5..6 (1 records)",
        "{rebuilt:?}"
    );
    assert_eq!(counts_after, counts_before);
    assert!(checks.iter().all(|c| c.problems.is_empty()), "{checks:?}");
    assert_eq!(checks[0].records, 5);
    Ok(())
}

/// Every record of the topic, decoded, per partition and offset.
async fn topic_events(env: &TestEnv) -> anyhow::Result<BTreeSet<(i32, i64, String)>> {
    let handle = TopicHandle::open(&env.stack)?;
    let partitions: Vec<i32> = (0..handle.partition_count()?).collect();
    let spans = handle.plan(&partitions, None, &Default::default())?;
    let mut reader = handle.read(&env.stack, &spans)?;
    let mut all = BTreeSet::new();
    while let Some(r) = reader.next().await? {
        all.insert((r.partition, r.offset, format!("{:?}", r.event)));
    }
    Ok(all)
}

/// Every record of the archive, decoded, per partition and offset.
async fn archived_events(env: &TestEnv) -> anyhow::Result<BTreeSet<(i32, i64, String)>> {
    let archive = Archive::open(&env.stack.archive_url, &env.stack.topic)?;
    let codec = EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?;
    let mut all = BTreeSet::new();
    let partitions = TopicHandle::open(&env.stack)?.partition_count()?;
    for p in 0..partitions {
        for name in archive.coverage(p).await?.files {
            for r in archive.read(p, name).await?.records {
                let event = codec.decode_event(r.payload.as_deref()).await;
                let event = event.map_err(|e| e.to_string());
                anyhow::ensure!(
                    all.insert((p, r.offset, format!("{event:?}"))),
                    "offset {} of partition {p} archived twice",
                    r.offset
                );
            }
        }
    }
    Ok(all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archiver_killed_mid_file_resumes_without_a_gap_or_an_overlap() -> anyhow::Result<()> {
    let env = TestEnv::new(3).await?;
    let start = || -> anyhow::Result<tokio::process::Child> {
        let mut command = likes_replay_command(&env, &["archive", "run"])?;
        command
            .env("ARCHIVE_ROLL_SECONDS", "1")
            .env("ARCHIVE_ROLL_BYTES", "4096")
            .env("ARCHIVE_METRICS_ADDR", "127.0.0.1:0")
            .stdout(std::process::Stdio::null());
        Ok(command.spawn()?)
    };
    let mut first = start()?;
    let filling = fill(&env, 6000, 40, 200);
    let killing = async {
        // SIGKILL once some files are complete and the next ones are open.
        eventually(Duration::from_secs(60), || async {
            let rows = status::run(&env.stack).await?;
            Ok(rows.iter().map(|r| r.files).sum::<usize>() >= 6)
        })
        .await?;
        first.kill().await?;
        anyhow::Ok(())
    };
    let (filled, killed) = tokio::join!(filling, killing);
    filled?;
    killed?;
    let before_restart = status::run(&env.stack).await?;
    let mut second = start()?;
    let caught_up = eventually(Duration::from_secs(90), || async {
        let rows = status::run(&env.stack).await?;
        Ok(rows.iter().all(|r| r.archived_to == r.topic_end))
    })
    .await;
    second.kill().await?;
    caught_up?;
    let checks = verify::run(&env.stack).await?;
    let verified = likes_replay_command(&env, &["archive", "verify"])?
        .output()
        .await?;
    let archived = archived_events(&env).await?;
    let topic = topic_events(&env).await?;
    remove(&env);

    let archived_before: i64 = before_restart.iter().map(|r| r.archived_to).sum();
    let end: i64 = before_restart.iter().map(|r| r.topic_end).sum();
    assert!(
        archived_before < end,
        "the kill came before the end: {archived_before} of {end} archived"
    );
    assert!(checks.iter().all(|c| c.problems.is_empty()), "{checks:?}");
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stdout)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("3 of 3 partitions clean"));
    assert_eq!(archived.len(), topic.len());
    assert!(archived == topic, "the archive holds the topic's records");
    Ok(())
}

const READ_WITH_FASTAVRO: &str = r#"
import json, sys
from fastavro import reader
for path in sys.argv[1:]:
    with open(path, "rb") as f:
        for r in reader(f):
            e = r["event"]
            print(json.dumps({"offset": r["offset"], "event_id": str(e["event_id"]),
                              "user_id": e["user_id"], "item_id": e["item_id"],
                              "action": e["action"], "schema_id": r["schema_id"]}))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_file_reads_the_same_with_fastavro_as_history() -> anyhow::Result<()> {
    let python = fastavro_python().await?;
    let env = TestEnv::new(1).await?;
    fill(&env, 300, 4, 30).await?;
    archive_everything(&env).await?;
    let archive = Archive::open(&env.stack.archive_url, &env.stack.topic)?;
    let files: Vec<String> = archive
        .coverage(0)
        .await?
        .files
        .iter()
        .map(|f| format!("{}/{}", env.stack.archive_url, archive.path(0, *f)))
        .collect();
    let read = tokio::process::Command::new(&python)
        .args(["-c", READ_WITH_FASTAVRO])
        .args(&files)
        .output()
        .await?;
    let mut from_history = Vec::new();
    for item in 1..=4 {
        from_history.extend(item_history(&env, ItemKey::parse(1, item)?).await?);
    }
    remove(&env);

    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let mut seen: Vec<(i64, String, i64, i64, String)> = String::from_utf8(read.stdout)?
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line)?;
            Ok((
                v["offset"].as_i64().unwrap_or(-1),
                v["event_id"].as_str().unwrap_or("").to_string(),
                v["user_id"].as_i64().unwrap_or(-1),
                v["item_id"].as_i64().unwrap_or(-1),
                v["action"].as_str().unwrap_or("").to_string(),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut expected: Vec<(i64, String, i64, i64, String)> = from_history
        .iter()
        .map(|r| {
            (
                r.offset,
                r.event_id.clone(),
                r.user_id,
                r.item_id,
                format!("{:?}", r.action).to_uppercase(),
            )
        })
        .collect();
    seen.sort();
    expected.sort();
    assert!(!files.is_empty());
    assert!(expected.len() >= 300, "{}", expected.len());
    assert_eq!(seen, expected);
    Ok(())
}
