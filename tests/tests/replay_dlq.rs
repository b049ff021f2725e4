//! `likes-replay dlq list|show` let an operator look at the dead-letter topic
//! without writing code: real poison records (not framed, an unknown schema
//! id, garbage after a valid header, one too large to go whole) are
//! dead-lettered by a real projector while the likes around them are counted,
//! and the real binary then lists them with their source offsets, kinds,
//! reasons, sizes and decode results, and shows each one's headers, bytes as
//! hex (equal to what was produced) and decode attempt. A dead letter whose
//! bytes are a good event (as one dead-lettered while the registry was behind
//! would be) decodes now, and says so. Bad input is a message and a non-zero
//! exit.

use std::time::Duration;

use likes_domain::{Action, EventId, ItemKey, LikeEvent, Position, UserId};
use likes_infra::codec::EventCodec;
use likes_infra::kafka::consumer::Record;
use likes_infra::kafka::dead_letters::{DeadLetters, Sent, header};
use likes_infra::kafka::partitioner::partition_for_item;
use likes_tests::cli::{likes_replay, likes_replay_command, output};
use likes_tests::dead_letters::{frame, garbage};
use likes_tests::dead_letters::{limit_dead_letter_size, read_dead_letters};
use likes_tests::{TestEnv, eventually};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

const ITEM: i64 = 7070;
const PARTITIONS: i32 = 2;
/// Just under the broker's default `message.max.bytes`.
const HUGE: usize = 999_900;
/// What the test's dead-letter topic accepts: less than the huge record.
const DLQ_MAX_BYTES: usize = 256 * 1024;
/// A schema id no registry of this stack hands out.
const UNKNOWN_ID: u32 = 2_000_000_000;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Produces `payload` keyed by the item; where it landed.
async fn produce(
    producer: &FutureProducer,
    env: &TestEnv,
    payload: &[u8],
) -> anyhow::Result<Position> {
    let key = ITEM.to_string();
    let delivery = producer
        .send(
            FutureRecord::to(&env.stack.topic)
                .key(&key)
                .payload(payload),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("produce: {e}"))?;
    Ok(Position {
        partition: delivery.partition,
        offset: delivery.offset,
    })
}

/// `likes-replay <args>`: its stdout, failing unless it exited 0.
async fn run_ok(env: &TestEnv, args: &[&str]) -> anyhow::Result<String> {
    let out = likes_replay(env, args).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!("$ likes-replay {}\n{stdout}{stderr}", args.join(" "));
    anyhow::ensure!(out.status.success(), "{args:?}: {}: {stderr}", out.status);
    Ok(stdout)
}

/// `likes-replay <args>` that must fail: its exit code and stderr.
async fn run_failing(env: &TestEnv, args: &[&str]) -> anyhow::Result<(i32, String)> {
    let out = likes_replay(env, args).await?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    println!(
        "$ likes-replay {} -> {}\n{stderr}",
        args.join(" "),
        out.status
    );
    Ok((out.status.code().unwrap_or(-1), stderr))
}

fn json_lines(text: &str) -> anyhow::Result<Vec<Value>> {
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

/// One poison record as produced, and what `dlq list` must say of it.
struct Poison {
    what: &'static str,
    payload: Vec<u8>,
    at: Position,
    kind: &'static str,
    decode: &'static str,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_and_show_describe_every_dead_letter_with_its_source_reason_bytes_and_decode()
-> anyhow::Result<()> {
    let env = TestEnv::new(PARTITIONS).await?;
    limit_dead_letter_size(&env, DLQ_MAX_BYTES).await?;
    let partition = partition_for_item(ITEM, PARTITIONS);
    let ingest = env.start_ingest().await?;
    let codec = EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?;
    let schema_id = codec.register().await?;
    let producer: FutureProducer =
        likes_infra::kafka::producer(&env.stack.kafka_bootstrap, Duration::from_secs(10))?;

    // Likes of the item before and after the poison, all on its partition.
    for user in 1..=3 {
        ingest.like(user, ITEM).await?;
    }
    // A good event produced directly: counted like the others, and later
    // dead-lettered by hand as a projector behind a lagging registry would.
    let good = LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(4)?,
        item: ItemKey::parse(1, ITEM)?,
        action: Action::Like,
        timestamp: chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis())
            .unwrap_or_default(),
    };
    let good_bytes = codec.encode(&good).await?;
    let good_at = produce(&producer, &env, &good_bytes).await?;
    let mut poison = vec![
        Poison {
            what: "not framed",
            payload: b"hello, world".to_vec(),
            at: good_at,
            kind: "whole",
            decode: "not_framed",
        },
        Poison {
            what: "unknown schema id",
            payload: frame(UNKNOWN_ID, &[2, 4, 6]),
            at: good_at,
            kind: "whole",
            decode: "unknown_schema",
        },
        Poison {
            what: "garbage after a valid header",
            payload: frame(schema_id, &[0xff, 0xff, 0xff, 0xff, 0xff, 0x01, b'x']),
            at: good_at,
            kind: "whole",
            decode: "malformed",
        },
        Poison {
            what: "too large to go whole",
            payload: garbage(HUGE),
            at: good_at,
            kind: "reference",
            // The prefix kept is the garbage's start: not framed either.
            decode: "not_framed",
        },
    ];
    for p in &mut poison {
        p.at = produce(&producer, &env, &p.payload).await?;
        assert_eq!(p.at.partition, partition, "{}", p.what);
    }
    for user in 5..=6 {
        ingest.like(user, ITEM).await?;
    }

    // The projector dead-letters the poison and counts every like around it
    // (the unknown id is asked for during the whole grace period first).
    let projector = env.start_projector();
    let grace = likes_infra::settings::DEFAULT_UNKNOWN_SCHEMA_RETRY_SECONDS;
    eventually(Duration::from_secs(60 + grace), || async {
        Ok(env.db_count(1, ITEM).await? == 6)
    })
    .await?;
    let dead = read_dead_letters(&env, poison.len(), Duration::from_secs(30))?;
    assert_eq!(
        dead.len(),
        poison.len(),
        "every poison record dead-lettered"
    );
    projector.stop().await??;
    let counted = env.db_count(1, ITEM).await?;
    println!("figures: acked 6 likes, counted {counted}, lost 0, double-counted 0");
    assert_eq!(counted, 6);

    // The good record's dead letter, written by the real writer.
    let key = ITEM.to_string();
    DeadLetters::new(&env.stack.kafka_bootstrap, env.stack.dlq_topic())?
        .send(
            &Record {
                topic: env.stack.topic.clone(),
                position: good_at,
                timestamp_ms: None,
                key: Some(key.as_bytes().to_vec()),
                payload: Some(good_bytes.clone()),
                headers: Vec::new(),
            },
            "poison record: the registry did not know the schema id yet",
        )
        .await?;

    // `dlq list --format json`: one line per dead letter, in order.
    let rows = json_lines(&run_ok(&env, &["dlq", "list", "--format", "json"]).await?)?;
    assert_eq!(rows.len(), poison.len() + 1, "{rows:?}");
    for (i, (p, row)) in poison.iter().zip(&rows).enumerate() {
        let what = p.what;
        assert_eq!(row["dlq_partition"], 0, "{what}");
        assert_eq!(row["dlq_offset"], i as i64, "{what}");
        assert!(row["time"].is_string(), "{what}: {row}");
        assert_eq!(row["source_topic"], env.stack.topic.as_str(), "{what}");
        assert_eq!(row["source_partition"], p.at.partition, "{what}");
        assert_eq!(row["source_offset"], p.at.offset, "{what}");
        assert_eq!(row["kind"], p.kind, "{what}");
        assert_eq!(row["size"], p.payload.len() as u64, "{what}");
        assert_eq!(row["decode"], p.decode, "{what}");
        let reason = row["reason"].as_str().unwrap_or_default();
        assert!(reason.starts_with("poison record: "), "{what}: {reason}");
    }
    let reasons: Vec<&str> = rows
        .iter()
        .map(|r| r["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(
        reasons[0].contains("Confluent wire format"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains(&UNKNOWN_ID.to_string()),
        "{}",
        reasons[1]
    );
    assert!(
        reasons[2].contains(&format!("schema id {schema_id}")),
        "{}",
        reasons[2]
    );
    let last = &rows[poison.len()];
    assert_eq!(
        (&last["source_offset"], &last["kind"], &last["decode"]),
        (
            &Value::from(good_at.offset),
            &Value::from("whole"),
            &Value::from("ok")
        ),
        "a dead letter whose bytes are a good event decodes now: {last}"
    );

    // The table: a header, one row per dead letter with the same cells, a total.
    let table = run_ok(&env, &["dlq", "list"]).await?;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["DLQ", "TIME", "SOURCE", "KIND", "SIZE", "DECODE", "REASON"]
    );
    for (i, p) in poison.iter().enumerate() {
        let cells: Vec<&str> = lines[i + 1].split_whitespace().collect();
        let source = format!("{}:{}", p.at.partition, p.at.offset);
        let size = p.payload.len().to_string();
        assert_eq!(
            cells[..7],
            [
                format!("0:{i}").as_str(),
                cells[1],
                source.as_str(),
                p.kind,
                size.as_str(),
                p.decode,
                "poison"
            ],
            "{}: {}",
            p.what,
            lines[i + 1]
        );
    }
    assert_eq!(
        lines.last().copied(),
        Some(format!("5 dead letter(s) of {}", env.stack.dlq_topic()).as_str())
    );

    // --limit stops and says where the rest starts; --from-offset starts there.
    let limited = run_ok(&env, &["dlq", "list", "--limit", "2"]).await?;
    assert_eq!(limited.lines().count(), 4, "{limited}");
    assert!(
        limited.ends_with("more from 0:2: --partition 0 --from-offset 2\n"),
        "{limited}"
    );
    let rest = json_lines(
        &run_ok(
            &env,
            &[
                "dlq",
                "list",
                "--partition",
                "0",
                "--from-offset",
                "2",
                "--format",
                "json",
            ],
        )
        .await?,
    )?;
    let offsets: Vec<&Value> = rest.iter().map(|r| &r["dlq_offset"]).collect();
    assert_eq!(
        offsets,
        [2, 3, 4].map(Value::from).iter().collect::<Vec<_>>()
    );

    // `dlq show` of the unframed one: every header, the bytes, each decode step.
    let shown = json_lines(&run_ok(&env, &["dlq", "show", "0:0", "--format", "json"]).await?)?;
    assert_eq!(shown.len(), 1);
    let s = &shown[0];
    assert_eq!(s["value"]["hex"], hex(b"hello, world"));
    assert_eq!(s["value"]["bytes"], 12);
    assert_eq!(s["key"]["hex"], hex(key.as_bytes()));
    let header_of = |s: &Value, name: &str| {
        s["headers"]
            .as_array()
            .and_then(|hs| hs.iter().find(|h| h["key"] == name))
            .map(|h| h["value"].clone())
    };
    assert_eq!(
        header_of(s, header::SOURCE_OFFSET),
        Some(Value::from(poison[0].at.offset.to_string()))
    );
    assert_eq!(
        header_of(s, header::KIND),
        Some(Value::from(Sent::Whole.header_value()))
    );
    assert_eq!(
        (
            &s["decode"]["magic_byte"],
            &s["decode"]["schema_id"],
            &s["decode"]["schema"],
            &s["decode"]["result"]
        ),
        (
            &Value::from(b'h'),
            &Value::Null,
            &Value::from("not_asked"),
            &Value::from("not_framed")
        )
    );

    // ...of the unknown id and of the garbage after a valid header.
    let s = &json_lines(&run_ok(&env, &["dlq", "show", "0:1", "--format", "json"]).await?)?[0];
    assert_eq!(s["value"]["hex"], hex(&poison[1].payload));
    assert_eq!(
        (
            &s["decode"]["magic_byte"],
            &s["decode"]["schema_id"],
            &s["decode"]["schema"]
        ),
        (
            &Value::from(0),
            &Value::from(UNKNOWN_ID),
            &Value::from("not_found")
        )
    );
    assert_eq!(
        s["decode"]["error"],
        format!("schema id {UNKNOWN_ID} is unknown to the registry now")
    );
    let s = &json_lines(&run_ok(&env, &["dlq", "show", "0:2", "--format", "json"]).await?)?[0];
    assert_eq!(
        (
            &s["decode"]["schema_id"],
            &s["decode"]["schema"],
            &s["decode"]["result"]
        ),
        (
            &Value::from(schema_id),
            &Value::from("found"),
            &Value::from("malformed")
        )
    );

    // The reference, found by its source position: a bounded prefix, the size.
    let huge = &poison[3];
    let source = format!("{}:{}", huge.at.partition, huge.at.offset);
    let s = &json_lines(
        &run_ok(
            &env,
            &["dlq", "show", "--source", &source, "--format", "json"],
        )
        .await?,
    )?[0];
    assert_eq!(s["kind"], "reference");
    assert_eq!(s["size"], HUGE as u64);
    assert_eq!(s["value"]["bytes"], 1024);
    assert_eq!(s["value"]["prefix_of"], HUGE as u64);
    assert_eq!(s["value"]["hex"], hex(&huge.payload[..1024]));
    assert_eq!(s["decode"]["prefix_only"], true);
    assert!(
        s["reference_reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{s}"
    );

    // The text form: a hexdump bounded by --max-bytes, saying what it left out.
    let text = run_ok(
        &env,
        &["dlq", "show", "--source", &source, "--max-bytes", "64"],
    )
    .await?;
    assert!(
        text.contains(&format!(
            "value (1024 bytes: the first of the record's {HUGE})"
        )),
        "{text}"
    );
    assert!(
        text.contains("  00000000  67 61 72 62 61 67 65 3a "),
        "{text}"
    );
    assert!(
        text.contains("... 960 more bytes not shown (the first 64 of 1024;"),
        "{text}"
    );
    let text = run_ok(&env, &["dlq", "show", "0:0"]).await?;
    assert!(
        text.contains("  magic byte  0x68 (not 0: not the Confluent framing)"),
        "{text}"
    );
    assert!(
        text.contains("  result      not_framed: not in the Confluent wire format"),
        "{text}"
    );

    // The good one decodes now, to the event that was produced.
    let s = &json_lines(&run_ok(&env, &["dlq", "show", "0:4", "--format", "json"]).await?)?[0];
    assert_eq!(s["decode"]["result"], "ok");
    assert_eq!(s["decode"]["event"]["event_id"], good.event_id.to_string());
    assert_eq!(s["decode"]["event"]["user_id"], 4);
    assert_eq!(s["decode"]["event"]["item_id"], ITEM);
    assert_eq!(s["decode"]["event"]["action"], "LIKE");

    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_commands_refuse_bad_input_with_a_message_and_a_non_zero_exit() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let dlq = env.stack.dlq_topic();

    let (code, stderr) = run_failing(&env, &["dlq", "show", "zero:one"]).await?;
    assert_eq!(code, 2, "a usage error");
    assert!(stderr.contains("expected <partition>:<offset>"), "{stderr}");

    let (code, stderr) = run_failing(&env, &["dlq", "show"]).await?;
    assert_eq!(code, 2, "a usage error");
    assert!(stderr.contains("--source"), "{stderr}");

    let (code, stderr) = run_failing(&env, &["dlq", "show", "0:0"]).await?;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "no dead letter at 0:0: partition 0 of {dlq} holds no record"
        )),
        "{stderr}"
    );

    let (code, stderr) = run_failing(&env, &["dlq", "show", "3:0"]).await?;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!("partition 3: {dlq} has partitions 0 to 0")),
        "{stderr}"
    );

    let (code, stderr) = run_failing(&env, &["dlq", "list", "--partition", "1"]).await?;
    assert_eq!(code, 1);
    assert!(stderr.contains("partition 1:"), "{stderr}");

    let (code, stderr) = run_failing(&env, &["dlq", "show", "--source", "0:12"]).await?;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "no dead letter of {} partition 0 offset 12 in {dlq}",
            env.stack.topic
        )),
        "{stderr}"
    );

    let (code, stderr) = run_failing(&env, &["dlq", "list", "--limit", "0"]).await?;
    assert_eq!(code, 2);
    assert!(stderr.contains("--limit"), "{stderr}");

    // A topic whose dead-letter topic was never created.
    let mut command = likes_replay_command(&env, &["dlq", "list"])?;
    let missing = format!("no-such-topic-{}", env.suffix);
    command.env("KAFKA_TOPIC", &missing);
    let out = output(command).await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "$ KAFKA_TOPIC={missing} likes-replay dlq list -> {}\n{stderr}",
        out.status
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!("topic {missing}.dlq does not exist")),
        "{stderr}"
    );

    // An empty dead-letter topic lists nothing, and says so.
    let empty = run_ok(&env, &["dlq", "list"]).await?;
    assert!(
        empty.ends_with(&format!("0 dead letter(s) of {dlq}\n")),
        "{empty}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_still_lists_every_dead_letter_while_the_registry_is_away() -> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let codec = EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?;
    let good = LikeEvent {
        event_id: EventId::generate(),
        user_id: UserId::parse(9)?,
        item: ItemKey::parse(1, ITEM)?,
        action: Action::Unlike,
        timestamp: chrono::Utc::now(),
    };
    let framed = codec.encode(&good).await?;
    let writer = DeadLetters::new(&env.stack.kafka_bootstrap, env.stack.dlq_topic())?;
    for (offset, payload) in [b"not framed".to_vec(), framed.clone(), framed]
        .into_iter()
        .enumerate()
    {
        let record = Record {
            topic: env.stack.topic.clone(),
            position: Position {
                partition: 0,
                offset: offset as i64,
            },
            timestamp_ms: None,
            key: None,
            payload: Some(payload),
            headers: Vec::new(),
        };
        writer.send(&record, "poison record: a test's").await?;
    }

    // A registry address nothing listens on.
    let away = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut command = likes_replay_command(&env, &["dlq", "list", "--format", "json"])?;
    command.env(
        "SCHEMA_REGISTRY_URL",
        format!("http://{away}/apis/ccompat/v7"),
    );
    let out = output(command).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "$ SCHEMA_REGISTRY_URL=http://{away}/... likes-replay dlq list --format json -> {}\n{stdout}{stderr}",
        out.status,
    );
    assert!(out.status.success());
    // Asked once: the later framed record is not sent to it again (each ask
    // of a registry that hangs would wait out its timeout).
    assert_eq!(
        stderr
            .matches("the schema registry cannot be asked; later framed records are not decoded")
            .count(),
        1,
        "{stderr}"
    );
    let rows = json_lines(&stdout)?;
    let decoded: Vec<&Value> = rows.iter().map(|r| &r["decode"]).collect();
    assert_eq!(
        decoded,
        ["not_framed", "registry_unavailable", "registry_unavailable"]
            .map(Value::from)
            .iter()
            .collect::<Vec<_>>()
    );
    let sources: Vec<&Value> = rows.iter().map(|r| &r["source_offset"]).collect();
    assert_eq!(
        sources,
        [0, 1, 2].map(Value::from).iter().collect::<Vec<_>>()
    );

    // With the registry back, the same bytes decode.
    let rows = json_lines(&run_ok(&env, &["dlq", "list", "--format", "json"]).await?)?;
    let decoded: Vec<&Value> = rows.iter().map(|r| &r["decode"]).collect();
    assert_eq!(
        decoded,
        ["not_framed", "ok", "ok"]
            .map(Value::from)
            .iter()
            .collect::<Vec<_>>()
    );
    Ok(())
}
