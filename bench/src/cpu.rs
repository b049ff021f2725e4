//! Where the CPU went during a run, per part of the stack, from `/proc`: the
//! bench process's server threads (the service under test and its clients:
//! warp, the producer, sqlx, redis), the load generator's own thread,
//! PostgreSQL, the Kafka broker, Redis, the registry, and everything else on
//! the machine. A latency figure on a shared 2-core machine drifts with the
//! neighbours; CPU time per request does not, so it is what the capacity
//! arithmetic (`docs/capacity.md`) is built on.
//!
//! `dev/stack` can run the single-node topology and the cluster side by side,
//! so Kafka and Redis are counted for the topology the bench runs against
//! (the environment it read, see [`Topology::from_env`]); the other
//! topology's brokers and Redis nodes go to `other_topology_s`.

use serde::Serialize;

/// The name the load generator's thread carries.
pub const LOADGEN_THREAD: &str = "loadgen";

/// CPU seconds used so far, by part.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUse {
    pub service_s: f64,
    pub loadgen_s: f64,
    pub postgres_s: f64,
    pub kafka_s: f64,
    pub redis_s: f64,
    pub registry_s: f64,
    /// Kafka brokers and Redis nodes of the topology *not* under test (idle
    /// neighbours when both run), kept apart from `kafka_s` and `redis_s`.
    pub other_topology_s: f64,
    /// Busy CPU of the whole machine (all of the above and the rest).
    pub machine_s: f64,
    /// CPU time the hypervisor gave to other guests while this one wanted it
    /// (`steal` in `/proc/stat`): the neighbours' share, which latency pays for.
    pub steal_s: f64,
}

impl CpuUse {
    /// What the machine spent since `earlier`.
    pub fn since(&self, earlier: &CpuUse) -> CpuUse {
        CpuUse {
            service_s: self.service_s - earlier.service_s,
            loadgen_s: self.loadgen_s - earlier.loadgen_s,
            postgres_s: self.postgres_s - earlier.postgres_s,
            kafka_s: self.kafka_s - earlier.kafka_s,
            redis_s: self.redis_s - earlier.redis_s,
            registry_s: self.registry_s - earlier.registry_s,
            other_topology_s: self.other_topology_s - earlier.other_topology_s,
            machine_s: self.machine_s - earlier.machine_s,
            steal_s: self.steal_s - earlier.steal_s,
        }
    }

    /// The stack's share: service, PostgreSQL, Kafka and Redis (not the load
    /// generator, the registry or the neighbours).
    pub fn stack_s(&self) -> f64 {
        self.service_s + self.postgres_s + self.kafka_s + self.redis_s
    }
}

/// Which Kafka brokers and Redis nodes belong to the topology under test.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    /// "single" or "cluster", for the report.
    pub name: String,
    /// True when the brokers under test are the cluster's (`kafka-<n>.properties`).
    pub kafka_cluster: bool,
    /// The ports of the Redis nodes under test.
    pub redis_ports: Vec<u16>,
}

impl Topology {
    /// From the addresses the bench's services connect to: Kafka is the
    /// cluster when the bootstrap list names more than one broker; Redis is
    /// every node of `REDIS_CLUSTER_NODES` when set, else `REDIS_URL`'s.
    pub fn new(kafka_bootstrap: &str, redis_url: &str, redis_cluster_nodes: &[String]) -> Self {
        let kafka_cluster = kafka_bootstrap
            .split(',')
            .filter(|a| !a.trim().is_empty())
            .count()
            > 1;
        let redis_ports: Vec<u16> = if redis_cluster_nodes.is_empty() {
            redis_url_port(redis_url).into_iter().collect()
        } else {
            redis_cluster_nodes
                .iter()
                .filter_map(|u| redis_url_port(u))
                .collect()
        };
        let cluster = kafka_cluster || !redis_cluster_nodes.is_empty();
        Self {
            name: if cluster { "cluster" } else { "single" }.into(),
            kafka_cluster,
            redis_ports,
        }
    }

    /// The topology of this process's environment, read once.
    pub fn from_env() -> &'static Topology {
        static UNDER_TEST: std::sync::OnceLock<Topology> = std::sync::OnceLock::new();
        UNDER_TEST.get_or_init(|| {
            let nodes = crate::env::redis_cluster_nodes().unwrap_or_default();
            Topology::new(
                &crate::env::kafka_bootstrap(),
                &crate::env::redis_url(),
                &nodes,
            )
        })
    }

    /// Whether the Kafka JVM with this command line is under test: the
    /// cluster's brokers are started with `kafka-<n>.properties`
    /// (dev/lib/kafka_cluster.sh), the single broker with `kafka.properties`.
    fn has_kafka(&self, cmdline: &str) -> bool {
        is_cluster_broker(cmdline) == self.kafka_cluster
    }

    /// Whether the `redis-server` with this command line is under test.
    fn has_redis(&self, cmdline: &str) -> bool {
        redis_listen_port(cmdline).is_some_and(|p| self.redis_ports.contains(&p))
    }
}

/// A cluster broker names `kafka-<digits>.properties` on its command line.
fn is_cluster_broker(cmdline: &str) -> bool {
    cmdline.split(['\0', ' ', '/']).any(|word| {
        word.strip_prefix("kafka-")
            .and_then(|w| w.strip_suffix(".properties"))
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    })
}

/// The port a `redis-server` listens on: it retitles itself
/// `redis-server 127.0.0.1:7001 [cluster]` (or `*:6379`).
fn redis_listen_port(cmdline: &str) -> Option<u16> {
    cmdline
        .split(['\0', ' '])
        .filter(|w| w.contains(':'))
        .find_map(|w| w.rsplit(':').next()?.parse().ok())
}

/// The port of a `redis://[user:pass@]host[:port][/db]` URL (6379 when absent).
fn redis_url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit('@').next()?;
    match host_port.rsplit_once(':') {
        Some((_, port)) => port.parse().ok(),
        None => Some(6379),
    }
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on Linux).
const HZ: f64 = 100.0;

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_seconds(stat: &str) -> Option<(String, f64)> {
    // The command name is in parentheses and may hold spaces: split after it.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 2..)?.split_whitespace().collect();
    // After the name: state(0) ... utime(11) stime(12).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / HZ))
}

/// Now, by part. Missing `/proc` entries (processes that just ended) count as 0.
pub fn snapshot() -> CpuUse {
    let mut cpu = CpuUse::default();
    let under_test = Topology::from_env();
    let me = std::process::id();
    // The whole process, threads that already ended included; the load
    // generator's share is taken out by the caller (see [`this_thread`]).
    if let Some((_, s)) = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_seconds(&stat))
    {
        cpu.service_s = s;
    }
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            let Some((comm, s)) = stat_seconds(&stat) else {
                continue;
            };
            match comm.as_str() {
                "postgres" => cpu.postgres_s += s,
                "redis-server" => {
                    if under_test.has_redis(&cmdline(&entry.path())) {
                        cpu.redis_s += s;
                    } else {
                        cpu.other_topology_s += s;
                    }
                }
                "java" => {
                    let cmdline = cmdline(&entry.path());
                    if cmdline.contains("kafka.Kafka") {
                        if under_test.has_kafka(&cmdline) {
                            cpu.kafka_s += s;
                        } else {
                            cpu.other_topology_s += s;
                        }
                    } else if cmdline.contains("quarkus-run.jar") {
                        cpu.registry_s += s;
                    }
                }
                _ => {}
            }
        }
    }
    (cpu.machine_s, cpu.steal_s) = machine_busy().unwrap_or((0.0, 0.0));
    cpu
}

/// CPU seconds process `pid` has used so far (`None` once it ended): for a
/// child the bench runs, like the Kafka Streams peer.
pub fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_seconds(&stat).map(|(_, s)| s)
}

/// A process's command line (NUL-separated words; empty when it just ended).
fn cmdline(proc_dir: &std::path::Path) -> String {
    let bytes = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// CPU seconds the calling thread has used (the load generator measures its
/// own thread before it ends).
pub fn this_thread() -> f64 {
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|stat| stat_seconds(&stat))
        .map_or(0.0, |(_, s)| s)
}

/// Busy (non-idle, non-iowait) and stolen seconds of all CPUs since boot.
fn machine_busy() -> Option<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let total: f64 = ticks.iter().sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    // user nice system idle iowait irq softirq steal ...
    let steal = ticks.get(7).copied().unwrap_or(0.0);
    Some(((total - idle) / HZ, steal / HZ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name_is_read() {
        let line = "42 (tokio rt) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 1 1";
        let (comm, s) = stat_seconds(line).unwrap();
        assert_eq!(comm, "tokio rt");
        assert!((s - 3.0).abs() < 1e-9);
    }

    const CLUSTER_BROKER: &str = "java\0-Xmx384m\0-cp\0/opt/kafka/libs/*\0kafka.Kafka\0/work/main/.stack/run/kafka-2.properties\0";
    const SINGLE_BROKER: &str =
        "java\0-Xmx768m\0kafka.Kafka\0/work/main/.stack/run/kafka.properties\0";

    fn cluster() -> Topology {
        let nodes: Vec<String> = (7000..=7005)
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        Topology::new(
            "127.0.0.1:19092,127.0.0.1:19093,127.0.0.1:19094",
            "redis://127.0.0.1:7000",
            &nodes,
        )
    }

    fn single() -> Topology {
        Topology::new("127.0.0.1:9092", "redis://127.0.0.1:6379/0", &[])
    }

    #[test]
    fn the_cluster_counts_only_the_brokers_started_with_a_numbered_properties_file() {
        assert_eq!(cluster().name, "cluster");
        assert!(cluster().has_kafka(CLUSTER_BROKER));
        assert!(!cluster().has_kafka(SINGLE_BROKER));
    }

    #[test]
    fn the_single_topology_counts_only_its_own_broker() {
        assert_eq!(single().name, "single");
        assert!(single().has_kafka(SINGLE_BROKER));
        assert!(!single().has_kafka(CLUSTER_BROKER));
    }

    #[test]
    fn redis_nodes_are_told_apart_by_the_port_in_their_title() {
        let (cluster, single) = (cluster(), single());
        for title in [
            "redis-server 127.0.0.1:7001 [cluster]",
            "redis-server 127.0.0.1:7005 [cluster]    ",
        ] {
            assert!(cluster.has_redis(title), "{title}");
            assert!(!single.has_redis(title), "{title}");
        }
        let own = "redis-server 127.0.0.1:6379";
        assert!(single.has_redis(own));
        assert!(!cluster.has_redis(own));
        assert!(single.has_redis("redis-server *:6379"));
    }

    #[test]
    fn a_redis_url_without_a_port_means_6379() {
        assert_eq!(redis_url_port("redis://127.0.0.1/0"), Some(6379));
        assert_eq!(redis_url_port("redis://:pw@127.0.0.1:7002"), Some(7002));
    }

    #[test]
    fn this_process_is_seen_using_cpu() {
        let before = snapshot();
        let mut x = 0u64;
        for i in 0..50_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = snapshot().since(&before);
        assert!(used.service_s > 0.0, "{used:?}");
        assert!(used.machine_s >= used.service_s * 0.5, "{used:?}");
    }
}
