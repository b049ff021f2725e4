//! The drain's events, made in advance: likes of Zipf items by uniform users,
//! with one in ten an unlike of a pair liked shortly before, so the projector
//! sees real transitions. Also their net effect per batch, folded in memory,
//! which is what the raw UNNEST baseline writes.

use std::collections::{HashMap, HashSet};

use likes_domain::{Action, EventId, ItemKey, LikeEvent, UserId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::keys::{ITEM_TYPE, Keys};

/// `n` events in log order.
pub fn generate(keys: &mut Keys, n: u64) -> anyhow::Result<Vec<LikeEvent>> {
    let mut rng = StdRng::seed_from_u64(3);
    let mut recent: Vec<(i64, i64)> = Vec::with_capacity(1024);
    let mut events = Vec::with_capacity(n as usize);
    let now = chrono::Utc::now();
    for _ in 0..n {
        let ((user, item), action) = if !recent.is_empty() && rng.random_ratio(1, 10) {
            let i = rng.random_range(0..recent.len());
            (recent.swap_remove(i), Action::Unlike)
        } else {
            let pair = keys.next_pair();
            if recent.len() < 1024 {
                recent.push(pair);
            } else {
                let i = rng.random_range(0..recent.len());
                recent[i] = pair;
            }
            (pair, Action::Like)
        };
        events.push(LikeEvent {
            event_id: EventId::generate(),
            user_id: UserId::parse(user)?,
            item: ItemKey::parse(ITEM_TYPE.into(), item)?,
            action,
            timestamp: now,
        });
    }
    Ok(events)
}

/// One batch's net rows, as the arrays the baseline binds.
#[derive(Debug, Default)]
pub struct NetBatch {
    /// Newly liked rows of user_likes.
    pub like_items: Vec<i64>,
    pub like_users: Vec<i64>,
    pub like_ids: Vec<uuid::Uuid>,
    /// Newly unliked rows.
    pub unlike_items: Vec<i64>,
    pub unlike_users: Vec<i64>,
    /// Per-item count changes, split by sign (a negative change is an UPDATE of
    /// an existing row, a positive one an upsert).
    pub up_items: Vec<i64>,
    pub up_deltas: Vec<i64>,
    pub down_items: Vec<i64>,
    pub down_deltas: Vec<i64>,
    pub last_offset: i64,
}

impl NetBatch {
    pub fn rows(&self) -> usize {
        self.like_items.len()
            + self.unlike_items.len()
            + self.up_items.len()
            + self.down_items.len()
    }
}

/// Folds `events` in batches of `batch` to their net transitions against the
/// state so far (known in memory: the best case, no reads at all).
pub fn net_batches(events: &[LikeEvent], batch: usize) -> Vec<NetBatch> {
    let mut liked: HashSet<(i64, i64)> = HashSet::new();
    let mut out = Vec::new();
    for (n, chunk) in events.chunks(batch).enumerate() {
        let mut last: HashMap<(i64, i64), (Action, uuid::Uuid)> = HashMap::new();
        for e in chunk {
            let key = (e.item.item_id.get(), e.user_id.get());
            last.insert(key, (e.action, *e.event_id.as_uuid()));
        }
        let mut net = NetBatch {
            last_offset: ((n + 1) * batch) as i64,
            ..NetBatch::default()
        };
        let mut deltas: HashMap<i64, i64> = HashMap::new();
        for ((item, user), (action, id)) in last {
            let was = liked.contains(&(item, user));
            match (action, was) {
                (Action::Like, false) => {
                    liked.insert((item, user));
                    net.like_items.push(item);
                    net.like_users.push(user);
                    net.like_ids.push(id);
                    *deltas.entry(item).or_default() += 1;
                }
                (Action::Unlike, true) => {
                    liked.remove(&(item, user));
                    net.unlike_items.push(item);
                    net.unlike_users.push(user);
                    *deltas.entry(item).or_default() -= 1;
                }
                _ => {}
            }
        }
        for (item, delta) in deltas {
            if delta >= 0 {
                net.up_items.push(item);
                net.up_deltas.push(delta);
            } else {
                net.down_items.push(item);
                net.down_deltas.push(delta);
            }
        }
        out.push(net);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: i64, item: i64, action: Action) -> LikeEvent {
        LikeEvent {
            event_id: EventId::generate(),
            user_id: UserId::parse(user).expect("user"),
            item: ItemKey::parse(ITEM_TYPE.into(), item).expect("item"),
            action,
            timestamp: chrono::Utc::now(),
        }
    }

    #[test]
    fn net_batches_write_only_transitions() {
        let events = vec![
            event(1, 10, Action::Like),
            event(2, 10, Action::Like),
            event(2, 10, Action::Unlike), // like then unlike in one batch: nothing
            event(3, 20, Action::Unlike), // unlike of a not-liked pair: nothing
            event(1, 10, Action::Unlike), // next batch: 1 unlikes 10
            event(4, 20, Action::Like),
        ];
        let nets = net_batches(&events, 4);
        assert_eq!(nets.len(), 2);
        assert_eq!(
            (nets[0].like_items.clone(), nets[0].like_users.clone()),
            (vec![10], vec![1])
        );
        assert!(nets[0].unlike_items.is_empty());
        assert_eq!(
            (nets[0].up_items.clone(), nets[0].up_deltas.clone()),
            (vec![10], vec![1])
        );
        assert_eq!(
            (nets[1].unlike_items.clone(), nets[1].unlike_users.clone()),
            (vec![10], vec![1])
        );
        assert_eq!(
            (nets[1].down_items.clone(), nets[1].down_deltas.clone()),
            (vec![10], vec![-1])
        );
        assert_eq!(
            (nets[1].up_items.clone(), nets[1].up_deltas.clone()),
            (vec![20], vec![1])
        );
    }

    #[test]
    fn generated_unlikes_follow_likes() {
        let mut keys = Keys::new(100, 1.0, 1000, 7).expect("keys");
        let events = generate(&mut keys, 2000).expect("events");
        assert_eq!(events.len(), 2000);
        let unlikes = events.iter().filter(|e| e.action == Action::Unlike).count();
        assert!(unlikes > 0 && unlikes < 400, "{unlikes} unlikes");
    }
}
