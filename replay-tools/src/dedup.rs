//! The rebuild's memory of event ids, bounded by time like the projector's.
//!
//! The projector remembers applied event ids for `DEDUP_HORIZON_SECONDS` (its
//! `applied_events` rows are pruned after that), so a retry of the same id
//! that reaches the log later than the horizon counts as a new event. A
//! rebuild that remembered every id forever would both grow with the topic and
//! count differently from the projector; this window keeps only the ids whose
//! record time lies within the horizon of the newest record time it saw.
//! An item's events share a partition, so one window per partition suffices.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use uuid::Uuid;

/// Event ids seen within the horizon of the newest time seen.
#[derive(Debug)]
pub struct DedupWindow {
    horizon_ms: i64,
    newest_ms: i64,
    /// Each id with the time it was last seen.
    ids: HashMap<Uuid, i64>,
    /// Ids in the order they were seen (times near-monotonic within a partition).
    order: VecDeque<(i64, Uuid)>,
}

impl DedupWindow {
    /// An empty window remembering ids for `horizon`.
    pub fn new(horizon: Duration) -> Self {
        Self {
            horizon_ms: i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX),
            newest_ms: i64::MIN,
            ids: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Records `id` seen at `millis`; `true` when it is new within the horizon
    /// (apply it), `false` for a duplicate (skip it).
    pub fn first_sight(&mut self, id: Uuid, millis: i64) -> bool {
        self.newest_ms = self.newest_ms.max(millis);
        self.forget_old();
        if let Some(seen) = self.ids.get(&id)
            && self.newest_ms.saturating_sub(*seen) <= self.horizon_ms
        {
            return false;
        }
        self.ids.insert(id, millis);
        self.order.push_back((millis, id));
        true
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn forget_old(&mut self) {
        let cutoff = self.newest_ms.saturating_sub(self.horizon_ms);
        while let Some(&(millis, id)) = self.order.front() {
            if millis >= cutoff {
                break;
            }
            self.order.pop_front();
            // Only when this entry is the id's latest sighting.
            if self.ids.get(&id) == Some(&millis) {
                self.ids.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn an_id_seen_again_within_the_horizon_is_a_duplicate() {
        let mut w = DedupWindow::new(HOUR);
        let id = Uuid::new_v4();
        assert!(w.first_sight(id, 0));
        assert!(!w.first_sight(id, HOUR_MS));
    }

    #[test]
    fn an_id_seen_again_past_the_horizon_counts_as_new_like_the_projector() {
        let mut w = DedupWindow::new(HOUR);
        let id = Uuid::new_v4();
        assert!(w.first_sight(id, 0));
        assert!(w.first_sight(id, HOUR_MS + 1));
    }

    #[test]
    fn memory_holds_only_the_ids_inside_the_horizon() {
        let mut w = DedupWindow::new(HOUR);
        for minute in 0..600 {
            w.first_sight(Uuid::new_v4(), minute * 60_000);
        }
        // Minutes 539..=599 are within an hour of minute 599.
        assert_eq!(w.len(), 61);
    }

    #[test]
    fn a_slightly_older_record_does_not_evict_newer_ids() {
        let mut w = DedupWindow::new(Duration::from_millis(10));
        let id = Uuid::new_v4();
        assert!(w.first_sight(id, 100));
        assert!(w.first_sight(Uuid::new_v4(), 95));
        assert!(!w.first_sight(id, 105));
    }
}
