//! The mock upstream: an OpenAI-format chat completions server on hyper 1 (HTTP/1.1).
//!
//! What it answers is chosen by the request's `model`, so that one mock process serves every
//! scenario and the gateway in front of it needs one provider (`bench-*`):
//!
//! - `bench-json`: a non-streamed completion with a `usage` block, after the mock's
//!   `--latency-ms` (0: at once);
//! - `bench-json-<ms>ms`: the same after a fixed latency of `<ms>` milliseconds;
//! - `bench-sse-<events>-<ms>` with `"stream": true`: `<events>` SSE events `<ms>` ms apart
//!   (the first at once, the last carrying `usage`), then `data: [DONE]`;
//! - `bench-fail`: a 500 in the OpenAI error format (as does every request once
//!   `--fail-after N` answers were served).
//!
//! Every request must carry `Authorization: Bearer <token>` with the mock's token (the vault
//! credential), so a reply proves the gateway sent the credential it holds and not the client's
//! key; anything else is a 401. `GET /stats` answers `{"served": N}`, the chat requests
//! answered with 2xx so far: the harness compares it with what the load generator counted, so
//! a gateway that answers without reaching the mock cannot go unnoticed.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::{Instant, Sleep};

/// How the mock behaves.
#[derive(Debug, Clone)]
pub struct MockOptions {
    /// The bearer token every request must carry.
    pub token: String,
    /// Latency of `bench-json` replies.
    pub latency: Duration,
    /// After this many 2xx answers, answer every chat request with a 500 (to check that
    /// the harness fails on errors in the middle of a run).
    pub fail_after: Option<u64>,
}

/// What the mock has answered.
#[derive(Debug, Default)]
pub struct MockStats {
    served: AtomicU64,
}

impl MockStats {
    /// Chat requests answered with 2xx.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, options: MockOptions, stats: Arc<MockStats>) {
    let options = Arc::new(options);
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        // Latency is what is measured: no Nagle delay on either side.
        let _ = stream.set_nodelay(true);
        let options = Arc::clone(&options);
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let options = Arc::clone(&options);
                let stats = Arc::clone(&stats);
                async move { Ok::<_, Infallible>(answer(request, &options, &stats).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

type MockBody = Either<Full<Bytes>, SseBody>;

/// What a `model` asks the mock for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// A JSON completion after the mock's default latency, or this one.
    Json(Option<Duration>),
    /// `events` SSE events `interval` apart.
    Sse { events: u32, interval: Duration },
    /// A 500.
    Fail,
}

impl Behaviour {
    pub(crate) fn parse(model: &str) -> Option<Self> {
        let rest = model.strip_prefix("bench-")?;
        if rest == "json" {
            return Some(Self::Json(None));
        }
        if rest == "fail" {
            return Some(Self::Fail);
        }
        if let Some(ms) = rest.strip_prefix("json-").and_then(|r| r.strip_suffix("ms")) {
            return Some(Self::Json(Some(Duration::from_millis(ms.parse().ok()?))));
        }
        let (events, ms) = rest.strip_prefix("sse-")?.split_once('-')?;
        let events: u32 = events.parse().ok()?;
        (events > 0).then_some(())?;
        Some(Self::Sse { events, interval: Duration::from_millis(ms.parse().ok()?) })
    }
}

async fn answer(
    request: Request<Incoming>,
    options: &MockOptions,
    stats: &MockStats,
) -> Response<MockBody> {
    if request.uri().path() == "/stats" {
        return json_response(StatusCode::OK, &json!({"served": stats.served()}));
    }
    let authorized = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|token| token == options.token);
    let Ok(body) = request.into_body().collect().await.map(|b| b.to_bytes()) else {
        return error(StatusCode::BAD_REQUEST, "cannot read the body");
    };
    if !authorized {
        return error(StatusCode::UNAUTHORIZED, "the mock's bearer token is missing or wrong");
    }
    if options.fail_after.is_some_and(|limit| stats.served() >= limit) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the mock's --fail-after limit is reached",
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let stream = body["stream"].as_bool().unwrap_or(false);
    let response = match Behaviour::parse(&model) {
        None => return error(StatusCode::NOT_FOUND, "unknown bench model"),
        Some(Behaviour::Fail) => return error(StatusCode::INTERNAL_SERVER_ERROR, "bench-fail"),
        Some(Behaviour::Sse { .. }) if !stream => {
            return error(StatusCode::BAD_REQUEST, "bench-sse models need \"stream\": true");
        }
        Some(Behaviour::Sse { events, interval }) => Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(Either::Right(SseBody::new(model, events, interval))),
        Some(Behaviour::Json(latency)) => {
            let latency = latency.unwrap_or(options.latency);
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            return served(stats, json_response(StatusCode::OK, &completion(&model)));
        }
    };
    match response {
        Ok(response) => served(stats, response),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the response"),
    }
}

fn served(stats: &MockStats, response: Response<MockBody>) -> Response<MockBody> {
    stats.served.fetch_add(1, Ordering::Relaxed);
    response
}

fn completion(model: &str) -> Value {
    json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the bench mock."},
            "finish_reason": "stop"
        }],
        "usage": {"prompt_tokens": 8, "completion_tokens": 7, "total_tokens": 15}
    })
}

fn json_response(status: StatusCode, body: &Value) -> Response<MockBody> {
    let mut response = Response::new(Either::Left(Full::new(Bytes::from(body.to_string()))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<MockBody> {
    json_response(
        status,
        &json!({"error": {"message": message, "type": "bench_mock", "code": status.as_u16()}}),
    )
}

/// An SSE body whose `k`th event is due at `start + k × interval` (a fixed schedule, so a
/// slow poll does not shift the events after it), then `data: [DONE]`.
pub(crate) struct SseBody {
    model: String,
    events: u32,
    sent: u32,
    interval: Duration,
    start: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl SseBody {
    fn new(model: String, events: u32, interval: Duration) -> Self {
        let start = Instant::now();
        Self {
            model,
            events,
            sent: 0,
            interval,
            start,
            sleep: Box::pin(tokio::time::sleep_until(start)),
        }
    }

    fn event(&self, index: u32) -> Bytes {
        sse_event(&self.model, index, self.events)
    }
}

/// Event `index` of a stream of `events` for `model`: one text delta each; the last one also
/// carries the finish reason and `usage`.
pub(crate) fn sse_event(model: &str, index: u32, events: u32) -> Bytes {
    let last = index + 1 == events;
    let mut chunk = json!({
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{
            "index": 0,
            "delta": {"content": "tok "},
            "finish_reason": if last { Value::from("stop") } else { Value::Null }
        }]
    });
    if last {
        chunk["usage"] =
            json!({"prompt_tokens": 8, "completion_tokens": events, "total_tokens": events + 8});
    }
    Bytes::from(format!("data: {chunk}\n\n"))
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent > this.events {
            return Poll::Ready(None);
        }
        if this.sent == this.events {
            this.sent += 1;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"data: [DONE]\n\n")))));
        }
        if this.sent > 0 {
            if this.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let next = this.start + this.interval * (this.sent + 1);
            this.sleep.as_mut().reset(next);
        } else {
            this.sleep.as_mut().reset(this.start + this.interval);
        }
        let frame = this.event(this.sent);
        this.sent += 1;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_name_the_behaviour() {
        assert_eq!(Behaviour::parse("bench-json"), Some(Behaviour::Json(None)));
        assert_eq!(
            Behaviour::parse("bench-json-5ms"),
            Some(Behaviour::Json(Some(Duration::from_millis(5))))
        );
        assert_eq!(
            Behaviour::parse("bench-sse-50-20"),
            Some(Behaviour::Sse { events: 50, interval: Duration::from_millis(20) })
        );
        assert_eq!(Behaviour::parse("bench-fail"), Some(Behaviour::Fail));
        for bad in ["gpt-4", "bench-", "bench-sse-0-20", "bench-sse-5", "bench-json-xms"] {
            assert_eq!(Behaviour::parse(bad), None, "{bad}");
        }
    }
}
