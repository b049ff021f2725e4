//! The recent-likers half of `rebuild redis`: every item's likers set folded
//! from the log, written beside the live projector without undoing it.
//!
//! **What is folded.** Per partition, the events from the log's start up to
//! `end`, the projector's stored next offset read from PostgreSQL just before
//! the partition is read: the projector has committed, and so written or is
//! about to write to Redis, exactly the events below it. Each (user, item)
//! pair goes through the domain's state machine ([`LikeState::apply`]): the
//! like that makes a pair liked gives the score (its event time, as
//! `user_likes.liked_at` and the projector's `ZADD NX` keep the first like),
//! an unlike removes it, a repeat changes nothing, and events seen again
//! within the dedup horizon are dropped by the domain's rule
//! ([`DedupWindow`], as `rebuild postgres` does). Each item's set is its
//! newest `keep` likers ([`likes_infra::redis::likers::DEFAULT_KEEP`], the projector's own).
//!
//! **Side by side with the projector.** Every set carries a stamp, the
//! offset of the newest change it reflects (see [`likes_infra::redis::likers`]).
//! A rebuilt set is stamped `end - 1` and replaces the stored one unless the
//! stored stamp is newer. So:
//! - a projector write of a batch below `end` that lands late is refused by
//!   the projector's own check (the rebuilt set already holds its changes, and
//!   whatever came after them);
//! - a like or unlike the projector applied at or past `end` before the
//!   rebuilt set arrived makes the stamp newer: the rebuild's write is refused
//!   rather than resurrect the unliked or drop the liked. The rebuild then
//!   reads the partition on from `end` to the projector's offset now, folds
//!   just those items further (their state and dedup window kept), and writes
//!   them again stamped with the new end, up to [`CATCH_UP_ROUNDS`] times. An
//!   item the projector keeps touching faster than that is left to it
//!   (`left_to_projector`: its set holds the projector's newer changes but
//!   may miss older likers until its next rebuild).
//!
//! **Where the log no longer reaches.** When retention deleted the start of
//! a partition, its fold is not the whole history: a liker whose like was
//! deleted is unknown to it. Such sets are merged ([`RebuildMode::Merge`])
//! rather than replaced: the rebuilt likers are added and the users whose last
//! seen event unliked are removed, while stored likers the fold knows nothing
//! of stay. The report says, per partition, which offsets were read and
//! whether the history was whole.
//!
//! **Memory.** One item's state is every liker it has in the folded range, so
//! a fold cannot hold less than the biggest item; it never holds a whole
//! partition when that partition is bigger than `records_per_pass`: the
//! items are split by a hash of the item into `ceil(records / records_per_pass)`
//! chunks, and each chunk is one pass over the partition that keeps only its
//! own items (plus the dedup window, bounded by the horizon). Partitions are
//! folded one after another, so the bound holds for the whole run; the price
//! is one read of the partition per chunk.
//!
//! **Reading.** [`read_span`] is the only place that reads events, through
//! [`crate::source`]: the archive for what retention deleted, the topic for
//! the rest; [`sources`] says which ranges came from where.

use std::collections::HashMap;

use likes_domain::{DedupWindow, ItemKey, LikeEvent, LikeState, Transition, UserId, dedup_key};
use likes_infra::kafka::reader::{LogRecord, Span, TopicHandle};

use crate::source::LogSource;
use likes_infra::postgres::offsets;
use likes_infra::postgres::shards::Shards;
use likes_infra::redis::likers::{Liker, RebuildMode, RebuiltLikers, RecentLikers};
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::progress::{Progress, ProgressRead};

/// How many times an item the projector touched during the rebuild is folded
/// further and written again before it is left to the projector.
pub const CATCH_UP_ROUNDS: usize = 5;

/// The default bound on the records one pass folds (`--likers-records-per-pass`):
/// about 100 bytes of state per record held, so some hundreds of megabytes.
pub const DEFAULT_RECORDS_PER_PASS: u64 = 4_000_000;

/// Rebuilt sets written per round trip.
const SETS_PER_ROUND_TRIP: usize = 500;

/// How the likers are rebuilt.
#[derive(Debug, Clone, Copy)]
pub struct LikersOptions {
    /// How long an event id is remembered for dedup (the projector's).
    pub dedup_horizon: std::time::Duration,
    /// The most records one pass over a partition folds before the items are
    /// split into chunks (see the module's "Memory").
    pub records_per_pass: u64,
}

impl Default for LikersOptions {
    fn default() -> Self {
        Self {
            dedup_horizon: std::time::Duration::from_secs(
                likes_infra::settings::DEFAULT_DEDUP_HORIZON_SECONDS,
            ),
            records_per_pass: DEFAULT_RECORDS_PER_PASS,
        }
    }
}

/// What the likers rebuild did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LikersRebuild {
    /// Likers kept per item (the projector's).
    pub keep: usize,
    /// Sets written (an item left with no likers counts: its set is emptied).
    pub sets_written: u64,
    /// Of those, sets the projector had changed past the fold's end, folded
    /// further and then written.
    pub caught_up: u64,
    /// Sets the projector kept changing through every catch-up round: left as
    /// the projector wrote them.
    pub left_to_projector: u64,
    /// Events folded (an event is read once per chunk, folded once), dropped
    /// as duplicates, skipped as undecodable.
    pub events: u64,
    pub duplicates: u64,
    pub poison: u64,
    /// Per partition read, in partition order.
    pub partitions: Vec<PartitionLikers>,
}

/// What the likers rebuild read and wrote for one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PartitionLikers {
    pub partition: i32,
    /// The offsets folded, by where they came from, oldest first (catch-up
    /// reads included).
    pub read: Vec<SourceRange>,
    /// Whether the fold began at offset 0 (whole history: sets replaced) or
    /// retention had deleted the start (sets merged).
    pub whole_history: bool,
    /// Passes over the partition (chunks of items).
    pub passes: u64,
    pub sets_written: u64,
}

/// A range of offsets `[from, to)` read from one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceRange {
    pub source: Source,
    pub from: i64,
    pub to: i64,
}

/// Where events were read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The archive of what retention deleted (`likes_infra::archive`).
    Archive,
    /// The Kafka topic.
    Log,
}

impl Source {
    /// The name the report uses.
    pub fn name(self) -> &'static str {
        match self {
            Source::Archive => "archive",
            Source::Log => "log",
        }
    }
}

/// Rebuilds every item's likers set from the log, partition by partition.
pub async fn run(
    stack: &StackSettings,
    shards: &Shards,
    recent: &RecentLikers,
    options: LikersOptions,
) -> anyhow::Result<LikersRebuild> {
    let partitions = TopicHandle::open(stack)?.partition_count()?;
    let mut done = LikersRebuild {
        keep: recent.keep(),
        ..LikersRebuild::default()
    };
    for partition in 0..partitions {
        let Some(end) = projector_end(stack, shards, partition).await? else {
            continue; // the projector never read it: nothing of it is in Redis
        };
        // Where archive and topic together reach back to: 0 when the
        // archive holds what retention deleted.
        let mut source = LogSource::open(stack)?;
        let (log_start, _) = source.watermarks(partition).await?;
        let span = source.span(partition, log_start.min(end), end).await?;
        if span.end <= span.start {
            continue;
        }
        let mut rebuilt = PartitionRebuild {
            stack,
            shards,
            recent,
            options,
            done: &mut done,
            report: PartitionLikers {
                partition,
                whole_history: span.start == 0,
                ..PartitionLikers::default()
            },
        };
        rebuilt.run(span).await?;
        let report = rebuilt.report;
        done.partitions.push(report);
    }
    Ok(done)
}

/// The projector's stored next offset of `partition` (on its shard).
async fn projector_end(
    stack: &StackSettings,
    shards: &Shards,
    partition: i32,
) -> anyhow::Result<Option<i64>> {
    let mut end = None;
    for (_, pool) in shards.iter() {
        for (p, next) in offsets::positions(pool, &stack.topic).await? {
            if p == partition {
                end = end.max(Some(next));
            }
        }
    }
    Ok(end)
}

/// Every record of `span`, in offset order, handed to `visit`. The one place
/// this rebuild reads events: the archive's combined reader goes here.
async fn read_span(
    stack: &StackSettings,
    span: Span,
    label: &str,
    mut visit: impl FnMut(LogRecord),
) -> anyhow::Result<()> {
    if span.end <= span.start {
        return Ok(());
    }
    let progress = Progress::new(label, likes_infra::kafka::reader::span_total(&[span]));
    let mut reader = ProgressRead::sharing(LogSource::open(stack)?, stack, &[span], progress)?;
    while let Some(record) = reader.next().await? {
        visit(record);
    }
    Ok(())
}

/// The sources [`read_span`] covers `span` from.
fn sources(span: Span) -> Vec<SourceRange> {
    let archive = span.from_archive().map(|(from, to)| SourceRange {
        source: Source::Archive,
        from,
        to,
    });
    let log = span.from_topic().map(|(from, to)| SourceRange {
        source: Source::Log,
        from,
        to,
    });
    archive.into_iter().chain(log).collect()
}

/// One partition's rebuild: its chunks, then its catch-up rounds.
struct PartitionRebuild<'a> {
    stack: &'a StackSettings,
    shards: &'a Shards,
    recent: &'a RecentLikers,
    options: LikersOptions,
    done: &'a mut LikersRebuild,
    report: PartitionLikers,
}

impl PartitionRebuild<'_> {
    async fn run(&mut self, span: Span) -> anyhow::Result<()> {
        let mode = if self.report.whole_history {
            RebuildMode::Replace
        } else {
            RebuildMode::Merge
        };
        let records = u64::try_from(span.end - span.start).unwrap_or(0);
        let chunks = records
            .div_ceil(self.options.records_per_pass.max(1))
            .max(1);
        // Items whose write the projector's newer stamp refused, and the
        // dedup windows of their chunks.
        let mut behind = Fold::new(mode);
        let mut windows: HashMap<u64, DedupWindow> = HashMap::new();
        for index in 0..chunks {
            let chunk = Chunk { index, of: chunks };
            let mut fold = Fold::new(mode);
            let mut window = DedupWindow::new(self.options.dedup_horizon);
            let label = format!(
                "rebuild redis: likers of partition {} ({}/{chunks})",
                span.partition,
                index + 1
            );
            read_span(self.stack, span, &label, |record| match &record.event {
                Ok(event) if !chunk.holds(event.item) => {}
                // Undecodable records are counted once, in the first pass.
                Err(_) if index > 0 => {}
                _ => fold.push(&record, &mut window),
            })
            .await?;
            self.report.passes += 1;
            self.done.events += fold.events;
            self.done.duplicates += fold.duplicates;
            self.done.poison += fold.poison;
            let refused = self.write(fold.items, span.end - 1, mode).await?;
            if !refused.is_empty() {
                behind.items.extend(refused);
                windows.insert(index, window);
            }
        }
        self.report.read.extend(sources(span));
        self.catch_up(span, chunks, behind, windows).await
    }

    /// Folds the refused items on from `span.end` to the projector's offset
    /// now, and writes them again, stamped with that new end.
    async fn catch_up(
        &mut self,
        span: Span,
        chunks: u64,
        mut behind: Fold,
        mut windows: HashMap<u64, DedupWindow>,
    ) -> anyhow::Result<()> {
        let mut reached = span.end;
        for _ in 0..CATCH_UP_ROUNDS {
            if behind.items.is_empty() {
                break;
            }
            let Some(end) = projector_end(self.stack, self.shards, span.partition).await? else {
                break;
            };
            if end <= reached {
                // A newer stamp comes only from a newer commit; nothing to fold.
                break;
            }
            let tail = Span {
                start: reached,
                end,
                ..span
            };
            let label = format!(
                "rebuild redis: likers of partition {} (catch-up)",
                span.partition
            );
            read_span(self.stack, tail, &label, |record| {
                let Ok(event) = &record.event else { return };
                if !behind.items.contains_key(&event.item) {
                    return;
                }
                if let Some(window) = windows.get_mut(&Chunk::of(event.item, chunks)) {
                    behind.push(&record, window);
                }
            })
            .await?;
            self.report.read.extend(sources(tail));
            let before = behind.items.len() as u64;
            let refused = self
                .write(std::mem::take(&mut behind.items), end - 1, behind.mode)
                .await?;
            self.done.caught_up += before - refused.len() as u64;
            behind.items = refused;
            reached = end;
        }
        self.done.left_to_projector += behind.items.len() as u64;
        Ok(())
    }

    /// Writes folded items stamped `stamp`; returns those the projector's
    /// newer stamp refused, their state kept for the catch-up.
    async fn write(
        &mut self,
        items: HashMap<ItemKey, ItemState>,
        stamp: i64,
        mode: RebuildMode,
    ) -> anyhow::Result<HashMap<ItemKey, ItemState>> {
        let keep = self.recent.keep();
        let mut refused = HashMap::new();
        let mut items: Vec<(ItemKey, ItemState)> = items.into_iter().collect();
        while !items.is_empty() {
            let rest = items.split_off(items.len().saturating_sub(SETS_PER_ROUND_TRIP));
            let sets: Vec<RebuiltLikers> = rest
                .iter()
                .map(|(item, state)| rebuilt(*item, state, stamp, mode, keep))
                .collect();
            let written = self.recent.put_rebuilt(&sets).await?;
            for ((item, state), ok) in rest.into_iter().zip(written) {
                if ok {
                    self.done.sets_written += 1;
                    self.report.sets_written += 1;
                } else {
                    refused.insert(item, state);
                }
            }
        }
        Ok(refused)
    }
}

/// One item's likers while folding: user → when the like that made them a
/// liker happened (ms), or `None` when their last event unliked (kept only
/// for a merge, which must remove them from the stored set).
type ItemState = HashMap<UserId, Option<i64>>;

/// The slice of a partition's items one pass folds: those whose hash falls
/// in `index` of `of` chunks.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    index: u64,
    of: u64,
}

impl Chunk {
    /// The chunk `item` belongs to (a fixed mix, so every pass agrees).
    fn of(item: ItemKey, chunks: u64) -> u64 {
        let id = item.item_id.get() as u64;
        let kind = u64::from(item.item_type.get() as u16);
        (id ^ (kind << 48))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29)
            % chunks.max(1)
    }

    fn holds(self, item: ItemKey) -> bool {
        Self::of(item, self.of) == self.index
    }
}

/// Folded items and what the fold saw.
struct Fold {
    items: HashMap<ItemKey, ItemState>,
    mode: RebuildMode,
    events: u64,
    duplicates: u64,
    poison: u64,
}

impl Fold {
    fn new(mode: RebuildMode) -> Self {
        Self {
            items: HashMap::new(),
            mode,
            events: 0,
            duplicates: 0,
            poison: 0,
        }
    }

    /// Folds `record` through `window`, the dedup window of its item's chunk
    /// (the caller chose to fold its item).
    fn push(&mut self, record: &LogRecord, window: &mut DedupWindow) {
        let Ok(event) = &record.event else {
            self.poison += 1;
            return;
        };
        self.events += 1;
        if !window.first_sight(dedup_key(event), super::warmup::millis(record)) {
            self.duplicates += 1;
            return;
        }
        apply(self.items.entry(event.item).or_default(), event, self.mode);
    }
}

/// One event on its item's state, by the domain's state machine.
fn apply(state: &mut ItemState, event: &LikeEvent, mode: RebuildMode) {
    let now = match state.get(&event.user_id) {
        Some(Some(_)) => LikeState::Liked,
        _ => LikeState::NotLiked,
    };
    match now.apply(event.action).1 {
        Transition::Liked => {
            state.insert(event.user_id, Some(event.timestamp.timestamp_millis()));
        }
        Transition::Unliked => match mode {
            RebuildMode::Replace => {
                state.remove(&event.user_id);
            }
            RebuildMode::Merge => {
                state.insert(event.user_id, None);
            }
        },
        Transition::Unchanged(_) => {
            // Seen unliking in a merge: still to be removed from the stored set.
            if mode == RebuildMode::Merge {
                state.entry(event.user_id).or_insert(None);
            }
        }
    }
}

/// The set to write for one item: its newest `keep` likers in the order
/// Redis ranks them (score, then member as text), so the trim agrees.
fn rebuilt(
    item: ItemKey,
    state: &ItemState,
    stamp: i64,
    mode: RebuildMode,
    keep: usize,
) -> RebuiltLikers {
    let mut likers: Vec<Liker> = state
        .iter()
        .filter_map(|(user, at)| {
            at.map(|liked_at_ms| Liker {
                user_id: user.get(),
                liked_at_ms,
            })
        })
        .collect();
    likers.sort_by_key(|l| std::cmp::Reverse((l.liked_at_ms, l.user_id.to_string())));
    likers.truncate(keep);
    let unliked = match mode {
        RebuildMode::Replace => Vec::new(),
        RebuildMode::Merge => state
            .iter()
            .filter(|(_, at)| at.is_none())
            .map(|(user, _)| user.get())
            .collect(),
    };
    RebuiltLikers {
        item,
        stamp,
        mode,
        likers,
        unliked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use likes_domain::{Action, EventId};

    fn item(id: i64) -> ItemKey {
        ItemKey::parse(1, id).unwrap()
    }

    fn event(id: u128, user: i64, action: Action, ms: i64) -> LikeEvent {
        LikeEvent {
            event_id: EventId::parse(&format!("00000000-0000-0000-0000-{id:012}")).unwrap(),
            user_id: UserId::parse(user).unwrap(),
            item: item(9),
            action,
            timestamp: DateTime::<Utc>::from_timestamp_millis(ms).unwrap(),
        }
    }

    fn fold(mode: RebuildMode, events: &[LikeEvent]) -> ItemState {
        let mut fold = Fold::new(mode);
        let mut window = DedupWindow::new(std::time::Duration::from_secs(3600));
        for (offset, e) in events.iter().enumerate() {
            let record = LogRecord {
                partition: 0,
                offset: offset as i64,
                record_time: Some(e.timestamp),
                event: Ok(e.clone()),
            };
            fold.push(&record, &mut window);
        }
        fold.items.remove(&item(9)).unwrap_or_default()
    }

    fn user(id: i64) -> UserId {
        UserId::parse(id).unwrap()
    }

    #[test]
    fn a_liker_keeps_the_time_of_the_like_that_made_them_one() {
        let state = fold(
            RebuildMode::Replace,
            &[
                event(1, 7, Action::Like, 100),
                event(2, 7, Action::Like, 200), // already liked: no new like
                event(3, 8, Action::Like, 300),
                event(4, 8, Action::Unlike, 400),
                event(5, 8, Action::Like, 500), // liked again: a new like
            ],
        );
        assert_eq!(state.get(&user(7)), Some(&Some(100)));
        assert_eq!(state.get(&user(8)), Some(&Some(500)));
    }

    #[test]
    fn an_unlike_removes_the_liker_and_a_merge_remembers_it() {
        let events = [
            event(1, 7, Action::Like, 100),
            event(2, 7, Action::Unlike, 200),
            event(3, 8, Action::Unlike, 300), // liked before the fold began, maybe
        ];
        assert!(fold(RebuildMode::Replace, &events).is_empty());
        let merged = fold(RebuildMode::Merge, &events);
        assert_eq!(merged.get(&user(7)), Some(&None));
        assert_eq!(merged.get(&user(8)), Some(&None));
    }

    #[test]
    fn a_repeated_event_within_the_horizon_is_folded_once() {
        let like = event(1, 7, Action::Like, 100);
        let state = fold(
            RebuildMode::Replace,
            &[like.clone(), event(2, 7, Action::Unlike, 200), like],
        );
        assert!(state.is_empty(), "{state:?}");
    }

    #[test]
    fn the_rebuilt_set_is_the_newest_keep_in_the_order_redis_ranks_them() {
        let state: ItemState = [(7, 100), (8, 300), (9, 300), (10, 200), (11, 50)]
            .into_iter()
            .map(|(u, at)| (user(u), Some(at)))
            .chain([(user(12), None)])
            .collect();
        let set = rebuilt(item(9), &state, 41, RebuildMode::Replace, 3);
        let users: Vec<i64> = set.likers.iter().map(|l| l.user_id).collect();
        // Equal scores rank by member as text: "9" above "8".
        assert_eq!(users, vec![9, 8, 10]);
        assert_eq!(set.stamp, 41);
        assert!(set.unliked.is_empty());
        let merged = rebuilt(item(9), &state, 41, RebuildMode::Merge, 3);
        assert_eq!(merged.unliked, vec![12]);
    }

    #[test]
    fn every_item_falls_in_exactly_one_chunk() {
        let chunks = 4;
        let mut seen = [0u32; 4];
        for id in 1..=400 {
            let index = Chunk::of(item(id), chunks);
            let held: Vec<u64> = (0..chunks)
                .filter(|&c| {
                    Chunk {
                        index: c,
                        of: chunks,
                    }
                    .holds(item(id))
                })
                .collect();
            assert_eq!(held, vec![index]);
            seen[index as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
