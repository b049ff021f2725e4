//! What a fixed-rate run measured: every request's latency from its *intended*
//! send time (no coordinated omission) folded into an HDR histogram, plus a
//! per-second series for the plots.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::cpu::CpuUse;

/// One request's outcome, as the generator recorded it.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When the answer came, in microseconds since the run's start.
    pub done_us: u64,
    /// Microseconds from the intended send time to the answer.
    pub latency_us: u64,
    pub ok: bool,
}

/// One second of a run, for the plots.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds since the run's start.
    pub t: u32,
    /// Successful answers in this second.
    pub ok: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The longest host stall the meter saw in this second
    /// ([`crate::stalls`]), milliseconds.
    pub stall_ms: f64,
}

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
    /// CPU used during the run, by part of the stack.
    pub cpu: CpuUse,
    /// Per second: answers, latency percentiles and host stalls.
    pub series: Vec<Second>,
    /// When second 0 began, milliseconds since the Unix epoch: to set the
    /// series beside other logs (the broker's GC log has wall-clock stamps).
    pub started_unix_ms: u64,
}

impl Summary {
    /// CPU microseconds of the service under test per successful request.
    pub fn service_us_per_request(&self) -> f64 {
        per(self.cpu.service_s, self.ok)
    }

    /// The share of the machine's CPU time the hypervisor gave to other guests.
    pub fn steal_percent(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = self.sent as f64 / self.target_rate.max(1e-9);
        100.0 * self.cpu.steal_s / (wall * cores).max(1e-9)
    }

    /// How busy the whole machine was (100 % = every core), neighbours included.
    pub fn machine_busy_percent(&self) -> f64 {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = self.sent as f64 / self.target_rate.max(1e-9);
        100.0 * self.cpu.machine_s / (wall * cores).max(1e-9)
    }

    /// The longest host stall of the run, milliseconds.
    pub fn max_stall_ms(&self) -> f64 {
        self.series.iter().map(|s| s.stall_ms).fold(0.0, f64::max)
    }

    /// Seconds whose P99 reached `p99_ms`, and how many of them the host
    /// stalled for at least `stall_ms`.
    pub fn slow_seconds(&self, p99_ms: f64, stall_ms: f64) -> (usize, usize) {
        let slow: Vec<&Second> = self
            .series
            .iter()
            .filter(|s| s.ok > 0 && s.p99_ms >= p99_ms)
            .collect();
        let stalled = slow.iter().filter(|s| s.stall_ms >= stall_ms).count();
        (slow.len(), stalled)
    }

    /// Sets each second's host stall from what the meter saw over the run.
    pub fn attach_stalls(&mut self, stalls: &crate::stalls::Stalls) {
        for s in &mut self.series {
            s.stall_ms = stalls.max_ms(s.t as usize);
        }
    }

    /// CPU microseconds of service + PostgreSQL + Kafka + Redis per request.
    pub fn stack_us_per_request(&self) -> f64 {
        per(self.cpu.stack_s(), self.ok)
    }
}

/// Microseconds of CPU per item: `seconds` spread over `n`.
pub fn per(seconds: f64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        seconds * 1e6 / n as f64
    }
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// Milliseconds at quantile `q` of a microsecond histogram.
pub fn ms_at(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Folds the samples of a run of `sent` requests asked at `rate`.
pub fn summarize(rate: f64, sent: u64, samples: &[Sample]) -> anyhow::Result<Summary> {
    let mut all = histogram()?;
    let mut seconds: Vec<(Histogram<u64>, u64, u64)> = Vec::new();
    let (mut ok, mut errors, mut last_us) = (0u64, 0u64, 0u64);
    for s in samples {
        last_us = last_us.max(s.done_us);
        let t = (s.done_us / 1_000_000) as usize;
        while seconds.len() <= t {
            seconds.push((histogram()?, 0, 0));
        }
        if s.ok {
            ok += 1;
            all.saturating_record(s.latency_us.max(1));
            seconds[t].0.saturating_record(s.latency_us.max(1));
            seconds[t].1 += 1;
        } else {
            errors += 1;
            seconds[t].2 += 1;
        }
    }
    let elapsed = (last_us as f64 / 1e6).max(1e-9);
    let series = seconds
        .iter()
        .enumerate()
        .map(|(t, (h, ok, errors))| Second {
            t: t as u32,
            ok: *ok,
            errors: *errors,
            p50_ms: ms_at(h, 0.50),
            p99_ms: ms_at(h, 0.99),
            stall_ms: 0.0,
        })
        .collect();
    Ok(Summary {
        target_rate: rate,
        achieved_rate: ok as f64 / elapsed,
        sent,
        ok,
        errors,
        p50_ms: ms_at(&all, 0.50),
        p99_ms: ms_at(&all, 0.99),
        p999_ms: ms_at(&all, 0.999),
        max_ms: all.max() as f64 / 1000.0,
        cpu: CpuUse::default(),
        series,
        started_unix_ms: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_counts_errors_apart_and_buckets_by_second() -> anyhow::Result<()> {
        let samples = [
            Sample {
                done_us: 100_000,
                latency_us: 1_000,
                ok: true,
            },
            Sample {
                done_us: 1_500_000,
                latency_us: 3_000,
                ok: true,
            },
            Sample {
                done_us: 2_000_000,
                latency_us: 9_000,
                ok: false,
            },
        ];
        let s = summarize(1.5, 3, &samples)?;
        assert_eq!((s.ok, s.errors, s.sent), (2, 1, 3));
        assert!((s.achieved_rate - 1.0).abs() < 1e-9);
        assert_eq!(s.series.len(), 3);
        assert_eq!(
            (s.series[0].ok, s.series[1].ok, s.series[2].errors),
            (1, 1, 1)
        );
        assert!((s.max_ms - 3.0).abs() < 0.01);
        Ok(())
    }

    #[test]
    fn a_slow_second_counts_as_stalled_only_when_the_host_stalled_in_it() -> anyhow::Result<()> {
        let samples: Vec<Sample> = [(100_000, 2_000), (1_100_000, 45_000), (2_100_000, 30_000)]
            .into_iter()
            .map(|(done_us, latency_us)| Sample {
                done_us,
                latency_us,
                ok: true,
            })
            .collect();
        let mut s = summarize(1.0, 3, &samples)?;
        s.attach_stalls(&crate::stalls::Stalls {
            max_late_us: vec![300, 41_000, 900],
            cpu_s: 0.0,
        });
        assert_eq!(s.slow_seconds(20.0, 5.0), (2, 1));
        assert!((s.max_stall_ms() - 41.0).abs() < 1e-9);
        assert!((s.series[2].stall_ms - 0.9).abs() < 1e-9);
        Ok(())
    }
}
