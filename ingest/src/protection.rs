//! Protections in front of the producer: the shared per-user rate limit, the
//! quick dedup of repeated identical actions, and load shedding when too many
//! events already wait for the broker. All are user experience and safety
//! valves; none decides a count (the projector's rules do). Redis failures fail
//! open: a request is never refused because a protection could not be checked.

use std::time::Duration;

use likes_domain::{Action, ItemKey, Position, UserId};
use likes_infra::kafka::PublishError;
use likes_infra::redis::Redis;
use likes_infra::redis::admission::{Admission, Admitted};
use likes_infra::redis::dedup::{DedupMemos, Outcome, Recall, Settle};
use likes_infra::redis::ratelimit::RateLimiter;

use crate::{ApiError, Limits, observability};

pub use likes_infra::redis::dedup::Memo;

/// How long past the produce timeout a pair whose publish has not settled (or
/// whose outcome is unknown) stays unanswerable: the producer gives up on a
/// record after the produce timeout, and this covers a request still on the
/// wire to the broker then. Only dedup is lost meanwhile, never an action.
const UNSETTLED_SLACK: Duration = Duration::from_secs(30);

/// What the memo said about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recalled {
    /// Answer with this memo; do not produce.
    Answer(Memo),
    /// Produce; `marked` says whether the publish is marked and must be settled
    /// with the same flag (false when dedup is off or Redis failed).
    Produce { marked: bool },
}

/// What the protections decided for one user's events in a batch.
#[derive(Debug)]
pub struct BatchAdmit {
    /// The first this many of the user's events go; the rest are refused.
    pub granted: u32,
    /// The refused events' error (set when fewer were granted than asked).
    pub refused: Option<ApiError>,
    /// Whether the publishes of the events that go are marked (settle them
    /// with the same flag).
    pub marked: bool,
}

/// The protections of one instance.
pub struct Protection {
    limiter: Option<RateLimiter>,
    memos: Option<DedupMemos>,
    /// Both of the above in one script, when both are on.
    both: Option<Admission>,
    max_in_flight: usize,
}

impl Protection {
    /// `produce_timeout` bounds how long a publish may stay unsettled.
    pub fn new(redis: &Redis, limits: &Limits, produce_timeout: Duration) -> Self {
        let limiter = limits.rate.map(|rate| RateLimiter::new(redis, rate));
        let memos = limits.dedup_window.map(|window| {
            DedupMemos::new(redis, window, window + produce_timeout + UNSETTLED_SLACK)
        });
        let both = limiter
            .as_ref()
            .zip(memos.as_ref())
            .map(|(limiter, memos)| Admission::new(limiter, memos));
        Self {
            limiter,
            memos,
            both,
            max_in_flight: limits.max_in_flight,
        }
    }

    /// Whether a per-user rate limit is on; without one [`Protection::admit`]
    /// grants everything, so callers may skip asking.
    pub fn limits_rate(&self) -> bool {
        self.limiter.is_some()
    }

    /// Sheds `adding` more events when the producer already holds too many.
    pub fn backpressure(&self, in_flight: i32, adding: usize) -> Result<(), ApiError> {
        let in_flight = usize::try_from(in_flight).unwrap_or(0);
        if in_flight.saturating_add(adding) > self.max_in_flight {
            return Err(ApiError::Overloaded);
        }
        Ok(())
    }

    /// A single like's protections: its token, then the memo's answer or the
    /// mark of the publish about to start. One Redis call when both are on;
    /// a refused like is not marked.
    pub async fn guard(
        &self,
        user: UserId,
        item: ItemKey,
        action: Action,
    ) -> Result<Recalled, ApiError> {
        let Some(both) = &self.both else {
            return self.guard_apart(user, item, action).await;
        };
        match both.admit(user, item, action).await {
            Ok(Admitted::Refused { retry_after_ms }) => Err(refused(retry_after_ms)),
            Ok(Admitted::Answer(memo)) => Ok(Recalled::Answer(memo)),
            Ok(Admitted::Marked) => Ok(Recalled::Produce { marked: true }),
            Err(e) => {
                both_unavailable(&e);
                Ok(Recalled::Produce { marked: false })
            }
        }
    }

    /// [`Self::guard`] with at most one protection on, so a refusal (rate
    /// limit on) never meets a mark (dedup on) that would need releasing.
    async fn guard_apart(
        &self,
        user: UserId,
        item: ItemKey,
        action: Action,
    ) -> Result<Recalled, ApiError> {
        let ((_, limited), recalled) =
            tokio::join!(self.admit(user, 1), self.recall(user, item, action));
        match limited {
            Some(e) => Err(e),
            None => Ok(recalled),
        }
    }

    /// A batch's protections for `user`'s events, their `items` in request
    /// order: a token each, and the marks of the publishes of those that go.
    /// One Redis call when both are on; a refused event is not marked.
    pub async fn admit_batch(&self, user: UserId, items: &[ItemKey]) -> BatchAdmit {
        let cost = u32::try_from(items.len()).unwrap_or(u32::MAX);
        let Some(both) = &self.both else {
            // At most one is on: the limit grants all or dedup marks none.
            let (granted, refused) = self.admit(user, cost).await;
            let marked = self.dedups() && {
                let go = usize::try_from(granted).unwrap_or(items.len());
                let pairs: Vec<(UserId, ItemKey)> =
                    items.iter().take(go).map(|item| (user, *item)).collect();
                self.mark(&pairs).await
            };
            return BatchAdmit {
                granted,
                refused,
                marked,
            };
        };
        match both.admit_batch(user, items).await {
            Ok(grant) => BatchAdmit {
                granted: grant.granted.min(cost),
                refused: (grant.granted < cost).then(|| refused(grant.retry_after_ms)),
                marked: true,
            },
            Err(e) => {
                both_unavailable(&e);
                BatchAdmit {
                    granted: cost,
                    refused: None,
                    marked: false,
                }
            }
        }
    }

    /// How many of `cost` events `user` may send now; when fewer than asked,
    /// also the error the refused ones get.
    pub async fn admit(&self, user: UserId, cost: u32) -> (u32, Option<ApiError>) {
        let Some(limiter) = &self.limiter else {
            return (cost, None);
        };
        match limiter.acquire(user, cost).await {
            Ok(grant) if grant.granted >= cost => (cost, None),
            Ok(grant) => (grant.granted, Some(refused(grant.retry_after_ms))),
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; admitting");
                observability::protection_unavailable(observability::RATE_LIMIT);
                (cost, None)
            }
        }
    }

    /// The answer to the same action by the same user on the same item within
    /// the dedup window, if that action is still the user's latest logged one
    /// on the item; otherwise the publish about to start is marked.
    pub async fn recall(&self, user: UserId, item: ItemKey, action: Action) -> Recalled {
        let Some(memos) = &self.memos else {
            return Recalled::Produce { marked: false };
        };
        match memos.recall(user, item, action).await {
            Ok(Recall::Answer(memo)) => Recalled::Answer(memo),
            Ok(Recall::Marked) => Recalled::Produce { marked: true },
            Err(e) => {
                tracing::warn!(error = %e, "dedup memo unavailable; producing");
                observability::protection_unavailable(observability::DEDUP);
                Recalled::Produce { marked: false }
            }
        }
    }

    /// Whether quick dedup is on (and publishes must be marked and settled).
    pub fn dedups(&self) -> bool {
        self.memos.is_some()
    }

    /// Marks the publishes of a batch, one per event; `false` when they are
    /// not marked (dedup off or Redis failed), which settles must be told.
    pub async fn mark(&self, pairs: &[(UserId, ItemKey)]) -> bool {
        let Some(memos) = &self.memos else {
            return false;
        };
        match memos.mark(pairs).await {
            Ok(()) => true,
            Err(e) => {
                // Some marks may be in: they only keep those pairs unanswerable
                // until they expire.
                tracing::warn!(error = %e, "dedup marks not written; producing");
                observability::protection_unavailable(observability::DEDUP);
                false
            }
        }
    }

    /// Settles publishes: an ack becomes the pair's memo if it has the highest
    /// offset seen, an unknown outcome makes the pair unanswerable for a while.
    pub async fn settle(&self, settles: &[Settle]) {
        let Some(memos) = &self.memos else {
            return;
        };
        if settles.is_empty() {
            return;
        }
        if let Err(e) = memos.settle(settles).await {
            // A mark left unsettled keeps its pair unanswerable until it expires.
            tracing::warn!(error = %e, "dedup memo not settled");
            observability::protection_unavailable(observability::DEDUP);
        }
    }
}

/// Both protections asked in one call could not be: each is skipped (fail
/// open) and counted.
fn both_unavailable(e: &likes_infra::Error) {
    tracing::warn!(error = %e, "rate limiter and dedup memo unavailable; producing");
    observability::protection_unavailable(observability::RATE_LIMIT);
    observability::protection_unavailable(observability::DEDUP);
}

/// The answer to a request the rate limit refused, `retry_after_ms` before
/// the user's next token.
fn refused(retry_after_ms: u64) -> ApiError {
    ApiError::RateLimited {
        retry_after_secs: retry_after_ms.div_ceil(1000).max(1),
    }
}

/// How a publish ended, for its settle.
pub fn outcome(
    action: Action,
    event_id: likes_domain::EventId,
    result: &Result<Position, PublishError>,
) -> Outcome {
    match result {
        Ok(ack) => Outcome::Acked(Memo {
            action,
            event_id,
            ack: *ack,
        }),
        // Handed to the producer and not acked: it may yet be in the log.
        Err(PublishError::NotAcked(_)) => Outcome::Uncertain,
        // Never handed to the producer.
        Err(PublishError::QueueFull | PublishError::Encode(_)) => Outcome::Released,
    }
}

/// The answer to a failed publish of `event_id`: always a 503; when the event
/// may be in the log, the body carries the id to retry with.
pub fn publish_error(e: PublishError, event_id: likes_domain::EventId) -> ApiError {
    match e {
        PublishError::QueueFull => ApiError::Overloaded,
        PublishError::NotAcked(_) => ApiError::NotAcked { event_id },
        PublishError::Encode(e) => {
            tracing::warn!(error = %e, "encoding an event failed");
            ApiError::Unavailable("the event could not be encoded (schema registry)".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_publish_that_reached_the_producer_can_be_of_unknown_outcome() {
        let id = likes_domain::EventId::generate();
        let ack = Position {
            partition: 3,
            offset: 42,
        };
        assert_eq!(
            outcome(Action::Like, id, &Ok(ack)),
            Outcome::Acked(Memo {
                action: Action::Like,
                event_id: id,
                ack
            })
        );
        let timed_out = Err(PublishError::NotAcked(
            likes_infra::Error::DeliveryAbandoned,
        ));
        assert_eq!(outcome(Action::Like, id, &timed_out), Outcome::Uncertain);
        assert_eq!(
            outcome(Action::Like, id, &Err(PublishError::QueueFull)),
            Outcome::Released
        );
    }
}
