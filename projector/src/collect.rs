//! Collecting batches: records for one window, decoded and admitted per
//! partition, into one batch per shard (the shard owning the record's
//! partition). Each shard has its own writer, free or busy on its own: a
//! shard's batch is handed to its writer once its window is over and the
//! writer is free. While the writer is still busy the batch keeps growing, so
//! a busy shard gets fewer, larger transactions; once it holds
//! `PROJECTOR_MAX_BATCH_EVENTS` its partitions are paused in the consumer
//! (only they: the other shards' partitions are still read and handed on)
//! until the writer takes it, then sought back to the next record the batch
//! expects and resumed. Records fetched before the pause may still arrive and
//! are taken, so a held batch can pass the bound by what was already fetched.
//!
//! Nothing here changes the order of a partition's records: a partition
//! belongs to one shard, its records go to that shard's one batch in log
//! order, and a shard has at most one batch in writing (its writer's permit),
//! written before the next one is handed over.

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::{BoxFuture, select_all};
use likes_infra::codec::EventCodec;
use likes_infra::kafka::dead_letters::{DeadLetters, Sent};
use likes_infra::postgres::shards::ShardMap;
use likes_infra::retry;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::backfill::Backfills;
use crate::batch::{Batch, Offer};
use crate::consumer::ProjectorConsumer;
use crate::ownership::{Ownership, ParkReason};
use crate::{Settings, parking};

/// A shard's batch handed to its writer, with the permit that marks the
/// writer busy until the batch is written.
pub struct Handoff {
    pub shard: usize,
    pub batch: Batch,
    pub permit: OwnedSemaphorePermit,
}

/// The consuming half of the projector.
pub struct Collector {
    pub settings: Settings,
    pub consumer: Arc<ProjectorConsumer>,
    pub ownership: Arc<Ownership>,
    pub codec: EventCodec,
    pub dead_letters: DeadLetters,
    pub map: ShardMap,
    /// Per shard, the batch being collected (carried over between calls while
    /// its writer is busy).
    pending: Vec<Batch>,
    /// Per shard, whether its partitions are paused because its batch is full.
    held: Vec<bool>,
    /// Partitions whose deleted records are read from the archive.
    backfills: Backfills,
}

impl Collector {
    pub fn new(
        settings: Settings,
        consumer: Arc<ProjectorConsumer>,
        ownership: Arc<Ownership>,
        codec: EventCodec,
        dead_letters: DeadLetters,
        map: ShardMap,
        backfills: Backfills,
    ) -> Self {
        let generation = ownership.generation();
        Self {
            settings,
            consumer,
            ownership,
            codec,
            dead_letters,
            map,
            pending: (0..map.shards()).map(|_| Batch::new(generation)).collect(),
            held: vec![false; map.shards()],
            backfills,
        }
    }

    /// Collects until at least one shard's batch is due (its window is over,
    /// or it is full) while its writer (`writers[shard]`'s one permit) is
    /// free, and hands over every such batch. Returns nothing when a window
    /// passes without a hand-over, so the caller can look at rejoins and
    /// stops; batches of busy shards stay here and keep growing.
    pub async fn collect(&mut self, writers: &[Arc<Semaphore>]) -> Vec<Handoff> {
        if self.ownership.take_rejoin() {
            tracing::warn!("rejoining the consumer group");
            if let Err(e) = self.consumer.rejoin() {
                tracing::error!(error = %e, "resubscribe failed");
            }
        }
        parking::resume_accepted(&self.consumer, &self.ownership);
        self.start_late_claims();
        self.drop_if_rebalanced();
        let round_ends = tokio::time::Instant::now() + self.settings.window;
        loop {
            self.resume_filled();
            let handoffs = self.hand_over(writers);
            if !handoffs.is_empty() {
                return handoffs;
            }
            // Wait for a record, for a collecting batch's window to end, or
            // for the writer of a due batch to become free.
            let waiting: Vec<usize> = (0..self.pending.len()).filter(|s| self.due(*s)).collect();
            let deadline = (0..self.pending.len())
                .filter(|s| !self.pending[*s].is_empty() && !self.due(*s))
                .map(|s| self.window_end(s))
                .chain(std::iter::once(round_ends))
                .min()
                .unwrap_or(round_ends);
            let free_writer = async {
                if waiting.is_empty() {
                    return std::future::pending().await;
                }
                let acquires: Vec<BoxFuture<'_, Option<(usize, OwnedSemaphorePermit)>>> = waiting
                    .iter()
                    .map(|s| {
                        let shard = *s;
                        writers[shard]
                            .clone()
                            .acquire_owned()
                            .map(move |p| p.ok().map(|p| (shard, p)))
                            .boxed()
                    })
                    .collect();
                select_all(acquires).await.0
            };
            let held: Vec<bool> = self.held.clone();
            let map = self.map;
            let is_held = move |p: i32| held.get(map.shard_of(p)).copied().unwrap_or(false);
            let filling = self.backfills.ready(&is_held);
            let received = tokio::select! {
                biased;
                free = free_writer => {
                    if let Some((shard, permit)) = free {
                        let batch = self.take_batch(shard);
                        return vec![Handoff { shard, batch, permit }];
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(deadline) => {
                    if tokio::time::Instant::now() >= round_ends {
                        return Vec::new();
                    }
                    continue;
                }
                archived = self.backfills.next(&is_held), if filling => match archived {
                    Ok(Some(record)) => Ok(record),
                    Ok(None) => continue, // a fill ended: resumed at the loop's top
                    Err(e) => {
                        // The archive is away: the fill waits, the others go on.
                        tracing::warn!(error = %e, "reading the archive failed; trying again");
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        continue;
                    }
                },
                received = self.consumer.recv() => received,
            };
            let record = match received {
                Err(e) => {
                    tracing::warn!(error = %e, "consumer error");
                    continue;
                }
                Ok(record) => record,
            };
            self.drop_if_rebalanced();
            self.admit(record).await;
        }
    }

    /// Takes one record (from the topic, or from the archive for a gap) into
    /// its shard's batch: in order, decoded, or dead-lettered.
    async fn admit(&mut self, record: likes_infra::kafka::consumer::Record) {
        {
            let position = record.position;
            let shard = self.map.shard_of(position.partition);
            let epoch = match self.pending[shard].offer(&self.ownership, position) {
                Offer::Next { epoch } => epoch,
                Offer::Stale => return,
                Offer::Gap { .. } if self.backfills.is_filling(position.partition) => return,
                Offer::Gap { from, to } => {
                    let generation = self.ownership.generation();
                    match self
                        .backfills
                        .start(position.partition, from, to, generation)
                        .await
                    {
                        Ok(true) => {
                            // Read from the archive until the topic's start.
                            if let Err(e) = self.consumer.pause(position.partition) {
                                tracing::warn!(error = %e, partition = position.partition, "pausing a partition to fill failed");
                            }
                        }
                        Ok(false) => self.park(position.partition, ParkReason::Gap { from, to }),
                        Err(e) => {
                            tracing::warn!(error = %e, partition = position.partition, "the archive could not be asked about a gap");
                            self.park(position.partition, ParkReason::Gap { from, to });
                        }
                    }
                    return;
                }
            };
            let first = self.pending[shard].is_empty();
            // Only transient failures (the registry away) are retried; any other
            // failure means the record can never become an event.
            let payload = record.payload.as_deref();
            let decoded = retry::run(
                &retry::TRANSIENT,
                "decode",
                likes_infra::DecodeError::is_transient,
                |_| {},
                || self.codec.decode_event(payload),
            )
            .await;
            match decoded {
                Ok(event) => {
                    let batch = &mut self.pending[shard];
                    batch.take(&self.ownership, position, epoch);
                    let record_time = likes_domain::record_time(record.timestamp_ms, &event);
                    batch.push(position, record_time, event);
                }
                Err(e) => {
                    let reason = likes_infra::Error::from(e.clone()).to_string();
                    let kind = e.kind();
                    tracing::warn!(partition = position.partition, offset = position.offset, kind, %reason, "poison record sent to the dead-letter topic");
                    match self.dead_letters.send(&record, &reason).await {
                        Ok(sent) => {
                            metrics::counter!(crate::metrics::POISON, "reason" => kind)
                                .increment(1);
                            if sent == Sent::Reference {
                                metrics::counter!(crate::metrics::DEAD_LETTER_REFERENCES)
                                    .increment(1);
                            }
                            let batch = &mut self.pending[shard];
                            batch.take(&self.ownership, position, epoch);
                            batch.poison += 1;
                        }
                        Err(e) => {
                            // Committing past it would lose it: stop its partition only.
                            tracing::error!(error = %e, partition = position.partition, offset = position.offset, "dead letter failed");
                            self.park(
                                position.partition,
                                ParkReason::DeadLetterFailed {
                                    offset: position.offset,
                                },
                            );
                            return;
                        }
                    }
                }
            }
            if first {
                // The window runs from the first record, so a quiet topic does not
                // delay the first like of a burst by a whole window.
                self.pending[shard].started = Instant::now();
            }
        }
    }

    /// Hands over every due batch whose writer is free; pauses the shards
    /// whose batch is full while their writer is busy.
    fn hand_over(&mut self, writers: &[Arc<Semaphore>]) -> Vec<Handoff> {
        let mut handoffs = Vec::new();
        for (shard, writer) in writers.iter().enumerate().take(self.pending.len()) {
            if !self.due(shard) {
                continue;
            }
            match writer.clone().try_acquire_owned() {
                Ok(permit) => {
                    let batch = self.take_batch(shard);
                    handoffs.push(Handoff {
                        shard,
                        batch,
                        permit,
                    });
                }
                Err(_busy) => {
                    if self.full(shard) && !self.held[shard] {
                        self.hold(shard);
                    }
                }
            }
        }
        handoffs
    }

    /// A batch is due once its window is over or it is full.
    fn due(&self, shard: usize) -> bool {
        let batch = &self.pending[shard];
        !batch.is_empty() && (batch.started.elapsed() >= self.settings.window || self.full(shard))
    }

    fn full(&self, shard: usize) -> bool {
        self.pending[shard].len() >= self.settings.max_batch_events
    }

    fn window_end(&self, shard: usize) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.pending[shard].started + self.settings.window)
    }

    /// Takes `shard`'s batch for its writer, starting a new one, and lets its
    /// partitions be read again if they were held.
    fn take_batch(&mut self, shard: usize) -> Batch {
        let fresh = Batch::new(self.ownership.generation());
        let batch = std::mem::replace(&mut self.pending[shard], fresh);
        if self.held[shard] {
            self.release(shard);
        }
        batch
    }

    /// A rebalance happened: what every shard holds was not committed and
    /// will be read again from the claimed offsets (the assignment resumed
    /// every assigned partition, so nothing stays held).
    fn drop_if_rebalanced(&mut self) {
        let generation = self.ownership.generation();
        self.backfills.drop_other_generations(generation);
        for (shard, batch) in self.pending.iter_mut().enumerate() {
            if batch.generation != generation {
                *batch = Batch::new(generation);
                self.held[shard] = false;
            }
        }
    }

    /// The partitions of `shard` this process owns and reads.
    fn owned_of(&self, shard: usize) -> Vec<i32> {
        self.ownership
            .claims()
            .iter()
            .map(|c| c.next.partition)
            .filter(|p| self.map.shard_of(*p) == shard)
            .collect()
    }

    /// Stops reading `shard`'s partitions: its batch is full and its writer busy.
    fn hold(&mut self, shard: usize) {
        let partitions = self.owned_of(shard);
        tracing::info!(
            shard,
            ?partitions,
            "batch full while the shard's writer is busy; its partitions are paused"
        );
        for partition in partitions {
            if let Err(e) = self.consumer.pause(partition) {
                tracing::warn!(error = %e, partition, "pausing a partition failed");
            }
        }
        self.held[shard] = true;
    }

    /// Reads `shard`'s partitions again from the next record each expects
    /// (whatever the pause did to the records fetched before it).
    fn release(&mut self, shard: usize) {
        self.held[shard] = false;
        let partitions = self.owned_of(shard);
        for at in self.ownership.collecting_of(&partitions) {
            if self.backfills.is_filling(at.partition) {
                continue; // read from the archive; the topic resumes after the fill
            }
            if let Err(e) = self.consumer.seek(at) {
                tracing::warn!(error = %e, partition = at.partition, "seek of a held partition failed");
            }
            if let Err(e) = self.consumer.resume(at.partition) {
                tracing::warn!(error = %e, partition = at.partition, "resuming a held partition failed");
            }
        }
    }

    /// Pauses partitions assigned but not claimed, and starts those claimed
    /// since at their claimed offsets. Runs between receives, so no record
    /// fetched before a seek is offered after it.
    fn start_late_claims(&mut self) {
        for partition in self.ownership.take_to_pause() {
            if let Err(e) = self.consumer.pause(partition) {
                tracing::warn!(error = %e, partition, "pausing an unclaimed partition failed");
            }
        }
        for claim in self.ownership.take_late_claims() {
            let at = claim.next;
            if let Err(e) = self.consumer.seek(at) {
                tracing::warn!(error = %e, partition = at.partition, "seek of a late claim failed");
            }
            if let Err(e) = self.consumer.resume(at.partition) {
                tracing::warn!(error = %e, partition = at.partition, "resuming a late claim failed");
            }
            tracing::info!(
                partition = at.partition,
                epoch = claim.epoch,
                next_offset = at.offset,
                "partition claimed late; reading it from its claimed offset"
            );
        }
    }

    /// Seeks each partition whose gap was filled from the archive to the
    /// first offset its topic holds, and reads it from there again.
    fn resume_filled(&mut self) {
        for at in self.backfills.take_done() {
            if let Err(e) = self.consumer.seek(at) {
                tracing::warn!(error = %e, partition = at.partition, "seek after a fill from the archive failed");
            }
            if let Err(e) = self.consumer.resume(at.partition) {
                tracing::warn!(error = %e, partition = at.partition, "resuming after a fill from the archive failed");
            }
            metrics::counter!(crate::metrics::ARCHIVE_FILLS).increment(1);
            tracing::info!(
                partition = at.partition,
                offset = at.offset,
                "gap filled from the archive; reading the topic again"
            );
        }
    }

    fn park(&self, partition: i32, reason: ParkReason) {
        parking::park(&self.consumer, &self.ownership, partition, reason);
    }
}
