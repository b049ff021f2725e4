//! A group consumer's close is bounded and leaves nothing to revoke behind:
//! it serves the revoke of its own leaving while the group still answers, and
//! a close that does not end in time is cut off while the caller goes on.
//! librdkafka 2.12 can wait forever in a close that finds a revoke still to
//! serve (confluentinc/librdkafka#4884); a projector's stop once hung there.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use likes_domain::Position;
use likes_infra::kafka::consumer::{Closed, GroupConsumer, Rebalance};
use likes_tests::{TestEnv, eventually};

const PARTITIONS: i32 = 4;

/// What the group told a consumer.
#[derive(Default)]
struct Seen {
    assigned: Mutex<Vec<i32>>,
    revokes: AtomicUsize,
    /// The consumer let go of its hook: its close ended.
    gone: AtomicBool,
}

/// Reads every partition from the start and records what it is told; its
/// revoke waits for `release` when it has one.
struct Recording {
    seen: Arc<Seen>,
    release: Option<Mutex<Receiver<()>>>,
}

impl Recording {
    fn new() -> (Self, Arc<Seen>) {
        let seen = Arc::new(Seen::default());
        let hook = Self {
            seen: seen.clone(),
            release: None,
        };
        (hook, seen)
    }

    /// A hook whose revoke does not return until the sender says so (or a
    /// minute passes): a close that waits on it is stuck as librdkafka's was.
    fn stuck_in_revoke() -> (Self, Arc<Seen>, Sender<()>) {
        let (mut hook, seen) = Self::new();
        let (release, wait) = channel();
        hook.release = Some(Mutex::new(wait));
        (hook, seen, release)
    }
}

impl Rebalance for Recording {
    fn assigned(&self, partitions: &[i32]) -> Option<Vec<Position>> {
        if let Ok(mut assigned) = self.seen.assigned.lock() {
            *assigned = partitions.to_vec();
        }
        Some(
            partitions
                .iter()
                .map(|&partition| Position {
                    partition,
                    offset: 0,
                })
                .collect(),
        )
    }

    fn assign_failed(&self) {}

    fn revoked(&self) {
        self.seen.revokes.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut assigned) = self.seen.assigned.lock() {
            assigned.clear();
        }
        if let Some(wait) = &self.release
            && let Ok(wait) = wait.lock()
        {
            let _ = wait.recv_timeout(Duration::from_secs(60));
        }
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        self.seen.gone.store(true, Ordering::SeqCst);
    }
}

fn assigned(seen: &Seen) -> Vec<i32> {
    seen.assigned.lock().map(|a| a.clone()).unwrap_or_default()
}

/// Polls `consumer` (which serves its rebalances) until its hook holds
/// `partitions` partitions.
async fn holds(
    consumer: &GroupConsumer<Recording>,
    seen: &Seen,
    partitions: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while assigned(seen).len() != partitions {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the consumer holds {:?}, not {partitions} partitions",
            assigned(seen)
        );
        let _ = tokio::time::timeout(Duration::from_millis(100), consumer.recv()).await;
    }
    Ok(())
}

#[tokio::test]
async fn a_closing_consumer_serves_its_own_revoke_and_hands_its_partitions_to_the_group()
-> anyhow::Result<()> {
    let env = TestEnv::new(PARTITIONS).await?;
    let group = format!("close-{}", env.suffix);
    let kafka = &env.stack.kafka_bootstrap;
    let (hook, leaving_seen) = Recording::new();
    let leaving = Arc::new(GroupConsumer::subscribe(
        kafka,
        &group,
        &env.stack.topic,
        hook,
    )?);
    holds(&leaving, &leaving_seen, PARTITIONS as usize).await?;
    let (hook, staying_seen) = Recording::new();
    let staying = GroupConsumer::subscribe(kafka, &group, &env.stack.topic, hook)?;
    // The group splits the partitions between the two; both must serve it.
    let split = async {
        tokio::join!(
            holds(&leaving, &leaving_seen, 2),
            holds(&staying, &staying_seen, 2)
        )
    };
    let (left, right) = split.await;
    left?;
    right?;

    let closed = leaving.close(Duration::from_secs(10)).await;
    assert_eq!(closed, Closed::InTime);
    assert!(
        leaving_seen.gone.load(Ordering::SeqCst),
        "the close let go of the consumer and its hook"
    );
    assert_eq!(
        leaving_seen.revokes.load(Ordering::SeqCst),
        2,
        "revoked once for the split, once for leaving"
    );
    assert!(assigned(&leaving_seen).is_empty());
    // It left the group instead of being timed out of it: the one staying
    // is handed every partition.
    holds(&staying, &staying_seen, PARTITIONS as usize).await?;
    assert_eq!(
        Arc::new(staying).close(Duration::from_secs(10)).await,
        Closed::InTime
    );
    Ok(())
}

#[tokio::test]
async fn a_close_stuck_in_its_revoke_is_cut_off_at_the_bound_and_the_caller_goes_on()
-> anyhow::Result<()> {
    let env = TestEnv::new(PARTITIONS).await?;
    let group = format!("close-stuck-{}", env.suffix);
    let (hook, seen, release) = Recording::stuck_in_revoke();
    let consumer = Arc::new(GroupConsumer::subscribe(
        &env.stack.kafka_bootstrap,
        &group,
        &env.stack.topic,
        hook,
    )?);
    holds(&consumer, &seen, PARTITIONS as usize).await?;

    let bound = Duration::from_secs(3);
    let started = Instant::now();
    let closed = consumer.close(bound).await;
    let took = started.elapsed();
    // The revoke waits up to a minute; a close that waited with it would
    // still be here.
    assert!(
        took < Duration::from_secs(30),
        "the caller went on after the bound of {bound:?}, not after {took:?}"
    );
    assert_eq!(closed, Closed::CutOff);
    assert_eq!(
        seen.revokes.load(Ordering::SeqCst),
        1,
        "the close is in the revoke"
    );
    assert!(
        !seen.gone.load(Ordering::SeqCst),
        "the consumer is still in its close"
    );

    // Once the revoke returns, the close left behind ends by itself.
    release.send(())?;
    eventually(Duration::from_secs(30), || async {
        Ok(seen.gone.load(Ordering::SeqCst))
    })
    .await?;
    Ok(())
}
