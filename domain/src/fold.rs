//! The counting fold for one batch: every (user, item) pair is folded, in log
//! order, to the state its last event leaves it in. The projector then writes
//! one row change per pair and one counter delta per item, however many events
//! the batch held for them — this is also what turns a hot item's thousands of
//! likes per second into a single counter update.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::{EventId, ItemKey, LikeEvent, LikeState, Position, UserId};

/// An event as read from the log: where it is, its record time (see
/// [`crate::record_time`]) and the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedEvent {
    pub position: Position,
    pub record_time: i64,
    pub event: LikeEvent,
}

/// The net effect of a batch on one (user, item) pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetChange {
    pub user_id: UserId,
    pub item: ItemKey,
    /// The state the pair's last event in the batch leaves it in.
    pub state: LikeState,
    /// The event that decided the state, and when it happened.
    pub event_id: EventId,
    pub timestamp: DateTime<Utc>,
    /// Where that event sits in the log.
    pub position: Position,
}

/// Accumulates the events of one batch, in log order, into net changes.
/// Duplicates must be dropped before (by [`crate::DedupMemory`], the one dedup
/// rule): an event id seen twice here was judged worth applying twice.
#[derive(Debug, Default)]
pub struct BatchFold {
    pairs: HashMap<(UserId, ItemKey), usize>,
    changes: Vec<NetChange>,
    events: usize,
}

impl BatchFold {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next event of the log. Events of one item must arrive in offset
    /// order (they do: one item lives in one partition).
    pub fn push(&mut self, position: Position, event: &LikeEvent) {
        self.events += 1;
        let change = NetChange {
            user_id: event.user_id,
            item: event.item,
            state: LikeState::after(event.action),
            event_id: event.event_id,
            timestamp: event.timestamp,
            position,
        };
        match self.pairs.get(&(event.user_id, event.item)) {
            Some(&index) => self.changes[index] = change,
            None => {
                self.pairs
                    .insert((event.user_id, event.item), self.changes.len());
                self.changes.push(change);
            }
        }
    }

    /// How many events were pushed.
    pub fn events(&self) -> usize {
        self.events
    }

    /// The net changes, one per pair, in the order each pair first appeared.
    pub fn finish(self) -> Vec<NetChange> {
        self.changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Action, Projection};

    fn event(id: u128, user: i64, item: i64, action: Action) -> LikeEvent {
        LikeEvent {
            event_id: EventId::from_uuid(uuid::Uuid::from_u128(id)).unwrap(),
            user_id: UserId::parse(user).unwrap(),
            item: ItemKey::parse(1, item).unwrap(),
            action,
            timestamp: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    fn fold(events: &[LikeEvent]) -> Vec<NetChange> {
        let mut fold = BatchFold::new();
        for (offset, e) in events.iter().enumerate() {
            fold.push(
                Position {
                    partition: 0,
                    offset: offset as i64,
                },
                e,
            );
        }
        fold.finish()
    }

    #[test]
    fn many_events_for_one_pair_become_one_change_in_the_last_state() {
        let changes = fold(&[
            event(1, 7, 9, Action::Like),
            event(2, 7, 9, Action::Unlike),
            event(3, 7, 9, Action::Like),
        ]);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].state, LikeState::Liked);
        assert_eq!(changes[0].position.offset, 2);
    }

    #[test]
    fn an_event_id_judged_worth_applying_twice_is_folded_twice() {
        // Past the dedup horizon a retry is a new event: the fold must not
        // drop it on its own.
        let like = event(1, 7, 9, Action::Like);
        let unlike = event(2, 7, 9, Action::Unlike);
        let changes = fold(&[like.clone(), unlike, like]);
        assert_eq!(changes[0].state, LikeState::Liked);
    }

    #[test]
    fn unlike_of_never_liked_item_changes_nothing() {
        let mut p = Projection::default();
        let item = ItemKey::parse(1, 9).unwrap();
        p.apply(&event(1, 7, 9, Action::Unlike));
        assert_eq!(p.count(item), 0);
    }

    #[test]
    fn repeated_like_counts_once() {
        let mut p = Projection::default();
        let item = ItemKey::parse(1, 9).unwrap();
        p.apply(&event(1, 7, 9, Action::Like));
        p.apply(&event(2, 7, 9, Action::Like));
        p.apply(&event(3, 8, 9, Action::Like));
        assert_eq!(p.count(item), 2);
        p.apply(&event(4, 7, 9, Action::Unlike));
        assert_eq!(p.count(item), 1);
    }
}
