//! Reading the topic: the consumer settings every reader shares, and the
//! group consumer the projector reads with. The group consumer hands out owned
//! [`Record`]s, takes [`Position`]s for pausing, seeking and committing, and
//! tells a [`Rebalance`] hook about assignments, which answers where each
//! assigned partition starts (the projector: its offset in PostgreSQL, never
//! Kafka's committed one).
//!
//! A consumer is closed with [`GroupConsumer::close`], never by a bare drop:
//! librdkafka 2.12 can wait forever inside a close that finds a revoke still
//! to serve (confluentinc/librdkafka#4884: the group has terminated, and the
//! callback's `rd_kafka_assign(NULL)` waits for an answer no one sends). The
//! close serves that revoke while the group still answers, then drops the
//! consumer on a thread of its own and waits for it a bounded time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::FutureExt;

use likes_domain::Position;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset};

use super::base_config;
use crate::Error;

/// Consumer settings for reading the topic without Kafka's auto-commit: the
/// projector keeps its offsets in PostgreSQL, so Kafka's are never the truth.
pub fn consumer_config(bootstrap: &str, group_id: &str) -> ClientConfig {
    let mut config = base_config(bootstrap);
    config
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("partition.assignment.strategy", "roundrobin")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "60000")
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", PREFETCH_KBYTES);
    config
}

/// How much a reader keeps fetched ahead of what it consumed (librdkafka's
/// `queued.max.messages.kbytes`; its default is 64 MiB). The prefetch holds
/// as much of a backlog as fits, so a projector's memory grew with the
/// backlog up to that bound (`bench` scenario 7: 126 MiB draining 0.5 M events,
/// 155 MiB for 1 M). 16 MiB is seconds of events at any drain rate measured
/// here (a record is about 80 bytes).
pub const PREFETCH_KBYTES: &str = "16384";

/// How often a leaving consumer polls for the revoke to serve.
const LEAVE_POLL: Duration = Duration::from_millis(10);

/// How a [`GroupConsumer::close`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The consumer left the group and this clone was let go within the bound.
    InTime,
    /// The bound passed first: the close goes on (or hangs) on its own thread.
    CutOff,
}

/// How long a seek may wait for the consumer.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// One record as read, owned: it outlives the consumer's buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub position: Position,
    /// The record's Kafka timestamp, in milliseconds, when it has one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<Header>,
}

/// One header of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: String,
    pub value: Option<Vec<u8>>,
}

impl Record {
    pub(super) fn read(message: &impl Message) -> Self {
        let headers = message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| Header {
                        key: h.key.to_string(),
                        value: h.value.map(<[u8]>::to_vec),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: message.topic().to_string(),
            position: Position {
                partition: message.partition(),
                offset: message.offset(),
            },
            timestamp_ms: message.timestamp().to_millis(),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec),
            headers,
        }
    }
}

/// What a group consumer's owner decides on a rebalance. The calls come from
/// Kafka's rebalance callback, on the consumer's thread, and block it: they
/// may wait (for a claim in a database, say), but only a bounded time.
pub trait Rebalance: Send + Sync + 'static {
    /// `partitions` of the topic were assigned. Returns where each starts
    /// reading, or `None` to refuse them: the consumer then stays unassigned,
    /// and the hook arranges for a rejoin ([`GroupConsumer::rejoin`]).
    fn assigned(&self, partitions: &[i32]) -> Option<Vec<Position>>;

    /// The starts [`Rebalance::assigned`] returned could not be applied:
    /// nothing is read, and the hook arranges for a rejoin.
    fn assign_failed(&self);

    /// The assignment was revoked, or the rebalance failed: nothing is owned.
    fn revoked(&self);
}

/// The rdkafka callbacks, forwarding to the hook.
struct Callbacks<R> {
    topic: String,
    hook: R,
    /// The group's assignment was served and not yet revoked: leaving the
    /// group queues a revoke, which the close must serve before it drops.
    holds_assignment: AtomicBool,
}

impl<R: Rebalance> ClientContext for Callbacks<R> {}

impl<R: Rebalance> ConsumerContext for Callbacks<R> {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.holds_assignment.store(true, Ordering::SeqCst);
                let partitions: Vec<i32> = tpl
                    .elements_for_topic(&self.topic)
                    .iter()
                    .map(|e| e.partition())
                    .collect();
                let Some(starts) = self.hook.assigned(&partitions) else {
                    let _ = consumer.unassign();
                    return;
                };
                for start in &starts {
                    if let Err(e) = tpl.set_partition_offset(
                        &self.topic,
                        start.partition,
                        Offset::Offset(start.offset),
                    ) {
                        tracing::error!(error = %e, partition = start.partition, "cannot set start offset");
                    }
                }
                if let Err(e) = consumer.assign(tpl) {
                    tracing::error!(error = %e, "assign failed; will rejoin the group");
                    self.hook.assign_failed();
                } else if let Err(e) = consumer.resume(tpl) {
                    // A partition paused before may come back paused: whoever
                    // paused it forgot it with the assignment, so it must be
                    // read again.
                    tracing::warn!(error = %e, "resuming the assigned partitions failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.hook.revoked();
                tracing::info!(partitions = tpl.count(), "partitions revoked");
                let _ = consumer.unassign();
                self.holds_assignment.store(false, Ordering::SeqCst);
            }
            other => {
                tracing::error!(error = ?other, "rebalance error");
                self.hook.revoked();
                let _ = consumer.unassign();
                self.holds_assignment.store(false, Ordering::SeqCst);
            }
        }
    }
}

/// A member of a consumer group reading one topic, without Kafka's
/// auto-commit ([`consumer_config`]); where each partition starts is the
/// [`Rebalance`] hook's answer.
pub struct GroupConsumer<R: Rebalance> {
    inner: StreamConsumer<Callbacks<R>>,
    topic: String,
}

impl<R: Rebalance> GroupConsumer<R> {
    /// Joins `group_id` on `topic`, with `hook` told about every rebalance.
    pub fn subscribe(bootstrap: &str, group_id: &str, topic: &str, hook: R) -> Result<Self, Error> {
        let callbacks = Callbacks {
            topic: topic.to_string(),
            hook,
            holds_assignment: AtomicBool::new(false),
        };
        let inner: StreamConsumer<Callbacks<R>> =
            consumer_config(bootstrap, group_id).create_with_context(callbacks)?;
        inner.subscribe(&[topic])?;
        Ok(Self {
            inner,
            topic: topic.to_string(),
        })
    }

    /// The next record of an assigned, unpaused partition.
    pub async fn recv(&self) -> Result<Record, Error> {
        let message = self.inner.recv().await?;
        Ok(Record::read(&message))
    }

    /// Leaves the group and joins it again: a new assignment follows.
    pub fn rejoin(&self) -> Result<(), Error> {
        self.inner.unsubscribe();
        Ok(self.inner.subscribe(&[&self.topic])?)
    }

    /// Leaves the group and closes the consumer, within `bound` whatever
    /// librdkafka does. On a thread of its own: unsubscribes, serves the
    /// revoke that queues (the hook is told, the assignment dropped) while
    /// the group still answers, then lets go of `self`. Where `self` is the
    /// last clone, that is the close, which then finds nothing to revoke.
    /// A close that does not end within `bound` is left on its thread (a
    /// stopping process ends it): the caller goes on, and is told.
    pub async fn close(self: Arc<Self>, bound: Duration) -> Closed {
        let deadline = Instant::now() + bound;
        let (done, closed) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("consumer close".into())
            .spawn(move || {
                self.leave_before(deadline);
                drop(self);
                let _ = done.send(());
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the consumer's close; left open");
            return Closed::CutOff;
        }
        match tokio::time::timeout(bound, closed).await {
            Ok(_) => Closed::InTime,
            Err(_) => {
                tracing::error!(
                    bound_ms = bound.as_millis() as u64,
                    "the consumer's close did not end in time; left to its thread"
                );
                Closed::CutOff
            }
        }
    }

    /// Unsubscribes, then polls until the revoke that follows has been served
    /// (nothing is held), or `deadline` passes. What the polls return is
    /// dropped: nothing read now is processed.
    fn leave_before(&self, deadline: Instant) {
        self.inner.unsubscribe();
        let held = || self.inner.context().holds_assignment.load(Ordering::SeqCst);
        while held() && Instant::now() < deadline {
            // A poll that finds nothing returns at once: it serves the queued
            // rebalance, if any, in the callbacks above.
            let _ = self.inner.recv().now_or_never();
            std::thread::sleep(LEAVE_POLL);
        }
        if held() {
            tracing::warn!("the revoke after leaving the group was not served in time");
        }
    }

    /// Stops fetching `partition` until it is resumed or assigned again.
    pub fn pause(&self, partition: i32) -> Result<(), Error> {
        Ok(self
            .inner
            .pause(&self.list(&[(partition, Offset::Invalid)])?)?)
    }

    /// Moves `position.partition` to read `position.offset` next.
    pub fn seek(&self, position: Position) -> Result<(), Error> {
        let at = self.list(&[(position.partition, Offset::Offset(position.offset))])?;
        self.inner.seek_partitions(at, SEEK_TIMEOUT)?;
        Ok(())
    }

    /// Fetches `partition` again after a [`GroupConsumer::pause`].
    pub fn resume(&self, partition: i32) -> Result<(), Error> {
        Ok(self
            .inner
            .resume(&self.list(&[(partition, Offset::Invalid)])?)?)
    }

    /// Commits each position (the next offset to read) to Kafka, without
    /// waiting for the answer.
    pub fn commit(&self, next: &[Position]) -> Result<(), Error> {
        let offsets: Vec<(i32, Offset)> = next
            .iter()
            .map(|p| (p.partition, Offset::Offset(p.offset)))
            .collect();
        Ok(self
            .inner
            .commit(&self.list(&offsets)?, CommitMode::Async)?)
    }

    fn list(&self, offsets: &[(i32, Offset)]) -> Result<TopicPartitionList, Error> {
        let mut tpl = TopicPartitionList::new();
        for (partition, offset) in offsets {
            tpl.add_partition_offset(&self.topic, *partition, *offset)?;
        }
        Ok(tpl)
    }
}
