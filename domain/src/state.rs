//! The like/unlike state machine of one (user, item) pair, and a reference
//! projection built from it that the real projector is tested against.

use std::collections::{HashMap, HashSet};

use crate::{Action, DedupKey, ItemKey, LikeEvent, UserId, dedup_key};

/// Whether a user currently likes an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LikeState {
    #[default]
    NotLiked,
    Liked,
}

/// What an event did to the pair's state, and so to the item's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// The user now likes the item: count + 1.
    Liked,
    /// The user no longer likes the item: count - 1.
    Unliked,
    /// The count does not move, for the reason given.
    Unchanged(NoChange),
}

/// Why an event changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoChange {
    /// This event id was applied before.
    Duplicate,
    /// A like by a user who already likes the item.
    AlreadyLiked,
    /// An unlike of an item the user does not like.
    NotLiked,
}

impl LikeState {
    /// The state after `action`, and the transition that takes us there.
    /// Counting transitions (not events) is what makes repeats harmless.
    pub fn apply(self, action: Action) -> (LikeState, Transition) {
        match (self, action) {
            (LikeState::NotLiked, Action::Like) => (LikeState::Liked, Transition::Liked),
            (LikeState::Liked, Action::Unlike) => (LikeState::NotLiked, Transition::Unliked),
            (LikeState::Liked, Action::Like) => (
                LikeState::Liked,
                Transition::Unchanged(NoChange::AlreadyLiked),
            ),
            (LikeState::NotLiked, Action::Unlike) => (
                LikeState::NotLiked,
                Transition::Unchanged(NoChange::NotLiked),
            ),
        }
    }

    /// The state an action leaves behind, whatever came before.
    pub fn after(action: Action) -> LikeState {
        match action {
            Action::Like => LikeState::Liked,
            Action::Unlike => LikeState::NotLiked,
        }
    }
}

impl Transition {
    /// How this transition moves the item's count.
    pub fn delta(self) -> i64 {
        match self {
            Transition::Liked => 1,
            Transition::Unliked => -1,
            Transition::Unchanged(_) => 0,
        }
    }
}

/// The whole projection in memory, one event at a time: the reference model.
/// Slow and unbounded, which is fine for tests, `explain` and small audits.
#[derive(Debug, Default, Clone)]
pub struct Projection {
    liked: HashSet<(UserId, ItemKey)>,
    counts: HashMap<ItemKey, i64>,
    /// Every event ever applied (no horizon: the model remembers forever).
    seen: HashSet<DedupKey>,
}

impl Projection {
    /// Applies one event and says what it did.
    pub fn apply(&mut self, event: &LikeEvent) -> Transition {
        if !self.seen.insert(dedup_key(event)) {
            return Transition::Unchanged(NoChange::Duplicate);
        }
        let pair = (event.user_id, event.item);
        let before = if self.liked.contains(&pair) {
            LikeState::Liked
        } else {
            LikeState::NotLiked
        };
        let (after, transition) = before.apply(event.action);
        match after {
            LikeState::Liked => self.liked.insert(pair),
            LikeState::NotLiked => self.liked.remove(&pair),
        };
        let delta = transition.delta();
        if delta != 0 {
            *self.counts.entry(event.item).or_insert(0) += delta;
        }
        transition
    }

    /// The number of users who like `item` now.
    pub fn count(&self, item: ItemKey) -> i64 {
        self.counts.get(&item).copied().unwrap_or(0)
    }

    /// Whether `user` likes `item` now.
    pub fn likes(&self, user: UserId, item: ItemKey) -> bool {
        self.liked.contains(&(user, item))
    }

    /// Every item with a non-zero count.
    pub fn counts(&self) -> impl Iterator<Item = (ItemKey, i64)> + '_ {
        self.counts
            .iter()
            .filter(|(_, c)| **c != 0)
            .map(|(k, c)| (*k, *c))
    }
}
