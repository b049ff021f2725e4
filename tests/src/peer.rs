//! The Kafka Streams peer (`bench/peers/kafka-streams/`) as a child process on
//! a test's own topic: building its jar once (kept in
//! `bench/peers/kafka-streams/target/`), running it with its own application id and state directory,
//! reading the counts it wrote, and removing everything it left behind
//! (state directory, output and internal topics, consumer group).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::process::{Child, Command};

use likes_infra::settings::StackSettings;

use crate::TestEnv;
use crate::cleanup::{delete_topics, remove_dir, topics_where};
use crate::process::repo_root;

/// The peer's Maven project.
pub fn project_dir() -> PathBuf {
    repo_root().join("bench/peers/kafka-streams")
}

/// The runnable jar `mvn package` makes.
pub fn jar_path() -> PathBuf {
    project_dir().join("target/likes-peer-kafka-streams.jar")
}

/// The jar, built first when it is missing or older than its sources (the
/// Java sources, the pom and the bundled reader schema). One build at a time
/// within a test binary.
pub async fn jar() -> anyhow::Result<PathBuf> {
    static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = BUILD.lock().await;
    let jar = jar_path();
    let built = std::fs::metadata(&jar).and_then(|m| m.modified()).ok();
    let sources = newest_source()?;
    if built.is_some_and(|built| built >= sources) {
        return Ok(jar);
    }
    let status = Command::new("mvn")
        .args(["-q", "-B", "package"])
        .current_dir(project_dir())
        .stdout(Stdio::null())
        .status()
        .await
        .context("run mvn (Maven and Java 17 are needed to build the peer)")?;
    anyhow::ensure!(status.success(), "mvn package of the peer failed: {status}");
    anyhow::ensure!(jar.exists(), "mvn package made no {}", jar.display());
    Ok(jar)
}

fn newest_source() -> anyhow::Result<SystemTime> {
    let dir = project_dir();
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut pending = vec![dir.join("src")];
    let mut files = vec![
        dir.join("pom.xml"),
        repo_root().join("schemas/like_event.avsc"),
    ];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    for file in files {
        newest = newest.max(std::fs::metadata(&file)?.modified()?);
    }
    Ok(newest)
}

/// The peer running as a child process on a test's topic.
pub struct Peer {
    child: Child,
    pub application_id: String,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    bootstrap: String,
    input: String,
    pub output_topic: String,
}

impl Peer {
    /// Starts the peer on `env`'s topic (heap 256 MB, one stream thread, the
    /// projector's one-second commit interval) and waits until it runs.
    pub async fn start(env: &TestEnv) -> anyhow::Result<Self> {
        Self::start_on(&env.stack, &env.suffix).await
    }

    /// Starts the peer on `stack`'s topic, named after `suffix` (its
    /// application id, state directory and log), and waits until it runs.
    pub async fn start_on(stack: &StackSettings, suffix: &str) -> anyhow::Result<Self> {
        Self::start_in(stack, suffix, &std::env::temp_dir()).await
    }

    /// As [`Peer::start_on`], its state directory and log under `scratch`.
    pub async fn start_in(
        stack: &StackSettings,
        suffix: &str,
        scratch: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let jar = jar().await?;
        let application_id = format!("likes-peer-{suffix}");
        std::fs::create_dir_all(scratch)?;
        let state_dir = scratch.join(format!("likes-peer-state-{suffix}"));
        let log = scratch.join(format!("likes-peer-{suffix}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new("java")
            .args(["-Xmx256m", "-XX:+UseSerialGC", "-jar"])
            .arg(&jar)
            .env("KAFKA_BOOTSTRAP_SERVERS", &stack.kafka_bootstrap)
            .env("KAFKA_TOPIC", &stack.topic)
            .env("SCHEMA_REGISTRY_URL", &stack.schema_registry_url)
            .env("PEER_APPLICATION_ID", &application_id)
            .env("PEER_STATE_DIR", &state_dir)
            .env("PEER_THREADS", "1")
            .env("PEER_COMMIT_INTERVAL_MS", "1000")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .context("start java")?;
        let mut peer = Self {
            child,
            application_id,
            state_dir,
            log,
            bootstrap: stack.kafka_bootstrap.clone(),
            input: stack.topic.clone(),
            output_topic: format!("{}.peer-counts", stack.topic),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
        while !peer.log_text().contains("peer running") {
            if let Some(status) = peer.child.try_wait()? {
                anyhow::bail!("peer exited with {status}: {}", peer.log_text());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "peer not running within 90 s: {}",
                peer.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(peer)
    }

    /// What the peer printed so far (stdout and stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the peer's committed input offsets reached the input topic's end.
    pub fn caught_up(&self) -> anyhow::Result<bool> {
        let (committed, end) = self.progress()?;
        Ok(committed >= end)
    }

    /// The peer's committed input offsets and the input's end offsets, each
    /// summed over the partitions: how far it has read of what was appended.
    pub fn progress(&self) -> anyhow::Result<(i64, i64)> {
        let consumer: BaseConsumer =
            likes_infra::kafka::consumer_config(&self.bootstrap, &self.application_id).create()?;
        let metadata = consumer.fetch_metadata(Some(&self.input), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&self.input, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
        let (mut read, mut end) = (0, 0);
        for p in 0..partitions {
            let (_, high) = consumer.fetch_watermarks(&self.input, p, Duration::from_secs(10))?;
            if let Some(Offset::Offset(o)) =
                committed.find_partition(&self.input, p).map(|e| e.offset())
            {
                read += o;
            }
            end += high;
        }
        Ok((read, end))
    }

    /// The peer's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Every item's latest count in the output topic (committed records only),
    /// keyed `item_type:item_id`.
    pub fn counts(&self) -> anyhow::Result<BTreeMap<String, i64>> {
        let consumer: BaseConsumer =
            likes_infra::kafka::consumer_config(&self.bootstrap, "peer-counts-reader").create()?;
        let metadata =
            consumer.fetch_metadata(Some(&self.output_topic), Duration::from_secs(10))?;
        let partitions = metadata
            .topics()
            .first()
            .map_or(0, |t| t.partitions().len() as i32);
        let mut tpl = TopicPartitionList::new();
        let mut ends = BTreeMap::new();
        for p in 0..partitions {
            let (low, high) =
                consumer.fetch_watermarks(&self.output_topic, p, Duration::from_secs(10))?;
            if high > low {
                tpl.add_partition_offset(&self.output_topic, p, Offset::Offset(low))?;
                ends.insert(p, high);
            }
        }
        let mut counts = BTreeMap::new();
        if ends.is_empty() {
            return Ok(counts);
        }
        consumer.assign(&tpl)?;
        // Bounded by silence, not by size: a 5M-event drain's output is
        // millions of records.
        let mut heard = std::time::Instant::now();
        let mut since_look = 0;
        // read_committed: a partition is read once the position passed the
        // high watermark's last committed record (markers included).
        while !ends.is_empty() {
            anyhow::ensure!(
                heard.elapsed() < Duration::from_secs(30),
                "peer output: nothing read for 30 s with {} partitions to go",
                ends.len()
            );
            let polled = consumer.poll(Duration::from_millis(200));
            if let Some(message) = polled.as_ref() {
                let message = message.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
                heard = std::time::Instant::now();
                since_look += 1;
                let key = message
                    .key_view::<str>()
                    .context("output record without key")?
                    .context("output key not UTF-8")?
                    .to_string();
                let value = message
                    .payload_view::<str>()
                    .context("output record without value")?
                    .context("output value not UTF-8")?;
                counts.insert(key, value.parse::<i64>().context("output value")?);
            }
            // Where the consumer stands, once per thousand records or pause
            // (a look per record would cost more than the reading).
            if polled.is_none() || since_look >= 1000 {
                since_look = 0;
                let position = consumer.position()?;
                ends.retain(|&p, &mut high| {
                    !matches!(
                        position.find_partition(&self.output_topic, p).map(|e| e.offset()),
                        Some(Offset::Offset(o)) if o >= high
                    )
                });
            }
        }
        Ok(counts)
    }

    /// SIGTERM, then waits (bounded) for the peer to print its totals and exit.
    pub async fn stop(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await?;
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                self.child.kill().await?;
                anyhow::bail!("peer did not stop within 30 s of SIGTERM")
            }
        }
    }

    /// The totals line the peer printed when it stopped, as name → number.
    pub fn totals(&self) -> Option<BTreeMap<String, i64>> {
        let text = self.log_text();
        let line = text.lines().find(|l| l.starts_with("peer stopped:"))?;
        let words: Vec<&str> = line["peer stopped:".len()..].split_whitespace().collect();
        Some(
            words
                .chunks(2)
                .filter_map(|pair| Some((pair[0].to_string(), pair.get(1)?.parse().ok()?)))
                .collect(),
        )
    }

    /// Kills the peer if it still runs and removes its state directory, its
    /// output and internal topics and (when it left it) its consumer group.
    pub async fn clean_up(mut self) -> anyhow::Result<()> {
        let _ = self.child.kill().await;
        remove_dir(&self.state_dir)?;
        let internal_prefix = format!("{}-", self.application_id);
        let topics = topics_where(&self.bootstrap, |name| {
            name.starts_with(&internal_prefix) || name == self.output_topic
        })?;
        delete_topics(&self.bootstrap, &topics).await?;
        let admin: AdminClient<DefaultClientContext> =
            likes_infra::kafka::consumer_config(&self.bootstrap, &self.application_id).create()?;
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        // Best effort: a peer that did not leave its group (killed, or closed
        // while the broker still counts it a member) holds it until its session
        // times out; the group then expires with its offsets like any test's.
        for _ in 0..6 {
            let refused = admin
                .delete_groups(&[self.application_id.as_str()], &options)
                .await?
                .into_iter()
                .any(|r| r.is_err());
            if !refused {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let _ = std::fs::remove_file(&self.log);
        Ok(())
    }
}
