//! `likes-bench`: runs every scenario next to its baseline in the same run on
//! the same machine and writes `<out>/<date>.json` and `<out>/<date>.md`.
//! Needs the stack up (`dev/stack up`); creates its own topics, databases and
//! Redis prefixes and never touches the live services' data.

mod baselines;
mod compare;
mod cpu;
mod env;
mod http;
mod keys;
mod load;
mod plots;
mod report;
mod scenarios;
mod stalls;

use std::path::PathBuf;

use clap::Parser;

use crate::report::Report;
use crate::scenarios::Config;

/// Benchmarks with baselines measured side by side.
#[derive(Debug, Parser)]
#[command(name = "likes-bench")]
struct Args {
    /// Small sizes and short runs (well under 5 minutes).
    #[arg(long)]
    quick: bool,
    /// Where the results files go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Run only these scenarios (numbers 1 to 7); all when empty.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
    /// The results files' name without extension (default: the UTC start time).
    #[arg(long)]
    stamp: Option<String>,
    /// Runs nothing: writes `<out>/<stamp>.md` comparing a single-topology
    /// run's JSON with a cluster run's (see bench/compare-topologies.sh).
    #[arg(long, num_args = 2, value_names = ["SINGLE_JSON", "CLUSTER_JSON"])]
    compare: Vec<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = chrono::Utc::now();
    let stamp = args
        .stamp
        .clone()
        .unwrap_or_else(|| started.format("%Y-%m-%dT%H-%M-%S").to_string());
    if let [single, cluster] = args.compare.as_slice() {
        let md = compare::write(single, cluster, &args.out, &stamp)?;
        println!("wrote {}", md.display());
        return Ok(());
    }
    // The services in this process log as the binaries do, so their cost is
    // what ships; warp's own lines at shutdown are noise.
    likes_infra::telemetry::init(&format!(
        "{},warp::server=off",
        likes_infra::telemetry::SERVICE_FILTER
    ));
    let cfg = Config::new(args.quick);
    let mut report = Report {
        started_at: started.to_rfc3339(),
        mode: if cfg.quick { "quick" } else { "full" }.into(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        topology: Some(cpu::Topology::from_env().clone()),
        replication: Some(likes_infra::kafka::default_replication(&env::kafka_bootstrap()).await?),
        ..Report::default()
    };
    let topology = cpu::Topology::from_env();
    println!(
        "topology under test: {} (Kafka {}, Redis ports {:?})",
        topology.name,
        env::kafka_bootstrap(),
        topology.redis_ports
    );
    report.notes.push(format!(
        "{} items (Zipf s = {}), {} uniform users; fixed-rate runs of {:?}; open loop, latency from the intended send time",
        cfg.items, cfg.zipf_exponent, cfg.users, cfg.step
    ));
    report.notes.push(format!(
        "producer linger {} ms (KAFKA_PRODUCER_LINGER_MS), the ingest's and the durable-write baseline's",
        likes_infra::settings::producer_linger()?.as_millis()
    ));
    let wants = |n: u32| args.only.is_empty() || args.only.contains(&n);
    let mut ours_max = None;
    if wants(1) || wants(6) {
        match scenarios::api::single_like(&cfg, &mut report).await {
            Ok(max) => ours_max = Some(max),
            Err(e) => report
                .failures
                .push(("1 single-like".into(), format!("{e:#}"))),
        }
    }
    if wants(4) {
        // The rate the whole pipeline sustains: scenario 1 measured the ingest
        // alone; with the projector and its PostgreSQL work on the same two
        // cores, half of that keeps the 202's P99 in bounds (at the full rate
        // the ingest itself falls behind and the figure would measure a queue).
        let rate = ours_max
            .as_ref()
            .map(|s| s.sustainable / 2.0)
            .filter(|r| *r > 0.0)
            .unwrap_or(cfg.fixed_rates[0]);
        if let Err(e) = scenarios::convergence::convergence(&cfg, &mut report, rate).await {
            report
                .failures
                .push(("4 convergence".into(), format!("{e:#}")));
        }
    }
    if wants(2)
        && let Err(e) = scenarios::batch::batch(&cfg, &mut report).await
    {
        report
            .failures
            .push(("2 batch API".into(), format!("{e:#}")));
    }
    if wants(3)
        && let Err(e) = scenarios::drain::drain(&cfg, &mut report).await
    {
        report
            .failures
            .push(("3 projector drain".into(), format!("{e:#}")));
    }
    if wants(5)
        && let Err(e) = scenarios::api::cached_read(&cfg, &mut report).await
    {
        report
            .failures
            .push(("5 cached read".into(), format!("{e:#}")));
    }
    if wants(6)
        && let Some(ours) = &ours_max
        && let Err(e) = scenarios::naive::naive(&cfg, &mut report, ours).await
    {
        report.failures.push(("6 naive".into(), format!("{e:#}")));
    }
    if wants(7)
        && let Err(e) = scenarios::memory::memory(&cfg, &mut report).await
    {
        report.failures.push(("7 memory".into(), format!("{e:#}")));
    }
    std::fs::create_dir_all(&args.out)?;
    match plots::write(&report, &args.out, &stamp) {
        Ok(files) => report.plots = files,
        Err(e) => report.notes.push(format!("plots not written: {e:#}")),
    }
    let (json, md) = report.write(&args.out, &stamp)?;
    println!(
        "wrote {}, {} and {} plots",
        json.display(),
        md.display(),
        report.plots.len()
    );
    if !report.failures.is_empty() {
        for (name, error) in &report.failures {
            eprintln!("scenario {name} failed: {error}");
        }
        anyhow::bail!("{} scenario(s) failed", report.failures.len());
    }
    Ok(())
}
