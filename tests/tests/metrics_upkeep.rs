//! Metrics cost memory bounded by the metrics, not by the traffic: every
//! histogram sample (one per request in the ingest, one per event in the
//! projector) is folded into the histogram's buckets within
//! `METRICS_UPKEEP_EVERY`, whether or not anyone scrapes `/metrics`. Before,
//! only a scrape folded them, and a process nobody scraped kept every sample.
//! Its own test binary: the resident memory measured is this process's alone.

use std::time::Duration;

use likes_infra::telemetry::{METRICS_UPKEEP_EVERY, prometheus};

/// Samples recorded in each round: 4 M, tens of MB while kept.
const SAMPLES: usize = 4_000_000;

/// This process's resident memory in bytes.
fn resident() -> anyhow::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("unexpected statm {statm:?}"))?
        .parse()?;
    // The kernel's page size on every platform this stack runs on.
    Ok(pages * 4096)
}

/// Records a round of samples.
fn record_round() {
    let histogram = metrics::histogram!("likes_test_upkeep_seconds");
    for i in 0..SAMPLES {
        histogram.record((i % 100) as f64 / 1000.0);
    }
}

#[test]
fn histogram_samples_are_folded_without_a_scrape() -> anyhow::Result<()> {
    let handle = prometheus().ok_or_else(|| anyhow::anyhow!("recorder not installed"))?;
    let start = resident()?;
    record_round();
    let first = resident()?;
    // Past the next upkeep: the first round's samples are folded and freed.
    std::thread::sleep(METRICS_UPKEEP_EVERY + Duration::from_secs(1));
    record_round();
    let second = resident()?;
    let (kept, added) = (first as i64 - start as i64, second as i64 - first as i64);
    println!("resident memory: a round's samples kept {kept} B; the next round added {added} B");
    // Kept samples take 8 B each and more: the first round must show them, or
    // this measure could not tell a leak.
    assert!(
        kept > (SAMPLES * 4) as i64,
        "the first round kept only {kept} B"
    );
    // Folded, the first round's memory serves the second's.
    assert!(
        added < kept / 2,
        "the second round added {added} B after the first kept {kept} B: samples are never folded"
    );
    // Every sample is counted once it is folded.
    let text = handle.render();
    let count = text
        .lines()
        .find(|l| l.starts_with("likes_test_upkeep_seconds_count"))
        .and_then(|l| l.split_whitespace().last())
        .ok_or_else(|| anyhow::anyhow!("no count line in {text}"))?;
    assert_eq!(count, (2 * SAMPLES).to_string());
    Ok(())
}
