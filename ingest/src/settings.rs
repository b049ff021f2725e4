//! Settings of `likes-ingest`, read once from the environment.

use std::net::SocketAddr;
use std::time::Duration;

use likes_infra::Error;
use likes_infra::settings::{self, StackSettings};

/// Everything the ingest service needs to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Kafka, registry, PostgreSQL and Redis locations.
    pub stack: StackSettings,
    /// `LISTEN_ADDR`: where the HTTP API listens (port 0 picks a free one).
    pub listen_addr: SocketAddr,
    /// `PRODUCE_TIMEOUT_MS`: how long a like may wait for the broker's ack
    /// before the client gets a 503 (and should retry with the same event id).
    pub produce_timeout: Duration,
    /// `KAFKA_PRODUCER_LINGER_MS`: how long the producer waits to fill a
    /// batch ([`settings::producer_linger`]).
    pub producer_linger: Duration,
    /// `MAX_BODY_BYTES`: the largest request body accepted.
    pub max_body_bytes: u64,
}

impl Settings {
    /// Reads the settings; a missing or malformed one is an error naming it.
    pub fn from_env() -> Result<Self, Error> {
        Ok(Self {
            stack: StackSettings::from_env()?,
            listen_addr: settings::parse("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], 8000)))?,
            produce_timeout: produce_timeout(settings::parse("PRODUCE_TIMEOUT_MS", 5000)?)?,
            producer_linger: settings::producer_linger()?,
            max_body_bytes: settings::parse("MAX_BODY_BYTES", 64 * 1024)?,
        })
    }

    /// Logs the values in use, without secrets.
    pub fn log(&self) {
        self.stack.log();
        tracing::info!(
            listen_addr = %self.listen_addr,
            produce_timeout_ms = self.produce_timeout.as_millis() as u64,
            producer_linger_ms = self.producer_linger.as_millis() as u64,
            max_body_bytes = self.max_body_bytes,
            "ingest settings"
        );
    }
}

/// `PRODUCE_TIMEOUT_MS` as a duration. 0 is refused: librdkafka reads a
/// message timeout of 0 as "wait forever", so a like would never get its 503.
fn produce_timeout(ms: u64) -> Result<Duration, Error> {
    if ms == 0 {
        return Err(Error::Setting {
            name: "PRODUCE_TIMEOUT_MS",
            message: "must be at least 1 (0 would wait for the broker forever)".into(),
        });
    }
    Ok(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_produce_timeout_of_zero_is_refused_naming_the_variable() {
        let message = produce_timeout(0).unwrap_err().to_string();
        assert!(message.contains("PRODUCE_TIMEOUT_MS"), "{message}");
        assert_eq!(produce_timeout(1).unwrap(), Duration::from_millis(1));
        assert_eq!(produce_timeout(5000).unwrap(), Duration::from_secs(5));
    }
}
