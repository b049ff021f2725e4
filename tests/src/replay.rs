//! Helpers for the replay tests: filling a test topic fast through the
//! product's publisher (with retries of the same event id far apart), recounting
//! the topic with the reference model, reading the projection tables whole, and
//! running the real `likes-replay` binary as a child process that can be killed.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use futures::future::try_join_all;
use likes_domain::{Action, EventId, ItemKey, LikeEvent, Projection, UserId};
use likes_infra::kafka::reader::TopicHandle;
use tokio::process::{Child, Command};

use crate::process::binary;
use crate::{Ingest, TestEnv};

/// Events published concurrently; chunks are published one after the other,
/// so events in different chunks keep their order in the log.
const CHUNK: usize = 1000;

/// Publishes `events` random likes and unlikes of `items` by `users` (item
/// type 1), plus, every few chunks, a like that is unliked a chunk later and
/// then delivered again (same event id) many chunks later: counted twice only
/// by a rebuild that forgets ids within the dedup horizon.
pub async fn fill(env: &TestEnv, events: usize, items: i64, users: i64) -> anyhow::Result<()> {
    let publisher = env.publisher().await?;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let chunks = events.div_ceil(CHUNK);
    let mut plan: Vec<Vec<LikeEvent>> = vec![Vec::new(); chunks + 12];
    for (c, chunk) in plan.iter_mut().enumerate().take(chunks) {
        for _ in 0..CHUNK.min(events - c * CHUNK) {
            let r = next();
            chunk.push(event(
                (r >> 8) as i64 % users + 1,
                (r >> 32) as i64 % items + 1,
                !r.is_multiple_of(4),
            )?);
        }
    }
    for c in (0..chunks).step_by(4) {
        // A user of its own, so nothing else moves this pair in between.
        let like = event(users + 1 + c as i64, c as i64 % items + 1, true)?;
        let unlike = event(users + 1 + c as i64, c as i64 % items + 1, false)?;
        plan[c].push(like.clone());
        plan[c + 1].push(unlike);
        plan[c + 11].push(like);
    }
    for chunk in plan.iter().filter(|c| !c.is_empty()) {
        try_join_all(chunk.iter().map(|e| publisher.publish(e)))
            .await
            .map_err(|e| anyhow::anyhow!("publish: {e:?}"))?;
    }
    Ok(())
}

fn event(user: i64, item: i64, like: bool) -> anyhow::Result<LikeEvent> {
    Ok(LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(user)?,
        item: ItemKey::parse(1, item)?,
        action: if like { Action::Like } else { Action::Unlike },
        timestamp: chrono::Utc::now(),
    })
}

/// A full recount: every event of the topic, in log order per partition,
/// through the reference model. Returns each item's count (zeros left out).
pub async fn recount(env: &TestEnv) -> anyhow::Result<BTreeMap<(i16, i64), i64>> {
    let handle = TopicHandle::open(&env.stack)?;
    let partitions: Vec<i32> = (0..handle.partition_count()?).collect();
    let spans = handle.plan(&partitions, None, &Default::default())?;
    let mut reader = handle.read(&env.stack, &spans)?;
    let mut model = Projection::default();
    while let Some(record) = reader.next().await? {
        model.apply(&record.event.map_err(anyhow::Error::msg)?);
    }
    Ok(model
        .counts()
        .map(|(item, n)| ((item.item_type.get() as i16, item.item_id.get()), n))
        .collect())
}

/// Both live tables, whole and ordered: (item_type, item_id, count, last_offset)
/// and (item_type, item_id, user_id, event_id).
pub type Rows = (Vec<(i16, i64, i64, i64)>, Vec<(i16, i64, i64, uuid::Uuid)>);

/// The live projection tables as they are now.
pub async fn live_rows(env: &TestEnv) -> anyhow::Result<Rows> {
    let counters =
        sqlx::query_as("SELECT item_type, item_id, count, last_offset FROM counters ORDER BY 1, 2")
            .fetch_all(&env.db)
            .await?;
    let likes = sqlx::query_as(
        "SELECT item_type, item_id, user_id, event_id FROM user_likes ORDER BY 1, 2, 3",
    )
    .fetch_all(&env.db)
    .await?;
    Ok((counters, likes))
}

/// Every non-zero count of `counters`.
pub async fn live_counts(env: &TestEnv) -> anyhow::Result<BTreeMap<(i16, i64), i64>> {
    let rows: Vec<(i16, i64, i64)> =
        sqlx::query_as("SELECT item_type, item_id, count FROM counters WHERE count <> 0")
            .fetch_all(&env.db)
            .await?;
    Ok(rows.into_iter().map(|(t, i, n)| ((t, i), n)).collect())
}

/// `likes-replay` running as its own OS process on this test's slice.
pub struct ReplayProcess {
    child: Child,
}

impl ReplayProcess {
    /// Starts `likes-replay <args>` (build it first: `cargo build -p likes-replay`).
    pub fn start(env: &TestEnv, args: &[&str]) -> anyhow::Result<Self> {
        let log = std::fs::File::create(
            std::env::temp_dir().join(format!("likes-replay-{}.log", env.suffix)),
        )?;
        let mut command = Command::new(binary("likes-replay")?);
        crate::process::service_env(&mut command, env);
        let child = command
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child })
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// SIGKILL: no shutdown path runs, whatever the rebuild was doing.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// Posts one like (or unlike) of `item` by `user` through the API and waits
/// until the projector has applied everything on the topic.
pub async fn write_and_settle(
    env: &TestEnv,
    ingest: &Ingest,
    like: bool,
    user: i64,
    item: i64,
) -> anyhow::Result<()> {
    let path = if like { "/v1/likes" } else { "/v1/unlikes" };
    let response = reqwest::Client::new()
        .post(ingest.url(path))
        .json(&serde_json::json!({"user_id": user, "item_id": item, "item_type": crate::load::ITEM_TYPE}))
        .send()
        .await?;
    anyhow::ensure!(response.status() == 202, "{}", response.text().await?);
    env.projected_everything(Duration::from_secs(60)).await
}

/// A time strictly between the records before it and those after (snapshot
/// and record times are micro- and milliseconds).
pub async fn a_moment() -> chrono::DateTime<chrono::Utc> {
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(5)).await;
    t
}

/// The live and shadow projection tables in the test's schema, by name.
pub async fn tables(env: &TestEnv) -> anyhow::Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = current_schema()
         AND tablename LIKE ANY (ARRAY['user_likes%', 'counters%']) ORDER BY 1",
    )
    .fetch_all(&env.db)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}
