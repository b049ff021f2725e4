//! Protections in front of the producer: the shared per-user rate limit, the
//! quick dedup of repeated identical actions, and load shedding when too many
//! events already wait for the broker. All are user experience and safety
//! valves; none decides a count (the projector's rules do). Redis failures fail
//! open: a request is never refused because a protection could not be checked.

use std::time::Duration;

use likes_domain::{Action, EventId, ItemKey, UserId};
use likes_infra::cache::CountCache;
use likes_infra::publisher::{Ack, PublishError};
use likes_infra::ratelimit::RateLimiter;

use crate::{ApiError, Limits, observability};

/// What the previous identical action was answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memo {
    pub event_id: EventId,
    pub ack: Ack,
}

/// The protections of one instance.
pub struct Protection {
    limiter: Option<RateLimiter>,
    cache: CountCache,
    dedup_window: Option<Duration>,
    max_in_flight: usize,
}

impl Protection {
    pub fn new(cache: CountCache, limits: &Limits) -> Self {
        Self {
            limiter: limits
                .rate
                .map(|rate| RateLimiter::new(cache.connection(), cache.prefix(), rate)),
            cache,
            dedup_window: limits.dedup_window,
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

    /// How many of `cost` events `user` may send now; when fewer than asked,
    /// also the error the refused ones get.
    pub async fn admit(&self, user: UserId, cost: u32) -> (u32, Option<ApiError>) {
        let Some(limiter) = &self.limiter else {
            return (cost, None);
        };
        match limiter.acquire(user, cost).await {
            Ok(grant) if grant.granted >= cost => (cost, None),
            Ok(grant) => (
                grant.granted,
                Some(ApiError::RateLimited {
                    retry_after_secs: grant.retry_after_ms.div_ceil(1000).max(1),
                }),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; admitting");
                observability::protection_unavailable("rate_limit");
                (cost, None)
            }
        }
    }

    /// The answer to the same action by the same user on the same item within
    /// the dedup window, if there is one.
    pub async fn recall(&self, user: UserId, item: ItemKey, action: Action) -> Option<Memo> {
        self.dedup_window?;
        match self.cache.dedup_get(user, item).await {
            Ok(Some(text)) => parse_memo(&text, action),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "dedup memo unavailable; producing");
                observability::protection_unavailable("dedup");
                None
            }
        }
    }

    /// Remembers an acked action as the user's latest on the item.
    pub async fn remember(&self, user: UserId, item: ItemKey, action: Action, memo: Memo) {
        let Some(window) = self.dedup_window else {
            return;
        };
        let text = format!(
            "{}:{}:{}:{}",
            action.symbol(),
            memo.ack.partition,
            memo.ack.offset,
            memo.event_id
        );
        if let Err(e) = self.cache.dedup_put(user, item, &text, window).await {
            tracing::warn!(error = %e, "dedup memo not written");
        }
    }
}

/// Reads a memo `"<ACTION>:<partition>:<offset>:<event_id>"` if it is for `action`.
fn parse_memo(text: &str, action: Action) -> Option<Memo> {
    let mut parts = text.splitn(4, ':');
    if parts.next()? != action.symbol() {
        return None;
    }
    let partition = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    let event_id = EventId::parse(parts.next()?).ok()?;
    Some(Memo {
        event_id,
        ack: Ack { partition, offset },
    })
}

/// The answer to a failed publish: always a 503 to retry with the same event id.
pub fn publish_error(e: PublishError) -> ApiError {
    match e {
        PublishError::QueueFull => ApiError::Overloaded,
        PublishError::NotAcked(_) => ApiError::Unavailable(
            "the event log did not acknowledge in time; retry with the same event_id".into(),
        ),
        PublishError::Encode(e) => ApiError::Unavailable(format!("cannot encode: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memo_answers_only_the_same_action() {
        let id = "0194e4c4-6f5c-7d2a-9a4e-2f6f3c1a9b10";
        let text = format!("LIKE:3:42:{id}");
        let memo = parse_memo(&text, Action::Like).unwrap();
        assert_eq!(
            memo.ack,
            Ack {
                partition: 3,
                offset: 42
            }
        );
        assert_eq!(memo.event_id.to_string(), id);
        assert_eq!(parse_memo(&text, Action::Unlike), None);
        assert_eq!(parse_memo("LIKE:x", Action::Like), None);
    }
}
