//! SIGTERM on `likes-ingest`: it stops accepting, lets the requests in flight
//! finish, flushes the producer and exits 0; every like it acked is in the log.

use std::time::Duration;

use likes_tests::TestEnv;
use likes_tests::process::IngestProcess;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_requests_in_flight_and_exits_cleanly() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = IngestProcess::start(&env).await?;
    let base = format!("http://{}", ingest.addr);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    // A burst of likes, and SIGTERM while they are on their way.
    let requests: Vec<_> = (1..=60)
        .map(|user| {
            let http = http.clone();
            let url = format!("{base}/v1/likes");
            tokio::spawn(async move {
                http.post(url)
                    .json(&json!({"user_id": user, "item_id": 3, "item_type": 1}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    let status = ingest.terminate().await?;
    assert!(status.success(), "ingest exited with {status}");
    let mut acked = 0;
    for request in requests {
        match request.await? {
            Ok(202) => acked += 1,
            Ok(other) => panic!("a request in flight was answered {other}"),
            // Refused at the door, or still in the accept queue when the listener
            // closed: never started, never produced (the equality below checks that
            // no request was cut off after producing).
            Err(_) => {}
        }
    }
    assert!(
        acked > 0,
        "the burst should have been in flight when SIGTERM came"
    );
    assert_eq!(
        env.end_offsets()?,
        acked,
        "every acked like, and only those, is in the log"
    );
    Ok(())
}
