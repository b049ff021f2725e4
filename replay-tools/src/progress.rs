//! Progress of long reads: an indicatif bar (events/s, ETA) when stderr is a
//! terminal, and a plain line every few seconds when it is not (logs, CI), so
//! an operator always sees that a long replay is moving. Always on stderr:
//! stdout carries the data. Clones share one report, so parallel readers of a
//! rebuild move a single bar; it ends when the last clone is dropped.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use likes_infra::kafka::reader::{LogRecord, Span, span_total};

use crate::source::{LogSource, SourceReader};
use likes_infra::settings::StackSettings;

/// How often the plain progress line is printed.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// Reports how many of `total` events were read.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Starts reporting `label` for `total` events (0 when unknown).
    pub fn new(label: &str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            // A template that fails to parse only loses the styling, never the run.
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {human_pos}/{human_len} events, {per_sec}, ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        let now = Instant::now();
        let inner = Inner {
            label: label.to_string(),
            total,
            done: 0,
            started: now,
            last_line: now,
            bar,
        };
        Self {
            inner: Arc::new(Mutex::new(inner)),
        }
    }

    /// Counts `n` more events read.
    pub fn inc(&self, n: u64) {
        // A reader that panicked mid-update leaves a count that is still usable.
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.done += n;
        match &inner.bar {
            Some(bar) => bar.inc(n),
            None if inner.last_line.elapsed() >= LINE_EVERY => {
                inner.last_line = Instant::now();
                eprintln!("{}", inner.line());
            }
            None => {}
        }
    }

    /// Ends this handle's part of the report (the report ends with the last clone).
    pub fn finish(self) {
        drop(self);
    }
}

impl Inner {
    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        format!(
            "{}: {}/{} events, {rate:.0} events/s",
            self.label, self.done, self.total
        )
    }
}

impl Drop for Inner {
    /// Ends the report; the plain form prints a last line only for reads long
    /// enough to have printed one before.
    fn drop(&mut self) {
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None if self.started.elapsed() >= LINE_EVERY => eprintln!("{}", self.line()),
            None => {}
        }
    }
}

/// A read of the log that moves a progress report by one per record read.
pub struct ProgressRead {
    reader: SourceReader,
    progress: Progress,
}

impl ProgressRead {
    /// Reads `spans` with a progress report of its own (empty spans are skipped).
    pub fn new(
        source: LogSource,
        stack: &StackSettings,
        spans: &[Span],
        label: &str,
    ) -> anyhow::Result<Self> {
        let progress = Progress::new(label, span_total(spans));
        Self::sharing(source, stack, spans, progress)
    }

    /// Reads `spans`, counting records on a shared `progress` (parallel readers
    /// of one job move one report).
    pub fn sharing(
        source: LogSource,
        stack: &StackSettings,
        spans: &[Span],
        progress: Progress,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            reader: source.read(stack, spans, None)?,
            progress,
        })
    }

    /// As [`ProgressRead::new`], skipping archived records older than `since`.
    pub fn since(
        source: LogSource,
        stack: &StackSettings,
        spans: &[Span],
        since: Option<chrono::DateTime<chrono::Utc>>,
        label: &str,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            reader: source.read(stack, spans, since)?,
            progress: Progress::new(label, span_total(spans)),
        })
    }

    /// The next record ([`SourceReader::next`]).
    pub async fn next(&mut self) -> anyhow::Result<Option<LogRecord>> {
        let record = self.reader.next().await?;
        if record.is_some() {
            self.progress.inc(1);
        }
        Ok(record)
    }

    /// Stops reading `partition` before its planned end.
    pub fn finish_partition(&mut self, partition: i32) {
        self.reader.finish_partition(partition);
    }

    /// Whether `partition` still has records due.
    pub fn is_active(&self, partition: i32) -> bool {
        self.reader.is_active(partition)
    }
}
