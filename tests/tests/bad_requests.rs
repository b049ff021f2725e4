//! Malformed requests get the right 4xx with a JSON error naming the field,
//! and publish nothing: the topic's end offsets do not move.

use likes_tests::TestEnv;

/// (method, path, content type, body, expected status, expected error field)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    u16,
    Option<&'static str>,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_publish_nothing() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = env.start_ingest().await?;
    let http = reqwest::Client::new();
    let before = env.end_offsets()?;

    let cases: Vec<Case> = vec![
        (
            "POST",
            "/v1/likes",
            "application/json",
            "{not json",
            400,
            None,
        ),
        ("POST", "/v1/likes", "application/json", "[1,2]", 400, None),
        (
            "POST",
            "/v1/likes",
            "application/json",
            r#"{"item_id":1,"item_type":1}"#,
            400,
            Some("user_id"),
        ),
        (
            "POST",
            "/v1/likes",
            "application/json",
            r#"{"user_id":1,"item_type":1}"#,
            400,
            Some("item_id"),
        ),
        (
            "POST",
            "/v1/likes",
            "application/json",
            r#"{"user_id":1,"item_id":1}"#,
            400,
            Some("item_type"),
        ),
        (
            "POST",
            "/v1/likes",
            "application/json",
            r#"{"user_id":0,"item_id":1,"item_type":1}"#,
            400,
            Some("user_id"),
        ),
        (
            "POST",
            "/v1/likes",
            "application/json",
            r#"{"user_id":1,"item_id":-4,"item_type":1}"#,
            400,
            Some("item_id"),
        ),
        (
            "POST",
            "/v1/likes",
            "application/json",
            r#"{"user_id":1,"item_id":1,"item_type":40000}"#,
            400,
            Some("item_type"),
        ),
        (
            "POST",
            "/v1/likes",
            "application/json",
            r#"{"user_id":"1","item_id":1,"item_type":1}"#,
            400,
            Some("user_id"),
        ),
        (
            "POST",
            "/v1/likes",
            "application/json",
            r#"{"user_id":1,"item_id":1,"item_type":1,"event_id":"nope"}"#,
            400,
            Some("event_id"),
        ),
        (
            "POST",
            "/v1/likes",
            "application/json",
            r#"{"user_id":1,"item_id":1,"item_type":1,"colour":"red"}"#,
            400,
            Some("colour"),
        ),
        (
            "DELETE",
            "/v1/likes",
            "application/json",
            r#"{"user_id":1}"#,
            400,
            Some("item_type"),
        ),
        (
            "POST",
            "/v1/unlikes",
            "application/json",
            r#"{"user_id":1,"item_id":99999999999999999999,"item_type":1}"#,
            400,
            Some("item_id"),
        ),
        (
            "POST",
            "/v1/likes",
            "text/plain",
            r#"{"user_id":1,"item_id":1,"item_type":1}"#,
            415,
            None,
        ),
        (
            "PUT",
            "/v1/likes",
            "application/json",
            r#"{"user_id":1,"item_id":1,"item_type":1}"#,
            405,
            None,
        ),
        ("POST", "/v1/nothing", "application/json", "{}", 404, None),
        (
            "GET",
            "/v1/items/x/1/count",
            "application/json",
            "",
            400,
            Some("item_type"),
        ),
        (
            "GET",
            "/v1/items/1/0/count",
            "application/json",
            "",
            400,
            Some("item_id"),
        ),
    ];
    for (method, path, content_type, body, status, field) in cases {
        let response = http
            .request(method.parse()?, ingest.url(path))
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await?;
        let got = response.status().as_u16();
        let json: serde_json::Value = response.json().await?;
        assert_eq!(got, status, "{method} {path} {body}: {json}");
        let error = &json["error"];
        assert!(
            error["code"].is_string() && error["message"].is_string(),
            "{json}"
        );
        assert_eq!(
            error["field"].as_str(),
            field,
            "{method} {path} {body}: {json}"
        );
    }

    // A body over the limit is refused before it is read; a body in another
    // media type or in a content coding is refused too, and none is produced.
    let big = format!(
        r#"{{"user_id":1,"item_id":1,"item_type":1,"pad":"{}"}}"#,
        "x".repeat(70_000)
    );
    let like = r#"{"user_id":1,"item_id":1,"item_type":1}"#;
    let refused = [
        (
            "application/json",
            None,
            big.as_str(),
            413,
            "payload_too_large",
            None,
        ),
        (
            "text/plain",
            None,
            like,
            415,
            "unsupported_media_type",
            None,
        ),
        (
            "application/json",
            Some("gzip"),
            like,
            415,
            "unsupported_content_encoding",
            Some("Content-Encoding"),
        ),
    ];
    for (content_type, coding, body, status, code, field) in refused {
        let offsets = env.end_offsets()?;
        let mut request = http
            .post(ingest.url("/v1/likes"))
            .header("content-type", content_type);
        if let Some(coding) = coding {
            request = request.header("content-encoding", coding);
        }
        let response = request.body(body.to_string()).send().await?;
        let got = response.status().as_u16();
        let json: serde_json::Value = response.json().await?;
        assert_eq!(got, status, "{content_type} {coding:?}: {json}");
        assert_eq!(json["error"]["code"], code, "{json}");
        assert!(json["error"]["message"].is_string(), "{json}");
        assert_eq!(json["error"]["field"].as_str(), field, "{json}");
        assert_eq!(
            env.end_offsets()?,
            offsets,
            "a {status} must produce nothing"
        );
    }

    assert_eq!(
        env.end_offsets()?,
        before,
        "a refused request must not be published"
    );
    ingest.running.stop().await?;
    Ok(())
}
