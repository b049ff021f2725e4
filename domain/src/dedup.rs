//! The dedup horizon: the one rule that decides whether an event was already
//! applied, shared by the projector (its `applied_events` table) and the
//! rebuild (its in-memory window), so both count a late retry the same way.
//!
//! An event is identified by `(item, event_id)`, the key of `applied_events`.
//! Time is the partition's *log time*: the newest Kafka record timestamp seen
//! in the partition up to and including the record ([`LogClock`]). It never
//! runs backwards, so "older than the horizon" is final: a memory that no
//! longer matters at one record can never matter again later in the partition,
//! which is what lets the projector prune by how far each partition's log was
//! applied instead of by the wall clock (an outage then changes nothing).
//!
//! **The rule:** an event is a duplicate iff the same `(item, event_id)` was
//! applied at a log time no more than the horizon before this record's log
//! time. A duplicate does not refresh the memory; an event applied again past
//! the horizon does.
//!
//! The projector keeps its memory in PostgreSQL and loads what a batch needs
//! into a [`DedupMemory`]; a rebuild keeps one [`DedupWindow`] per partition,
//! the same memory that also forgets, in log-time order, what can no longer
//! decide anything (as the projector prunes its table), so it stays bounded.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use crate::{EventId, ItemKey, LikeEvent};

/// What identifies an event for dedup (the key of `applied_events`).
pub type DedupKey = (ItemKey, EventId);

/// The key of `event`.
pub fn dedup_key(event: &LikeEvent) -> DedupKey {
    (event.item, event.event_id)
}

/// How long an applied event is remembered, in log time (milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DedupHorizon {
    millis: i64,
}

impl DedupHorizon {
    pub fn new(horizon: Duration) -> Self {
        Self {
            millis: i64::try_from(horizon.as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// The horizon in milliseconds.
    pub fn millis(self) -> i64 {
        self.millis
    }

    /// The rule: an event at log time `at` whose key was applied at log time
    /// `applied_at` is a duplicate.
    pub fn is_duplicate(self, applied_at: i64, at: i64) -> bool {
        at.saturating_sub(applied_at) <= self.millis
    }

    /// The oldest application time that can still make an event a duplicate
    /// once the partition's log time reached `log_time`: memories older than
    /// this can be forgotten (pruned) without changing any decision.
    pub fn oldest_that_matters(self, log_time: i64) -> i64 {
        log_time.saturating_sub(self.millis)
    }
}

/// A record's time for dedup before the partition's clock is applied: the
/// Kafka timestamp when the record has one, else the event's own time.
pub fn record_time(kafka_millis: Option<i64>, event: &LikeEvent) -> i64 {
    kafka_millis.unwrap_or_else(|| event.timestamp.timestamp_millis())
}

/// A partition's log time: the newest record time seen so far in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogClock {
    newest: Option<i64>,
}

impl LogClock {
    /// A clock that already reached `newest` (`None`: nothing seen yet).
    pub fn starting_at(newest: Option<i64>) -> Self {
        Self { newest }
    }

    /// Advances past a record of time `record_time`; returns its log time.
    pub fn tick(&mut self, record_time: i64) -> i64 {
        let now = self.newest.map_or(record_time, |n| n.max(record_time));
        self.newest = Some(now);
        now
    }

    /// The log time reached (`None`: nothing seen yet).
    pub fn now(self) -> Option<i64> {
        self.newest
    }
}

/// Applied events remembered, and the judging of new ones by [`DedupHorizon`].
#[derive(Debug, Clone)]
pub struct DedupMemory {
    horizon: DedupHorizon,
    applied: HashMap<DedupKey, i64>,
}

impl DedupMemory {
    pub fn new(horizon: DedupHorizon) -> Self {
        Self {
            horizon,
            applied: HashMap::new(),
        }
    }

    /// Remembers that `key` was applied at log time `applied_at` (a memory
    /// loaded from storage).
    pub fn remember(&mut self, key: DedupKey, applied_at: i64) {
        self.applied.insert(key, applied_at);
    }

    /// Judges the next event of the partition, at log time `at`: `true` means
    /// apply it (it is remembered as applied at `at`), `false` a duplicate.
    pub fn admit(&mut self, key: DedupKey, at: i64) -> bool {
        if let Some(&applied_at) = self.applied.get(&key)
            && self.horizon.is_duplicate(applied_at, at)
        {
            return false;
        }
        self.applied.insert(key, at);
        true
    }

    /// When `key` was last applied, if remembered.
    pub fn applied_at(&self, key: &DedupKey) -> Option<i64> {
        self.applied.get(key).copied()
    }

    /// Forgets `key` if its last application was at `applied_at`.
    pub fn forget(&mut self, key: &DedupKey, applied_at: i64) {
        if self.applied.get(key) == Some(&applied_at) {
            self.applied.remove(key);
        }
    }

    pub fn len(&self) -> usize {
        self.applied.len()
    }

    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }
}

/// A partition's [`DedupMemory`] bounded by the horizon: judges each record
/// with [`LogClock`] and [`DedupMemory::admit`], and forgets memories once the
/// partition's log time passed them by the horizon, at the same point the
/// projector prunes its `applied_events` rows. Its decisions are exactly an
/// unbounded memory's (property-tested in `tests/dedup_properties.rs`).
#[derive(Debug, Clone)]
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
    /// `record_time`, see [`record_time`]): `true` when it is applied, `false`
    /// for a duplicate.
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
    use super::*;
    use crate::{Action, UserId};

    const H: Duration = Duration::from_secs(10);

    fn key(item: i64, id: u128) -> DedupKey {
        (
            ItemKey::parse(1, item).unwrap(),
            EventId::from_uuid(uuid::Uuid::from_u128(id)).unwrap(),
        )
    }

    #[test]
    fn a_repeat_within_the_horizon_is_a_duplicate_and_past_it_is_applied_again() {
        let mut m = DedupMemory::new(DedupHorizon::new(H));
        assert!(m.admit(key(1, 1), 0));
        assert!(!m.admit(key(1, 1), 10_000));
        assert!(m.admit(key(1, 1), 10_001));
        // The re-application is the new memory.
        assert!(!m.admit(key(1, 1), 20_001));
    }

    #[test]
    fn a_duplicate_does_not_refresh_the_memory() {
        let mut m = DedupMemory::new(DedupHorizon::new(H));
        assert!(m.admit(key(1, 1), 0));
        assert!(!m.admit(key(1, 1), 9_000));
        assert!(m.admit(key(1, 1), 10_500));
    }

    #[test]
    fn the_same_event_id_on_another_item_is_another_event() {
        let mut m = DedupMemory::new(DedupHorizon::new(H));
        assert!(m.admit(key(1, 1), 0));
        assert!(m.admit(key(2, 1), 0));
    }

    #[test]
    fn log_time_never_runs_backwards() {
        let mut clock = LogClock::starting_at(Some(100));
        assert_eq!(clock.tick(90), 100);
        assert_eq!(clock.tick(150), 150);
        assert_eq!(clock.tick(120), 150);
        assert_eq!(clock.now(), Some(150));
        assert_eq!(LogClock::default().tick(5), 5);
    }

    #[test]
    fn a_memory_older_than_what_matters_can_never_decide_again() {
        let h = DedupHorizon::new(H);
        let log_time = 50_000;
        let oldest = h.oldest_that_matters(log_time);
        assert!(h.is_duplicate(oldest, log_time));
        assert!(!h.is_duplicate(oldest - 1, log_time));
        // Later records have later log times: still not a duplicate.
        assert!(!h.is_duplicate(oldest - 1, log_time + 1));
    }

    #[test]
    fn a_record_without_a_kafka_time_uses_the_event_time() {
        let event = LikeEvent {
            event_id: EventId::generate(),
            user_id: UserId::parse(1).unwrap(),
            item: ItemKey::parse(1, 1).unwrap(),
            action: Action::Like,
            timestamp: chrono::DateTime::from_timestamp_millis(1234).unwrap(),
        };
        assert_eq!(record_time(None, &event), 1234);
        assert_eq!(record_time(Some(99), &event), 99);
    }

    fn new_key() -> DedupKey {
        (ItemKey::parse(1, 1).unwrap(), EventId::generate())
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const HOUR_MS: i64 = 3_600_000;

    #[test]
    fn a_window_finds_an_id_seen_again_within_the_horizon_a_duplicate() {
        let mut w = DedupWindow::new(HOUR);
        let id = new_key();
        assert!(w.first_sight(id, 0));
        assert!(!w.first_sight(id, HOUR_MS));
    }

    #[test]
    fn a_window_counts_an_id_seen_again_past_the_horizon_as_new_like_the_projector() {
        let mut w = DedupWindow::new(HOUR);
        let id = new_key();
        assert!(w.first_sight(id, 0));
        assert!(w.first_sight(id, HOUR_MS + 1));
    }

    #[test]
    fn a_window_holds_only_the_ids_inside_the_horizon() {
        let mut w = DedupWindow::new(HOUR);
        for minute in 0..600 {
            w.first_sight(new_key(), minute * 60_000);
        }
        // Minutes 539..=599 are within an hour of minute 599.
        assert_eq!(w.len(), 61);
    }

    #[test]
    fn a_slightly_older_record_does_not_evict_newer_ids_from_a_window() {
        let mut w = DedupWindow::new(Duration::from_millis(10));
        let id = new_key();
        assert!(w.first_sight(id, 100));
        assert!(w.first_sight(new_key(), 95));
        assert!(!w.first_sight(id, 105));
    }
}
