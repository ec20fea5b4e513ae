//! The request pipeline: one function, [`Gateway::handle`], that takes a request through every
//! step in order. Each step says why it sits where it does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use cliproxy_audit::{Event, Plane, What};
use cliproxy_core::{ErrorCode, glob_match};
use cliproxy_netguard::{RejectionKind, RequestFields, UsageOption};
use cliproxy_vault::{ClientIdentity, ClientKeys, Credential};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use serde_json::{Value, json};
use slog::{Logger, info, o, warn};
use tokio::time::Instant;

use crate::api::{self, ApiFormat, Endpoint, RouteError};
use crate::body::{Body, OnDone, Outcome, Tapped, full};
use crate::config::{BaseUrl, Config, LimitsConfig, ProviderKind};
use crate::cors::Cors;
use crate::error::{ApiError, Result};
use crate::guard::Guard;
use crate::management::{self, Management};
use crate::mock::{self, MockRequest};
use crate::pool::{PoolCell, Rest, Slot};
use crate::providers;
use crate::refresh::{self, Vault};
use crate::routing::ModelRouter;
use crate::stream_usage::{self, Stripped};
use crate::upstream::{self, HttpClient};
use crate::upstream_error::upstream_message;
use crate::usage::{Usage, UsageScanner};

/// Most upstream attempts for one request (the first try plus failovers).
pub const MAX_ATTEMPTS: usize = 3;

/// The header carrying the gateway's request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The header the Anthropic and OpenAI SDKs (and the CLIs built on them) read before retrying.
const SHOULD_RETRY_HEADER: &str = "x-should-retry";

/// `Retry-After` of maintenance answers: clients come back in a minute.
const MAINTENANCE_RETRY: Duration = Duration::from_secs(60);

/// How long a credential rests after each kind of upstream failure that is the credential's
/// own: rejected (the provider's error body says the key is invalid, revoked or out of
/// credit: `providers::classify_error`), rate limited (429 without `Retry-After`; for the
/// model asked only where the provider limits per model), or its own base URL unreachable or
/// answering 5xx. A 5xx or an unreachable provider-wide base URL is the provider's or the
/// network's fault: the request fails over, but no credential rests for it (resting them
/// would answer 503 "every credential is cooling down" for an outage they did not cause, and
/// keep them out after the upstream is back). Any other 4xx is the client's: it gets the
/// answer as it came, with no failover and no rest. See `docs/security/faults.md`.
const COOLDOWN_REJECTED: Duration = Duration::from_secs(300);
const COOLDOWN_RATE_LIMITED: Duration = Duration::from_secs(30);
const COOLDOWN_CONNECT: Duration = Duration::from_secs(5);

/// The longest a 5xx's body is waited for (within the first-byte timeout): it is read only
/// for the upstream's message (`upstream_error`), which is not worth holding the failover.
const SERVER_ERROR_BODY_WAIT: Duration = Duration::from_secs(2);

/// The gateway: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    log: Logger,
    limits: LimitsConfig,
    /// Swapped whole by a config reload (`auth.api_keys`).
    client_keys: std::sync::RwLock<Arc<ClientKeys>>,
    vault: Arc<Vault>,
    management: Management,
    /// `auth.device_fingerprint`: the header sent upstream, when enabled.
    fingerprint: Option<(HeaderName, HeaderValue)>,
    router: ModelRouter,
    providers: Vec<Provider>,
    request_ids: RequestIds,
    started: Instant,
    /// What the binary's sandbox put in place, for `/v0/management/status`.
    sandbox: std::sync::OnceLock<Value>,
    /// The network guard (layer 4).
    guard: Arc<Guard>,
    /// Where the configuration came from, for reloads.
    loaded: std::sync::Mutex<Option<crate::reload::Loaded>>,
    /// `metrics:`, for the listener.
    metrics: cliproxy_audit::MetricsConfig,
    /// `server.cors`, when it lists origins.
    cors: Option<Cors>,
}

/// A provider as the request path uses it.
struct Provider {
    name: String,
    kind: ProviderKind,
    base_url: BaseUrl,
    latency: Duration,
    client: Option<HttpClient>,
    pool: PoolCell,
    /// `providers.<name>.max_tokens`.
    max_tokens: Option<std::num::NonZeroU32>,
    /// `providers.<name>.allow_insecure`: whether a credential's own `base_url` may be
    /// `http://` to a host that is not loopback.
    allow_insecure: bool,
    /// `egress:`, which a credential's own `base_url` and `token_url` must satisfy.
    egress: crate::config::EgressConfig,
    /// The upstream's own model list, for the globs in listings (`model_list.rs`).
    listing: crate::model_list::ListCache,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("providers", &self.inner.providers.iter().map(|p| &p.name).collect::<Vec<_>>())
            .field("client_keys", &self.client_keys().len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Builds the gateway from a loaded configuration: opens the vault, loads the credentials
    /// of every configured provider and builds one upstream client per provider.
    pub fn build(config: &Config, log: Logger) -> Result<Self> {
        Self::build_with_clock(config, log, None)
    }

    /// [`Gateway::build`] with the network guard's clock given (tests drive limiters, quota
    /// periods and denylist expiry with a fake one).
    pub fn build_with_clock(
        config: &Config,
        log: Logger,
        clock: Option<Arc<dyn cliproxy_netguard::Clock>>,
    ) -> Result<Self> {
        let guard = Arc::new(Guard::build(config, clock, &log)?);
        // Bad client keys and encryption keys are configuration errors (exit 78): see the
        // `From<cliproxy_vault::Error>` for `Error`.
        let client_keys = config.auth.client_keys()?;
        // Held for the gateway's life: it keeps the credentials in memory and writes them
        // back, so a vault command writing the same files meanwhile is refused.
        let store = config.auth.build_exclusive()?;
        let router = ModelRouter::new(&config.providers)?;
        let credentials = store.load_all()?;
        let mut providers = Vec::with_capacity(config.providers.0.len());
        for (name, provider) in &config.providers.0 {
            let base_url = match &provider.base_url {
                Some(url) => url.clone(),
                None => BaseUrl::parse(providers::default_base_url(provider.kind))
                    .map_err(crate::config::ConfigError::new)?,
            };
            let client = match provider.kind {
                ProviderKind::Mock => None,
                _ => Some(upstream::build_client(
                    name,
                    config.server.limits.upstream_connect_timeout,
                    provider.ca_file.as_deref(),
                )?),
            };
            let epoch = crate::pool::Epoch::now();
            let mut slots = Vec::new();
            for credential in credentials.iter().filter(|c| &c.provider == name) {
                let base_url =
                    credential_base_url(credential, provider.allow_insecure, &config.egress)
                        .map_err(|e| {
                            crate::config::ConfigError::new(format!(
                                "{e} (in {})",
                                store.location().display()
                            ))
                        })?;
                slots.push(Arc::new(Slot::new(credential.clone(), base_url, epoch)));
            }
            if provider.kind != ProviderKind::Mock && slots.is_empty() {
                warn!(log, "provider has no credentials; its models will answer 503 until one is added";
                    "provider" => name, "fix" => format!("cliproxy-server vault add --provider {name}"));
            }
            providers.push(Provider {
                name: name.clone(),
                kind: provider.kind,
                base_url,
                latency: provider.latency,
                client,
                pool: PoolCell::new(slots, epoch),
                max_tokens: provider.max_tokens,
                allow_insecure: provider.allow_insecure,
                egress: config.egress.clone(),
                listing: crate::model_list::ListCache::default(),
            });
        }
        for credential in &credentials {
            if !config.providers.0.contains_key(&credential.provider) {
                warn!(log, "credential belongs to no configured provider and is not used";
                    "credential" => &credential.id, "provider" => &credential.provider);
            }
        }
        if client_keys.is_empty() {
            warn!(log, "no client keys configured: every proxy request will be refused with 401";
                "fix" => "add a key under auth.api_keys (cliproxy-server keygen prints one)");
        }
        let fingerprint = if config.auth.device_fingerprint.enabled {
            let name = HeaderName::try_from(config.auth.device_fingerprint.header.as_str())
                .map_err(|_| {
                    crate::config::ConfigError::new(
                        "`auth.device_fingerprint.header` is not a valid HTTP header name",
                    )
                })?;
            let value = HeaderValue::try_from(store.device_fingerprint()?)
                .map_err(|_| crate::config::ConfigError::new("device fingerprint is not ASCII"))?;
            Some((name, value))
        } else {
            None
        };
        for notice in store.take_notices() {
            warn!(log, "credential vault notice"; "detail" => crate::vault_notice_message(&notice));
        }
        let mut management = Management::new(&config.management);
        let bans =
            guard.state.load_bans().map_err(|e| crate::error::Error::State(e.to_string()))?;
        let restored = management.persist_bans(guard.state.clone(), bans);
        if restored > 0 {
            info!(log, "management bans restored from the state store"; "bans" => restored);
        }
        if !management.enabled() {
            info!(
                log,
                "management API off: no management.secret_key (every /v0/management route answers 404)"
            );
        }
        let vault = Arc::new(Vault {
            store,
            writes: tokio::sync::Mutex::new(()),
            refresh: config.auth.refresh.clone(),
            log: log.clone(),
            audit: guard.audit.clone(),
        });
        Ok(Self {
            inner: Arc::new(Inner {
                log,
                limits: config.server.limits.clone(),
                client_keys: std::sync::RwLock::new(Arc::new(client_keys)),
                vault,
                management,
                fingerprint,
                router,
                providers,
                request_ids: RequestIds::new(),
                started: Instant::now(),
                sandbox: std::sync::OnceLock::new(),
                guard,
                loaded: std::sync::Mutex::new(None),
                metrics: config.metrics.clone(),
                cors: Cors::new(&config.server.cors),
            }),
        })
    }

    /// Answers one request. Never fails: every error becomes a response in the API format of
    /// the endpoint that was called.
    pub async fn handle<B>(&self, request: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let inner = &self.inner;
        // The request id comes first so that every answer, errors included, carries one.
        let request_id = inner.request_ids.next();
        let mut record = Record::new(
            &inner.log,
            &request_id,
            request.method(),
            request.uri().path(),
            peer,
            inner.guard.clone(),
            started,
        );
        // Read before the request is consumed; `None` (no work) when CORS is off.
        let cors_origin = inner
            .cors
            .as_ref()
            .map(|cors| cors.allowed_origin(request.uri().path(), request.headers()));
        let mut response = match self.pipeline(request, &request_id, peer, &mut record).await {
            Ok(response) => response,
            Err((format, error)) => {
                record.error = Some(error.message.clone());
                error.into_response(format)
            }
        };
        if let Ok(value) = HeaderValue::try_from(request_id.as_str()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        // A request whose body did not arrive in time ends its connection (HTTP/1.1; HTTP/2
        // drops the header and ends only the stream): the rest of that body must not hold
        // the slot while hyper drains it.
        if response.status() == StatusCode::REQUEST_TIMEOUT {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        // A wrong key stays wrong: Claude Code, Codex and the SDKs retry a 401 (Claude Code
        // for minutes) unless told not to, and only then tell the user to fix the key. Set
        // here so that every 401 carries it, the management plane's included.
        if response.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(SHOULD_RETRY_HEADER, HeaderValue::from_static("false"));
        }
        // Security headers go on every answer the pipeline gives, errors and upstream replies
        // included.
        inner.guard.headers.apply(response.headers_mut());
        // CORS headers likewise, so that a page from a listed origin can read errors too.
        if let Some(origin) = cors_origin {
            Cors::decorate(origin, response.headers_mut());
        }
        record.status = response.status().as_u16();
        if let Some(admitted) = record.rate
            && response.status().is_success()
        {
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from(admitted.limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(admitted.remaining));
            headers.insert("x-ratelimit-reset", HeaderValue::from(admitted.reset_after_secs()));
        }
        if record.proxied {
            // Replies are logged when their body ends, with the usage read from it on the way,
            // and a silent upstream is cut off after the idle timeout.
            let scanner = UsageScanner::new(record.format, record.sse);
            let sse = record.sse.then_some(record.format);
            let strip = record.strip_usage && record.sse;
            let (parts, body) = response.into_parts();
            let on_done: OnDone = Box::new(move |outcome| record.finish(outcome));
            let body = Tapped::new(body, inner.limits.stream_idle_timeout, scanner, on_done, sse);
            // The usage the gateway asked for on the client's behalf is taken out after the
            // tap has read it.
            let body = if strip { Stripped::new(body).boxed_unsync() } else { body.boxed_unsync() };
            Response::from_parts(parts, body)
        } else {
            record.finish(Outcome::Complete(None));
            response
        }
    }

    async fn pipeline<B>(
        &self,
        request: Request<B>,
        request_id: &str,
        peer: SocketAddr,
        record: &mut Record,
    ) -> Result<Response<Body>, (ApiFormat, ApiError)>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let (parts, body) = request.into_parts();
        let guard = &inner.guard;
        // The client behind a trusted proxy is known only now, from its headers; the peer
        // itself passed the IP filter at accept, the client it names must pass it too.
        let client_ip = guard.ip.client_ip(peer.ip(), &parts.headers);
        record.client_ip = Some(client_ip);
        // Checked on every request, not only when a proxy names the client: a runtime
        // denylist entry must also stop a connection that was open before it was added.
        if let cliproxy_netguard::Verdict::Deny(reason) = guard.ip.check(client_ip) {
            let context =
                crate::guard::Context { request_id: Some(request_id), ..Default::default() };
            guard.reject_in(
                RejectionKind::IpDeniedRequest,
                client_ip,
                &reason.to_string(),
                &context,
            );
            let format = api::route(&parts.method, parts.uri.path())
                .map(|e| e.format())
                .unwrap_or_else(|(RouteError::NotFound(f) | RouteError::MethodNotAllowed(f, _))| f);
            return Err((
                format,
                ApiError::new(
                    ErrorCode::Forbidden,
                    "your address is not allowed to use this gateway",
                ),
            ));
        }
        // The management API has its own gate (its own key, loopback, bans) and errors, and
        // stays up during maintenance so that operators can end it.
        let path = parts.uri.path();
        if crate::api::is_management(path) {
            record.client = Some("management".to_owned());
            let log = record.request_log();
            return Ok(management::handle(self, &parts, body, peer, request_id, &log).await);
        }
        // A CORS preflight from a listed origin carries no key (a browser never sends one on
        // it), so it is answered before authentication and is no failed one; past the IP
        // filter and the per-IP bucket, and only for an endpoint that takes the method it asks
        // about. Anything else goes on to the 404 or 405 below.
        if let Some(cors) = &inner.cors
            && let Some(method) =
                cors.preflight_method(&parts.method, parts.uri.path(), &parts.headers)
            && let Ok(endpoint) = api::route(&method, parts.uri.path())
        {
            record.rate = guard
                .admit(client_ip, request_id)
                .map_err(|limited| (endpoint.format(), ApiError::limited(&limited)))?;
            return Ok(cors.preflight());
        }
        // Routing before authentication: an unknown path is 404 for everyone and tells nothing
        // about keys; a known one tells us which API format to answer errors in.
        let path = parts.uri.path();
        // `/v1/` is OpenAI's and Anthropic's prefix (and Gemini's too): an error the path alone
        // would answer in OpenAI's format goes in the format of the SDK the headers name.
        let by_headers = |format| match format {
            ApiFormat::OpenAi => format_from_headers(&parts.headers),
            other => other,
        };
        let endpoint = api::route(&parts.method, path).map_err(|e| match e {
            RouteError::NotFound(format) => (
                by_headers(format),
                ApiError::new(ErrorCode::NotFound, format!("no route for {} {path}", parts.method)),
            ),
            RouteError::MethodNotAllowed(format, allow) => {
                let mut error = ApiError::new(
                    ErrorCode::MethodNotAllowed,
                    format!("{path} does not accept {}; use {allow}", parts.method),
                );
                error.allow = Some(allow.into());
                (by_headers(format), error)
            }
        })?;
        let format = match endpoint {
            // `/v1/models` is every SDK's: the answer (and its errors) takes the shape of the
            // API the client's headers say it speaks.
            Endpoint::Models { gemini: false } | Endpoint::Model { gemini: false, .. } => {
                format_from_headers(&parts.headers)
            }
            _ => endpoint.format(),
        };
        let fail = |code, message: String| (format, ApiError::new(code, message));

        // Health answers need no key: orchestrators probe them without one.
        match endpoint {
            Endpoint::Healthz => {
                return Ok(json_response(StatusCode::OK, &json!({"status": "ok"})));
            }
            Endpoint::Readyz => return Ok(self.readiness()),
            _ => {}
        }

        // Maintenance refuses before any work is done for the request.
        if let Some(message) = guard.maintenance.active() {
            guard.reject(RejectionKind::Maintenance, client_ip, "maintenance mode");
            return Err((
                format,
                ApiError::new(ErrorCode::Unavailable, message).retry_after(MAINTENANCE_RETRY),
            ));
        }

        // The per-IP rate limit comes before authentication: a flood of bad keys from one
        // address costs a bucket check, not a key hash each.
        record.rate = guard
            .admit(client_ip, request_id)
            .map_err(|limited| (format, ApiError::limited(&limited)))?;

        // Client authentication before reading the body, so that an unauthenticated client
        // cannot make the gateway buffer megabytes. The global bucket is charged after it, in
        // two halves: keyed requests draw on `server.rate_limit`, the rest on a bucket of
        // their own, so that strangers spread over many addresses cannot starve the clients.
        let limited = |limited: cliproxy_netguard::Limited| (format, ApiError::limited(&limited));
        let client = match self.authenticate(&parts.headers, parts.uri.query()) {
            Ok(client) => {
                guard.admit_global(client_ip, request_id, true).map_err(limited)?;
                guard.emit(
                    Event::new(What::AuthSuccess)
                        .ip(client_ip)
                        .request_id(request_id)
                        .user(client.name.as_str()),
                );
                client
            }
            Err((reason, error)) => {
                let event =
                    Event::new(What::AuthFailure { plane: Plane::Client, reason, repeats: 0 })
                        .ip(client_ip)
                        .request_id(request_id);
                // Past the strangers' budget the failure still counts towards the alert
                // rules, but its line is the limiter's summarised one: a keyless flood from
                // many addresses cannot write an audit line per request.
                if let Err(refused) = guard.admit_global(client_ip, request_id, false) {
                    guard.count(&event);
                    return Err(limited(refused));
                }
                // Summarised under a flood, its request id listed in the summary line.
                guard.auth_failure(event);
                return Err((format, error));
            }
        };
        record.client = Some(client.name.clone());
        // A key whose requests keep making credentials rest is refused for a while
        // (`server.security.cooldown_abuse`), before its body is read.
        guard
            .cooldown_throttle(&client.name, client_ip, request_id)
            .map_err(|error| (format, error))?;

        match endpoint {
            Endpoint::Models { .. } => return Ok(self.models(&client, format).await),
            Endpoint::Model { id, .. } => {
                return self.model(&client, id, format).map_err(|error| (format, error));
            }
            _ => {}
        }

        // The body cap holds before any guard layer: checked on Content-Length first, then
        // while reading, so an oversized body is never held in memory.
        let limit = inner.limits.max_body_bytes.get();
        let too_large = || {
            fail(
                ErrorCode::PayloadTooLarge,
                format!("request body is larger than {limit} bytes (server.limits.max_body_bytes)"),
            )
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(too_large());
        }
        // The whole body has a deadline, counted from here (the head is read and the key
        // checked): a client that sends the head and holds the body back would otherwise keep
        // its connection slot for as long as it likes. A deadline between chunks would not
        // do: one byte every few seconds would pass it.
        let body_timeout = inner.limits.body_read_timeout;
        let read = tokio::time::timeout(body_timeout, Limited::new(body, limit).collect());
        let body = match read.await {
            Err(_) => {
                return Err(fail(
                    ErrorCode::RequestTimeout,
                    format!(
                        "the request body did not arrive within {body_timeout:?} (server.limits.body_read_timeout)"
                    ),
                ));
            }
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                return Err(too_large());
            }
            Ok(Err(_)) => {
                return Err(fail(
                    ErrorCode::BadRequest,
                    "the request body could not be read".to_owned(),
                ));
            }
        };

        // Read once, in one pass and without building a tree: the model and stream flag route
        // the request, the token fields and message shapes feed validation; the body itself
        // goes upstream byte for byte.
        let fields = RequestFields::from_slice(&body).map_err(|e| {
            fail(
                ErrorCode::BadRequest,
                format!("request body is not valid JSON ({})", json_error_position(&e)),
            )
        })?;
        if !fields.is_object() {
            return Err(fail(
                ErrorCode::BadRequest,
                "request body must be a JSON object".to_owned(),
            ));
        }
        let (Ok(body_model), Ok(body_stream)) = (fields.model(), fields.stream()) else {
            return Err(fail(
                ErrorCode::BadRequest,
                "`model` must be a string and `stream` a boolean".to_owned(),
            ));
        };
        let (model, stream) = match endpoint {
            Endpoint::GeminiGenerate { model, stream } => (model.to_owned(), stream),
            Endpoint::GeminiCountTokens { model } | Endpoint::GeminiEmbed { model, .. } => {
                (model.to_owned(), false)
            }
            _ => match body_model {
                Some(model) if !model.is_empty() => {
                    (model.to_owned(), body_stream.unwrap_or(false))
                }
                _ => {
                    return Err(fail(
                        ErrorCode::BadRequest,
                        "the request has no `model`".to_owned(),
                    ));
                }
            },
        };
        record.model = Some(model.clone());

        // Model routing, then the client key's own model list.
        let Some(index) = inner.router.route(&model) else {
            return Err(fail(
                ErrorCode::NotFound,
                format!("model `{model}` is not served by this gateway (see GET /v1/models)"),
            ));
        };
        let provider = &inner.providers[index];
        record.provider = Some(provider.name.clone());
        if !client.allows_model(&model) {
            return Err(fail(
                ErrorCode::Forbidden,
                format!(
                    "client key `{}` may not use model `{model}` (auth.api_keys models)",
                    client.name
                ),
            ));
        }
        if !providers::speaks(provider.kind, format) {
            let native = providers::native_format(provider.kind);
            return Err(fail(
                ErrorCode::BadRequest,
                format!(
                    "model `{model}` is served by provider `{}`, which speaks the {} API; call {} instead",
                    provider.name,
                    native.as_str(),
                    native.example_path()
                ),
            ));
        }
        // Validation needs the provider: its `max_tokens` caps its requests too.
        let cap = cliproxy_netguard::TokenCap {
            provider_max_tokens: provider.max_tokens,
            provider: &provider.name,
        };
        let requested_tokens = match endpoint.request_kind() {
            Some(kind) => guard.validator.check(kind, &fields, cap).map_err(|invalid| {
                guard.reject(RejectionKind::InvalidRequest, client_ip, &invalid.0);
                fail(ErrorCode::BadRequest, invalid.0)
            })?,
            None => None,
        };
        // Whether a streamed chat or legacy completions request asked for its usage: if not,
        // the gateway asks the upstream for it (below) and keeps it from the client
        // (`stream_usage`). Both endpoints take `stream_options` and answer it alike.
        let usage_option = (matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions)
            && stream)
            .then(|| fields.usage_option())
            .filter(|option| *option != UsageOption::Asked);
        // The minute limits and quotas come last: only a request that will really be sent
        // spends them. They hold the prompt's estimate too, not only the output's cap.
        let prompt_tokens = crate::usage::prompt_estimate(body.len());
        let admission = guard
            .admit_request(
                client_ip,
                &provider.name,
                &client.name,
                prompt_tokens,
                requested_tokens,
                request_id,
            )
            .map_err(|limited| (format, ApiError::limited(&limited)))?;
        if record.rate.is_none() {
            record.rate = admission.headline();
        }
        record.admission = Some(admission);
        record.free =
            matches!(endpoint, Endpoint::CountTokens | Endpoint::GeminiCountTokens { .. });
        let sse_query = query_pairs(parts.uri.query()).any(|(k, v)| k == "alt" && v == "sse");

        // The mock answers in-process; everything else goes upstream.
        if provider.kind == ProviderKind::Mock {
            // The mock reads fields the guard has no use for (`stream_options`, the inputs to
            // embed), so it gets the body as a tree; only its requests pay for that parse, and
            // the body was already read as valid JSON.
            let mut parsed: Value = serde_json::from_slice(&body).unwrap_or_default();
            if let Some(option) = usage_option {
                record.strip_usage = stream_usage::ask_mock(&mut parsed, option);
            }
            let (response, _) = mock::reply(
                &MockRequest {
                    endpoint,
                    model: &model,
                    stream,
                    sse: sse_query,
                    body: &parsed,
                    body_len: body.len(),
                    request_id,
                },
                provider.latency,
            );
            record.proxied = true;
            record.sent = true;
            record.sent_at = Some(Instant::now());
            record.sse = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v == "text/event-stream");
            record.format = format;
            return Ok(response);
        }
        // An OpenAI upstream is asked for the usage here, once for every attempt of the
        // failover; the other provider types report usage in their streams unasked.
        let body = match usage_option.filter(|_| provider.kind == ProviderKind::Openai) {
            Some(option) => match stream_usage::ask_upstream(&body, option) {
                Some(edited) => {
                    record.strip_usage = true;
                    edited
                }
                None => body,
            },
            None => body,
        };
        let response = self.forward(provider, &parts, body, format, &model, record).await?;
        Ok(response)
    }

    /// Sends the request upstream with a credential from the pool, failing over to the next
    /// credential on the credential's own faults (see [`COOLDOWN_REJECTED`]), 5xx and
    /// connection failures, at most [`MAX_ATTEMPTS`]
    /// times.
    async fn forward(
        &self,
        provider: &Provider,
        parts: &http::request::Parts,
        body: Bytes,
        format: ApiFormat,
        // Rests after a 429 are per model where the provider limits per model.
        model: &str,
        record: &mut Record,
    ) -> Result<Response<Body>, (ApiFormat, ApiError)> {
        let inner = &self.inner;
        let fail = |code, message: String| (format, ApiError::new(code, message));
        let Some(client) = &provider.client else {
            return Err(fail(ErrorCode::Internal, "provider has no upstream client".to_owned()));
        };
        let path_and_query = upstream::upstream_path(parts.uri.path(), parts.uri.query());
        let mut headers = upstream::forwardable_request_headers(provider.kind, &parts.headers);
        if let Some((name, value)) = &inner.fingerprint {
            headers.insert(name.clone(), value.clone());
        }
        // One pool for all attempts, even when credentials change meanwhile.
        let pool = provider.pool.load();
        let mut tried: Vec<usize> = Vec::with_capacity(MAX_ATTEMPTS);
        let mut last: Option<ApiError> = None;
        while tried.len() < MAX_ATTEMPTS {
            let index = match pool.pick(&tried, model) {
                Ok(index) => index,
                Err(wait) => {
                    if let Some(error) = last {
                        return Err((format, error));
                    }
                    let error = match wait {
                        None => ApiError::new(
                            ErrorCode::Unavailable,
                            format!(
                                "provider `{}` has no credentials; an operator adds one with `cliproxy-server vault add --provider {}`",
                                provider.name, provider.name
                            ),
                        ),
                        Some(wait) => ApiError::new(
                            ErrorCode::Unavailable,
                            format!("every credential of provider `{}` is cooling down after upstream errors", provider.name),
                        )
                        .retry_after(wait),
                    };
                    return Err((format, error));
                }
            };
            tried.push(index);
            let slot = pool.slot(index);
            record.credential = Some(slot.id.clone());
            record.attempts = tried.len();
            let base = slot.base_url.as_ref().unwrap_or(&provider.base_url);
            let uri = base.join(&path_and_query).map_err(|_| {
                fail(ErrorCode::BadRequest, "the request path cannot be forwarded".to_owned())
            })?;
            // OAuth tokens due for refresh are refreshed here (single-flight, own task); a
            // failed refresh has already cooled the credential down.
            let token = match refresh::bearer(slot, &provider.name, client, &inner.vault).await {
                Ok(token) => token,
                Err(failure) => {
                    last = Some(ApiError::new(
                        ErrorCode::UpstreamFailure,
                        format!(
                            "a credential of provider `{}` needs a token refresh, which failed: {}",
                            provider.name, failure.reason
                        ),
                    ));
                    continue;
                }
            };
            let oauth = matches!(slot.auth, crate::pool::SlotAuth::OAuth(_));
            if providers::apply_credential(provider.kind, &mut headers, &token, oauth).is_err() {
                warn!(inner.log, "credential holds characters not allowed in a header; skipping it";
                    "credential" => &slot.id, "provider" => &provider.name);
                pool.cool_down(index, COOLDOWN_REJECTED);
                continue;
            }
            slot.touch();
            let mut request = Request::new(Full::new(body.clone()));
            *request.method_mut() = Method::POST;
            *request.uri_mut() = uri;
            *request.headers_mut() = headers.clone();

            record.sent = true;
            record.sent_at.get_or_insert_with(Instant::now);
            let sent = tokio::time::timeout(
                inner.limits.upstream_first_byte_timeout,
                client.request(request),
            )
            .await;
            let response = match sent {
                Err(_) => {
                    // Not failed over: the upstream may still be generating, and a retry
                    // would pay for the same work twice.
                    return Err(fail(
                        ErrorCode::UpstreamTimeout,
                        format!(
                            "provider `{}` sent no response within {:?} (server.limits.upstream_first_byte_timeout)",
                            provider.name, inner.limits.upstream_first_byte_timeout
                        ),
                    ));
                }
                Ok(Err(error)) if error.is_connect() => {
                    // Only an endpoint that belongs to this credential makes it rest (it
                    // spares the next requests the connect timeout); the provider's own
                    // endpoint being down is no credential's fault.
                    let own_endpoint = slot.base_url.is_some();
                    warn!(inner.log, "upstream connection failed; trying the next credential";
                        "provider" => &provider.name, "credential" => &slot.id,
                        "cooldown" => own_endpoint, "error" => error_chain(&error));
                    if own_endpoint {
                        pool.cool_down(index, COOLDOWN_CONNECT);
                    }
                    last = Some(ApiError::new(
                        ErrorCode::UpstreamFailure,
                        if timed_out(&error) {
                            format!(
                                "could not connect to provider `{}` within {:?} (server.limits.upstream_connect_timeout)",
                                provider.name, inner.limits.upstream_connect_timeout
                            )
                        } else {
                            format!("could not connect to provider `{}`", provider.name)
                        },
                    ));
                    continue;
                }
                Ok(Err(error)) => {
                    // The request may have reached the upstream: retrying is not safe.
                    warn!(inner.log, "upstream request failed"; "provider" => &provider.name,
                        "credential" => &slot.id, "error" => error_chain(&error));
                    return Err(fail(
                        ErrorCode::UpstreamFailure,
                        format!(
                            "the request to provider `{}` failed before a response arrived",
                            provider.name
                        ),
                    ));
                }
                Ok(Ok(response)) => response,
            };
            let status = response.status();
            let (upstream_parts, upstream_body) = response.into_parts();
            // A 4xx with which a provider may say that the key is bad is read (capped, within
            // the first-byte timeout) to judge whose fault it is: only the credential's own
            // faults make it rest and fail over, so that no client can bench the credentials
            // by asking for something the provider refuses (`providers::classify_error`).
            // `said`: the upstream's own message, made safe to show (`upstream_error`), for
            // the gateway's error when this answer makes it fail over or give up.
            let judged = providers::judged_by_body(status.as_u16());
            let (upstream_body, fault, said): (Body, _, _) = if judged {
                let read = tokio::time::timeout(
                    inner.limits.upstream_first_byte_timeout,
                    upstream::read_error_body(upstream_body, providers::MAX_ERROR_BODY),
                )
                .await;
                match read {
                    Ok(Ok(Some(bytes))) => {
                        let fault =
                            providers::classify_error(provider.kind, status.as_u16(), &bytes);
                        let said = upstream_message(provider.kind, &bytes, token.expose());
                        // The body may go back to the client: a provider (or a proxy in
                        // front of it) that echoes the credential must not hand it over.
                        (full(upstream::redact(bytes, token.expose())), Some(fault), said)
                    }
                    Ok(Ok(None)) => {
                        // Not judged and not forwarded: it could not be searched for the
                        // credential. Nobody's fault, so no rest and no failover.
                        return Err(fail(
                            ErrorCode::UpstreamFailure,
                            format!(
                                "provider `{}` refused the request (upstream status {status}) with an error body over {} KiB, which the gateway does not forward",
                                provider.name,
                                providers::MAX_ERROR_BODY / 1024
                            ),
                        ));
                    }
                    Ok(Err(_)) | Err(_) => {
                        // Not failed over, as for any reply that stops half-way: the
                        // upstream has answered this request.
                        return Err(fail(
                            ErrorCode::UpstreamFailure,
                            format!(
                                "provider `{}` answered {status} but its error body did not arrive whole within {:?} (server.limits.upstream_first_byte_timeout)",
                                provider.name, inner.limits.upstream_first_byte_timeout
                            ),
                        ));
                    }
                }
            } else if status.is_server_error() {
                // A 5xx fails over whatever its body says: the body is read (capped, and for
                // at most `SERVER_ERROR_BODY_WAIT`) only for its message.
                let read = tokio::time::timeout(
                    inner.limits.upstream_first_byte_timeout.min(SERVER_ERROR_BODY_WAIT),
                    upstream::read_error_body(upstream_body, providers::MAX_ERROR_BODY),
                )
                .await;
                let said = match read {
                    Ok(Ok(Some(bytes))) => upstream_message(provider.kind, &bytes, token.expose()),
                    _ => None,
                };
                (full(Bytes::new()), None, said)
            } else {
                (upstream_body.map_err(Into::into).boxed_unsync(), None, None)
            };
            // The gateway's message for the client, with what the upstream said after it.
            let told = |message: String| match &said {
                Some(said) => format!("{message}: upstream said: {said}"),
                None => message,
            };
            // A 5xx from the credential's own base URL is that endpoint's fault, and rests it
            // (as a refused connection does); from the provider's shared one it is nobody's.
            let own_endpoint = slot.base_url.is_some();
            let failover = match (status.as_u16(), fault) {
                // The upstream's message is not shown here: about the gateway's key, it
                // would make the client think its own key wrong. The operator reads it in
                // the log below.
                (_, Some(providers::UpstreamFault::Credential)) => Some((
                    Some(Rest::Credential(COOLDOWN_REJECTED)),
                    ApiError::new(
                        ErrorCode::UpstreamFailure,
                        format!(
                            "provider `{}` rejected the gateway's credential (upstream status {status}); an operator must check the vault and the provider account",
                            provider.name
                        ),
                    ),
                )),
                (_, Some(providers::UpstreamFault::RateLimited)) => {
                    let wait = upstream::retry_after(&upstream_parts.headers)
                        .unwrap_or(COOLDOWN_RATE_LIMITED);
                    let rest = if providers::limits_per_model(provider.kind) {
                        Rest::Model(wait)
                    } else {
                        Rest::Credential(wait)
                    };
                    Some((
                        Some(rest),
                        ApiError::new(
                            ErrorCode::RateLimited,
                            told(format!(
                                "provider `{}` is rate limiting the gateway's credentials",
                                provider.name
                            )),
                        )
                        .retry_after(wait),
                    ))
                }
                (500..=599, _) => Some((
                    own_endpoint.then_some(Rest::Credential(COOLDOWN_CONNECT)),
                    ApiError::new(
                        ErrorCode::UpstreamFailure,
                        told(format!(
                            "provider `{}` failed (upstream status {status})",
                            provider.name
                        )),
                    ),
                )),
                // A success that is not an API answer (an HTML page from a captive portal or
                // a misconfigured proxy in front of the provider) would reach the client as
                // a 200 its SDK cannot parse: it is an upstream failure, not the credential's.
                (200..=299, _) => upstream::unexpected_content_type(&upstream_parts.headers).map(
                    |found| {
                        (
                            None,
                            ApiError::new(
                                ErrorCode::UpstreamFailure,
                                format!(
                                    "provider `{}` answered with content type `{found}` instead of JSON or an event stream",
                                    provider.name
                                ),
                            ),
                        )
                    },
                ),
                _ => None,
            };
            if let Some((rest, error)) = failover {
                match rest {
                    Some(rest) => {
                        info!(inner.log, "upstream refused the request; cooling the credential down";
                            "provider" => &provider.name, "credential" => &slot.id,
                            "status" => status.as_u16(), "cooldown_ms" => rest.duration().as_millis() as u64,
                            "model_only" => matches!(rest, Rest::Model(_)),
                            "upstream_message" => said.as_deref());
                        pool.rest(index, model, rest);
                        // Counted against the client key whose request it was: one that keeps
                        // causing cool-downs is throttled (`server.security.cooldown_abuse`).
                        if let (Some(client), Some(ip)) = (&record.client, record.client_ip) {
                            inner.guard.cooldown_caused(client, ip, &record.request_id);
                        }
                    }
                    None => {
                        info!(inner.log, "upstream failed; trying the next credential";
                            "provider" => &provider.name, "credential" => &slot.id,
                            "status" => status.as_u16(), "upstream_message" => said.as_deref());
                    }
                }
                last = Some(error);
                continue;
            }

            // Success (or a client error the client should see as is): stream it back.
            let sse = upstream_parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("text/event-stream"));
            record.proxied = true;
            record.sse = sse;
            record.format = format;
            let mut response = Response::new(upstream_body);
            *response.status_mut() = upstream_parts.status;
            *response.headers_mut() =
                upstream::forwardable_response_headers(&upstream_parts.headers);
            return Ok(response);
        }
        Err((
            format,
            last.unwrap_or_else(|| {
                ApiError::new(ErrorCode::UpstreamFailure, "no upstream attempt succeeded")
            }),
        ))
    }

    /// Waits until every audit event recorded so far is written (or has failed). The server
    /// calls it at shutdown; embedders and tests when they need the file complete.
    pub fn flush_audit(&self) {
        self.inner.guard.audit.flush();
    }

    /// The metrics in the Prometheus text format (what the metrics listener serves).
    pub fn render_metrics(&self) -> String {
        self.inner.guard.audit.metrics().render()
    }

    /// Records what the sandbox put in place (shown by `GET /v0/management/status`). The
    /// first report wins.
    pub fn set_sandbox_report(&self, report: Value) {
        let _ = self.inner.sandbox.set(report);
    }

    /// The sandbox report, or `null` when the process was not sandboxed by the binary.
    pub(crate) fn sandbox_report(&self) -> Value {
        self.inner.sandbox.get().cloned().unwrap_or(Value::Null)
    }

    /// Time since the gateway was built.
    pub(crate) fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// The management gate.
    pub(crate) fn management(&self) -> &Management {
        &self.inner.management
    }

    /// The vault and its write lock.
    pub(crate) fn vault(&self) -> &Arc<Vault> {
        &self.inner.vault
    }

    /// Whether `name` is a configured provider.
    pub(crate) fn knows_provider(&self, name: &str) -> bool {
        self.inner.providers.iter().any(|p| p.name == name)
    }

    /// Whether `name` is a configured provider that uses vault credentials (not the mock).
    pub(crate) fn accepts_credentials_for(&self, name: &str) -> bool {
        self.inner.providers.iter().any(|p| p.name == name && p.kind != ProviderKind::Mock)
    }

    /// The providers that take credentials, for messages.
    pub(crate) fn upstream_provider_names(&self) -> Vec<&str> {
        self.inner
            .providers
            .iter()
            .filter(|p| p.kind != ProviderKind::Mock)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// Writes `credential` to the vault, then puts it into its provider's pool (replacing a
    /// credential with the same id wherever it was): the next request can use it.
    pub(crate) async fn store_credential(&self, credential: Credential) -> Result<(), ApiError> {
        let target = self.inner.providers.iter().find(|p| p.name == credential.provider);
        let allow_insecure = target.is_some_and(|p| p.allow_insecure);
        let egress = target.map(|p| p.egress.clone()).unwrap_or_default();
        let base_url = credential_base_url(&credential, allow_insecure, &egress)
            .map_err(|e| ApiError::new(ErrorCode::BadRequest, e))?;
        let vault = self.inner.vault.clone();
        let _order = vault.writes.lock().await;
        let store = vault.store.clone();
        let stored = credential.clone();
        management::blocking(move || store.put(&stored)).await?;
        for provider in &self.inner.providers {
            let is_target = provider.name == credential.provider;
            let slot = is_target.then(|| {
                Arc::new(Slot::new(credential.clone(), base_url.clone(), provider.pool.epoch()))
            });
            provider.pool.update(|slots| {
                let mut next: Vec<Arc<Slot>> = Vec::with_capacity(slots.len() + 1);
                for existing in slots {
                    if existing.id == credential.id {
                        existing.remove();
                    } else {
                        next.push(existing.clone());
                    }
                }
                next.extend(slot);
                next
            });
        }
        Ok(())
    }

    /// Deletes credentials from the vault and from the pools; returns the ids deleted.
    pub(crate) async fn delete_credentials(&self, ids: &[String]) -> Result<Vec<String>, ApiError> {
        let vault = self.inner.vault.clone();
        let _order = vault.writes.lock().await;
        // Out of the pools first: no new request picks them while the files go.
        for provider in &self.inner.providers {
            provider.pool.update(|slots| {
                slots
                    .iter()
                    .filter(|slot| {
                        let gone = ids.contains(&slot.id);
                        if gone {
                            slot.remove();
                        }
                        !gone
                    })
                    .cloned()
                    .collect()
            });
        }
        let store = vault.store.clone();
        let ids = ids.to_vec();
        management::blocking(move || {
            let mut deleted = Vec::with_capacity(ids.len());
            for id in ids {
                if store.delete(&id)? {
                    deleted.push(id);
                }
            }
            Ok(deleted)
        })
        .await
    }

    /// The provider whose pool holds the credential `id`: how a delete knows whose a
    /// credential is when its file can no longer be read.
    pub(crate) fn pool_owner(&self, id: &str) -> Option<&str> {
        let provider = self
            .inner
            .providers
            .iter()
            .find(|p| p.pool.load().slots().iter().any(|slot| slot.id == id))?;
        Some(provider.name.as_str())
    }

    /// How long the credential `id` of `provider` still rests after an upstream failure
    /// that was its fault; `None` when it is healthy or unknown.
    pub(crate) fn cooldown_left(&self, provider: &str, id: &str) -> Option<Duration> {
        let provider = self.inner.providers.iter().find(|p| p.name == provider)?;
        let pool = provider.pool.load();
        pool.slots().iter().find(|slot| slot.id == id)?.cooldown_left()
    }

    /// Writes the last-use times gathered since the previous flush to the vault (for
    /// `vault list`). Called periodically by the server and at shutdown.
    pub async fn flush_last_used(&self) {
        let used: Vec<(String, u64)> = self
            .inner
            .providers
            .iter()
            .flat_map(|p| p.pool.load().slots().to_vec())
            .filter_map(|slot| slot.take_last_used().map(|at| (slot.id.clone(), at)))
            .collect();
        if used.is_empty() {
            return;
        }
        let store = self.inner.vault.store.clone();
        let result = tokio::task::spawn_blocking(move || store.record_use(&used)).await;
        if let Ok(Err(error)) = result {
            warn!(self.inner.log, "could not record when credentials were last used"; "error" => crate::vault_error_message(&error));
        }
    }

    /// `state.flush_interval`: the beat of the guard's housekeeping.
    pub(crate) fn state_flush_interval(&self) -> Duration {
        self.inner.guard.flush_interval
    }

    /// Checks `config` as the build will (without writing anything), then says what the
    /// sandbox must leave reachable for it, computed before the gateway is built: the sandbox goes on first, while the process has one thread (landlock covers
    /// only the threads started after it), so the writable directories are created here
    /// (0700, where missing) — landlock grants existing paths only.
    ///
    /// Read-only: `config_file` (reloads read it again), the directories of the TLS files and
    /// of the files they link to (a renewed certificate is usually renamed into place, and
    /// landlock grants inodes), the providers' `ca_file`s. Read-write: `auth.dir`, the state database's directory, the
    /// audit log's directory.
    pub fn sandbox_paths(
        config: &Config,
        config_file: Option<&std::path::Path>,
    ) -> Result<cliproxy_container::sandbox::Paths, crate::error::Error> {
        use std::os::unix::fs::DirBuilderExt;
        use std::path::{Path, PathBuf};
        fn dir_of(file: &Path) -> PathBuf {
            match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                _ => PathBuf::from("."),
            }
        }
        // What the build would refuse, first: a configuration error is named before the
        // sandbox's own refusals (running as root, say).
        crate::guard::check_config(config).map_err(crate::config::ConfigError::new)?;
        let tls = &config.server.tls;
        let mut read_only: Vec<PathBuf> = config_file.map(Path::to_owned).into_iter().collect();
        for file in tls.cert_file.iter().chain(tls.key_file.iter()) {
            read_only.push(dir_of(file));
            // A TLS file that is a symbolic link (certbot's live/ → archive/) is read where
            // the link points now; renewals put the new file beside it.
            if let Ok(target) = std::fs::canonicalize(file) {
                read_only.push(dir_of(&target));
            }
        }
        read_only.extend(config.providers.0.values().filter_map(|p| p.ca_file.clone()));
        read_only.dedup();
        let state = crate::guard::state_config(config);
        let mut read_write = vec![(config.auth.dir.clone(), "auth.dir")];
        if let Some(path) = &state.path {
            read_write.push((dir_of(path), "state.path"));
        }
        if config.logging.audit.enabled {
            read_write.push((dir_of(&config.logging.audit.file), "logging.audit.file"));
        }
        for (dir, key) in &read_write {
            if !dir.exists() {
                std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(
                    |source| crate::error::Error::Io {
                        context: format!("cannot create the directory {} ({key})", dir.display()),
                        source,
                    },
                )?;
            }
        }
        Ok(cliproxy_container::sandbox::Paths {
            read_only,
            read_write: read_write.into_iter().map(|(dir, _)| dir).collect(),
        })
    }

    /// The network guard, for the listener.
    pub(crate) fn guard(&self) -> &Arc<Guard> {
        &self.inner.guard
    }

    /// Checks the client key. A key in the query string is refused outright: query strings end
    /// up in access logs and browser histories.
    fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Arc<ClientIdentity>, (&'static str, ApiError)> {
        if upstream::query_holds_credential(query) {
            return Err((
                "key_in_query",
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "API keys in the query string are refused; send the key in the Authorization, x-api-key or x-goog-api-key header",
                ),
            ));
        }
        let client_keys = self.client_keys();
        if client_keys.is_empty() {
            return Err((
                "no_client_keys",
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "this gateway has no client keys configured, so it refuses every request; an operator adds one under auth.api_keys in the config (cliproxy-server keygen prints a fresh key)",
                ),
            ));
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .or_else(|| headers.get("x-api-key").map(HeaderValue::as_bytes))
            .or_else(|| headers.get("x-goog-api-key").map(HeaderValue::as_bytes));
        let Some(presented) = presented else {
            return Err((
                "missing_key",
                ApiError::new(
                    ErrorCode::Unauthorized,
                    "no client key: send it as `Authorization: Bearer <key>`, `x-api-key: <key>` or `x-goog-api-key: <key>`",
                ),
            ));
        };
        client_keys.authenticate(presented.trim_ascii()).ok_or_else(|| {
            ("invalid_key", ApiError::new(ErrorCode::Unauthorized, "invalid client key"))
        })
    }

    /// Puts reloaded client keys in force: the next request is checked against them.
    pub(crate) fn set_client_keys(&self, keys: ClientKeys) {
        *self.inner.client_keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(keys);
    }

    /// The configuration source and its last values.
    pub(crate) fn loaded(&self) -> &std::sync::Mutex<Option<crate::reload::Loaded>> {
        &self.inner.loaded
    }

    /// `metrics:`.
    pub(crate) fn metrics_config(&self) -> &cliproxy_audit::MetricsConfig {
        &self.inner.metrics
    }

    /// The gateway's logger.
    pub(crate) fn log(&self) -> &Logger {
        &self.inner.log
    }

    /// The client keys in force (swapped whole by a config reload).
    fn client_keys(&self) -> Arc<ClientKeys> {
        self.inner.client_keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The readiness checks in order, each with its error (which names files and keys).
    fn readiness_checks(&self) -> [(&'static str, Result<(), String>); 3] {
        // The vault first: without credentials nothing can be served at all. The audit log
        // last: the gateway keeps serving while it fails, but an orchestrator should know.
        [
            ("vault", self.inner.vault.store.check().map_err(|e| crate::vault_error_message(&e))),
            ("state", self.inner.guard.state.check().map_err(|e| e.to_string())),
            ("audit", self.inner.guard.audit_failing().map_or(Ok(()), Err)),
        ]
    }

    /// Each readiness check with its full error, for the authenticated management status.
    pub(crate) fn readiness_detail(&self) -> Value {
        let checks: serde_json::Map<String, Value> = self
            .readiness_checks()
            .into_iter()
            .map(|(name, result)| {
                (name.to_owned(), json!(result.err().unwrap_or_else(|| "ok".to_owned())))
            })
            .collect();
        Value::Object(checks)
    }

    fn readiness(&self) -> Response<Body> {
        for (name, result) in &self.readiness_checks() {
            if let Err(error) = result {
                warn!(self.inner.log, "readiness check failed"; "check" => *name, "error" => error);
                // `/readyz` needs no key, so it names the failing check and nothing more: the
                // error names files and directories, which are for the operator (this log
                // line and `GET /v0/management/status`), not for whoever can reach the port.
                return json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "not ready", "failing": name, "checks": {*name: "failing"}}),
                );
            }
        }
        let audit = if self.inner.guard.audit.enabled() { "ok" } else { "off" };
        json_response(
            StatusCode::OK,
            &json!({"status": "ready", "checks": {"vault": "ok", "state": "ok", "audit": audit}}),
        )
    }

    /// The models `client` may use, each with the name of the provider serving it, sorted.
    /// Each name is listed under the provider it routes to, and only there.
    async fn listed_models(&self, client: &ClientIdentity) -> Vec<(String, &str)> {
        let inner = &self.inner;
        let mut models: Vec<(String, &str)> = Vec::new();
        for (model, index) in inner.router.models() {
            let provider = &inner.providers[index];
            let names: Vec<String> = match (&provider.client, provider.kind) {
                // A mock provider's patterns stand for the names it serves.
                (_, ProviderKind::Mock) => mock::mock_model_names([model]),
                // A glob stands for the names in the upstream's own list (cached; fetched
                // only when a listing finds it stale).
                (Some(http), _) if model.contains('*') => {
                    let upstream = crate::model_list::Upstream {
                        name: &provider.name,
                        kind: provider.kind,
                        base_url: &provider.base_url,
                        client: http,
                        pool: &provider.pool,
                        vault: &inner.vault,
                        limits: &inner.limits,
                        fingerprint: inner.fingerprint.as_ref(),
                        clock: &*inner.guard.clock,
                        log: &inner.log,
                    };
                    let listed = provider.listing.names(&upstream).await;
                    listed.iter().filter(|name| glob_match(model, name)).cloned().collect()
                }
                _ => vec![model.to_owned()],
            };
            models.extend(
                names
                    .into_iter()
                    .filter(|name| inner.router.route(name) == Some(index))
                    .filter(|name| client.allows_model(name))
                    .map(|name| (name, provider.name.as_str())),
            );
        }
        // Two globs of one provider can both match a name.
        models.sort_unstable();
        models.dedup();
        models
    }

    /// `GET /v1/models` and `GET /v1beta/models` in `format`'s list shape.
    async fn models(&self, client: &ClientIdentity, format: ApiFormat) -> Response<Body> {
        let models = self.listed_models(client).await;
        let data: Vec<Value> =
            models.iter().map(|(id, owner)| model_object(id, owner, format)).collect();
        let body = match format {
            ApiFormat::Anthropic => json!({"data": data, "has_more": false,
                "first_id": models.first().map(|m| &m.0), "last_id": models.last().map(|m| &m.0)}),
            ApiFormat::Gemini => json!({"models": data}),
            ApiFormat::OpenAi => json!({"object": "list", "data": data}),
        };
        json_response(StatusCode::OK, &body)
    }

    /// `GET /v1/models/{id}` and `GET /v1beta/models/{id}`: a model the gateway serves and the
    /// key may use, in `format`'s shape. Any other is not found, whether it exists or not, so
    /// that a restricted key learns nothing about the models it may not use.
    fn model(
        &self,
        client: &ClientIdentity,
        id: &str,
        format: ApiFormat,
    ) -> Result<Response<Body>, ApiError> {
        match self.inner.router.route(id).filter(|_| client.allows_model(id)) {
            Some(index) => {
                let owner = self.inner.providers[index].name.as_str();
                Ok(json_response(StatusCode::OK, &model_object(id, owner, format)))
            }
            None => Err(ApiError::new(
                ErrorCode::NotFound,
                format!("model `{id}` is not served to this key (see GET /v1/models)"),
            )),
        }
    }
}

/// The API a caller of a path shared by several APIs (`/v1/models`) speaks, from the headers
/// its SDK sends: Anthropic's send `anthropic-version`, Google's send `x-goog-api-key`;
/// anything else gets OpenAI's shape.
fn format_from_headers(headers: &HeaderMap) -> ApiFormat {
    if headers.contains_key("anthropic-version") {
        ApiFormat::Anthropic
    } else if headers.contains_key("x-goog-api-key") {
        ApiFormat::Gemini
    } else {
        ApiFormat::OpenAi
    }
}

/// One model in `format`'s shape. The gateway knows no creation dates, so the epoch stands in.
fn model_object(id: &str, owner: &str, format: ApiFormat) -> Value {
    match format {
        ApiFormat::OpenAi => json!({"id": id, "object": "model", "created": 0, "owned_by": owner}),
        ApiFormat::Anthropic => json!({"type": "model", "id": id, "display_name": id,
            "created_at": "1970-01-01T00:00:00Z"}),
        ApiFormat::Gemini => json!({"name": format!("models/{id}"), "displayName": id,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent",
                "countTokens", "embedContent", "batchEmbedContents"]}),
    }
}

/// A credential's own base URL, checked: parsed, and refused when it is `http://` to a host
/// that is not loopback unless its provider sets `allow_insecure` (the credential's token
/// would cross the network in clear), or when it or the credential's OAuth `token_url` names
/// a host outside `egress.allowed_hosts`. The error names the credential, never the URL.
fn credential_base_url(
    credential: &Credential,
    allow_insecure: bool,
    egress: &crate::config::EgressConfig,
) -> Result<Option<BaseUrl>, String> {
    if !egress.allowed_hosts.is_empty()
        && let cliproxy_vault::CredentialSecret::OAuth(tokens) = &credential.secret
    {
        let host = tokens
            .token_url
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| uri.host().map(str::to_owned));
        if !host.is_some_and(|host| egress.allows(&host)) {
            return Err(format!(
                "credential `{}`: token_url names a host that is not in `egress.allowed_hosts`",
                credential.id
            ));
        }
    }
    match &credential.base_url {
        Some(text) => {
            let url = BaseUrl::parse(text)
                .and_then(|url| url.check_transport(allow_insecure).map(|()| url))
                .map_err(|e| {
                    format!(
                        "credential `{}`: base_url {e} (or set `providers.{}.allow_insecure: true`)",
                        credential.id, credential.provider
                    )
                })?;
            if !egress.allows(url.host()) {
                return Err(format!(
                    "credential `{}`: base_url names a host that is not in `egress.allowed_hosts`",
                    credential.id
                ));
            }
            Ok(Some(url))
        }
        None => Ok(None),
    }
}

/// The status logged for a request whose client went away before it was answered (nginx's
/// "client closed request"): no status was sent, and this one cannot be mistaken for one.
const CLIENT_CLOSED_REQUEST: u16 = 499;

/// What the access log line says about a request; written once, when the response ends, or
/// when the request is dropped before it has an answer (see the `Drop` below).
struct Record {
    /// The gateway's logger: the request's own fields are written with the line, not held
    /// in a child logger (two fewer allocations and four fewer strings per request).
    log: Logger,
    method: Method,
    path: String,
    peer: SocketAddr,
    status: u16,
    proxied: bool,
    sse: bool,
    format: ApiFormat,
    client: Option<String>,
    model: Option<String>,
    provider: Option<String>,
    credential: Option<String>,
    attempts: usize,
    error: Option<String>,
    /// The client's address (behind a trusted proxy, the one it names).
    client_ip: Option<std::net::IpAddr>,
    /// The limiter standing sent as `X-RateLimit-*` on a successful answer.
    rate: Option<cliproxy_netguard::Admitted>,
    /// The minute-limit reservations and quota accounting of a proxied request.
    admission: Option<crate::guard::Admission>,
    /// Whether the request went to a provider (upstream or the mock): only then do its
    /// reservations count.
    sent: bool,
    /// When the request first went to the provider.
    sent_at: Option<Instant>,
    /// Whether the gateway asked the provider for the usage of a stream whose client did not
    /// ask for it: the stream's usage chunk is then taken out on the way.
    strip_usage: bool,
    /// A call that generates nothing (`/v1/messages/count_tokens`: its `input_tokens` is the
    /// answer, not usage, and the provider does not bill it): settled as zero tokens rather
    /// than charged the estimate that stands in for an unreported usage.
    free: bool,
    request_id: String,
    guard: Arc<Guard>,
    /// When the request arrived.
    started: Instant,
    /// Whether the report was made (by [`Record::finish`], or by the drop): it is made once.
    reported: bool,
}

impl Record {
    fn new(
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
            credential: None,
            attempts: 0,
            error: None,
            client_ip: None,
            rate: None,
            admission: None,
            sent: false,
            sent_at: None,
            strip_usage: false,
            free: false,
            request_id: request_id.to_owned(),
            guard,
            started,
            reported: false,
        }
    }

    /// The request's finishing phase: settles its reservations, writes its audit event and
    /// its access log line.
    fn finish(mut self, outcome: Outcome) {
        self.report(outcome);
    }

    fn report(&mut self, outcome: Outcome) {
        self.reported = true;
        let started = self.started;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        // Gone before the provider's answer arrived (or before the mock's was built).
        let gone_unanswered = matches!(outcome, Outcome::ClientGone(_)) && !self.proxied;
        let (result, usage, failure) = match outcome {
            Outcome::Complete(usage) => ("complete", usage, None),
            Outcome::Failed(reason, usage) => ("failed", usage, Some(reason)),
            Outcome::ClientGone(usage) => ("client_gone", usage, None),
        };
        if let Some(admission) = self.admission.take() {
            if !self.sent {
                // Refused before it left the gateway, or its client went away first:
                // everything it held goes back.
                admission.cancel(&self.guard);
            } else if gone_unanswered {
                // The provider has the request and may well be generating (and billing) the
                // answer nobody will read: with no usage to go by, it is charged the estimate.
                admission.settle(&self.guard, None);
            } else if !self.proxied || (self.status >= 400 && usage.is_none()) {
                // Sent, but answered with an error (the gateway's after upstream refusals or
                // a timeout, or the provider's own 4xx): the request counts, no tokens were
                // delivered.
                admission.settle(&self.guard, Some(0));
            } else {
                let used = if self.free {
                    Some(0)
                } else {
                    usage.map(|u| u.input_tokens.saturating_add(u.output_tokens))
                };
                admission.settle(&self.guard, used);
            }
        }
        // The audit event (and its metrics) of a request that reached a provider; any
        // other answer is only counted.
        let elapsed = started.elapsed();
        match (&self.provider, self.sent) {
            (Some(provider), true) => {
                let mut event = Event::new(What::ProviderRequest {
                    model: self.model.clone().unwrap_or_default(),
                    status: self.status,
                    duration: elapsed,
                    upstream: self.sent_at.map(|at| at.elapsed()),
                    input_tokens: usage.map(|u| u.input_tokens),
                    output_tokens: usage.map(|u| u.output_tokens),
                    credential: self.credential.clone(),
                    outcome: result,
                    error: failure.clone(),
                })
                .provider(provider.as_str())
                .request_id(self.request_id.as_str());
                event.ip = self.client_ip;
                event.user_id = self.client.clone();
                self.guard.emit(event);
            }
            _ => self.guard.audit.metrics().request("none", self.status, elapsed),
        }
        let usage = usage.unwrap_or(Usage::default());
        let error = self.error.as_deref().or(failure.as_deref());
        // One macro call per level, the fields borrowed: nothing is cloned for the line.
        macro_rules! access_line {
            ($level:ident) => {
                $level!(self.log, "request";
                    "request_id" => &self.request_id,
                    "method" => self.method.as_str(),
                    "path" => &self.path,
                    "peer" => self.peer,
                    "status" => self.status,
                    "stream" => self.sse,
                    "result" => result,
                    "client" => self.client.as_deref(),
                    "model" => self.model.as_deref(),
                    "provider" => self.provider.as_deref(),
                    "credential" => self.credential.as_deref(),
                    "attempts" => self.attempts,
                    "client_ip" => self.client_ip.map(Shown),
                    "input_tokens" => usage.input_tokens,
                    "output_tokens" => usage.output_tokens,
                    "duration_ms" => %format_args!("{elapsed_ms:.2}"),
                    "error" => error
                )
            };
        }
        if self.status >= 500 || result == "failed" {
            access_line!(warn);
        } else {
            access_line!(info);
        }
    }

    /// A logger carrying the request's fields, for handlers that log on their own.
    fn request_log(&self) -> Logger {
        self.log.new(o!("request_id" => self.request_id.clone(),
            "method" => self.method.to_string(), "path" => self.path.clone(), "peer" => self.peer))
    }
}

/// The finishing phase of a request whose future is dropped before it has an answer: hyper
/// drops it when the client hangs up, times out or resets its HTTP/2 stream, and when the
/// server shuts down with the request in flight. Nothing else runs then, so this is the one
/// place that can give back (or charge) what the request reserved; without it the quota it
/// held stayed held until a restart. House style wants the finishing phase explicit, not
/// hidden in a `Drop` (STYLE.md #21): every request that gets an answer is finished
/// explicitly, in [`Gateway::handle`] or by its body, and this only covers the drop that
/// skips them, with the same finishing code as [`Record::finish`] and the same
/// [`Outcome::ClientGone`] that the body reports when it is dropped (`Tapped` and
/// `CompleteReport` in body.rs): no second reporting path. It costs a flag test per request.
impl Drop for Record {
    fn drop(&mut self) {
        if !self.reported {
            self.status = CLIENT_CLOSED_REQUEST;
            self.report(Outcome::ClientGone(None));
        }
    }
}

/// A `Display` value logged as text, formatted into the line rather than into a `String`.
struct Shown<T>(T);

impl<T: std::fmt::Display> slog::Value for Shown<T> {
    fn serialize(
        &self,
        _: &slog::Record<'_>,
        key: slog::Key,
        serializer: &mut dyn slog::Serializer,
    ) -> slog::Result {
        serializer.emit_arguments(key, &format_args!("{}", self.0))
    }
}

/// Request ids: a random per-process prefix and a counter; unique, cheap, and not guessable
/// across restarts.
struct RequestIds {
    prefix: u32,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> Self {
        let mut bytes = [0u8; 4];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        Self { prefix: u32::from_le_bytes(bytes), counter: AtomicU64::new(0) }
    }

    fn next(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("req_{:08x}{n:012x}", self.prefix)
    }
}

pub(crate) fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let mut response = Response::new(full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Splits a query string into pairs, not decoded: only the mock's `alt=sse` is read from them
/// (credentials in the query are judged, decoded, by `upstream::query_holds_credential`).
fn query_pairs(query: Option<&str>) -> impl Iterator<Item = (&str, &str)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
}

/// Where a JSON error is, without echoing any of the input (it may hold a secret).
fn json_error_position(error: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match error.classify() {
        Category::Syntax => "syntax error",
        Category::Eof => "unexpected end of input",
        Category::Data => "invalid data",
        Category::Io => "read error",
    };
    format!("{what} at line {} column {}", error.line(), error.column())
}

/// Whether an I/O timeout is among the causes of `error` (the connector's connect timeout).
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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

    #[test]
    fn json_errors_do_not_echo_input() {
        let planted = "sk-planted-secret-value";
        let error =
            serde_json::from_str::<Value>(&format!("{{\"a\": \"{planted}\" oops}}")).unwrap_err();
        let text = json_error_position(&error);
        assert!(!text.contains(planted) && text.contains("line 1"), "{text}");
    }
}
