//! `likes-replay dlq list|show`: the dead-letter topic (`<topic>.dlq`) for an
//! operator, without writing code. `list` prints one row per dead letter
//! (where it sits, where its record came from, whole or a reference, why it
//! is dead, its size, and whether its bytes decode *now*); `show` prints
//! everything about one: every header, key and value as a bounded hex dump,
//! and the decode attempt step by step (magic byte, schema id, the registry's
//! schema, the event or why not). Both read from the topic's start (or
//! `--from-offset`) to the end it had when they began, and exit: they never
//! wait for new dead letters. Reading is `likes_infra::kafka::dead_letter_reader`;
//! decoding is the project's codec.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use likes_domain::LikeEvent;
use likes_infra::DecodeError;
use likes_infra::codec::EventCodec;
use likes_infra::kafka::dead_letter_reader::{
    DeadLetter, DeadLetterDecoder, DeadLetterReader, DecodeAttempt,
};
use likes_infra::kafka::dead_letters::Sent;
use likes_infra::settings::StackSettings;
use serde::Serialize;

use crate::output::{Format, json_line, table_row};

/// `likes-replay dlq`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DlqCommand {
    /// One row per dead letter, oldest first, from the start of the topic to
    /// its end now.
    List(ListArgs),
    /// Everything about one dead letter: headers, key and value as hex, and
    /// the decode attempt step by step.
    Show(ShowArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Print at most this many dead letters (the last line says where the
    /// next one is).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    limit: u64,
    /// Only this partition of the dead-letter topic.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    partition: Option<i32>,
    /// Start at this offset of each partition read (default: the first retained).
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    from_offset: Option<i64>,
    /// Output: an aligned table, or JSON Lines (one dead letter per line).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["position", "source"])))]
struct ShowArgs {
    /// The dead letter's place in the dead-letter topic, `<partition>:<offset>`
    /// (the first column of `dlq list`).
    #[arg(value_parser = parse_position)]
    position: Option<(i32, i64)>,
    /// Instead: the dead letters of the record at `<partition>:<offset>` of the
    /// events topic (every one, if it was dead-lettered more than once).
    #[arg(long, value_parser = parse_position)]
    source: Option<(i32, i64)>,
    /// Show at most this many bytes of the key and of the value.
    #[arg(long, default_value_t = 4096)]
    max_bytes: usize,
    /// Output: readable text, or JSON (one object per dead letter).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

/// Parses `<partition>:<offset>`, both non-negative.
fn parse_position(value: &str) -> Result<(i32, i64), String> {
    let wrong = || {
        format!(
            "expected <partition>:<offset>, two non-negative numbers such as 0:42 (got {value:?})"
        )
    };
    let (partition, offset) = value.split_once(':').ok_or_else(wrong)?;
    let partition: i32 = partition.trim().parse().map_err(|_| wrong())?;
    let offset: i64 = offset.trim().parse().map_err(|_| wrong())?;
    if partition < 0 || offset < 0 {
        return Err(wrong());
    }
    Ok((partition, offset))
}

/// Runs `dlq`.
pub async fn command(stack: &StackSettings, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        DlqCommand::List(args) => list(stack, args).await,
        DlqCommand::Show(args) => show(stack, args).await,
    }
}

/// The decoder for looking at dead letters: no grace for unknown schema ids
/// (the record is already dead; the question is what the registry says now).
fn decoder(stack: &StackSettings) -> anyhow::Result<DeadLetterDecoder> {
    Ok(DeadLetterDecoder::new(
        EventCodec::new(&stack.schema_registry_url, &stack.topic)?
            .with_unknown_schema_retry(Duration::ZERO),
    ))
}

/// The partitions to read: `only`, checked against the topic, or all.
fn partitions(reader: &DeadLetterReader, only: Option<i32>) -> anyhow::Result<Vec<i32>> {
    let count = reader.partition_count()?;
    match only {
        Some(p) if p >= count => anyhow::bail!(
            "partition {p}: {} has partitions 0 to {}",
            reader.topic(),
            count - 1
        ),
        Some(p) => Ok(vec![p]),
        None => Ok((0..count).collect()),
    }
}

/// `p:o`.
fn at(partition: i32, offset: i64) -> String {
    format!("{partition}:{offset}")
}

fn time_text(d: &DeadLetter) -> String {
    d.time().map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    )
}

/// The kind as printed: `whole`, `reference`, or the header as found.
fn kind_text(d: &DeadLetter) -> String {
    match d.sent() {
        Some(Sent::Whole) => "whole".into(),
        Some(Sent::Reference) => "reference".into(),
        None => d
            .header_text(likes_infra::kafka::dead_letters::header::KIND)
            .unwrap_or_else(|| "-".into()),
    }
}

/// One row of `dlq list`.
#[derive(Debug, Serialize)]
struct ListRow {
    dlq_partition: i32,
    dlq_offset: i64,
    /// When it was written to the dead-letter topic.
    time: Option<String>,
    source_topic: Option<String>,
    source_partition: Option<i32>,
    source_offset: Option<i64>,
    /// `whole` or `reference`.
    kind: String,
    reason: Option<String>,
    /// The source record's value size in bytes.
    size: Option<u64>,
    /// `ok`, or why not (`DecodeError::kind`).
    decode: &'static str,
}

/// Table columns of `dlq list` (the reason is last, unpadded).
const LIST_WIDTHS: [usize; 6] = [9, 24, 10, 9, 8, 17];
/// The longest reason a table row shows (JSON has all of it).
const LIST_REASON_CHARS: usize = 100;

async fn list(stack: &StackSettings, args: ListArgs) -> anyhow::Result<ExitCode> {
    let mut reader = DeadLetterReader::open(&stack.kafka_bootstrap, &stack.dlq_topic())?;
    let partitions = partitions(&reader, args.partition)?;
    let mut decoder = decoder(stack)?;
    let mut out = std::io::stdout().lock();
    if args.format == Format::Table {
        let header = ["DLQ", "TIME", "SOURCE", "KIND", "SIZE", "DECODE", "REASON"];
        table_row(&mut out, &LIST_WIDTHS, &header.map(String::from))?;
    }
    let mut shown = 0u64;
    let mut next = None;
    'partitions: for partition in partitions {
        let (low, high) = reader.watermarks(partition)?;
        let start = args.from_offset.map_or(low, |o| o.max(low));
        let mut scan = reader.scan(partition, start, high)?;
        while let Some(d) = scan.next().await? {
            let position = d.record.position;
            if shown == args.limit {
                next = Some(position);
                break 'partitions;
            }
            let decode = decoder.attempt(d.record.payload.as_deref()).await;
            let source = d.source();
            let row = ListRow {
                dlq_partition: position.partition,
                dlq_offset: position.offset,
                time: d.time().map(|_| time_text(&d)),
                source_topic: source.as_ref().and_then(|s| s.topic.clone()),
                source_partition: source.as_ref().map(|s| s.position.partition),
                source_offset: source.as_ref().map(|s| s.position.offset),
                kind: kind_text(&d),
                reason: d.reason(),
                size: d.source_size(),
                decode: decode.result_name(),
            };
            match args.format {
                Format::Json => json_line(&mut out, &row)?,
                Format::Table => table_row(
                    &mut out,
                    &LIST_WIDTHS,
                    &[
                        at(row.dlq_partition, row.dlq_offset),
                        time_text(&d),
                        source.map_or_else(
                            || "-".into(),
                            |s| at(s.position.partition, s.position.offset),
                        ),
                        row.kind,
                        row.size.map_or_else(|| "-".into(), |s| s.to_string()),
                        row.decode.to_string(),
                        one_line(row.reason.as_deref().unwrap_or("-"), LIST_REASON_CHARS),
                    ],
                )?,
            }
            shown += 1;
        }
    }
    let topic = reader.topic();
    match (next, args.format) {
        (Some(p), Format::Table) => writeln!(
            out,
            "{shown} dead letter(s) of {topic} shown; more from {}: --partition {} --from-offset {}",
            at(p.partition, p.offset),
            p.partition,
            p.offset
        )?,
        (Some(p), Format::Json) => eprintln!(
            "likes-replay: --limit {} reached; more from {}",
            args.limit,
            at(p.partition, p.offset)
        ),
        (None, Format::Table) => writeln!(out, "{shown} dead letter(s) of {topic}")?,
        (None, Format::Json) => {}
    }
    Ok(ExitCode::SUCCESS)
}

/// `text` on one line, cut to `max` characters with an ellipsis.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

async fn show(stack: &StackSettings, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let mut reader = DeadLetterReader::open(&stack.kafka_bootstrap, &stack.dlq_topic())?;
    let letters = match (args.position, args.source) {
        (Some((partition, offset)), _) => {
            partitions(&reader, Some(partition))?;
            match reader.at(partition, offset).await? {
                Some(d) => vec![d],
                None => {
                    let (low, high) = reader.watermarks(partition)?;
                    let holds = if high > low {
                        format!("holds offsets {low} to {}", high - 1)
                    } else {
                        "holds no record".to_string()
                    };
                    anyhow::bail!(
                        "no dead letter at {}: partition {partition} of {} {holds}",
                        at(partition, offset),
                        reader.topic()
                    );
                }
            }
        }
        (None, Some((partition, offset))) => {
            let found = of_source(&mut reader, &stack.topic, partition, offset).await?;
            if found.is_empty() {
                anyhow::bail!(
                    "no dead letter of {} partition {partition} offset {offset} in {}",
                    stack.topic,
                    reader.topic()
                );
            }
            found
        }
        (None, None) => anyhow::bail!("give a dead letter's <partition>:<offset>, or --source"),
    };
    let mut decoder = decoder(stack)?;
    let mut out = std::io::stdout().lock();
    for (i, d) in letters.iter().enumerate() {
        let decode = decoder.attempt(d.record.payload.as_deref()).await;
        match args.format {
            Format::Json => json_line(&mut out, &Shown::of(d, &decode, args.max_bytes))?,
            Format::Table => {
                if i > 0 {
                    writeln!(out)?;
                }
                print_letter(&mut out, reader.topic(), d, &decode, args.max_bytes)?;
            }
        }
    }
    if letters.len() > 1 && args.format == Format::Table {
        writeln!(
            out,
            "\nthe record was dead-lettered {} times (a projector stopped before it committed past it); \
             it is one record",
            letters.len()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Every dead letter of the record at `partition`:`offset` of `topic` (a
/// whole read of the dead-letter topic).
async fn of_source(
    reader: &mut DeadLetterReader,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<Vec<DeadLetter>> {
    let mut found = Vec::new();
    for dlq_partition in partitions(reader, None)? {
        let (low, high) = reader.watermarks(dlq_partition)?;
        let mut scan = reader.scan(dlq_partition, low, high)?;
        while let Some(d) = scan.next().await? {
            let matches = d.source().is_some_and(|s| {
                s.position.partition == partition
                    && s.position.offset == offset
                    && s.topic.as_deref().is_none_or(|t| t == topic)
            });
            if matches {
                found.push(d);
            }
        }
    }
    Ok(found)
}

fn print_letter(
    out: &mut impl Write,
    dlq_topic: &str,
    d: &DeadLetter,
    decode: &DecodeAttempt,
    max_bytes: usize,
) -> anyhow::Result<()> {
    let position = d.record.position;
    writeln!(
        out,
        "dead letter {} of {dlq_topic}, written {}",
        at(position.partition, position.offset),
        time_text(d)
    )?;
    let source = d.source().map_or_else(
        || "- (no source headers)".into(),
        |s| {
            format!(
                "{} partition {} offset {}",
                s.topic.as_deref().unwrap_or("-"),
                s.position.partition,
                s.position.offset
            )
        },
    );
    writeln!(out, "source      {source}")?;
    let kind = match d.sent() {
        Some(Sent::Whole) => "whole (the record's key, value and headers)".to_string(),
        Some(Sent::Reference) => format!(
            "reference (the record did not fit: {})",
            d.reference_reason().as_deref().unwrap_or("-")
        ),
        None => kind_text(d),
    };
    writeln!(out, "kind        {kind}")?;
    writeln!(out, "reason      {}", d.reason().as_deref().unwrap_or("-"))?;
    writeln!(
        out,
        "size        {}",
        d.source_size()
            .map_or_else(|| "-".into(), |s| format!("{s} bytes"))
    )?;
    writeln!(out, "headers ({})", d.record.headers.len())?;
    let width = d
        .record
        .headers
        .iter()
        .map(|h| h.key.len())
        .max()
        .unwrap_or(0);
    for h in &d.record.headers {
        let value = match h.value.as_deref() {
            None => "(null)".to_string(),
            Some(v) => match std::str::from_utf8(v) {
                Ok(text) => one_line(text, 1024),
                Err(_) => format!("(hex) {}", hex(&v[..v.len().min(max_bytes)])),
            },
        };
        writeln!(out, "  {:<width$}  {value}", h.key)?;
    }
    print_bytes(out, "key", d.record.key.as_deref(), None, max_bytes)?;
    let prefix_of = d.is_prefix().then(|| d.source_size()).flatten();
    print_bytes(
        out,
        "value",
        d.record.payload.as_deref(),
        prefix_of,
        max_bytes,
    )?;
    writeln!(
        out,
        "decode now{}",
        if d.is_prefix() {
            " (of the prefix only: the record itself is at its source)"
        } else {
            ""
        }
    )?;
    let magic = match decode.magic {
        None => "- (no bytes)".to_string(),
        Some(0) => "0x00 (the Confluent framing)".to_string(),
        Some(b) => format!("0x{b:02x} (not 0: not the Confluent framing)"),
    };
    writeln!(out, "  magic byte  {magic}")?;
    writeln!(
        out,
        "  schema id   {}",
        decode
            .schema_id
            .map_or_else(|| "-".into(), |i| i.to_string())
    )?;
    let schema = match &decode.schema {
        likes_infra::kafka::dead_letter_reader::SchemaLookup::NotAvro(t) => {
            format!("not_avro (a {t} schema)")
        }
        other => other.name().to_string(),
    };
    writeln!(out, "  schema      {schema}")?;
    match &decode.outcome {
        Ok(event) => writeln!(out, "  result      ok: {}", event_text(event))?,
        Err(e) => writeln!(out, "  result      {}: {}", e.kind(), error_text(e))?,
    }
    Ok(())
}

/// Why the bytes do not decode, in words. This tool asks the registry once
/// (no grace period), so an unknown id is unknown *now*.
fn error_text(e: &DecodeError) -> String {
    match e {
        DecodeError::UnknownSchemaId { id, .. } => {
            format!("schema id {id} is unknown to the registry now")
        }
        other => other.to_string(),
    }
}

/// `name (n bytes)` and a bounded hex dump of `bytes`.
fn print_bytes(
    out: &mut impl Write,
    name: &str,
    bytes: Option<&[u8]>,
    prefix_of: Option<u64>,
    max_bytes: usize,
) -> anyhow::Result<()> {
    let Some(bytes) = bytes else {
        writeln!(out, "{name}: none")?;
        return Ok(());
    };
    match prefix_of {
        Some(size) => writeln!(
            out,
            "{name} ({} bytes: the first of the record's {size})",
            bytes.len()
        )?,
        None => writeln!(out, "{name} ({} bytes)", bytes.len())?,
    }
    for line in hexdump(bytes, max_bytes) {
        writeln!(out, "  {line}")?;
    }
    Ok(())
}

/// `hexdump -C`-style lines of the first `max` bytes of `bytes` (offset, 16
/// bytes in hex, the printable ones as text), and a line saying what was left
/// out.
fn hexdump(bytes: &[u8], max: usize) -> Vec<String> {
    let shown = &bytes[..bytes.len().min(max)];
    let mut lines: Vec<String> = shown
        .chunks(16)
        .enumerate()
        .map(|(i, chunk)| {
            let mut hex = String::new();
            for (j, b) in chunk.iter().enumerate() {
                if j == 8 {
                    hex.push(' ');
                }
                hex.push_str(&format!("{b:02x} "));
            }
            let text: String = chunk
                .iter()
                .map(|&b| {
                    if b.is_ascii_graphic() || b == b' ' {
                        b as char
                    } else {
                        '.'
                    }
                })
                .collect();
            format!("{:08x}  {hex:<49} |{text}|", i * 16)
        })
        .collect();
    if bytes.len() > shown.len() {
        lines.push(format!(
            "... {} more bytes not shown (the first {} of {}; --max-bytes shows more)",
            bytes.len() - shown.len(),
            shown.len(),
            bytes.len()
        ));
    }
    lines
}

/// Lowercase hex without separators.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn event_text(event: &LikeEvent) -> String {
    format!(
        "{} user {} item {} at {}, event id {}",
        event.action.symbol(),
        event.user_id.get(),
        event.item,
        event
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        event.event_id
    )
}

/// `dlq show --format json`: one dead letter.
#[derive(Debug, Serialize)]
struct Shown {
    dlq_partition: i32,
    dlq_offset: i64,
    time: Option<String>,
    source_topic: Option<String>,
    source_partition: Option<i32>,
    source_offset: Option<i64>,
    kind: String,
    reason: Option<String>,
    reference_reason: Option<String>,
    size: Option<u64>,
    headers: Vec<ShownHeader>,
    key: Option<ShownBytes>,
    value: Option<ShownBytes>,
    decode: ShownDecode,
}

#[derive(Debug, Serialize)]
struct ShownHeader {
    key: String,
    /// The value as text, when it is UTF-8.
    value: Option<String>,
    value_hex: Option<String>,
}

#[derive(Debug, Serialize)]
struct ShownBytes {
    /// How many bytes the dead letter holds.
    bytes: usize,
    /// How many of them `hex` shows (`--max-bytes`).
    shown: usize,
    hex: String,
    /// A reference's value: the size of the record it is a prefix of.
    prefix_of: Option<u64>,
}

impl ShownBytes {
    fn of(bytes: &[u8], prefix_of: Option<u64>, max: usize) -> Self {
        let shown = bytes.len().min(max);
        Self {
            bytes: bytes.len(),
            shown,
            hex: hex(&bytes[..shown]),
            prefix_of,
        }
    }
}

#[derive(Debug, Serialize)]
struct ShownDecode {
    magic_byte: Option<u8>,
    schema_id: Option<u32>,
    /// `found`, `not_found`, `not_avro`, `unparsable`, `unavailable` or
    /// `not_asked` (no schema id in the bytes).
    schema: &'static str,
    /// `ok`, or why not (`DecodeError::kind`).
    result: &'static str,
    error: Option<String>,
    event: Option<ShownEvent>,
    /// Whether the bytes decoded are only a prefix of the record's.
    prefix_only: bool,
}

#[derive(Debug, Serialize)]
struct ShownEvent {
    event_id: String,
    user_id: i64,
    item_type: i32,
    item_id: i64,
    action: &'static str,
    timestamp: String,
}

impl Shown {
    fn of(d: &DeadLetter, decode: &DecodeAttempt, max: usize) -> Self {
        let source = d.source();
        let prefix_of = d.is_prefix().then(|| d.source_size()).flatten();
        Self {
            dlq_partition: d.record.position.partition,
            dlq_offset: d.record.position.offset,
            time: d.time().map(|_| time_text(d)),
            source_topic: source.as_ref().and_then(|s| s.topic.clone()),
            source_partition: source.as_ref().map(|s| s.position.partition),
            source_offset: source.as_ref().map(|s| s.position.offset),
            kind: kind_text(d),
            reason: d.reason(),
            reference_reason: d.reference_reason(),
            size: d.source_size(),
            headers: d
                .record
                .headers
                .iter()
                .map(|h| ShownHeader {
                    key: h.key.clone(),
                    value: h
                        .value
                        .as_deref()
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(String::from),
                    value_hex: h.value.as_deref().map(hex),
                })
                .collect(),
            key: d
                .record
                .key
                .as_deref()
                .map(|k| ShownBytes::of(k, None, max)),
            value: d
                .record
                .payload
                .as_deref()
                .map(|v| ShownBytes::of(v, prefix_of, max)),
            decode: ShownDecode {
                magic_byte: decode.magic,
                schema_id: decode.schema_id,
                schema: decode.schema.name(),
                result: decode.result_name(),
                error: decode.outcome.as_ref().err().map(error_text),
                event: decode.outcome.as_ref().ok().map(|e| ShownEvent {
                    event_id: e.event_id.to_string(),
                    user_id: e.user_id.get(),
                    item_type: e.item.item_type.get(),
                    item_id: e.item.item_id.get(),
                    action: e.action.symbol(),
                    timestamp: e
                        .timestamp
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                }),
                prefix_only: d.is_prefix(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_partition_colon_offset() {
        assert_eq!(parse_position("0:42"), Ok((0, 42)));
        assert_eq!(parse_position(" 3 : 7 "), Ok((3, 7)));
        for bad in ["", "42", "a:1", "1:b", "-1:2", "1:-2", "1:2:3"] {
            assert!(parse_position(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_hexdump_shows_sixteen_bytes_a_line_and_says_what_it_left_out() {
        let lines = hexdump(b"hello, world", 4096);
        assert_eq!(
            lines,
            vec!["00000000  68 65 6c 6c 6f 2c 20 77  6f 72 6c 64              |hello, world|"]
        );
        let long: Vec<u8> = (0u8..=255).collect();
        let lines = hexdump(&long, 32);
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("00000010  10 11 "), "{}", lines[1]);
        assert_eq!(
            lines[2],
            "... 224 more bytes not shown (the first 32 of 256; --max-bytes shows more)"
        );
    }

    #[test]
    fn table_reasons_are_one_bounded_line() {
        assert_eq!(one_line("a\nb", 10), "a b");
        assert_eq!(one_line("abcdef", 4), "abc…");
    }
}
