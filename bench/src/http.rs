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

/// What the rate search found.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// The best achieved rate of a run with no error, P99 under the bound and at
    /// least 95 % of the rate asked (0 when none passed).
    pub sustainable: f64,
    /// The best achieved rate of any run (saturation throughput).
    pub peak: f64,
    pub runs: Vec<Summary>,
}

/// Doubles the rate from `start` up to `max_rate` until a run saturates (under
/// 90 % of the rate asked, or over 1 % errors).
pub async fn max_sustainable(
    start: f64,
    max_rate: f64,
    p99_limit_ms: f64,
    mut run: impl AsyncFnMut(f64) -> anyhow::Result<Summary>,
) -> anyhow::Result<Search> {
    let (mut rate, mut found) = (start, Search::default());
    while rate <= max_rate {
        let s = run(rate).await?;
        if s.errors == 0 && s.p99_ms < p99_limit_ms && s.achieved_rate >= 0.95 * rate {
            found.sustainable = found.sustainable.max(s.achieved_rate);
        }
        found.peak = found.peak.max(s.achieved_rate);
        let saturated = s.achieved_rate < 0.9 * rate || s.errors * 100 > s.sent;
        found.runs.push(s);
        if saturated {
            break;
        }
        rate *= 2.0;
    }
    Ok(found)
}
