//! A steady, checkable load: virtual users like and unlike a few items through
//! the HTTP API, each user strictly in sequence, each request with its own
//! client event id. A refused or failed request is retried with the same id
//! until it is accepted, as a well-behaved client would, so the expected final
//! state is simply every user's last accepted action per item.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::task::JoinSet;

pub const ITEM_TYPE: i32 = 1;

/// What the clients did and what the API answered.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    /// Requests sent, retries included.
    pub sent: u64,
    /// Distinct events accepted (202).
    pub acked: u64,
    /// Answers that refused a request (5xx) or failed in transport; each was retried.
    pub refused: u64,
    /// The event ids that were refused at least once before being accepted.
    pub refused_ids: BTreeSet<uuid::Uuid>,
    /// Events still not accepted when the clients gave up.
    pub unresolved: u64,
    /// Every event id answered 202.
    pub acked_ids: BTreeSet<uuid::Uuid>,
    /// When the first and the last refusal came (the window a fault refused writes).
    pub refused_between: Option<(std::time::Instant, std::time::Instant)>,
    /// Pairs (user, item) whose last accepted action is a like.
    pub liked: BTreeSet<(i64, i64)>,
}

impl Ledger {
    /// The expected count of every item the load touched.
    pub fn expected_counts(&self, items: &[i64]) -> BTreeMap<i64, i64> {
        let mut counts: BTreeMap<i64, i64> = items.iter().map(|i| (*i, 0)).collect();
        for (_, item) in &self.liked {
            *counts.entry(*item).or_default() += 1;
        }
        counts
    }
}

/// The shape of a load.
#[derive(Debug, Clone)]
pub struct Load {
    pub users: i64,
    pub items: Vec<i64>,
    /// Pause between one user's requests.
    pub pace: Duration,
    /// How long a client keeps retrying one event before giving up.
    pub give_up_after: Duration,
}

/// A running load; `stop` ends it and returns the merged ledger.
pub struct Running {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Ledger>,
    /// Requests answered so far, for tests that wait for progress.
    pub progress: Arc<AtomicU64>,
}

impl Load {
    /// Starts one task per user against the API at `base_url`.
    pub fn start(&self, base_url: &str) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let mut tasks = JoinSet::new();
        for user in 1..=self.users {
            let load = self.clone();
            let (stop, progress, http) = (stop.clone(), progress.clone(), http.clone());
            let base = base_url.to_string();
            tasks.spawn(async move { load.user(user, &base, &http, &stop, &progress).await });
        }
        Running {
            stop,
            tasks,
            progress,
        }
    }

    async fn user(
        &self,
        user: i64,
        base: &str,
        http: &reqwest::Client,
        stop: &AtomicBool,
        progress: &AtomicU64,
    ) -> Ledger {
        let mut ledger = Ledger::default();
        let mut step: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            step += 1;
            // Deterministic but varied: walk the items, mostly toggling, sometimes
            // repeating a like or unliking something never liked.
            let item =
                self.items[((user as u64 * 7 + step * 3) % self.items.len() as u64) as usize];
            let liked = ledger.liked.contains(&(user, item));
            let like = match step % 5 {
                0 => liked,  // a repeat of the current state: changes nothing
                _ => !liked, // a toggle
            };
            let event_id = uuid::Uuid::new_v4();
            let (method, path) = if like {
                (reqwest::Method::POST, "/v1/likes")
            } else {
                (reqwest::Method::POST, "/v1/unlikes")
            };
            let body = json!({"user_id": user, "item_id": item, "item_type": ITEM_TYPE, "event_id": event_id});
            let deadline = tokio::time::Instant::now() + self.give_up_after;
            let accepted = loop {
                ledger.sent += 1;
                let answer = http
                    .request(method.clone(), format!("{base}{path}"))
                    .json(&body)
                    .send()
                    .await;
                progress.fetch_add(1, Ordering::Relaxed);
                match answer {
                    Ok(r) if r.status() == 202 => break true,
                    Ok(r) if r.status().is_client_error() && r.status() != 429 => {
                        panic!("the load sent a bad request: {}", r.status())
                    }
                    _ => {
                        ledger.refused += 1;
                        ledger.refused_ids.insert(event_id);
                        let now = std::time::Instant::now();
                        ledger.refused_between = Some(match ledger.refused_between {
                            Some((first, _)) => (first, now),
                            None => (now, now),
                        });
                        if tokio::time::Instant::now() > deadline {
                            break false;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            };
            if accepted {
                ledger.acked += 1;
                ledger.acked_ids.insert(event_id);
                if like {
                    ledger.liked.insert((user, item));
                } else {
                    ledger.liked.remove(&(user, item));
                }
            } else {
                // Unknown outcome: the run's figures will say so, and the test fails.
                ledger.unresolved += 1;
                break;
            }
            tokio::time::sleep(self.pace).await;
        }
        ledger
    }
}

impl Running {
    /// Stops the clients after their current request and merges their ledgers.
    pub async fn stop(mut self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = Ledger::default();
        while let Some(done) = self.tasks.join_next().await {
            let ledger = done.expect("load task panicked");
            total.sent += ledger.sent;
            total.acked += ledger.acked;
            total.refused += ledger.refused;
            total.refused_ids.extend(ledger.refused_ids);
            total.unresolved += ledger.unresolved;
            total.liked.extend(ledger.liked);
            total.acked_ids.extend(ledger.acked_ids);
            total.refused_between = match (total.refused_between, ledger.refused_between) {
                (Some((a, b)), Some((c, d))) => Some((a.min(c), b.max(d))),
                (x, None) | (None, x) => x,
            };
        }
        total
    }

    /// Waits until at least `n` more requests were answered.
    pub async fn wait_for_requests(&self, n: u64) {
        let target = self.progress.load(Ordering::Relaxed) + n;
        while self.progress.load(Ordering::Relaxed) < target {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
