//! `openapi.yaml` stays true: it documents exactly the routes the service
//! serves, and each operation, called well and called badly, answers with a
//! status the spec lists for it (errors in the one documented shape).

use std::collections::BTreeSet;

use likes_ingest::routes;
use likes_tests::TestEnv;
use likes_tests::api::{Operation, operations, quiet_limits, send, spec_text, start_ingest};
use serde_json::json;

#[test]
fn the_spec_documents_exactly_the_routes_served() -> anyhow::Result<()> {
    let ops = operations(&spec_text()?);
    let documented: BTreeSet<(String, String)> = ops
        .iter()
        .map(|o| (o.method.clone(), o.path.clone()))
        .collect();
    // The router builds every route from this table (`likes_ingest::routes`):
    // what it lists is exactly what is served.
    let served: BTreeSet<(String, String)> = routes::ALL
        .iter()
        .map(|r| (r.method.to_string(), r.template.to_string()))
        .collect();
    assert_eq!(documented, served);
    for op in &ops {
        assert!(!op.statuses.is_empty(), "{op:?} documents no status");
    }
    Ok(())
}

/// A well-formed and an ill-formed call of `op`: (path and query, body).
fn calls(op: &Operation) -> [(String, Option<serde_json::Value>); 2] {
    let path = |t: &str, i: &str, u: &str| {
        op.path
            .replace("{item_type}", t)
            .replace("{item_id}", i)
            .replace("{user_id}", u)
    };
    let like = json!({"user_id": 1, "item_id": 1, "item_type": 1});
    let route = (op.method.as_str(), op.path.as_str());
    let is = |r: routes::Route| route == (r.method, r.template);
    match route {
        _ if is(routes::LIKE_BATCH) => [
            (
                op.path.clone(),
                Some(
                    json!({"events": [{"action": "like", "user_id": 1, "item_id": 1, "item_type": 1}]}),
                ),
            ),
            (op.path.clone(), Some(json!({"events": "all"}))),
        ],
        ("POST" | "DELETE", _) => [
            (op.path.clone(), Some(like)),
            (op.path.clone(), Some(json!({"user_id": -1}))),
        ],
        _ if is(routes::COUNTS) => [
            (format!("{}?items=1:1,2:2", op.path), None),
            (format!("{}?items=1:0", op.path), None),
        ],
        (_, p) if p.contains('{') => [(path("1", "1", "1"), None), (path("0", "1", "0"), None)],
        _ => [(op.path.clone(), None), (op.path.clone(), None)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_with_a_documented_status() -> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, quiet_limits()).await?;
    let http = reqwest::Client::new();
    let ops = operations(&spec_text()?);
    assert!(ops.len() >= routes::ALL.len());
    for op in &ops {
        let mut seen = Vec::new();
        for (path, body) in calls(op) {
            let method = reqwest::Method::from_bytes(op.method.as_bytes())?;
            let mut request = http.request(method, ingest.url(&path));
            if let Some(body) = body {
                request = request.json(&body);
            }
            let answer = send(request).await?;
            assert!(
                op.statuses.contains(&answer.status),
                "{} {path} answered {} (documented {:?}): {}",
                op.method,
                answer.status,
                op.statuses,
                answer.body
            );
            if answer.status >= 400 && path != routes::READYZ.template {
                assert!(
                    answer.body["error"]["code"].is_string(),
                    "{} {path}: {}",
                    op.method,
                    answer.body
                );
            }
            seen.push(answer.status);
        }
        assert!(
            seen.iter().any(|s| *s < 300),
            "{} {} never succeeded: {seen:?}",
            op.method,
            op.path
        );
    }
    ingest.running.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_on_every_path_is_served_exactly_when_the_route_table_lists_it()
-> anyhow::Result<()> {
    let env = TestEnv::new(2).await?;
    let ingest = start_ingest(&env, quiet_limits()).await?;
    let http = reqwest::Client::new();
    let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
    for template in routes::ALL.iter().map(|r| r.template) {
        let path = template
            .replace("{item_type}", "1")
            .replace("{item_id}", "1")
            .replace("{user_id}", "1");
        let path = if template == routes::COUNTS.template {
            format!("{path}?items=1:1")
        } else {
            path
        };
        for method in methods {
            let listed = routes::ALL
                .iter()
                .any(|r| r.template == template && r.method == method);
            let request = http
                .request(
                    reqwest::Method::from_bytes(method.as_bytes())?,
                    ingest.url(&path),
                )
                .json(&json!({"user_id": 1, "item_id": 1, "item_type": 1}));
            let answer = send(request).await?;
            if listed {
                assert!(
                    ![404, 405].contains(&answer.status),
                    "{method} {path} is listed but answered {}: {}",
                    answer.status,
                    answer.body
                );
            } else {
                assert_eq!(
                    answer.status, 405,
                    "{method} {path} is not listed: {}",
                    answer.body
                );
            }
        }
    }
    let unknown = send(http.get(ingest.url("/v1/nothing/here"))).await?;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    ingest.running.stop().await?;
    Ok(())
}
