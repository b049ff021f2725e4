//! The open-loop load generator: requests start at a fixed rate whatever the
//! server does, and each latency is measured from the request's *intended* send
//! time, so a stalled server shows up in the tail instead of slowing the load
//! (no coordinated omission). Latencies go into an HDR histogram.

use std::future::Future;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// What one fixed-rate run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The rate asked for, requests per second.
    pub target_rate: f64,
    /// Requests that succeeded per second, first intended send to last answer.
    pub achieved_rate: f64,
    pub sent: u64,
    pub ok: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// Milliseconds at quantile `q` of a microsecond histogram.
pub fn ms_at(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Runs `make(i)` for `i` in `0..rate × duration`, request `i` intended at
/// `start + i / rate`. Each future answers whether its request succeeded.
pub async fn open_loop<F, Fut>(
    rate: f64,
    duration: Duration,
    mut make: F,
) -> anyhow::Result<Summary>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, bool, Instant)>();
    let mut hist = histogram()?;
    let collector = tokio::spawn(async move {
        let (mut ok, mut errors, mut last) = (0u64, 0u64, start);
        while let Some((micros, success, done)) = rx.recv().await {
            last = last.max(done);
            if success {
                ok += 1;
                hist.saturating_record(micros.max(1));
            } else {
                errors += 1;
            }
        }
        (hist, ok, errors, last)
    });
    for i in 0..total {
        let intended = start + Duration::from_secs_f64(i as f64 / rate);
        if intended > Instant::now() {
            tokio::time::sleep_until(intended).await;
        }
        let request = make(i);
        let tx = tx.clone();
        tokio::spawn(async move {
            let success = request.await;
            let done = Instant::now();
            let micros = done.saturating_duration_since(intended).as_micros() as u64;
            let _ = tx.send((micros, success, done));
        });
    }
    drop(tx);
    let (hist, ok, errors, last) = collector.await?;
    let elapsed = last
        .saturating_duration_since(start)
        .as_secs_f64()
        .max(1e-9);
    Ok(Summary {
        target_rate: rate,
        achieved_rate: ok as f64 / elapsed,
        sent: total,
        ok,
        errors,
        p50_ms: ms_at(&hist, 0.50),
        p99_ms: ms_at(&hist, 0.99),
        p999_ms: ms_at(&hist, 0.999),
        max_ms: hist.max() as f64 / 1000.0,
    })
}
