//! Filling a gap from the archive. When records of a partition were deleted
//! from the log before the projector read them (it was away longer than
//! retention), and the archive (`likes_infra::archive`, `ARCHIVE_URL`) holds
//! every one of them, the projector reads them from there instead of parking
//! the partition: the partition is paused in the consumer, its archived
//! records go through the same admission, decoding and batches as the topic's
//! (offsets checked in order, committed with the rows, exactly once), and once
//! the last archived record of the gap is taken the partition is sought to
//! the first offset the topic still holds and resumed. What the archive does
//! not hold of a gap parks the partition, as before, with the gap narrowed
//! to exactly the records that are nowhere (what `accept-loss` then names).
//!
//! One archive file per filling partition is held in memory at a time. A
//! rebalance drops every fill: the next owner meets the gap again and fills
//! it from its own claimed offset.

use std::collections::{HashMap, VecDeque};

use likes_domain::Position;
use likes_infra::Error;
use likes_infra::archive::{Archive, FileName, Record};
use likes_infra::kafka::consumer::Record as LogRecord;

/// One partition being filled from the archive.
struct Fill {
    /// Where the fill ends: the first offset the topic holds, or where the
    /// archive stops when it holds only the start of the gap.
    until: i64,
    /// The consumer generation the fill began in.
    generation: u64,
    files: VecDeque<FileName>,
    records: VecDeque<Record>,
}

/// The partitions being filled, and the archive they are filled from.
pub struct Backfills {
    archive: Option<Archive>,
    topic: String,
    fills: HashMap<i32, Fill>,
}

impl Backfills {
    /// Fills from `archive` (none: every gap parks its partition).
    pub fn new(archive: Option<Archive>, topic: &str) -> Self {
        Self {
            archive,
            topic: topic.to_string(),
            fills: HashMap::new(),
        }
    }

    /// Whether `partition` is being filled: its records from the topic are
    /// not taken meanwhile.
    pub fn is_filling(&self, partition: i32) -> bool {
        self.fills.contains_key(&partition)
    }

    /// Starts filling `from..=to` of `partition` with what the archive holds
    /// of it from `from` on; `false` when it holds nothing there (or there is
    /// no archive), and the caller parks the partition. A fill of only the
    /// start of a gap ends by reading the topic where the archive stops: the
    /// rest of the gap is met again, smaller, and parks the partition there.
    pub async fn start(
        &mut self,
        partition: i32,
        from: i64,
        to: i64,
        generation: u64,
    ) -> Result<bool, Error> {
        let Some(archive) = &self.archive else {
            return Ok(false);
        };
        let Some(reach) = archive.reach(partition, from).await? else {
            return Ok(false);
        };
        let until = reach.min(to) + 1;
        let files = archive.coverage(partition).await?.files_for(from, until);
        tracing::warn!(
            partition,
            first_missing = from,
            last_missing = to,
            archived_to = until - 1,
            archive = archive.url(),
            "records were deleted from the log before they were projected; reading them from the archive"
        );
        self.fills.insert(
            partition,
            Fill {
                until,
                generation,
                files: files.into(),
                records: VecDeque::new(),
            },
        );
        Ok(true)
    }

    /// Whether some fill can give a record now (`held`: partitions whose
    /// shard batch is full, which wait).
    pub fn ready(&self, held: &impl Fn(i32) -> bool) -> bool {
        self.fills.keys().any(|p| !held(*p))
    }

    /// The next archived record of a partition being filled that is not
    /// held, as the consumer would have handed it out; `None` when a fill
    /// just ended (see [`Backfills::take_done`]).
    pub async fn next(&mut self, held: &impl Fn(i32) -> bool) -> Result<Option<LogRecord>, Error> {
        let Some(archive) = &self.archive else {
            return Ok(None);
        };
        let Some(partition) = self.fills.keys().copied().find(|p| !held(*p)) else {
            return Ok(None);
        };
        loop {
            let Some(fill) = self.fills.get_mut(&partition) else {
                return Ok(None);
            };
            if let Some(record) = fill.records.pop_front() {
                if record.offset >= fill.until {
                    fill.records.clear();
                    fill.files.clear();
                    continue;
                }
                return Ok(Some(LogRecord {
                    topic: self.topic.clone(),
                    position: Position {
                        partition,
                        offset: record.offset,
                    },
                    timestamp_ms: record.timestamp_ms,
                    key: record.key,
                    payload: record.payload,
                    headers: Vec::new(),
                }));
            }
            match fill.files.pop_front() {
                Some(name) => {
                    let file = archive.read(partition, name).await?;
                    if let Some(fill) = self.fills.get_mut(&partition) {
                        fill.records = file.records.into();
                    }
                }
                None => {
                    // Every archived record of the gap was handed out.
                    fill.files.clear();
                    fill.records.clear();
                    return Ok(None);
                }
            }
        }
    }

    /// The fills whose records were all handed out: each partition and the
    /// offset its topic reading resumes at.
    pub fn take_done(&mut self) -> Vec<Position> {
        let done: Vec<Position> = self
            .fills
            .iter()
            .filter(|(_, f)| f.files.is_empty() && f.records.is_empty())
            .map(|(p, f)| Position {
                partition: *p,
                offset: f.until,
            })
            .collect();
        for at in &done {
            self.fills.remove(&at.partition);
        }
        done
    }

    /// Drops the fills begun in another consumer generation (a rebalance:
    /// what was collected is read again from the claimed offsets).
    pub fn drop_other_generations(&mut self, generation: u64) {
        self.fills.retain(|_, f| f.generation == generation);
    }
}
