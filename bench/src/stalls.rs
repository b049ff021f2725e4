//! A host stall meter, after jHiccup: a thread of its own asks to sleep 1 ms
//! again and again and records how late each wake-up came, the longest per
//! second of a run. The thread does none of the stack's work, so a late
//! wake-up is the machine's (the scheduler with two cores for every process,
//! the hypervisor, memory reclaim), not the service's: a second whose P99
//! spikes while this thread was held as long is a second the host stalled,
//! and no change of ours would have shortened it.
//!
//! Its own CPU (about 1,000 wake-ups a second) is counted with the load
//! generator's, never with the service's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cpu;

/// The name the meter's thread carries.
pub const STALLS_THREAD: &str = "stalls";

/// A stall worth naming in the report: half the seed's 20 ms P99 bound,
/// and a hundred times the meter's usual lateness (tens of microseconds).
pub const NOTABLE_MS: f64 = 10.0;

/// How long the meter asks to sleep each time.
const TICK: Duration = Duration::from_millis(1);

/// What a meter saw, once stopped.
#[derive(Debug, Clone, Default)]
pub struct Stalls {
    /// Per second since the meter's origin: the latest wake-up, microseconds
    /// past the tick asked for.
    pub max_late_us: Vec<u64>,
    /// The meter thread's own CPU seconds.
    pub cpu_s: f64,
}

impl Stalls {
    /// The longest stall of second `t`, in milliseconds (0 when unseen).
    pub fn max_ms(&self, t: usize) -> f64 {
        self.max_late_us
            .get(t)
            .map_or(0.0, |us| *us as f64 / 1000.0)
    }
}

/// A running meter; [`Meter::stop`] ends it.
pub struct Meter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Stalls>,
}

impl Meter {
    /// Starts measuring; seconds are counted from `origin` (wake-ups before
    /// it count in second 0).
    pub fn start(origin: Instant) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(STALLS_THREAD.into())
            .spawn(move || {
                let own = cpu::this_thread();
                let mut max_late_us = Vec::new();
                while !stopping.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    std::thread::sleep(TICK);
                    let woke = Instant::now();
                    let late = woke.duration_since(asked).saturating_sub(TICK);
                    record(
                        &mut max_late_us,
                        woke.saturating_duration_since(origin),
                        late,
                    );
                }
                Stalls {
                    max_late_us,
                    cpu_s: cpu::this_thread() - own,
                }
            })?;
        Ok(Self { stop, thread })
    }

    /// Stops the meter and answers what it saw (nothing if its thread died).
    pub fn stop(self) -> Stalls {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Keeps `late` as second `at`'s stall when it is the longest so far.
fn record(max_late_us: &mut Vec<u64>, at: Duration, late: Duration) {
    let t = at.as_secs() as usize;
    if max_late_us.len() <= t {
        max_late_us.resize(t + 1, 0);
    }
    let late_us = u64::try_from(late.as_micros()).unwrap_or(u64::MAX);
    max_late_us[t] = max_late_us[t].max(late_us);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_second_keeps_its_longest_stall() {
        let mut seen = Vec::new();
        record(
            &mut seen,
            Duration::from_millis(200),
            Duration::from_micros(80),
        );
        record(
            &mut seen,
            Duration::from_millis(900),
            Duration::from_millis(42),
        );
        record(
            &mut seen,
            Duration::from_millis(950),
            Duration::from_micros(60),
        );
        record(
            &mut seen,
            Duration::from_millis(2_100),
            Duration::from_micros(70),
        );
        assert_eq!(seen, vec![42_000, 0, 70]);
        let stalls = Stalls {
            max_late_us: seen,
            cpu_s: 0.0,
        };
        assert_eq!(
            (stalls.max_ms(0), stalls.max_ms(1), stalls.max_ms(9)),
            (42.0, 0.0, 0.0)
        );
    }

    #[test]
    fn a_meter_sees_the_seconds_it_ran() -> std::io::Result<()> {
        let meter = Meter::start(Instant::now())?;
        std::thread::sleep(Duration::from_millis(1_100));
        let stalls = meter.stop();
        assert!(
            stalls.max_late_us.len() >= 2,
            "seconds seen: {:?}",
            stalls.max_late_us
        );
        Ok(())
    }
}
