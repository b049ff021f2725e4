//! The projector's per-batch span is its own: while a batch waits on
//! PostgreSQL or Redis, other tasks on the same worker thread do not find it
//! as their current span. A span entered with a guard across an await stays
//! on the thread's span stack for whatever task runs there next: those tasks'
//! spans and logs are filed under the wrong batch, and once the batch span
//! closes, tracing-subscriber panics the worker ("tried to clone a span that
//! already closed", tokio-rs/tracing#3514), which took down an ingest lookup
//! in a test run that shared a process with a projector.
//!
//! A current-thread runtime makes it deterministic: every task shares the one
//! thread, so a probe task polled while a batch is parked at an await sees
//! exactly what a neighbour on a worker thread would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use likes_tests::TestEnv;
use likes_tests::timed_records::{TimedProducer, like_event, now_millis};
use tracing::span::{Attributes, Id};
use tracing::{Subscriber, info_span};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// Records the parent of every span named `probe`.
#[derive(Clone, Default)]
struct ProbeParents(Arc<Mutex<Vec<Option<String>>>>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for ProbeParents {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "probe" {
            return;
        }
        let parent = ctx
            .span(id)
            .and_then(|span| span.parent().map(|p| p.name().to_string()));
        if let Ok(mut parents) = self.0.lock() {
            parents.push(parent);
        }
    }
}

#[tokio::test]
async fn tasks_beside_a_committing_batch_are_not_filed_under_its_span() -> anyhow::Result<()> {
    const ITEMS: i64 = 20;
    const USERS: i64 = 10;
    let parents = ProbeParents::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(parents.clone()))?;

    let env = TestEnv::new(2).await?;
    let producer = TimedProducer::new(&env)?;
    let projector = env.start_projector();
    let probing = Arc::new(AtomicBool::new(true));
    let probe = tokio::spawn({
        let probing = probing.clone();
        async move {
            while probing.load(Ordering::Relaxed) {
                drop(info_span!("probe"));
                tokio::task::yield_now().await;
            }
        }
    });

    // Several rounds, so several batches commit while the probe runs.
    for user in 1..=USERS {
        for item in 1..=ITEMS {
            producer
                .send(&like_event(user, item, true)?, now_millis())
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    env.projected_everything(Duration::from_secs(60)).await?;
    for item in 1..=ITEMS {
        assert_eq!(env.db_count(1, item).await?, USERS, "item {item}");
        assert_eq!(env.redis_count(1, item).await?, Some(USERS), "item {item}");
    }
    probing.store(false, Ordering::Relaxed);
    probe.await?;
    projector.stop().await??;

    let parents = parents
        .0
        .lock()
        .map_err(|_| anyhow::anyhow!("probe layer poisoned"))?
        .clone();
    assert!(
        parents.len() > 100,
        "the probe ran: {} spans",
        parents.len()
    );
    let under_batch = parents
        .iter()
        .filter(|p| p.as_deref() == Some("batch"))
        .count();
    assert_eq!(
        under_batch,
        0,
        "{under_batch} of {} probe spans had the projector's batch span as parent",
        parents.len()
    );
    Ok(())
}
