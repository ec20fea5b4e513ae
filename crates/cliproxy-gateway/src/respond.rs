//! The response stage: what every answer gets on its way out — the request id, the headers
//! that tell clients not to retry a wrong key or hold a slow connection, the security and
//! CORS headers, the rate-limit standing of a success — and, for a provider's answer, the
//! tap on its body that enforces the idle timeout, reads the token usage as it passes and
//! reports how the body ended to the finishing stage; the usage the gateway asked for on the
//! client's behalf is taken out after the tap has read it.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use crate::body::{OnDone, Tapped};
use crate::context::RequestContext;
use crate::cors::Cors;
use crate::guard::Guard;
use crate::http_util::Body;
use crate::stream_usage::Stripped;
use crate::translate_stream::Translated;
use crate::usage::UsageScanner;

/// The header carrying the gateway's request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The header the Anthropic and OpenAI SDKs (and the CLIs built on them) read before retrying.
const SHOULD_RETRY_HEADER: &str = "x-should-retry";

/// Adds what every answer carries; `cors_origin` is what [`Cors::allowed_origin`] said of
/// the request (`None` when CORS is off).
pub(crate) fn decorate(
    response: &mut Response<Body>,
    ctx: &RequestContext,
    guard: &Guard,
    cors_origin: Option<Option<HeaderValue>>,
) {
    if let Ok(value) = HeaderValue::try_from(ctx.request_id.as_str()) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    // A request whose body did not arrive in time ends its connection (HTTP/1.1; HTTP/2
    // drops the header and ends only the stream): the rest of that body must not hold the
    // slot while hyper drains it.
    if response.status() == StatusCode::REQUEST_TIMEOUT {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    // A wrong key stays wrong: Claude Code, Codex and the SDKs retry a 401 (Claude Code for
    // minutes) unless told not to, and only then tell the user to fix the key. Set here so
    // that every 401 carries it, the management plane's included.
    if response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(SHOULD_RETRY_HEADER, HeaderValue::from_static("false"));
    }
    // Security headers go on every answer the pipeline gives, errors and upstream replies
    // included.
    guard.headers.apply(response.headers_mut());
    // CORS headers likewise, so that a page from a listed origin can read errors too.
    if let Some(origin) = cors_origin {
        Cors::decorate(origin, response.headers_mut());
    }
    if let Some(admitted) = ctx.rate
        && response.status().is_success()
    {
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", HeaderValue::from(admitted.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(admitted.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(admitted.reset_after_secs()));
    }
}

/// Puts the tap on a provider's answer: the body reports how it ended (with the usage read
/// from it on the way) to the finishing stage, and a silent upstream is cut off after
/// `idle_timeout`.
pub(crate) fn tap(
    response: Response<Body>,
    ctx: RequestContext,
    idle_timeout: Duration,
) -> Response<Body> {
    let scanner = match ctx.provider_usage {
        // A whole translated reply whose usage was read in the provider's format.
        Some(usage) => UsageScanner::reporting(usage),
        None => UsageScanner::new(ctx.format, ctx.sse),
    };
    let sse = ctx.sse.then_some(ctx.format);
    let strip = ctx.strip_usage && ctx.sse;
    // A translated stream is rewritten for the client after the tap has read the provider's
    // own events (`translate_stream.rs`).
    let translation = ctx.translation().filter(|_| ctx.sse);
    let (parts, body) = response.into_parts();
    // The finishing stage, called by the body when it ends.
    let on_done: OnDone = Box::new(move |outcome| ctx.finish(outcome));
    let body = Tapped::new(body, idle_timeout, scanner, on_done, sse);
    // The usage the gateway asked for on the client's behalf is taken out after the tap has
    // read it.
    let body = match (translation, strip) {
        (Some(pair), true) => Stripped::new(Translated::new(body, pair)).boxed_unsync(),
        (Some(pair), false) => Translated::new(body, pair).boxed_unsync(),
        (None, true) => Stripped::new(body).boxed_unsync(),
        (None, false) => body.boxed_unsync(),
    };
    Response::from_parts(parts, body)
}
