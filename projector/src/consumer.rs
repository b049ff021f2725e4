//! The projector's side of a rebalance: on assignment, claim the partitions in
//! PostgreSQL (fencing the previous owner) and start each one at the offset
//! stored there, never at Kafka's committed offset; on revocation, forget
//! them. The consumer itself is infra's [`GroupConsumer`].

use std::sync::Arc;

use likes_domain::Position;
use likes_infra::kafka::consumer::{GroupConsumer, Rebalance};
use likes_infra::postgres::offsets::Claim;
use likes_infra::retry;

use crate::ownership::{Claimer, Ownership};

/// The projector's consumer.
pub type ProjectorConsumer = GroupConsumer<ClaimOnAssign>;

/// Claims what the group assigns, and records it in [`Ownership`].
pub struct ClaimOnAssign {
    claimer: Claimer,
    ownership: Arc<Ownership>,
    /// How many shards there are: with one, a failed claim is given up as
    /// before shards existed; with several, see [`Rebalance::assigned`].
    shards: usize,
}

impl ClaimOnAssign {
    pub fn new(claimer: Claimer, ownership: Arc<Ownership>, shards: usize) -> Self {
        Self {
            claimer,
            ownership,
            shards,
        }
    }

    /// Claims `partitions`, each in its shard. With one shard a failed claim
    /// is tried again through transient failures for a bounded time
    /// ([`retry::CLAIM`]: the rebalance callback blocks the consumer); with
    /// several, a shard that fails is left to the background re-claim at once,
    /// so the other shards' partitions start without waiting. Returns the
    /// claims made, the partitions left unclaimed, and whether a failure was
    /// one no retry cures (the claim thread gone, a permanent error).
    fn claim(&self, partitions: &[i32]) -> (Vec<Claim>, Vec<i32>, bool) {
        let mut claimed = Vec::new();
        let mut remaining = partitions.to_vec();
        let mut hopeless = false;
        let mut backoff = retry::CLAIM.backoff();
        while !remaining.is_empty() {
            let mut worth_retrying = false;
            let asked = std::mem::take(&mut remaining);
            match self.claimer.claim(asked.clone()) {
                Err(e) => {
                    tracing::warn!(error = %e, "claiming partitions failed");
                    hopeless = true;
                    remaining = asked;
                }
                Ok(answers) => {
                    for (shard, partitions, result) in answers {
                        match result {
                            Ok(claims) => claimed.extend(claims),
                            Err(e) => {
                                tracing::warn!(error = %e, shard, ?partitions, "claiming partitions in their shard failed");
                                worth_retrying |= e.is_transient();
                                hopeless |= !e.is_transient();
                                remaining.extend(partitions);
                            }
                        }
                    }
                }
            }
            if self.shards > 1 || !claimed.is_empty() || !worth_retrying {
                break;
            }
            match backoff.after_failure() {
                Some(delay) => std::thread::sleep(delay),
                None => break,
            }
        }
        (claimed, remaining, hopeless)
    }

    fn give_up(&self) {
        self.ownership.revoke_all();
        self.ownership.request_rejoin();
    }
}

impl Rebalance for ClaimOnAssign {
    fn assigned(&self, partitions: &[i32]) -> Option<Vec<Position>> {
        // With one shard, or when a retry cannot help, a claim that failed
        // everywhere gives the assignment up and rejoins, as before shards.
        // With several shards a shard that is away leaves its partitions
        // unclaimed, whatever else was claimed: rejoining would only bring
        // every instance's partitions through a rebalance again.
        let (claims, unclaimed, hopeless) = self.claim(partitions);
        if claims.is_empty() && !unclaimed.is_empty() && (self.shards == 1 || hopeless) {
            tracing::error!(
                ?partitions,
                "cannot claim partitions; will rejoin the group"
            );
            self.give_up();
            return None;
        }
        self.ownership.assign_partly(&claims, &unclaimed);
        tracing::info!(
            partitions = ?claims.iter().map(|c| (c.next.partition, c.epoch, c.next.offset)).collect::<Vec<_>>(),
            "partitions assigned (partition, epoch, next offset)"
        );
        if !unclaimed.is_empty() {
            tracing::error!(
                ?unclaimed,
                "partitions whose shard could not be claimed in are not read until they are claimed; the others go on"
            );
        }
        Some(claims.iter().map(|c| c.next).collect())
    }

    fn assign_failed(&self) {
        self.give_up();
    }

    fn revoked(&self) {
        self.ownership.revoke_all();
    }
}
