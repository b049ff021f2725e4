//! One batch in the making: its events in log order and, per partition, the
//! owner's epoch and the offset the batch reaches. Records older than what a partition
//! already collected (redelivered after a rebalance) are skipped here, and a record
//! past a hole in the offsets is refused: the records in the hole were lost.

use std::collections::BTreeMap;
use std::time::Instant;

use likes_domain::{LikeEvent, LoggedEvent, Position};
use likes_infra::postgres::writer::OffsetCommit;

use crate::ownership::Ownership;

/// What a record offered to the batch is.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// The next record of its partition: take it under this epoch.
    Next { epoch: i64 },
    /// Its partition is not ours, is parked, or it was already collected: ignore it.
    Stale,
    /// Offsets `from..=to` of its partition are missing before it (deleted from
    /// the log before we read them): the partition must stop before it.
    Gap { from: i64, to: i64 },
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

    /// Says whether `position` is the next record of its partition. On this
    /// topic (idempotent producer, no transactions, delete policy) offsets have
    /// no holes, so a record past the expected offset means the records between
    /// were deleted unread; only a loss an operator accepted is passed over.
    pub fn offer(&self, ownership: &Ownership, position: Position) -> Offer {
        let Some((epoch, expected)) = ownership.collecting(position.partition) else {
            return Offer::Stale;
        };
        if position.offset < expected {
            return Offer::Stale;
        }
        if position.offset > expected {
            let (from, to) = (expected, position.offset - 1);
            if !ownership.gap_accepted(position.partition, from, to) {
                return Offer::Gap { from, to };
            }
            tracing::warn!(
                partition = position.partition,
                first_missing = from,
                last_missing = to,
                "moving past records accepted as lost"
            );
        }
        Offer::Next { epoch }
    }

    /// Takes the record at `position`, which [`Batch::offer`] called the next
    /// one of its partition under `epoch`.
    pub fn take(&mut self, ownership: &Ownership, position: Position, epoch: i64) {
        let range = self
            .partitions
            .entry(position.partition)
            .or_insert(PartitionRange {
                epoch,
                first_offset: position.offset,
                next_offset: position.offset,
            });
        range.next_offset = position.offset + 1;
        ownership.collected(position.partition, range.next_offset);
    }

    /// Leaves out `partitions` (their records and offsets): they are parked
    /// because a write of theirs failed, and must not commit past it.
    pub fn without(mut self, partitions: &[i32]) -> Self {
        if partitions.is_empty() {
            return self;
        }
        self.partitions.retain(|p, _| !partitions.contains(p));
        self.events
            .retain(|e| !partitions.contains(&e.position.partition));
        self
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
                epoch: range.epoch,
                next: Position {
                    partition: *partition,
                    offset: range.next_offset,
                },
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

    /// Per partition, the record time of its oldest event in the batch: the
    /// one that waited longest to become visible.
    pub fn oldest_record_times(&self) -> BTreeMap<i32, i64> {
        let mut oldest = BTreeMap::new();
        for e in &self.events {
            oldest
                .entry(e.position.partition)
                .and_modify(|t: &mut i64| *t = (*t).min(e.record_time))
                .or_insert(e.record_time);
        }
        oldest
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
                    c.next.partition,
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

impl Part {
    /// The same records, one part per partition, to find which partition a
    /// permanent failure belongs to.
    pub fn per_partition(&self) -> Vec<Part> {
        self.commits
            .iter()
            .map(|c| Part {
                commits: vec![*c],
                events: self
                    .events
                    .iter()
                    .filter(|e| e.position.partition == c.next.partition)
                    .cloned()
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use likes_domain::{Action, EventId, ItemKey, UserId};
    use likes_infra::postgres::offsets::Claim;

    use super::*;
    use crate::ownership::ParkReason;

    /// A batch holding `counts[p]` events of partition `p`, interleaved in
    /// arrival order as a consumer would hand them over.
    fn batch_of(counts: &[usize]) -> Batch {
        let ownership = Ownership::default();
        let claims: Vec<Claim> = (0..counts.len() as i32)
            .map(|partition| Claim {
                epoch: 7,
                next: Position {
                    partition,
                    offset: 100,
                },
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
                    assert_eq!(batch.offer(&ownership, position), Offer::Next { epoch: 7 });
                    batch.take(&ownership, position, 7);
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

    fn owning(partition: i32, next_offset: i64) -> Ownership {
        let ownership = Ownership::default();
        ownership.assign(&[Claim {
            epoch: 3,
            next: Position {
                partition,
                offset: next_offset,
            },
        }]);
        ownership
    }

    fn at(partition: i32, offset: i64) -> Position {
        Position { partition, offset }
    }

    #[test]
    fn a_record_past_a_hole_in_the_offsets_is_refused_naming_the_missing_range() {
        let ownership = owning(2, 0);
        let batch = Batch::new(ownership.generation());
        assert_eq!(
            batch.offer(&ownership, at(2, 3)),
            Offer::Gap { from: 0, to: 2 }
        );
        assert!(batch.is_empty());
    }

    #[test]
    fn the_next_batch_continues_where_the_previous_one_was_collected_not_committed() {
        let ownership = owning(2, 10);
        let mut first = Batch::new(ownership.generation());
        for offset in 10..13 {
            assert_eq!(
                first.offer(&ownership, at(2, offset)),
                Offer::Next { epoch: 3 }
            );
            first.take(&ownership, at(2, offset), 3);
        }
        // The first batch is still being written (nothing committed yet).
        let second = Batch::new(ownership.generation());
        assert_eq!(
            second.offer(&ownership, at(2, 13)),
            Offer::Next { epoch: 3 }
        );
        assert_eq!(second.offer(&ownership, at(2, 12)), Offer::Stale);
    }

    #[test]
    fn a_parked_partition_takes_nothing_until_its_exact_gap_is_accepted() {
        let ownership = owning(2, 0);
        let batch = Batch::new(ownership.generation());
        assert!(ownership.park(2, ParkReason::Gap { from: 0, to: 2 }));
        assert_eq!(batch.offer(&ownership, at(2, 3)), Offer::Stale);
        assert!(
            !ownership.accept_gap(2, 0, 1),
            "not the gap it is parked on"
        );
        assert!(ownership.accept_gap(2, 0, 2));
        assert_eq!(ownership.take_resumes(), vec![at(2, 3)]);
        assert_eq!(batch.offer(&ownership, at(2, 3)), Offer::Next { epoch: 3 });
        assert_eq!(
            batch.offer(&ownership, at(2, 5)),
            Offer::Gap { from: 0, to: 4 },
            "a wider gap was not accepted"
        );
    }

    #[test]
    fn a_batch_without_a_partition_keeps_the_others_whole() {
        let batch = batch_of(&[2, 3, 1]).without(&[1]);
        let commits: Vec<i32> = batch.commits().iter().map(|c| c.next.partition).collect();
        assert_eq!(commits, vec![0, 2]);
        assert_eq!(batch.events(), 3);
    }

    #[test]
    fn a_part_splits_into_one_part_per_partition_in_log_order() {
        let parts = batch_of(&[2, 3]).split(1);
        let singles = parts[0].per_partition();
        assert_eq!(singles.len(), 2);
        for single in &singles {
            let p = single.commits[0].next.partition;
            let offsets: Vec<i64> = single.events.iter().map(|e| e.position.offset).collect();
            assert!(single.events.iter().all(|e| e.position.partition == p));
            assert_eq!(
                offsets,
                (100..single.commits[0].next.offset).collect::<Vec<_>>()
            );
        }
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
                    .filter(|e| e.position.partition == c.next.partition)
                    .map(|e| e.position.offset)
                    .collect();
                let expected: Vec<i64> = (100..c.next.offset).collect();
                assert_eq!(mine, expected, "partition {}", c.next.partition);
                assert_eq!(c.epoch, 7);
                seen.push(c.next.partition);
            }
            let owned: Vec<i32> = part.commits.iter().map(|c| c.next.partition).collect();
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
