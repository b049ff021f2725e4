//! Scenario 1 (single-like API vs a bare warp POST returning 204 with the same
//! body) and scenario 5 (cached `GET` count vs a bare warp GET), both against
//! an in-process ingest on port 0 with its own topic, database and prefix.

use crate::baselines;
use crate::env::{BenchEnv, Service};
use crate::http::{self, Http, Search, max_sustainable};
use crate::keys::{ITEM_TYPE, Keys};
use crate::load::per;
use crate::report::{Report, Row};
use crate::scenarios::Config;

/// The P99 bound of "sustainable" for writes.
pub const WRITE_P99_MS: f64 = 20.0;
/// The P99 bound of "sustainable" for cached reads.
pub const READ_P99_MS: f64 = 2.0;
/// Items per bulk count request.
const BULK_ITEMS: usize = 100;

/// Runs scenario 1; answers our rate search (for scenario 6).
pub async fn single_like(cfg: &Config, report: &mut Report) -> anyhow::Result<Search> {
    const NAME: &str = "1 single-like";
    let env = BenchEnv::new(8).await?;
    let ingest = env.start_ingest().await?;
    let bare = baselines::bare_post().await?;
    let load = Http {
        connections: cfg.connections,
    };
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 1)?;
    let (ours_at, bare_at) = (ingest.addr, bare.addr);
    // Warm both: connections, schema, producer metadata.
    load.post_likes(ours_at, &mut keys, 500.0, cfg.step / 4)
        .await?;
    load.post_likes(bare_at, &mut keys, 500.0, cfg.step / 4)
        .await?;
    for &rate in &cfg.fixed_rates {
        let ours = load.post_likes(ours_at, &mut keys, rate, cfg.step).await?;
        let base = load.post_likes(bare_at, &mut keys, rate, cfg.step).await?;
        latency_rows(report, NAME, rate, &ours, &base, "bare warp POST 204");
        report.runs(NAME, "ours", &[ours]);
        report.runs(NAME, "bare warp POST", &[base]);
    }
    let ours = max_sustainable(cfg.plan(WRITE_P99_MS), async |rate| {
        load.post_likes(ours_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    let base = max_sustainable(cfg.plan(WRITE_P99_MS), async |rate| {
        load.post_likes(bare_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    search_rows(
        report,
        NAME,
        "likes/s",
        "20 ms",
        &ours,
        &base,
        "bare warp POST 204",
    );
    stop(ingest, bare).await?;
    env.clean().await?;
    Ok(ours)
}

/// Runs scenario 5: reads of counts cached in Redis (warmed first).
pub async fn cached_read(cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    const NAME: &str = "5 cached read";
    let env = BenchEnv::new(1).await?;
    let ingest = env.start_ingest().await?;
    let bare = baselines::bare_get().await?;
    warm_cache(&http::client()?, &ingest, cfg.items.min(20_000)).await?;
    let load = Http {
        connections: cfg.connections,
    };
    let mut keys = Keys::new(cfg.items.min(20_000), cfg.zipf_exponent, cfg.users, 5)?;
    let (ours_at, bare_at) = (ingest.addr, bare.addr);
    for &rate in &cfg.fixed_rates {
        let ours = load.get_counts(ours_at, &mut keys, rate, cfg.step).await?;
        let base = load.get_counts(bare_at, &mut keys, rate, cfg.step).await?;
        latency_rows(report, NAME, rate, &ours, &base, "bare warp GET");
        report.runs(NAME, "ours", &[ours]);
        report.runs(NAME, "bare warp GET", &[base]);
    }
    let ours = max_sustainable(cfg.plan(READ_P99_MS), async |rate| {
        load.get_counts(ours_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    let base = max_sustainable(cfg.plan(READ_P99_MS), async |rate| {
        load.get_counts(bare_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    search_rows(
        report,
        NAME,
        "reads/s",
        "2 ms",
        &ours,
        &base,
        "bare warp GET",
    );
    // Bulk reads: BULK_ITEMS counts per request, at a tenth of the first rate.
    let rate = cfg.fixed_rates[0] / 10.0;
    let side = |s| format!("{s} (bulk, {BULK_ITEMS} items)");
    let ours = load
        .get_bulk_counts(ours_at, &mut keys, BULK_ITEMS, rate, cfg.step)
        .await?;
    let base = load
        .get_bulk_counts(bare_at, &mut keys, BULK_ITEMS, rate, cfg.step)
        .await?;
    for (label, o, b) in [
        ("P50", ours.p50_ms, base.p50_ms),
        ("P99", ours.p99_ms, base.p99_ms),
    ] {
        let metric = format!("bulk {BULK_ITEMS} items: {label} ms at {rate:.0} requests/s");
        report
            .rows
            .push(Row::new(NAME, &metric, o, b, false, "bare warp GET"));
    }
    report.runs(NAME, &side("ours"), &[ours]);
    report.runs(NAME, &side("bare warp GET"), &[base]);
    stop(ingest, bare).await?;
    env.clean().await
}

/// Fills Redis with every item's count through the bulk endpoint (misses refilled).
async fn warm_cache(client: &reqwest::Client, ingest: &Service, items: u64) -> anyhow::Result<()> {
    let ids: Vec<u64> = (1..=items).collect();
    for chunk in ids.chunks(1000) {
        let list: Vec<String> = chunk.iter().map(|i| format!("{ITEM_TYPE}:{i}")).collect();
        let url = ingest.url(&format!("/v1/counts?items={}", list.join(",")));
        let status = client.get(url).send().await?.status();
        anyhow::ensure!(status.is_success(), "warming the cache: {status}");
    }
    Ok(())
}

fn latency_rows(
    report: &mut Report,
    name: &str,
    rate: f64,
    ours: &crate::load::Summary,
    base: &crate::load::Summary,
    baseline: &str,
) {
    for (label, o, b) in [
        ("P50", ours.p50_ms, base.p50_ms),
        ("P99", ours.p99_ms, base.p99_ms),
        ("P99.9", ours.p999_ms, base.p999_ms),
    ] {
        let metric = format!("{label} ms at {rate:.0}/s");
        report
            .rows
            .push(Row::new(name, &metric, o, b, false, baseline));
    }
    let metric = format!("service CPU µs per request at {rate:.0}/s");
    let (o, b) = (ours.service_us_per_request(), base.service_us_per_request());
    report
        .rows
        .push(Row::new(name, &metric, o, b, false, baseline));
    // The baseline touches no broker: its figure is the brokers' idle floor.
    let metric = format!("Kafka CPU µs per request at {rate:.0}/s");
    let (o, b) = (
        per(ours.cpu.kafka_s, ours.ok),
        per(base.cpu.kafka_s, base.ok),
    );
    report
        .rows
        .push(Row::new(name, &metric, o, b, false, baseline));
    let metric = format!("Kafka CPU µs per request at {rate:.0}/s, net of the idle floor");
    report.rows.push(Row::new(
        name,
        &metric,
        (o - b).max(0.0),
        b,
        false,
        baseline,
    ));
    let metric = format!("stack CPU µs per request at {rate:.0}/s (service+PG+Kafka+Redis)");
    let (o, b) = (ours.stack_us_per_request(), base.stack_us_per_request());
    report
        .rows
        .push(Row::new(name, &metric, o, b, false, baseline));
}

/// The two rows of a rate search (sustainable under the P99 bound, and peak)
/// and its runs.
pub fn search_rows(
    report: &mut Report,
    name: &str,
    unit: &str,
    bound: &str,
    ours: &Search,
    base: &Search,
    baseline: &str,
) {
    let sustainable = format!("max sustainable {unit} (P99 < {bound})");
    let row = Row::new(
        name,
        &sustainable,
        ours.sustainable,
        base.sustainable,
        true,
        baseline,
    );
    report.rows.push(row);
    let peak = format!("peak {unit} (saturation)");
    report
        .rows
        .push(Row::new(name, &peak, ours.peak, base.peak, true, baseline));
    report.runs(name, "ours (search)", &ours.runs);
    report.runs(name, &format!("{baseline} (search)"), &base.runs);
}

async fn stop(ingest: Service, bare: Service) -> anyhow::Result<()> {
    ingest.stop().await?;
    bare.stop().await
}
