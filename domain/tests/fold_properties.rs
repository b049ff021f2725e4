//! Property tests of the counting rule: whatever the stream (duplicates of
//! earlier events, interleaved items, likes and unlikes in any order), however
//! it is cut into batches, and wherever the projector crashes and restarts from
//! its last commit, the batch-folded projection equals the one-event-at-a-time
//! reference model.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use likes_domain::{
    Action, BatchFold, DedupHorizon, DedupMemory, EventId, ItemKey, LikeEvent, LikeState, Position,
    Projection, UserId, dedup_key,
};
use proptest::prelude::*;

/// What the database does with a batch, in memory: events already applied are
/// dropped by the dedup rule (the dedup table; every record here has the same
/// log time, so the horizon never passes), each pair's net state is inserted if
/// absent or deleted if present, and only those transitions move the counts.
#[derive(Clone)]
struct Store {
    applied: DedupMemory,
    liked: HashSet<(UserId, ItemKey)>,
    counts: BTreeMap<ItemKey, i64>,
    next_offset: usize,
}

impl Default for Store {
    fn default() -> Self {
        Self {
            applied: DedupMemory::new(DedupHorizon::new(std::time::Duration::from_secs(3600))),
            liked: HashSet::new(),
            counts: BTreeMap::new(),
            next_offset: 0,
        }
    }
}

impl Store {
    fn commit(&mut self, log: &[LikeEvent], from: usize, to: usize) {
        let mut fold = BatchFold::new();
        for (offset, event) in log.iter().enumerate().take(to).skip(from) {
            if !self.applied.admit(dedup_key(event), 0) {
                continue;
            }
            fold.push(
                Position {
                    partition: 0,
                    offset: offset as i64,
                },
                event,
            );
        }
        for change in fold.finish() {
            let pair = (change.user_id, change.item);
            let moved = match change.state {
                LikeState::Liked => self.liked.insert(pair).then_some(1),
                LikeState::NotLiked => self.liked.remove(&pair).then_some(-1),
            };
            if let Some(delta) = moved {
                let count = self.counts.entry(change.item).or_insert(0);
                *count += delta;
                assert!(*count >= 0, "a count went negative");
            }
        }
        self.next_offset = to;
    }
}

/// A generated step: a new event, or a client retry of an earlier one.
#[derive(Debug, Clone)]
enum Step {
    New { user: i64, item: i64, like: bool },
    Retry(usize),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let new = (1i64..5, 1i64..4, any::<bool>()).prop_map(|(user, item, like)| Step::New {
        user,
        item,
        like,
    });
    let retry = any::<usize>().prop_map(Step::Retry);
    prop::collection::vec(prop_oneof![4 => new, 1 => retry], 0..120)
}

fn build_log(steps: &[Step]) -> Vec<LikeEvent> {
    let mut log: Vec<LikeEvent> = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        match step {
            Step::New { user, item, like } => log.push(LikeEvent {
                event_id: EventId::from_uuid(uuid::Uuid::from_u128(i as u128 + 1)).unwrap(),
                user_id: UserId::parse(*user).unwrap(),
                item: ItemKey::parse(1, *item).unwrap(),
                action: if *like { Action::Like } else { Action::Unlike },
                timestamp: DateTime::<Utc>::UNIX_EPOCH,
            }),
            Step::Retry(k) if !log.is_empty() => {
                let earlier = log[k % log.len()].clone();
                log.push(earlier);
            }
            Step::Retry(_) => {}
        }
    }
    log
}

fn reference(log: &[LikeEvent]) -> BTreeMap<ItemKey, i64> {
    let mut model = Projection::default();
    for event in log {
        model.apply(event);
    }
    model.counts().collect()
}

fn nonzero(counts: &BTreeMap<ItemKey, i64>) -> BTreeMap<ItemKey, i64> {
    counts
        .iter()
        .filter(|(_, c)| **c != 0)
        .map(|(k, c)| (*k, *c))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_batching_equals_the_reference_model(
        steps in steps(),
        cuts in prop::collection::vec(1usize..20, 1..40),
    ) {
        let log = build_log(&steps);
        let mut store = Store::default();
        let mut cut = cuts.iter().cycle();
        while store.next_offset < log.len() {
            let to = (store.next_offset + cut.next().unwrap()).min(log.len());
            store.commit(&log, store.next_offset, to);
        }
        prop_assert_eq!(nonzero(&store.counts), reference(&log));
    }

    #[test]
    fn crashes_and_redelivery_from_any_commit_change_nothing(
        steps in steps(),
        cuts in prop::collection::vec(1usize..20, 1..40),
        crashes in prop::collection::vec((any::<bool>(), 0usize..30), 1..10),
    ) {
        let log = build_log(&steps);
        let mut store = Store::default();
        let mut cut = cuts.iter().cycle();
        let mut crash = crashes.iter().cycle();
        while store.next_offset < log.len() {
            let to = (store.next_offset + cut.next().unwrap()).min(log.len());
            let (crash_before_commit, rewind) = crash.next().unwrap();
            let to = if *crash_before_commit {
                // The batch was folded but never committed: nothing of it is kept,
                // and the restarted projector reads again from the stored offset,
                // cutting its next batch elsewhere.
                (store.next_offset + cut.next().unwrap()).min(log.len())
            } else {
                to
            };
            store.commit(&log, store.next_offset, to);
            // A zombie or a rebalance redelivers an already committed stretch:
            // re-applying it must change nothing.
            let from = store.next_offset.saturating_sub(*rewind);
            let before = store.counts.clone();
            let mut replay = store.clone();
            replay.commit(&log, from, store.next_offset);
            prop_assert_eq!(nonzero(&replay.counts), nonzero(&before));
        }
        prop_assert_eq!(nonzero(&store.counts), reference(&log));
    }

    #[test]
    fn a_batch_writes_one_change_per_pair_and_never_more(steps in steps()) {
        let log = build_log(&steps);
        let mut fold = BatchFold::new();
        for (offset, event) in log.iter().enumerate() {
            fold.push(Position { partition: 0, offset: offset as i64 }, event);
        }
        let pairs: HashSet<_> = log.iter().map(|e| (e.user_id, e.item)).collect();
        let changes = fold.finish();
        prop_assert_eq!(changes.len(), pairs.len());
        let mut per_item: HashMap<ItemKey, usize> = HashMap::new();
        for c in &changes {
            *per_item.entry(c.item).or_default() += 1;
        }
        prop_assert!(per_item.values().all(|n| *n <= 4));
    }
}
