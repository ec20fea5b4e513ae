//! The network guard (layer 4) as the gateway composes it: the parts of `cliproxy-netguard`
//! built from the `server:` and `state:` sections, and the one place where a refusal is
//! counted and reported.

use std::net::IpAddr;
use std::sync::Arc;

use cliproxy_audit::{ALERT_RULE, Audit, Event, EventType, Plane, What};
use cliproxy_core::ErrorCode;
use cliproxy_netguard::tls::TlsSettings;
use cliproxy_netguard::{
    Admitted, Clock, Counters, DenyEntry, GlobalRateLimiter, IpFilter, IpRateLimiter, LimitKind,
    Limited, Maintenance, MinuteLimiter, QuotaScope, Quotas, RejectionKind, Reservation,
    SecurityHeaders, StateChange, StateStore, Validator,
};
use ipnetwork::IpNetwork;
use slog::{Logger, error, info, warn};

use crate::alerts::{Actions, AlertQueue};
use crate::config::Config;
use crate::error::{ApiError, Result};
use crate::violation_book::{ALERT_KEY, MANAGEMENT_BAN_KEY, ViolationBook, plane_index, plane_of};
pub(crate) use crate::violation_book::{FLOOD_DETAIL, MANAGEMENT_BAN_RULE, ban_key};

/// The guard's parts, shared by the listener and the request pipeline.
#[derive(Debug)]
pub(crate) struct Guard {
    /// Shared with the alert worker, which adds `block_ip` entries to its runtime denylist.
    pub(crate) ip: Arc<IpFilter>,
    pub(crate) headers: SecurityHeaders,
    pub(crate) validator: Validator,
    pub(crate) maintenance: Maintenance,
    pub(crate) counters: Counters,
    pub(crate) clock: Arc<dyn Clock>,
    /// `server.security.rate_limiting`, when on.
    per_ip: Option<IpRateLimiter>,
    /// `server.rate_limit`, when on: the bucket of requests with a valid client key.
    global: Option<GlobalRateLimiter>,
    /// A bucket of the same size for requests without a valid client key, so that strangers
    /// cannot empty the one keyed clients draw on, while their flood stays bounded as a whole.
    strangers: Option<GlobalRateLimiter>,
    /// `providers.<name>.rate_limit`.
    provider_minutes: MinuteLimiter,
    /// `auth.api_keys[N].rate_limit`.
    client_minutes: MinuteLimiter,
    /// `providers.<name>.quota` and `auth.api_keys[N].quota`.
    pub(crate) quotas: Quotas,
    /// Tokens assumed for a request without `max_tokens`: `DEFAULT_TOKEN_ESTIMATE`, or the
    /// validation cap when it is lower.
    estimate: u64,
    /// Per refusal kind: the second of the last log line, and the lines left out since.
    last_logged: [std::sync::atomic::AtomicU64; RejectionKind::ALL.len()],
    suppressed: [std::sync::atomic::AtomicU64; RejectionKind::ALL.len()],
    /// When ended entries were last purged from the state store (Unix seconds).
    last_purge: std::sync::atomic::AtomicU64,
    /// Whether the state store's failure has been logged (and its recovery not yet).
    state_failing: std::sync::atomic::AtomicBool,
    /// Where quota usage, the runtime denylist and management bans survive restarts.
    pub(crate) state: Arc<dyn StateStore>,
    /// `server.tls`, when on.
    pub(crate) tls: Option<TlsSettings>,
    /// `state.flush_interval`.
    pub(crate) flush_interval: std::time::Duration,
    /// The audit layer (layer 5): every refusal that is a security violation goes to it, and
    /// the alerts its rules fire go to `alerts`.
    pub(crate) audit: Arc<Audit>,
    /// The queue of fired alerts and the worker that carries them out (`alerts.rs`).
    alerts: AlertQueue,
    /// The limits of each client key name the minute limiters and quotas were built with.
    client_limit_table: ClientLimitTable,
    /// When each rule last wrote a violation line for each address (shared with the alert
    /// worker, whose lines go under the same budget).
    violations: Arc<ViolationBook>,
    /// The same book for refused keys, per plane and address (see [`Guard::auth_failure`]).
    auth_failures: ViolationBook,
    /// `server.security.cooldown_abuse` (see `abuse.rs`).
    pub(crate) cooldown_abuse: crate::abuse::CooldownAbuse,
    pub(crate) log: Logger,
}

/// What a proxied request holds from the minute limits until its reply ends: the reserved
/// tokens are settled with the real usage, which is also added to the quotas.
#[derive(Debug)]
pub(crate) struct Admission {
    provider: String,
    client: String,
    provider_minute: Reservation,
    client_minute: Reservation,
    /// The tokens held against each quota while the request runs (its prompt estimate plus
    /// its `max_tokens` or the guard's estimate, capped at the quota's limit; 0 without a
    /// quota), charged when its reply reports no usage.
    provider_quota: u64,
    client_quota: u64,
}

impl Admission {
    /// Settles the reservations with the real usage and counts it against the quotas. A
    /// reply without a usage figure (a stream from an OpenAI-compatible upstream that ignores
    /// `stream_options.include_usage`, a client that hung up) is charged the estimate, prompt
    /// included: unknown usage must not be free. Each limit is charged the estimate as it
    /// held it, capped at that limit (see `Quotas::reserve` and `MinuteLimiter::reserve`), so
    /// that a `max_tokens` of 2^64-1 accepted with validation off costs at most a whole quota
    /// or minute, never more.
    pub(crate) fn settle(self, guard: &Guard, used_tokens: Option<u64>) {
        let charge = |held: u64| used_tokens.unwrap_or(held);
        let provider_minute = charge(self.provider_minute.reserved_tokens());
        self.provider_minute.settle(provider_minute);
        let client_minute = charge(self.client_minute.reserved_tokens());
        self.client_minute.settle(client_minute);
        let (provider, client) = (charge(self.provider_quota), charge(self.client_quota));
        guard.quotas.settle(QuotaScope::Provider, &self.provider, self.provider_quota, provider);
        guard.quotas.settle(QuotaScope::Client, &self.client, self.client_quota, client);
        if let Some(status) = guard.quotas.status(QuotaScope::Provider, &self.provider) {
            guard.audit.metrics().set_quota_remaining(&self.provider, status.remaining);
        }
        // Straight to the state store's queue: its writer commits within one flush interval.
        guard.save_quotas();
    }

    /// Gives everything back for a request that was never sent upstream.
    pub(crate) fn cancel(self, guard: &Guard) {
        self.provider_minute.cancel();
        self.client_minute.cancel();
        guard.quotas.release(QuotaScope::Provider, &self.provider, self.provider_quota);
        guard.quotas.release(QuotaScope::Client, &self.client, self.client_quota);
    }

    /// The client key's requests-per-minute standing, for the `X-RateLimit-*` headers.
    pub(crate) fn headline(&self) -> Option<Admitted> {
        self.client_minute.requests().or(self.provider_minute.requests())
    }
}

impl Guard {
    /// Builds the guard from the configuration and the layers it is given: the clock, the
    /// listener's TLS, the state store and the audit layer's metrics and sink. It opens
    /// nothing itself (see `default_layers.rs` for what the binary builds).
    pub(crate) fn from_parts(
        config: &Config,
        layers: &crate::layers::Layers,
        log: &Logger,
    ) -> Result<Self> {
        let server = &config.server;
        let clock = layers.clock.clone();
        let config_error = |e: cliproxy_netguard::Error| {
            crate::config::ConfigError::new(crate::netguard_error(&e))
        };
        let tls = layers.tls.clone();
        let state = layers.state.clone();
        let audit = Audit::with_sink(
            layers.audit_sink.clone(),
            &config.logging.audit,
            layers.metrics.clone(),
            &config.alerts,
        );
        // Alert windows run on the guard's clock, so that tests drive them with a fake one.
        let alert_clock = clock.clone();
        let audit =
            Arc::new(audit.with_clock(Arc::new(move || alert_clock.monotonic_nanos() / 1_000_000)));
        if !audit.enabled() {
            warn!(log, "the audit log is off: security events are counted in metrics but not recorded";
                "fix" => "set logging.audit.enabled: true and logging.audit.file");
        }
        let headers = SecurityHeaders::new(&server.security.headers, server.tls.enabled)
            .map_err(config_error)?;
        // A request without `max_tokens` is not bounded by the cap (it caps what is asked
        // for, and nothing is), so its estimate is a fixed figure, a lower cap taking its
        // place. Holding a cap sized for coding clients (128000) instead would let two such
        // requests fill a client key's tokens per minute until their usage comes back.
        let estimate = server
            .security
            .request_validation
            .max_tokens
            .map_or(cliproxy_netguard::DEFAULT_TOKEN_ESTIMATE, |cap| {
                u64::from(cap.get()).min(cliproxy_netguard::DEFAULT_TOKEN_ESTIMATE)
            });
        let provider_limits: Vec<(String, cliproxy_core::RateLimit)> = config
            .providers
            .0
            .iter()
            .filter_map(|(name, p)| p.rate_limit.map(|limit| (name.clone(), limit)))
            .collect();
        let provider_quotas: Vec<(String, cliproxy_core::Quota)> = config
            .providers
            .0
            .iter()
            .filter_map(|(name, p)| p.quota.map(|quota| (name.clone(), quota)))
            .collect();
        let keys = config.auth.client_keys()?;
        let client_limits: Vec<(String, cliproxy_core::RateLimit)> = keys
            .identities()
            .filter_map(|id| id.rate_limit.map(|limit| (id.name.clone(), limit)))
            .collect();
        let client_quotas: Vec<(String, cliproxy_core::Quota)> = keys
            .identities()
            .filter_map(|id| id.quota.map(|quota| (id.name.clone(), quota)))
            .collect();
        let client_limit_table = limit_table(&keys);
        let quota_providers: Vec<String> =
            provider_quotas.iter().map(|(name, _)| name.clone()).collect();
        let quotas = Quotas::new(provider_quotas, client_quotas, clock.clone());
        quotas.seed(state.load_quota_usage().map_err(state_error)?);
        // `cliproxy_quota_remaining` from the first scrape, then after every request.
        for name in &quota_providers {
            if let Some(status) = quotas.status(QuotaScope::Provider, name) {
                audit.metrics().set_quota_remaining(name, status.remaining);
            }
        }
        let ip = Arc::new(
            IpFilter::new(&server.security, &server.trusted_proxies, clock.clone())
                .with_forwarded_header(server.forwarded_header),
        );
        let now = clock.unix_seconds();
        let mut restored = 0;
        for entry in state.load_denylist().map_err(state_error)? {
            if entry.is_active(now) {
                ip.deny(entry);
                restored += 1;
            }
        }
        for notice in state.take_notices() {
            warn!(log, "state store notice"; "detail" => notice);
        }
        info!(log, "network guard ready"; "state" => state.describe(), "denylist_entries" => restored,
            "tls" => tls.is_some(), "per_ip_rate_limit" => server.security.rate_limiting.enabled,
            "global_rate_limit" => server.rate_limit.enabled,
            "request_validation" => server.security.request_validation.enabled,
            "maintenance" => server.maintenance_mode);
        let log = log.new(slog::o!("layer" => "netguard"));
        let violations = Arc::new(ViolationBook::folding());
        let alerts = AlertQueue::start(Actions {
            ip: ip.clone(),
            state: state.clone(),
            audit: audit.clone(),
            webhooks: crate::webhook::Webhooks::new(&config.alerts, &log)?,
            violations: violations.clone(),
            clock: clock.clone(),
            log: log.clone(),
        })
        .map_err(|source| crate::error::Error::Io {
            context: "starting the alert worker thread".to_owned(),
            source,
        })?;
        Ok(Self {
            estimate,
            last_logged: Default::default(),
            suppressed: Default::default(),
            last_purge: Default::default(),
            state_failing: Default::default(),
            state,
            tls,
            flush_interval: config.state.flush_interval,
            audit,
            alerts,
            client_limit_table,
            violations,
            auth_failures: ViolationBook::by_id(),
            cooldown_abuse: crate::abuse::CooldownAbuse::new(&server.security.cooldown_abuse)
                .map_err(crate::config::ConfigError::new)?,
            per_ip: IpRateLimiter::from_config(&server.security.rate_limiting, clock.clone()),
            global: GlobalRateLimiter::from_config(&server.rate_limit, clock.clone()),
            strangers: GlobalRateLimiter::from_config(&server.rate_limit, clock.clone()),
            provider_minutes: MinuteLimiter::new(
                QuotaScope::Provider,
                provider_limits,
                estimate,
                clock.clone(),
            ),
            client_minutes: MinuteLimiter::new(
                QuotaScope::Client,
                client_limits,
                estimate,
                clock.clone(),
            ),
            quotas,
            ip,
            headers,
            validator: Validator::new(&server.security.request_validation),
            maintenance: Maintenance::new(server.maintenance_mode, server.message.clone()),
            counters: Counters::default(),
            clock,
            log,
        })
    }

    /// The guard on the default layers built from `config` (the unit tests below).
    #[cfg(test)]
    pub(crate) fn build(
        config: &Config,
        clock: Option<Arc<dyn Clock>>,
        log: &Logger,
    ) -> Result<Self> {
        let layers = crate::default_layers::build(config, clock, log)?;
        Self::from_parts(config, &layers, log)
    }

    /// Step 7: the per-IP token bucket, before authentication. On success, its standing for
    /// the `X-RateLimit-*` headers.
    pub(crate) fn admit(&self, ip: IpAddr, request_id: &str) -> Result<Option<Admitted>, Limited> {
        let context = Context { request_id: Some(request_id), ..Context::default() };
        match &self.per_ip {
            Some(limiter) => Ok(Some(limiter.check(ip).inspect_err(|limited| {
                self.reject_in(
                    RejectionKind::PerIpRateLimit,
                    ip,
                    &crate::netguard_keys::limited_message(limited),
                    &context,
                );
            })?)),
            None => Ok(None),
        }
    }

    /// Once the client key is judged (between steps 7 and 10): the global token bucket of the
    /// keyed requests when `authenticated`, else the strangers' bucket of the same size.
    /// Charged after authentication so that requests without a valid key, from however many
    /// addresses, cannot spend the budget of the clients that have one (issue 18); it is
    /// still one atomic operation on the request path.
    pub(crate) fn admit_global(
        &self,
        ip: IpAddr,
        request_id: &str,
        authenticated: bool,
    ) -> Result<(), Limited> {
        let bucket = if authenticated { &self.global } else { &self.strangers };
        let Some(bucket) = bucket else { return Ok(()) };
        let context = Context { request_id: Some(request_id), ..Context::default() };
        bucket.check().map(drop).inspect_err(|limited| {
            self.reject_in(
                RejectionKind::GlobalRateLimit,
                ip,
                &crate::netguard_keys::limited_message(limited),
                &context,
            );
        })
    }

    /// Step 10: the provider's and the client key's requests and tokens per minute, then
    /// their quotas. Nothing is held when any of them refuses. Each holds the request's
    /// estimate: its prompt (`prompt_tokens`, estimated from the body) and its output cap
    /// (`max_tokens`, or the estimate of a request without one), so that a large prompt with
    /// a tiny output cap holds, and is charged when no usage comes back, what it will really
    /// cost.
    pub(crate) fn admit_request(
        &self,
        ip: IpAddr,
        provider: &str,
        client: &str,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
        request_id: &str,
    ) -> Result<Admission, Limited> {
        let context =
            Context { request_id: Some(request_id), user: Some(client), provider: Some(provider) };
        let refuse = |limited: Limited| {
            let kind = match limited.kind {
                LimitKind::ProviderQuota | LimitKind::ClientQuota => RejectionKind::Quota,
                _ => RejectionKind::MinuteLimit,
            };
            self.reject_in(kind, ip, &crate::netguard_keys::limited_message(&limited), &context);
            limited
        };
        let estimate = prompt_tokens.saturating_add(max_tokens.unwrap_or(self.estimate));
        let provider_minute =
            self.provider_minutes.reserve(provider, Some(estimate)).map_err(refuse)?;
        let client_minute = match self.client_minutes.reserve(client, Some(estimate)) {
            Ok(reservation) => reservation,
            Err(limited) => {
                provider_minute.cancel();
                return Err(refuse(limited));
            }
        };
        let provider_quota = match self.quotas.reserve(QuotaScope::Provider, provider, estimate) {
            Ok(held) => held,
            Err(limited) => {
                provider_minute.cancel();
                client_minute.cancel();
                return Err(refuse(limited));
            }
        };
        let client_quota = match self.quotas.reserve(QuotaScope::Client, client, estimate) {
            Ok(held) => held,
            Err(limited) => {
                provider_minute.cancel();
                client_minute.cancel();
                self.quotas.release(QuotaScope::Provider, provider, provider_quota);
                return Err(refuse(limited));
            }
        };
        Ok(Admission {
            provider: provider.to_owned(),
            client: client.to_owned(),
            provider_minute,
            client_minute,
            provider_quota,
            client_quota,
        })
    }

    /// What `GET /v0/management/status` shows of the guard: what is on, and the refusals
    /// counted since the start.
    pub(crate) fn status(&self) -> serde_json::Value {
        let rejections: serde_json::Map<String, serde_json::Value> = self
            .counters
            .snapshot()
            .into_iter()
            .map(|(name, count)| (name.to_owned(), count.into()))
            .collect();
        serde_json::json!({
            "tls": self.tls.is_some(),
            "maintenance": self.maintenance.get(),
            "per_ip_rate_limit": self.per_ip.as_ref().map(|l| serde_json::json!({"tracked": l.len(), "capacity": l.capacity()})),
            "global_rate_limit": self.global.is_some(),
            "runtime_denylist_entries": self.ip.runtime_denylist().len(),
            "state": self.state.describe(),
            "rejections": rejections,
        })
    }

    /// What `GET /v0/management/status` shows of the audit layer.
    pub(crate) fn audit_status(&self) -> serde_json::Value {
        serde_json::json!({
            "enabled": self.audit.enabled(),
            "healthy": self.audit.failing().is_none(),
            "error": self.audit_failing(),
        })
    }

    /// Why the audit log cannot be written, naming its setting (`None` when it is off or
    /// healthy): for the readiness check and the status page.
    pub(crate) fn audit_failing(&self) -> Option<String> {
        self.audit.failing().map(|f| crate::audit_anchor::failure_text(&f))
    }

    /// Housekeeping the server runs every `state.flush_interval`: drops idle per-IP buckets
    /// and expired denylist entries.
    pub(crate) fn tick(&self) {
        if let Some(limiter) = &self.per_ip {
            limiter.evict_idle();
        }
        // Expired denylist entries leave the store at once; ended management bans (which
        // only the store keeps) once a minute.
        let now = self.clock.unix_seconds();
        let last = self.last_purge.load(std::sync::atomic::Ordering::Relaxed);
        self.write_violation_summaries(now);
        self.write_auth_summaries(now);
        self.write_cooldown_abuse_summaries(now);
        let purged = !self.ip.purge_expired().is_empty();
        self.audit.metrics().set_blocked_ips(self.ip.runtime_denylist().len());
        if purged || now.saturating_sub(last) >= 60 {
            self.last_purge.store(now, std::sync::atomic::Ordering::Relaxed);
            self.state.submit(StateChange::PurgeExpired { now });
        }
        self.save_quotas();
        self.watch_state();
    }

    /// Logs the state store turning unwritable (once, with the cause naming the file and
    /// `state.path`) and writable again. Its writer keeps the changes and retries them, the
    /// limits go on counting in memory and `/readyz` names the check meanwhile; this line is
    /// what tells the operator why.
    fn watch_state(&self) {
        use std::sync::atomic::Ordering;
        match self.state.check() {
            Ok(()) => {
                if self.state_failing.swap(false, Ordering::Relaxed) {
                    info!(self.log, "the state store is writable again";
                          "state" => self.state.describe());
                }
            }
            Err(e) => {
                if !self.state_failing.swap(true, Ordering::Relaxed) {
                    error!(self.log, "the state store cannot be written: {}", crate::netguard_error(&e);
                           "fix" => "free space or make state.path writable; changes are kept in memory and retried");
                }
            }
        }
    }

    /// Makes a runtime denylist entry durable before it is answered.
    pub(crate) async fn persist_deny(&self, entry: &DenyEntry) -> Result<(), ApiError> {
        self.persist(StateChange::DenyAdd(entry.clone())).await
    }

    /// Makes the removal of a runtime denylist entry durable before it is answered.
    pub(crate) async fn persist_undeny(&self, network: IpNetwork) -> Result<(), ApiError> {
        self.persist(StateChange::DenyRemove(network)).await
    }

    /// Queues a change and waits until it is on disk.
    pub(crate) async fn persist(&self, change: StateChange) -> Result<(), ApiError> {
        self.state.submit(change);
        let state = self.state.clone();
        match tokio::task::spawn_blocking(move || state.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                warn!(self.log, "state store write failed"; "error" => crate::netguard_error(&error));
                Err(ApiError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "the change is in force but could not be stored yet ({}); it is written when the store recovers (see the gateway log)",
                        self.state.describe()
                    ),
                ))
            }
            Err(_) => Err(ApiError::new(ErrorCode::Internal, "the state store writer failed")),
        }
    }

    /// Hands changed quota counts to the state store (which writes them in its next batch).
    pub(crate) fn save_quotas(&self) {
        for usage in self.quotas.take_dirty() {
            self.state.submit(StateChange::Quota(usage));
        }
    }

    /// Writes everything pending; called at shutdown.
    pub(crate) async fn shutdown(&self) {
        // The alerts still queued are carried out first, so that their blocks reach the
        // state store below, as they did when alerts were carried out at once.
        let alerts = self.alerts.flusher();
        let _ = tokio::task::spawn_blocking(move || alerts.flush()).await;
        // Every second has ended for the refusals still only counted.
        self.write_violation_summaries(u64::MAX);
        self.write_auth_summaries(u64::MAX);
        self.write_cooldown_abuse_summaries(u64::MAX);
        self.save_quotas();
        let state = self.state.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || state.flush()).await {
            warn!(self.log, "could not write the last state changes at shutdown"; "error" => crate::netguard_error(&error));
        }
    }

    /// Counts a refusal and reports it: security violations as warnings with
    /// `event_type: security_violation` (the audit layer will file them), the rest at info.
    /// At most one line per kind per second is written, with the number left out since the
    /// last one: a flood of refusals must stay cheap, and the counters keep every one.
    pub(crate) fn reject(&self, kind: RejectionKind, ip: IpAddr, detail: &str) {
        self.reject_in(kind, ip, detail, &Context::default());
    }

    /// [`Guard::reject`] with what is known of the request (its id, the client key's name,
    /// the provider), for the audit line.
    pub(crate) fn reject_in(
        &self,
        kind: RejectionKind,
        ip: IpAddr,
        detail: &str,
        context: &Context<'_>,
    ) {
        use std::sync::atomic::Ordering;
        self.counters.record(kind);
        // Every violation is counted (metrics) and seen by the alert rules; its audit line is
        // written at most once per rule and address per second, the next line carrying how
        // many were left out (the housekeeping beat writes what is still pending), so that a
        // flood of refusals cannot fill the disk under the audit log.
        if kind.is_violation() {
            // Only the per-IP bucket says something about the address itself: a global,
            // per-minute or quota refusal can hit any client when others used the budget,
            // and must not feed `rate_limit_violations{ip}` and the `block_ip` rules.
            let rate_limit = kind == RejectionKind::PerIpRateLimit;
            let now = self.clock.unix_seconds();
            let write = self.violations.admit(kind.index(), ip, now, context.request_id);
            let mut event = Event::new(What::SecurityViolation {
                rule: kind.as_str(),
                rate_limit,
                detail: detail.to_owned(),
                repeats: write.unwrap_or(0),
            })
            .ip(ip);
            event.request_id = context.request_id.map(str::to_owned);
            event.user_id = context.user.map(str::to_owned);
            event.provider = context.provider.map(str::to_owned);
            self.alerts.push(self.audit.count(&event));
            if write.is_some() {
                self.audit.write(&event);
            }
        }
        let now = self.clock.unix_seconds();
        let last = &self.last_logged[kind.index()];
        let previous = last.load(Ordering::Relaxed);
        if previous == now
            || last.compare_exchange(previous, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            self.suppressed[kind.index()].fetch_add(1, Ordering::Relaxed);
            return;
        }
        let suppressed = self.suppressed[kind.index()].swap(0, Ordering::Relaxed);
        if kind.is_violation() {
            warn!(self.log, "request refused"; "event_type" => "security_violation",
                "rejection" => kind.as_str(), "ip" => ip.to_string(), "detail" => detail,
                "suppressed" => suppressed);
        } else {
            info!(self.log, "request refused"; "rejection" => kind.as_str(),
                "ip" => ip.to_string(), "detail" => detail, "suppressed" => suppressed);
        }
    }
}

impl Guard {
    /// Records a refused key (an `auth_failure` event with its address), on either plane:
    /// counted in the metrics and seen by the alert rules every time, its line written at
    /// most once per plane, address and second, and at most `LINES_PER_SECOND` a second per
    /// plane across all addresses. The rest are written by the housekeeping beat (every
    /// `state.flush_interval`, and at shutdown) as `repeated` summary lines, one per address
    /// and one for the flood past the budget, that list the refused requests' ids: a flood
    /// of wrong keys, on one connection or from rotating addresses, must not fill the disk
    /// under the audit log, and every refused request is still found by its id within one
    /// beat (what a crash may lose, as for quota usage).
    pub(crate) fn auth_failure(&self, mut event: Event) {
        let (What::AuthFailure { plane, .. }, Some(ip)) = (&event.what, event.ip) else {
            self.emit(event);
            return;
        };
        let (key, now) = (plane_index(*plane), self.clock.unix_seconds());
        match self.auth_failures.admit(key, ip, now, event.request_id.as_deref()) {
            Some(_) => {
                // Refusals left out are written by the beat with their ids, never folded here.
                if let What::AuthFailure { repeats, .. } = &mut event.what {
                    *repeats = 0;
                }
                self.emit(event);
            }
            None => self.count(&event),
        }
    }

    /// A violation that is not a refusal of the network guard (`management_ban`): counted
    /// and seen by the alert rules, its line written under the same budget as the guard's,
    /// so that addresses rotated through one by one cannot write a line each.
    pub(crate) fn violation(&self, event: Event) {
        self.violation_under(MANAGEMENT_BAN_KEY, event);
    }

    /// [`Guard::violation`] under the book key `key` (`management_ban`, `alert`).
    fn violation_under(&self, key: usize, mut event: Event) {
        if self.violations.budget(key, &mut event, self.clock.unix_seconds()) {
            self.emit(event);
        } else {
            self.count(&event);
        }
    }

    /// Writes the summary lines of refused keys due at `now`: per plane and address the
    /// refusals counted but not written (reason `repeated`, with their request ids), and per
    /// plane the flood of the refusals past the budget (`ip` null, with how many addresses).
    fn write_auth_summaries(&self, now: u64) {
        for pending in self.auth_failures.take_pending(now) {
            let plane = plane_of(pending.key);
            let ip = pending.ip;
            let mut summary = pending.summary(EventType::AuthFailure, "repeated");
            summary.plane = Some(plane);
            let mut event = Event::new(What::Summary(Box::new(summary)));
            event.ip = ip;
            if plane == Plane::Management {
                event.provider = Some("management".to_owned());
            }
            // Counted already, one by one: only the line.
            self.audit.write(&event);
        }
    }

    /// Writes the summary lines of violations due at `now`: per rule and address the
    /// refusals left out of seconds that have ended, and per rule the flood past the budget.
    fn write_violation_summaries(&self, now: u64) {
        for pending in self.violations.take_pending(now) {
            let (rule, rate_limit) = match RejectionKind::ALL.get(pending.key) {
                Some(kind) => (kind.as_str(), *kind == RejectionKind::PerIpRateLimit),
                None if pending.key == ALERT_KEY => (ALERT_RULE, false),
                None => (MANAGEMENT_BAN_RULE, false),
            };
            let event = match pending.ip {
                Some(ip) => Event::new(What::SecurityViolation {
                    rule,
                    rate_limit,
                    detail: SUMMARY_DETAIL.to_owned(),
                    repeats: pending.repeats,
                })
                .ip(ip),
                None => {
                    let mut summary = pending.summary(EventType::SecurityViolation, rule);
                    summary.detail = Some(FLOOD_DETAIL.to_owned());
                    Event::new(What::Summary(Box::new(summary)))
                }
            };
            // Counted already, one by one: only the line.
            self.audit.write(&event);
        }
    }

    /// Records an audit event and queues the alerts it fires for the alert worker.
    pub(crate) fn emit(&self, event: Event) {
        self.alerts.push(self.audit.emit(event));
    }

    /// Counts an audit event (metrics, alert rules) without writing its line, and queues the
    /// alerts it fires: for an event whose request was refused by a limiter that writes its
    /// own, summarised, line.
    pub(crate) fn count(&self, event: &Event) {
        self.alerts.push(self.audit.count(event));
    }

    /// Waits until the alert worker has carried out every alert fired so far: a `block_ip`
    /// is on the denylist, its lines are handed to the audit sink (tests, before they look).
    pub(crate) fn flush_alerts(&self) {
        self.alerts.flush();
    }
}

/// The checks [`Guard::build`] makes on the configuration that do not open anything (TLS
/// files are read, nothing is written): what a reload must pass to be accepted, so that a
/// file that would not start is never reported as reloaded.
pub(crate) fn check_config(config: &Config) -> std::result::Result<(), String> {
    TlsSettings::build(&config.server.tls).map_err(|e| crate::netguard_error(&e))?;
    SecurityHeaders::new(&config.server.security.headers, config.server.tls.enabled)
        .map_err(|e| crate::netguard_error(&e))?;
    crate::webhook::check(&config.alerts).map_err(|e| e.to_string())?;
    config.auth.client_keys().map_err(|e| crate::vault_error_message(&e))?;
    crate::abuse::CooldownAbuse::new(&config.server.security.cooldown_abuse)?;
    Ok(())
}

/// The detail of a line that only carries the refusals left out of the second before (it
/// is not a refusal itself).
pub(crate) const SUMMARY_DETAIL: &str =
    "summary: refusals of this rule and address counted but not written one by one";

/// What is known of the request a refusal is about.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Context<'a> {
    pub(crate) request_id: Option<&'a str>,
    pub(crate) user: Option<&'a str>,
    pub(crate) provider: Option<&'a str>,
}

/// Per client key name: its requests/tokens per minute and its quota.
type ClientLimitTable = std::collections::BTreeMap<
    String,
    (Option<cliproxy_core::RateLimit>, Option<cliproxy_core::Quota>),
>;

fn limit_table(keys: &cliproxy_vault::ClientKeys) -> ClientLimitTable {
    keys.identities().map(|id| (id.name.clone(), (id.rate_limit, id.quota))).collect()
}

impl Guard {
    /// Why `keys` cannot replace the running client keys without a restart: a key whose
    /// name has no limits here, or other limits, than in the config the limiters and quotas
    /// were built from (a new or renamed key with limits, changed limits). Swapping such a
    /// set in would leave that key unlimited.
    pub(crate) fn client_limits_differ(&self, keys: &cliproxy_vault::ClientKeys) -> Option<String> {
        let differing: Vec<String> = limit_table(keys)
            .into_iter()
            .filter(|(name, limits)| {
                let running = self.client_limit_table.get(name).copied().unwrap_or((None, None));
                limits != &running
            })
            .map(|(name, _)| name)
            .collect();
        (!differing.is_empty()).then(|| {
            format!(
                "client key(s) {} have rate_limit or quota settings the running limiters were not built with (a new or renamed key with limits, or changed limits); restart to apply the new auth.api_keys",
                differing.join(", ")
            )
        })
    }
}

/// `state:` with its path settled: `state.path`, or `.state.db` in `auth.dir`.
pub(crate) fn state_config(config: &Config) -> cliproxy_netguard::StateConfig {
    let mut state = config.state.clone();
    if state.path.is_none() {
        state.path = Some(config.auth.dir.join(".state.db"));
    }
    state
}

/// A state store that cannot be opened stops the start: running without it would forget
/// quotas and denylist entries silently.
pub(crate) fn state_error(error: cliproxy_netguard::Error) -> crate::error::Error {
    match error {
        cliproxy_netguard::Error::State { .. } => {
            crate::error::Error::State(crate::netguard_error(&error))
        }
        // The rest are settings that cannot work (no path, a flush interval out of range).
        other => crate::config::ConfigError::new(crate::netguard_error(&other)).into(),
    }
}

/// The throttle of client keys that keep making credentials rest (`crate::abuse`).
impl Guard {
    /// Notes that a request of client key `client` (from `ip`) made a credential rest; past
    /// `server.security.cooldown_abuse.max_per_window` within its window the key is
    /// throttled, which is logged and audited once.
    pub(crate) fn cooldown_caused(&self, client: &str, ip: IpAddr, request_id: &str) {
        let now = self.clock.monotonic_nanos() / 1_000_000;
        let Some(count) = self.cooldown_abuse.record(client, now) else { return };
        let config = &self.cooldown_abuse.config;
        let window = humantime::format_duration(config.window).to_string();
        let throttle_for = humantime::format_duration(config.throttle_for).to_string();
        warn!(self.log, "client key throttled: its requests keep making credentials rest";
            "event_type" => "security_violation", "rule" => crate::abuse::RULE, "client" => client,
            "ip" => ip.to_string(), "cooldowns" => count, "window" => &window,
            "throttle_for" => &throttle_for);
        let event = Event::new(What::SecurityViolation {
            rule: crate::abuse::RULE,
            rate_limit: false,
            detail: format!(
                "client key `{client}` caused {count} credential cool-downs within {window}; refused for {throttle_for} (server.security.cooldown_abuse)"
            ),
            repeats: 0,
        })
        .ip(ip)
        .request_id(request_id)
        .user(client);
        self.emit(event);
    }

    /// Refuses a request of a throttled client key with 429 and `Retry-After`, counting the
    /// refusal (metrics, alert rules) and writing its line at most once per key and second.
    pub(crate) fn cooldown_throttle(
        &self,
        client: &str,
        ip: IpAddr,
        request_id: &str,
    ) -> Result<(), ApiError> {
        let now = self.clock.monotonic_nanos() / 1_000_000;
        let (wait, line) =
            match self.cooldown_abuse.check(client, ip, now, self.clock.unix_seconds()) {
                Ok(()) => return Ok(()),
                Err(refused) => refused,
            };
        let event = Event::new(What::SecurityViolation {
            rule: crate::abuse::RULE,
            rate_limit: false,
            detail: format!("client key `{client}` is throttled (server.security.cooldown_abuse)"),
            repeats: line.unwrap_or(0),
        })
        .ip(ip)
        .request_id(request_id)
        .user(client);
        match line {
            Some(_) => self.emit(event),
            None => self.count(&event),
        }
        let config = &self.cooldown_abuse.config;
        Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "client key `{client}` made the gateway's credentials rest more than {} times within {} and is refused for {} (server.security.cooldown_abuse)",
                config.max_per_window,
                humantime::format_duration(config.window),
                humantime::format_duration(config.throttle_for),
            ),
        )
        .retry_after(wait))
    }

    /// Writes one line per throttled key for the refusals counted but not written in the
    /// seconds before `second` (the housekeeping beat gives the current one, the shutdown
    /// `u64::MAX`).
    pub(crate) fn write_cooldown_abuse_summaries(&self, second: u64) {
        let now = self.clock.monotonic_nanos() / 1_000_000;
        for (client, ip, repeats) in self.cooldown_abuse.take_pending(now, second) {
            let mut event = Event::new(What::SecurityViolation {
                rule: crate::abuse::RULE,
                rate_limit: false,
                detail: SUMMARY_DETAIL.to_owned(),
                repeats,
            })
            .user(client);
            event.ip = ip;
            // Counted already, one by one: only the line.
            self.audit.write(&event);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use cliproxy_netguard::FakeClock;

    use super::*;
    use crate::violation_book::{FLOOD_SAMPLES, LINES_PER_SECOND, rotating};

    /// A guard with a global bucket of 2 requests refilled at one a second, on a fake clock.
    fn guard_with_a_global_burst_of_two(dir: &std::path::Path) -> (Guard, Arc<FakeClock>) {
        let yaml = format!(
            "server:\n  rate_limit: {{enabled: true, requests_per_second: 1, burst: 2}}\n\
             auth:\n  dir: {dir:?}\n  api_keys: [{{name: alice, key: \"cpk-guard-unit-test-key-5e1f\"}}]\n",
            dir = dir.display().to_string(),
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let clock = FakeClock::at_unix(1_800_000_000);
        let log = Logger::root(slog::Discard, slog::o!());
        (Guard::build(&config, Some(clock.clone()), &log).unwrap(), clock)
    }

    #[test]
    fn strangers_spend_their_own_bucket_not_the_keyed_clients_one() {
        let dir = tempfile::tempdir().unwrap();
        let (guard, clock) = guard_with_a_global_burst_of_two(dir.path());
        // Each stranger comes from another address: the per-IP bucket (off here) plays no part.
        let stranger = |n: u8| IpAddr::V4(Ipv4Addr::new(198, 51, 100, n));
        assert!(guard.admit_global(stranger(1), "s1", false).is_ok());
        assert!(guard.admit_global(stranger(2), "s2", false).is_ok());
        let refused = guard.admit_global(stranger(3), "s3", false).unwrap_err();
        assert_eq!(refused.kind, LimitKind::Global);
        // The keyed clients' bucket is whole: both requests of its burst are admitted.
        let client = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 1));
        assert!(guard.admit_global(client, "c1", true).is_ok());
        assert!(guard.admit_global(client, "c2", true).is_ok());
        assert_eq!(guard.admit_global(client, "c3", true).unwrap_err().kind, LimitKind::Global);
        // Both buckets refill on their own.
        clock.advance(std::time::Duration::from_secs(1));
        assert!(guard.admit_global(stranger(4), "s4", false).is_ok());
        assert!(guard.admit_global(client, "c4", true).is_ok());
        assert_eq!(guard.counters.get(RejectionKind::GlobalRateLimit), 2);
    }

    /// What a request without `max_tokens` holds against a quota: its prompt plus
    /// `DEFAULT_TOKEN_ESTIMATE`, or the validation cap when it is lower; never the cap sized
    /// for coding clients (nor an unbounded figure), which would fill a key's limits with a
    /// few such requests.
    #[test]
    fn a_request_without_max_tokens_holds_the_default_estimate_or_a_lower_cap() {
        let held = |validation: &str| {
            let dir = tempfile::tempdir().unwrap();
            let yaml = format!(
                "server: {{security: {{request_validation: {validation}}}}}\n\
                 auth:\n  dir: {dir:?}\n  api_keys: [{{name: alice, key: \"cpk-guard-unit-test-key-5e1f\", \
                 quota: {{limit: 10000000, reset: daily}}}}]\n",
                dir = dir.path().display().to_string(),
            );
            let config = Config::from_yaml(&yaml).unwrap();
            let clock = FakeClock::at_unix(1_800_000_000);
            let log = Logger::root(slog::Discard, slog::o!());
            let guard = Guard::build(&config, Some(clock), &log).unwrap();
            let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
            let admission = guard.admit_request(ip, "p", "alice", 10, None, "r1").unwrap();
            let held = admission.client_quota;
            admission.settle(&guard, Some(0));
            held
        };
        assert_eq!(held("{enabled: true}"), 10 + cliproxy_netguard::DEFAULT_TOKEN_ESTIMATE);
        assert_eq!(
            held("{enabled: true, max_tokens: 128000}"),
            10 + cliproxy_netguard::DEFAULT_TOKEN_ESTIMATE
        );
        assert_eq!(held("{enabled: true, max_tokens: 1000}"), 10 + 1000);
    }

    #[test]
    fn the_guard_writes_a_bounded_audit_log_for_a_rotating_flood_and_accounts_for_every_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let yaml = format!(
            "auth:\n  dir: {dir:?}\n  api_keys: [{{name: alice, key: \"cpk-guard-unit-test-key-5e1f\"}}]\n\
             logging: {{audit: {{enabled: true, file: {audit:?}}}}}\n",
            dir = dir.path().join("auths").display().to_string(),
            audit = audit.display().to_string(),
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let clock = FakeClock::at_unix(1_800_000_000);
        let log = Logger::root(slog::Discard, slog::o!());
        let guard = Guard::build(&config, Some(clock.clone()), &log).unwrap();
        const REFUSALS: u32 = 5_000;
        for n in 0..REFUSALS {
            let plane = if n % 2 == 0 { Plane::Client } else { Plane::Management };
            // Ten refusals a (fake) second, each from a new address.
            if n % 10 == 0 {
                clock.advance(std::time::Duration::from_secs(1));
            }
            let event = Event::new(What::AuthFailure { plane, reason: "invalid_key", repeats: 0 })
                .ip(rotating(n))
                .request_id(format!("req_{n}"));
            guard.auth_failure(event);
        }
        guard.tick();
        guard.audit.flush();
        let text = std::fs::read_to_string(&audit).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let failures: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["event_type"] == "auth_failure").collect();
        let accounted: u64 = failures
            .iter()
            .map(|l| {
                u64::from(l["result"] != "repeated") + l["details"]["repeats"].as_u64().unwrap_or(0)
            })
            .sum();
        assert_eq!(accounted, u64::from(REFUSALS));
        // 500 fake seconds of ten addresses each stay within the budget: one line each.
        assert_eq!(failures.len(), REFUSALS as usize);
        // Now the same in one (new) second: the budget, then one flood summary per plane.
        clock.advance(std::time::Duration::from_secs(1));
        let before = failures.len();
        for n in 0..REFUSALS {
            let plane = if n % 2 == 0 { Plane::Client } else { Plane::Management };
            let event = Event::new(What::AuthFailure { plane, reason: "invalid_key", repeats: 0 })
                .ip(rotating(REFUSALS + n))
                .request_id(format!("req_x{n}"));
            guard.auth_failure(event);
        }
        guard.tick();
        guard.audit.flush();
        let text = std::fs::read_to_string(&audit).unwrap();
        let lines: Vec<serde_json::Value> =
            text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let new: Vec<&serde_json::Value> =
            lines.iter().filter(|l| l["event_type"] == "auth_failure").skip(before).collect();
        assert_eq!(new.len(), 2 * LINES_PER_SECOND as usize + 2, "{new:#?}");
        let floods: Vec<&&serde_json::Value> = new.iter().filter(|l| l["ip"].is_null()).collect();
        assert_eq!(floods.len(), 2);
        for flood in floods {
            assert_eq!(flood["result"], "repeated");
            assert_eq!(flood["details"]["repeats"], 2_500 - u64::from(LINES_PER_SECOND));
            assert_eq!(flood["details"]["addresses"], 2_500 - u64::from(LINES_PER_SECOND));
            assert_eq!(flood["details"]["sample_ips"].as_array().unwrap().len(), FLOOD_SAMPLES);
            assert_eq!(flood["details"]["request_ids"].as_array().unwrap().len(), 1_000);
            assert_eq!(flood["details"]["request_ids_left_out"], 2_480 - 1_000);
        }
    }

    #[test]
    fn alerts_fired_by_rotating_addresses_write_a_bounded_number_of_lines() {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.log");
        let yaml = format!(
            "auth:\n  dir: {dir:?}\n  api_keys: [{{name: alice, key: \"cpk-guard-unit-test-key-5e1f\"}}]\n\
             logging: {{audit: {{enabled: true, file: {audit:?}, events: [security_violation]}}}}\n\
             alerts: [{{name: guessing, condition: \"auth_failures > 1\", duration: 1m, action: block_ip}}]\n",
            dir = dir.path().join("auths").display().to_string(),
            audit = audit.display().to_string(),
        );
        let config = Config::from_yaml(&yaml).unwrap();
        let clock = FakeClock::at_unix(1_800_000_000);
        let log = Logger::root(slog::Discard, slog::o!());
        let guard = Guard::build(&config, Some(clock), &log).unwrap();
        // Two wrong keys from each of 1,000 loopback addresses in one second: the rule fires
        // for each (loopback is not blocked, but the alert is audited).
        for n in 0..1_000 {
            for _ in 0..2 {
                let event = Event::new(What::AuthFailure {
                    plane: Plane::Client,
                    reason: "invalid_key",
                    repeats: 0,
                })
                .ip(rotating(n));
                guard.auth_failure(event);
            }
        }
        // The worker carries the alerts out, writing their lines under the budget; the beat
        // then writes the flood summary of the rest.
        guard.flush_alerts();
        guard.tick();
        guard.audit.flush();
        let text = std::fs::read_to_string(&audit).unwrap();
        let alerts: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|l| l["result"] == ALERT_RULE)
            .collect();
        // The budget, then one flood summary that counts the rest.
        assert_eq!(alerts.len(), LINES_PER_SECOND as usize + 1, "{} alert lines", alerts.len());
        let fired: u64 = alerts
            .iter()
            .map(|l| match l["details"]["detail"].as_str() {
                Some(d) if d.starts_with("summary:") => l["details"]["repeats"].as_u64().unwrap(),
                _ => 1,
            })
            .sum();
        assert_eq!(fired, 1_000);
    }
}
