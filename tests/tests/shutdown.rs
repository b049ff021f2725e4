//! SIGTERM on `likes-ingest`: it stops accepting, lets the requests in flight
//! finish, flushes the producer and exits 0; every like it acked is in the log
//! exactly once, and nothing it did not ack is.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use apache_avro::types::Value;
use likes_tests::TestEnv;
use likes_tests::process::IngestProcess;
use likes_tests::topic::read_all;
use serde_json::json;
use uuid::Uuid;

/// One request a client made: when it left, when its answer came, what it was.
struct Sent {
    event_id: Uuid,
    started: Instant,
    answered: Instant,
    status: Option<u16>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_every_request_in_flight_and_each_acked_like_is_in_the_log()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = IngestProcess::start(&env).await?;
    let base = format!("http://{}", ingest.addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    // Sixteen clients send likes back to back until the service is gone, so
    // there are always requests on their way when the signal comes.
    let clients: Vec<_> = (0..16i64)
        .map(|client| {
            let http = http.clone();
            let url = format!("{base}/v1/likes");
            tokio::spawn(async move {
                let mut sent = Vec::new();
                for n in 0..10_000i64 {
                    let event_id = Uuid::new_v4();
                    let started = Instant::now();
                    let answer = http
                        .post(&url)
                        .json(&json!({
                            "user_id": 1 + client * 10_000 + n,
                            "item_id": 1 + n % 5,
                            "item_type": 1,
                            "event_id": event_id,
                        }))
                        .send()
                        .await;
                    let status = answer.as_ref().ok().map(|r| r.status().as_u16());
                    sent.push(Sent {
                        event_id,
                        started,
                        answered: Instant::now(),
                        status,
                    });
                    if status.is_none() {
                        break;
                    }
                }
                sent
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = ingest.pid().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    tokio::process::Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status()
        .await?;
    let signalled = Instant::now();
    let status = ingest.terminate().await?;
    assert!(status.success(), "ingest exited with {status}");

    let mut sent = Vec::new();
    for client in clients {
        sent.extend(client.await?);
    }
    // Answered after the signal was delivered, sent before: in flight at SIGTERM.
    let in_flight: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.started < signalled && s.answered > signalled && s.status.is_some())
        .collect();
    let acked: HashMap<Uuid, ()> = sent
        .iter()
        .filter(|s| s.status == Some(202))
        .map(|s| (s.event_id, ()))
        .collect();
    println!(
        "FIGURES | ingest SIGTERM | {} requests, {} acked, {} in flight at the signal",
        sent.len(),
        acked.len(),
        in_flight.len()
    );
    assert!(
        !in_flight.is_empty(),
        "sixteen busy clients must have had requests in flight"
    );
    for s in &in_flight {
        assert_eq!(s.status, Some(202), "a request in flight must be finished");
    }
    for s in &sent {
        assert!(
            matches!(s.status, Some(202) | None),
            "answered {:?}: only 202 or a refused connection",
            s.status
        );
    }
    let log = read_all(
        &env.stack.kafka_bootstrap,
        &env.stack.schema_registry_url,
        &env.stack.topic,
        env.partitions,
    )
    .await?;
    let mut logged: HashMap<String, usize> = HashMap::new();
    for record in &log {
        let id = match &record.value {
            Value::Record(fields) => match fields.iter().find(|(name, _)| name == "event_id") {
                Some((_, Value::Uuid(id))) => id.to_string(),
                Some((_, Value::String(id))) => id.clone(),
                other => anyhow::bail!("record without an event id: {other:?}"),
            },
            other => anyhow::bail!("not a record: {other:?}"),
        };
        *logged.entry(id).or_default() += 1;
    }
    assert_eq!(log.len(), acked.len(), "the log holds the acked likes only");
    for id in acked.keys() {
        assert_eq!(
            logged.get(&id.to_string()),
            Some(&1),
            "acked like {id} is in the log once"
        );
    }
    Ok(())
}
