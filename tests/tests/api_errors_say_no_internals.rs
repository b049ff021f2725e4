//! What a client is told when a dependency fails says which one, in a stable
//! code and a short message; the driver's words (addresses, ports, library
//! messages) go to the log only.

use std::time::Duration;

use likes_tests::TestEnv;
use likes_tests::api::{quiet_limits, send, start_with};

/// A loopback port nothing listens on.
fn closed_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_503_bodies_name_the_failing_part_without_its_internals() -> anyhow::Result<()>
{
    let env = TestEnv::new(2).await?;
    let kafka_port = closed_port()?;
    let db_port = closed_port()?;
    let mut settings = env.ingest_settings();
    settings.stack.kafka_bootstrap = format!("127.0.0.1:{kafka_port}");
    settings.stack.database_urls =
        vec![format!("postgres://likes:secret@127.0.0.1:{db_port}/likes")];
    settings.produce_timeout = Duration::from_millis(500);
    let ingest = start_with(settings, quiet_limits()).await?;
    let http = reqwest::Client::new();

    let ready = send(http.get(ingest.url("/readyz"))).await?;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(ready.body["checks"]["kafka"]["status"], "down");
    assert_eq!(ready.body["checks"]["kafka"]["error"], "unreachable");
    assert_eq!(ready.body["checks"]["redis"]["status"], "ok");

    // A count Redis does not hold is read from PostgreSQL, which is away.
    let read = send(http.get(ingest.url("/v1/items/1/424242/count"))).await?;
    assert_eq!(read.status, 503, "{}", read.body);
    assert_eq!(read.body["error"]["code"], "unavailable");
    assert_eq!(read.body["error"]["message"], "count store unavailable");

    for (what, body) in [("readyz", &ready.body), ("count", &read.body)] {
        let text = body.to_string();
        for secret in [
            kafka_port.to_string(),
            db_port.to_string(),
            "127.0.0.1".to_string(),
            "secret".to_string(),
        ] {
            assert!(
                !text.contains(&secret),
                "{what} body leaks {secret:?}: {text}"
            );
        }
    }
    ingest.running.stop().await?;
    Ok(())
}
