//! Settings of `likes-projector`, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use likes_infra::Error;
use likes_infra::settings::{self, StackSettings};

/// Everything the projector needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka, registry, PostgreSQL and Redis locations.
    pub stack: StackSettings,
    /// `AGGREGATION_WINDOW_SECONDS`: how long a batch collects events (fractions allowed).
    pub window: Duration,
    /// `PROJECTOR_GROUP_ID`: the consumer group shared by all projector instances.
    pub group_id: String,
    /// `PROJECTOR_MAX_BATCH_EVENTS`: a batch closes early once it holds this many events.
    pub max_batch_events: usize,
    /// `PROJECTOR_WRITERS`: how many transactions, on as many connections, one
    /// batch is written in at once; the batch is split by partition, so each
    /// holds its partitions' rows and offsets and none touches another's rows.
    pub writers: usize,
    /// `DEDUP_HORIZON_SECONDS`: how long applied event ids are remembered; a retry
    /// of the same event id that reaches the log later than this counts as new.
    pub dedup_horizon: Duration,
    /// `PROJECTOR_METRICS_ADDR`: where Prometheus text is served; empty or `off` disables.
    pub metrics_addr: Option<SocketAddr>,
}

impl Settings {
    /// Reads the settings; a missing or malformed one is an error naming it.
    pub fn from_env() -> Result<Self, Error> {
        let seconds: f64 = settings::parse("AGGREGATION_WINDOW_SECONDS", 1.0)?;
        if !(seconds > 0.0 && seconds <= 60.0) {
            return Err(Error::Setting {
                name: "AGGREGATION_WINDOW_SECONDS",
                message: "must be more than 0 and at most 60".into(),
            });
        }
        Ok(Self {
            stack: StackSettings::from_env()?,
            window: Duration::from_secs_f64(seconds),
            group_id: settings::string("PROJECTOR_GROUP_ID", "likes-projector"),
            max_batch_events: settings::parse("PROJECTOR_MAX_BATCH_EVENTS", 200_000)?,
            writers: match settings::parse("PROJECTOR_WRITERS", 2)? {
                0 => {
                    return Err(Error::Setting {
                        name: "PROJECTOR_WRITERS",
                        message: "must be at least 1".into(),
                    });
                }
                n => n,
            },
            dedup_horizon: Duration::from_secs(settings::parse(
                "DEDUP_HORIZON_SECONDS",
                settings::DEFAULT_DEDUP_HORIZON_SECONDS,
            )?),
            metrics_addr: match settings::string("PROJECTOR_METRICS_ADDR", "127.0.0.1:9101")
                .as_str()
            {
                "off" => None,
                addr => Some(addr.parse().map_err(|e| Error::Setting {
                    name: "PROJECTOR_METRICS_ADDR",
                    message: format!("{e} (got {addr:?})"),
                })?),
            },
        })
    }

    /// Logs the values in use, without secrets.
    pub fn log(&self) {
        self.stack.log();
        tracing::info!(
            window_ms = self.window.as_millis() as u64,
            group_id = %self.group_id,
            max_batch_events = self.max_batch_events,
            writers = self.writers,
            dedup_horizon_s = self.dedup_horizon.as_secs(),
            metrics_addr = ?self.metrics_addr,
            "projector settings"
        );
    }
}
