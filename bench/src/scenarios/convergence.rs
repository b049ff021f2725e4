//! Scenario 4: convergence, the time from a like's 202 to its count being
//! visible in Redis (the cache key's offset stamp reaching the like's offset),
//! at a sustained single-like rate with the projector running. Baseline: the
//! floor any projection has, the time from the 202 to a bare consumer that
//! assigned every partition at its end reading the same record.
//!
//! Every like comes from a fresh user, so each one changes its item's count
//! and moves the item's stamp (a like that changes nothing stamps nothing).
//! A last round runs the Kafka Streams peer instead of our projector at the
//! same rate ([`super::peer_convergence`]).

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use hyper::Method;
use likes_infra::kafka;
use likes_infra::redis::Redis;
use likes_infra::redis::counts::{self, parse_stamped};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::env::BenchEnv;
use crate::http::{self, Answer, Call, Http};
use crate::keys::{ITEM_TYPE, Keys, like_body};
use crate::load::{histogram, ms_at};
use crate::report::{Report, Row};
use crate::scenarios::Config;

const NAME: &str = "4 convergence";
/// How often the watcher reads the stamps of the likes it waits for.
const POLL: Duration = Duration::from_millis(5);
/// Every how many requests one is watched.
const EVERY: u64 = 4;

/// The projector windows measured: the product's 1-second batches, and a
/// shorter window for operators who trade statements per second for freshness.
const WINDOWS_MS: [u64; 2] = [1000, 250];

/// Runs scenario 4 at `rate` likes/s, once per projector window.
pub async fn convergence(cfg: &Config, report: &mut Report, rate: f64) -> anyhow::Result<()> {
    let env = BenchEnv::new(8).await?;
    let ingest = env.start_ingest().await?;
    let floor = FloorReader::start(&env).await?;
    let cache = Redis::connect(&env.stack.redis_address(), &env.stack.redis_key_prefix).await?;
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 4)?;
    let load = Http {
        connections: cfg.connections,
    };
    let mut runs = Vec::new();
    let mut produced = 0u64;
    for (round, window) in WINDOWS_MS.into_iter().enumerate() {
        let mut settings = env.projector_settings();
        settings.window = Duration::from_millis(window);
        let (stop, stopped) = oneshot::channel::<()>();
        let projector = tokio::spawn(likes_projector::run(settings, async {
            let _ = stopped.await;
        }));
        // Warm: producer metadata, and the projector's group join and claims:
        // the run starts only once it has applied everything produced so far.
        let warm = load
            .post_likes(ingest.addr, &mut keys, 200.0, cfg.step)
            .await?;
        produced += warm.ok;
        caught_up(&env, produced).await?;
        let mut items = Vec::new();
        let first_user = 2_000_000_000 + round as i64 * 100_000_000;
        let calls: Vec<Call> = (0..http::count(rate, cfg.step))
            .map(|i| {
                let item = keys.next_pair().1;
                items.push(item);
                Call {
                    method: Method::POST,
                    path: "/v1/likes".into(),
                    body: Bytes::from(like_body(first_user + i as i64, item)),
                }
            })
            .collect();
        let (answers, answered) = mpsc::unbounded_channel();
        let watcher = tokio::spawn(watch(cache.clone(), items, answered));
        let run = load
            .run(ingest.addr, calls, rate, Some((EVERY, answers)))
            .await?;
        let watched = watcher.await??;
        produced += run.ok;
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(30), projector).await???;
        runs.push((window, run, watched));
    }
    // The Kafka Streams peer on the same topic and ingest, at the same rate,
    // once our projector stopped (so neither takes the other's cores).
    let peer = crate::scenarios::peer_convergence::peer_round(
        &env,
        ingest.addr,
        &load,
        &mut keys,
        rate,
        cfg.step,
        &mut produced,
    )
    .await;
    let read = floor.stop().await?;
    ingest.stop().await?;
    for (window, run, watched) in &runs {
        rows(report, *window, run, watched, &read)?;
        report.runs(
            NAME,
            &format!("ours (202s, window {window} ms)"),
            std::slice::from_ref(run),
        );
    }
    let peer = match peer {
        Ok(peer) => peer,
        Err(e) => {
            env.clean().await?;
            return Err(e.context("the Kafka Streams peer's round"));
        }
    };
    if let Some((_, _, watched)) = runs.iter().find(|(window, _, _)| *window == 1000) {
        peer_rows(report, &watched.visible, &peer);
    }
    env.clean().await
}

/// Ours (window 1 s, the peer's commit interval) next to the peer's append
/// to output, and the goal: our P99 no worse than the peer's.
fn peer_rows(
    report: &mut Report,
    ours: &Histogram<u64>,
    peer: &crate::scenarios::peer_convergence::PeerRound,
) {
    for (label, q) in [("P50", 0.5), ("P99", 0.99)] {
        let row = Row::new(
            NAME,
            &format!(
                "{label} ms to visible, window 1000 ms, vs the Kafka Streams peer at {:.0} likes/s",
                peer.rate
            ),
            ms_at(ours, q),
            ms_at(&peer.latency, q),
            false,
            "Kafka Streams peer: append → output record readable (commit and output every 1 s)",
        );
        // The goal is on the P99; the P50 is shown beside it.
        report
            .rows
            .push(if q == 0.99 { row.goal_ratio(1.0) } else { row });
    }
    report.notes.push(format!(
        "4: ours is 202 → Redis with a 1 s window; the Kafka Streams peer's is append → output with a 1 s commit ({} peer output records, each its batch's oldest like)",
        peer.latency.len()
    ));
}

/// Waits (60 s at most) until the projector's stored offsets cover `events`.
async fn caught_up(env: &BenchEnv, events: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let applied = env.applied().await?;
        if applied >= events as i64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the projector applied {applied} of {events} events in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The figures of one window's run.
fn rows(
    report: &mut Report,
    window: u64,
    run: &crate::load::Summary,
    watched: &Watch,
    read: &HashMap<(i32, i64), Instant>,
) -> anyhow::Result<()> {
    let mut base = histogram()?;
    for w in &watched.answers {
        if let Some(at) = read.get(&(w.partition, w.offset)) {
            base.saturating_record(at.saturating_duration_since(w.at).as_micros().max(1) as u64);
        }
    }
    let ours = &watched.visible;
    anyhow::ensure!(!ours.is_empty(), "no like became visible in Redis");
    let baseline = "bare consumer reads the record";
    for (label, q) in [("P50", 0.5), ("P99", 0.99)] {
        let metric = format!(
            "{label} ms from 202 to visible, window {window} ms, at {:.0} likes/s",
            run.achieved_rate
        );
        let mut row = Row::new(
            NAME,
            &metric,
            ms_at(ours, q),
            ms_at(&base, q),
            false,
            baseline,
        );
        if row.baseline < 1.0 {
            // The bare reader often has the record before its 202 reaches the
            // client: a floor of about zero makes a ratio meaningless.
            row.ratio = 0.0;
        }
        report.rows.push(row);
    }
    report.notes.push(format!(
        "4 (window {window} ms): {} likes at {:.0}/s ({} errors, P99 of the 202 {:.1} ms); {} watched, {} seen in Redis, {} not within 30 s; max {:.0} ms",
        run.ok,
        run.achieved_rate,
        run.errors,
        run.p99_ms,
        watched.answers.len(),
        ours.len(),
        watched.answers.len() as u64 - ours.len(),
        ours.max() as f64 / 1000.0
    ));
    Ok(())
}

/// One watched like: where it landed and when its 202 came.
struct Watched {
    partition: i32,
    offset: i64,
    at: Instant,
}

struct Watch {
    answers: Vec<Watched>,
    /// Microseconds from the 202 to the stamp covering it.
    visible: Histogram<u64>,
}

/// Reads the stamps of every like still pending until the load ends and all
/// are visible (or 30 s passed since the last answer).
async fn watch(
    cache: Redis,
    items: Vec<i64>,
    mut answered: mpsc::UnboundedReceiver<Answer>,
) -> anyhow::Result<Watch> {
    let mut pending: Vec<(likes_domain::ItemKey, i64, Instant)> = Vec::new();
    let mut watch = Watch {
        answers: Vec::new(),
        visible: histogram()?,
    };
    let mut open = true;
    let mut last_answer = Instant::now();
    loop {
        while let Ok(answer) = answered.try_recv() {
            let body: serde_json::Value = serde_json::from_slice(&answer.body)?;
            let (Some(partition), Some(offset)) =
                (body["partition"].as_i64(), body["offset"].as_i64())
            else {
                anyhow::bail!("a 202 without partition and offset: {body}");
            };
            let item = items[answer.index as usize];
            let item = likes_domain::ItemKey::parse(ITEM_TYPE.into(), item)?;
            pending.push((item, offset, answer.at));
            watch.answers.push(Watched {
                partition: partition as i32,
                offset,
                at: answer.at,
            });
            last_answer = answer.at;
        }
        if open && answered.is_closed() && answered.is_empty() {
            open = false;
        }
        if !pending.is_empty() {
            let items: Vec<_> = pending.iter().map(|(item, _, _)| *item).collect();
            let values = counts::raw_counts(&cache, &items).await?;
            let now = Instant::now();
            let mut still = Vec::with_capacity(pending.len());
            for ((item, offset, at), value) in pending.into_iter().zip(values) {
                match value.as_deref().and_then(parse_stamped) {
                    Some((_, stamp)) if stamp >= offset => {
                        let micros = now.saturating_duration_since(at).as_micros() as u64;
                        watch.visible.saturating_record(micros.max(1));
                    }
                    _ => still.push((item, offset, at)),
                }
            }
            pending = still;
        }
        if !open && (pending.is_empty() || last_answer.elapsed() > Duration::from_secs(30)) {
            return Ok(watch);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The baseline reader: every partition assigned at its end, records noted
/// with the time they were read.
struct FloorReader {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<HashMap<(i32, i64), Instant>>>,
}

impl FloorReader {
    async fn start(env: &BenchEnv) -> anyhow::Result<Self> {
        let mut config = kafka::consumer_config(&env.stack.kafka_bootstrap, "bench-floor");
        config.set("fetch.wait.max.ms", "5");
        let consumer: StreamConsumer = config.create()?;
        let metadata = consumer.fetch_metadata(Some(&env.stack.topic), Duration::from_secs(10))?;
        let mut assignment = TopicPartitionList::new();
        for topic in metadata.topics() {
            for p in topic.partitions() {
                assignment.add_partition_offset(&env.stack.topic, p.id(), Offset::End)?;
            }
        }
        consumer.assign(&assignment)?;
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut read = HashMap::new();
            let mut stream = consumer.stream();
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok(read),
                    message = stream.next() => match message {
                        Some(Ok(m)) => {
                            read.insert((m.partition(), m.offset()), Instant::now());
                        }
                        Some(Err(e)) => anyhow::bail!("floor reader: {e}"),
                        None => return Ok(read),
                    },
                }
            }
        });
        Ok(Self { stop, task })
    }

    async fn stop(self) -> anyhow::Result<HashMap<(i32, i64), Instant>> {
        let _ = self.stop.send(());
        self.task.await?
    }
}
