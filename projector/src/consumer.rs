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
}

impl ClaimOnAssign {
    pub fn new(claimer: Claimer, ownership: Arc<Ownership>) -> Self {
        Self { claimer, ownership }
    }

    /// Claims `partitions`, each in its shard. While no shard's claim
    /// succeeds, the failed ones are tried again through transient failures
    /// for a bounded time ([`retry::CLAIM`]: the rebalance callback blocks the
    /// consumer); once some shard succeeded, the others are left to the
    /// background re-claim so the claimed partitions start at once. Returns
    /// the claims made and the partitions left unclaimed.
    fn claim(&self, partitions: &[i32]) -> (Vec<Claim>, Vec<i32>) {
        let mut claimed = Vec::new();
        let mut remaining = partitions.to_vec();
        let mut backoff = retry::CLAIM.backoff();
        while !remaining.is_empty() {
            let mut worth_retrying = false;
            let asked = std::mem::take(&mut remaining);
            match self.claimer.claim(asked.clone()) {
                Err(e) => {
                    tracing::warn!(error = %e, "claiming partitions failed");
                    remaining = asked;
                }
                Ok(answers) => {
                    for (shard, partitions, result) in answers {
                        match result {
                            Ok(claims) => claimed.extend(claims),
                            Err(e) => {
                                tracing::warn!(error = %e, shard, ?partitions, "claiming partitions in their shard failed");
                                worth_retrying |= e.is_transient();
                                remaining.extend(partitions);
                            }
                        }
                    }
                }
            }
            if !claimed.is_empty() || !worth_retrying {
                break;
            }
            match backoff.after_failure() {
                Some(delay) => std::thread::sleep(delay),
                None => break,
            }
        }
        (claimed, remaining)
    }

    fn give_up(&self) {
        self.ownership.revoke_all();
        self.ownership.request_rejoin();
    }
}

impl Rebalance for ClaimOnAssign {
    fn assigned(&self, partitions: &[i32]) -> Option<Vec<Position>> {
        let (claims, unclaimed) = self.claim(partitions);
        if claims.is_empty() && !unclaimed.is_empty() {
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
