//! The network guard (layer 4) as the gateway composes it: the parts of `cliproxy-netguard`
//! built from the `server:` and `state:` sections, and the one place where a refusal is
//! counted and reported.

use std::net::IpAddr;
use std::sync::Arc;

use cliproxy_audit::{ALERT_RULE, AlertAction, Audit, Event, EventType, Fired, Plane, What};
use cliproxy_core::ErrorCode;
use cliproxy_netguard::tls::TlsSettings;
use cliproxy_netguard::{
    Admitted, Clock, Counters, DenyEntry, GlobalRateLimiter, IpFilter, IpRateLimiter, LimitKind,
    Limited, Maintenance, MinuteLimiter, QuotaScope, Quotas, RejectionKind, Reservation,
    SecurityHeaders, StateChange, StateStore, Validator,
};
use ipnetwork::IpNetwork;
use serde_json::json;
use slog::{Logger, error, info, warn};

use crate::config::GatewayConfig as Config;
use crate::error::{ApiError, Result};

/// The guard's parts, shared by the listener and the request pipeline.
#[derive(Debug)]
pub(crate) struct Guard {
    pub(crate) ip: IpFilter,
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
    /// the guard carries out what its alert rules ask for.
    pub(crate) audit: Arc<Audit>,
    /// Sends `notify_admin` alerts to their webhooks.
    webhooks: crate::webhook::Webhooks,
    /// The limits of each client key name the minute limiters and quotas were built with.
    client_limit_table: ClientLimitTable,
    /// When each rule last wrote a violation line for each address.
    violations: ViolationBook,
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
    /// nothing itself (the binary's `compose.rs` builds them).
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
        let ip = IpFilter::new(&server.security, &server.trusted_proxies, clock.clone())
            .with_forwarded_header(server.forwarded_header);
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
            webhooks: crate::webhook::Webhooks::new(&config.alerts, log)?,
            client_limit_table,
            violations: ViolationBook::folding(),
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
            log: log.new(slog::o!("layer" => "netguard")),
        })
    }

    /// The guard on the default layers built from `config` (the unit tests below).
    #[cfg(test)]
    pub(crate) fn build(
        config: &Config,
        clock: Option<Arc<dyn Clock>>,
        log: &Logger,
    ) -> Result<Self> {
        let layers = crate::test_layers::build(config, clock, log)?;
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
            let fired = self.audit.count(&event);
            if write.is_some() {
                self.audit.write(&event);
            }
            for alert in fired {
                self.on_alert(alert);
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
        let (What::SecurityViolation { repeats, .. }, Some(ip)) = (&mut event.what, event.ip)
        else {
            self.emit(event);
            return;
        };
        let now = self.clock.unix_seconds();
        match self.violations.admit(key, ip, now, event.request_id.as_deref()) {
            Some(left_out) => {
                *repeats = left_out;
                self.emit(event);
            }
            None => self.count(&event),
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

    /// Records an audit event and carries out the alerts it fires.
    pub(crate) fn emit(&self, event: Event) {
        for fired in self.audit.emit(event) {
            self.on_alert(fired);
        }
    }

    /// Counts an audit event (metrics, alert rules) without writing its line, and carries out
    /// the alerts it fires: for an event whose request was refused by a limiter that writes
    /// its own, summarised, line.
    pub(crate) fn count(&self, event: &Event) {
        for fired in self.audit.count(event) {
            self.on_alert(fired);
        }
    }

    /// Carries out a fired alert: `block_ip` puts the address on the runtime denylist (in
    /// force at once, stored in the state store's next batch); `notify_admin` writes a
    /// warning and calls the webhook. Both leave a `security_violation` audit event naming
    /// the rule.
    fn on_alert(&self, fired: Fired) {
        let window = humantime::format_duration(fired.window).to_string();
        // IPv6 clients are counted (and blocked) per /64, like the per-IP bucket keys them.
        let network = fired.ip.and_then(|ip| IpNetwork::new(ip, fired.prefix_len).ok());
        let who = match network {
            Some(IpNetwork::V6(net)) => net.to_string(),
            Some(net) => net.ip().to_string(),
            None => "all addresses".to_owned(),
        };
        let mut detail =
            format!("alert `{}`: {} events within {window} from {who}", fired.rule, fired.count);
        if fired.suppressed > 0 {
            detail.push_str(&format!(
                " ({} more since it last fired, while it was quiet)",
                fired.suppressed
            ));
        }
        match fired.action {
            AlertAction::BlockIp => {
                let Some(ip) = fired.ip else { return };
                // Loopback and the trusted proxies are never blocked by a rule: behind a
                // local reverse proxy every client has their address, and blocking it would
                // lock out everyone, the operator's management calls included, across
                // restarts. The refusals still count; the skipped block is said.
                let ip = cliproxy_netguard::canonical_ip(ip);
                // For IPv6 `ip` is the /64's first address: ::1 is in ::/64.
                let loopback = ip.is_loopback()
                    || network.is_some_and(|n| {
                        n.contains(std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST))
                    });
                if loopback || self.ip.is_trusted_proxy(ip) {
                    let why = if loopback { "loopback" } else { "a trusted proxy" };
                    warn!(self.log, "alert fired but the address is not blocked"; "event_type" => "security_violation",
                        "rule" => &fired.rule, "ip" => ip.to_string(), "reason" => why,
                        "fix" => "set server.trusted_proxies so that the client behind the proxy is blocked instead");
                    detail.push_str(&format!("; not blocked: {ip} is {why}"));
                    let mut event = Event::new(What::SecurityViolation {
                        rule: ALERT_RULE,
                        rate_limit: false,
                        detail,
                        repeats: 0,
                    });
                    event.ip = Some(ip);
                    // Under the budget: addresses rotated through fire a rule each.
                    self.violation_under(ALERT_KEY, event);
                    return;
                }
                let now = self.clock.unix_seconds();
                let entry = DenyEntry {
                    network: network.unwrap_or_else(|| IpNetwork::from(ip)),
                    reason: format!("alert: {}", fired.rule),
                    created_at: now,
                    expires_at: Some(now.saturating_add(fired.block_for.as_secs().max(1))),
                };
                self.ip.deny(entry.clone());
                self.state.submit(StateChange::DenyAdd(entry));
                let block_for = humantime::format_duration(fired.block_for).to_string();
                detail.push_str(&format!("; blocked for {block_for}"));
                warn!(self.log, "alert fired: address blocked"; "event_type" => "security_violation",
                    "rule" => &fired.rule, "ip" => &who, "count" => fired.count,
                    "window" => &window, "block_for" => &block_for);
                let mut details = serde_json::Map::new();
                details.insert("network".to_owned(), json!(who));
                details.insert("rule".to_owned(), json!(fired.rule));
                details.insert("expires_in_s".to_owned(), json!(fired.block_for.as_secs()));
                self.emit(
                    Event::new(What::ConfigChange {
                        action: "alert_block_ip",
                        changed: vec!["security.ip_denylist".to_owned()],
                        details,
                        outcome: Ok(()),
                    })
                    .ip(ip),
                );
            }
            AlertAction::NotifyAdmin => {
                warn!(self.log, "alert fired"; "event_type" => "security_violation",
                    "rule" => &fired.rule, "ip" => &who, "count" => fired.count, "window" => &window);
                if let Some((url, timeout)) = &fired.webhook {
                    self.webhooks.send(
                        url,
                        *timeout,
                        json!({
                            "alert": fired.rule,
                            "action": "notify_admin",
                            "count": fired.count,
                            "window_s": fired.window.as_secs(),
                            "suppressed": fired.suppressed,
                            "ip": network.map(|_| who.clone()),
                            "at": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                        }),
                    );
                }
            }
            _ => {}
        }
        let mut event = Event::new(What::SecurityViolation {
            rule: ALERT_RULE,
            rate_limit: false,
            detail,
            repeats: 0,
        });
        event.ip = fired.ip;
        // Under the budget (when it names an address): addresses rotated through fire a
        // `block_ip` rule each.
        self.violation_under(ALERT_KEY, event);
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

/// The key of the failure and ban book for a client: the address, or for IPv6 its /64 (the
/// network's first address), which one host commonly holds whole; as the per-IP bucket and
/// the alert rules count IPv6.
pub(crate) fn ban_key(ip: IpAddr) -> IpAddr {
    match cliproxy_netguard::canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
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

/// Addresses tracked for the one-line-per-second rule of violation lines; beyond it, a
/// refusal from an address not tracked goes to its key's flood summary (counted, not written
/// on its own).
const MAX_VIOLATION_KEYS: usize = 10_000;

/// Lines written one by one per key (a plane's refused keys, a rule's violations) and second,
/// across all addresses. Past it, refusals from addresses without a line this second are
/// counted in one flood summary per key, written by the housekeeping beat: a flood from N
/// rotating addresses then writes lines in proportion to its duration, not to N.
const LINES_PER_SECOND: u32 = 20;

/// Distinct addresses (IPv6: /64 networks) a flood summary counts; more are still counted
/// as refusals, and the summary says at least this many.
const MAX_FLOOD_ADDRESSES: usize = 10_000;

/// Addresses a flood summary names as examples.
const FLOOD_SAMPLES: usize = 5;

/// The rule of the violation written when an address is banned from the management API.
pub(crate) const MANAGEMENT_BAN_RULE: &str = "management_ban";

/// The book key of the `management_ban` violation (after the refusal kinds').
const MANAGEMENT_BAN_KEY: usize = RejectionKind::ALL.len();

/// The book key of the violation an alert rule writes when it fires for an address.
const ALERT_KEY: usize = RejectionKind::ALL.len() + 1;

/// The detail of a flood summary of violations.
pub(crate) const FLOOD_DETAIL: &str = "summary: refusals of this rule from addresses past the audit budget (20 lines a second), counted but not written one by one";

/// Per key (a refusal rule's index, a plane's) and address: the second of the last line
/// written and the refusals counted since without a line of their own; per key, the lines
/// written this second and the flood summary of the refusals past that budget.
#[derive(Debug, Default)]
struct ViolationBook {
    book: std::sync::Mutex<Book>,
    /// Whether the refusals left out are written in the address's next line (`repeats`)
    /// when its second has ended (violation lines), or always in a summary line of their own
    /// that lists their request ids (refused keys: every refused request is then found by
    /// its id within one housekeeping beat).
    by_id: bool,
}

#[derive(Debug, Default)]
struct Book {
    seen: std::collections::HashMap<(usize, IpAddr), Seen>,
    budgets: std::collections::HashMap<usize, Budget>,
}

/// One address under one key.
#[derive(Debug, Default)]
struct Seen {
    second: u64,
    left_out: u64,
    ids: RequestIds,
}

/// One key's budget of lines for the current second, and its flood summary.
#[derive(Debug, Default)]
struct Budget {
    second: u64,
    written: u32,
    flood: Flood,
}

/// Refusals past a key's budget since the last summary.
#[derive(Debug, Default)]
struct Flood {
    count: u64,
    /// Distinct addresses (IPv6: /64), at most `MAX_FLOOD_ADDRESSES`.
    networks: std::collections::HashSet<IpAddr>,
    samples: Vec<IpAddr>,
    ids: RequestIds,
}

/// The request ids of refusals not written one by one, at most `Summary::MAX_REQUEST_IDS`.
#[derive(Debug, Default)]
struct RequestIds {
    listed: Vec<String>,
    left_out: u64,
}

impl RequestIds {
    fn push(&mut self, id: Option<&str>) {
        let Some(id) = id else { return };
        if self.listed.len() < cliproxy_audit::Summary::MAX_REQUEST_IDS {
            self.listed.push(id.to_owned());
        } else {
            self.left_out += 1;
        }
    }
}

/// A summary line the housekeeping beat writes: for one address (`ip`), or for the flood
/// of every address past the budget (`ip` is `None`).
#[derive(Debug)]
struct Pending {
    key: usize,
    ip: Option<IpAddr>,
    repeats: u64,
    /// For a flood: the distinct addresses, and the first few.
    addresses: Option<u64>,
    samples: Vec<String>,
    ids: RequestIds,
}

impl Pending {
    /// The summary line's facts, of `event_type` with `result`.
    fn summary(
        self,
        event_type: cliproxy_audit::EventType,
        result: &'static str,
    ) -> cliproxy_audit::Summary {
        let mut summary = cliproxy_audit::Summary::new(event_type, result, self.repeats);
        summary.addresses = self.addresses;
        summary.sample_ips = self.samples;
        summary.request_ids = self.ids.listed;
        summary.request_ids_left_out = self.ids.left_out;
        summary
    }
}

impl ViolationBook {
    /// The book of violation lines: refusals left out are carried by the address's next line.
    fn folding() -> Self {
        Self::default()
    }

    /// The book of refused keys: refusals left out are written at the next beat with their ids.
    fn by_id() -> Self {
        Self { by_id: true, ..Self::default() }
    }

    /// `Some(left_out)` when this refusal's line is to be written now (with the number of
    /// refusals left out before it that it carries); `None` when it is only counted: a line
    /// for the same key and address was written this second already, or the key's budget
    /// of lines for this second is spent (the refusal joins the key's flood summary).
    fn admit(&self, key: usize, ip: IpAddr, now: u64, request_id: Option<&str>) -> Option<u64> {
        let mut book = self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Book { seen, budgets } = &mut *book;
        if let Some(entry) = seen.get_mut(&(key, ip))
            && entry.second == now
        {
            entry.left_out += 1;
            if self.by_id {
                entry.ids.push(request_id);
            }
            return None;
        }
        let budget = budgets.entry(key).or_default();
        if budget.second != now {
            budget.second = now;
            budget.written = 0;
        }
        if budget.written >= LINES_PER_SECOND {
            budget.flood.add(ip, request_id);
            return None;
        }
        // A full table is swept only for a line the budget allows (at most `LINES_PER_SECOND`
        // sweeps a second per key), so that a flood of new addresses costs no sweep each.
        if seen.len() >= MAX_VIOLATION_KEYS && !seen.contains_key(&(key, ip)) {
            seen.retain(|_, entry| entry.second >= now || entry.left_out > 0);
            if seen.len() >= MAX_VIOLATION_KEYS {
                budget.flood.add(ip, request_id);
                return None;
            }
        }
        budget.written += 1;
        let entry = seen.entry((key, ip)).or_default();
        entry.second = now;
        if self.by_id {
            // What was left out stays for its own summary line, which lists the ids.
            return Some(0);
        }
        entry.ids = RequestIds::default();
        Some(std::mem::take(&mut entry.left_out))
    }

    /// The summary lines due at `now`: per address, the refusals left out (for a folding
    /// book only those of seconds that have ended, the others wait for the address's next
    /// line); per key, its flood. Forgets addresses quiet for a minute.
    fn take_pending(&self, now: u64) -> Vec<Pending> {
        let mut book = self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Book { seen, budgets } = &mut *book;
        let mut pending = Vec::new();
        seen.retain(|(key, ip), entry| {
            if (self.by_id || entry.second < now) && entry.left_out > 0 {
                pending.push(Pending {
                    key: *key,
                    ip: Some(*ip),
                    repeats: std::mem::take(&mut entry.left_out),
                    addresses: None,
                    samples: Vec::new(),
                    ids: std::mem::take(&mut entry.ids),
                });
            }
            entry.left_out > 0 || now.saturating_sub(entry.second) < 60
        });
        for (key, budget) in budgets.iter_mut() {
            if budget.flood.count > 0 {
                let flood = std::mem::take(&mut budget.flood);
                pending.push(Pending {
                    key: *key,
                    ip: None,
                    repeats: flood.count,
                    addresses: Some(flood.networks.len() as u64),
                    samples: flood.samples.iter().map(|ip| network_name(*ip)).collect(),
                    ids: flood.ids,
                });
            }
        }
        pending
    }
}

impl Flood {
    fn add(&mut self, ip: IpAddr, request_id: Option<&str>) {
        self.count += 1;
        let network = ban_key(ip);
        if self.networks.len() < MAX_FLOOD_ADDRESSES
            && self.networks.insert(network)
            && self.samples.len() < FLOOD_SAMPLES
        {
            self.samples.push(network);
        }
        self.ids.push(request_id);
    }
}

/// An address as a flood summary names it: IPv4 as is, IPv6 as its /64.
fn network_name(network: IpAddr) -> String {
    match network {
        IpAddr::V6(v6) => format!("{v6}/64"),
        v4 => v4.to_string(),
    }
}

/// The key of a plane in the refused-key book.
fn plane_index(plane: Plane) -> usize {
    match plane {
        Plane::Client => 0,
        _ => 1,
    }
}

/// The plane of a key of the refused-key book.
fn plane_of(key: usize) -> Plane {
    if key == plane_index(Plane::Management) { Plane::Management } else { Plane::Client }
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
pub fn state_config(config: &Config) -> cliproxy_netguard::StateConfig {
    let mut state = config.state.clone();
    if state.path.is_none() {
        state.path = Some(config.auth.dir.join(".state.db"));
    }
    state
}

/// A state store that cannot be opened stops the start: running without it would forget
/// quotas and denylist entries silently.
pub fn state_error(error: cliproxy_netguard::Error) -> crate::error::Error {
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

    /// The address `127.x.y.z` of `n`: loopback addresses an attacker on the machine can
    /// rotate through.
    fn rotating(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | (n + 2)))
    }

    #[test]
    fn refusals_from_rotating_addresses_write_a_bounded_number_of_lines() {
        let book = ViolationBook::by_id();
        let now = 1_800_000_000;
        let written = (0..5_000)
            .filter(|n| book.admit(0, rotating(*n), now, Some(&format!("req_{n}"))).is_some())
            .count();
        assert_eq!(written, LINES_PER_SECOND as usize, "lines written one by one");
        // The rest is one flood summary: every refusal counted, the addresses too.
        let pending = book.take_pending(now);
        assert_eq!(pending.len(), 1, "{pending:?}");
        let flood = &pending[0];
        assert_eq!((flood.ip, flood.repeats), (None, 4_980));
        assert_eq!(flood.addresses, Some(4_980));
        assert_eq!(
            flood.samples,
            ["127.0.0.22", "127.0.0.23", "127.0.0.24", "127.0.0.25", "127.0.0.26"]
        );
        assert_eq!(flood.ids.listed.len(), cliproxy_audit::Summary::MAX_REQUEST_IDS);
        assert_eq!(flood.ids.listed[0], "req_20");
        assert_eq!(flood.ids.left_out, 4_980 - 1_000);
        // The next second has its own budget, and nothing is pending twice.
        assert!(book.take_pending(now).is_empty());
        assert!(book.admit(0, rotating(9_999), now + 1, None).is_some());
    }

    #[test]
    fn a_full_address_table_sends_new_addresses_to_the_flood_summary_not_to_the_log() {
        let book = ViolationBook::folding();
        // Filled a second at a time, within the budget, by addresses that keep refusing
        // (so that none can be forgotten).
        let mut n = 0;
        for second in 0.. {
            for _ in 0..LINES_PER_SECOND {
                assert!(book.admit(1, rotating(n), second, None).is_some());
                assert!(book.admit(1, rotating(n), second, None).is_none());
                n += 1;
            }
            if n as usize >= MAX_VIOLATION_KEYS {
                break;
            }
        }
        // Before, an address beyond the table was written without the rule.
        let later = u64::from(n);
        assert_eq!(book.admit(1, rotating(n + 1), later, None), None);
        let pending = book.take_pending(later + 1);
        assert!(pending.iter().any(|p| p.ip.is_none() && p.repeats == 1), "no flood summary");
    }

    #[test]
    fn refused_keys_of_one_address_are_summarised_with_their_ids_at_every_beat() {
        let book = ViolationBook::by_id();
        let now = 1_800_000_000;
        let ip = rotating(0);
        assert_eq!(book.admit(0, ip, now, Some("req_0")), Some(0));
        for n in 1..10 {
            assert_eq!(book.admit(0, ip, now, Some(&format!("req_{n}"))), None);
        }
        // The beat writes them within the second already: a refused request's line must not
        // wait for the second to end (a crash would lose up to a second of them).
        let pending = book.take_pending(now);
        assert_eq!(pending.len(), 1);
        assert_eq!((pending[0].ip, pending[0].repeats), (Some(ip), 9));
        let ids: Vec<String> = (1..10).map(|n| format!("req_{n}")).collect();
        assert_eq!(pending[0].ids.listed, ids);
        // The next line of the address is its own: nothing is folded into it.
        assert_eq!(book.admit(0, ip, now, Some("req_10")), None);
        assert_eq!(book.admit(0, ip, now + 1, Some("req_11")), Some(0));
        let pending = book.take_pending(now + 1);
        assert_eq!(pending[0].ids.listed, ["req_10"]);
    }

    #[test]
    fn violation_lines_still_carry_the_refusals_left_out_before_them() {
        let book = ViolationBook::folding();
        let ip = rotating(0);
        assert_eq!(book.admit(3, ip, 10, None), Some(0));
        assert_eq!(book.admit(3, ip, 10, None), None);
        assert_eq!(book.admit(3, ip, 10, None), None);
        // Within the second nothing is due; the next second's line carries the two.
        assert!(book.take_pending(10).is_empty());
        assert_eq!(book.admit(3, ip, 11, None), Some(2));
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
