//! An idle producer costs nothing: the polling thread rdkafka runs for every
//! producer (the ingest's publisher, the dead-letter writer) waits for the
//! broker's answers instead of spinning. Before `vendor/rdkafka`'s patch it
//! burned the last fraction of a millisecond of each 100 ms poll in a busy
//! loop, about 1 % of a core per producer, idle or not (vendor/README.md).
//! Its own test binary, so the only producer in the process is this one.

use std::collections::HashSet;
use std::time::Duration;

use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use likes_tests::TestEnv;

/// The name rdkafka gives the thread, as `/proc` shows it (15 bytes).
const POLLING_THREAD: &str = "producer pollin";
/// How long the producer is watched idle.
const IDLE: Duration = Duration::from_secs(10);
/// The CPU the polling thread may use while idle, in clock ticks (USER_HZ,
/// 100 a second on Linux): 30 ms in 10 s. The spinning thread used 90 ms
/// (9 ticks) in 10 s; a thread that only waits uses none.
const MOST_TICKS: u64 = 3;

fn threads() -> anyhow::Result<HashSet<u32>> {
    let mut ids = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/task")? {
        if let Some(id) = entry?.file_name().to_str().and_then(|s| s.parse().ok()) {
            ids.insert(id);
        }
    }
    Ok(ids)
}

/// A thread's name and its user + system CPU ticks so far.
fn thread_cpu(id: u32) -> anyhow::Result<(String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{id}/stat"))?;
    // "tid (comm) state ...": the name may hold spaces, so split at the last ')'.
    let (head, rest) = stat
        .rsplit_once(')')
        .ok_or_else(|| anyhow::anyhow!("unexpected stat line {stat:?}"))?;
    let name = head
        .split_once('(')
        .map(|(_, name)| name.to_string())
        .unwrap_or_default();
    // After the name: state is field 3, utime 14 and stime 15 of the line.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields
            .get(i - 3)
            .ok_or_else(|| anyhow::anyhow!("short stat line {stat:?}"))?
            .parse()?)
    };
    Ok((name, ticks(14)? + ticks(15)?))
}

#[tokio::test]
async fn an_idle_producer_s_polling_thread_waits_instead_of_spinning() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let before = threads()?;
    let publisher = env.publisher().await?;
    // One acked like: the producer is connected and has polled an answer.
    let like = LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(1)?,
        item: ItemKey::parse(1, 1)?,
        action: Action::Like,
        timestamp: chrono::Utc::now(),
    };
    publisher.publish(&like).await?;

    let mut polling = Vec::new();
    for id in threads()?.difference(&before) {
        if let Ok((name, _)) = thread_cpu(*id)
            && name == POLLING_THREAD
        {
            polling.push(*id);
        }
    }
    let [thread] = polling[..] else {
        anyhow::bail!("expected the publisher's one polling thread, found {polling:?}");
    };
    let (_, start) = thread_cpu(thread)?;
    tokio::time::sleep(IDLE).await;
    let (_, end) = thread_cpu(thread)?;
    assert!(
        end - start <= MOST_TICKS,
        "the idle polling thread used {} ticks in {IDLE:?}",
        end - start
    );
    drop(publisher);
    drop(env);
    Ok(())
}
