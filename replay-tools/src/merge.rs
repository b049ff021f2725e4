//! Merging records from several partitions into one oldest-first stream
//! without reading everything first. Each partition's records arrive in offset
//! order (broker timestamps are near-monotonic within a partition), so a record
//! may be released once every other unfinished partition has already been read
//! up to its time: only the records between those read fronts are held.

use std::collections::{BTreeMap, VecDeque};

/// Holds records of several partitions until they can be released in time order.
#[derive(Debug)]
pub struct TimeMerge<T> {
    /// Per active partition: the time of the last record read, and the held records.
    parts: BTreeMap<i32, (i64, VecDeque<(i64, T)>)>,
    /// Held records of partitions that finished reading.
    finished: BTreeMap<i32, VecDeque<(i64, T)>>,
}

impl<T> TimeMerge<T> {
    /// A merge over `partitions`, none of which has been read yet.
    pub fn new(partitions: impl IntoIterator<Item = i32>) -> Self {
        Self {
            parts: partitions
                .into_iter()
                .map(|p| (p, (i64::MIN, VecDeque::new())))
                .collect(),
            finished: BTreeMap::new(),
        }
    }

    /// A record of `partition` with time `millis` was read; `item` is what to
    /// release for it (`None` when it does not match the query but still moves
    /// the partition's read front).
    pub fn push(&mut self, partition: i32, millis: i64, item: Option<T>) {
        if let Some((front, held)) = self.parts.get_mut(&partition) {
            *front = (*front).max(millis);
            if let Some(item) = item {
                held.push_back((millis, item));
            }
        }
    }

    /// `partition` will deliver nothing more.
    pub fn finish(&mut self, partition: i32) {
        if let Some((_, held)) = self.parts.remove(&partition)
            && !held.is_empty()
        {
            self.finished.insert(partition, held);
        }
    }

    /// The oldest held record, if no unfinished partition can still deliver an
    /// older one.
    pub fn pop(&mut self) -> Option<T> {
        let oldest = self
            .parts
            .iter()
            .filter_map(|(p, (_, held))| held.front().map(|(t, _)| (*t, *p, false)))
            .chain(
                self.finished
                    .iter()
                    .filter_map(|(p, held)| held.front().map(|(t, _)| (*t, *p, true))),
            )
            .min()?;
        let (time, partition, done) = oldest;
        // A partition with nothing held may still deliver a record older than
        // `time` unless it has already been read past it.
        let blocked = self
            .parts
            .iter()
            .any(|(p, (front, held))| *p != partition && held.is_empty() && *front < time);
        if blocked {
            return None;
        }
        let queue = if done {
            self.finished.get_mut(&partition)?
        } else {
            &mut self.parts.get_mut(&partition)?.1
        };
        let item = queue.pop_front().map(|(_, item)| item);
        if done && queue.is_empty() {
            self.finished.remove(&partition);
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_out_oldest_first_across_partitions() {
        let mut m = TimeMerge::new([0, 1]);
        m.push(0, 10, Some("a"));
        m.push(0, 30, Some("c"));
        assert_eq!(m.pop(), None, "partition 1 may still hold something older");
        m.push(1, 20, Some("b"));
        assert_eq!(m.pop(), Some("a"));
        assert_eq!(m.pop(), Some("b"));
        assert_eq!(
            m.pop(),
            None,
            "partition 1 may still hold something before 30"
        );
        m.finish(1);
        assert_eq!(m.pop(), Some("c"));
        m.finish(0);
        assert_eq!(m.pop(), None);
    }

    #[test]
    fn records_that_do_not_match_still_move_a_partition_forward() {
        let mut m = TimeMerge::new([0, 1]);
        m.push(0, 10, Some("a"));
        m.push(1, 50, None);
        assert_eq!(m.pop(), Some("a"));
    }

    #[test]
    fn finished_partitions_drain_in_time_order() {
        let mut m = TimeMerge::new([0, 1]);
        m.push(0, 5, Some("x"));
        m.push(1, 3, Some("w"));
        m.finish(0);
        m.finish(1);
        assert_eq!(m.pop(), Some("w"));
        assert_eq!(m.pop(), Some("x"));
        assert_eq!(m.pop(), None);
    }
}
