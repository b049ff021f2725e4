//! Where the CPU went during a run, per part of the stack, from `/proc`: the
//! bench process's server threads (the service under test and its clients:
//! warp, the producer, sqlx, redis), the load generator's own thread,
//! PostgreSQL, the Kafka broker, Redis, the registry, and everything else on
//! the machine. A latency figure on a shared 2-core machine drifts with the
//! neighbours; CPU time per request does not, so it is what the capacity
//! arithmetic (`docs/capacity.md`) is built on.

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
                "redis-server" => cpu.redis_s += s,
                "java" => {
                    let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                    let cmdline = String::from_utf8_lossy(&cmdline);
                    if cmdline.contains("kafka.Kafka") {
                        cpu.kafka_s += s;
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
