//! Open-loop convergence probes: at a fixed rate, whatever the answers and
//! however long earlier probes take, a fresh user likes a fresh item through
//! the API once; each probe then watches Redis until the item's count shows
//! the like. The time from the 202 to that moment is the probe's convergence.
//! Every probe knows its item's shard, so a test can see one shard converge
//! while another is away.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use likes_domain::ItemKey;
use likes_infra::redis::Keys;
use serde_json::json;
use tokio::task::JoinSet;

use crate::TestEnv;
use crate::load::ITEM_TYPE;

/// How long a probe watches Redis before it is reported as never visible.
const WATCH_AT_MOST: Duration = Duration::from_secs(90);

/// One probe's fate.
#[derive(Debug, Clone)]
pub struct Probe {
    pub item: i64,
    pub shard: usize,
    /// When the like was sent.
    pub sent: Instant,
    /// When the API answered 202 (`None`: refused or failed; not retried).
    pub acked: Option<Instant>,
    /// When Redis first showed the like (`None`: not within [`WATCH_AT_MOST`]).
    pub visible: Option<Instant>,
}

impl Probe {
    /// Sent → visible, for acknowledged probes that became visible: an upper
    /// bound of append → visible (the projector may show a like before its
    /// 202 reaches a busy client, so ack → visible would understate it).
    pub fn convergence(&self) -> Option<Duration> {
        self.acked?;
        Some(self.visible?.saturating_duration_since(self.sent))
    }

    /// Sent → acknowledged: the like's own latency, as the client saw it.
    pub fn latency(&self) -> Option<Duration> {
        Some(self.acked?.saturating_duration_since(self.sent))
    }
}

/// Probes being sent until [`Probes::stop`].
pub struct Probes {
    stop: Arc<AtomicBool>,
    sender: tokio::task::JoinHandle<Vec<Probe>>,
}

impl Probes {
    /// Sends one probe every `every` to the API at `base_url`, on items
    /// `first_item`, `first_item + 1`, ... (each liked once, by user = item).
    pub fn start(env: &TestEnv, base_url: &str, every: Duration, first_item: i64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let keys = Keys::new(&env.stack.redis_key_prefix);
        let redis = env.redis.clone();
        let map = env.shards.map();
        let url = format!("{base_url}/v1/likes");
        let stopping = stop.clone();
        let sender = tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut probes = JoinSet::new();
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut item = first_item;
            while !stopping.load(Ordering::SeqCst) {
                tick.tick().await;
                let (http, url, mut redis) = (http.clone(), url.clone(), redis.clone());
                let key = match ItemKey::parse(ITEM_TYPE.into(), item) {
                    Ok(k) => keys.count(k),
                    Err(_) => break,
                };
                let shard = map.shard_of_item(item);
                let this = item;
                probes.spawn(async move {
                    let sent = Instant::now();
                    let answer = http
                        .post(&url)
                        .json(&json!({"user_id": this, "item_id": this, "item_type": ITEM_TYPE}))
                        .timeout(Duration::from_secs(30))
                        .send()
                        .await;
                    let acked = matches!(&answer, Ok(a) if a.status() == 202).then(Instant::now);
                    let mut visible = None;
                    if acked.is_some() {
                        let deadline = Instant::now() + WATCH_AT_MOST;
                        while Instant::now() < deadline {
                            let value: Option<String> = redis::cmd("GET")
                                .arg(&key)
                                .query_async(&mut redis)
                                .await
                                .unwrap_or(None);
                            let count = value
                                .as_deref()
                                .and_then(likes_infra::redis::counts::parse_count);
                            if count == Some(1) {
                                visible = Some(Instant::now());
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    Probe {
                        item: this,
                        shard,
                        sent,
                        acked,
                        visible,
                    }
                });
                item += 1;
            }
            let mut done = Vec::new();
            while let Some(probe) = probes.join_next().await {
                if let Ok(probe) = probe {
                    done.push(probe);
                }
            }
            done.sort_by_key(|p| p.item);
            done
        });
        Self { stop, sender }
    }

    /// Stops sending and waits for every probe in flight to finish watching.
    pub async fn stop(self) -> anyhow::Result<Vec<Probe>> {
        self.stop.store(true, Ordering::SeqCst);
        Ok(self.sender.await?)
    }
}

/// The `q` quantile (0..=1) of `values`, by the nearest rank.
pub fn quantile(values: &mut [Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}
