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

/// Runs scenario 2.
pub async fn batch(cfg: &Config, report: &mut Report) -> anyhow::Result<()> {
    let env = BenchEnv::new(8).await?;
    let ingest = env.start_ingest().await?;
    let url = ingest.url("/v1/likes:batch");
    let client = http::client()?;
    let mut keys = Keys::new(cfg.items, cfg.zipf_exponent, cfg.users, 2)?;
    let duration = cfg.step * 2;
    let mut bodies = Vec::new();
    let per_client = (duration.as_secs_f64() * 100_000.0 / (BATCH * CLIENTS) as f64) as usize + 1;
    for _ in 0..CLIENTS * per_client {
        bodies.push(batch_body(&mut keys));
    }
    let before = cpu::snapshot();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = JoinSet::new();
    for mine in bodies.chunks(per_client).map(<[String]>::to_vec) {
        let (client, url) = (client.clone(), url.clone());
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
    let ours = accepted as f64 / started.elapsed().as_secs_f64();
    let used = cpu::snapshot().since(&before);
    ingest.stop().await?;
    let n = accepted.max(10_000);
    let events = events::generate(&mut keys, n)?;
    let (base, base_used) = drain::fill(&env, &events).await?;
    const RAW: &str = "raw rdkafka producer loop, same producer settings";
    report
        .rows
        .push(Row::new(NAME, "likes/s", ours, base, true, RAW).goal_ratio(BATCH_VS_RAW));
    report.rows.push(Row::new(
        NAME,
        "Kafka CPU µs per like",
        per(used.kafka_s, accepted),
        per(base_used.kafka_s, n),
        false,
        RAW,
    ));
    report.rows.push(Row::new(
        NAME,
        "stack CPU µs per like (service+clients+PG+Kafka+Redis)",
        per(used.stack_s(), accepted),
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
            ms_at(&latency, q),
            0.0,
            false,
            "none",
        ));
    }
    report.notes.push(format!(
        "2: {CLIENTS} clients sending batches of {BATCH} back to back for {duration:?}; {accepted} events accepted; baseline wrote {n} pre-encoded events"
    ));
    env.clean().await
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
