//! The event schema can evolve without breaking the log: `setup` holds the
//! value subject at FULL_TRANSITIVE, a new version that adds an optional field
//! with a default passes `schema check` and is registered, and events written
//! with either version are all counted and shown by `history`. A version that
//! removes a field or changes a field's type is refused by `schema check` and
//! by `setup`, each naming the change, and nothing is registered.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use apache_avro::Schema;
use apache_avro::types::Value;
use likes_infra::archive::Archive;
use likes_infra::registry::{self, Registry};
use likes_tests::cli::likes_replay;
use likes_tests::dead_letters::read_dead_letters;
use likes_tests::process::repo_root;
use likes_tests::{TestEnv, eventually};
use rdkafka::producer::{FutureProducer, FutureRecord};

const ITEM: i64 = 10;

fn fixture(name: &str) -> anyhow::Result<String> {
    let path: PathBuf = repo_root().join("tests/fixtures").join(name);
    anyhow::ensure!(path.exists(), "no fixture {}", path.display());
    Ok(path.display().to_string())
}

fn said(output: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The schema id `setup` printed ("schema id N is version V of W").
fn registered_id(output: &Output) -> anyhow::Result<u32> {
    let text = stdout(output);
    let id = text
        .lines()
        .find_map(|l| l.split("schema id ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| anyhow::anyhow!("setup printed no schema id: {}", said(output)))?;
    Ok(id.parse()?)
}

/// A like or unlike of ITEM by `user`, written the way a v2 ingest would:
/// apache-avro's generic writer with the v2 schema, Confluent framing.
fn v2_record(
    schema: &Schema,
    schema_id: u32,
    event_id: uuid::Uuid,
    user: i64,
    like: bool,
    source: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    let value = Value::Record(vec![
        ("event_id".into(), Value::Uuid(event_id)),
        ("user_id".into(), Value::Long(user)),
        ("item_id".into(), Value::Long(ITEM)),
        ("item_type".into(), Value::Int(1)),
        (
            "action".into(),
            if like {
                Value::Enum(0, "LIKE".into())
            } else {
                Value::Enum(1, "UNLIKE".into())
            },
        ),
        (
            "timestamp".into(),
            Value::TimestampMillis(chrono::Utc::now().timestamp_millis()),
        ),
        (
            "source".into(),
            match source {
                Some(s) => Value::Union(1, Box::new(Value::String(s.into()))),
                None => Value::Union(0, Box::new(Value::Null)),
            },
        ),
    ]);
    let body = apache_avro::writer::datum::GenericDatumWriter::builder(schema)
        .build()?
        .write_value_to_vec(value)?;
    let mut framed = vec![0];
    framed.extend_from_slice(&schema_id.to_be_bytes());
    framed.extend_from_slice(&body);
    Ok(framed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_before_and_after_an_added_optional_field_are_all_counted_and_shown()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let v2_file = fixture("like_event_v2_source.avsc")?;

    let setup = likes_replay(&env, &["setup", "--partitions", "2"]).await?;
    assert!(setup.status.success(), "{}", said(&setup));
    assert!(
        stdout(&setup).contains("compatibility FULL_TRANSITIVE"),
        "setup says the level it set: {}",
        said(&setup)
    );
    let v1_id = registered_id(&setup)?;

    // Before the change: users 1, 2, 3 like the item through the API (v1).
    let ingest = env.start_ingest().await?;
    for user in [1, 2, 3] {
        ingest.like(user, ITEM).await?;
    }

    // The gate: v2 is compatible and reads every v1 record to the same event.
    let check = likes_replay(&env, &["schema", "check", &v2_file]).await?;
    assert_eq!(check.status.code(), Some(0), "{}", said(&check));
    let text = stdout(&check);
    assert!(text.contains("registry: compatible"), "{}", said(&check));
    assert!(
        text.contains(&format!(
            "schema id {v1_id}: 3 record(s): 3 decode to the same event, 0 fail"
        )),
        "{}",
        said(&check)
    );

    // Register v2, then write with it: users 4 and 5 like, user 1 unlikes.
    let setup_v2 =
        likes_replay(&env, &["setup", "--partitions", "2", "--schema", &v2_file]).await?;
    assert!(setup_v2.status.success(), "{}", said(&setup_v2));
    let v2_id = registered_id(&setup_v2)?;
    assert_ne!(v2_id, v1_id, "v2 is a new schema id");
    let versions = Registry::new(&env.stack.schema_registry_url)?
        .versions(&registry::value_subject(&env.stack.topic))
        .await?;
    assert_eq!(
        versions.iter().map(|v| v.id).collect::<Vec<_>>(),
        vec![v1_id, v2_id]
    );

    let v2_schema = Schema::parse_str(&std::fs::read_to_string(&v2_file)?)?;
    let producer: FutureProducer =
        likes_infra::kafka::producer(&env.stack.kafka_bootstrap, Duration::from_secs(10))?;
    let mut v2_events = Vec::new();
    for (user, like, source) in [
        (4, true, Some("mobile")),
        (5, true, None),
        (1, false, Some("web")),
    ] {
        let event_id = uuid::Uuid::now_v7();
        v2_events.push(event_id.to_string());
        let payload = v2_record(&v2_schema, v2_id, event_id, user, like, source)?;
        producer
            .send(
                FutureRecord::to(&env.stack.topic)
                    .key(&likes_infra::kafka::item_key(ITEM))
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| anyhow::anyhow!("produce v2: {e}"))?;
    }
    // An ingest of the older build keeps writing v1 after v2 is registered.
    ingest.like(6, ITEM).await?;
    ingest.running.stop().await?;

    // The projector counts every event of both versions: 3 + 2 - 1 + 1.
    let projector = env.start_projector();
    eventually(Duration::from_secs(60), || async {
        Ok(env.db_count(1, ITEM).await? == 5)
    })
    .await?;
    projector.stop().await??;
    assert_eq!(env.db_count(1, ITEM).await?, 5);
    assert_eq!(env.db_likers(1, ITEM).await?, 5);
    assert!(
        read_dead_letters(&env, 1, Duration::from_secs(2))?.is_empty(),
        "no event of either version is poison"
    );

    // `history` shows the events of both versions, in order, with their effect.
    let history = likes_replay(
        &env,
        &[
            "history",
            "item",
            "1",
            &ITEM.to_string(),
            "--format",
            "json",
        ],
    )
    .await?;
    assert!(history.status.success(), "{}", said(&history));
    let rows: Vec<serde_json::Value> = stdout(&history)
        .lines()
        .filter(|l| l.contains("\"event_id\""))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let users: Vec<i64> = rows.iter().filter_map(|r| r["user_id"].as_i64()).collect();
    assert_eq!(users, vec![1, 2, 3, 4, 5, 1, 6], "{}", said(&history));
    for event_id in &v2_events {
        assert!(
            rows.iter().any(|r| r["event_id"] == event_id.as_str()),
            "history shows the v2 event {event_id}: {}",
            said(&history)
        );
    }
    assert_eq!(rows[5]["effect"], "unliked", "{}", said(&history));
    assert_eq!(rows.last().map(|r| r["count"].clone()), Some(5.into()));

    // The archive keeps both versions, each file under its writer schema.
    likes_tests::archive::archive_everything(&env).await?;
    let archive = Archive::open(&env.stack.archive_url, &env.stack.topic)?;
    let partition = likes_infra::kafka::partitioner::partition_for_item(ITEM, env.partitions);
    let mut archived_ids = std::collections::BTreeSet::new();
    for name in archive.coverage(partition).await?.files {
        archived_ids.extend(archive.read(partition, name).await?.schema_id);
    }
    assert_eq!(
        archived_ids,
        [v1_id, v2_id].into_iter().collect(),
        "the archive holds both schema ids"
    );

    // The check now samples records of both ids, from the archive and the
    // topic, and still passes.
    let check = likes_replay(&env, &["schema", "check", &v2_file]).await?;
    likes_tests::archive::remove(&env);
    assert_eq!(check.status.code(), Some(0), "{}", said(&check));
    let text = stdout(&check);
    println!("schema check after both versions were written:\n{text}");
    assert!(
        text.contains(&format!(
            "schema id {v1_id}: 8 record(s): 8 decode to the same event, 0 fail"
        )) && text.contains(&format!(
            "schema id {v2_id}: 6 record(s): 6 decode to the same event, 0 fail"
        )) && text.contains("sampled 7 records"),
        "{}",
        said(&check)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_field_or_a_changed_type_is_refused_by_schema_check_and_by_setup()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let setup = likes_replay(&env, &["setup", "--partitions", "2"]).await?;
    assert!(setup.status.success(), "{}", said(&setup));
    let v1_id = registered_id(&setup)?;
    let ingest = env.start_ingest().await?;
    for user in [1, 2] {
        ingest.like(user, ITEM).await?;
    }
    ingest.running.stop().await?;

    for (file, change) in [
        (
            "like_event_item_type_removed.avsc",
            "field `item_type` removed",
        ),
        (
            "like_event_user_id_as_string.avsc",
            "field `user_id` changed type long -> string",
        ),
    ] {
        let file = fixture(file)?;
        let check = likes_replay(&env, &["schema", "check", &file]).await?;
        assert_eq!(check.status.code(), Some(1), "{}", said(&check));
        let text = stdout(&check);
        println!("schema check of {file}:\n{text}");
        assert!(
            text.contains(&format!("incompatible: {change}")),
            "{}",
            said(&check)
        );
        assert!(
            text.contains("INCOMPATIBLE (the registry refuses it)"),
            "{}",
            said(&check)
        );
        // The log gate fails too: the build's records do not read as the
        // candidate's events.
        assert!(
            text.contains(&format!(
                "schema id {v1_id}: 2 record(s): 0 decode to the same event, 2 fail"
            )),
            "{}",
            said(&check)
        );
        assert!(text.contains(&format!("FAIL {file}")), "{}", said(&check));

        let refused =
            likes_replay(&env, &["setup", "--partitions", "2", "--schema", &file]).await?;
        assert_eq!(refused.status.code(), Some(1), "{}", said(&refused));
        let error = String::from_utf8_lossy(&refused.stderr);
        assert!(
            error.contains("setup refused") && error.contains(change),
            "{}",
            said(&refused)
        );
    }

    // Nothing was registered: the subject still has only the build's schema.
    let versions = Registry::new(&env.stack.schema_registry_url)?
        .versions(&registry::value_subject(&env.stack.topic))
        .await?;
    assert_eq!(
        versions.iter().map(|v| v.id).collect::<Vec<_>>(),
        vec![v1_id]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_whose_schema_the_registry_refuses_does_not_start_and_names_the_change()
-> anyhow::Result<()> {
    let env = TestEnv::new(1).await?;
    let registry = Registry::new(&env.stack.schema_registry_url)?;
    let subject = registry::value_subject(&env.stack.topic);
    // Someone registered, before any gate, a version with a required field
    // `client`; then the gate was set. This build's schema lacks `client`.
    let mut schema: serde_json::Value = serde_json::from_str(likes_infra::codec::SCHEMA)?;
    if let Some(fields) = schema["fields"].as_array_mut() {
        fields.push(serde_json::json!({"name": "client", "type": "string"}));
    }
    registry.register(&subject, &schema.to_string()).await?;
    registry
        .set_compatibility(&subject, registry::COMPATIBILITY)
        .await?;

    let codec =
        likes_infra::codec::EventCodec::new(&env.stack.schema_registry_url, &env.stack.topic)?;
    let refused = match codec.register().await {
        Ok(id) => anyhow::bail!("the registry took the build's schema as id {id}"),
        Err(e) => e,
    };
    assert!(
        !refused.is_transient(),
        "a refusal is not an outage to retry: {refused}"
    );
    assert!(
        refused.to_string().contains("field `client` removed"),
        "the refusal names the change: {refused}"
    );
    match env.start_ingest().await {
        Ok(_) => anyhow::bail!("the ingest started with a refused schema"),
        Err(e) => assert!(
            format!("{e:#}").contains("field `client` removed"),
            "the ingest says why it does not start: {e:#}"
        ),
    }
    Ok(())
}
