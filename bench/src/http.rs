//! HTTP load against one URL: likes posted with fresh keys, or count reads, at
//! a fixed rate through the open-loop generator, and the search for the highest
//! rate that still meets a P99 bound.

use std::time::Duration;

use crate::keys::{ITEM_TYPE, Keys};
use crate::load::{Summary, open_loop};

/// A client shared by every run (same for ours and the baselines).
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(4096)
        .build()?)
}

async fn answered(request: reqwest::RequestBuilder) -> bool {
    match request.send().await {
        Ok(response) => {
            let ok = response.status().is_success();
            ok && response.bytes().await.is_ok()
        }
        Err(_) => false,
    }
}

/// Posts like bodies to `url` at `rate` for `duration`.
pub async fn post_likes(
    client: &reqwest::Client,
    url: &str,
    keys: &mut Keys,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Summary> {
    open_loop(rate, duration, |_| {
        let request = client
            .post(url)
            .header("content-type", "application/json")
            .body(keys.next_body());
        answered(request)
    })
    .await
}

/// Reads `GET {base}/v1/items/1/{item}/count` for Zipf items at `rate`.
pub async fn get_counts(
    client: &reqwest::Client,
    base: &str,
    keys: &mut Keys,
    rate: f64,
    duration: Duration,
) -> anyhow::Result<Summary> {
    open_loop(rate, duration, |_| {
        let (_, item) = keys.next_pair();
        answered(client.get(format!("{base}/v1/items/{ITEM_TYPE}/{item}/count")))
    })
    .await
}

/// Doubles the rate from `start` while a run keeps P99 under `p99_limit_ms`,
/// no errors, and at least 95 % of the rate asked; then answers the best
/// achieved rate that passed (0 when none did) and every run.
pub async fn max_sustainable(
    start: f64,
    max_rate: f64,
    p99_limit_ms: f64,
    mut run: impl AsyncFnMut(f64) -> anyhow::Result<Summary>,
) -> anyhow::Result<(f64, Vec<Summary>)> {
    let (mut rate, mut best, mut runs) = (start, 0.0f64, Vec::new());
    while rate <= max_rate {
        let summary = run(rate).await?;
        let passed = summary.errors == 0
            && summary.p99_ms < p99_limit_ms
            && summary.achieved_rate >= 0.95 * rate;
        if passed {
            best = best.max(summary.achieved_rate);
        }
        runs.push(summary);
        if !passed {
            break;
        }
        rate *= 2.0;
    }
    Ok((best, runs))
}
