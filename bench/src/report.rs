//! The results: one row per figure with its baseline measured in the same run
//! and the ratio ours ÷ baseline, written as `<date>.json` and `<date>.md`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::load::Summary;

/// One figure next to its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub metric: String,
    pub ours: f64,
    pub baseline: f64,
    /// ours ÷ baseline.
    pub ratio: f64,
    /// "higher is better" or "lower is better".
    pub better: &'static str,
    pub baseline_name: String,
    /// The goal this row is held to, in words (`None`: a figure, no goal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Whether the goal holds in this run (`None` when the row has no goal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub met: Option<bool>,
}

impl Row {
    pub fn new(
        scenario: &str,
        metric: &str,
        ours: f64,
        baseline: f64,
        higher_is_better: bool,
        baseline_name: &str,
    ) -> Self {
        let row = Self {
            scenario: scenario.into(),
            metric: metric.into(),
            ours,
            baseline,
            ratio: if baseline > 0.0 { ours / baseline } else { 0.0 },
            better: if higher_is_better { "higher" } else { "lower" },
            baseline_name: baseline_name.into(),
            target: None,
            met: None,
        };
        println!(
            "[{}] {}: ours {:.2}, baseline {:.2} ({}), ratio {:.3} ({} is better)",
            row.scenario,
            row.metric,
            row.ours,
            row.baseline,
            row.baseline_name,
            row.ratio,
            row.better
        );
        row
    }

    /// Holds the row to a goal: the ratio (ours ÷ baseline) at least
    /// `ratio` when higher is better, at most when lower is better.
    pub fn goal_ratio(self, ratio: f64) -> Self {
        let met = if self.better == "higher" {
            self.ratio >= ratio
        } else {
            self.ratio <= ratio && self.baseline > 0.0
        };
        let sign = if self.better == "higher" {
            "≥"
        } else {
            "≤"
        };
        self.goal(format!("ours ÷ baseline {sign} {ratio}"), met)
    }

    /// Holds the row to a goal stated in words, met or not.
    pub fn goal(mut self, target: String, met: bool) -> Self {
        println!(
            "[{}] goal {}: {} ({})",
            self.scenario,
            self.metric,
            if met { "met" } else { "missed" },
            target
        );
        self.target = Some(target);
        self.met = Some(met);
        self
    }
}

/// Everything one run measured.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub started_at: String,
    pub mode: String,
    pub command: String,
    /// The topology the run measured (whose Kafka and Redis CPU it counts).
    pub topology: Option<crate::cpu::Topology>,
    /// The replication factor of the run's topics.
    pub replication: Option<i32>,
    pub rows: Vec<Row>,
    /// Every fixed-rate run, by scenario and side.
    pub runs: Vec<(String, String, Summary)>,
    /// Scenarios that failed, with the error.
    pub failures: Vec<(String, String)>,
    pub notes: Vec<String>,
    /// The PNG plots written next to the results (file names).
    pub plots: Vec<String>,
    /// Scenario 3's cross-check of every item's count against the Kafka
    /// Streams peer, when it ran.
    pub peer_oracle: Option<Oracle>,
}

/// The peer oracle's verdict: how many items were compared and every one
/// whose counts differ (peer, `counters`, Redis), empty when all agree.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Oracle {
    pub items_compared: usize,
    pub differing: Vec<String>,
}

impl Report {
    /// Holds the row at `at` to a goal (see [`Row::goal`]).
    pub fn hold(&mut self, at: usize, goal: impl FnOnce(Row) -> Row) {
        if let Some(row) = self.rows.get(at).cloned() {
            self.rows[at] = goal(row);
        }
    }

    pub fn runs(&mut self, scenario: &str, side: &str, summaries: &[Summary]) {
        for s in summaries {
            self.runs.push((scenario.into(), side.into(), s.clone()));
        }
    }

    /// Writes `<out>/<stamp>.json` and `<out>/<stamp>.md`; answers their paths.
    pub fn write(&self, out: &Path, stamp: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(out)?;
        let json = out.join(format!("{stamp}.json"));
        std::fs::write(&json, serde_json::to_string_pretty(self)?)?;
        let md = out.join(format!("{stamp}.md"));
        std::fs::write(&md, self.markdown())?;
        Ok((json, md))
    }

    fn markdown(&self) -> String {
        let mut s = format!(
            "# likes-bench {} run, {}{}\n\n`{}`\n\nRatios are ours ÷ the baseline measured in the same run on the same machine.\n\n",
            self.mode,
            self.started_at,
            self.topology
                .as_ref()
                .map(|t| format!(", {} topology", t.name))
                .unwrap_or_default(),
            self.command
        );
        s.push_str("| scenario | metric | ours | baseline | ratio | better | baseline is | goal | met |\n|---|---|---:|---:|---:|---|---|---|---|\n");
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {:.2} | {:.2} | {:.3} | {} | {} | {} | {} |\n",
                r.scenario,
                r.metric,
                r.ours,
                r.baseline,
                r.ratio,
                r.better,
                r.baseline_name,
                r.target.as_deref().unwrap_or(""),
                match r.met {
                    Some(true) => "met",
                    Some(false) => "**missed**",
                    None => "",
                }
            ));
        }
        s.push_str(&format!("\n## Fixed-rate runs\n\n| scenario | side | target/s | achieved/s | ok | errors | P50 ms | P99 ms | P99.9 ms | max ms | service CPU µs/req | Kafka CPU µs/req | stack CPU µs/req | machine busy % | steal % | host stall max ms | seconds P99 ≥ {bound} ms (host stalled ≥ {stall} ms) |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            bound = crate::scenarios::api::WRITE_P99_MS,
            stall = crate::stalls::NOTABLE_MS,
        ));
        for (scenario, side, r) in &self.runs {
            let (slow, stalled) = r.slow_seconds(
                crate::scenarios::api::WRITE_P99_MS,
                crate::stalls::NOTABLE_MS,
            );
            s.push_str(&format!(
                "| {scenario} | {side} | {:.0} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {slow} ({stalled}) |\n",
                r.target_rate,
                r.achieved_rate,
                r.ok,
                r.errors,
                r.p50_ms,
                r.p99_ms,
                r.p999_ms,
                r.max_ms,
                r.service_us_per_request(),
                crate::load::per(r.cpu.kafka_s, r.ok),
                r.stack_us_per_request(),
                r.machine_busy_percent(),
                r.steal_percent(),
                r.max_stall_ms(),
            ));
        }
        if !self.failures.is_empty() {
            s.push_str("\n## Failed scenarios\n\n");
            for (name, error) in &self.failures {
                s.push_str(&format!("- {name}: {error}\n"));
            }
        }
        if let Some(oracle) = &self.peer_oracle {
            s.push_str(&format!(
                "\n## Peer oracle\n\n{} items compared (Kafka Streams peer, `counters`, Redis): {} differ\n",
                oracle.items_compared,
                oracle.differing.len()
            ));
            for d in &oracle.differing {
                s.push_str(&format!("- {d}\n"));
            }
        }
        if !self.plots.is_empty() {
            s.push_str("\n## Plots\n\n");
            for p in &self.plots {
                s.push_str(&format!("![{p}]({p})\n"));
            }
        }
        if !self.notes.is_empty() {
            s.push_str("\n## Notes\n\n");
            for n in &self.notes {
                s.push_str(&format!("- {n}\n"));
            }
        }
        s
    }
}
