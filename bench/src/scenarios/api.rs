//! Scenario 1 (single-like API vs a bare warp POST returning 204 with the same
//! body) and scenario 5 (cached `GET` count vs a bare warp GET), both against
//! an in-process ingest on port 0 with its own topic, database and prefix.

use std::num::NonZeroUsize;

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

/// What the seed and issue 18 hold a single like to.
mod goals {
    /// P50 at every fixed rate up to [`UP_TO_PEAK`] of our peak.
    pub const P50_MS: f64 = 3.0;
    /// P99 at the same rates (the seed's bound).
    pub const P99_MS: f64 = 20.0;
    pub const UP_TO_PEAK: f64 = 0.7;
    /// Service CPU per like at the highest fixed rate, ÷ the bare POST's.
    pub const CPU_VS_BARE: f64 = 1.5;
    /// The same ÷ the minimal durable write's.
    pub const CPU_VS_DURABLE: f64 = 1.15;
    /// Our peak ÷ the minimal durable write's.
    pub const PEAK_VS_DURABLE: f64 = 0.85;
    /// Cached reads: service CPU per read ÷ the bare GET's, and peak ÷ its peak.
    pub const READ_CPU_VS_BARE: f64 = 1.3;
    pub const READ_PEAK_VS_BARE: f64 = 0.8;
}

const BARE_POST: &str = "bare warp POST 204";
/// Scenario 1's other rows: the same ingest with its protections on.
const PROTECTED: &str = "1 single-like, protections on";
const UNPROTECTED: &str = "ours with protections off (the rows above)";
const DURABLE: &str = "minimal durable write (same Avro record and producer, 202 after the ack)";

/// Runs scenario 1; answers our rate search (for scenario 6).
pub async fn single_like(cfg: &Config, report: &mut Report) -> anyhow::Result<Search> {
    const NAME: &str = "1 single-like";
    let env = BenchEnv::new(8).await?;
    let ingest = env.start_ingest().await?;
    // The production path: every like a Redis call before the produce and
    // one after.
    let protected = env.start_protected_ingest().await?;
    let bare = baselines::bare_post().await?;
    let durable = baselines::durable_post(&env.stack, crate::env::PRODUCE_TIMEOUT).await?;
    let load = Http {
        connections: cfg.connections,
    };
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 1)?;
    let (ours_at, bare_at, durable_at) = (ingest.addr, bare.addr, durable.addr);
    // Warm all four: connections, schema, producer metadata.
    for at in [ours_at, bare_at, durable_at, protected.addr] {
        load.post_likes(at, &mut keys, 500.0, cfg.step / 4).await?;
    }
    let mut fixed = Vec::new();
    for &rate in &cfg.fixed_rates {
        let ours = load.post_likes(ours_at, &mut keys, rate, cfg.step).await?;
        let base = load.post_likes(bare_at, &mut keys, rate, cfg.step).await?;
        let least = load
            .post_likes(durable_at, &mut keys, rate, cfg.step)
            .await?;
        let guarded = load
            .post_likes(protected.addr, &mut keys, rate, cfg.step)
            .await?;
        let vs_bare = latency_rows(report, NAME, rate, &ours, &base, BARE_POST);
        let vs_durable = latency_rows(report, NAME, rate, &ours, &least, DURABLE);
        protection_rows(report, rate, &guarded, &ours);
        fixed.push((rate, vs_bare, vs_durable));
        report.runs(NAME, "ours", &[ours]);
        report.runs(NAME, "bare warp POST", &[base]);
        report.runs(NAME, "minimal durable write", &[least]);
        report.runs(NAME, "ours with protections on", &[guarded]);
    }
    let ours = max_sustainable(cfg.plan(WRITE_P99_MS), async |rate| {
        load.post_likes(ours_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    let base = max_sustainable(cfg.plan(WRITE_P99_MS), async |rate| {
        load.post_likes(bare_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    let least = max_sustainable(cfg.plan(WRITE_P99_MS), async |rate| {
        load.post_likes(durable_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    search_rows(report, NAME, "likes/s", "20 ms", &ours, &base, BARE_POST);
    let peak = search_rows(report, NAME, "likes/s", "20 ms", &ours, &least, DURABLE);
    report.hold(peak, |r| r.goal_ratio(goals::PEAK_VS_DURABLE));
    // Latency goals at every fixed rate up to 70 % of our peak (on the rows
    // beside the minimal durable write); CPU goals at the highest fixed rate.
    for (rate, _, vs_durable) in &fixed {
        if *rate > goals::UP_TO_PEAK * ours.peak {
            continue;
        }
        report.hold(vs_durable.p50, |r| {
            let met = r.ours <= goals::P50_MS;
            r.goal(format!("≤ {} ms", goals::P50_MS), met)
        });
        report.hold(vs_durable.p99, |r| {
            let met = r.ours < goals::P99_MS;
            r.goal(format!("< {} ms", goals::P99_MS), met)
        });
    }
    if let Some((_, vs_bare, vs_durable)) = fixed.last() {
        report.hold(vs_bare.cpu, |r| r.goal_ratio(goals::CPU_VS_BARE));
        report.hold(vs_durable.cpu, |r| r.goal_ratio(goals::CPU_VS_DURABLE));
    }
    stop(ingest, bare).await?;
    protected.stop().await?;
    durable.stop().await?;
    env.clean().await?;
    Ok(ours)
}

/// Runs scenario 5: reads of counts cached in Redis (warmed first).
pub async fn cached_read(cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    const NAME: &str = "5 cached read";
    // The same reads through an ingest that keeps counts in process, exact
    // through Redis's invalidation pushes (REDIS_CLIENT_CACHE_ENTRIES).
    const CLIENT_CACHED: &str = "5 cached read, client-side cache";
    const ENTRIES: usize = 100_000;
    let env = BenchEnv::new(1).await?;
    // The plain ingest reads Redis on every GET whatever the default is.
    let ingest = env
        .start_ingest_with(|limits| limits.redis_client_cache = None)
        .await?;
    let cached = env
        .start_ingest_with(|limits| limits.redis_client_cache = NonZeroUsize::new(ENTRIES))
        .await?;
    let bare = baselines::bare_get().await?;
    warm_cache(&http::client()?, &ingest, cfg.items.min(20_000)).await?;
    let load = Http {
        connections: cfg.connections,
    };
    let mut keys = Keys::new(cfg.items.min(20_000), cfg.zipf_exponent, cfg.users, 5)?;
    let (ours_at, cached_at, bare_at) = (ingest.addr, cached.addr, bare.addr);
    // Fill the process cache the way traffic would.
    load.get_counts(cached_at, &mut keys, 2000.0, cfg.step / 2)
        .await?;
    let mut cpu_rows = None;
    for &rate in &cfg.fixed_rates {
        let ours = load.get_counts(ours_at, &mut keys, rate, cfg.step).await?;
        let in_process = load
            .get_counts(cached_at, &mut keys, rate, cfg.step)
            .await?;
        let base = load.get_counts(bare_at, &mut keys, rate, cfg.step).await?;
        let plain = latency_rows(report, NAME, rate, &ours, &base, "bare warp GET").cpu;
        let client = latency_rows(
            report,
            CLIENT_CACHED,
            rate,
            &in_process,
            &base,
            "bare warp GET",
        )
        .cpu;
        report.rows.push(Row::new(
            CLIENT_CACHED,
            &format!("service CPU µs per read at {rate:.0}/s, vs a Redis GET per read"),
            in_process.service_us_per_request(),
            ours.service_us_per_request(),
            false,
            "ours, a Redis GET per read",
        ));
        cpu_rows = Some((plain, client));
        report.runs(NAME, "ours", &[ours]);
        report.runs(CLIENT_CACHED, "ours, client-side cache", &[in_process]);
        report.runs(NAME, "bare warp GET", &[base]);
    }
    if let Some((plain, client)) = cpu_rows {
        report.hold(plain, |r| r.goal_ratio(goals::READ_CPU_VS_BARE));
        report.hold(client, |r| r.goal_ratio(goals::READ_CPU_VS_BARE));
    }
    let ours = max_sustainable(cfg.plan(READ_P99_MS), async |rate| {
        load.get_counts(ours_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    let in_process = max_sustainable(cfg.plan(READ_P99_MS), async |rate| {
        load.get_counts(cached_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    let base = max_sustainable(cfg.plan(READ_P99_MS), async |rate| {
        load.get_counts(bare_at, &mut keys, rate, cfg.step).await
    })
    .await?;
    let client_peak = search_rows(
        report,
        CLIENT_CACHED,
        "reads/s",
        "2 ms",
        &in_process,
        &base,
        "bare warp GET",
    );
    report.hold(client_peak, |r| r.goal_ratio(goals::READ_PEAK_VS_BARE));
    let peak = search_rows(
        report,
        NAME,
        "reads/s",
        "2 ms",
        &ours,
        &base,
        "bare warp GET",
    );
    report.hold(peak, |r| r.goal_ratio(goals::READ_PEAK_VS_BARE));
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
    cached.stop().await?;
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

/// Where a fixed-rate run's rows went, to hold them to goals afterwards.
struct LatencyRows {
    p50: usize,
    p99: usize,
    cpu: usize,
}

fn latency_rows(
    report: &mut Report,
    name: &str,
    rate: f64,
    ours: &crate::load::Summary,
    base: &crate::load::Summary,
    baseline: &str,
) -> LatencyRows {
    let first = report.rows.len();
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
    let cpu = report.rows.len();
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
    LatencyRows {
        p50: first,
        p99: first + 1,
        cpu,
    }
}

/// What the protections cost at one rate: the protected ingest beside the
/// unprotected one of the same run, with Redis's CPU apart (the protections'
/// only store).
fn protection_rows(
    report: &mut Report,
    rate: f64,
    protected: &crate::load::Summary,
    plain: &crate::load::Summary,
) {
    let figures = [
        ("P50 ms", protected.p50_ms, plain.p50_ms),
        ("P99 ms", protected.p99_ms, plain.p99_ms),
        (
            "service CPU µs per request",
            protected.service_us_per_request(),
            plain.service_us_per_request(),
        ),
        (
            "Redis CPU µs per request",
            per(protected.cpu.redis_s, protected.ok),
            per(plain.cpu.redis_s, plain.ok),
        ),
        (
            "stack CPU µs per request (service+PG+Kafka+Redis)",
            protected.stack_us_per_request(),
            plain.stack_us_per_request(),
        ),
    ];
    for (figure, o, b) in figures {
        let metric = format!("{figure} at {rate:.0}/s");
        report
            .rows
            .push(Row::new(PROTECTED, &metric, o, b, false, UNPROTECTED));
    }
}

/// The two rows of a rate search (sustainable under the P99 bound, and peak)
/// and its runs; answers where the peak row went.
pub fn search_rows(
    report: &mut Report,
    name: &str,
    unit: &str,
    bound: &str,
    ours: &Search,
    base: &Search,
    baseline: &str,
) -> usize {
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
    let at = report.rows.len();
    report
        .rows
        .push(Row::new(name, &peak, ours.peak, base.peak, true, baseline));
    // Ours is searched once and may stand beside two baselines.
    if !report
        .runs
        .iter()
        .any(|(scenario, side, _)| scenario == name && side == "ours (search)")
    {
        report.runs(name, "ours (search)", &ours.runs);
    }
    report.runs(name, &format!("{baseline} (search)"), &base.runs);
    at
}

async fn stop(ingest: Service, bare: Service) -> anyhow::Result<()> {
    ingest.stop().await?;
    bare.stop().await
}
