//! Which partitions this process owns, under which epoch, and where each
//! resumes. Claims are made from Kafka's rebalance callback, which is
//! synchronous, so they go to a small thread with its own runtime and pool:
//! the callback can wait for the claim without blocking the service's runtime.
//! A partition that must not go on (records missing from the log, a write that
//! fails permanently) is parked here, and only it stops.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, mpsc};

use likes_domain::Position;
use likes_infra::Error;
use likes_infra::postgres::{self, offsets::Claim};

type Reply = mpsc::Sender<Result<Vec<Claim>, Error>>;

/// Makes claims on a dedicated thread; dropping it stops the thread.
pub struct Claimer {
    requests: Mutex<mpsc::Sender<(Vec<i32>, Reply)>>,
}

impl Claimer {
    /// Starts the claim thread for `topic` on the database at `database_url`.
    pub fn spawn(database_url: &str, topic: &str) -> Result<Self, Error> {
        let (tx, rx) = mpsc::channel::<(Vec<i32>, Reply)>();
        let pool = postgres::connect_lazy(database_url, 2)?;
        let topic = topic.to_string();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Spawn {
                what: "partition claim runtime",
                source,
            })?;
        std::thread::Builder::new()
            .name("partition-claims".into())
            .spawn(move || {
                // The pool must live and die inside the runtime that drives it.
                runtime.block_on(async move {
                    while let Ok((partitions, reply)) = rx.recv() {
                        let result = postgres::offsets::claim(&pool, &topic, &partitions).await;
                        let _ = reply.send(result);
                    }
                    pool.close().await;
                });
            })
            .map_err(|source| Error::Spawn {
                what: "partition claim thread",
                source,
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
            .map_err(|_| Error::ClaimsStopped)?
            .send((partitions, reply_tx));
        sent.map_err(|_| Error::ClaimsStopped)?;
        reply_rx.recv().map_err(|_| Error::ClaimsStopped)?
    }
}

/// Why a partition stopped. A parked partition's records are not admitted and
/// nothing past them commits; the others go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParkReason {
    /// Offsets `from..=to` were deleted from the log before they were read:
    /// acknowledged events that no projection has. Waits for an accepted loss.
    Gap { from: i64, to: i64 },
    /// A batch of the partition failed to write, permanently (a broken
    /// invariant or a constraint); tried again on the next claim.
    WriteFailed,
    /// A record could not be put on the dead-letter topic, not even as a
    /// reference; tried again on the next claim.
    DeadLetterFailed { offset: i64 },
}

impl ParkReason {
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ParkReason::Gap { .. } => "gap",
            ParkReason::WriteFailed => "write_failed",
            ParkReason::DeadLetterFailed { .. } => "dead_letter_failed",
        }
    }

    /// What an operator reads in `/readyz`: what happened, not how.
    pub fn describe(&self) -> String {
        match self {
            ParkReason::Gap { from, to } => format!(
                "records {from} to {to} were deleted from the log before they were projected; \
                 rebuild from a snapshot, or accept the loss with `likes-replay accept-loss`"
            ),
            ParkReason::WriteFailed => {
                "a batch of this partition failed to write permanently; see the projector's log"
                    .to_string()
            }
            ParkReason::DeadLetterFailed { offset } => format!(
                "the record at offset {offset} could not be put on the dead-letter topic; \
                 see the projector's log"
            ),
        }
    }
}

/// A partition owned now: its claim and the next offset the collector expects
/// (ahead of the claim's committed offset while batches are being written).
#[derive(Debug, Clone, Copy)]
struct Owned {
    claim: Claim,
    collected: i64,
}

#[derive(Default)]
struct State {
    owned: HashMap<i32, Owned>,
    parked: BTreeMap<i32, ParkReason>,
    /// Gaps an operator accepted, per partition: the collector moves past
    /// exactly this range.
    accepted: HashMap<i32, (i64, i64)>,
    /// Where partitions resume after an accepted gap (the gap's end + 1).
    resume: Vec<Position>,
}

/// The partitions owned now. Every assignment or revocation bumps the
/// generation, which tells the batch loop to drop what it collected before.
/// Parked partitions are forgotten with the assignment: the next claim reads
/// them again from their stored offsets and finds the same reason, if it holds.
#[derive(Default)]
pub struct Ownership {
    state: Mutex<State>,
    generation: AtomicU64,
    rejoin: AtomicBool,
}

impl Ownership {
    pub fn assign(&self, claims: &[Claim]) {
        if let Ok(mut state) = self.state.lock() {
            clear(&mut state);
            state.owned.extend(claims.iter().map(|c| {
                (
                    c.next.partition,
                    Owned {
                        claim: *c,
                        collected: c.next.offset,
                    },
                )
            }));
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn revoke_all(&self) {
        if let Ok(mut state) = self.state.lock() {
            clear(&mut state);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The epoch and the next offset to collect of `partition`, if it is owned
    /// and not parked.
    pub fn collecting(&self, partition: i32) -> Option<(i64, i64)> {
        let state = self.state.lock().ok()?;
        if state.parked.contains_key(&partition) {
            return None;
        }
        let owned = state.owned.get(&partition)?;
        Some((owned.claim.epoch, owned.collected))
    }

    /// Records that the collector took `partition`'s records up to `next_offset`.
    pub fn collected(&self, partition: i32, next_offset: i64) {
        if let Ok(mut state) = self.state.lock()
            && let Some(owned) = state.owned.get_mut(&partition)
        {
            owned.collected = next_offset;
        }
    }

    /// Every claim owned now.
    pub fn claims(&self) -> Vec<Claim> {
        self.state
            .lock()
            .map(|state| state.owned.values().map(|o| o.claim).collect())
            .unwrap_or_default()
    }

    /// Records that a batch committed up to `next` (the next offset to read).
    pub fn advance(&self, next: Position) {
        if let Ok(mut state) = self.state.lock()
            && let Some(owned) = state.owned.get_mut(&next.partition)
        {
            owned.claim.next.offset = owned.claim.next.offset.max(next.offset);
        }
    }

    /// How many partitions are owned now.
    pub fn owned(&self) -> usize {
        self.state.lock().map_or(0, |s| s.owned.len())
    }

    /// Stops `partition` for `reason`; returns false when it was parked already
    /// or is not owned.
    pub fn park(&self, partition: i32, reason: ParkReason) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if !state.owned.contains_key(&partition) || state.parked.contains_key(&partition) {
            return false;
        }
        state.parked.insert(partition, reason);
        metrics::gauge!(crate::metrics::PARKED, "partition" => partition.to_string(), "reason" => reason.label()).set(1.0);
        if let ParkReason::Gap { from, to } = reason {
            metrics::gauge!(crate::metrics::MISSING_RECORDS, "partition" => partition.to_string(), "first_offset" => from.to_string(), "last_offset" => to.to_string())
                .set((to - from + 1) as f64);
        }
        true
    }

    /// The parked partitions and why, by partition.
    pub fn parked(&self) -> Vec<(i32, ParkReason)> {
        self.state
            .lock()
            .map(|s| s.parked.iter().map(|(p, r)| (*p, *r)).collect())
            .unwrap_or_default()
    }

    /// Partitions whose later batches must not be written: a write of theirs
    /// failed, so anything collected after it would commit past it.
    pub fn write_failed(&self) -> Vec<i32> {
        self.parked()
            .into_iter()
            .filter(|(_, r)| *r == ParkReason::WriteFailed)
            .map(|(p, _)| p)
            .collect()
    }

    /// Whether the gap `from..=to` of `partition` was accepted as lost.
    pub fn gap_accepted(&self, partition: i32, from: i64, to: i64) -> bool {
        self.state
            .lock()
            .is_ok_and(|s| s.accepted.get(&partition) == Some(&(from, to)))
    }

    /// An operator accepted the loss of `from..=to`: if that is exactly the gap
    /// `partition` is parked on, the collector moves past it.
    pub fn accept_gap(&self, partition: i32, from: i64, to: i64) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if state.parked.get(&partition) != Some(&ParkReason::Gap { from, to }) {
            return false;
        }
        state.accepted.insert(partition, (from, to));
        state.resume.push(Position {
            partition,
            offset: to + 1,
        });
        true
    }

    /// Partitions whose gap was accepted, unparked now: the caller seeks each to
    /// its offset and resumes it before receiving again.
    pub fn take_resumes(&self) -> Vec<Position> {
        let Ok(mut state) = self.state.lock() else {
            return Vec::new();
        };
        let resume = std::mem::take(&mut state.resume);
        for at in &resume {
            if let Some(reason) = state.parked.remove(&at.partition) {
                unpark_metrics(at.partition, reason);
            }
        }
        resume
    }

    /// Asks the loop to leave and rejoin the group (a claim failed, or we were fenced).
    pub fn request_rejoin(&self) {
        self.rejoin.store(true, Ordering::SeqCst);
    }

    pub fn take_rejoin(&self) -> bool {
        self.rejoin.swap(false, Ordering::SeqCst)
    }
}

/// Forgets everything owned; a parked partition's gauges go back to 0.
fn clear(state: &mut State) {
    for (partition, reason) in std::mem::take(&mut state.parked) {
        unpark_metrics(partition, reason);
    }
    state.owned.clear();
    state.accepted.clear();
    state.resume.clear();
}

fn unpark_metrics(partition: i32, reason: ParkReason) {
    metrics::gauge!(crate::metrics::PARKED, "partition" => partition.to_string(), "reason" => reason.label()).set(0.0);
    if let ParkReason::Gap { from, to } = reason {
        metrics::gauge!(crate::metrics::MISSING_RECORDS, "partition" => partition.to_string(), "first_offset" => from.to_string(), "last_offset" => to.to_string())
            .set(0.0);
    }
}
