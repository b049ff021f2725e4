//! The alert rules and the dashboard against the real services and a real
//! Prometheus (`dev/stack test` starts it; `dev/stack start prometheus` alone):
//! every metric they name is exported by the running ingest, projector and
//! archiver; Prometheus scrapes those processes (listed in a target file of the
//! test's own) and evaluates the rules; a poison record raises the dead-letter
//! alert with its reason. And every alert is documented and unit-tested both
//! ways in `ops/prometheus/alerts_test.yml`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use likes_tests::archiver_process::ArchiverProcess;
use likes_tests::process::{IngestProcess, ProjectorProcess, repo_root};
use likes_tests::prometheus::{Prometheus, TargetFile, metric_names};
use likes_tests::scrape::Scrape;
use likes_tests::{TestEnv, eventually};
use yaml_rust2::{Yaml, YamlLoader};

const ALERTS: &str = "ops/prometheus/alerts.yml";
const ALERT_TESTS: &str = "ops/prometheus/alerts_test.yml";
const DASHBOARD: &str = "ops/grafana/likes.json";
const DEAD_LETTER_ALERT: &str = "LikesDeadLetters";
const ITEM: i64 = 7;

/// Prometheus's own series, not the services'.
const PROMETHEUS_OWN: [&str; 3] = ["up", "ALERTS", "ALERTS_FOR_STATE"];

/// Metrics that exist only once what they measure has happened (a partition
/// parked: labelled by partition and reason, it cannot be exported at 0): a
/// healthy process cannot show them, so each must at least be the name its
/// service declares. Every counter with a fixed label set is exported at 0.
const ONLY_ONCE_IT_HAPPENS: [(&str, &str); 1] = [(
    "likes_projector_parked_partitions",
    "projector/src/metrics.rs",
)];

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{path} is YAML: {e}"))
        .remove(0)
}

/// Every alerting rule of ops/prometheus/alerts.yml.
fn alert_rules() -> Vec<Yaml> {
    let alerts = yaml(ALERTS);
    let mut rules = Vec::new();
    for group in alerts["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            rules.push(rule.clone());
        }
    }
    rules
}

/// Every PromQL expression of the alerts and of the dashboard, with where it is.
fn expressions() -> Vec<(String, String)> {
    let mut all: Vec<(String, String)> = alert_rules()
        .iter()
        .map(|r| {
            (
                format!("alert {}", r["alert"].as_str().unwrap_or("?")),
                r["expr"].as_str().expect("expr").to_string(),
            )
        })
        .collect();
    let dashboard: serde_json::Value =
        serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON");
    let mut panels: Vec<&serde_json::Value> = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        panels.push(panel);
        panels.extend(panel["panels"].as_array().into_iter().flatten());
    }
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                all.push((
                    format!("panel {:?}", panel["title"].as_str().unwrap_or("?")),
                    expr.to_string(),
                ));
            }
        }
    }
    all
}

/// The three services on the test's slice, with a few likes projected,
/// counted and archived, the ingest's watch reporting no lag and the
/// archiver its lag.
struct Services {
    ingest: IngestProcess,
    projector: ProjectorProcess,
    archiver: ArchiverProcess,
}

impl Services {
    async fn start_and_drive(env: &TestEnv) -> anyhow::Result<Self> {
        let ingest = IngestProcess::start(env).await?;
        let projector = ProjectorProcess::start_with_metrics(env)?;
        let archiver = ArchiverProcess::start(env).await?;
        for user in 1..=5 {
            ingest.like(user, ITEM).await?;
        }
        let services = Self {
            ingest,
            projector,
            archiver,
        };
        eventually(Duration::from_secs(60), || async {
            let count: serde_json::Value = reqwest::get(format!(
                "http://{}/v1/items/1/{ITEM}/count",
                services.ingest.addr
            ))
            .await?
            .json()
            .await?;
            let [ingest, projector, archiver] = services.scrape().await?;
            Ok(count["count"] == 5
                && ingest.names().contains("likes_projection_lag_records")
                && ingest.sum("likes_projection_lag_records", &[]) == 0.0
                && projector.sum("likes_projector_freshness_seconds_count", &[]) >= 1.0
                && archiver.sum("likes_archive_files_total", &[]) >= 1.0
                // Reported every 10 s.
                && archiver.names().contains("likes_archive_lag_records"))
        })
        .await?;
        Ok(services)
    }

    fn projector_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        self.projector
            .metrics_addr
            .ok_or_else(|| anyhow::anyhow!("the projector serves no metrics"))
    }

    async fn scrape(&self) -> anyhow::Result<[Scrape; 3]> {
        Ok([
            Scrape::get(self.ingest.addr, "/metrics").await?,
            Scrape::get(self.projector_addr()?, "/metrics").await?,
            Scrape::get(self.archiver.metrics_addr, "/metrics").await?,
        ])
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.archiver.kill().await?;
        self.projector.terminate().await?;
        self.ingest.terminate().await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_alerts_and_the_dashboard_use_is_exported_by_the_running_services()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let services = Services::start_and_drive(&env).await?;
    let exported: BTreeSet<String> = services
        .scrape()
        .await?
        .iter()
        .flat_map(Scrape::names)
        .collect();
    services.stop().await?;

    let mut missing = Vec::new();
    let mut checked = BTreeSet::new();
    for (place, expr) in expressions() {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{place} names no metric: {expr}");
        for name in names {
            if PROMETHEUS_OWN.contains(&name.as_str()) {
                continue;
            }
            if let Some((_, source)) = ONLY_ONCE_IT_HAPPENS.iter().find(|(n, _)| *n == name) {
                assert!(
                    read(source).contains(&format!("\"{name}\"")),
                    "{place}: {name} is not a metric {source} declares"
                );
            } else if !exported.contains(&name) {
                missing.push(format!("{name} ({place})"));
            }
            checked.insert(name);
        }
    }
    println!(
        "{} metric names checked; exported only once it happens: {:?}",
        checked.len(),
        ONLY_ONCE_IT_HAPPENS.map(|(n, _)| n)
    );
    assert!(
        missing.is_empty(),
        "named in the alerts or the dashboard but exported by none of ingest, projector, archiver:\n{}",
        missing.join("\n")
    );
    assert!(checked.len() >= 20, "only {} names found", checked.len());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_service_and_evaluates_the_alert_rules() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let prometheus = Prometheus::new()?;
    let started = Utc::now();
    let services = Services::start_and_drive(&env).await?;
    let test = format!("ops-{}", env.suffix);
    let targets = TargetFile::write(
        &test,
        &[
            ("likes-ingest", services.ingest.addr),
            ("likes-projector", services.projector_addr()?),
            ("likes-archive", services.archiver.metrics_addr),
        ],
    )?;

    // All three up, each under its job.
    let up = format!("up{{test=\"{test}\"}}");
    let seen = eventually(Duration::from_secs(60), || async {
        let series = prometheus.query(&up).await?;
        Ok(series.len() == 3 && series.iter().all(|s| s.value == 1.0))
    })
    .await;
    let series = prometheus.query(&up).await?;
    seen.map_err(|e| anyhow::anyhow!("{e}: {up} is {series:?}"))?;
    let jobs: BTreeSet<&str> = series
        .iter()
        .filter_map(|s| s.labels.get("job").map(String::as_str))
        .collect();
    assert_eq!(
        jobs,
        BTreeSet::from(["likes-archive", "likes-ingest", "likes-projector"])
    );

    // The scraped data is the services': the projector's two partitions are
    // active, the ingest's watch reports both partitions.
    let active = format!("likes_projector_partitions{{test=\"{test}\", state=\"active\"}}");
    eventually(Duration::from_secs(30), || async {
        Ok(prometheus
            .query(&active)
            .await?
            .first()
            .is_some_and(|s| s.value == 2.0))
    })
    .await?;
    let lag = prometheus
        .query(&format!("likes_projection_lag_records{{test=\"{test}\"}}"))
        .await?;
    let partitions: BTreeSet<&str> = lag
        .iter()
        .filter_map(|s| s.labels.get("partition").map(String::as_str))
        .collect();
    assert_eq!(partitions, BTreeSet::from(["0", "1"]));

    // Every alert of ops/prometheus/alerts.yml is loaded, healthy and evaluated
    // since the test began.
    let names: BTreeSet<String> = alert_rules()
        .iter()
        .map(|r| r["alert"].as_str().expect("alert").to_string())
        .collect();
    eventually(Duration::from_secs(30), || async {
        let groups = prometheus.rule_groups().await?;
        let mut loaded = BTreeSet::new();
        for group in &groups {
            let evaluated = group["lastEvaluation"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .is_some_and(|t| t >= started);
            for rule in group["rules"].as_array().into_iter().flatten() {
                if evaluated && rule["health"] == "ok" && rule["type"] == "alerting" {
                    loaded.insert(rule["name"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        Ok(loaded == names)
    })
    .await
    .map_err(|e| {
        anyhow::anyhow!("{e}: not every alert of {ALERTS} is loaded, healthy and evaluated")
    })?;

    // Every expression of the alerts and the dashboard parses and evaluates.
    for (place, expr) in expressions() {
        let expr = expr.replace("$__rate_interval", "1m");
        prometheus
            .check(&expr)
            .await
            .map_err(|e| anyhow::anyhow!("{place}: {e}"))?;
    }

    drop(targets);
    services.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_raises_the_dead_letter_alert_in_prometheus_with_its_reason()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let prometheus = Prometheus::new()?;
    let projector = ProjectorProcess::start_with_metrics(&env)?;
    let addr = projector
        .metrics_addr
        .ok_or_else(|| anyhow::anyhow!("the projector serves no metrics"))?;
    let test = format!("dlq-{}", env.suffix);
    let targets = TargetFile::write(&test, &[("likes-projector", addr)])?;

    // Prometheus holds the dead-letter counters at 0 before anything happens.
    let not_framed =
        format!("likes_projector_poison_records_total{{test=\"{test}\", reason=\"not_framed\"}}");
    eventually(Duration::from_secs(60), || async {
        Ok(prometheus
            .query(&not_framed)
            .await?
            .first()
            .is_some_and(|s| s.value == 0.0))
    })
    .await?;
    let firing = format!(
        "ALERTS{{alertname=\"{DEAD_LETTER_ALERT}\", alertstate=\"firing\", test=\"{test}\"}}"
    );
    assert!(
        prometheus.query(&firing).await?.is_empty(),
        "the alert fires before any dead letter"
    );

    // A record no producer of ours wrote: not framed for the registry.
    likes_tests::dead_letters::send_raw(&env, "1", b"hello, world").await?;

    let raised = eventually(Duration::from_secs(90), || async {
        Ok(!prometheus.query(&firing).await?.is_empty())
    })
    .await;
    let alerts = prometheus.query(&firing).await?;
    drop(targets);
    projector.terminate().await?;
    raised.map_err(|e| anyhow::anyhow!("{e}: {firing} never appeared"))?;

    assert_eq!(alerts.len(), 1, "one alert, for one reason: {alerts:?}");
    let alert = &alerts[0].labels;
    assert_eq!(alert.get("reason").map(String::as_str), Some("not_framed"));
    assert_eq!(alert.get("severity").map(String::as_str), Some("warning"));
    assert_eq!(
        alert.get("job").map(String::as_str),
        Some("likes-projector")
    );
    Ok(())
}

#[test]
fn every_alert_has_a_severity_a_runbook_and_unit_tests_that_fire_and_stay_quiet() {
    let tests = yaml(ALERT_TESTS);
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_vec().expect("tests") {
        for check in case["alert_rule_test"].as_vec().into_iter().flatten() {
            let name = check["alertname"].as_str().expect("alertname").to_string();
            match check["exp_alerts"].as_vec() {
                Some(alerts) if !alerts.is_empty() => firing.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    let readme = read("README.md");
    let rules = alert_rules();
    assert!(rules.len() >= 10, "{} alerts", rules.len());
    for rule in rules {
        let name = rule["alert"].as_str().expect("alert");
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity {severity:?}"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{name} has no {annotation}"
            );
        }
        assert_eq!(
            rule["annotations"]["runbook"].as_str(),
            Some(format!("README.md#runbook-{}", name.to_lowercase()).as_str()),
            "{name}'s runbook is its README section"
        );
        assert!(
            readme.lines().any(|l| l.starts_with('#')
                && l.trim_start_matches('#').trim() == format!("Runbook: {name}")),
            "README.md has no `Runbook: {name}` section for the runbook link to reach"
        );
        assert!(firing.contains(name), "{ALERT_TESTS} never fires {name}");
        assert!(
            quiet.contains(name),
            "{ALERT_TESTS} has no case where {name} stays quiet"
        );
    }
}
