//! The edges of HTTP a browser never reaches, on the real stack: a body cut
//! short of its Content-Length, a content coding the API does not decode, and
//! a produce the broker never acknowledges. Each is answered in the one error
//! shape, and the refused ones produce nothing.

use std::time::Duration;

use likes_tests::TestEnv;
use likes_tests::api::{quiet_limits, send, start_with};
use likes_tests::raw_http::send_then_half_close;
use serde_json::json;

const LIKE: &str = r#"{"user_id":1,"item_id":1,"item_type":1}"#;
const BATCH: &str = r#"{"events":[{"action":"like","user_id":1,"item_id":1,"item_type":1}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_of_its_content_length_is_a_client_error_and_produces_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let before = env.end_offsets()?;
    for (method, path, body) in [
        ("POST", "/v1/likes", LIKE),
        ("DELETE", "/v1/likes", LIKE),
        ("POST", "/v1/unlikes", LIKE),
        ("POST", "/v1/likes:batch", BATCH),
    ] {
        // The whole body is sent, but the header promises ten bytes more.
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: ingest\r\nContent-Type: application/json\r\n\
             Content-Length: {}",
            body.len() + 10
        );
        let answer = send_then_half_close(ingest.addr, &head, body.as_bytes()).await?;
        assert_eq!(answer.status, 400, "{method} {path}: {}", answer.body);
        let error = &answer.body["error"];
        assert_eq!(error["code"], "incomplete_body", "{}", answer.body);
        assert_eq!(error["field"], "Content-Length", "{}", answer.body);
        assert!(error["message"].is_string(), "{}", answer.body);
    }
    assert_eq!(
        env.end_offsets()?,
        before,
        "a cut-short body must not be produced"
    );
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_in_any_content_coding_but_identity_is_refused_and_produces_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let http = reqwest::Client::new();
    let before = env.end_offsets()?;
    for coding in ["gzip", "br", "identity, gzip", "x-unknown"] {
        for (method, path, body) in [
            ("POST", "/v1/likes", LIKE),
            ("DELETE", "/v1/likes", LIKE),
            ("POST", "/v1/unlikes", LIKE),
            ("POST", "/v1/likes:batch", BATCH),
        ] {
            // A plain JSON body, labelled as encoded.
            let answer = send(
                http.request(method.parse()?, ingest.url(path))
                    .header("content-type", "application/json")
                    .header("content-encoding", coding)
                    .body(body),
            )
            .await?;
            assert_eq!(
                answer.status, 415,
                "{coding} {method} {path}: {}",
                answer.body
            );
            let error = &answer.body["error"];
            assert_eq!(
                error["code"], "unsupported_content_encoding",
                "{}",
                answer.body
            );
            assert_eq!(error["field"], "Content-Encoding", "{}", answer.body);
            assert!(error["message"].is_string(), "{}", answer.body);
        }
    }
    assert_eq!(
        env.end_offsets()?,
        before,
        "a body in a content coding must not be produced"
    );
    // `identity` is no coding at all: the like goes through.
    let answer = send(
        http.post(ingest.url("/v1/likes"))
            .header("content-type", "application/json")
            .header("content-encoding", "identity")
            .body(LIKE),
    )
    .await?;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(env.end_offsets()?, before + 1);
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_produce_the_broker_never_acks_answers_503_with_the_event_id_to_retry_with()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    // A broker address where nothing listens: no produce is ever acknowledged.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?
    };
    let mut settings = env.ingest_settings();
    settings.stack.kafka_bootstrap = closed.to_string();
    settings.produce_timeout = Duration::from_millis(500);
    let unacked = start_with(settings, quiet_limits()).await?;
    let http = reqwest::Client::new();

    // Without an id of its own, the client learns the one the server generated.
    let answer = send(
        http.post(unacked.url("/v1/likes"))
            .json(&json!({"user_id": 7, "item_id": 3, "item_type": 1})),
    )
    .await?;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.header("retry-after"), Some("1"));
    let error = &answer.body["error"];
    assert_eq!(error["code"], "unavailable", "{}", answer.body);
    let generated = error["event_id"]
        .as_str()
        .and_then(|id| uuid::Uuid::parse_str(id).ok())
        .unwrap_or_else(|| panic!("no event_id to retry with: {}", answer.body));

    // With its own id (body or Idempotency-Key), it gets that id back.
    let own = uuid::Uuid::now_v7();
    let answer = send(
        http.delete(unacked.url("/v1/likes"))
            .header("idempotency-key", own.to_string())
            .json(&json!({"user_id": 7, "item_id": 3, "item_type": 1})),
    )
    .await?;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(answer.body["error"]["event_id"], own.to_string());

    // A batch event that is not acked carries its id in its own error.
    let answer = send(http.post(unacked.url("/v1/likes:batch")).json(&json!({
        "events": [{"action": "like", "user_id": 8, "item_id": 3, "item_type": 1}]
    })))
    .await?;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let result = &answer.body["results"][0];
    assert_eq!(result["status"], 503, "{}", answer.body);
    assert_eq!(result["error"]["code"], "unavailable", "{}", answer.body);
    assert!(
        result["error"]["event_id"]
            .as_str()
            .is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()),
        "{}",
        answer.body
    );
    unacked.running.stop().await?;

    // The retry the message asks for, once the broker is back, is logged
    // under the id the 503 gave.
    let before = env.end_offsets()?;
    let ingest = start_with(env.ingest_settings(), quiet_limits()).await?;
    let answer = send(
        http.post(ingest.url("/v1/likes"))
            .json(&json!({"user_id": 7, "item_id": 3, "item_type": 1,
                          "event_id": generated.to_string()})),
    )
    .await?;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(answer.body["event_id"], generated.to_string());
    assert_eq!(env.end_offsets()?, before + 1);
    ingest.running.stop().await?;
    Ok(())
}
