//! Whether the schema registry answers right now: its subject list, asked
//! with a short timeout.

use std::time::Duration;

use crate::{Down, Error, Unready};

/// Probes the registry at one Confluent-compatible base URL.
pub struct RegistryProbe {
    http: reqwest::Client,
    url: String,
}

impl RegistryProbe {
    /// A probe of the registry at `registry_url`, each answer awaited at most
    /// `timeout`.
    pub fn new(registry_url: &str, timeout: Duration) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::RegistryUnavailable(format!("no http client: {e}")))?;
        Ok(Self {
            http,
            url: format!("{}/subjects", registry_url.trim_end_matches('/')),
        })
    }

    /// Ready when the registry answers with a success status.
    pub async fn probe(&self) -> Result<(), Unready> {
        match self.http.get(&self.url).send().await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(Unready::new(
                Down::BadAnswer,
                format!("registry answered {}", r.status()),
            )),
            Err(e) if e.is_timeout() => Err(Unready::new(Down::TimedOut, e.to_string())),
            Err(e) => Err(Unready::new(Down::Unreachable, e.to_string())),
        }
    }
}
