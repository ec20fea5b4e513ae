//! Response bodies: the upstream body wrapper that enforces the idle timeout and reads token
//! usage as frames pass, and a paced body for the mock provider. (The boxed body type every
//! response uses is `http_util::Body`.)

use std::collections::VecDeque;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use cliproxy_core::ErrorCode;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::api::ApiFormat;
use crate::error::ApiError;
use crate::http_util::BoxError;
use crate::usage::{Usage, UsageScanner};

/// How a proxied body ended; reported once, to the closure given to [`Tapped::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The upstream finished the body and the client received all of it.
    Complete(Option<Usage>),
    /// The upstream failed or went idle; the message says which.
    Failed(String, Option<Usage>),
    /// The client went away before the end.
    ClientGone(Option<Usage>),
}

/// The callback that receives a body's [`Outcome`].
pub(crate) type OnDone = Box<dyn FnOnce(Outcome) + Send>;

/// The upstream idle timeout fired.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent nothing for {0:?} (server.limits.stream_idle_timeout)")]
pub(crate) struct IdleTimeout(pub Duration);

/// The upstream ended an event stream in the middle of an event.
#[derive(Debug, thiserror::Error)]
#[error("upstream ended the event stream in the middle of an event")]
pub(crate) struct TruncatedEvent;

pin_project_lite::pin_project! {
    /// Wraps an upstream body: passes every frame through as soon as it arrives, fails the
    /// body when the upstream is silent for longer than the idle timeout, feeds data to a
    /// [`UsageScanner`] and reports the [`Outcome`] once, at the end or on drop.
    ///
    /// An event stream (`sse` set to the client's format) that fails at an event boundary
    /// (upstream error or idle timeout) ends with an error event in the client's format and
    /// a clean end of body, which the SDKs raise as an API error; one that fails or ends in
    /// the middle of an event is aborted (no final chunk), because no byte can take back the
    /// half event already sent, and an SDK that sees the body cut discards it.
    pub struct Tapped<B> {
        #[pin]
        inner: B,
        #[pin]
        idle: Sleep,
        idle_timeout: Duration,
        scanner: UsageScanner,
        on_done: Option<OnDone>,
        sse: Option<ApiFormat>,
        finished: bool,
    }

    impl<B> PinnedDrop for Tapped<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(on_done) = this.on_done.take() {
                on_done(Outcome::ClientGone(this.scanner.usage()));
            }
        }
    }
}

impl<B> Tapped<B> {
    /// Wraps `inner`; `sse` is the client's format when the body is an event stream, and
    /// then `scanner` is an event-stream one: its framer says where the stream stands.
    pub(crate) fn new(
        inner: B,
        idle_timeout: Duration,
        scanner: UsageScanner,
        on_done: OnDone,
        sse: Option<ApiFormat>,
    ) -> Self {
        Self {
            inner,
            idle: tokio::time::sleep(idle_timeout),
            idle_timeout,
            scanner,
            on_done: Some(on_done),
            sse,
            finished: false,
        }
    }
}

/// Reports a complete body once the task that polled it has yielded: hyper writes the last
/// bytes to the client first, and the usage parse, the audit event and the access log line
/// (tens of microseconds) leave the client's critical path. Nothing is lost: a runtime that
/// shuts down before running the task drops it, and dropping reports.
fn report_complete_after_yield(on_done: OnDone, scanner: &mut UsageScanner) {
    // The body is done with its scanner; an empty one (no allocation) takes its place.
    let scanner = std::mem::replace(scanner, UsageScanner::new(ApiFormat::OpenAi, false));
    let report = CompleteReport(Some((on_done, scanner)));
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => drop(runtime.spawn(async move { drop(report) })),
        Err(_) => drop(report),
    }
}

/// A complete body's report, made when dropped.
struct CompleteReport(Option<(OnDone, UsageScanner)>);

impl Drop for CompleteReport {
    fn drop(&mut self) {
        if let Some((on_done, mut scanner)) = self.0.take() {
            scanner.finish();
            on_done(Outcome::Complete(scanner.usage()));
        }
    }
}

/// How a failed body ends: with an error event and a clean end when it is an event stream
/// standing at an event boundary, with the error otherwise.
fn fail_frame(
    sse: Option<ApiFormat>,
    at_boundary: bool,
    finished: &mut bool,
    code: ErrorCode,
    error: BoxError,
) -> Option<Result<Frame<Bytes>, BoxError>> {
    match sse {
        Some(format) if at_boundary => {
            *finished = true;
            let message = format!("the upstream stream failed: {error}");
            Some(Ok(Frame::data(ApiError::new(code, message).sse_event(format))))
        }
        _ => Some(Err(error)),
    }
}

impl<B> http_body::Body for Tapped<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if *this.finished {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    // The scanner's framer also tells where the stream stands (`sse.rs`).
                    this.scanner.feed(data);
                }
                let deadline = Instant::now() + *this.idle_timeout;
                this.idle.as_mut().reset(deadline);
                // A server that knows the length stops polling after the last byte, so the
                // end is reported with the last frame rather than at a `None` never polled.
                let truncated = this.sse.is_some() && !this.scanner.at_event_boundary();
                if this.inner.is_end_stream()
                    && !truncated
                    && let Some(on_done) = this.on_done.take()
                {
                    report_complete_after_yield(on_done, this.scanner);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                let error: BoxError = error.into();
                if let Some(on_done) = this.on_done.take() {
                    on_done(Outcome::Failed(error.to_string(), this.scanner.usage()));
                }
                Poll::Ready(fail_frame(
                    *this.sse,
                    this.scanner.at_event_boundary(),
                    this.finished,
                    ErrorCode::UpstreamFailure,
                    error,
                ))
            }
            Poll::Ready(None) if this.sse.is_some() && !this.scanner.at_event_boundary() => {
                // A clean end of body in the middle of an event is a truncated stream: passed
                // on as a clean end, the client would take a cut answer for a whole one.
                let error = TruncatedEvent;
                if let Some(on_done) = this.on_done.take() {
                    this.scanner.finish();
                    on_done(Outcome::Failed(error.to_string(), this.scanner.usage()));
                }
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(None) => {
                if let Some(on_done) = this.on_done.take() {
                    report_complete_after_yield(on_done, this.scanner);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                let error = IdleTimeout(*this.idle_timeout);
                if let Some(on_done) = this.on_done.take() {
                    on_done(Outcome::Failed(error.to_string(), this.scanner.usage()));
                }
                Poll::Ready(fail_frame(
                    *this.sse,
                    this.scanner.at_event_boundary(),
                    this.finished,
                    ErrorCode::UpstreamTimeout,
                    Box::new(error),
                ))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A stream that stops mid-event is not at its end yet: the next poll reports it.
        let truncated = self.sse.is_some() && !self.scanner.at_event_boundary();
        self.finished || (self.inner.is_end_stream() && !truncated)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A body that yields prepared chunks with a pause before each one; the mock provider's
    /// streams. The pauses run on the tokio timer, so a paused test clock controls them.
    pub struct Paced {
        chunks: VecDeque<Bytes>,
        pause: Duration,
        #[pin]
        timer: Sleep,
        armed: bool,
    }
}

impl Paced {
    /// Chunks sent `pause` apart (the first one after `pause` too).
    pub(crate) fn new(chunks: Vec<Bytes>, pause: Duration) -> Self {
        Self { chunks: chunks.into(), pause, timer: tokio::time::sleep(pause), armed: true }
    }
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if this.chunks.is_empty() {
            return Poll::Ready(None);
        }
        if !this.pause.is_zero() {
            if !*this.armed {
                let deadline = Instant::now() + *this.pause;
                this.timer.as_mut().reset(deadline);
                *this.armed = true;
            }
            ready!(this.timer.as_mut().poll(cx));
            *this.armed = false;
        }
        Poll::Ready(this.chunks.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::BodyExt;

    use super::*;
    use crate::api::ApiFormat;
    use crate::stream_usage::Stripped;

    fn recorder() -> (OnDone, Arc<Mutex<Vec<Outcome>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        (Box::new(move |outcome| sink.lock().unwrap().push(outcome)), seen)
    }

    /// A recorder that also signals each report, for the reports made after a yield.
    fn awaited_recorder() -> (OnDone, tokio::sync::mpsc::UnboundedReceiver<Outcome>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (Box::new(move |outcome| drop(tx.send(outcome))), rx)
    }

    /// A body that yields its chunks, then ends or (with `hang`) stays silent forever.
    struct Script {
        chunks: VecDeque<Bytes>,
        hang: bool,
    }

    impl http_body::Body for Script {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            match self.chunks.pop_front() {
                Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
                None if self.hang => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn script(chunks: &[&'static [u8]], hang: bool) -> Script {
        Script { chunks: chunks.iter().map(|c| Bytes::from_static(c)).collect(), hang }
    }

    #[tokio::test(start_paused = true)]
    async fn passes_frames_and_reports_usage_once() {
        let inner = script(
            &[
                b"data: {\"choices\":[]}\n\n",
                b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
            ],
            false,
        );
        let (on_done, mut seen) = awaited_recorder();
        let scanner = UsageScanner::new(ApiFormat::OpenAi, true);
        let body = Tapped::new(inner, Duration::from_secs(5), scanner, on_done, None);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert!(bytes.ends_with(b"data: [DONE]\n\n"));
        let expected = Outcome::Complete(Some(Usage::new(7, 3)));
        assert_eq!(seen.recv().await, Some(expected));
        assert_eq!(seen.recv().await, None, "reported once");
    }

    /// Stripped after the tap, the scanner reads the usage the client does not get; a frame
    /// that is all held back (part of an event) is not passed on as an empty frame.
    #[tokio::test(start_paused = true)]
    async fn a_stripped_stream_is_counted_before_it_is_stripped() {
        let inner = script(
            &[
                b"data: {\"choices\":[{\"index\":0}],\"usage\":null}\n\ndata: {\"cho",
                b"ices\":[],\"usage\":{\"prompt_tokens\":7,",
                b"\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
            ],
            false,
        );
        let (on_done, mut seen) = awaited_recorder();
        let scanner = UsageScanner::new(ApiFormat::OpenAi, true);
        let body = Stripped::new(Tapped::new(
            inner,
            Duration::from_secs(5),
            scanner,
            on_done,
            Some(ApiFormat::OpenAi),
        ));
        let mut body = Box::pin(body);
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert!(frames.iter().all(|f| !f.is_empty()), "{frames:?}");
        assert_eq!(frames.concat(), b"data: {\"choices\":[{\"index\":0}]}\n\ndata: [DONE]\n\n");
        // An upstream length is not the client's: the stripped body is shorter.
        let inner = http_body_util::Full::new(Bytes::from_static(b"data: {\"usage\":null}\n\n"));
        let (on_done, _) = recorder();
        let scanner = UsageScanner::new(ApiFormat::OpenAi, true);
        let body = Stripped::new(Tapped::new(
            inner,
            Duration::from_secs(5),
            scanner,
            on_done,
            Some(ApiFormat::OpenAi),
        ));
        assert_eq!(http_body::Body::size_hint(&body).exact(), None);
        assert_eq!(body.collect().await.unwrap().to_bytes(), &b"data: {}\n\n"[..]);
        let expected = Outcome::Complete(Some(Usage::new(7, 3)));
        assert_eq!(seen.recv().await, Some(expected));
    }

    /// A stripped stream that ends in the middle of an event is still cut, not ended cleanly.
    #[tokio::test(start_paused = true)]
    async fn a_stripped_stream_ending_mid_event_is_cut() {
        for last in [&b"data: {\"usage\":null,\"cho"[..], b"data: [DONE]\n"] {
            let (on_done, seen) = recorder();
            let scanner = UsageScanner::new(ApiFormat::OpenAi, true);
            let chunks: Vec<Bytes> = vec![
                Bytes::from_static(b"data: {\"usage\":null}\n\n"),
                Bytes::copy_from_slice(last),
            ];
            let inner = Script { chunks: chunks.into(), hang: false };
            let body = Stripped::new(Tapped::new(
                inner,
                Duration::from_secs(2),
                scanner,
                on_done,
                Some(ApiFormat::OpenAi),
            ));
            assert!(body.collect().await.is_err(), "{last:?}");
            assert!(matches!(seen.lock().unwrap()[0], Outcome::Failed(..)), "{last:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn idle_upstream_fails_the_body() {
        let (on_done, seen) = recorder();
        let scanner = UsageScanner::new(ApiFormat::OpenAi, true);
        let body = Tapped::new(
            script(&[b"data: {}\n\n"], true),
            Duration::from_secs(2),
            scanner,
            on_done,
            None,
        );
        let error = body.collect().await.unwrap_err().to_string();
        assert!(error.contains("stream_idle_timeout"), "{error}");
        assert!(matches!(seen.lock().unwrap()[0], Outcome::Failed(..)));
    }

    /// An event stream that goes idle after a whole event ends with an error event in the
    /// client's format and a clean end.
    #[tokio::test(start_paused = true)]
    async fn idle_event_stream_ends_with_an_error_event() {
        let (on_done, seen) = recorder();
        let scanner = UsageScanner::new(ApiFormat::Anthropic, true);
        let inner = script(&[b"event: ping\r\n", b"data: {}\r\n\r\n"], true);
        let body = Tapped::new(
            inner,
            Duration::from_secs(2),
            scanner,
            on_done,
            Some(ApiFormat::Anthropic),
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        let text = String::from_utf8(bytes.to_vec()).unwrap();
        let event =
            text.strip_prefix("event: ping\r\ndata: {}\r\n\r\nevent: error\ndata: ").unwrap();
        let error: serde_json::Value = serde_json::from_str(event.trim_end()).unwrap();
        assert_eq!(error["type"], "error");
        assert_eq!(error["error"]["type"], "api_error");
        assert!(error["error"]["message"].as_str().unwrap().contains("stream_idle_timeout"));
        assert!(matches!(seen.lock().unwrap()[0], Outcome::Failed(..)));
    }

    /// An event stream that ends (or fails) in the middle of an event is cut, not ended: a
    /// clean end would pass a truncated answer off as a whole one.
    #[tokio::test(start_paused = true)]
    async fn event_stream_ending_mid_event_is_cut() {
        for hang in [false, true] {
            let (on_done, seen) = recorder();
            let scanner = UsageScanner::new(ApiFormat::OpenAi, true);
            let inner = script(&[b"data: {}\n\n", b"data: {\"cho"], hang);
            let body = Tapped::new(
                inner,
                Duration::from_secs(2),
                scanner,
                on_done,
                Some(ApiFormat::OpenAi),
            );
            assert!(body.collect().await.is_err(), "hang: {hang}");
            assert!(matches!(seen.lock().unwrap()[0], Outcome::Failed(..)), "hang: {hang}");
        }
    }

    #[tokio::test]
    async fn dropped_body_reports_client_gone() {
        let (on_done, seen) = recorder();
        let scanner = UsageScanner::new(ApiFormat::Anthropic, true);
        let body = Tapped::new(script(&[], true), Duration::from_secs(60), scanner, on_done, None);
        drop(body);
        assert_eq!(*seen.lock().unwrap(), [Outcome::ClientGone(None)]);
    }

    /// hyper stops polling a body of known length after its last byte; the body is complete
    /// then, with its usage, even though nobody saw the final `None`. The report comes only
    /// after the last frame was handed over (off the client's critical path), on the
    /// current-thread runtime the gateway uses on one CPU too.
    #[tokio::test]
    async fn known_length_body_is_complete_after_its_last_frame() {
        let (on_done, mut seen) = awaited_recorder();
        let scanner = UsageScanner::new(ApiFormat::OpenAi, false);
        let json = br#"{"usage":{"prompt_tokens":17,"completion_tokens":9}}"#;
        let inner = http_body_util::Full::new(Bytes::from_static(json));
        let mut body =
            Box::pin(Tapped::new(inner, Duration::from_secs(60), scanner, on_done, None));
        let frame = body.frame().await.unwrap().unwrap();
        assert_eq!(frame.data_ref().map(|d| &d[..]), Some(&json[..]));
        assert!(http_body::Body::is_end_stream(&*body));
        assert!(seen.try_recv().is_err(), "reported before the frame reached the client");
        drop(body);
        let expected = Outcome::Complete(Some(Usage::new(17, 9)));
        assert_eq!(seen.recv().await, Some(expected));
        assert_eq!(seen.recv().await, None, "reported once");
    }

    /// A runtime that stops before the report ran still makes it: the dropped task reports.
    #[test]
    fn a_report_pending_at_shutdown_is_made_when_the_runtime_drops() {
        let (on_done, seen) = recorder();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        runtime.block_on(async {
            let scanner = UsageScanner::new(ApiFormat::OpenAi, false);
            let json = br#"{"usage":{"prompt_tokens":2,"completion_tokens":1}}"#;
            let inner = http_body_util::Full::new(Bytes::from_static(json));
            let mut body =
                Box::pin(Tapped::new(inner, Duration::from_secs(60), scanner, on_done, None));
            assert!(body.frame().await.is_some());
        });
        assert!(seen.lock().unwrap().is_empty(), "the report waits for a yield");
        drop(runtime);
        let expected = Outcome::Complete(Some(Usage::new(2, 1)));
        assert_eq!(*seen.lock().unwrap(), [expected]);
    }

    #[tokio::test(start_paused = true)]
    async fn paced_body_waits_between_chunks() {
        let start = Instant::now();
        let chunks = vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")];
        let body = Paced::new(chunks, Duration::from_millis(100));
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"ab");
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }
}
