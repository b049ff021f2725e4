//! Scenario 2: `POST /v1/likes:batch` throughput (a few clients, each sending
//! full batches back to back) against a raw rdkafka producer loop writing the
//! same number of pre-encoded events with the product's producer settings.
//! Also the CPU per like of the broker and the stack while the batches flow
//! (the clients run in the bench process, so the stack figure holds them),
//! and each batch request's latency (closed loop: a client sends its next
//! batch when the previous one is answered).

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::cpu;
use crate::env::BenchEnv;
use crate::http;
use crate::keys::{ITEM_TYPE, Keys};
use crate::load::{histogram, ms_at, per};
use crate::report::{Report, Row};
use crate::scenarios::Config;
use crate::scenarios::{drain, events};

/// Goal (issue 18): batch API likes/s ÷ the raw producer loop's.
const BATCH_VS_RAW: f64 = 0.85;

const NAME: &str = "2 batch API";
/// Events per batch (the API allows up to `MAX_BATCH_EVENTS`, 1000 by default).
const BATCH: usize = 1000;
/// Clients sending batches at once.
const CLIENTS: usize = 4;

/// The same scenario's other rows: the ingest with its protections on.
const PROTECTED: &str = "2 batch API, protections on";
const UNPROTECTED: &str = "ours with protections off (the rows above)";

/// What one ingest did with the clients' batches.
struct Flow {
    /// Events accepted (202 in their result).
    accepted: u64,
    likes_per_s: f64,
    latency: hdrhistogram::Histogram<u64>,
    used: cpu::CpuUse,
}

/// Runs scenario 2.
pub async fn batch(cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    let env = BenchEnv::new(8).await?;
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 2)?;
    let duration = cfg.step * 2;
    let ingest = env.start_ingest().await?;
    let plain = flow(&ingest.url("/v1/likes:batch"), &mut keys, duration).await?;
    ingest.stop().await?;
    // The production path: a call per user of a batch before the produce,
    // a settle per event after it.
    let ingest = env.start_protected_ingest().await?;
    let guarded = flow(&ingest.url("/v1/likes:batch"), &mut keys, duration).await?;
    ingest.stop().await?;

    let accepted = plain.accepted;
    let n = accepted.max(10_000);
    let events = events::generate(&mut keys, n)?;
    let (base, base_used) = drain::fill(&env, &events).await?;
    const RAW: &str = "raw rdkafka producer loop, same producer settings";
    report.rows.push(
        Row::new(NAME, "likes/s", plain.likes_per_s, base, true, RAW).goal_ratio(BATCH_VS_RAW),
    );
    report.rows.push(Row::new(
        NAME,
        "Kafka CPU µs per like",
        per(plain.used.kafka_s, accepted),
        per(base_used.kafka_s, n),
        false,
        RAW,
    ));
    report.rows.push(Row::new(
        NAME,
        "stack CPU µs per like (service+clients+PG+Kafka+Redis)",
        per(plain.used.stack_s(), accepted),
        per(base_used.stack_s(), n),
        false,
        RAW,
    ));
    // No baseline: the raw loop has no requests, only records in flight.
    for (label, q) in [("P50", 0.5), ("P99", 0.99)] {
        let metric = format!("{label} ms per batch of {BATCH} ({CLIENTS} clients, closed loop)");
        report.rows.push(Row::new(
            NAME,
            &metric,
            ms_at(&plain.latency, q),
            0.0,
            false,
            "none",
        ));
    }
    protection_rows(report, &guarded, &plain);
    report.notes.push(format!(
        "2: {CLIENTS} clients sending batches of {BATCH} back to back for {duration:?}, to the ingest with its protections off and then on; {accepted} / {} events accepted; baseline wrote {n} pre-encoded events",
        guarded.accepted
    ));
    env.clean().await
}

/// What the protections cost a batch's events: the protected ingest beside
/// the unprotected one of the same run, with Redis's CPU apart (the
/// protections' only store).
fn protection_rows(report: &mut Report, protected: &Flow, plain: &Flow) {
    let (o, b) = (protected.accepted, plain.accepted);
    let figures = [
        ("likes/s", protected.likes_per_s, plain.likes_per_s, true),
        (
            "Redis CPU µs per like",
            per(protected.used.redis_s, o),
            per(plain.used.redis_s, b),
            false,
        ),
        (
            "stack CPU µs per like (service+clients+PG+Kafka+Redis)",
            per(protected.used.stack_s(), o),
            per(plain.used.stack_s(), b),
            false,
        ),
        (
            "P99 ms per batch",
            ms_at(&protected.latency, 0.99),
            ms_at(&plain.latency, 0.99),
            false,
        ),
    ];
    for (metric, o, b, higher) in figures {
        report
            .rows
            .push(Row::new(PROTECTED, metric, o, b, higher, UNPROTECTED));
    }
}

/// The clients send full batches to `url` back to back for `duration`.
async fn flow(url: &str, keys: &mut Keys, duration: Duration) -> anyhow::Result<Flow> {
    let client = http::client()?;
    let mut bodies = Vec::new();
    let per_client = (duration.as_secs_f64() * 100_000.0 / (BATCH * CLIENTS) as f64) as usize + 1;
    for _ in 0..CLIENTS * per_client {
        bodies.push(batch_body(keys));
    }
    let before = cpu::snapshot();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for mine in bodies.chunks(per_client).map(<[String]>::to_vec) {
        let (client, url) = (client.clone(), url.to_string());
        tasks.spawn(async move {
            let mut accepted = 0u64;
            let mut latency = histogram()?;
            for body in mine {
                let sent = Instant::now();
                if sent >= deadline {
                    break;
                }
                accepted += send_batch(&client, &url, body).await?;
                latency.saturating_record((sent.elapsed().as_micros() as u64).max(1));
            }
            anyhow::Ok((accepted, latency))
        });
    }
    let (mut accepted, mut latency) = (0, histogram()?);
    while let Some(done) = tasks.join_next().await {
        let (mine, theirs) = done??;
        accepted += mine;
        latency.add(theirs)?;
    }
    let likes_per_s = accepted as f64 / started.elapsed().as_secs_f64();
    Ok(Flow {
        accepted,
        likes_per_s,
        latency,
        used: cpu::snapshot().since(&before),
    })
}

fn batch_body(keys: &mut Keys) -> String {
    let events: Vec<String> = (0..BATCH)
        .map(|_| {
            let (user, item) = keys.next_pair();
            format!(
                r#"{{"action":"like","user_id":{user},"item_id":{item},"item_type":{ITEM_TYPE}}}"#
            )
        })
        .collect();
    format!(r#"{{"events":[{}]}}"#, events.join(","))
}

/// Sends one batch; answers how many of its events were accepted.
async fn send_batch(client: &reqwest::Client, url: &str, body: String) -> anyhow::Result<u64> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(30))
        .body(body)
        .send()
        .await?;
    let status = response.status();
    anyhow::ensure!(status.is_success(), "batch answered {status}");
    // Only the count is read; serde skips the per-event results unparsed.
    #[derive(serde::Deserialize)]
    struct Answer {
        accepted: u64,
    }
    let answer: Answer = response.json().await?;
    Ok(answer.accepted)
}
