//! Scenario 7: the resident memory of the real `likes-ingest` and
//! `likes-projector` binaries, run as child processes (the other scenarios run
//! the services inside the bench, whose memory cannot be told apart). Each
//! child gets its slice of the stack from a [`BenchEnv`] as the environment
//! variables its `Settings::from_env` reads, its output goes to a log under the
//! bench's scratch folder, and a guard kills it on every way out.
//!
//! Measured from `/proc/<pid>/status` (`VmRSS` now, `VmHWM` the peak so far):
//! both idle after start-up; the ingest after a fixed-rate run of single
//! likes; the projector draining a pre-filled topic of N events and, in a
//! second process, of the first N/2 of them. Memory bounded by settings
//! (`PROJECTOR_MAX_BATCH_EVENTS`, `MAX_IN_FLIGHT`) is the same after N as
//! after N/2; memory that grows with the log is a defect.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use likes_infra::settings::StackSettings;
use tokio::time::Instant;

use crate::env::{self, BenchEnv};
use crate::http::{self, Http};
use crate::keys::Keys;
use crate::report::{Report, Row};
use crate::scenarios::Config;
use crate::scenarios::drain::fill;
use crate::scenarios::events;

const NAME: &str = "7 memory";

/// Goal: the projector's peak after draining N events ÷ after N/2. Memory
/// bounded by settings does not grow with the log; the slack is the
/// allocator's and the consumer's noise.
const PEAK_N_VS_HALF: f64 = 1.2;

/// How often the projector's `VmRSS` is read during a drain.
const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// How long a child may take to answer ready.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a drain may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(900);

/// Events of the longest drain: scenario 3's in quick runs, at most a million
/// in full runs: drains of 5 M and 2.5 M more would add some ten minutes,
/// and a million is already a hundred of the bench's batches.
const MAX_DRAIN_EVENTS: u64 = 1_000_000;

/// Partitions of the scenario's topics (as scenario 3's).
const PARTITIONS: i32 = 8;

const IDLE: &str = "the same process idle after start-up";
const IDLE_PROJECTOR: &str = "a projector idle after start-up (same run)";

/// Runs scenario 7.
pub async fn memory(cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    let binaries = Binaries::locate()?;
    let logs = env::scratch().join(format!(
        "memory-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ));
    std::fs::create_dir_all(&logs)
        .with_context(|| format!("create the log folder {}", logs.display()))?;
    report
        .notes
        .push(format!("7: the children's output is in {}", logs.display()));

    let env = BenchEnv::new(PARTITIONS).await?;
    let idle = under_load(cfg, report, &env, &binaries, &logs).await;
    let cleaned = env.clean().await;
    let projector_idle = idle?;
    cleaned?;

    let n = cfg.drain_events.min(MAX_DRAIN_EVENTS);
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 7)?;
    let all = events::generate(&mut keys, n)?;
    let half = drain(&binaries, &logs, "half", &all[..all.len() / 2]).await?;
    let whole = drain(&binaries, &logs, "whole", &all).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    for (label, d) in [("N/2", &half), ("N", &whole)] {
        report.notes.push(format!(
            "7: projector draining {label} = {} events in {:.1} s: RSS peak {:.1} MiB sampled every {} ms (VmHWM {:.1} MiB), {:.1} MiB at the end; in the same process after half of them: VmHWM {:.1} MiB",
            d.events,
            d.seconds,
            mib(d.sampled_peak_kib),
            SAMPLE_EVERY.as_millis(),
            mib(d.end.hwm_kib),
            mib(d.end.rss_kib),
            mib(d.hwm_at_half_kib),
        ));
    }
    report.rows.push(Row::new(
        NAME,
        "projector peak RSS MiB draining N events (VmRSS every 200 ms)",
        mib(whole.sampled_peak_kib),
        mib(projector_idle.rss_kib),
        false,
        IDLE_PROJECTOR,
    ));
    report.rows.push(Row::new(
        NAME,
        "projector RSS MiB at the end of the drain of N events",
        mib(whole.end.rss_kib),
        mib(projector_idle.rss_kib),
        false,
        IDLE_PROJECTOR,
    ));
    report.rows.push(
        Row::new(
            NAME,
            "projector peak RSS, N events vs N/2",
            mib(whole.end.hwm_kib),
            mib(half.end.hwm_kib),
            false,
            "VmHWM of a projector that drained the first N/2 of the same events (same run)",
        )
        .goal(
            format!("ours ÷ baseline ≤ {PEAK_N_VS_HALF}: does not grow with the log (N = {n})"),
            half.end.hwm_kib > 0
                && whole.end.hwm_kib as f64 <= PEAK_N_VS_HALF * half.end.hwm_kib as f64,
        ),
    );
    Ok(())
}

/// Steps 1 and 2: both binaries idle after start-up on `env`, then the
/// ingest under single likes at a fixed rate (the projector projecting
/// them). Answers the projector's idle memory, the drains' reference.
async fn under_load(
    cfg: &Config,
    report: &mut Report,
    env: &BenchEnv,
    binaries: &Binaries,
    logs: &Path,
) -> anyhow::Result<Memory> {
    let ingest_addr = free_addr()?;
    let settings = env.ingest_settings(ingest_addr)?;
    let limits = BenchEnv::ingest_limits()?;
    let mut ingest = Child::spawn(
        &binaries.ingest,
        ingest_vars(&settings, &limits),
        &logs.join("ingest.log"),
    )?;
    let projector_addr = free_addr()?;
    let projector_settings = env.projector_settings();
    let mut projector = Child::spawn(
        &binaries.projector,
        projector_vars(&projector_settings, Some(projector_addr)),
        &logs.join("projector.log"),
    )?;
    ingest.ready(ingest_addr).await?;
    projector.ready(projector_addr).await?;
    // Let both settle after answering ready (background chores' first rounds).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ingest_idle = ingest.memory()?;
    let projector_idle = projector.memory()?;
    report.notes.push(format!(
        "7: idle after start-up: likes-ingest RSS {:.1} MiB (VmHWM {:.1}), likes-projector RSS {:.1} MiB (VmHWM {:.1})",
        ingest_idle.rss_mib(),
        ingest_idle.hwm_mib(),
        projector_idle.rss_mib(),
        projector_idle.hwm_mib(),
    ));
    report.notes.push(format!(
        "7: what bounds memory: ingest MAX_IN_FLIGHT = {} (events queued in the producer before new writes are shed), MAX_BATCH_EVENTS = {}, MAX_BODY_BYTES = {}, DATABASE_MAX_CONNECTIONS = {}; projector PROJECTOR_MAX_BATCH_EVENTS = {} (the bench's value; a batch closes at this many events or after AGGREGATION_WINDOW_SECONDS = {}), PROJECTOR_WRITERS = {}; the projector's Kafka consumer prefetches at most {} KiB (queued.max.messages.kbytes, infra/src/kafka/consumer.rs)",
        limits.max_in_flight,
        limits.max_batch_events,
        settings.max_body_bytes,
        env.stack.database_max_connections,
        projector_settings.max_batch_events,
        projector_settings.window.as_secs_f64(),
        projector_settings.writers,
        likes_infra::kafka::consumer::PREFETCH_KBYTES,
    ));

    let rate = cfg.fixed_rates[cfg.fixed_rates.len() / 2];
    let duration = if cfg.quick {
        Duration::from_secs(5)
    } else {
        Duration::from_secs(20)
    };
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 70)?;
    let load = Http {
        connections: cfg.connections,
    };
    let run = load
        .post_likes(ingest_addr, &mut keys, rate, duration)
        .await?;
    ingest.alive()?;
    projector.alive()?;
    let ingest_end = ingest.memory()?;
    let projector_end = projector.memory()?;
    report.notes.push(format!(
        "7: {} single likes at {rate:.0}/s for {duration:?} to likes-ingest: {} ok, {} errors, achieved {:.0}/s, P99 {:.1} ms; then likes-ingest RSS {:.1} MiB (VmHWM {:.1}), likes-projector (projecting them) RSS {:.1} MiB (VmHWM {:.1})",
        run.sent,
        run.ok,
        run.errors,
        run.achieved_rate,
        run.p99_ms,
        ingest_end.rss_mib(),
        ingest_end.hwm_mib(),
        projector_end.rss_mib(),
        projector_end.hwm_mib(),
    ));
    anyhow::ensure!(
        run.ok > 0,
        "no like was accepted by likes-ingest: see {}",
        ingest.log.display()
    );
    report.rows.push(Row::new(
        NAME,
        "ingest RSS MiB after the single-like load",
        ingest_end.rss_mib(),
        ingest_idle.rss_mib(),
        false,
        IDLE,
    ));
    report.rows.push(Row::new(
        NAME,
        "ingest peak RSS MiB (VmHWM) through the single-like load",
        ingest_end.hwm_mib(),
        ingest_idle.rss_mib(),
        false,
        IDLE,
    ));
    report.rows.push(Row::new(
        NAME,
        "projector RSS MiB after projecting the single-like load",
        projector_end.rss_mib(),
        projector_idle.rss_mib(),
        false,
        IDLE,
    ));
    Ok(projector_idle)
}

/// What one drain measured.
struct Drained {
    events: usize,
    seconds: f64,
    /// The highest `VmRSS` read every [`SAMPLE_EVERY`].
    sampled_peak_kib: u64,
    /// `VmHWM` once half of the events were committed.
    hwm_at_half_kib: u64,
    /// Both figures once every event was committed.
    end: Memory,
}

/// Step 3: a fresh topic filled with `events`, drained by a fresh
/// `likes-projector` process while its memory is sampled.
async fn drain(
    binaries: &Binaries,
    logs: &Path,
    label: &str,
    events: &[likes_domain::LikeEvent],
) -> anyhow::Result<Drained> {
    let env = BenchEnv::new(PARTITIONS).await?;
    let drained = drain_on(&env, binaries, logs, label, events).await;
    let cleaned = env.clean().await;
    let drained = drained?;
    cleaned?;
    Ok(drained)
}

async fn drain_on(
    env: &BenchEnv,
    binaries: &Binaries,
    logs: &Path,
    label: &str,
    events: &[likes_domain::LikeEvent],
) -> anyhow::Result<Drained> {
    fill(env, events).await?;
    let total = events.len() as i64;
    let mut projector = Child::spawn(
        &binaries.projector,
        projector_vars(&env.projector_settings(), None),
        &logs.join(format!("projector-drain-{label}.log")),
    )?;
    let started = Instant::now();
    let mut sampled_peak_kib = 0;
    let mut hwm_at_half_kib = None;
    loop {
        projector.alive()?;
        let now = projector.memory()?;
        sampled_peak_kib = sampled_peak_kib.max(now.rss_kib);
        let done = env.applied().await?;
        if hwm_at_half_kib.is_none() && done >= total / 2 {
            hwm_at_half_kib = Some(now.hwm_kib);
        }
        if done >= total {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < DRAIN_TIMEOUT,
            "likes-projector drained {done} of {total} events in {DRAIN_TIMEOUT:?}: see {}",
            projector.log.display()
        );
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    let end = projector.memory()?;
    Ok(Drained {
        events: events.len(),
        seconds,
        sampled_peak_kib: sampled_peak_kib.max(end.rss_kib),
        hwm_at_half_kib: hwm_at_half_kib.unwrap_or(end.hwm_kib),
        end,
    })
}

/// The service binaries next to the bench's own executable (`cargo build
/// --release` puts them all in `target/release/`).
struct Binaries {
    ingest: PathBuf,
    projector: PathBuf,
}

impl Binaries {
    fn locate() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("where is likes-bench?")?;
        let dir = exe
            .parent()
            .context("likes-bench's executable has no folder")?;
        let find = |name: &str| {
            let path = dir.join(name);
            anyhow::ensure!(
                path.is_file(),
                "{name} not found at {}: build it next to likes-bench (cargo build --release -p likes-ingest -p likes-projector)",
                path.display()
            );
            Ok(path)
        };
        Ok(Self {
            ingest: find("likes-ingest")?,
            projector: find("likes-projector")?,
        })
    }
}

/// A child process, killed (and reaped) when dropped, whatever way the
/// scenario leaves.
struct Child {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

impl Child {
    /// Starts `binary` with `vars` added to the bench's environment, stdout
    /// and stderr to `log`.
    fn spawn(binary: &Path, vars: Vec<(&'static str, String)>, log: &Path) -> anyhow::Result<Self> {
        let name = binary.file_name().map_or_else(
            || binary.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        let out = File::create(log).with_context(|| format!("create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = Command::new(binary)
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Self {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    /// Fails when the process has exited, naming its log.
    fn alive(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait()? {
            Some(status) => anyhow::bail!(
                "{} exited ({status}): see {}",
                self.name,
                self.log.display()
            ),
            None => Ok(()),
        }
    }

    /// Waits until `GET http://addr/readyz` answers 200.
    async fn ready(&mut self, addr: SocketAddr) -> anyhow::Result<()> {
        let client = http::client()?;
        let url = format!("http://{addr}/readyz");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            self.alive()?;
            if let Ok(answer) = client.get(&url).send().await
                && answer.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} not ready at {url} within {START_TIMEOUT:?}: see {}",
                self.name,
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn memory(&self) -> anyhow::Result<Memory> {
        let path = format!("/proc/{}/status", self.child.id());
        let status = std::fs::read_to_string(&path)
            .with_context(|| format!("read {path} ({})", self.name))?;
        Memory::parse(&status)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process's resident memory, in KiB as `/proc` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Memory {
    /// `VmRSS`: resident now.
    rss_kib: u64,
    /// `VmHWM`: the most ever resident.
    hwm_kib: u64,
}

impl Memory {
    /// Reads `VmRSS` and `VmHWM` from the text of `/proc/<pid>/status`.
    fn parse(status: &str) -> anyhow::Result<Self> {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("no {name} in /proc/<pid>/status"))
        };
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }

    fn rss_mib(&self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }

    fn hwm_mib(&self) -> f64 {
        self.hwm_kib as f64 / 1024.0
    }
}

/// A loopback address no one listens on now (the child binds it next).
fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// The variables `StackSettings::from_env` reads, for `stack`.
fn stack_vars(stack: &StackSettings) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_BOOTSTRAP_SERVERS", stack.kafka_bootstrap.clone()),
        ("KAFKA_TOPIC", stack.topic.clone()),
        ("SCHEMA_REGISTRY_URL", stack.schema_registry_url.clone()),
        ("DATABASE_URLS", stack.database_urls.join(",")),
        (
            "DATABASE_MAX_CONNECTIONS",
            stack.database_max_connections.to_string(),
        ),
        ("REDIS_URL", stack.redis_url.clone()),
        ("REDIS_CLUSTER_NODES", stack.redis_cluster_nodes.join(",")),
        ("REDIS_KEY_PREFIX", stack.redis_key_prefix.clone()),
        ("ARCHIVE_URL", stack.archive_url.clone()),
    ]
}

/// The variables `likes_ingest::Settings::from_env` and `Limits::from_env` read.
fn ingest_vars(
    settings: &likes_ingest::Settings,
    limits: &likes_ingest::Limits,
) -> Vec<(&'static str, String)> {
    let ms = |d: Duration| d.as_millis().to_string();
    let mut vars = stack_vars(&settings.stack);
    vars.extend([
        ("LISTEN_ADDR", settings.listen_addr.to_string()),
        ("PRODUCE_TIMEOUT_MS", ms(settings.produce_timeout)),
        ("KAFKA_PRODUCER_LINGER_MS", ms(settings.producer_linger)),
        ("MAX_BODY_BYTES", settings.max_body_bytes.to_string()),
        (
            "RATE_LIMIT_PER_SECOND",
            limits.rate.map_or(0.0, |r| r.per_second).to_string(),
        ),
        (
            "RATE_LIMIT_BURST",
            limits.rate.map_or(0, |r| r.burst).to_string(),
        ),
        (
            "DEDUP_WINDOW_MS",
            limits.dedup_window.map_or("0".into(), ms),
        ),
        ("MAX_BATCH_EVENTS", limits.max_batch_events.to_string()),
        (
            "MAX_BATCH_BODY_BYTES",
            limits.max_batch_body_bytes.to_string(),
        ),
        ("MAX_IN_FLIGHT", limits.max_in_flight.to_string()),
        (
            "READ_YOUR_WRITES_TIMEOUT_MS",
            ms(limits.read_your_writes_timeout),
        ),
        (
            "READ_YOUR_WRITES_MAX_WAITERS",
            limits.read_your_writes_max_waiters.to_string(),
        ),
        (
            "CACHE_REFILL_TTL_SECONDS",
            limits
                .cache_refill_ttl
                .map_or(0, |t| t.as_secs())
                .to_string(),
        ),
        (
            "REDIS_CLIENT_CACHE_ENTRIES",
            limits.redis_client_cache.map_or(0, |n| n.get()).to_string(),
        ),
    ]);
    vars
}

/// The variables `likes_projector::Settings::from_env` reads; the metrics
/// and health endpoint on `metrics` (off when `None`).
fn projector_vars(
    settings: &likes_projector::Settings,
    metrics: Option<SocketAddr>,
) -> Vec<(&'static str, String)> {
    let mut vars = stack_vars(&settings.stack);
    vars.extend([
        (
            "AGGREGATION_WINDOW_SECONDS",
            settings.window.as_secs_f64().to_string(),
        ),
        ("PROJECTOR_GROUP_ID", settings.group_id.clone()),
        (
            "PROJECTOR_MAX_BATCH_EVENTS",
            settings.max_batch_events.to_string(),
        ),
        ("PROJECTOR_WRITERS", settings.writers.to_string()),
        (
            "DEDUP_HORIZON_SECONDS",
            settings.dedup_horizon.as_secs().to_string(),
        ),
        (
            "PROJECTOR_METRICS_ADDR",
            metrics.map_or("off".into(), |a| a.to_string()),
        ),
    ]);
    vars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_the_status_text_of_proc() {
        let status = "Name:\tlikes-projector\nVmPeak:\t  900000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   61000 kB\nThreads:\t12\n";
        assert_eq!(
            Memory::parse(status).expect("memory"),
            Memory {
                rss_kib: 61_000,
                hwm_kib: 81_234
            }
        );
        assert!(Memory::parse("Name:\tx\nVmRSS:\t1 kB\n").is_err());
    }

    #[test]
    fn the_children_read_the_slice_they_are_given() {
        let stack = StackSettings {
            kafka_bootstrap: "127.0.0.1:9092".into(),
            topic: "t".into(),
            schema_registry_url: "http://r".into(),
            database_urls: vec!["postgres://a/x".into(), "postgres://b/y".into()],
            database_max_connections: 7,
            redis_url: "redis://r/0".into(),
            redis_cluster_nodes: vec![],
            redis_key_prefix: "bench:p:".into(),
            archive_url: "/tmp/a".into(),
        };
        let vars = ingest_vars(
            &likes_ingest::Settings {
                stack,
                listen_addr: SocketAddr::from(([127, 0, 0, 1], 4321)),
                produce_timeout: Duration::from_secs(5),
                producer_linger: Duration::from_millis(3),
                max_body_bytes: 1024,
            },
            &likes_ingest::Limits::unprotected(),
        );
        let value = |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            value("DATABASE_URLS"),
            Some("postgres://a/x,postgres://b/y")
        );
        assert_eq!(value("LISTEN_ADDR"), Some("127.0.0.1:4321"));
        assert_eq!(value("PRODUCE_TIMEOUT_MS"), Some("5000"));
        assert_eq!(value("KAFKA_PRODUCER_LINGER_MS"), Some("3"));
        assert_eq!(value("RATE_LIMIT_PER_SECOND"), Some("0"));
        assert_eq!(value("DEDUP_WINDOW_MS"), Some("0"));
        assert_eq!(
            value("MAX_IN_FLIGHT"),
            Some(
                likes_ingest::Limits::unprotected()
                    .max_in_flight
                    .to_string()
                    .as_str()
            )
        );
    }
}
