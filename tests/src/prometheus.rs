//! The dev stack's Prometheus as the ops tests use it: where it is
//! (`PROMETHEUS_URL`, else `dev/config/prometheus.env`), the file_sd target file
//! a test writes for the processes it spawned (labelled with the test's id, so
//! its series never mix with another test's; removed when dropped), its HTTP
//! API's instant queries and rules, and the metric names a PromQL expression
//! refers to.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use serde_json::{Value, json};

use crate::process::repo_root;

/// Where Prometheus answers: `PROMETHEUS_URL`, else the address `dev/stack`
/// starts it on (`dev/config/prometheus.env`).
pub fn url() -> anyhow::Result<String> {
    if let Ok(url) = std::env::var("PROMETHEUS_URL") {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let file = repo_root().join("dev/config/prometheus.env");
    let text = std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("PROMETHEUS_URL="))
        .map(|u| u.trim_end_matches('/').to_string())
        .with_context(|| format!("no PROMETHEUS_URL= line in {}", file.display()))
}

/// The directory Prometheus reads target files from: `PROMETHEUS_TARGETS_DIR`,
/// else `dev/stack`'s `.stack/prometheus/targets` of this repository.
pub fn targets_dir() -> PathBuf {
    std::env::var_os("PROMETHEUS_TARGETS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".stack/prometheus/targets"))
}

/// A target file listing a test's processes (each under its job), every
/// target labelled `test="<id>"`; removed when dropped.
pub struct TargetFile {
    path: PathBuf,
    pub test: String,
}

impl TargetFile {
    /// Writes `<targets dir>/test-<id>.json` (beside, then renamed: Prometheus
    /// never reads half a file).
    pub fn write(test: &str, targets: &[(&str, SocketAddr)]) -> anyhow::Result<Self> {
        let dir = targets_dir();
        anyhow::ensure!(
            dir.is_dir(),
            "{} is missing: is Prometheus running? (dev/stack start prometheus)",
            dir.display()
        );
        let groups: Vec<Value> = targets
            .iter()
            .map(|(job, addr)| {
                json!({"targets": [addr.to_string()], "labels": {"job": job, "test": test}})
            })
            .collect();
        let path = dir.join(format!("test-{test}.json"));
        let partial = dir.join(format!("test-{test}.json.partial"));
        std::fs::write(&partial, serde_json::to_vec_pretty(&groups)?)?;
        std::fs::rename(&partial, &path)?;
        Ok(Self {
            path,
            test: test.to_string(),
        })
    }
}

impl Drop for TargetFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One series of an instant query's answer.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A client of Prometheus's HTTP API.
pub struct Prometheus {
    http: reqwest::Client,
    url: String,
}

impl Prometheus {
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::new(),
            url: url()?,
        })
    }

    /// `GET /api/v1/<path>` with `query`; the `data` of a `success` answer,
    /// else an error with Prometheus's `error` (a query that does not parse).
    async fn api(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let url = reqwest::Url::parse_with_params(&format!("{}/api/v1/{path}", self.url), query)?;
        let body: Value = self
            .http
            .get(url)
            .send()
            .await
            .with_context(|| {
                format!(
                    "Prometheus at {} (dev/stack start prometheus, or set PROMETHEUS_URL)",
                    self.url
                )
            })?
            .json()
            .await?;
        anyhow::ensure!(
            body["status"] == "success",
            "{path} {query:?}: {} {}",
            body["errorType"],
            body["error"]
        );
        Ok(body["data"].clone())
    }

    /// The series of the instant query `expr` (vector answers only).
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Series>> {
        let data = self.api("query", &[("query", expr)]).await?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        result
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = s["value"][1]
                    .as_str()
                    .context("a sample value")?
                    .parse::<f64>()?;
                Ok(Series { labels, value })
            })
            .collect()
    }

    /// Whether `expr` parses: Prometheus evaluates it without a `bad_data` error.
    pub async fn check(&self, expr: &str) -> anyhow::Result<()> {
        self.api("query", &[("query", expr)]).await.map(|_| ())
    }

    /// The rule groups Prometheus has loaded (`/api/v1/rules`).
    pub async fn rule_groups(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.api("rules", &[]).await?["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }
}

/// Words of PromQL that are not metric names where a metric name could stand
/// (aggregations, as in `sum by (le) (...)`, included).
const KEYWORDS: [&str; 25] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
];

/// The metric names `expr` selects: identifiers outside label matchers, strings
/// and range brackets that are not function calls, keywords, grouping labels or
/// `$variables` (Grafana's).
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // The previous word, to skip the label list of `by (...)`, `on (...)` etc.
    let mut label_list = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < chars.len() && chars[i] != close {
                    if chars[i] == '"' {
                        i += 1;
                        while i < chars.len() && chars[i] != '"' {
                            if chars[i] == '\\' {
                                i += 1;
                            }
                            i += 1;
                        }
                    }
                    i += 1;
                }
                i += 1;
            }
            '(' if label_list => {
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                label_list = false;
                i += 1;
            }
            '$' => {
                i += 1;
                if i < chars.len() && chars[i] == '{' {
                    while i < chars.len() && chars[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                }
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let mut next = i;
                while next < chars.len() && chars[next].is_whitespace() {
                    next += 1;
                }
                let lower = word.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    label_list = true;
                } else if chars.get(next) == Some(&'(') || KEYWORDS.contains(&lower.as_str()) {
                    // A function call or an operator.
                } else {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number or a duration (5m, 1e3): never a name.
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).into_iter().collect()
    }

    #[test]
    fn metric_names_skip_functions_labels_groupings_and_variables() {
        assert_eq!(
            names(
                r#"histogram_quantile(0.99, sum by (route, le) (rate(likes_a_bucket{route!~"/x|y{z}"}[$__rate_interval])))"#
            ),
            ["likes_a_bucket"]
        );
        assert_eq!(
            names("likes_q / likes_c > 0.8 and on (instance) up{job=\"x\"} == 0"),
            ["likes_c", "likes_q", "up"]
        );
        assert_eq!(
            names("sum without (instance) (increase(likes_p_total[15m])) > 0"),
            ["likes_p_total"]
        );
        assert_eq!(
            names("time() - max by (partition) (likes_t_seconds) offset 5m > 1e3"),
            ["likes_t_seconds"]
        );
        assert_eq!(names("sum(x{a='b'}) by (c)"), ["x"]);
    }
}
