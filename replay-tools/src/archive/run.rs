//! `likes-replay archive run`: the archiver. It follows every partition of
//! the topic and writes its records into archive files (`likes_infra::archive`),
//! one file at a time per partition, rolled by size or age and whenever the
//! events' writer schema changes.
//!
//! Its position is the archive itself: at start each partition resumes at the
//! offset after its last complete file (a `.tmp` left by a crash is removed),
//! so a `kill -9` costs the unfinished files' records a second read, never a
//! gap or an overlap. Records the log deleted before the archiver read them
//! (it was down longer than retention) cannot be archived: the archiver says
//! so (log, `likes_archive_missed_records_total`) and goes on from the log's
//! start; `archive verify` then names the gap.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use likes_infra::archive::{Archive, FileBuilder, FileName, Record, WriterSchemas};
use likes_infra::codec::schema_id;
use likes_infra::kafka::reader::TopicHandle;
use likes_infra::kafka::tail::Tail;
use likes_infra::settings::StackSettings;
use likes_infra::{Error, retry};

use super::metrics as m;

/// How long a file may stay open by default before it is completed.
pub const DEFAULT_ROLL_SECONDS: u64 = 300;
/// How large a file grows by default before it is completed (bytes before
/// compression). Up to one file per partition is held in memory.
pub const DEFAULT_ROLL_BYTES: usize = 8 << 20;

/// `likes-replay archive run`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Complete a file once it is this old (seconds).
    #[arg(long, env = "ARCHIVE_ROLL_SECONDS", default_value_t = DEFAULT_ROLL_SECONDS)]
    pub roll_seconds: u64,
    /// Complete a file once its records take this many bytes.
    #[arg(long, env = "ARCHIVE_ROLL_BYTES", default_value_t = DEFAULT_ROLL_BYTES)]
    pub roll_bytes: usize,
    /// Where `/metrics` and `/healthz` are served.
    #[arg(long, env = "ARCHIVE_METRICS_ADDR", default_value = "127.0.0.1:9103")]
    pub metrics_addr: SocketAddr,
}

/// One partition's file being filled.
struct Open {
    file: FileBuilder,
    last: i64,
    opened: Instant,
}

/// Archives until `shutdown` resolves, then completes the open files.
pub async fn run(
    stack: &StackSettings,
    args: Args,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let handle = m::install();
    let server = tokio::spawn(m::serve(args.metrics_addr, handle));
    let result = archive(stack, &args, shutdown).await;
    server.abort();
    result
}

async fn archive(
    stack: &StackSettings,
    args: &Args,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let archive = Archive::open(&stack.archive_url, &stack.topic)?;
    let topic = TopicHandle::open(stack)?;
    let partitions = topic.partition_count()?;
    // next[p]: the first offset the next file of p covers.
    let mut next = HashMap::new();
    for p in 0..partitions {
        archive.remove_leftovers(p).await?;
        let resume = archive.coverage(p).await?.next_offset().unwrap_or(0);
        let (low, _) = topic.watermarks(p)?;
        let start = if low > resume {
            missed(p, resume, low);
            low
        } else {
            resume
        };
        metrics::gauge!(m::NEXT_OFFSET, "partition" => p.to_string()).set(start as f64);
        next.insert(p, start);
    }
    let positions: Vec<(i32, i64)> = next.iter().map(|(p, o)| (*p, *o)).collect();
    let tail = Tail::open(&stack.kafka_bootstrap, &stack.topic, &positions)?;
    tracing::info!(url = archive.url(), partitions, "archiver started");
    let mut writer = Writer {
        archive,
        stack,
        schemas: WriterSchemas::new(&stack.schema_registry_url)?,
        open: HashMap::new(),
        next,
        roll_bytes: args.roll_bytes.max(1),
        roll_after: Duration::from_secs(args.roll_seconds),
    };
    let mut last_lag = Instant::now();
    tokio::pin!(shutdown);
    loop {
        let received = tokio::select! {
            () = &mut shutdown => break,
            r = tail.next(Duration::from_millis(500)) => r,
        };
        match received {
            Ok(Some((partition, record))) => writer.take(&tail, partition, record).await?,
            Ok(None) => {}
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "reading the topic failed; reading on");
            }
            Err(e) => return Err(e.into()),
        }
        writer.complete_old().await?;
        if last_lag.elapsed() >= Duration::from_secs(10) {
            last_lag = Instant::now();
            writer.report_lag(&tail);
        }
    }
    writer.complete_all().await?;
    tracing::info!("archiver stopped; every open file completed");
    Ok(())
}

fn missed(partition: i32, from: i64, to: i64) {
    tracing::error!(
        partition,
        from,
        to,
        "records were deleted from the log before they were archived; the archive has a gap there"
    );
    metrics::counter!(m::MISSED).increment(u64::try_from(to - from).unwrap_or(0));
}

struct Writer<'a> {
    archive: Archive,
    stack: &'a StackSettings,
    schemas: WriterSchemas,
    open: HashMap<i32, Open>,
    next: HashMap<i32, i64>,
    roll_bytes: usize,
    roll_after: Duration,
}

impl Writer<'_> {
    /// Adds one record to its partition's file.
    async fn take(&mut self, tail: &Tail, partition: i32, record: Record) -> anyhow::Result<()> {
        let Some(expected) = self.expected(partition) else {
            return Ok(()); // a partition added after start: the next run takes it
        };
        if record.offset < expected {
            return Ok(()); // read twice after a reconnect: already held
        }
        if record.offset > expected {
            // Offsets without records are transaction markers, unless the
            // log deleted them before they were read.
            let (low, _) = tail.watermarks(partition)?;
            if low > expected {
                self.complete(partition).await?;
                missed(partition, expected, record.offset);
                self.next.insert(partition, record.offset);
            }
        }
        let writer = match record.payload.as_deref().and_then(schema_id) {
            Some(id) => self.writer_schema(id).await?,
            None => None,
        };
        let schema_changes = match (&writer, self.open.get(&partition)) {
            (Some(w), Some(open)) => open.file.schema_id() != Some(w.id),
            _ => false,
        };
        if schema_changes {
            if self
                .open
                .get(&partition)
                .is_some_and(|o| !o.file.is_empty())
            {
                self.complete_before(partition, record.offset).await?;
            } else {
                self.open.remove(&partition);
            }
        }
        if !self.open.contains_key(&partition) {
            let first = self.next.get(&partition).copied().unwrap_or(record.offset);
            self.open.insert(
                partition,
                Open {
                    file: FileBuilder::new(&self.stack.topic, partition, first, writer)?,
                    last: first - 1,
                    opened: Instant::now(),
                },
            );
        }
        if let Some(open) = self.open.get_mut(&partition) {
            open.file.push(&record);
            open.last = record.offset;
            if open.file.bytes() >= self.roll_bytes {
                self.complete(partition).await?;
            }
        }
        Ok(())
    }

    /// The offset the next record of `partition` should have.
    fn expected(&self, partition: i32) -> Option<i64> {
        match self.open.get(&partition) {
            Some(open) => Some(open.last + 1),
            None => self.next.get(&partition).copied(),
        }
    }

    /// The writer schema of `id`, asking a registry that is away again
    /// until it answers: a record is never archived raw for that reason.
    async fn writer_schema(
        &mut self,
        id: u32,
    ) -> anyhow::Result<Option<likes_infra::archive::WriterSchema>> {
        let mut backoff = retry::TRANSIENT.backoff();
        loop {
            match self.schemas.get(id).await {
                Ok(found) => return Ok(found),
                Err(e) if e.is_transient() => {
                    let pause = backoff.after_failure().unwrap_or(retry::TRANSIENT.max);
                    tracing::warn!(error = %e, schema_id = id, "registry unavailable; asking again");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Completes `partition`'s file so that it ends just before `offset`.
    async fn complete_before(&mut self, partition: i32, offset: i64) -> anyhow::Result<()> {
        if let Some(open) = self.open.get_mut(&partition) {
            open.last = offset - 1;
        }
        self.complete(partition).await
    }

    /// Completes `partition`'s open file, if it holds anything.
    async fn complete(&mut self, partition: i32) -> anyhow::Result<()> {
        let Some(open) = self.open.remove(&partition) else {
            return Ok(());
        };
        if open.file.is_empty() {
            return Ok(());
        }
        let name = FileName {
            first: open.file.first(),
            last: open.last,
        };
        let records = open.file.len() as u64;
        let bytes = open.file.finish(name.last)?;
        self.put(partition, name, bytes).await?;
        self.next.insert(partition, name.last + 1);
        metrics::counter!(m::FILES).increment(1);
        metrics::counter!(m::RECORDS).increment(records);
        metrics::gauge!(m::NEXT_OFFSET, "partition" => partition.to_string())
            .set((name.last + 1) as f64);
        tracing::debug!(
            partition,
            first = name.first,
            last = name.last,
            records,
            "archive file completed"
        );
        Ok(())
    }

    /// Stores a file, trying again while the store is away: a file is never
    /// skipped.
    async fn put(&self, partition: i32, name: FileName, bytes: Vec<u8>) -> anyhow::Result<()> {
        let mut backoff = retry::TRANSIENT.backoff();
        loop {
            match self.archive.put(partition, name, bytes.clone()).await {
                Ok(()) => return Ok(()),
                Err(e @ Error::ArchiveUnavailable { .. }) => {
                    let pause = backoff.after_failure().unwrap_or(retry::TRANSIENT.max);
                    tracing::warn!(error = %e, partition, "archive store unavailable; trying again");
                    tokio::time::sleep(pause).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Completes the files open longer than the roll interval.
    async fn complete_old(&mut self) -> anyhow::Result<()> {
        let old: Vec<i32> = self
            .open
            .iter()
            .filter(|(_, o)| o.opened.elapsed() >= self.roll_after)
            .map(|(p, _)| *p)
            .collect();
        for partition in old {
            self.complete(partition).await?;
        }
        Ok(())
    }

    async fn complete_all(&mut self) -> anyhow::Result<()> {
        let open: Vec<i32> = self.open.keys().copied().collect();
        for partition in open {
            self.complete(partition).await?;
        }
        Ok(())
    }

    /// Sets the lag gauge of every partition (best effort: a broker that does
    /// not answer leaves the last value).
    fn report_lag(&self, tail: &Tail) {
        for (&partition, &next) in &self.next {
            if let Ok((_, high)) = tail.watermarks(partition) {
                metrics::gauge!(m::LAG, "partition" => partition.to_string())
                    .set((high - next).max(0) as f64);
            }
        }
    }
}
