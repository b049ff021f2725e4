//! A schema registry that is behind, for the tests: an HTTP proxy in front of
//! the real registry that answers 404, with the registry's own "schema not
//! found" body, to the first lookups of each schema id by id, and passes every
//! other request (and later lookups) through unchanged. Only the test that
//! starts it talks to it; the shared registry is never touched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A running proxy; stops when dropped.
pub struct RegistryProxy {
    url: String,
    state: Arc<State>,
    task: JoinHandle<()>,
}

struct State {
    /// Scheme, host and port of the real registry.
    upstream: String,
    /// Lookups of one id answered 404 before they pass through.
    not_found_first: u64,
    lookups: Mutex<HashMap<u32, u64>>,
    not_found_answers: AtomicU64,
    passed: AtomicU64,
    client: reqwest::Client,
}

impl RegistryProxy {
    /// A proxy for the registry at `registry_url` (a Confluent-compatible base
    /// URL) that answers "not found" to the first `not_found_first` lookups of
    /// each schema id.
    pub async fn start(registry_url: &str, not_found_first: u64) -> anyhow::Result<Self> {
        let after_scheme = registry_url
            .find("://")
            .map(|i| i + 3)
            .context("registry URL without a scheme")?;
        let path_start = registry_url[after_scheme..]
            .find('/')
            .map_or(registry_url.len(), |i| after_scheme + i);
        let (upstream, path) = registry_url.split_at(path_start);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}{}", listener.local_addr()?, path);
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            not_found_first,
            lookups: Mutex::new(HashMap::new()),
            not_found_answers: AtomicU64::new(0),
            passed: AtomicU64::new(0),
            client: reqwest::Client::new(),
        });
        let serving = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = serving.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve(&state, stream).await {
                        tracing::warn!(error = %e, "registry proxy connection failed");
                    }
                });
            }
        });
        Ok(Self { url, state, task })
    }

    /// A proxy that never finds any schema by id.
    pub async fn never_finding(registry_url: &str) -> anyhow::Result<Self> {
        Self::start(registry_url, u64::MAX).await
    }

    /// The base URL to give a service as `SCHEMA_REGISTRY_URL`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How many lookups were answered "not found" so far.
    pub fn not_found_answers(&self) -> u64 {
        self.state.not_found_answers.load(Ordering::Relaxed)
    }

    /// How many requests were passed through to the real registry.
    pub fn passed_through(&self) -> u64 {
        self.state.passed.load(Ordering::Relaxed)
    }
}

impl Drop for RegistryProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One request per connection (answered with `connection: close`).
async fn serve(state: &State, mut stream: TcpStream) -> anyhow::Result<()> {
    let mut buffer = Vec::new();
    let head_end = loop {
        if let Some(i) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before the request head ended");
        buffer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let method = request_line.next().unwrap_or_default().to_string();
    let target = request_line.next().unwrap_or_default().to_string();
    let mut content_type = None;
    let mut length = 0usize;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse()?,
                "content-type" => content_type = Some(value.trim().to_string()),
                _ => {}
            }
        }
    }
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed before the request body ended");
        body.extend_from_slice(&chunk[..n]);
    }

    let (status, content_type, answer) = match lookup_id(&method, &target) {
        Some(id) if state.answers_not_found(id) => {
            state.not_found_answers.fetch_add(1, Ordering::Relaxed);
            let body = format!(r#"{{"message":"Schema {id} not found.","error_code":40403}}"#);
            (404, Some("application/json".to_string()), body.into_bytes())
        }
        _ => {
            state.passed.fetch_add(1, Ordering::Relaxed);
            let mut request = state.client.request(
                reqwest::Method::from_bytes(method.as_bytes())?,
                format!("{}{}", state.upstream, target),
            );
            if let Some(content_type) = content_type {
                request = request.header("content-type", content_type);
            }
            let response = request.body(body).send().await?;
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (status, content_type, response.bytes().await?.to_vec())
        }
    };
    let reason = reqwest::StatusCode::from_u16(status)?
        .canonical_reason()
        .unwrap_or("");
    let mut reply = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-length: {}\r\nconnection: close\r\n",
        answer.len()
    );
    if let Some(content_type) = content_type {
        reply.push_str(&format!("content-type: {content_type}\r\n"));
    }
    reply.push_str("\r\n");
    stream.write_all(reply.as_bytes()).await?;
    stream.write_all(&answer).await?;
    stream.shutdown().await?;
    Ok(())
}

impl State {
    /// Counts a lookup of `id`; whether it is one of the first that fail.
    fn answers_not_found(&self, id: u32) -> bool {
        let mut lookups = self
            .lookups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = lookups.entry(id).or_insert(0);
        *seen += 1;
        *seen <= self.not_found_first
    }
}

/// The schema id of a `GET …/schemas/ids/<id>` request.
fn lookup_id(method: &str, target: &str) -> Option<u32> {
    if method != "GET" {
        return None;
    }
    let path = target.split('?').next()?;
    let (_, id) = path.rsplit_once("/schemas/ids/")?;
    id.parse().ok()
}
