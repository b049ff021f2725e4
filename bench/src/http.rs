//! HTTP load, the wrk2 way: a fixed set of keep-alive connections, request *i*
//! due at `start + i / rate` on connection `i mod C`, latency counted from that
//! due time (a slow answer delays the next request on its connection, and that
//! delay is counted, so there is no coordinated omission). The generator runs on
//! its own single-threaded runtime, like a separate load process, so it never
//! competes with the server for the server's worker threads; it speaks HTTP/1.1
//! through hyper's bare connection API (no pool, no URL parsing per request), so
//! it costs the machine as little as a load generator can.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
use crate::stalls::Meter;

/// How long after the lanes are ready a run's first request is due.
const LEAD: Duration = Duration::from_millis(50);

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
        let (mut summary, meter_s) = run?;
        summary.cpu = cpu::snapshot().since(&before);
        // The process total holds the generator's and the stall meter's
        // threads: count them apart.
        summary.cpu.loadgen_s = loadgen_s + meter_s;
        summary.cpu.service_s -= loadgen_s + meter_s;
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
) -> anyhow::Result<(Summary, f64)> {
    let sent = calls.len() as u64;
    let mut lanes: Vec<Vec<(u64, Call)>> = vec![Vec::new(); connections];
    for (i, call) in calls.into_iter().enumerate() {
        lanes[i % connections].push((i as u64, call));
    }
    // Every lane's connection is open before the clock starts, as in wrk2: a
    // like API's clients hold keep-alive connections, and opening hundreds of
    // them at once inside second 0 timed the accept burst, not a like (a run's
    // first second was the one most often over the P99 bound).
    let lanes: Vec<Vec<(u64, Call)>> = lanes.into_iter().filter(|l| !l.is_empty()).collect();
    let opened = futures::future::join_all(lanes.iter().map(|_| connect(addr))).await;
    let start = Instant::now() + LEAD;
    let started_unix_ms = unix_ms(SystemTime::now() + LEAD);
    let meter = Meter::start(start.into_std())?;
    let tasks: Vec<_> = lanes
        .into_iter()
        .zip(opened)
        .map(|(lane, sender)| {
            tokio::spawn(lane_loop(addr, sender, lane, start, rate, observer.clone()))
        })
        .collect();
    let mut samples = Vec::with_capacity(sent as usize);
    for task in tasks {
        samples.extend(task.await?);
    }
    let stalls = meter.stop();
    let mut summary = summarize(rate, sent, &samples)?;
    summary.attach_stalls(&stalls);
    summary.started_unix_ms = started_unix_ms;
    Ok((summary, stalls.cpu_s))
}

/// Milliseconds since the Unix epoch (0 for a clock set before it).
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One connection's share of the run, in order, on `sender` (opened ahead;
/// `None` or broken: opened when its next call is due).
async fn lane_loop(
    addr: SocketAddr,
    mut sender: Option<SendRequest<Full<Bytes>>>,
    lane: Vec<(u64, Call)>,
    start: Instant,
    rate: f64,
    observer: Option<(u64, UnboundedSender<Answer>)>,
) -> Vec<Sample> {
    let host = addr.to_string();
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

/// How a rate search runs.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// The first rate tried.
    pub start: f64,
    /// Each step multiplies the rate by this.
    pub factor: f64,
    /// No rate above this is tried.
    pub max: f64,
    /// Bisection steps (geometric) between the best passing rate and the
    /// first failing one above it, once the climb has ended.
    pub refine: usize,
    /// The P99 bound of a passing run.
    pub p99_limit_ms: f64,
}

/// Raises the rate from `plan.start` by `plan.factor` up to `plan.max` until a
/// run saturates (under 90 % of the rate asked, or over 1 % errors), then
/// bisects `plan.refine` times between the best pass and the first failure
/// above it, so a coarse factor does not decide the figure.
pub async fn max_sustainable(
    plan: Plan,
    mut run: impl AsyncFnMut(f64) -> anyhow::Result<Summary>,
) -> anyhow::Result<Search> {
    let mut found = Search::default();
    let passes = |s: &Summary, rate: f64| {
        s.errors == 0 && s.p99_ms < plan.p99_limit_ms && s.achieved_rate >= 0.95 * rate
    };
    // The best passing rate asked, and the lowest failing one above it.
    let (mut pass, mut fail) = (0.0f64, f64::INFINITY);
    let mut rate = plan.start;
    while rate <= plan.max {
        let s = run(rate).await?;
        if passes(&s, rate) {
            found.sustainable = found.sustainable.max(s.achieved_rate);
            pass = pass.max(rate);
            fail = f64::INFINITY;
        } else if rate > pass {
            fail = fail.min(rate);
        }
        found.peak = found.peak.max(s.achieved_rate);
        let saturated = s.achieved_rate < 0.9 * rate || s.errors * 100 > s.sent;
        found.runs.push(s);
        if saturated {
            break;
        }
        rate *= plan.factor;
    }
    for _ in 0..plan.refine {
        if pass <= 0.0 || !fail.is_finite() {
            break;
        }
        // Let the queues a saturated run left behind drain first.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rate = (pass * fail).sqrt();
        let s = run(rate).await?;
        if passes(&s, rate) {
            found.sustainable = found.sustainable.max(s.achieved_rate);
            pass = rate;
        } else {
            fail = rate;
        }
        found.peak = found.peak.max(s.achieved_rate);
        found.runs.push(s);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::CpuUse;

    /// A service that keeps P99 under the bound below `knee` and saturates at `cap`.
    fn service(rate: f64, knee: f64, cap: f64) -> Summary {
        let achieved = rate.min(cap);
        Summary {
            target_rate: rate,
            achieved_rate: achieved,
            sent: (rate * 10.0) as u64,
            ok: (achieved * 10.0) as u64,
            errors: 0,
            p50_ms: 1.0,
            p99_ms: if rate < knee { 5.0 } else { 50.0 },
            p999_ms: 60.0,
            max_ms: 70.0,
            cpu: CpuUse::default(),
            series: Vec::new(),
            started_unix_ms: 0,
        }
    }

    fn plan(refine: usize) -> Plan {
        Plan {
            start: 2000.0,
            factor: 1.5,
            max: 1e6,
            refine,
            p99_limit_ms: 20.0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_search_climbs_until_saturation_then_bisects_below_the_first_failure() {
        let mut asked = Vec::new();
        let found = max_sustainable(plan(2), async |rate| {
            asked.push(rate.round());
            Ok(service(rate, 8000.0, 12_000.0))
        })
        .await
        .unwrap();
        // 2000, 3000, 4500, 6750 pass; 10125 fails; 15187.5 saturates; then
        // √(6750·10125) ≈ 8267 fails and √(6750·8267) ≈ 7470 passes.
        assert_eq!(
            asked,
            vec![
                2000.0, 3000.0, 4500.0, 6750.0, 10125.0, 15188.0, 8267.0, 7470.0
            ]
        );
        assert_eq!(found.sustainable.round(), 7470.0);
        assert_eq!(found.peak, 12_000.0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_refinement_the_best_climbing_pass_is_the_figure() {
        let found = max_sustainable(plan(0), async |rate| Ok(service(rate, 8000.0, 12_000.0)))
            .await
            .unwrap();
        assert_eq!(found.sustainable, 6750.0);
        assert_eq!(found.runs.len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_passing_means_no_sustainable_rate_and_no_bisection() {
        let found = max_sustainable(plan(2), async |rate| Ok(service(rate, 0.0, 3000.0)))
            .await
            .unwrap();
        assert_eq!(found.sustainable, 0.0);
        assert_eq!(found.runs.len(), 3);
    }
}
