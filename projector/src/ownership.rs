//! Which partitions this process owns, under which epoch, and where each
//! resumes. Claims are made from Kafka's rebalance callback, which is
//! synchronous, so they go to a small thread with its own runtime and pool:
//! the callback can wait for the claim without blocking the service's runtime.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use likes_infra::Error;
use likes_infra::store::{self, offsets::Claim};

type Reply = mpsc::Sender<Result<Vec<Claim>, Error>>;

/// Makes claims on a dedicated thread; dropping it stops the thread.
pub struct Claimer {
    requests: Mutex<mpsc::Sender<(Vec<i32>, Reply)>>,
}

impl Claimer {
    /// Starts the claim thread for `topic` on the database at `database_url`.
    pub fn spawn(database_url: &str, topic: &str) -> Result<Self, Error> {
        let (tx, rx) = mpsc::channel::<(Vec<i32>, Reply)>();
        let pool = store::connect_lazy(database_url, 2)?;
        let topic = topic.to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Setting {
                name: "runtime",
                message: e.to_string(),
            })?;
        std::thread::Builder::new()
            .name("partition-claims".into())
            .spawn(move || {
                // The pool must live and die inside the runtime that drives it.
                runtime.block_on(async move {
                    while let Ok((partitions, reply)) = rx.recv() {
                        let result = store::offsets::claim(&pool, &topic, &partitions).await;
                        let _ = reply.send(result);
                    }
                    pool.close().await;
                });
            })
            .map_err(|e| Error::Setting {
                name: "thread",
                message: e.to_string(),
            })?;
        Ok(Self {
            requests: Mutex::new(tx),
        })
    }

    /// Claims `partitions`, blocking the calling thread until PostgreSQL answered.
    pub fn claim(&self, partitions: Vec<i32>) -> Result<Vec<Claim>, Error> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = self
            .requests
            .lock()
            .map_err(|_| closed())?
            .send((partitions, reply_tx));
        sent.map_err(|_| closed())?;
        reply_rx.recv().map_err(|_| closed())?
    }
}

fn closed() -> Error {
    Error::Setting {
        name: "claims",
        message: "claim thread stopped".into(),
    }
}

/// The partitions owned now. Every assignment or revocation bumps the
/// generation, which tells the batch loop to drop what it collected before.
#[derive(Default)]
pub struct Ownership {
    owned: Mutex<HashMap<i32, Claim>>,
    generation: AtomicU64,
    rejoin: AtomicBool,
}

impl Ownership {
    pub fn assign(&self, claims: &[Claim]) {
        if let Ok(mut owned) = self.owned.lock() {
            owned.clear();
            owned.extend(claims.iter().map(|c| (c.partition, *c)));
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn revoke_all(&self) {
        if let Ok(mut owned) = self.owned.lock() {
            owned.clear();
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The claim on `partition`, if owned.
    pub fn get(&self, partition: i32) -> Option<Claim> {
        self.owned.lock().ok()?.get(&partition).copied()
    }

    /// Every claim owned now.
    pub fn claims(&self) -> Vec<Claim> {
        self.owned
            .lock()
            .map(|owned| owned.values().copied().collect())
            .unwrap_or_default()
    }

    /// Records that a batch committed up to `next_offset`.
    pub fn advance(&self, partition: i32, next_offset: i64) {
        if let Ok(mut owned) = self.owned.lock()
            && let Some(claim) = owned.get_mut(&partition)
        {
            claim.next_offset = claim.next_offset.max(next_offset);
        }
    }

    /// Asks the loop to leave and rejoin the group (a claim failed, or we were fenced).
    pub fn request_rejoin(&self) {
        self.rejoin.store(true, Ordering::SeqCst);
    }

    pub fn take_rejoin(&self) -> bool {
        self.rejoin.swap(false, Ordering::SeqCst)
    }
}
