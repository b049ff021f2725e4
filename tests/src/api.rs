//! Helpers for the API tests: an ingest started with chosen limits (rate limit,
//! dedup, ...), JSON requests, and a reader of `openapi.yaml`'s operations.

use std::time::Duration;

use likes_ingest::{Application, Limits, Settings};
use tokio::sync::oneshot;

use crate::{Ingest, Running, TestEnv};

/// Limits with protections off and a generous read-your-writes wait; tests turn
/// on what they exercise.
pub fn quiet_limits() -> Limits {
    Limits {
        read_your_writes_timeout: Duration::from_secs(10),
        ..Limits::unprotected()
    }
}

/// Starts an ingest service in-process with `settings` and `limits`.
pub async fn start_with(settings: Settings, limits: Limits) -> anyhow::Result<Ingest> {
    let app = Application::build(&settings, limits).await?;
    let addr = app.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    Ok(Ingest {
        addr,
        running: Running {
            stop: Some(stop),
            handle,
        },
    })
}

/// Starts an ingest service on `env`'s slice with `limits`.
pub async fn start_ingest(env: &TestEnv, limits: Limits) -> anyhow::Result<Ingest> {
    start_with(env.ingest_settings(), limits).await
}

/// A JSON answer: status, headers and body (`Null` when the body is not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request and reads the answer.
pub async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<Answer> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// POSTs a like by `user` of item `item` (type 1) and reads the answer, whatever it is.
pub async fn post_like(
    http: &reqwest::Client,
    ingest: &Ingest,
    user: i64,
    item: i64,
) -> anyhow::Result<Answer> {
    let body = serde_json::json!({"user_id": user, "item_id": item, "item_type": 1});
    send(http.post(ingest.url("/v1/likes")).json(&body)).await
}

/// POSTs one batch of likes, `(user, item)` each (type 1), and reads the
/// answer, whatever it is.
pub async fn post_batch(
    http: &reqwest::Client,
    ingest: &Ingest,
    likes: &[(i64, i64)],
) -> anyhow::Result<Answer> {
    let events: Vec<_> = likes
        .iter()
        .map(|(user, item)| {
            serde_json::json!({"action": "like", "user_id": user, "item_id": item, "item_type": 1})
        })
        .collect();
    let body = serde_json::json!({ "events": events });
    send(http.post(ingest.url("/v1/likes:batch")).json(&body)).await
}

/// Each result's status in a batch's answer, in request order.
pub fn batch_statuses(answer: &Answer) -> Vec<i64> {
    answer.body["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["status"].as_i64())
        .collect()
}

/// One operation of the spec: path template, method and documented statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub path: String,
    pub method: String,
    pub statuses: Vec<u16>,
}

/// The spec at the repository root.
pub fn spec_text() -> anyhow::Result<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi.yaml");
    Ok(std::fs::read_to_string(path)?)
}

/// Reads the operations of `openapi.yaml` (block style, two-space indents:
/// paths at 2, methods at 4, `responses:` at 6, status codes at 8). Enough for
/// our own file; schemathesis reads it with a full YAML parser.
pub fn operations(spec: &str) -> Vec<Operation> {
    const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];
    let mut in_paths = false;
    let mut path = String::new();
    let mut ops: Vec<Operation> = Vec::new();
    let mut in_responses = false;
    for line in spec.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        if indent == 0 {
            in_paths = text == "paths:";
            continue;
        }
        if !in_paths {
            continue;
        }
        match indent {
            2 => path = text.trim_end_matches(':').trim_matches('\'').to_string(),
            4 => {
                in_responses = false;
                let method = text.trim_end_matches(':');
                if METHODS.contains(&method) {
                    ops.push(Operation {
                        path: path.clone(),
                        method: method.to_uppercase(),
                        statuses: Vec::new(),
                    });
                }
            }
            6 => in_responses = text == "responses:",
            8 if in_responses => {
                let code = text
                    .trim_end_matches(':')
                    .trim_matches(|c| c == '\'' || c == '"');
                if let (Ok(code), Some(op)) = (code.parse(), ops.last_mut()) {
                    op.statuses.push(code);
                }
            }
            _ => {}
        }
    }
    ops
}
