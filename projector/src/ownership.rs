//! Which partitions this process owns, under which epoch, and where each
//! resumes. Claims are made from Kafka's rebalance callback, which is
//! synchronous, so they go to a small thread with its own runtime and pools:
//! the callback can wait for the claim without blocking the service's runtime.
//! A partition that must not go on (records missing from the log, a write that
//! fails permanently) is parked here, and only it stops.
//!
//! A partition is claimed in the shard that owns it (its epoch and offset
//! live there), each shard's claim in its own transaction. When some shards'
//! claims fail and others succeed, the claimed partitions go on and the
//! others stay *unclaimed*: assigned by Kafka but not owned, so none of their
//! records is admitted (paused, and refused by [`Ownership::collecting`]); a
//! background task claims them again every few seconds and the collector
//! starts each from its claimed offset once it is claimed. With one shard a
//! failed claim gives the assignment up and rejoins the group, as before
//! shards existed (see `consumer.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use futures::future::join_all;
use likes_domain::Position;
use likes_infra::Error;
use likes_infra::postgres::offsets::{self, Claim};
use likes_infra::postgres::shards::Shards;

/// What one shard answered to a claim: its partitions asked for, and the claims made.
pub type ShardClaim = (usize, Vec<i32>, Result<Vec<Claim>, Error>);

type Reply = mpsc::Sender<Vec<ShardClaim>>;

/// How often unclaimed partitions are claimed again.
const RECLAIM_EVERY: Duration = Duration::from_secs(2);

/// How long one shard's claim may go unanswered (a claim waits at most a few
/// seconds for locks, see infra's `bound_waits`): past it, the shard counts
/// as away and its partitions stay unclaimed.
const CLAIM_BOUND: Duration = Duration::from_secs(10);

/// Makes claims on a dedicated thread; dropping it stops the thread.
pub struct Claimer {
    requests: Mutex<mpsc::Sender<(Vec<i32>, Reply)>>,
}

impl Claimer {
    /// Starts the claim thread for `topic`, with a small pool of its own to
    /// each of the shards of `shards` (same URLs, same map).
    pub fn spawn(urls: &[String], shards: &Shards, topic: &str) -> Result<Self, Error> {
        let (tx, rx) = mpsc::channel::<(Vec<i32>, Reply)>();
        let own = Shards::connect_lazy(urls, shards.map().partitions(), 2)?;
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
                // The pools must live and die inside the runtime that drives them.
                runtime.block_on(async move {
                    while let Ok((partitions, reply)) = rx.recv() {
                        let _ = reply.send(claim_by_shard(&own, &topic, &partitions).await);
                    }
                    own.close().await;
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

    /// Claims `partitions`, each in its own shard, blocking the calling
    /// thread until every shard answered.
    pub fn claim(&self, partitions: Vec<i32>) -> Result<Vec<ShardClaim>, Error> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = self
            .requests
            .lock()
            .map_err(|_| Error::ClaimsStopped)?
            .send((partitions, reply_tx));
        sent.map_err(|_| Error::ClaimsStopped)?;
        reply_rx.recv().map_err(|_| Error::ClaimsStopped)
    }
}

/// Claims `partitions` grouped by shard: one transaction per shard, all at
/// once, each answering for its own partitions only.
pub async fn claim_by_shard(shards: &Shards, topic: &str, partitions: &[i32]) -> Vec<ShardClaim> {
    let groups = shards.map().group(partitions.iter().copied(), |p| *p);
    join_all(
        groups
            .into_iter()
            .enumerate()
            .filter(|(_, group)| !group.is_empty())
            .map(|(shard, group)| async move {
                let result =
                    offsets::claim_within(shards.pool(shard), topic, &group, CLAIM_BOUND).await;
                (shard, group, result)
            }),
    )
    .await
}

/// Every few seconds, claims the partitions a rebalance assigned but whose
/// shard could not be claimed in; the collector starts each one it gets
/// ([`Ownership::take_late_claims`]). A claim that lands after the partition
/// was revoked is thrown away (its generation is gone); at worst it bumped an
/// epoch the new owner then finds fenced, and that owner rejoins.
pub async fn reclaim_forever(shards: Shards, topic: String, ownership: Arc<Ownership>) {
    let mut tick = tokio::time::interval(RECLAIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let (generation, unclaimed) = ownership.unclaimed();
        if unclaimed.is_empty() {
            continue;
        }
        for (shard, partitions, result) in claim_by_shard(&shards, &topic, &unclaimed).await {
            match result {
                Ok(claims) => {
                    if ownership.claimed_late(generation, &claims) {
                        tracing::info!(shard, ?partitions, "unclaimed partitions claimed");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, shard, shard_url = shards.name(shard), ?partitions, "claiming partitions failed; retrying")
                }
            }
        }
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
                "records {from} to {to} were deleted from the log before they were projected \
                 and the archive does not hold them all (`likes-replay archive status`); once \
                 it does (an archiver catching up, ARCHIVE_URL pointed at it) restart the \
                 projector and it reads them from there; else rebuild from a snapshot, or \
                 accept the loss with `likes-replay accept-loss`"
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
    /// Assigned, but their shard's claim failed: nothing of theirs is read.
    unclaimed: BTreeSet<i32>,
    /// Unclaimed partitions the collector has not paused yet.
    to_pause: Vec<i32>,
    /// Claims made late for unclaimed partitions, for the collector to start.
    late: Vec<Claim>,
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
///
/// The claims' `version` moves with every change of the claims (an
/// assignment, a revocation, a late claim): writers refresh Redis for their
/// claimed partitions when it moves. A late claim does not move the
/// generation: batches being collected or written for other partitions stay
/// good.
#[derive(Default)]
pub struct Ownership {
    state: Mutex<State>,
    generation: AtomicU64,
    version: AtomicU64,
    rejoin: AtomicBool,
}

impl Ownership {
    #[cfg(test)]
    pub fn assign(&self, claims: &[Claim]) {
        self.assign_partly(claims, &[]);
    }

    /// Owns `claims`; `unclaimed` were assigned too, but could not be claimed
    /// (see the module docs).
    pub fn assign_partly(&self, claims: &[Claim], unclaimed: &[i32]) {
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
            state.unclaimed.extend(unclaimed.iter().copied());
            state.to_pause.extend(unclaimed.iter().copied());
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    pub fn revoke_all(&self) {
        if let Ok(mut state) = self.state.lock() {
            clear(&mut state);
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.version.fetch_add(1, Ordering::SeqCst);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Moves with every change of the claims, late ones included.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The generation and the partitions assigned but not claimed in it.
    pub fn unclaimed(&self) -> (u64, Vec<i32>) {
        let Ok(state) = self.state.lock() else {
            return (self.generation(), Vec::new());
        };
        // Read under the lock: an assignment changes both together.
        (self.generation(), state.unclaimed.iter().copied().collect())
    }

    /// Unclaimed partitions not paused yet; the caller pauses them.
    pub fn take_to_pause(&self) -> Vec<i32> {
        self.state
            .lock()
            .map(|mut s| std::mem::take(&mut s.to_pause))
            .unwrap_or_default()
    }

    /// Keeps `claims` made late for unclaimed partitions of `generation`, for
    /// the collector to start; false when that generation is over.
    pub fn claimed_late(&self, generation: u64, claims: &[Claim]) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return false;
        };
        if self.generation() != generation {
            return false;
        }
        let mut kept = false;
        for claim in claims {
            if state.unclaimed.contains(&claim.next.partition) {
                state.late.push(*claim);
                kept = true;
            }
        }
        kept
    }

    /// Owns the partitions claimed late, from now on; the caller (the
    /// collector, between receives) seeks each to its claimed offset and
    /// resumes it before receiving again.
    pub fn take_late_claims(&self) -> Vec<Claim> {
        let late = {
            let Ok(mut state) = self.state.lock() else {
                return Vec::new();
            };
            let mut started = Vec::new();
            for claim in std::mem::take(&mut state.late) {
                if state.unclaimed.remove(&claim.next.partition) {
                    state.owned.insert(
                        claim.next.partition,
                        Owned {
                            claim,
                            collected: claim.next.offset,
                        },
                    );
                    started.push(claim);
                }
            }
            started
        };
        if !late.is_empty() {
            self.version.fetch_add(1, Ordering::SeqCst);
        }
        late
    }

    /// How many assigned partitions are not claimed.
    pub fn unclaimed_count(&self) -> usize {
        self.state.lock().map_or(0, |s| s.unclaimed.len())
    }

    /// The next offset to collect of each of `partitions` owned and not parked.
    pub fn collecting_of(&self, partitions: &[i32]) -> Vec<Position> {
        partitions
            .iter()
            .filter_map(|p| {
                self.collecting(*p).map(|(_, offset)| Position {
                    partition: *p,
                    offset,
                })
            })
            .collect()
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
    state.unclaimed.clear();
    state.to_pause.clear();
    state.late.clear();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(partition: i32, epoch: i64, offset: i64) -> Claim {
        Claim {
            epoch,
            next: Position { partition, offset },
        }
    }

    #[test]
    fn an_unclaimed_partition_is_not_read_until_its_late_claim_is_started() {
        let ownership = Ownership::default();
        ownership.assign_partly(&[claim(0, 4, 10)], &[2]);
        assert_eq!(ownership.collecting(2), None, "unclaimed: nothing admitted");
        assert_eq!(ownership.take_to_pause(), vec![2]);
        let (generation, unclaimed) = ownership.unclaimed();
        assert_eq!(unclaimed, vec![2]);
        let version = ownership.version();
        assert!(ownership.claimed_late(generation, &[claim(2, 7, 30)]));
        assert_eq!(
            ownership.collecting(2),
            None,
            "not before the collector starts it"
        );
        assert_eq!(ownership.take_late_claims(), vec![claim(2, 7, 30)]);
        assert_eq!(ownership.collecting(2), Some((7, 30)));
        assert_eq!(
            ownership.generation(),
            generation,
            "the other partitions' batches stay good"
        );
        assert!(
            ownership.version() > version,
            "writers refresh Redis for it"
        );
        assert_eq!(ownership.unclaimed_count(), 0);
    }

    #[test]
    fn a_late_claim_made_for_an_assignment_that_is_over_is_thrown_away() {
        let ownership = Ownership::default();
        ownership.assign_partly(&[claim(0, 4, 10)], &[2]);
        let (generation, _) = ownership.unclaimed();
        ownership.revoke_all();
        assert!(!ownership.claimed_late(generation, &[claim(2, 7, 30)]));
        assert!(ownership.take_late_claims().is_empty());
        assert_eq!(ownership.collecting(2), None);
    }
}
