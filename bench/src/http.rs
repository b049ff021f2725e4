//! HTTP load, the wrk2 way: a fixed set of keep-alive connections, request *i*
//! due at `start + i / rate` on connection `i mod C`, latency counted from that
//! due time (a slow answer delays the next request on its connection, and that
//! delay is counted, so there is no coordinated omission). The generator runs on
//! its own single-threaded runtime, like a separate load process, so it never
//! competes with the server for the server's worker threads; it speaks HTTP/1.1
//! through hyper's bare connection API (no pool, no URL parsing per request), so
//! it costs the machine as little as a load generator can.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

use crate::cpu;
use crate::keys::{ITEM_TYPE, Keys};
use crate::load::{Sample, Summary, summarize};

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for closed-loop calls (warming, batches); the fixed-rate load uses
/// [`Http`].
pub fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(64)
        .build()?)
}

/// One request of a run, built before the clock starts.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: String,
    pub body: Bytes,
}

/// A successful answer handed to an observer (scenario 4 watches them).
#[derive(Debug)]
pub struct Answer {
    pub index: u64,
    pub at: Instant,
    pub body: Bytes,
}

/// The fixed-rate load generator.
#[derive(Debug, Clone, Copy)]
pub struct Http {
    /// Keep-alive connections per run.
    pub connections: usize,
}

impl Http {
    /// Sends `calls` to `addr` at `rate` per second; successful answers whose
    /// index is a multiple of `every` go to `observer`.
    pub async fn run(
        &self,
        addr: SocketAddr,
        calls: Vec<Call>,
        rate: f64,
        observer: Option<(u64, UnboundedSender<Answer>)>,
    ) -> anyhow::Result<Summary> {
        let connections = self.connections.max(1);
        let (done, result) = tokio::sync::oneshot::channel();
        let before = cpu::snapshot();
        std::thread::Builder::new()
            .name(cpu::LOADGEN_THREAD.into())
            .spawn(move || {
                let started = cpu::this_thread();
                let run = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| {
                        runtime.block_on(drive(addr, calls, rate, connections, observer))
                    });
                let _ = done.send((run, cpu::this_thread() - started));
            })?;
        let (run, loadgen_s) = result.await?;
        let mut summary = run?;
        summary.cpu = cpu::snapshot().since(&before);
        // The process total holds the generator's thread: count it apart.
        summary.cpu.loadgen_s = loadgen_s;
        summary.cpu.service_s -= loadgen_s;
        Ok(summary)
    }

    /// Posts like bodies for fresh Zipf pairs to `path` at `rate` for `duration`.
    pub async fn post_likes(
        &self,
        addr: SocketAddr,
        keys: &mut Keys,
        rate: f64,
        duration: Duration,
    ) -> anyhow::Result<Summary> {
        let calls = calls(rate, duration, || Call {
            method: Method::POST,
            path: "/v1/likes".into(),
            body: Bytes::from(keys.next_body()),
        });
        self.run(addr, calls, rate, None).await
    }

    /// Reads `GET /v1/items/1/{item}/count` for Zipf items at `rate`.
    pub async fn get_counts(
        &self,
        addr: SocketAddr,
        keys: &mut Keys,
        rate: f64,
        duration: Duration,
    ) -> anyhow::Result<Summary> {
        let calls = calls(rate, duration, || {
            get(format!(
                "/v1/items/{ITEM_TYPE}/{}/count",
                keys.next_pair().1
            ))
        });
        self.run(addr, calls, rate, None).await
    }

    /// Reads `GET /v1/counts?items=…` with `per` Zipf items each at `rate`.
    pub async fn get_bulk_counts(
        &self,
        addr: SocketAddr,
        keys: &mut Keys,
        per: usize,
        rate: f64,
        duration: Duration,
    ) -> anyhow::Result<Summary> {
        let calls = calls(rate, duration, || {
            let items: Vec<String> = (0..per)
                .map(|_| format!("{ITEM_TYPE}:{}", keys.next_pair().1))
                .collect();
            get(format!("/v1/counts?items={}", items.join(",")))
        });
        self.run(addr, calls, rate, None).await
    }
}

/// The calls of a run of `duration` at `rate`, made by `make`.
fn calls(rate: f64, duration: Duration, make: impl FnMut() -> Call) -> Vec<Call> {
    std::iter::repeat_with(make)
        .take(count(rate, duration) as usize)
        .collect()
}

fn get(path: String) -> Call {
    Call {
        method: Method::GET,
        path,
        body: Bytes::new(),
    }
}

/// Requests in a run of `duration` at `rate`.
pub fn count(rate: f64, duration: Duration) -> u64 {
    (rate * duration.as_secs_f64()).round() as u64
}

async fn drive(
    addr: SocketAddr,
    calls: Vec<Call>,
    rate: f64,
    connections: usize,
    observer: Option<(u64, UnboundedSender<Answer>)>,
) -> anyhow::Result<Summary> {
    let sent = calls.len() as u64;
    let mut lanes: Vec<Vec<(u64, Call)>> = vec![Vec::new(); connections];
    for (i, call) in calls.into_iter().enumerate() {
        lanes[i % connections].push((i as u64, call));
    }
    let start = Instant::now() + Duration::from_millis(50);
    let tasks: Vec<_> = lanes
        .into_iter()
        .filter(|lane| !lane.is_empty())
        .map(|lane| tokio::spawn(lane_loop(addr, lane, start, rate, observer.clone())))
        .collect();
    let mut samples = Vec::with_capacity(sent as usize);
    for task in tasks {
        samples.extend(task.await?);
    }
    summarize(rate, sent, &samples)
}

/// One connection's share of the run, in order.
async fn lane_loop(
    addr: SocketAddr,
    lane: Vec<(u64, Call)>,
    start: Instant,
    rate: f64,
    observer: Option<(u64, UnboundedSender<Answer>)>,
) -> Vec<Sample> {
    let host = addr.to_string();
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut samples = Vec::with_capacity(lane.len());
    for (index, call) in lane {
        let intended = start + Duration::from_secs_f64(index as f64 / rate);
        tokio::time::sleep_until(intended).await;
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, send(&mut sender, addr, &host, call))
            .await
            .unwrap_or(None);
        let done = Instant::now();
        let ok = answer.is_some();
        if !ok {
            sender = None; // a broken or timed-out connection is replaced
        }
        if let (Some(body), Some((every, tx))) = (answer, &observer)
            && index % every == 0
        {
            let _ = tx.send(Answer {
                index,
                at: done,
                body,
            });
        }
        samples.push(Sample {
            done_us: done.saturating_duration_since(start).as_micros() as u64,
            latency_us: done.saturating_duration_since(intended).as_micros() as u64,
            ok,
        });
    }
    samples
}

/// Sends one call on the lane's connection (opening it when needed); the body
/// of a 2xx answer, or `None`.
async fn send(
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    addr: SocketAddr,
    host: &str,
    call: Call,
) -> Option<Bytes> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(addr).await?);
    }
    let sender = sender.as_mut()?;
    sender.ready().await.ok()?;
    let mut request = Request::builder()
        .method(call.method)
        .uri(call.path)
        .header("host", host);
    if !call.body.is_empty() {
        request = request.header("content-type", "application/json");
    }
    let response = sender
        .send_request(request.body(Full::new(call.body)).ok()?)
        .await
        .ok()?;
    let success = response.status().is_success();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    success.then_some(body)
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    stream.set_nodelay(true).ok()?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(connection);
    Some(sender)
}

/// What the rate search found.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// The best achieved rate of a run with no error, P99 under the bound and at
    /// least 95 % of the rate asked (0 when none passed).
    pub sustainable: f64,
    /// The best achieved rate of any run (saturation throughput).
    pub peak: f64,
    pub runs: Vec<Summary>,
}

/// Raises the rate from `start` by `factor` up to `max_rate` until a run
/// saturates (under 90 % of the rate asked, or over 1 % errors).
pub async fn max_sustainable(
    start: f64,
    factor: f64,
    max_rate: f64,
    p99_limit_ms: f64,
    mut run: impl AsyncFnMut(f64) -> anyhow::Result<Summary>,
) -> anyhow::Result<Search> {
    let (mut rate, mut found) = (start, Search::default());
    while rate <= max_rate {
        let s = run(rate).await?;
        if s.errors == 0 && s.p99_ms < p99_limit_ms && s.achieved_rate >= 0.95 * rate {
            found.sustainable = found.sustainable.max(s.achieved_rate);
        }
        found.peak = found.peak.max(s.achieved_rate);
        let saturated = s.achieved_rate < 0.9 * rate || s.errors * 100 > s.sent;
        found.runs.push(s);
        if saturated {
            break;
        }
        rate *= factor;
    }
    Ok(found)
}
