//! Two runs side by side: the same scenarios measured on the single-node
//! topology and on the cluster (`bench/compare-topologies.sh`), each figure
//! of one next to the other's with the ratio cluster ÷ single, and what the
//! broker CPU difference means per follower replica (the replication cost
//! `docs/capacity.md` plans with).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The parts of a run's JSON the comparison reads.
#[derive(Debug, Deserialize)]
struct Saved {
    started_at: String,
    mode: String,
    command: String,
    topology: Option<SavedTopology>,
    replication: Option<i32>,
    rows: Vec<SavedRow>,
    #[serde(default)]
    runs: Vec<(String, String, SavedRun)>,
    failures: Vec<(String, String)>,
}

/// A fixed-rate run of the service under test.
#[derive(Debug, Deserialize)]
struct SavedRun {
    target_rate: f64,
    achieved_rate: f64,
    ok: u64,
    p50_ms: f64,
    p99_ms: f64,
    cpu: SavedCpu,
}

#[derive(Debug, Deserialize)]
struct SavedCpu {
    service_s: f64,
    postgres_s: f64,
    kafka_s: f64,
    redis_s: f64,
}

impl SavedRun {
    fn kafka_us(&self) -> f64 {
        crate::load::per(self.cpu.kafka_s, self.ok)
    }

    fn stack_us(&self) -> f64 {
        let c = &self.cpu;
        crate::load::per(c.service_s + c.postgres_s + c.kafka_s + c.redis_s, self.ok)
    }
}

#[derive(Debug, Deserialize)]
struct SavedTopology {
    name: String,
}

#[derive(Debug, Deserialize)]
struct SavedRow {
    scenario: String,
    metric: String,
    ours: f64,
    baseline: f64,
    better: String,
    baseline_name: String,
}

impl Saved {
    fn read(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not a likes-bench result: {e}", path.display()))
    }

    fn topology(&self) -> &str {
        self.topology
            .as_ref()
            .map_or("unknown", |t| t.name.as_str())
    }

    fn row(&self, scenario: &str, metric: &str) -> Option<&SavedRow> {
        self.rows
            .iter()
            .find(|r| r.scenario == scenario && r.metric == metric)
    }
}

fn ratio(cluster: f64, single: f64) -> String {
    if single > 0.0 {
        format!("{:.2}", cluster / single)
    } else {
        "–".into()
    }
}

/// The comparison of `single` and `cluster` as Markdown.
fn markdown(single: &Saved, cluster: &Saved) -> String {
    let mut s = format!(
        "# likes-bench: cluster next to single ({} mode)\n\n\
         - single: {} (`{}`), topic replication {}\n\
         - cluster: {} (`{}`), topic replication {}\n\n\
         Each topology ran in its own process, one after the other, on the same machine \
         with the other topology's nodes up and idle. Kafka and Redis CPU are those of the \
         topology under test. \"baseline\" columns are each run's own in-run baseline \
         (for the Kafka CPU rows of scenario 1: the brokers' idle floor, spread over the \
         baseline's requests).\n\n\
         | scenario | metric | single | cluster | cluster ÷ single | better | baseline (single) | baseline (cluster) | baseline is |\n\
         |---|---|---:|---:|---:|---|---:|---:|---|\n",
        single.mode,
        single.started_at,
        single.command,
        single.replication.map_or("?".into(), |r| r.to_string()),
        cluster.started_at,
        cluster.command,
        cluster.replication.map_or("?".into(), |r| r.to_string()),
    );
    let mut kafka = Vec::new();
    for a in &single.rows {
        let Some(b) = cluster.row(&a.scenario, &a.metric) else {
            continue;
        };
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {} | {} | {:.2} | {:.2} | {} |\n",
            a.scenario,
            a.metric,
            a.ours,
            b.ours,
            ratio(b.ours, a.ours),
            a.better,
            a.baseline,
            b.baseline,
            a.baseline_name
        ));
        if a.metric.starts_with("Kafka CPU") {
            kafka.push((a, b));
        }
    }
    let followers = cluster.replication.unwrap_or(3) - single.replication.unwrap_or(1);
    if !kafka.is_empty() && followers > 0 {
        s.push_str(&format!(
            "\n## Replication's broker CPU\n\n\
             The cluster's three brokers together against the single broker, for the same \
             likes: the difference is what {followers} more replica(s) of each record cost \
             (follower fetch and append, and the leader serving those fetches), all on one \
             machine over loopback, so CPU, not network.\n\n\
             | scenario | metric | single µs | cluster µs | cluster ÷ single | per follower replica µs | per follower ÷ leader-only |\n\
             |---|---|---:|---:|---:|---:|---:|\n"
        ));
        for (a, b) in kafka {
            let per_follower = (b.ours - a.ours) / f64::from(followers);
            s.push_str(&format!(
                "| {} | {} | {:.1} | {:.1} | {} | {:.1} | {} |\n",
                a.scenario,
                a.metric,
                a.ours,
                b.ours,
                ratio(b.ours, a.ours),
                per_follower,
                ratio(per_follower, a.ours),
            ));
        }
    }
    s.push_str(&same_rates(single, cluster, followers));
    for run in [single, cluster] {
        if !run.failures.is_empty() {
            s.push_str(&format!("\n## Failed on {}\n\n", run.topology()));
            for (name, error) in &run.failures {
                s.push_str(&format!("- {name}: {error}\n"));
            }
        }
    }
    s
}

/// Scenario 1's runs of the service (fixed rates and the search) paired by
/// the rate asked: the fixed-rate rows above may compare a saturated cluster
/// with an unsaturated single broker, these show how far each got.
fn same_rates(single: &Saved, cluster: &Saved, followers: i32) -> String {
    fn ours(run: &Saved) -> Vec<&SavedRun> {
        run.runs
            .iter()
            .filter(|(scenario, side, _)| scenario.starts_with("1 ") && side.starts_with("ours"))
            .map(|(_, _, r)| r)
            .collect()
    }
    let (a, b) = (ours(single), ours(cluster));
    let mut s = String::from(
        "\n## Scenario 1 by rate asked (fixed-rate and search runs)\n\n\
         | asked/s | achieved single | achieved cluster | P50 ms single | P50 ms cluster | P99 ms single | P99 ms cluster | Kafka µs/like single | Kafka µs/like cluster | cluster ÷ single | per follower ÷ leader-only | stack µs/like single | stack µs/like cluster | cluster ÷ single |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut pairs = 0;
    for x in &a {
        let Some(y) = b
            .iter()
            .find(|y| (y.target_rate - x.target_rate).abs() < 0.5)
        else {
            continue;
        };
        pairs += 1;
        let per_follower = (y.kafka_us() - x.kafka_us()) / f64::from(followers.max(1));
        s.push_str(&format!(
            "| {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {} | {} | {:.1} | {:.1} | {} |\n",
            x.target_rate,
            x.achieved_rate,
            y.achieved_rate,
            x.p50_ms,
            y.p50_ms,
            x.p99_ms,
            y.p99_ms,
            x.kafka_us(),
            y.kafka_us(),
            ratio(y.kafka_us(), x.kafka_us()),
            ratio(per_follower, x.kafka_us()),
            x.stack_us(),
            y.stack_us(),
            ratio(y.stack_us(), x.stack_us()),
        ));
    }
    if pairs == 0 { String::new() } else { s }
}

/// Reads the two runs, checks each measured the topology it is given as,
/// writes `<out>/<stamp>.md` and prints it.
pub fn write(single: &Path, cluster: &Path, out: &Path, stamp: &str) -> anyhow::Result<PathBuf> {
    let (a, b) = (Saved::read(single)?, Saved::read(cluster)?);
    anyhow::ensure!(
        a.topology() == "single" && b.topology() == "cluster",
        "expected a single-topology run then a cluster run, got {} ({}) and {} ({})",
        a.topology(),
        single.display(),
        b.topology(),
        cluster.display()
    );
    let md = markdown(&a, &b);
    std::fs::create_dir_all(out)?;
    let path = out.join(format!("{stamp}.md"));
    std::fs::write(&path, &md)?;
    println!("{md}");
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(topology: &str, replication: i32, kafka_us: f64, p99: f64) -> Saved {
        let row = |metric: &str, ours: f64| SavedRow {
            scenario: "1 single-like".into(),
            metric: metric.into(),
            ours,
            baseline: 1.0,
            better: "lower".into(),
            baseline_name: "bare warp POST 204".into(),
        };
        Saved {
            started_at: "t".into(),
            mode: "quick".into(),
            command: "likes-bench".into(),
            topology: Some(SavedTopology {
                name: topology.into(),
            }),
            replication: Some(replication),
            rows: vec![
                row("P99 ms at 2000/s", p99),
                row("Kafka CPU µs per request at 2000/s", kafka_us),
            ],
            runs: Vec::new(),
            failures: Vec::new(),
        }
    }

    #[test]
    fn each_figure_stands_next_to_the_other_topology_s_with_their_ratio() {
        let md = markdown(&run("single", 1, 50.0, 4.0), &run("cluster", 3, 150.0, 6.0));
        assert!(
            md.contains("| 1 single-like | P99 ms at 2000/s | 4.00 | 6.00 | 1.50 |"),
            "{md}"
        );
    }

    #[test]
    fn the_broker_difference_is_split_over_the_follower_replicas() {
        let md = markdown(&run("single", 1, 50.0, 4.0), &run("cluster", 3, 150.0, 6.0));
        // (150 − 50) / 2 followers = 50 µs each, as much as the leader alone.
        assert!(
            md.contains(
                "| Kafka CPU µs per request at 2000/s | 50.0 | 150.0 | 3.00 | 50.0 | 1.00 |"
            ),
            "{md}"
        );
    }
}
