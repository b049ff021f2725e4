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

    /// Claims `partitions`, retried through transient failures for a bounded
    /// time ([`retry::CLAIM`]): the rebalance callback blocks the consumer.
    fn claim(&self, partitions: &[i32]) -> Option<Vec<Claim>> {
        retry::blocking(
            &retry::CLAIM,
            "claiming partitions",
            likes_infra::Error::is_transient,
            || self.claimer.claim(partitions.to_vec()),
        )
        .inspect_err(|e| tracing::warn!(error = %e, "claiming partitions failed"))
        .ok()
    }

    fn give_up(&self) {
        self.ownership.revoke_all();
        self.ownership.request_rejoin();
    }
}

impl Rebalance for ClaimOnAssign {
    fn assigned(&self, partitions: &[i32]) -> Option<Vec<Position>> {
        let Some(claims) = self.claim(partitions) else {
            tracing::error!(
                ?partitions,
                "cannot claim partitions; will rejoin the group"
            );
            self.give_up();
            return None;
        };
        self.ownership.assign(&claims);
        tracing::info!(
            partitions = ?claims.iter().map(|c| (c.next.partition, c.epoch, c.next.offset)).collect::<Vec<_>>(),
            "partitions assigned (partition, epoch, next offset)"
        );
        Some(claims.iter().map(|c| c.next).collect())
    }

    fn assign_failed(&self) {
        self.give_up();
    }

    fn revoked(&self) {
        self.ownership.revoke_all();
    }
}
