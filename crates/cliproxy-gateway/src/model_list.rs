//! The model names behind a provider's glob patterns (`gpt-*`), as the provider lists them
//! itself: fetched with a vault credential, in the provider's own format, cached per provider
//! and shared by every listing (`GET /v1/models` and its Anthropic and Gemini shapes).
//!
//! The upstream's answer is untrusted network input: its size is capped before it is read, it
//! is parsed defensively (a malformed entry is skipped, a malformed page ends the fetch as a
//! failure), pagination stops after [`MAX_PAGES`] pages, and nothing in it can panic the
//! gateway. The cache keeps a list for [`CACHE_TTL`]; a failed fetch keeps the last good list
//! and is not retried for [`FAILURE_TTL`], so a listing storm cannot hammer a failing upstream.
//! One fetch per provider is in flight at a time: concurrent listings wait for it and share
//! its result. A provider whose list was never fetched contributes nothing for its globs.
//!
//! This module does not know the gateway: the caller hands it the provider's client, base URL,
//! credential pool and timeouts ([`Upstream`]), the same ones forwarded requests use.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cliproxy_netguard::Clock;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use slog::{Logger, warn};

use crate::config::{BaseUrl, LimitsConfig, ProviderKind};
use crate::pool::{PoolCell, SlotAuth};
use crate::providers;
use crate::refresh::{self, Vault};
use crate::upstream::HttpClient;

/// How long a fetched list is served before the next listing fetches it again. Model lists
/// change a few times a year; ten minutes makes a new model appear soon enough while a busy
/// gateway asks the upstream six times an hour at most.
pub(crate) const CACHE_TTL: Duration = Duration::from_secs(600);

/// How long a failed fetch is remembered: listings in that time get the last good list (or
/// nothing) without asking the upstream again.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(30);

/// The largest listing body read from the upstream, per page. OpenAI's full list is about
/// 10 KiB and Gemini's about 60 KiB; anything near this cap is not a model list.
pub(crate) const MAX_LIST_BODY: usize = 4 * 1024 * 1024;

/// Most pages fetched for one list (Anthropic and Gemini paginate; 1000 names a page).
pub(crate) const MAX_PAGES: usize = 10;

/// Most names kept from one provider, all pages together.
const MAX_NAMES: usize = 10_000;

/// Longest model name kept; longer ones are skipped as malformed.
pub const MAX_MODEL_NAME_LEN: usize = 256;

/// Longest pagination cursor followed; a longer one ends the list there.
pub const MAX_MODEL_LIST_CURSOR_LEN: usize = 1024;

/// Everything a fetch needs from the gateway, borrowed for the duration of one listing: the
/// provider's own HTTP client, base URL and credential pool, as forwarded requests use them.
pub(crate) struct Upstream<'a> {
    /// The provider's configured name, for logs.
    pub name: &'a str,
    pub kind: ProviderKind,
    /// The provider's base URL; a credential's own (already checked against `egress` and the
    /// transport rules when it entered the pool) replaces it.
    pub base_url: &'a BaseUrl,
    pub client: &'a HttpClient,
    pub pool: &'a PoolCell,
    pub vault: &'a Arc<Vault>,
    /// `server.limits`: the first-byte timeout bounds the answer's head and then its body.
    pub limits: &'a LimitsConfig,
    /// `auth.device_fingerprint`, sent as on every forwarded request.
    pub fingerprint: Option<&'a (HeaderName, HeaderValue)>,
    pub clock: &'a dyn Clock,
    pub log: &'a Logger,
}

/// One provider's cached list.
#[derive(Debug, Default)]
pub(crate) struct ListCache {
    state: Mutex<State>,
    /// Held while a fetch is in flight, so that there is one at a time.
    flight: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct State {
    /// The last list fetched successfully, sorted and without duplicates.
    names: Option<Arc<[String]>>,
    /// When the last fetch ended (monotonic nanoseconds) and whether it succeeded.
    checked: Option<(u64, bool)>,
}

impl State {
    /// The list when it may be served without asking the upstream at `now`; `None` when a
    /// fetch is due. A failure within [`FAILURE_TTL`] serves the last good list (or nothing).
    fn fresh(&self, now: u64) -> Option<Arc<[String]>> {
        let (at, ok) = self.checked?;
        let ttl = if ok { CACHE_TTL } else { FAILURE_TTL };
        let ttl = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        (now.saturating_sub(at) < ttl).then(|| self.names.clone().unwrap_or_else(empty))
    }
}

fn empty() -> Arc<[String]> {
    Arc::from(Vec::new())
}

impl ListCache {
    /// The provider's model names: from the cache while it is fresh, else fetched (one fetch
    /// at a time; the others wait for it). A failed fetch is logged and leaves the last good
    /// list in place; with none, the answer is empty.
    pub(crate) async fn names(&self, upstream: &Upstream<'_>) -> Arc<[String]> {
        if let Some(names) = self.state().fresh(upstream.clock.monotonic_nanos()) {
            return names;
        }
        let _flight = self.flight.lock().await;
        // A fetch that finished while this listing waited has refreshed the cache.
        if let Some(names) = self.state().fresh(upstream.clock.monotonic_nanos()) {
            return names;
        }
        let fetched = fetch(upstream).await;
        let now = upstream.clock.monotonic_nanos();
        let mut state = self.state();
        match fetched {
            Ok(mut names) => {
                names.sort_unstable();
                names.dedup();
                state.names = Some(Arc::from(names));
                state.checked = Some((now, true));
            }
            Err(failure) => {
                warn!(upstream.log, "could not fetch a provider's model list; its glob patterns list the last good list, or nothing";
                    "provider" => upstream.name, "credential" => failure.credential.as_deref().unwrap_or("-"),
                    "status" => failure.status, "error" => &failure.reason,
                    "retry_after_secs" => FAILURE_TTL.as_secs());
                state.checked = Some((now, false));
            }
        }
        state.names.clone().unwrap_or_else(empty)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Why a fetch failed, for the log line. Holds no secret and nothing of the upstream's body.
#[derive(Debug)]
struct Failure {
    /// The vault id of the credential used, when one was.
    credential: Option<String>,
    /// The upstream's status, when it answered (0 otherwise).
    status: u16,
    reason: String,
}

impl Failure {
    fn new(reason: impl Into<String>) -> Self {
        Self { credential: None, status: 0, reason: reason.into() }
    }
}

/// Fetches every page of the provider's list with one credential from its pool.
async fn fetch(upstream: &Upstream<'_>) -> Result<Vec<String>, Failure> {
    // A credential that is resting is skipped, as a forwarded request would skip it.
    let pool = upstream.pool.load();
    let index = pool.pick(&[], "").map_err(|wait| {
        Failure::new(match wait {
            None => "the provider has no credentials",
            Some(_) => "every credential of the provider is cooling down",
        })
    })?;
    let slot = pool.slot(index);
    let with_credential = |mut failure: Failure| {
        failure.credential = Some(slot.id.clone());
        failure
    };
    let token = refresh::bearer(slot, upstream.name, upstream.client, upstream.vault)
        .await
        .map_err(|failure| with_credential(Failure::new(failure.reason)))?;
    let oauth = matches!(slot.auth, SlotAuth::OAuth(_));
    let mut headers = http::HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Some((name, value)) = upstream.fingerprint {
        headers.insert(name.clone(), value.clone());
    }
    providers::apply_credential(upstream.kind, &mut headers, &token, oauth).map_err(|_| {
        with_credential(Failure::new("the credential holds characters not allowed in a header"))
    })?;
    let base = slot.base_url.as_ref().unwrap_or(upstream.base_url);

    let mut names = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let path = list_path(upstream.kind, cursor.as_deref());
        let uri = base
            .join(&path)
            .map_err(|_| with_credential(Failure::new("the list URL cannot be built")))?;
        let mut request = Request::new(Full::new(Bytes::new()));
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers.clone();
        let body = send(upstream, request).await.map_err(with_credential)?;
        let page = parse_model_list(upstream.kind, &body).map_err(|reason| {
            with_credential(Failure { credential: None, status: 200, reason: reason.to_owned() })
        })?;
        names.extend(page.names);
        names.truncate(MAX_NAMES);
        match page.next {
            // A cursor that does not move would loop until the page cap.
            Some(next) if names.len() < MAX_NAMES && cursor.as_ref() != Some(&next) => {
                cursor = Some(next);
            }
            _ => return Ok(names),
        }
    }
    warn!(upstream.log, "a provider's model list has more pages than are fetched; the rest is not listed";
        "provider" => upstream.name, "pages" => MAX_PAGES);
    Ok(names)
}

/// One request: the answer's head within the first-byte timeout, then its body (at most
/// [`MAX_LIST_BODY`] bytes) within the same time again.
async fn send(upstream: &Upstream<'_>, request: Request<Full<Bytes>>) -> Result<Bytes, Failure> {
    let timeout = upstream.limits.upstream_first_byte_timeout;
    let response = match tokio::time::timeout(timeout, upstream.client.request(request)).await {
        Err(_) => return Err(Failure::new(format!("no answer within {timeout:?}"))),
        Ok(Err(error)) if error.is_connect() => {
            return Err(Failure::new("could not connect to the provider"));
        }
        Ok(Err(_)) => return Err(Failure::new("the request failed before an answer arrived")),
        Ok(Ok(response)) => response,
    };
    let status = response.status().as_u16();
    if !response.status().is_success() {
        // The body is not read: an error body may echo the credential, and the log line needs
        // only the status.
        return Err(Failure {
            credential: None,
            status,
            reason: "the provider refused".to_owned(),
        });
    }
    let too_large = || Failure {
        credential: None,
        status,
        reason: format!("the list is larger than {} MiB", MAX_LIST_BODY / (1024 * 1024)),
    };
    let declared = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_LIST_BODY as u64) {
        return Err(too_large());
    }
    let body = Limited::new(response.into_body(), MAX_LIST_BODY);
    match tokio::time::timeout(timeout, body.collect()).await {
        Err(_) => Err(Failure {
            credential: None,
            status,
            reason: format!("the list did not arrive within {timeout:?}"),
        }),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => {
            Err(Failure { credential: None, status, reason: "the list was cut off".to_owned() })
        }
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The list endpoint of a provider of `kind`, at page `cursor`.
fn list_path(kind: ProviderKind, cursor: Option<&str>) -> String {
    match (kind, cursor) {
        (ProviderKind::Claude, None) => "/v1/models?limit=1000".to_owned(),
        (ProviderKind::Claude, Some(after)) => {
            format!("/v1/models?limit=1000&after_id={}", percent_encode(after))
        }
        (ProviderKind::Gemini, None) => "/v1beta/models?pageSize=1000".to_owned(),
        (ProviderKind::Gemini, Some(token)) => {
            format!("/v1beta/models?pageSize=1000&pageToken={}", percent_encode(token))
        }
        _ => "/v1/models".to_owned(),
    }
}

/// `text` with every byte but RFC 3986's unreserved ones percent-encoded, for a query value.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// One page of a provider's model list as the gateway reads it: the names it may list and the
/// cursor of the next page, if any.
#[derive(Debug, PartialEq, Eq)]
pub struct ModelListPage {
    /// Each usable name on the page (at most [`MAX_MODEL_NAME_LEN`] bytes, no control
    /// character, space or `*`), in the upstream's order.
    pub names: Vec<String>,
    /// The cursor of the next page (Anthropic's `last_id` when `has_more`, Gemini's
    /// `nextPageToken`; at most [`MAX_MODEL_LIST_CURSOR_LEN`] bytes); OpenAI's list has one page.
    pub next: Option<String>,
}

/// Reads one page of `kind`'s model list (untrusted network bytes: public for the fuzz target
/// `fuzz/fuzz_targets/model_list.rs`). A page that is not such a list is an error naming what
/// is missing; an entry without a usable name is skipped.
pub fn parse_model_list(kind: ProviderKind, body: &[u8]) -> Result<ModelListPage, &'static str> {
    let value: Value = serde_json::from_slice(body).map_err(|_| "the list is not JSON")?;
    match kind {
        ProviderKind::Gemini => {
            let models = value["models"].as_array().ok_or("the list has no `models` array")?;
            let names = models
                .iter()
                .filter_map(|model| model["name"].as_str()?.strip_prefix("models/"))
                .filter(|name| usable(name))
                .map(str::to_owned)
                .collect();
            let next = value["nextPageToken"].as_str().filter(|t| cursor_ok(t)).map(str::to_owned);
            Ok(ModelListPage { names, next })
        }
        _ => {
            let data = value["data"].as_array().ok_or("the list has no `data` array")?;
            let names = data
                .iter()
                .filter_map(|model| model["id"].as_str())
                .filter(|name| usable(name))
                .map(str::to_owned)
                .collect();
            // Only Anthropic's list pages; OpenAI's comes whole.
            let next = (kind == ProviderKind::Claude && value["has_more"] == Value::Bool(true))
                .then(|| value["last_id"].as_str().filter(|id| cursor_ok(id)).map(str::to_owned))
                .flatten();
            Ok(ModelListPage { names, next })
        }
    }
}

/// Whether `name` can be listed: not empty, not over [`MAX_MODEL_NAME_LEN`] bytes, no control
/// characters or spaces, and no `*` (it would read as a pattern).
fn usable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_MODEL_NAME_LEN
        && !name.chars().any(|c| c.is_control() || c.is_whitespace() || c == '*')
}

fn cursor_ok(cursor: &str) -> bool {
    !cursor.is_empty() && cursor.len() <= MAX_MODEL_LIST_CURSOR_LEN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_is_read_and_bad_entries_are_skipped() {
        let openai = br#"{"object":"list","data":[{"id":"gpt-4o"},{"id":""},{"id":7},{"nope":1},
            {"id":"bad name"},{"id":"gpt-*"},{"id":"ctl\u0007"},{"id":"ft:gpt-4o:org::x1"}],
            "has_more":true,"last_id":"x"}"#;
        assert_eq!(
            parse_model_list(ProviderKind::Openai, openai),
            Ok(ModelListPage {
                names: vec!["gpt-4o".into(), "ft:gpt-4o:org::x1".into()],
                next: None
            })
        );
        let anthropic = br#"{"data":[{"type":"model","id":"claude-sonnet-4-5"}],"has_more":true,"last_id":"claude-sonnet-4-5"}"#;
        assert_eq!(
            parse_model_list(ProviderKind::Claude, anthropic),
            Ok(ModelListPage {
                names: vec!["claude-sonnet-4-5".into()],
                next: Some("claude-sonnet-4-5".into())
            })
        );
        let last = br#"{"data":[],"has_more":false,"last_id":"z"}"#;
        assert_eq!(parse_model_list(ProviderKind::Claude, last).map(|p| p.next), Ok(None));
        let gemini = br#"{"models":[{"name":"models/gemini-2.5-pro"},{"name":"tunedModels/x"},
            {"name":"models/"},{}],"nextPageToken":"abc/="}"#;
        assert_eq!(
            parse_model_list(ProviderKind::Gemini, gemini),
            Ok(ModelListPage { names: vec!["gemini-2.5-pro".into()], next: Some("abc/=".into()) })
        );
        let long = format!(r#"{{"data":[{{"id":"{}"}}]}}"#, "a".repeat(MAX_MODEL_NAME_LEN + 1));
        assert_eq!(
            parse_model_list(ProviderKind::Openai, long.as_bytes()).map(|p| p.names.len()),
            Ok(0)
        );
    }

    #[test]
    fn pages_that_are_not_lists_are_errors_not_panics() {
        let deep = "[".repeat(100_000);
        for body in [
            &b""[..],
            b"null",
            b"[]",
            b"{\"data\":{}}",
            b"{\"models\":\"x\"}",
            deep.as_bytes(),
            b"\xff\xfe",
        ] {
            assert!(parse_model_list(ProviderKind::Openai, body).is_err(), "{body:?}");
            assert!(parse_model_list(ProviderKind::Gemini, body).is_err(), "{body:?}");
        }
    }

    #[test]
    fn cursors_are_encoded_into_the_query() {
        assert_eq!(
            list_path(ProviderKind::Gemini, Some("a b&c=/")),
            "/v1beta/models?pageSize=1000&pageToken=a%20b%26c%3D%2F"
        );
        assert_eq!(list_path(ProviderKind::Claude, None), "/v1/models?limit=1000");
        assert_eq!(list_path(ProviderKind::Openai, Some("ignored")), "/v1/models");
    }

    #[test]
    fn a_failure_is_remembered_for_less_time_than_a_success() {
        let second = 1_000_000_000;
        let mut state = State::default();
        assert_eq!(state.fresh(0), None, "never fetched");
        state.checked = Some((0, false));
        assert_eq!(state.fresh(29 * second).as_deref(), Some(&[][..]));
        assert_eq!(state.fresh(30 * second), None);
        state.names = Some(Arc::from(vec!["m".to_owned()]));
        state.checked = Some((0, true));
        assert_eq!(state.fresh(599 * second).as_deref(), Some(&["m".to_owned()][..]));
        assert_eq!(state.fresh(600 * second), None);
    }
}
