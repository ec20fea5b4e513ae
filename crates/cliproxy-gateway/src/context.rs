//! The per-request context: what every stage of the request path learns about one request
//! and what the finishing stage (`finish.rs`) needs to settle it, log it and audit it.
//!
//! [`RequestContext`] is made in `Gateway::handle` before the first stage runs and handed
//! to each stage in turn as `&mut`; a stage writes what it found out (the client's address,
//! the key's name, the model, the provider, the credential tried, the reservations held) so
//! that the access line and the audit event say how far the request got, whichever stage
//! answered it. It is plain data: the finishing stage is an explicit call (`finish.rs`),
//! made on every path, with one `Drop` safety net there for a request that is dropped before
//! it has an answer.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use slog::{Logger, o};
use tokio::time::Instant;

use crate::api::ApiFormat;
use crate::guard::Guard;
use crate::http_util::truncate;

/// What a translated embeddings or token-count request (`translation.rs`) needs to
/// translate its reply; kept here, with the rest of what the stages pass on, so that the
/// translation stage depends on the context and not the other way round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OtherCall {
    Embeddings(cliproxy_translate::embeddings::EmbeddingsCall),
    CountTokens,
}

/// One request's context, shared by the stages of the request path; written once, by the
/// finishing stage, when the response ends or when the request is dropped before it has an
/// answer.
pub(crate) struct RequestContext {
    /// The gateway's logger: the request's own fields are written with the line, not held
    /// in a child logger (two fewer allocations and four fewer strings per request).
    pub(crate) log: Logger,
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) peer: SocketAddr,
    pub(crate) status: u16,
    pub(crate) proxied: bool,
    pub(crate) sse: bool,
    pub(crate) format: ApiFormat,
    pub(crate) client: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) provider: Option<String>,
    /// The routed model's price, looked up under the provider's name for it (the one it
    /// bills): `None` when the model is unpriced.
    pub(crate) price: Option<crate::pricing::Price>,
    pub(crate) credential: Option<String>,
    pub(crate) attempts: usize,
    pub(crate) error: Option<String>,
    /// The client's address (behind a trusted proxy, the one it names).
    pub(crate) client_ip: Option<IpAddr>,
    /// The limiter standing sent as `X-RateLimit-*` on a successful answer.
    pub(crate) rate: Option<cliproxy_netguard::Admitted>,
    /// What a proxied request holds from the minute limits and quotas, until the finishing
    /// stage settles or cancels it.
    pub(crate) admission: Option<cliproxy_netguard::Ticket>,
    /// Whether the request went to a provider (upstream or the mock): only then do its
    /// reservations count.
    pub(crate) sent: bool,
    /// When the request first went to the provider.
    pub(crate) sent_at: Option<Instant>,
    /// Whether the gateway asked the provider for the usage of a stream whose client did not
    /// ask for it: the stream's usage chunk is then taken out on the way.
    pub(crate) strip_usage: bool,
    /// The client's and the provider's formats of a request to a generating endpoint
    /// (`translation.rs`); they differ when the request is translated.
    pub(crate) formats: Option<cliproxy_translate::Pair>,
    /// A translated embeddings or token-count request: what its reply needs.
    pub(crate) other: Option<OtherCall>,
    /// A call that generates nothing (`/v1/messages/count_tokens`: its `input_tokens` is the
    /// answer, not usage, and the provider does not bill it): settled as zero tokens rather
    /// than charged the estimate that stands in for an unreported usage.
    pub(crate) free: bool,
    /// The usage read from a whole translated reply in the provider's own format, before it
    /// was written in the client's (`translation.rs`): the client's format may have no field
    /// for some of it (Anthropic's cache writes in an OpenAI or Gemini reply), so the tap
    /// reports this instead of reading the translated body.
    pub(crate) provider_usage: Option<crate::usage::Usage>,
    pub(crate) request_id: String,
    pub(crate) guard: Arc<Guard>,
    /// When the request arrived.
    pub(crate) started: Instant,
    /// Whether the finishing stage ran (explicitly, or from the drop safety net): it runs
    /// once.
    pub(crate) finished: bool,
}

impl RequestContext {
    pub(crate) fn new(
        log: &Logger,
        request_id: &str,
        method: &Method,
        path: &str,
        peer: SocketAddr,
        guard: Arc<Guard>,
        started: Instant,
    ) -> Self {
        Self {
            log: log.clone(),
            method: method.clone(),
            // The path only: the query string may hold a key the client should not have sent.
            path: truncate(path, 200),
            peer,
            status: 0,
            proxied: false,
            sse: false,
            format: ApiFormat::OpenAi,
            client: None,
            model: None,
            provider: None,
            price: None,
            credential: None,
            attempts: 0,
            error: None,
            client_ip: None,
            rate: None,
            admission: None,
            sent: false,
            sent_at: None,
            strip_usage: false,
            formats: None,
            other: None,
            free: false,
            provider_usage: None,
            request_id: request_id.to_owned(),
            guard,
            started,
            finished: false,
        }
    }

    /// A logger carrying the request's fields, for handlers that log on their own.
    pub(crate) fn request_log(&self) -> Logger {
        self.log.new(o!("request_id" => self.request_id.clone(),
            "method" => self.method.to_string(), "path" => self.path.clone(), "peer" => self.peer))
    }
}

/// Request ids: a random per-process prefix and a counter; unique, cheap, and not guessable
/// across restarts.
pub(crate) struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    pub(crate) fn new() -> Self {
        let mut bytes = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        Self { prefix: u32::from_le_bytes(bytes), counter: AtomicU64::new(0) }
    }

    pub(crate) fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("req_{:08x}{n:012x}", self.prefix)
    }
}

impl RequestContext {
    /// The pair of formats when the request is translated; `None` when it goes as it came.
    pub(crate) fn translation(&self) -> Option<cliproxy_translate::Pair> {
        self.formats.filter(|pair| !pair.is_identity())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique() {
        let ids = RequestIds::new();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        assert!(a.starts_with("req_") && a.len() == 24, "{a}");
    }
}
