//! Probes, metrics and the limits every route shares, on the real stack:
//! /healthz, /readyz, /metrics (labelled by route template, never by id),
//! 404/405/413/415 in the one error shape.

use likes_ingest::Limits;
use likes_tests::TestEnv;
use likes_tests::api::{quiet_limits, send, start_ingest};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_and_metrics_count_requests_by_route_template_not_by_id() -> anyhow::Result<()>
{
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, quiet_limits()).await?;
    let http = reqwest::Client::new();
    let health = send(http.get(ingest.url("/healthz"))).await?;
    assert_eq!(
        (health.status, health.body["status"].clone()),
        (200, json!("ok"))
    );
    let ready = send(http.get(ingest.url("/readyz"))).await?;
    assert_eq!(ready.status, 200, "{}", ready.body);
    for check in ["kafka", "schema_registry", "redis"] {
        assert_eq!(
            ready.body["checks"][check]["status"], "ok",
            "{}",
            ready.body
        );
    }
    send(http.get(ingest.url("/v1/items/1/987654321/count"))).await?;
    send(
        http.post(ingest.url("/v1/likes"))
            .json(&json!({"user_id": 0, "item_id": 1, "item_type": 1})),
    )
    .await?;

    let response = http.get(ingest.url("/metrics")).send().await?;
    assert_eq!(response.status(), 200);
    let text = response.text().await?;
    for expected in [
        r#"likes_ingest_requests_total{route="/v1/items/{item_type}/{item_id}/count",method="GET",status="200"}"#,
        r#"likes_ingest_request_duration_seconds_bucket{route="/v1/items/{item_type}/{item_id}/count",method="GET",status="200",le="0.005"}"#,
        r#"likes_ingest_rejected_total{reason="invalid_field"}"#,
        "likes_ingest_producer_queue_depth",
        "# HELP likes_ingest_requests_total",
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
    assert!(!text.contains("987654321"), "an item id became a label");
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_wrong_methods_big_bodies_and_other_media_types_are_refused()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(
        &env,
        Limits {
            max_batch_body_bytes: 1000,
            ..quiet_limits()
        },
    )
    .await?;
    let http = reqwest::Client::new();
    let like = json!({"user_id": 1, "item_id": 1, "item_type": 1});
    let cases = [
        (http.get(ingest.url("/v1/nothing")), 404, "not_found"),
        (
            http.put(ingest.url("/v1/likes")).json(&like),
            405,
            "method_not_allowed",
        ),
        (
            http.post(ingest.url("/v1/counts?items=1:1")),
            405,
            "method_not_allowed",
        ),
        (
            http.post(ingest.url("/v1/likes:batch"))
                .json(&json!({ "events": vec![like.clone(); 40] })),
            413,
            "payload_too_large",
        ),
        (
            http.post(ingest.url("/v1/likes"))
                .header("content-type", "application/xml")
                .body("<like/>"),
            415,
            "unsupported_media_type",
        ),
    ];
    let before = env.end_offsets()?;
    for (request, status, code) in cases {
        let answer = send(request).await?;
        assert_eq!(answer.status, status, "{}", answer.body);
        assert_eq!(answer.body["error"]["code"], code, "{}", answer.body);
        assert!(answer.body["error"]["message"].is_string());
    }
    assert_eq!(env.end_offsets()?, before);
    ingest.running.stop().await?;
    Ok(())
}
