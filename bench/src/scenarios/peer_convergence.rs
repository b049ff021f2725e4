//! Scenario 4's peer round: the Kafka Streams peer (`bench/peers/kafka-streams/`,
//! commit and output every second) on the same topic, under the same ingest at
//! the same rate, after our projector's rounds: the time from a like's append
//! (the input record's timestamp, which the peer carries into its output's
//! `likes-append-ms` header) to the peer's output record being readable
//! (read_committed), next to ours from the 202 to Redis at the same window.
//!
//! One output record stands for every like of its item since the previous
//! output; the header is the oldest of them, so each sample is that batch's
//! slowest like (the peer's figure is, if anything, pessimistic at P50).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use hyper::Method;
use likes_tests::peer::Peer;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::env::BenchEnv;
use crate::http::{self, Call, Http};
use crate::keys::{Keys, like_body};
use crate::load::histogram;

/// The header the peer writes (its `LikeCounter.APPEND_HEADER`).
const APPEND_HEADER: &str = "likes-append-ms";

/// What the peer's round measured.
pub struct PeerRound {
    pub rate: f64,
    /// Microseconds from append to the output record read.
    pub latency: Histogram<u64>,
}

/// Runs the peer on `env`'s topic, warms it and drives `rate` likes/s for
/// `step` through `ingest`; `produced` is what the topic held before (the peer
/// reads it all first) and grows by what this round adds.
pub async fn peer_round(
    env: &BenchEnv,
    ingest: SocketAddr,
    load: &Http,
    keys: &mut Keys,
    rate: f64,
    step: Duration,
    produced: &mut u64,
) -> anyhow::Result<PeerRound> {
    likes_tests::peer::jar().await?;
    let mut peer = Peer::start_in(&env.stack, &env.suffix, &crate::env::scratch()).await?;
    let outcome = measure(env, &peer, ingest, load, keys, rate, step, produced).await;
    let stopped = peer.stop().await;
    peer.clean_up().await?;
    stopped?;
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    env: &BenchEnv,
    peer: &Peer,
    ingest: SocketAddr,
    load: &Http,
    keys: &mut Keys,
    rate: f64,
    step: Duration,
    produced: &mut u64,
) -> anyhow::Result<PeerRound> {
    let warm = load.post_likes(ingest, keys, 200.0, step).await?;
    *produced += warm.ok;
    caught_up(peer, *produced).await?;
    let reader = OutputReader::start(env, &peer.output_topic).await?;
    let first_user = 2_000_000_000 + 9 * 100_000_000;
    let calls: Vec<Call> = (0..http::count(rate, step))
        .map(|i| Call {
            method: Method::POST,
            path: "/v1/likes".into(),
            body: Bytes::from(like_body(first_user + i as i64, keys.next_pair().1)),
        })
        .collect();
    let run = load.run(ingest, calls, rate, None).await?;
    *produced += run.ok;
    caught_up(peer, *produced).await?;
    // The last counts go out within an output interval and a commit (a
    // second each) of the input being committed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let latency = reader.stop().await?;
    anyhow::ensure!(
        !latency.is_empty(),
        "the peer wrote no output during the run"
    );
    Ok(PeerRound {
        rate: run.achieved_rate,
        latency,
    })
}

/// Waits (120 s at most) until the peer committed `events` input records.
async fn caught_up(peer: &Peer, events: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (read, _) = peer.progress()?;
        if read >= events as i64 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the peer read {read} of {events} events in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads the peer's output from its end, committed records only, and notes
/// for each how long after its header's append time it became readable.
struct OutputReader {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<Histogram<u64>>>,
}

impl OutputReader {
    async fn start(env: &BenchEnv, topic: &str) -> anyhow::Result<Self> {
        let mut config = likes_infra::kafka::consumer_config(
            &env.stack.kafka_bootstrap,
            &format!("bench-peer-output-{}", env.suffix),
        );
        config.set("fetch.wait.max.ms", "5");
        let consumer: StreamConsumer = config.create()?;
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let mut assignment = TopicPartitionList::new();
        for t in metadata.topics() {
            for p in t.partitions() {
                assignment.add_partition_offset(topic, p.id(), Offset::End)?;
            }
        }
        consumer.assign(&assignment)?;
        let since = chrono::Utc::now().timestamp_millis();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut latency = histogram()?;
            let mut stream = consumer.stream();
            loop {
                tokio::select! {
                    _ = &mut stopped => return Ok(latency),
                    message = stream.next() => match message {
                        Some(Ok(m)) => {
                            let now = chrono::Utc::now().timestamp_millis();
                            let appended = m.headers().and_then(|h| {
                                h.iter()
                                    .find(|h| h.key == APPEND_HEADER)
                                    .and_then(|h| h.value)
                                    .and_then(|v| std::str::from_utf8(v).ok())
                                    .and_then(|v| v.parse::<i64>().ok())
                            });
                            // Outputs of the warm-up's likes are not the run's.
                            if let Some(at) = appended.filter(|at| *at >= since) {
                                latency.saturating_record(((now - at).max(0) as u64 * 1000).max(1));
                            }
                        }
                        Some(Err(e)) => anyhow::bail!("peer output reader: {e}"),
                        None => return Ok(latency),
                    },
                }
            }
        });
        Ok(Self { stop, task })
    }

    async fn stop(self) -> anyhow::Result<Histogram<u64>> {
        let _ = self.stop.send(());
        self.task.await?
    }
}
