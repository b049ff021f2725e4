//! `likes-replay` on a projection sharded by partition (4 partitions on 2
//! shards: partitions 0-1 on shard 0, 2-3 on shard 1): each shard holds exactly
//! its partitions' rows and offsets, a rebuild of one shard leaves the other
//! alone, a snapshot is one id with one part per shard, every report names the
//! item's shard, and a tool run with the shards listed in another order refuses.
//!
//! The live rows are written by infra's batch writer per shard
//! (`likes_tests::shard_writer`), the projector's own commit path.

use std::collections::BTreeMap;

use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use likes_infra::kafka::partitioner::partition_for_item;
use likes_tests::TestEnv;
use likes_tests::cli::{likes_replay, likes_replay_command, output};
use likes_tests::shard_writer::{project_log, publish, stored_offsets};
use serde_json::Value;

const PARTITIONS: i32 = 4;

fn event(user: i64, item: i64, action: Action) -> anyhow::Result<LikeEvent> {
    Ok(LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(user)?,
        item: ItemKey::parse(1, item)?,
        action,
        timestamp: chrono::Utc::now(),
    })
}

/// Two items on each shard: `[shard 0's, shard 1's]`.
fn items_by_shard(env: &TestEnv) -> [[i64; 2]; 2] {
    let mut found: [Vec<i64>; 2] = [Vec::new(), Vec::new()];
    for item in 1.. {
        let shard = env.shards.for_item(item).0;
        if found[shard].len() < 2 {
            found[shard].push(item);
        }
        if found.iter().all(|f| f.len() == 2) {
            break;
        }
    }
    [[found[0][0], found[0][1]], [found[1][0], found[1][1]]]
}

/// The events of the tests: on shard 0, item a counts 2 (3 likes, 1 unlike)
/// and item b 1; on shard 1, item c counts 2 and item d 1 (like, unlike, like
/// by another user). Returns the expected counts per shard and the events.
/// Per shard (index), item id → count.
type PerShard = Vec<BTreeMap<i64, i64>>;

fn likes(items: [[i64; 2]; 2]) -> anyhow::Result<(PerShard, Vec<LikeEvent>)> {
    let [[a, b], [c, d]] = items;
    let events = vec![
        event(1, a, Action::Like)?,
        event(2, a, Action::Like)?,
        event(3, a, Action::Like)?,
        event(2, a, Action::Unlike)?,
        event(1, b, Action::Like)?,
        event(1, c, Action::Like)?,
        event(2, c, Action::Like)?,
        event(4, d, Action::Like)?,
        event(4, d, Action::Unlike)?,
        event(5, d, Action::Like)?,
    ];
    let expected = vec![
        BTreeMap::from([(a, 2), (b, 1)]),
        BTreeMap::from([(c, 2), (d, 1)]),
    ];
    Ok((expected, events))
}

/// Every row of `counters` on `shard`: item id → count.
async fn counters(env: &TestEnv, shard: usize) -> anyhow::Result<BTreeMap<i64, i64>> {
    let rows: Vec<(i64, i64)> = sqlx::query_as("SELECT item_id, count FROM counters")
        .fetch_all(env.shards.pool(shard))
        .await?;
    Ok(rows.into_iter().collect())
}

/// `COUNT(*)` of `user_likes` on `shard` per item.
async fn likers(env: &TestEnv, shard: usize) -> anyhow::Result<BTreeMap<i64, i64>> {
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT item_id, COUNT(*) FROM user_likes GROUP BY item_id")
            .fetch_all(env.shards.pool(shard))
            .await?;
    Ok(rows.into_iter().collect())
}

/// The log's end per partition.
fn ends(env: &TestEnv) -> anyhow::Result<BTreeMap<i32, i64>> {
    let handle = likes_infra::kafka::reader::TopicHandle::open(&env.stack)?;
    (0..PARTITIONS)
        .map(|p| Ok((p, handle.watermarks(p)?.1)))
        .collect()
}

/// A sharded slice with the likes projected on both shards.
async fn projected() -> anyhow::Result<(TestEnv, [[i64; 2]; 2], PerShard)> {
    let env = TestEnv::sharded(PARTITIONS, 2).await?;
    let items = items_by_shard(&env);
    let (expected, events) = likes(items)?;
    publish(&env, &events).await?;
    project_log(&env).await?;
    Ok((env, items, expected))
}

fn json(out: &std::process::Output) -> anyhow::Result<Value> {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| {
        anyhow::anyhow!(
            "{e}: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_of_one_shard_rebuilds_its_partitions_only_and_leaves_the_other_shard_alone()
-> anyhow::Result<()> {
    let (env, [[a, _], [c, d]], expected) = projected().await?;
    let ends = ends(&env)?;
    // Each shard holds exactly its items and the offsets of exactly its partitions.
    for (shard, own) in expected.iter().enumerate() {
        assert_eq!(&counters(&env, shard).await?, own, "shard {shard}");
        assert_eq!(&likers(&env, shard).await?, own, "shard {shard}");
    }
    let offsets = stored_offsets(&env).await?;
    let own = |range: std::ops::Range<i32>| -> std::collections::HashMap<i32, i64> {
        range.map(|p| (p, ends[&p])).collect()
    };
    assert_eq!(offsets, vec![own(0..2), own(2..4)]);

    // Wrong values on both shards: a count on shard 0, a count and a lost row on shard 1.
    sqlx::query("UPDATE counters SET count = 99 WHERE item_id = $1")
        .bind(a)
        .execute(env.shards.pool(0))
        .await?;
    let (before,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT updated_at FROM counters WHERE item_id = $1")
            .bind(a)
            .fetch_one(env.shards.pool(0))
            .await?;
    sqlx::query("UPDATE counters SET count = 50 WHERE item_id = $1")
        .bind(c)
        .execute(env.shards.pool(1))
        .await?;
    sqlx::query("DELETE FROM user_likes WHERE item_id = $1")
        .bind(d)
        .execute(env.shards.pool(1))
        .await?;

    let one = likes_replay(
        &env,
        &[
            "rebuild",
            "postgres",
            "--shard",
            "1",
            "--accept-differences",
            "--format",
            "json",
        ],
    )
    .await?;
    let report = json(&one)?;
    println!("rebuild --shard 1: {report}");
    assert!(one.status.success(), "{report}");
    assert_eq!(report["swapped"], true);
    let shards = report["shards"].as_array().cloned().unwrap_or_default();
    assert_eq!(shards.len(), 1, "{report}");
    assert_eq!(shards[0]["shard"], 1);
    assert_eq!(shards[0]["partitions"], "2-3");
    assert_eq!(
        shards[0]["events"], 5,
        "the 5 events of partitions 2-3 only"
    );
    assert_eq!(
        shards[0]["live_differences"], 1,
        "item c (50 live, 2 rebuilt)"
    );
    assert_eq!(counters(&env, 1).await?, expected[1]);
    assert_eq!(likers(&env, 1).await?, expected[1]);
    let (after,): (chrono::DateTime<chrono::Utc>,) =
        sqlx::query_as("SELECT updated_at FROM counters WHERE item_id = $1")
            .bind(a)
            .fetch_one(env.shards.pool(0))
            .await?;
    assert_eq!(
        (counters(&env, 0).await?[&a], after),
        (99, before),
        "shard 0 untouched"
    );

    // Every shard at once, in text: each line says its shard.
    let all = likes_replay(&env, &["rebuild", "postgres", "--accept-differences"]).await?;
    let text = String::from_utf8_lossy(&all.stdout);
    println!("rebuild (all shards):\n{text}");
    assert!(all.status.success(), "{text}");
    assert!(
        text.contains("shard 0 (partitions 0-1): read 5 events")
            && text.contains("shard 1 (partitions 2-3): read 5 events")
            && text.contains("all 2 shards: read 10 events"),
        "{text}"
    );
    for (shard, own) in expected.iter().enumerate() {
        assert_eq!(&counters(&env, shard).await?, own, "shard {shard}");
        assert_eq!(&likers(&env, shard).await?, own, "shard {shard}");
    }
    assert_eq!(stored_offsets(&env).await?, vec![own(0..2), own(2..4)]);

    let beyond = likes_replay(&env, &["rebuild", "postgres", "--shard", "2"]).await?;
    let said = String::from_utf8_lossy(&beyond.stderr);
    assert!(!beyond.status.success());
    assert!(
        said.contains("--shard 2") && said.contains("0 to 1"),
        "{said}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_is_one_id_with_a_part_per_shard_holding_its_partitions_offsets()
-> anyhow::Result<()> {
    let (env, [[a, _], [c, _]], expected) = projected().await?;
    let ends = ends(&env)?;

    let created = likes_replay(&env, &["snapshot", "create", "--format", "json"]).await?;
    let snapshot = json(&created)?;
    println!("snapshot create: {snapshot}");
    let id = snapshot["id"].as_i64().unwrap_or_default();
    assert_eq!(snapshot["complete"], true);
    assert_eq!(
        (snapshot["counters"].as_i64(), snapshot["events"].as_i64()),
        (Some(4), Some(10))
    );
    let parts: Vec<(i64, String)> = snapshot["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["shard"].as_i64().unwrap_or(-1),
                p["partitions"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        vec![(0, "\"0-1\"".to_string()), (1, "\"2-3\"".to_string())]
    );
    for (shard, range) in [(0, 0..2), (1, 2..4)] {
        let pool = env.shards.pool(shard);
        let offsets: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT partition, next_offset FROM snapshot_offsets WHERE snapshot_id = $1 ORDER BY 1",
        )
        .bind(id)
        .fetch_all(pool)
        .await?;
        let own: Vec<(i32, i64)> = range.map(|p| (p, ends[&p])).collect();
        assert_eq!(offsets, own, "shard {shard}'s part");
        let copied: Vec<(i64, i64)> =
            sqlx::query_as("SELECT item_id, count FROM snapshot_counters WHERE snapshot_id = $1")
                .bind(id)
                .fetch_all(pool)
                .await?;
        assert_eq!(
            copied.into_iter().collect::<BTreeMap<_, _>>(),
            expected[shard]
        );
    }
    let shown = likes_replay(&env, &["snapshot", "show", &id.to_string()]).await?;
    let text = String::from_utf8_lossy(&shown.stdout);
    println!("snapshot show:\n{text}");
    assert!(
        text.contains("complete (2 of 2 shards)")
            && text.contains("shard 1 (partitions 2-3)")
            && text.contains(&format!("offsets 2:{} 3:{}", ends[&2], ends[&3])),
        "{text}"
    );

    // More likes on both shards, projected; a rebuild from the snapshot reads
    // only what came after it, shard by shard, and gives the same counts.
    publish(
        &env,
        &[event(7, a, Action::Like)?, event(7, c, Action::Like)?],
    )
    .await?;
    project_log(&env).await?;
    let from = format!("snapshot:{id}");
    let rebuilt = likes_replay(
        &env,
        &["rebuild", "postgres", "--from", &from, "--format", "json"],
    )
    .await?;
    let report = json(&rebuilt)?;
    assert!(rebuilt.status.success(), "{report}");
    let read: Vec<(i64, i64, i64)> = report["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["shard"].as_i64().unwrap_or(-1),
                s["events"].as_i64().unwrap_or(-1),
                s["live_differences"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(read, vec![(0, 1, 0), (1, 1, 0)], "{report}");
    assert_eq!(counters(&env, 0).await?[&a], 3);
    assert_eq!(counters(&env, 1).await?[&c], 3);

    // A part missing (a create killed half-way) is seen and never built on.
    sqlx::query("DELETE FROM snapshots WHERE id = $1")
        .bind(id)
        .execute(env.shards.pool(1))
        .await?;
    let listed = likes_replay(&env, &["snapshot", "list"]).await?;
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("0 (incomplete: no part on 1)"), "{text}");
    let refused = likes_replay(&env, &["rebuild", "postgres", "--from", &from]).await?;
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        said.contains(&format!("snapshot {id} is incomplete: shard 1")),
        "{said}"
    );
    let deleted = likes_replay(&env, &["snapshot", "delete", &id.to_string()]).await?;
    assert_eq!(
        String::from_utf8_lossy(&deleted.stdout).trim(),
        format!("snapshot {id} deleted (shard 0)")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_explain_and_count_name_the_items_shard_and_a_reordered_list_is_refused()
-> anyhow::Result<()> {
    let (env, [[a, _], [c, d]], _) = projected().await?;
    // A count on shard 1 that its user_likes do not back.
    sqlx::query("UPDATE counters SET count = 7 WHERE item_id = $1")
        .bind(d)
        .execute(env.shards.pool(1))
        .await?;

    let verified = likes_replay(&env, &["verify", "--format", "json"]).await?;
    let report = json(&verified)?;
    println!("verify: {report}");
    assert_eq!(verified.status.code(), Some(2), "drift remains");
    let per_shard: Vec<(i64, String, i64, i64)> = report["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["shard"].as_i64().unwrap_or(-1),
                s["partitions"].as_str().unwrap_or_default().to_string(),
                s["checked"].as_i64().unwrap_or(-1),
                s["counters_drift"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        per_shard,
        vec![(0, "0-1".into(), 2, 0), (1, "2-3".into(), 2, 1)]
    );
    let drift = &report["drift"][0];
    assert_eq!(
        (
            &drift["shard"],
            &drift["item_id"],
            &drift["counters"],
            &drift["likers"]
        ),
        (
            &Value::from(1),
            &Value::from(d),
            &Value::from(7),
            &Value::from(1)
        )
    );

    let explained =
        likes_replay(&env, &["explain", "1", &c.to_string(), "--format", "json"]).await?;
    let x = json(&explained)?;
    assert!(explained.status.success(), "{x}");
    assert_eq!(
        (
            &x["shard"],
            &x["partition"],
            &x["derived_count"],
            &x["stored_count"],
            &x["verdict"]
        ),
        (
            &Value::from(1),
            &Value::from(partition_for_item(c, PARTITIONS)),
            &Value::from(2),
            &Value::from(2),
            &Value::from("matches")
        )
    );
    let text = likes_replay(&env, &["explain", "1", &a.to_string()]).await?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "partition {}  shard 0",
            partition_for_item(a, PARTITIONS)
        )) && text.contains("on shard 0: matches"),
        "{text}"
    );
    let counted = likes_replay(&env, &["count", "1", &a.to_string(), "--format", "json"]).await?;
    let n = json(&counted)?;
    assert_eq!(
        (&n["shard"], &n["count"]),
        (&Value::from(0), &Value::from(2))
    );

    // The same shards listed the other way round: every command refuses.
    let reversed: Vec<String> = env.stack.database_urls.iter().rev().cloned().collect();
    for args in [
        &["verify"][..],
        &["explain", "1", &a.to_string()][..],
        &["rebuild", "postgres"][..],
        &["snapshot", "list"][..],
        &["rebuild", "redis"][..],
    ] {
        let mut command = likes_replay_command(&env, args)?;
        command.env("DATABASE_URLS", reversed.join(","));
        let refused = output(command).await?;
        let said = String::from_utf8_lossy(&refused.stderr);
        assert_eq!(refused.status.code(), Some(1), "{args:?}: {said}");
        assert!(
            said.contains("was set up as shard") && said.contains("check DATABASE_URLS"),
            "{args:?}: {said}"
        );
    }
    assert_eq!(counters(&env, 1).await?[&d], 7, "nothing rebuilt");
    Ok(())
}
