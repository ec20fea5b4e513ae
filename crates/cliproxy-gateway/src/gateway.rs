//! The gateway: building it from a loaded configuration, and [`Gateway::handle`], which takes
//! a request through the stages of the request path in order. Each stage lives in its own
//! module and shares one per-request context (`context.rs`); the order, and why each stage
//! sits where it does, is read here, in `handle` and `pipeline`:
//!
//! ```text
//! admission.rs  client IP (trusted proxies) + IP filter again
//! management.rs /v0/management: its own gate, up during maintenance
//! cors.rs       preflight (past the per-IP bucket, before any key)
//! intake.rs     endpoint and answer format (404/405)
//! readiness.rs  /healthz, /readyz (no key)
//! admission.rs  maintenance (503), per-IP bucket (429)
//! auth.rs       client key, global bucket (401/429); cool-down abuse throttle
//! models.rs     /v1/models listings
//! intake.rs     body (413/408), JSON and model (400)
//! forward.rs    model routing (404/403/400)
//! intake.rs     validation (400)
//! admission.rs  minute limits and quotas (429)
//! forward.rs    mock | upstream (pool, refresh, failover)
//! respond.rs    headers; the tap on a provider's body (idle timeout, usage)
//! finish.rs     settle quotas, audit event, access line (explicit, once)
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cliproxy_vault::Credential;
use http::{Request, Response};
use serde_json::Value;
use slog::{Logger, info, warn};
use tokio::time::Instant;

use crate::api::{self, Endpoint};
use crate::auth::{self, ClientKeyCell};
use crate::body::Outcome;
use crate::config::{GatewayConfig, LimitsConfig};
use crate::context::{RequestContext, RequestIds};
use crate::control::{ControlPlane, Note, Status};
use crate::cors::Cors;
use crate::error::{ApiError, Refusal, Result};
use crate::forward::{self, Outgoing};
use crate::guard::Guard;
use crate::http_util::Body;
use crate::layers::Layers;
use crate::management::{self, Management};
use crate::provider_set::{self, ProviderSet};
use crate::refresh::Vault;
use crate::reload::{ConfigLoader, ReloadReport, Reloader};
use crate::routing::ModelRouter;
use crate::{admission, intake, models, readiness, respond};

/// The gateway: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    log: Logger,
    limits: LimitsConfig,
    /// Swapped whole by a config reload (`auth.api_keys`).
    client_keys: Arc<ClientKeyCell>,
    /// The providers, their pools, the vault and what forwarding needs.
    providers: ProviderSet,
    management: Management,
    request_ids: RequestIds,
    started: Instant,
    /// What the binary's sandbox put in place, for `/v0/management/status`.
    sandbox: std::sync::OnceLock<Value>,
    /// The network guard (layer 4).
    guard: Arc<Guard>,
    /// The config reload, and where the configuration came from.
    reloader: Arc<Reloader>,
    /// `metrics:`, for the listener.
    metrics: cliproxy_audit::MetricsConfig,
    /// `server.cors`, when it lists origins.
    cors: Option<Cors>,
    /// What other instances changed in the shared state store and vault, for the server's
    /// refresh task (`shared_sync.rs`).
    shared: Arc<crate::shared_sync::SharedSignal>,
    /// The vault's change watcher, when its store is shared: it stops when dropped.
    _vault_watcher: Option<cliproxy_vault::Watcher>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let providers = &self.inner.providers.providers;
        f.debug_struct("Gateway")
            .field("providers", &providers.iter().map(|p| &p.name).collect::<Vec<_>>())
            .field("client_keys", &self.inner.client_keys.load().len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Composes the gateway from its view of a loaded configuration and its layers, each
    /// behind its trait: loads the credentials of every configured provider from the
    /// credential store and builds one upstream client per provider. It builds no layer:
    /// whatever state store, credential store, audit sink and clock it is handed are the
    /// ones it uses.
    pub fn from_parts(config: &GatewayConfig, layers: Layers, log: Logger) -> Result<Self> {
        let guard = Arc::new(Guard::from_parts(config, &layers, &log)?);
        // Bad client keys are configuration errors (exit 78): see the
        // `From<cliproxy_vault::Error>` for `Error`.
        let client_keys = config.auth.client_keys()?;
        let store = layers.credentials;
        let router = ModelRouter::new(&config.providers)?;
        let prices = crate::pricing::PriceTable::new(&config.pricing)
            .map_err(crate::config::ConfigError::from_problems)?;
        let credentials = store.load_all()?;
        let providers = provider_set::build_providers(
            config,
            &credentials,
            store.location(),
            &guard.state,
            &log,
        )?;
        // The client keys created at run time, kept in the state store beside the config
        // file's: a store that cannot be read stops the start, as for bans and quotas.
        let stored_keys = guard
            .state
            .load_client_keys()
            .map_err(|e| crate::error::Error::State(crate::netguard_error(&e)))?;
        for notice in guard.state.take_notices() {
            warn!(log, "state store notice"; "detail" => notice);
        }
        let client_keys = Arc::new(ClientKeyCell::new(client_keys, stored_keys, &log));
        guard.put_client_limits(&client_keys.load().limit_table());
        if client_keys.load().is_empty() {
            warn!(log, "no client keys configured: every proxy request will be refused with 401";
                "fix" => "add a key under auth.api_keys (cliproxy-server keygen prints one)");
        }
        let fingerprint = if config.auth.device_fingerprint.enabled {
            let name = http::HeaderName::try_from(config.auth.device_fingerprint.header.as_str())
                .map_err(|_| {
                crate::config::ConfigError::new(
                    "`auth.device_fingerprint.header` is not a valid HTTP header name",
                )
            })?;
            let value = http::HeaderValue::try_from(store.device_fingerprint()?)
                .map_err(|_| crate::config::ConfigError::new("device fingerprint is not ASCII"))?;
            Some((name, value))
        } else {
            None
        };
        for notice in store.take_notices() {
            warn!(log, "credential vault notice"; "detail" => crate::vault_notice_message(&notice));
        }
        let mut management = Management::new(&config.management);
        let bans = guard
            .state
            .load_bans()
            .map_err(|e| crate::error::Error::State(crate::netguard_error(&e)))?;
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
        let reloader = Arc::new(Reloader::new(log.clone(), guard.clone(), client_keys.clone()));
        let shared = Arc::new(crate::shared_sync::SharedSignal::default());
        shared.watch(&*guard.state);
        let vault_watcher = shared.watch_vault(&*vault.store)?;
        Ok(Self {
            inner: Arc::new(Inner {
                limits: config.server.limits.clone(),
                client_keys,
                providers: ProviderSet {
                    providers,
                    router,
                    prices,
                    vault,
                    fingerprint,
                    limits: config.server.limits.clone(),
                    log: log.clone(),
                },
                log,
                management,
                request_ids: RequestIds::new(),
                started: Instant::now(),
                sandbox: std::sync::OnceLock::new(),
                guard,
                reloader,
                metrics: config.metrics.clone(),
                cors: Cors::new(&config.server.cors),
                shared,
                _vault_watcher: vault_watcher,
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
        let mut ctx = RequestContext::new(
            &inner.log,
            &request_id,
            request.method(),
            // A client key pasted into the path is not logged.
            &crate::client_key_table::redact_keys_in_path(request.uri().path()),
            peer,
            inner.guard.clone(),
            started,
        );
        // Read before the request is consumed; `None` (no work) when CORS is off.
        let cors_origin = inner
            .cors
            .as_ref()
            .map(|cors| cors.allowed_origin(request.uri().path(), request.headers()));
        let mut response = match self.pipeline(request, peer, &mut ctx).await {
            Ok(response) => response,
            Err((format, error)) => {
                ctx.error = Some(error.message.clone());
                error.into_response(format)
            }
        };
        // The response stage: what every answer carries, errors included.
        respond::decorate(&mut response, &ctx, &inner.guard, cors_origin);
        ctx.status = response.status().as_u16();
        if ctx.proxied {
            // A provider's answer is finished by its body, when it ends (with the usage read
            // from it on the way), and a silent upstream is cut off after the idle timeout.
            respond::tap(response, ctx, inner.limits.stream_idle_timeout)
        } else {
            // The gateway's own answer is whole already: the finishing stage runs now.
            ctx.finish(Outcome::Complete(None));
            response
        }
    }

    /// The stages in order, each with the reason for its position. Every stage may answer
    /// (a refusal, or the whole answer for health, management, preflights and listings).
    async fn pipeline<B>(
        &self,
        request: Request<B>,
        peer: SocketAddr,
        ctx: &mut RequestContext,
    ) -> Result<Response<Body>, Refusal>
    where
        B: http_body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let inner = &self.inner;
        let guard = &*inner.guard;
        let (parts, body) = request.into_parts();
        // The client behind a trusted proxy is known only now, from its headers, and must
        // pass the IP filter as the peer did at accept.
        let client_ip = admission::client_ip(guard, peer, &parts, ctx)?;
        // The management API has its own gate (its own key, loopback, bans) and errors, and
        // stays up during maintenance so that operators can end it.
        if api::is_management(parts.uri.path()) {
            ctx.client = Some("management".to_owned());
            let log = ctx.request_log();
            return Ok(management::handle(
                self,
                &inner.management,
                &parts,
                body,
                peer,
                &ctx.request_id,
                &log,
            )
            .await);
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
            admission::per_ip(guard, client_ip, endpoint.format(), ctx)?;
            return Ok(cors.preflight());
        }
        // Routing before authentication: an unknown path is 404 for everyone and tells nothing
        // about keys; a known one tells us which API format to answer errors in.
        let (endpoint, format) = intake::endpoint(&parts)?;
        // Health answers need no key: orchestrators probe them without one.
        match endpoint {
            Endpoint::Healthz => return Ok(readiness::healthz()),
            Endpoint::Readyz => {
                return Ok(readiness::readyz(&inner.providers.vault, guard, &inner.log));
            }
            _ => {}
        }
        // Maintenance refuses before any work is done for the request.
        admission::maintenance(guard, client_ip, format)?;
        // The per-IP rate limit comes before authentication: a flood of bad keys from one
        // address costs a bucket check, not a key hash each.
        admission::per_ip(guard, client_ip, format, ctx)?;
        // Client authentication before reading the body, so that an unauthenticated client
        // cannot make the gateway buffer megabytes; the global bucket is charged after it.
        let client = auth::authenticate(
            &inner.client_keys,
            guard,
            &parts,
            client_ip,
            &ctx.request_id,
            format,
        )?;
        ctx.client = Some(client.name.clone());
        // A key whose requests keep making credentials rest is refused for a while
        // (`server.security.cooldown_abuse`), before its body is read.
        guard
            .cooldown_throttle(&client.name, client_ip, &ctx.request_id)
            .map_err(|error| (format, error))?;
        // Listings need a key (they show what it may use) but no body.
        match endpoint {
            Endpoint::Models { .. } => {
                return Ok(models::list(&inner.providers, &*guard.clock, &client, format).await);
            }
            Endpoint::Model { id, .. } => {
                return models::one(&inner.providers, &client, id, format)
                    .map_err(|error| (format, error));
            }
            _ => {}
        }
        // The body cap holds before any guard layer: an oversized body is never held.
        let body = intake::read_body(&parts, body, &inner.limits, format).await?;
        let parsed = intake::parse(&endpoint, &body, format)?;
        ctx.model = Some(parsed.model.clone());
        // Model routing, then the client key's own model list, then the formats: the
        // provider's decides whether the request is translated (`translation.rs`).
        let routed =
            forward::route(&inner.providers, &parsed.model, &endpoint, &client, format, ctx)?;
        let provider = routed.provider;
        // Validation needs the provider: its `max_tokens` caps its requests too.
        let requested_tokens =
            intake::validate(guard, &endpoint, &parsed, provider, client_ip, format)?;
        let usage_option = intake::usage_option(&endpoint, &parsed);
        let intake::Parsed { model, stream, .. } = parsed;
        // The minute limits and quotas come last: only a request that will really be sent
        // spends them.
        let charge = admission::Charge {
            provider: &provider.name,
            client: &client.name,
            body_len: body.len(),
            requested_tokens,
            free: matches!(endpoint, Endpoint::CountTokens | Endpoint::GeminiCountTokens { .. }),
        };
        admission::minute_limits_and_quotas(guard, client_ip, charge, format, ctx)?;
        // The mock answers in-process; everything else goes upstream with a credential from
        // the provider's pool, failing over on the credential's own faults.
        let out = Outgoing {
            parts: &parts,
            endpoint,
            model: &model,
            stream,
            body,
            usage_option,
            format,
            upstream_model: routed.upstream_model,
            translation: routed.translation,
            other: routed.other,
        };
        forward::send(&inner.providers, provider, out, ctx).await
    }

    /// Waits until every audit event recorded so far is written (or has failed), the events
    /// of the alerts fired so far included. The server calls it at shutdown; embedders and
    /// tests when they need the file complete.
    pub fn flush_audit(&self) {
        self.inner.guard.flush_alerts();
        self.inner.guard.audit.flush();
    }

    /// Waits until every alert fired so far has been carried out (a `block_ip` address is on
    /// the runtime denylist): alerts act through a queue, off the request path.
    pub fn flush_alerts(&self) {
        self.inner.guard.flush_alerts();
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

    /// Writes the last-use times gathered since the previous flush to the vault (for
    /// `vault list`). Called periodically by the server and at shutdown.
    pub async fn flush_last_used(&self) {
        self.inner.providers.flush_last_used().await;
    }

    /// Checks `config` as the build will (without writing anything), then says what the
    /// sandbox must leave reachable for it, creating the writable directories where missing
    /// (`sandbox_paths.rs`). Not part of the request path: the binary calls it before the
    /// gateway is built.
    pub fn sandbox_paths(
        config: &GatewayConfig,
        config_file: Option<&std::path::Path>,
    ) -> Result<cliproxy_container::sandbox::Paths, crate::error::Error> {
        crate::sandbox_paths::sandbox_paths(config, config_file)
    }

    /// Hands the gateway the binary's loader of its configuration, so that it can be
    /// reloaded (it reads no file itself). A gateway built from text (`demo`) has none and
    /// refuses reloads.
    pub fn set_config_loader(&self, loader: Box<dyn ConfigLoader>) {
        self.inner.reloader.set_config_loader(loader);
    }

    /// Reloads the configuration (SIGHUP). Errors are logged and audited; the old
    /// configuration stays in force.
    pub fn reload(&self, trigger: &str) -> Result<ReloadReport, String> {
        self.inner.reloader.reload(trigger)
    }

    /// Re-reads the client keys created at run time from the state store (another process,
    /// `cliproxy-server keys`, writes the same store: `bits` holds `KEYS` on the server's
    /// one-second beat) and puts in force what other instances changed in a shared store
    /// (`bits` from [`SharedSignal::take`](crate::shared_sync::SharedSignal::take)).
    /// Blocking (it reads the store): the server calls it off the async workers. A failed
    /// read keeps what is in force and is logged.
    pub(crate) fn sync_shared(&self, bits: u8) {
        let inner = &self.inner;
        crate::shared_sync::sync(
            bits,
            &inner.guard,
            &inner.client_keys,
            &inner.management,
            &inner.providers,
            &inner.log,
        );
    }

    /// What other instances changed, for the server's refresh task.
    pub(crate) fn shared_signal(&self) -> &Arc<crate::shared_sync::SharedSignal> {
        &self.inner.shared
    }

    /// The network guard, for the listener.
    pub(crate) fn guard(&self) -> &Arc<Guard> {
        &self.inner.guard
    }

    /// `state.flush_interval`: the beat of the guard's housekeeping.
    pub(crate) fn state_flush_interval(&self) -> Duration {
        self.inner.guard.flush_interval
    }

    /// `metrics:`, for the listener.
    pub(crate) fn metrics_config(&self) -> &cliproxy_audit::MetricsConfig {
        &self.inner.metrics
    }
}

/// The management plane's handle on the gateway: each call goes to the part that owns it
/// (the credential writes to `credentials.rs`, the reload to `reload.rs`).
impl ControlPlane for Gateway {
    fn guard(&self) -> &Arc<Guard> {
        &self.inner.guard
    }

    fn vault(&self) -> &Arc<Vault> {
        &self.inner.providers.vault
    }

    fn client_keys(&self) -> &Arc<ClientKeyCell> {
        &self.inner.client_keys
    }

    fn knows_provider(&self, name: &str) -> bool {
        self.inner.providers.knows_provider(name)
    }

    fn accepts_credentials_for(&self, name: &str) -> bool {
        self.inner.providers.accepts_credentials_for(name)
    }

    fn upstream_provider_names(&self) -> Vec<&str> {
        self.inner.providers.upstream_provider_names()
    }

    async fn store_credential(&self, credential: Credential) -> Result<(), ApiError> {
        self.inner.providers.store_credential(credential).await
    }

    async fn delete_credentials(&self, ids: &[String]) -> Result<Vec<String>, ApiError> {
        self.inner.providers.delete_credentials(ids).await
    }

    fn pool_owner(&self, id: &str) -> Option<&str> {
        self.inner.providers.pool_owner(id)
    }

    fn cooldown_left(&self, provider: &str, id: &str) -> Option<Duration> {
        self.inner.providers.cooldown_left(provider, id)
    }

    async fn flush_last_used(&self) {
        self.inner.providers.flush_last_used().await;
    }

    async fn reload_config(
        &self,
        trigger: &'static str,
        note: &mut Note,
    ) -> Result<Response<Body>, ApiError> {
        self.inner.reloader.reload_config(trigger, note).await
    }

    fn status(&self) -> Status<'_> {
        Status {
            uptime: self.inner.started.elapsed(),
            readiness: readiness::detail(&self.inner.providers.vault, &self.inner.guard),
            metrics: &self.inner.metrics,
            sandbox: self.inner.sandbox.get().cloned().unwrap_or(Value::Null),
        }
    }
}
