//! One batch in the making: its events in log order and, per partition, the
//! owner's epoch and the offset the batch reaches. Records older than what a partition
//! already committed (redelivered after a rebalance) are skipped here.

use std::collections::BTreeMap;
use std::time::Instant;

use likes_domain::{LikeEvent, Position};
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
    events: Vec<(Position, LikeEvent)>,
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

    /// Adds an admitted event.
    pub fn push(&mut self, position: Position, event: LikeEvent) {
        self.events.push((position, event));
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

    /// Ends the batch: the offsets to commit and the events to apply.
    pub fn finish(self) -> (Vec<OffsetCommit>, Vec<(Position, LikeEvent)>) {
        let commits = self.commits();
        (commits, self.events)
    }
}
