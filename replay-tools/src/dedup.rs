//! The rebuild's memory of applied events, bounded by the dedup horizon.
//!
//! The rule is the projector's, from one place ([`likes_domain::DedupHorizon`]
//! and [`DedupMemory`]): an event is a duplicate iff the same (item, event id)
//! was applied at a log time no more than the horizon before this record's log
//! time, log time being the partition's newest record time so far
//! ([`LogClock`]). The projector prunes `applied_events` rows once its
//! partition's log time passed them by the horizon; this window forgets the
//! same memories at the same point, so it stays bounded and the rebuild counts
//! exactly what the projector counted. An item's events share a partition, so
//! one window per partition suffices.

use std::collections::VecDeque;
use std::time::Duration;

use likes_domain::{DedupHorizon, DedupKey, DedupMemory, LogClock};

/// Events applied within the horizon of the partition's log time.
#[derive(Debug)]
pub struct DedupWindow {
    horizon: DedupHorizon,
    clock: LogClock,
    memory: DedupMemory,
    /// Applications in log-time order, for forgetting.
    order: VecDeque<(i64, DedupKey)>,
}

impl DedupWindow {
    /// An empty window remembering events for `horizon`.
    pub fn new(horizon: Duration) -> Self {
        let horizon = DedupHorizon::new(horizon);
        Self {
            horizon,
            clock: LogClock::default(),
            memory: DedupMemory::new(horizon),
            order: VecDeque::new(),
        }
    }

    /// Judges the partition's next record (event `key`, record time
    /// `record_time`): `true` when it is applied, `false` for a duplicate.
    pub fn first_sight(&mut self, key: DedupKey, record_time: i64) -> bool {
        let at = self.clock.tick(record_time);
        self.forget_old(at);
        if !self.memory.admit(key, at) {
            return false;
        }
        self.order.push_back((at, key));
        true
    }

    /// How many events are remembered now.
    pub fn len(&self) -> usize {
        self.memory.len()
    }

    /// Whether no event is remembered.
    pub fn is_empty(&self) -> bool {
        self.memory.is_empty()
    }

    fn forget_old(&mut self, log_time: i64) {
        let oldest = self.horizon.oldest_that_matters(log_time);
        while let Some(&(at, key)) = self.order.front() {
            if at >= oldest {
                break;
            }
            self.order.pop_front();
            self.memory.forget(&key, at);
        }
    }
}

#[cfg(test)]
mod tests {
    use likes_domain::{EventId, ItemKey};

    use super::*;

    fn new_key() -> DedupKey {
        (ItemKey::parse(1, 1).unwrap(), EventId::generate())
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn an_id_seen_again_within_the_horizon_is_a_duplicate() {
        let mut w = DedupWindow::new(HOUR);
        let id = new_key();
        assert!(w.first_sight(id, 0));
        assert!(!w.first_sight(id, HOUR_MS));
    }

    #[test]
    fn an_id_seen_again_past_the_horizon_counts_as_new_like_the_projector() {
        let mut w = DedupWindow::new(HOUR);
        let id = new_key();
        assert!(w.first_sight(id, 0));
        assert!(w.first_sight(id, HOUR_MS + 1));
    }

    #[test]
    fn memory_holds_only_the_ids_inside_the_horizon() {
        let mut w = DedupWindow::new(HOUR);
        for minute in 0..600 {
            w.first_sight(new_key(), minute * 60_000);
        }
        // Minutes 539..=599 are within an hour of minute 599.
        assert_eq!(w.len(), 61);
    }

    #[test]
    fn a_slightly_older_record_does_not_evict_newer_ids() {
        let mut w = DedupWindow::new(Duration::from_millis(10));
        let id = new_key();
        assert!(w.first_sight(id, 100));
        assert!(w.first_sight(new_key(), 95));
        assert!(!w.first_sight(id, 105));
    }

    #[test]
    fn the_same_event_id_on_another_item_is_another_event() {
        let mut w = DedupWindow::new(HOUR);
        let (_, id) = new_key();
        assert!(w.first_sight((ItemKey::parse(1, 1).unwrap(), id), 0));
        assert!(w.first_sight((ItemKey::parse(1, 2).unwrap(), id), 0));
    }
}
