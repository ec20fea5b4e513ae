//! The load generator: open-loop fixed rate, closed-loop maximum, and concurrent SSE streams,
//! over a pooled hyper 1 client (HTTP/1.1, plain or rustls on the ring provider).
//!
//! The open loop is free of coordinated omission: a pacer thread schedules request `i` at
//! `start + i / rate` by the clock, whatever happened to the ones before, and each latency runs
//! from that *scheduled* time, so a stall shows as the queue of late requests it really causes
//! (as wrk2 does), not as one slow sample.
//!
//! Any non-2xx answer, transport error, timeout or malformed stream fails the run with the
//! count and the first sample: a broken scenario must not report numbers.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::shape::Shape;
use crate::summary::{Recorder, Summary};

/// How long one request (or one whole stream) may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Where requests go and how they authenticate.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`; or several of them separated by
    /// spaces (scenario 9's gateways on one Redis), over which the connections are spread
    /// round-robin, as a layer-4 load balancer spreads its clients' connections.
    pub base_url: String,
    /// Sent as `Authorization: Bearer`: the client key (gateway) or the mock's token (direct).
    pub token: String,
    /// PEM of the CA to trust for `https` (the bench's own CA); nothing else is trusted.
    pub ca_pem: Option<Vec<u8>>,
    /// What is sent, to which endpoint ([`Shape::Chat`] but in scenario 8).
    pub shape: Shape,
}

/// What to run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Mode {
    /// Open loop: `rate` requests per second for `duration`, non-streamed.
    Rate {
        /// Requests per second.
        rate: u32,
        /// How long.
        duration: Duration,
    },
    /// Closed loop: `connections` workers, each sending its next request when the last one
    /// finished, for `duration` or until `max_requests` were sent in all.
    Closed {
        /// Concurrent connections.
        connections: usize,
        /// How long.
        duration: Duration,
        /// Stop after this many requests (tests use it for exact counts).
        max_requests: Option<u64>,
    },
    /// `streams` concurrent workers, each running `rounds` streams one after the other, each
    /// stream `events` events `interval` apart.
    Stream {
        /// Concurrent streams.
        streams: usize,
        /// Streams per worker.
        rounds: u32,
        /// Events per stream (the mock sends exactly these, then `[DONE]`).
        events: u32,
        /// Time between events.
        interval: Duration,
    },
}

impl Mode {
    /// How many connections the mode keeps busy at once (the warm-up opens as many).
    fn concurrency(&self) -> usize {
        match self {
            // Enough for the bursts of an open loop at these rates on loopback.
            Mode::Rate { .. } => 16,
            Mode::Closed { connections, .. } => *connections,
            Mode::Stream { streams, .. } => *streams,
        }
        .max(1)
    }

    /// The request body of `shape`: the model names the mock's behaviour (see
    /// [`crate::mock`]).
    fn body(&self, shape: Shape) -> Bytes {
        let (model, stream) = match self {
            Mode::Rate { .. } | Mode::Closed { .. } => ("bench-json".to_owned(), false),
            Mode::Stream { events, interval, .. } => {
                (format!("bench-sse-{events}-{}", interval.as_millis()), true)
            }
        };
        shape.body(&model, stream)
    }
}

/// What a run measured. Only successful runs produce one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// The mode and its parameters.
    pub mode: Mode,
    /// What was sent (reports of old runs have none: they sent `chat`).
    #[serde(default)]
    pub shape: Shape,
    /// Requests (or streams) completed with 2xx and, for streams, the right events.
    pub ok: u64,
    /// From the first request to the last completion.
    pub elapsed_s: f64,
    /// `ok / elapsed_s`.
    pub rps: f64,
    /// Whole-request latency (for streams: to the end of the stream).
    pub latency: Option<Summary>,
    /// Streams: time to the first event.
    pub ttfe: Option<Summary>,
    /// Streams: time between consecutive events.
    pub gap: Option<Summary>,
    /// Streams: events received in all.
    pub events: u64,
}

/// Called once when every stream of the first round has received its first event (the
/// harness reads the gateway's memory at that moment).
pub type Ready = Arc<dyn Fn() + Send + Sync>;

/// Runs `mode` against `target`.
pub async fn run(target: &Target, mode: Mode, ready: Option<Ready>) -> Result<LoadReport> {
    let shot = Shot::new(target, mode)?;
    let failures = Arc::new(Failures::default());
    // Open the connections first (not measured): a new TCP connection and, through the
    // gateway, a new upstream connection are cold-start costs, which scenario 7 measures.
    let warm = Shot {
        body: Mode::Rate { rate: 1, duration: Duration::ZERO }.body(target.shape),
        ..shot.clone()
    };
    warm_up(&warm, mode.concurrency(), &failures).await;
    failures.check(0).context("warming up the connections")?;
    let started = Instant::now();
    let outcome = match mode {
        Mode::Rate { rate, duration } => rate_loop(&shot, rate, duration, &failures).await?,
        Mode::Closed { connections, duration, max_requests } => {
            closed_loop(&shot, connections, duration, max_requests, &failures).await?
        }
        Mode::Stream { streams, rounds, events, .. } => {
            stream_loop(&shot, streams, rounds, events, ready, &failures).await?
        }
    };
    let elapsed = outcome.last_done.unwrap_or_else(Instant::now).duration_since(started);
    failures.check(outcome.ok)?;
    if outcome.ok == 0 {
        bail!("no request completed");
    }
    Ok(LoadReport {
        mode,
        shape: target.shape,
        ok: outcome.ok,
        elapsed_s: elapsed.as_secs_f64(),
        rps: outcome.ok as f64 / elapsed.as_secs_f64().max(1e-9),
        latency: outcome.latency.summary(),
        ttfe: outcome.ttfe.and_then(|r| r.summary()),
        gap: outcome.gap.and_then(|r| r.summary()),
        events: outcome.events,
    })
}

/// Sends one non-streamed request (`bench-json`); `Err` describes the failure.
pub async fn once(target: &Target) -> Result<()> {
    let mode = Mode::Closed { connections: 1, duration: Duration::ZERO, max_requests: Some(1) };
    let shot = Shot::new(target, mode)?;
    shot.send(0).await.map_err(|sample| anyhow::anyhow!(sample))
}

/// `GET {base_url}{path}` and the body as JSON (the mock's `/stats`).
pub async fn get_json(target: &Target, path: &str) -> Result<serde_json::Value> {
    let uri: http::Uri = format!("{}{path}", target.base_url.trim_end_matches('/'))
        .parse()
        .context("the URL is not valid")?;
    let request = Request::get(uri).body(Full::new(Bytes::new())).context("GET request")?;
    let response =
        client(target)?.request(request).await.map_err(|e| anyhow::anyhow!(transport(&e)))?;
    let status = response.status();
    let body = response.into_body().collect().await.context("reading the body")?.to_bytes();
    check_status(status, &body).map_err(|sample| anyhow::anyhow!(sample))?;
    serde_json::from_slice(&body).context("the answer is not JSON")
}

/// A client for `target`: pooled HTTP/1.1 keep-alive connections with `TCP_NODELAY`; for
/// `https`, rustls on the ring provider trusting only `target.ca_pem`.
pub fn client(target: &Target) -> Result<Client<HttpsConnector<HttpConnector>, Full<Bytes>>> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = &target.ca_pem {
        for certificate in CertificateDer::pem_slice_iter(pem) {
            roots
                .add(certificate.context("the CA file is not PEM certificates")?)
                .context("the CA certificate is not usable")?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("rustls protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// One request's ingredients, cheap to clone into each task.
#[derive(Clone)]
struct Shot {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// The request URL on each base URL of the target (one but in scenario 9).
    urls: Arc<[http::Uri]>,
    token: Arc<str>,
    shape: Shape,
    body: Bytes,
}

impl Shot {
    fn new(target: &Target, mode: Mode) -> Result<Self> {
        let urls = target
            .base_url
            .split_whitespace()
            .map(|base| {
                let url = format!("{}{}", base.trim_end_matches('/'), target.shape.path());
                url.parse().with_context(|| format!("the target URL {url} is not valid"))
            })
            .collect::<Result<Vec<http::Uri>>>()?;
        if urls.is_empty() {
            bail!("no target URL");
        }
        Ok(Self {
            client: client(target)?,
            urls: urls.into(),
            token: Arc::from(target.token.as_str()),
            shape: target.shape,
            body: mode.body(target.shape),
        })
    }

    /// A request to the `index`-th target URL (round-robin: any index is valid).
    fn request(&self, index: usize) -> Result<Request<Full<Bytes>>> {
        let url = self.urls[index % self.urls.len()].clone();
        let mut request = Request::post(url)
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(http::header::CONTENT_TYPE, "application/json");
        if self.shape.is_anthropic() {
            // What Anthropic's SDKs send; the key goes as a bearer token, which the gateway
            // accepts on every endpoint.
            request = request.header("anthropic-version", "2023-06-01");
        }
        request.body(Full::new(self.body.clone())).context("cannot build the request")
    }

    /// Sends one non-streamed request to the `index`-th target URL and reads the whole body;
    /// `Err` is the failure sample.
    async fn send(&self, index: usize) -> Result<(), String> {
        let request = self.request(index).map_err(|e| format!("{e:#}"))?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| transport(&e))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading the body: {e}"))?
                .to_bytes();
            check_status(status, &body)?;
            if body.is_empty() {
                return Err(format!("status {status} with an empty body"));
            }
            self.shape.check_reply(&body)
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no complete answer within {REQUEST_TIMEOUT:?}")))
    }
}

fn check_status(status: StatusCode, body: &[u8]) -> Result<(), String> {
    if status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    Err(format!("status {status}: {text}"))
}

fn transport(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = format!("transport error: {error}");
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// Failed requests: how many, and the first one's description.
#[derive(Default)]
struct Failures {
    count: AtomicU64,
    sample: Mutex<Option<String>>,
}

impl Failures {
    fn add(&self, sample: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.sample.lock()
            && first.is_none()
        {
            *first = Some(sample);
        }
    }

    fn check(&self, ok: u64) -> Result<()> {
        let count = self.count.load(Ordering::Relaxed);
        if count > 0 {
            let sample = self.sample.lock().ok().and_then(|s| s.clone()).unwrap_or_default();
            bail!("{count} of {} requests failed; first failure: {sample}", count + ok);
        }
        Ok(())
    }
}

struct Outcome {
    ok: u64,
    latency: Recorder,
    ttfe: Option<Recorder>,
    gap: Option<Recorder>,
    events: u64,
    last_done: Option<Instant>,
}

impl Outcome {
    fn new() -> Result<Self> {
        Ok(Self {
            ok: 0,
            latency: Recorder::new()?,
            ttfe: None,
            gap: None,
            events: 0,
            last_done: None,
        })
    }

    fn done(&mut self, at: Instant) {
        self.ok += 1;
        self.last_done = Some(self.last_done.map_or(at, |last| last.max(at)));
    }
}

/// Sends `connections` non-streamed requests at once, so that the pool holds that many open
/// connections; failures are counted like any other.
async fn warm_up(shot: &Shot, connections: usize, failures: &Arc<Failures>) {
    let mut tasks = JoinSet::new();
    for index in 0..connections {
        let shot = shot.clone();
        tasks.spawn(async move { shot.send(index).await });
    }
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(sample)) => failures.add(sample),
            Err(e) => failures.add(format!("warm-up task failed: {e}")),
        }
    }
}

async fn rate_loop(
    shot: &Shot,
    rate: u32,
    duration: Duration,
    failures: &Arc<Failures>,
) -> Result<Outcome> {
    if rate == 0 {
        bail!("the rate must be at least 1 request per second");
    }
    let total = (f64::from(rate) * duration.as_secs_f64()).round() as u64;
    let period_ns = 1_000_000_000 / u64::from(rate);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    // The pacer is an OS thread: nanosleep wakes within tens of microseconds, where the tokio
    // timer has millisecond resolution, which would blur the very figures measured here.
    let pacer = std::thread::Builder::new()
        .name("pacer".to_owned())
        .spawn(move || {
            let start = Instant::now();
            for i in 0..total {
                let due = start + Duration::from_nanos(period_ns * i);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if tx.send(due).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the pacer thread")?;
    let mut outcome = Outcome::new()?;
    let mut tasks = JoinSet::new();
    let finish = |outcome: &mut Outcome,
                  result: Result<(Instant, Result<(), String>, Instant), _>| {
        match result {
            Ok((due, Ok(()), done)) => {
                outcome.latency.record(done.duration_since(due));
                outcome.done(done);
            }
            Ok((_, Err(sample), _)) => failures.add(sample),
            Err(e) => failures.add(format!("request task failed: {e}")),
        }
    };
    let mut sent = 0_usize;
    while let Some(due) = rx.recv().await {
        let shot = shot.clone();
        let index = sent;
        sent += 1;
        tasks.spawn(async move {
            let result = shot.send(index).await;
            (due, result, Instant::now())
        });
        while let Some(result) = tasks.try_join_next() {
            finish(&mut outcome, result);
        }
    }
    while let Some(result) = tasks.join_next().await {
        finish(&mut outcome, result);
    }
    if pacer.join().is_err() {
        bail!("the pacer thread panicked");
    }
    Ok(outcome)
}

async fn closed_loop(
    shot: &Shot,
    connections: usize,
    duration: Duration,
    max_requests: Option<u64>,
    failures: &Arc<Failures>,
) -> Result<Outcome> {
    let deadline = Instant::now() + duration;
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for worker in 0..connections.max(1) {
        let shot = shot.clone();
        let sent = Arc::clone(&sent);
        let failures = Arc::clone(failures);
        tasks.spawn(async move {
            let mut outcome = Outcome::new()?;
            while Instant::now() < deadline
                && max_requests.is_none_or(|max| sent.fetch_add(1, Ordering::Relaxed) < max)
            {
                let start = Instant::now();
                match shot.send(worker).await {
                    Ok(()) => {
                        let done = Instant::now();
                        outcome.latency.record(done.duration_since(start));
                        outcome.done(done);
                    }
                    Err(sample) => failures.add(sample),
                }
            }
            Ok::<_, anyhow::Error>(outcome)
        });
    }
    merge(tasks).await
}

async fn stream_loop(
    shot: &Shot,
    streams: usize,
    rounds: u32,
    events: u32,
    ready: Option<Ready>,
    failures: &Arc<Failures>,
) -> Result<Outcome> {
    let streams = streams.max(1);
    let first_events = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for worker in 0..streams {
        let shot = shot.clone();
        let failures = Arc::clone(failures);
        let ready = ready.clone();
        let first_events = Arc::clone(&first_events);
        tasks.spawn(async move {
            let mut outcome = Outcome::new()?;
            outcome.ttfe = Some(Recorder::new()?);
            outcome.gap = Some(Recorder::new()?);
            for round in 0..rounds {
                let on_first = || {
                    if round == 0
                        && first_events.fetch_add(1, Ordering::SeqCst) + 1 == streams
                        && let Some(ready) = &ready
                    {
                        ready();
                    }
                };
                let result = tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    one_stream(&shot, worker, events, &mut outcome, on_first),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(format!("the stream did not end within {REQUEST_TIMEOUT:?}"))
                });
                if let Err(sample) = result {
                    failures.add(sample);
                }
            }
            Ok::<_, anyhow::Error>(outcome)
        });
    }
    merge(tasks).await
}

/// Runs one stream, recording into `outcome`; checks it had exactly `expected` events and
/// then `[DONE]`.
async fn one_stream(
    shot: &Shot,
    index: usize,
    expected: u32,
    outcome: &mut Outcome,
    on_first: impl Fn(),
) -> Result<(), String> {
    let request = shot.request(index).map_err(|e| format!("{e:#}"))?;
    let start = Instant::now();
    let response = shot.client.request(request).await.map_err(|e| transport(&e))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        return check_status(status, &bytes);
    }
    let mut buffer = Vec::new();
    let mut parser = SseCounter::new(shot.shape);
    let mut last: Option<Instant> = None;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| format!("stream broken after {} events: {e}", parser.events))?;
        let Ok(data) = frame.into_data() else { continue };
        let now = Instant::now();
        buffer.extend_from_slice(&data);
        for _ in 0..parser.feed(&mut buffer)? {
            match last {
                None => {
                    if let Some(ttfe) = &mut outcome.ttfe {
                        ttfe.record(now.duration_since(start));
                    }
                    on_first();
                }
                Some(previous) => {
                    if let Some(gap) = &mut outcome.gap {
                        gap.record(now.duration_since(previous));
                    }
                }
            }
            last = Some(now);
        }
    }
    if !parser.done || parser.events != u64::from(expected) {
        let end = parser.end();
        return Err(format!(
            "the stream had {} events{} (expected {expected} and {end})",
            parser.events,
            if parser.done { format!(" and {end}") } else { format!(" and no {end}") }
        ));
    }
    outcome.events += parser.events;
    outcome.latency.record(start.elapsed());
    outcome.done(Instant::now());
    Ok(())
}

/// Counts complete SSE events (`data:` lines up to a blank line) and notes the stream's end.
///
/// OpenAI's stream: every data event counts, `data: [DONE]` ends it. Anthropic's (a
/// translated stream): it must open with `message_start`; each `content_block_delta` counts
/// (the mock's events are one text delta each, so a faithful translation has as many);
/// `message_stop` ends it; an `error` event is a failure, since that is how the gateway ends a
/// stream it could not translate.
#[derive(Debug, Default)]
pub(crate) struct SseCounter {
    pub(crate) events: u64,
    pub(crate) done: bool,
    anthropic: bool,
    started: bool,
}

impl SseCounter {
    pub(crate) fn new(shape: Shape) -> Self {
        Self { anthropic: shape.is_anthropic(), ..Self::default() }
    }

    /// What ends a stream of this format, for error messages.
    fn end(&self) -> &'static str {
        if self.anthropic { "message_stop" } else { "[DONE]" }
    }

    /// Consumes the complete events at the start of `buffer`; returns how many counted events
    /// it held. An event after the end is an error.
    pub(crate) fn feed(&mut self, buffer: &mut Vec<u8>) -> Result<u64, String> {
        let mut new = 0;
        while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buffer.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let data = text.lines().filter_map(|l| l.strip_prefix("data:")).map(str::trim);
            let data: Vec<&str> = data.collect();
            if data.is_empty() {
                continue;
            }
            if self.done {
                return Err(format!("an event after {}: {}", self.end(), text.trim()));
            }
            if self.anthropic {
                let name = text.lines().find_map(|l| l.strip_prefix("event:")).map(str::trim);
                match (self.started, name) {
                    (_, Some("error")) => {
                        return Err(format!("an error event: {}", data.join("\n")));
                    }
                    (false, Some("message_start")) => self.started = true,
                    (false, _) => {
                        return Err(format!(
                            "the stream did not open with message_start: {}",
                            text.trim()
                        ));
                    }
                    (true, Some("content_block_delta")) => {
                        self.events += 1;
                        new += 1;
                    }
                    (true, Some("message_stop")) => self.done = true,
                    (true, _) => {}
                }
            } else if data == ["[DONE]"] {
                self.done = true;
            } else {
                self.events += 1;
                new += 1;
            }
        }
        Ok(new)
    }
}

async fn merge(mut tasks: JoinSet<Result<Outcome>>) -> Result<Outcome> {
    let mut all = Outcome::new()?;
    while let Some(result) = tasks.join_next().await {
        let outcome = result.context("a load task failed")??;
        all.ok += outcome.ok;
        all.events += outcome.events;
        all.last_done = match (all.last_done, outcome.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        all.latency.merge(&outcome.latency)?;
        for (into, from) in [(&mut all.ttfe, &outcome.ttfe), (&mut all.gap, &outcome.gap)] {
            if let Some(from) = from {
                into.get_or_insert(Recorder::new()?).merge(from)?;
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_counter_counts_events_split_across_frames() {
        let mut counter = SseCounter::new(Shape::Chat);
        let mut buffer = b"data: {\"a\":1}\n\ndata: {\"b\"".to_vec();
        assert_eq!(counter.feed(&mut buffer).unwrap(), 1);
        buffer.extend_from_slice(b":2}\n\n: comment\n\ndata: [DONE]\n\n");
        assert_eq!(counter.feed(&mut buffer).unwrap(), 1);
        assert_eq!(counter.events, 2);
        assert!(counter.done);
        assert!(buffer.is_empty());
        buffer.extend_from_slice(b"data: late\n\n");
        assert!(counter.feed(&mut buffer).is_err(), "an event after [DONE] is an error");
    }

    /// The mock's stream, as the gateway translates it for an Anthropic client, frame by
    /// frame.
    fn translated_stream(events: u32) -> Vec<Vec<u8>> {
        use cliproxy_translate::{Format, Pair};
        let mut translator = Pair::new(Format::Anthropic, Format::OpenAiChat).stream();
        let mut frames = Vec::new();
        for index in 0..events {
            let event = crate::mock::sse_event("bench-sse-5-1", index, events);
            let data = event.strip_prefix(b"data: ").unwrap().trim_ascii_end();
            let mut out = Vec::new();
            translator.feed(None, data, &mut out).unwrap();
            frames.push(out);
        }
        let mut out = Vec::new();
        translator.feed(None, b"[DONE]", &mut out).unwrap();
        translator.finish(&mut out);
        frames.push(out);
        frames
    }

    #[test]
    fn a_translated_stream_counts_one_event_per_mock_event() {
        let mut counter = SseCounter::new(Shape::AnthropicTools4k);
        let mut buffer = Vec::new();
        let mut counted = Vec::new();
        for frame in translated_stream(5) {
            buffer.extend_from_slice(&frame);
            counted.push(counter.feed(&mut buffer).unwrap());
        }
        // Each of the mock's events arrives as one text delta, at once; the end owes none.
        assert_eq!(counted, [1, 1, 1, 1, 1, 0]);
        assert_eq!(counter.events, 5);
        assert!(counter.done, "message_stop ends the stream");
        assert!(buffer.is_empty());
    }

    #[test]
    fn a_broken_translated_stream_is_an_error() {
        let frames = translated_stream(3);
        // The OpenAI stream itself (an untranslated reply) does not open as Anthropic's does.
        let mut counter = SseCounter::new(Shape::AnthropicTools4k);
        let mut buffer = crate::mock::sse_event("bench-sse-3-1", 0, 3).to_vec();
        let error = counter.feed(&mut buffer).unwrap_err();
        assert!(error.contains("did not open with message_start"), "{error}");
        // An error event in the middle (how the gateway ends a stream it cannot translate).
        let mut counter = SseCounter::new(Shape::AnthropicTools4k);
        let mut buffer = frames[0].clone();
        buffer.extend_from_slice(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\"}}\n\n",
        );
        let error = counter.feed(&mut buffer).unwrap_err();
        assert!(error.starts_with("an error event:"), "{error}");
        // A stream cut before its end (the mock's last event carries the finish reason) is
        // not done.
        let mut counter = SseCounter::new(Shape::AnthropicTools4k);
        let mut buffer = frames[..2].concat();
        assert_eq!(counter.feed(&mut buffer).unwrap(), 2);
        assert!(!counter.done);
    }
}
