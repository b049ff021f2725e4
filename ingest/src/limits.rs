//! The protection and size limits of the API (`RATE_LIMIT_*`, `DEDUP_WINDOW_MS`,
//! `MAX_BATCH_*`, `MAX_IN_FLIGHT`, `READ_YOUR_WRITES_*`,
//! `CACHE_REFILL_TTL_SECONDS`, `REDIS_CLIENT_CACHE_ENTRIES`), read once
//! from the environment beside [`crate::Settings`].

use std::time::Duration;

use likes_infra::Error;
use likes_infra::redis::ratelimit::Rate;
use likes_infra::settings;

/// Limits and protections of one ingest instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// `RATE_LIMIT_PER_SECOND` / `RATE_LIMIT_BURST`: the per-user token bucket;
    /// `None` (a rate of 0) turns rate limiting off.
    pub rate: Option<Rate>,
    /// `DEDUP_WINDOW_MS`: how long a repeated identical action is answered
    /// without producing; `None` (0) turns quick dedup off.
    pub dedup_window: Option<Duration>,
    /// `MAX_BATCH_EVENTS`: the most events one batch may hold.
    pub max_batch_events: usize,
    /// `MAX_BATCH_BODY_BYTES`: the largest batch body (413 above).
    pub max_batch_body_bytes: u64,
    /// `MAX_IN_FLIGHT`: events queued in the producer beyond which new writes
    /// are shed with 503 at once.
    pub max_in_flight: usize,
    /// `READ_YOUR_WRITES_TIMEOUT_MS`: how long a count waits for a token's
    /// offset to be projected.
    pub read_your_writes_timeout: Duration,
    /// `READ_YOUR_WRITES_MAX_WAITERS`: how many such counts may wait at once;
    /// beyond it a count with a token is refused with 503 at once.
    pub read_your_writes_max_waiters: usize,
    /// `CACHE_REFILL_TTL_SECONDS`: how long a read's refill of a count
    /// PostgreSQL never held stays in Redis; `None` (0) does not store it.
    pub cache_refill_ttl: Option<Duration>,
    /// `REDIS_CLIENT_CACHE_ENTRIES`: counts kept in process, exact through
    /// Redis's invalidation pushes; `None` (0) reads Redis on every GET.
    pub redis_client_cache: Option<std::num::NonZeroUsize>,
}

impl Default for Limits {
    /// The documented defaults (the README's settings table).
    fn default() -> Self {
        Self {
            rate: Some(Rate {
                per_second: 20.0,
                burst: 40,
            }),
            dedup_window: Some(Duration::from_millis(2000)),
            max_batch_events: 1000,
            max_batch_body_bytes: 1024 * 1024,
            max_in_flight: 100_000,
            read_your_writes_timeout: Duration::from_millis(2000),
            read_your_writes_max_waiters: 1000,
            cache_refill_ttl: Some(Duration::from_secs(
                settings::DEFAULT_CACHE_REFILL_TTL_SECONDS,
            )),
            redis_client_cache: std::num::NonZeroUsize::new(
                settings::DEFAULT_REDIS_CLIENT_CACHE_ENTRIES,
            ),
        }
    }
}

impl Limits {
    /// Reads the limits; a malformed one is an error naming its variable.
    pub fn from_env() -> Result<Self, Error> {
        let d = Self::default();
        let d_rate = d.rate.unwrap_or(Rate {
            per_second: 0.0,
            burst: 0,
        });
        let per_second: f64 = settings::parse("RATE_LIMIT_PER_SECOND", d_rate.per_second)?;
        let burst: u32 = settings::parse("RATE_LIMIT_BURST", d_rate.burst)?;
        if !per_second.is_finite() || per_second < 0.0 {
            return Err(Error::Setting {
                name: "RATE_LIMIT_PER_SECOND",
                message: "must be a number >= 0 (0 turns the limit off)".into(),
            });
        }
        if per_second > 0.0 && burst == 0 {
            return Err(Error::Setting {
                name: "RATE_LIMIT_BURST",
                message: "must be >= 1 while RATE_LIMIT_PER_SECOND > 0".into(),
            });
        }
        let dedup_ms: u64 = settings::parse("DEDUP_WINDOW_MS", d.dedup_window.map_or(0, millis))?;
        Ok(Self {
            rate: (per_second > 0.0).then_some(Rate { per_second, burst }),
            dedup_window: (dedup_ms > 0).then(|| Duration::from_millis(dedup_ms)),
            max_batch_events: settings::parse("MAX_BATCH_EVENTS", d.max_batch_events)?,
            max_batch_body_bytes: settings::parse("MAX_BATCH_BODY_BYTES", d.max_batch_body_bytes)?,
            max_in_flight: settings::parse("MAX_IN_FLIGHT", d.max_in_flight)?,
            read_your_writes_timeout: Duration::from_millis(settings::parse(
                "READ_YOUR_WRITES_TIMEOUT_MS",
                millis(d.read_your_writes_timeout),
            )?),
            read_your_writes_max_waiters: match settings::parse(
                "READ_YOUR_WRITES_MAX_WAITERS",
                d.read_your_writes_max_waiters,
            )? {
                0 => {
                    return Err(Error::Setting {
                        name: "READ_YOUR_WRITES_MAX_WAITERS",
                        message: "must be at least 1".into(),
                    });
                }
                n => n,
            },
            cache_refill_ttl: settings::cache_refill_ttl()?,
            redis_client_cache: settings::redis_client_cache()?,
        })
    }

    /// Sizes and timeouts as documented, but neither rate limiting nor quick
    /// dedup: for harnesses whose many requests from one user must all be
    /// produced.
    pub fn unprotected() -> Self {
        Self {
            rate: None,
            dedup_window: None,
            ..Self::default()
        }
    }

    /// Logs the values in use.
    pub fn log(&self) {
        tracing::info!(
            rate_per_second = self.rate.map_or(0.0, |r| r.per_second),
            rate_burst = self.rate.map_or(0, |r| r.burst),
            dedup_window_ms = self.dedup_window.map_or(0, millis),
            max_batch_events = self.max_batch_events,
            max_batch_body_bytes = self.max_batch_body_bytes,
            max_in_flight = self.max_in_flight,
            read_your_writes_timeout_ms = millis(self.read_your_writes_timeout),
            read_your_writes_max_waiters = self.read_your_writes_max_waiters,
            cache_refill_ttl_seconds = self.cache_refill_ttl.map_or(0, |t| t.as_secs()),
            redis_client_cache_entries = self.redis_client_cache.map_or(0, |n| n.get()),
            "ingest limits"
        );
    }
}

/// A duration as whole milliseconds (the unit of the `*_MS` settings).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_environment_without_limits_reads_as_the_documented_defaults() {
        let names = [
            "RATE_LIMIT_PER_SECOND",
            "RATE_LIMIT_BURST",
            "DEDUP_WINDOW_MS",
            "MAX_BATCH_EVENTS",
            "MAX_BATCH_BODY_BYTES",
            "MAX_IN_FLIGHT",
            "READ_YOUR_WRITES_TIMEOUT_MS",
            "READ_YOUR_WRITES_MAX_WAITERS",
            "CACHE_REFILL_TTL_SECONDS",
        ];
        if names.iter().any(|n| std::env::var_os(n).is_some()) {
            return; // the environment sets one: nothing to compare
        }
        assert_eq!(Limits::from_env().ok(), Some(Limits::default()));
    }
}
