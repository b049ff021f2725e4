//! `likes-replay schema check <file.avsc>`: tries a candidate event schema
//! before it is registered. Two gates, both must pass (exit 0):
//!
//! 1. The registry: is the candidate compatible with every registered version
//!    of the value subject under its level (FULL_TRANSITIVE, see `setup`)?
//!    When not, the changes that break it are named.
//! 2. The log: a sample of records (the first and last `--sample` records of
//!    every partition, so the oldest and the newest writer schemas still
//!    retained) is decoded with the candidate as the *reader* schema, each
//!    record's writer schema from its id. Every record the build decodes must
//!    decode with the candidate to the same event, and the domain fold of the
//!    candidate's events must equal the build's. Records the build cannot
//!    decode either (poison, already dead-lettered) are counted, not blamed.
//!
//! [`Trial::decode_framed`] is the hook for more sources (the archive): any
//! iterator of Confluent-framed records can be added to the same trial.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use likes_domain::{BatchFold, LikeEvent, Position};
use likes_infra::codec::{EventCodec, schema_id};
use likes_infra::kafka::sample::{self, RawRecord};
use likes_infra::registry::{self, Registry, changes};
use likes_infra::settings::StackSettings;
use likes_infra::{DecodeError, Error};

/// `likes-replay schema`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: SchemaCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SchemaCommand {
    /// Try a candidate event schema against the registry and the log.
    ///
    /// Exits 0 only when the registry finds it compatible and every sampled
    /// record decodes with it to the same event as with this build's schema.
    Check(CheckArgs),
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// The candidate Avro schema file (e.g. an edited `schemas/like_event.avsc`).
    file: PathBuf,
    /// Records sampled at each end of every partition (the oldest and the
    /// newest retained).
    #[arg(long, default_value_t = 200)]
    sample: i64,
}

/// Runs `schema`.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        SchemaCommand::Check(args) => check(stack, args).await,
    }
}

async fn check(stack: &StackSettings, args: CheckArgs) -> anyhow::Result<ExitCode> {
    if args.sample < 1 {
        anyhow::bail!("--sample must be at least 1 (got {})", args.sample);
    }
    let name = args.file.display().to_string();
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| anyhow::anyhow!("{name}: cannot read it: {e}"))?;
    if let Err(e) = changes::parse(&name, &text) {
        println!("FAIL {e}");
        return Ok(ExitCode::FAILURE);
    }

    let registry_passed = registry_gate(stack, &text).await?;

    let mut trial = Trial::new(stack, &name, &text)?;
    let (partitions, records) = sample::head_and_tail(stack, args.sample).await?;
    let retained: i64 = partitions.iter().map(|p| p.log_end - p.log_start).sum();
    println!(
        "log {}: sampled {} of {retained} retained records ({} partitions, up to {} at each end)",
        stack.topic,
        records.len(),
        partitions.len(),
        args.sample
    );
    let archived = archive_sample(stack, usize::try_from(args.sample)?).await?;
    println!(
        "archive {}: sampled {} records (the first and last file of each partition, and one file per writer schema)",
        crate::archive::url(stack),
        archived.len()
    );
    // The archive holds the older offsets: its records go first.
    trial.decode_framed("archive", archived).await?;
    trial.decode_framed("topic", records).await?;
    let log_passed = trial.report();

    if registry_passed && log_passed {
        println!("PASS {name}");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("FAIL {name}");
        Ok(ExitCode::FAILURE)
    }
}

/// Up to `sample` records of the first and the last archive file of every
/// partition and of each file whose writer schema was not sampled yet (a file
/// holds one writer schema), so every schema id the archive holds is tried.
/// Every file's header is read for that: the price of seeing every id.
async fn archive_sample(stack: &StackSettings, sample: usize) -> anyhow::Result<Vec<RawRecord>> {
    let Some(archive) =
        likes_infra::archive::Archive::open_existing(&stack.archive_url, &stack.topic)?
    else {
        return Ok(Vec::new()); // no archive yet
    };
    let partitions =
        likes_infra::kafka::partition_count(&stack.kafka_bootstrap, &stack.topic).await?;
    let mut records = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for partition in 0..partitions {
        let files = archive.coverage(partition).await?.files;
        for (i, name) in files.iter().enumerate() {
            let file = archive.read(partition, *name).await?;
            let ends = i == 0 || i + 1 == files.len();
            if !ends && !seen.insert(file.schema_id) {
                continue;
            }
            seen.insert(file.schema_id);
            let take = file.records.len().min(sample);
            let part = if i + 1 == files.len() && i != 0 {
                &file.records[file.records.len() - take..]
            } else {
                &file.records[..take]
            };
            records.extend(part.iter().map(|r| RawRecord {
                partition,
                offset: r.offset,
                payload: r.payload.clone(),
            }));
        }
    }
    Ok(records)
}

/// Asks the registry, and names the breaking changes when it says no.
async fn registry_gate(stack: &StackSettings, text: &str) -> Result<bool, Error> {
    let registry = Registry::new(&stack.schema_registry_url)?;
    let subject = registry::value_subject(&stack.topic);
    let level = registry.compatibility(&subject).await?;
    let versions = registry.versions(&subject).await?;
    let verdict = registry.check(&subject, text).await?;
    println!(
        "registry: subject {subject}, compatibility {}, {} version(s) (schema ids {})",
        level.as_deref().unwrap_or("not set on the subject"),
        versions.len(),
        versions
            .iter()
            .map(|v| v.id.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if level.as_deref() != Some(registry::COMPATIBILITY) {
        println!(
            "registry: the subject's level is not {}: run `likes-replay setup` to set it",
            registry::COMPATIBILITY
        );
    }
    // Our own reading of the rule, so the verdict names what breaks even
    // where the registry's level is looser or its answer a bare boolean.
    let found = changes::against_versions(&versions, text);
    for message in &verdict.messages {
        println!("registry says: {message}");
    }
    for change in &found {
        println!("incompatible: {change}");
    }
    let passed = verdict.compatible && found.is_empty();
    println!(
        "registry: {}",
        match (verdict.compatible, found.is_empty()) {
            (true, true) => "compatible",
            (false, _) => "INCOMPATIBLE (the registry refuses it)",
            (true, false) =>
                "INCOMPATIBLE under FULL_TRANSITIVE (the subject's level lets it pass)",
        }
    );
    Ok(passed)
}

/// What the trial saw of one writer schema id.
#[derive(Debug, Default, Clone, Copy)]
struct IdTally {
    records: u64,
    /// Decoded by the candidate to the same event as by the build.
    passed: u64,
    /// Decoded by the build but not (or differently) by the candidate.
    failed: u64,
    /// Not decoded by the build either: poison, not the candidate's fault.
    poison: u64,
}

/// One trial of a candidate reader schema over framed records from any
/// number of sources.
pub struct Trial {
    build: EventCodec,
    candidate: EventCodec,
    by_source: BTreeMap<String, u64>,
    by_id: BTreeMap<Option<u32>, IdTally>,
    /// The first few failures, for the report.
    failures: Vec<String>,
    /// The fold over the build's and the candidate's events.
    build_fold: BatchFold,
    candidate_fold: BatchFold,
}

/// Failures listed in the report beyond the counts.
const LISTED_FAILURES: usize = 10;

impl Trial {
    /// A trial of `schema` (named `name` in messages) on `stack`'s registry.
    pub fn new(stack: &StackSettings, name: &str, schema: &str) -> Result<Self, Error> {
        let codec = || EventCodec::new(&stack.schema_registry_url, &stack.topic);
        Ok(Self {
            build: codec()?,
            candidate: codec()?.with_reader_schema(name, schema)?,
            by_source: BTreeMap::new(),
            by_id: BTreeMap::new(),
            failures: Vec::new(),
            build_fold: BatchFold::new(),
            candidate_fold: BatchFold::new(),
        })
    }

    /// Decodes `records` (Confluent-framed, from `source`: "topic",
    /// "archive", ...) with the build's schema and with the candidate's, and
    /// folds the events. Records of one partition must come in offset order.
    /// Fails only when a record cannot be judged (its schema id unknown to
    /// the registry, or the registry away).
    pub async fn decode_framed(
        &mut self,
        source: &str,
        records: impl IntoIterator<Item = RawRecord>,
    ) -> Result<(), Error> {
        for record in records {
            *self.by_source.entry(source.to_string()).or_default() += 1;
            let payload = record.payload.as_deref();
            let id = payload.and_then(schema_id);
            let tally = self.by_id.entry(id).or_default();
            tally.records += 1;
            let position = Position {
                partition: record.partition,
                offset: record.offset,
            };
            let build = judged(&record, self.build.decode_event(payload).await)?;
            let candidate = judged(&record, self.candidate.decode_event(payload).await)?;
            let tally = self.by_id.entry(id).or_default();
            match (build, candidate) {
                (Err(_), _) => tally.poison += 1,
                (Ok(expected), Ok(event)) if expected == event => {
                    tally.passed += 1;
                    self.build_fold.push(position, &expected);
                    self.candidate_fold.push(position, &event);
                }
                (Ok(expected), outcome) => {
                    tally.failed += 1;
                    self.build_fold.push(position, &expected);
                    if let Ok(event) = &outcome {
                        self.candidate_fold.push(position, event);
                    }
                    if self.failures.len() < LISTED_FAILURES {
                        self.failures.push(format!(
                            "{source} partition {} offset {} (schema id {}): {}",
                            record.partition,
                            record.offset,
                            id.map_or_else(|| "-".into(), |i| i.to_string()),
                            describe(&expected, outcome)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Prints what was checked; whether every judged record passed and the
    /// folds agree.
    pub fn report(self) -> bool {
        for (source, n) in &self.by_source {
            println!("read {n} record(s) from the {source}");
        }
        let mut failed = 0;
        for (id, t) in &self.by_id {
            failed += t.failed;
            println!(
                "schema id {}: {} record(s): {} decode to the same event, {} fail, {} poison \
                 to this build too (not counted against the candidate)",
                id.map_or_else(|| "none (not framed)".into(), |i| i.to_string()),
                t.records,
                t.passed,
                t.failed,
                t.poison
            );
        }
        for failure in &self.failures {
            println!("failed: {failure}");
        }
        let (events, build) = (self.build_fold.events(), self.build_fold.finish());
        let candidate = self.candidate_fold.finish();
        let folds_agree = build == candidate;
        println!(
            "fold: {events} event(s) into {} (user, item) state(s): {}",
            build.len(),
            if folds_agree {
                "the candidate's events fold to the same states"
            } else {
                "the candidate's events fold to OTHER states"
            }
        );
        let passed = failed == 0 && folds_agree;
        println!("log: {}", if passed { "passed" } else { "FAILED" });
        passed
    }
}

/// A decode outcome the trial can judge, or the error that stops it: a
/// record whose schema cannot be had says nothing about the candidate.
fn judged(
    record: &RawRecord,
    outcome: Result<LikeEvent, DecodeError>,
) -> Result<Result<LikeEvent, DecodeError>, Error> {
    match outcome {
        Err(
            e @ (DecodeError::UnknownSchemaId { .. } | DecodeError::RegistryUnavailable { .. }),
        ) => Err(Error::UnreadableRecord {
            partition: record.partition,
            offset: record.offset,
            source: e,
        }),
        other => Ok(other),
    }
}

fn describe(expected: &LikeEvent, outcome: Result<LikeEvent, DecodeError>) -> String {
    match outcome {
        Ok(event) => format!("decodes to {event:?}, the build to {expected:?}"),
        Err(e) => format!("the candidate cannot read it: {e}"),
    }
}
