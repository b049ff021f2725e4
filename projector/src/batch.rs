//! One batch in the making: its events in log order and, per partition, the
//! owner's epoch and the offset the batch reaches. Records older than what a partition
//! already committed (redelivered after a rebalance) are skipped here.

use std::collections::BTreeMap;
use std::time::Instant;

use likes_domain::{LikeEvent, LoggedEvent, Position};
use likes_infra::store::writer::OffsetCommit;

use crate::ownership::Ownership;

/// What became of a record offered to the batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// It belongs to the batch.
    Taken,
    /// Its partition is not ours or it was already committed: ignore it.
    Stale,
}

/// The batch being collected.
pub struct Batch {
    pub generation: u64,
    pub started: Instant,
    events: Vec<LoggedEvent>,
    partitions: BTreeMap<i32, PartitionRange>,
    pub poison: usize,
}

/// The slice of one partition in a batch.
#[derive(Debug, Clone, Copy)]
struct PartitionRange {
    epoch: i64,
    first_offset: i64,
    next_offset: i64,
}

impl Batch {
    pub fn new(generation: u64) -> Self {
        Self {
            generation,
            started: Instant::now(),
            events: Vec::new(),
            partitions: BTreeMap::new(),
            poison: 0,
        }
    }

    /// Events plus poison records accepted.
    pub fn len(&self) -> usize {
        self.events.len() + self.poison
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Checks that `position` is the next record we should take for its partition
    /// and, if so, extends the partition's range past it.
    pub fn admit(&mut self, ownership: &Ownership, position: Position) -> Offer {
        let expected = match self.partitions.get(&position.partition) {
            Some(range) => range.next_offset,
            None => match ownership.get(position.partition) {
                Some(claim) => claim.next_offset,
                None => return Offer::Stale,
            },
        };
        if position.offset < expected {
            return Offer::Stale;
        }
        if position.offset > expected {
            // Retention, compaction or transaction markers leave gaps; nothing to do.
            tracing::debug!(
                partition = position.partition,
                expected,
                got = position.offset,
                "offset gap"
            );
        }
        let Some(claim) = ownership.get(position.partition) else {
            return Offer::Stale;
        };
        let range = self
            .partitions
            .entry(position.partition)
            .or_insert(PartitionRange {
                epoch: claim.epoch,
                first_offset: position.offset,
                next_offset: position.offset,
            });
        range.next_offset = position.offset + 1;
        Offer::Taken
    }

    /// Adds an admitted event with its record time.
    pub fn push(&mut self, position: Position, record_time: i64, event: LikeEvent) {
        self.events.push(LoggedEvent {
            position,
            record_time,
            event,
        });
    }

    /// The offsets this batch commits, one per partition it touched.
    pub fn commits(&self) -> Vec<OffsetCommit> {
        self.partitions
            .iter()
            .map(|(partition, range)| OffsetCommit {
                partition: *partition,
                epoch: range.epoch,
                next_offset: range.next_offset,
            })
            .collect()
    }

    /// `partition:first..next` for each partition, for the batch's log line.
    pub fn ranges(&self) -> String {
        self.partitions
            .iter()
            .map(|(p, r)| format!("{p}:{}..{}", r.first_offset, r.next_offset))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn events(&self) -> usize {
        self.events.len()
    }

    /// Ends the batch in at most `n` parts, split by partition (so each part
    /// holds whole partitions: their events in log order and their offsets),
    /// balanced by event count. Parts touch disjoint rows, because every row an
    /// event touches is keyed by its item, and the item picks the partition.
    pub fn split(self, n: usize) -> Vec<Part> {
        let mut per_partition: BTreeMap<i32, Part> = self
            .commits()
            .into_iter()
            .map(|c| {
                (
                    c.partition,
                    Part {
                        commits: vec![c],
                        events: Vec::new(),
                    },
                )
            })
            .collect();
        for event in self.events {
            if let Some(part) = per_partition.get_mut(&event.position.partition) {
                part.events.push(event);
            }
        }
        let mut partitions: Vec<Part> = per_partition.into_values().collect();
        // Largest first, each to the lightest part so far.
        partitions.sort_by_key(|p| std::cmp::Reverse(p.events.len()));
        let mut parts: Vec<Part> = Vec::new();
        for partition in partitions {
            if parts.len() < n.max(1) {
                parts.push(partition);
                continue;
            }
            if let Some(lightest) = parts.iter_mut().min_by_key(|p| p.events.len()) {
                lightest.commits.extend(partition.commits);
                lightest.events.extend(partition.events);
            }
        }
        parts
    }
}

/// A slice of a batch written in one transaction: whole partitions.
#[derive(Debug, Default)]
pub struct Part {
    pub commits: Vec<OffsetCommit>,
    pub events: Vec<LoggedEvent>,
}

#[cfg(test)]
mod tests {
    use likes_domain::{Action, EventId, ItemKey, UserId};
    use likes_infra::store::offsets::Claim;

    use super::*;

    /// A batch holding `counts[p]` events of partition `p`, interleaved in
    /// arrival order as a consumer would hand them over.
    fn batch_of(counts: &[usize]) -> Batch {
        let ownership = Ownership::default();
        let claims: Vec<Claim> = (0..counts.len() as i32)
            .map(|partition| Claim {
                partition,
                epoch: 7,
                next_offset: 100,
            })
            .collect();
        ownership.assign(&claims);
        let mut batch = Batch::new(ownership.generation());
        let most = counts.iter().copied().max().unwrap_or(0);
        for i in 0..most {
            for (p, n) in counts.iter().enumerate() {
                if i < *n {
                    let position = Position {
                        partition: p as i32,
                        offset: 100 + i as i64,
                    };
                    assert_eq!(batch.admit(&ownership, position), Offer::Taken);
                    batch.push(
                        position,
                        0,
                        LikeEvent {
                            event_id: EventId::generate(),
                            user_id: UserId::parse(1 + i as i64).unwrap(),
                            item: ItemKey::parse(1, 1 + p as i64).unwrap(),
                            action: Action::Like,
                            timestamp: chrono::Utc::now(),
                        },
                    );
                }
            }
        }
        batch
    }

    #[test]
    fn a_split_keeps_each_partition_whole_in_log_order_with_its_offset() {
        let parts = batch_of(&[5, 1, 3, 2]).split(2);
        assert_eq!(parts.len(), 2);
        let mut seen = Vec::new();
        for part in &parts {
            for c in &part.commits {
                let mine: Vec<i64> = part
                    .events
                    .iter()
                    .filter(|e| e.position.partition == c.partition)
                    .map(|e| e.position.offset)
                    .collect();
                let expected: Vec<i64> = (100..c.next_offset).collect();
                assert_eq!(mine, expected, "partition {}", c.partition);
                assert_eq!(c.epoch, 7);
                seen.push(c.partition);
            }
            let owned: Vec<i32> = part.commits.iter().map(|c| c.partition).collect();
            assert!(
                part.events
                    .iter()
                    .all(|e| owned.contains(&e.position.partition))
            );
        }
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_split_balances_events_across_parts() {
        let parts = batch_of(&[5, 1, 3, 2]).split(2);
        let mut sizes: Vec<usize> = parts.iter().map(|p| p.events.len()).collect();
        sizes.sort();
        assert_eq!(sizes, vec![5, 6]);
    }

    #[test]
    fn a_split_never_makes_more_parts_than_partitions_or_fewer_than_one() {
        assert_eq!(batch_of(&[2, 2]).split(8).len(), 2);
        assert_eq!(batch_of(&[2, 2, 2]).split(0).len(), 1);
        assert_eq!(batch_of(&[2, 2, 2]).split(1)[0].events.len(), 6);
    }
}
