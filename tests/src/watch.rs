//! Reading counts through the API while something else happens (a rebuild, a
//! restart): items whose count is settled are read over and over, both from
//! PostgreSQL (`?after=<token>` of their last write, already applied) and the
//! normal way (Redis, PostgreSQL on a miss), and every answer that is not
//! exactly the settled count is kept as evidence.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

/// An item whose count no longer changes, and the token of its last write.
#[derive(Debug, Clone)]
pub struct Settled {
    pub item_type: i32,
    pub item_id: i64,
    pub count: i64,
    pub token: String,
}

/// What the reads saw.
#[derive(Debug, Default)]
pub struct Reads {
    pub total: u64,
    /// Answers read from PostgreSQL (`x-count-source: database`).
    pub from_database: u64,
    /// Every answer that was not the settled count (or not a 200).
    pub wrong: Vec<String>,
}

/// Reads running in the background until [`Watch::stop`].
pub struct Watch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<anyhow::Result<Reads>>,
}

impl Watch {
    /// Starts reading `items` through the API at `base_url`, round after round.
    pub fn start(base_url: &str, items: Vec<Settled>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let base = base_url.to_string();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()?;
            let mut reads = Reads::default();
            while !flag.load(Ordering::Relaxed) {
                for item in &items {
                    let path = format!("{base}/v1/items/{}/{}/count", item.item_type, item.item_id);
                    for url in [format!("{path}?after={}", item.token), path.clone()] {
                        read(&http, &url, item.count, &mut reads).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok(reads)
        });
        Self { stop, task }
    }

    /// Stops after the current round and returns what was read.
    pub async fn stop(self) -> anyhow::Result<Reads> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await?
    }
}

async fn read(http: &reqwest::Client, url: &str, expected: i64, reads: &mut Reads) {
    reads.total += 1;
    let answer = match http.get(url).send().await {
        Ok(answer) => answer,
        Err(e) => return reads.wrong.push(format!("{url}: {e}")),
    };
    let status = answer.status();
    let source = answer
        .headers()
        .get("x-count-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    let count = body["count"].as_i64();
    if source == "database" {
        reads.from_database += 1;
    }
    if status != 200 || count != Some(expected) {
        reads.wrong.push(format!(
            "{url}: {status} {body} from {source}, expected {expected}"
        ));
    }
}
