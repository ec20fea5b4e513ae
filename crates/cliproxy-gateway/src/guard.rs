//! The network guard (layer 4) as the gateway composes it: the parts of `cliproxy-netguard`
//! built from the `server:` and `state:` sections, the admission the binary built (its
//! limits), and their upkeep (the housekeeping beat, the state store's writes and health,
//! the quota counts between the admission and the state store, shutdown). What the parts do on the request path
//! lives beside it: the limits in `guard_limits.rs`, the filing of refusals in
//! `refusals.rs`, the alerts they fire in `alerts.rs`, the throttle of keys that make
//! credentials rest in `cooldown_throttle.rs`, the status page in `guard_status.rs`.

use std::sync::Arc;

use cliproxy_audit::Audit;
use cliproxy_core::ErrorCode;
use cliproxy_netguard::tls::TlsSettings;
use cliproxy_netguard::{
    Admission, Clock, Counters, DenyEntry, IpFilter, Limits, Maintenance, QuotaScope,
    RejectionKind, SecurityHeaders, StateChange, StateStore, Validator,
};
use ipnetwork::IpNetwork;
use slog::{Logger, error, info, warn};

use crate::alerts::{Actions, AlertQueue};
use crate::config::GatewayConfig as Config;
use crate::error::{ApiError, Result};
use crate::violation_book::ViolationBook;
pub(crate) use crate::violation_book::{MANAGEMENT_BAN_RULE, ban_key};

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
    /// The limit decisions (`server.security.rate_limiting`, `server.rate_limit`, and the
    /// `rate_limit` and `quota` of each provider and client key), as the binary built them:
    /// the per-IP and global buckets, the minute limits and quotas (`guard_limits.rs`).
    pub(crate) admission: Arc<dyn Admission>,
    /// Per refusal kind: the second of the last log line, and the lines left out since.
    pub(crate) last_logged: [std::sync::atomic::AtomicU64; RejectionKind::ALL.len()],
    pub(crate) suppressed: [std::sync::atomic::AtomicU64; RejectionKind::ALL.len()],
    /// When ended entries were last purged from the state store (Unix seconds).
    last_purge: std::sync::atomic::AtomicU64,
    /// Whether the state store's failure has been logged (and its recovery not yet).
    state_failing: std::sync::atomic::AtomicBool,
    /// Whether a shared state store's outage has been logged (and its return not yet).
    shared_down: std::sync::atomic::AtomicBool,
    /// `server.instance_id`, for the status page.
    pub(crate) instance_id: String,
    /// `state.redis.on_unavailable`, for the log line and the status of an outage.
    pub(crate) on_unavailable: cliproxy_netguard::OnUnavailable,
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
    pub(crate) alerts: AlertQueue,
    /// When each rule last wrote a violation line for each address (shared with the alert
    /// worker, whose lines go under the same budget).
    pub(crate) violations: Arc<ViolationBook>,
    /// The same book for refused keys, per plane and address (see [`Guard::auth_failure`]).
    pub(crate) auth_failures: ViolationBook,
    /// Per client key, the end of the budget period whose exhaustion was last audited
    /// (`guard_limits.rs`): one `security_violation` per key and period.
    pub(crate) budgets_filed: std::sync::Mutex<std::collections::HashMap<String, u64>>,
    /// `server.security.cooldown_abuse` (see `abuse.rs`).
    pub(crate) cooldown_abuse: crate::abuse::CooldownAbuse,
    /// The usage history's accumulator, drained into `state` on every beat.
    pub(crate) usage: crate::usage_history::UsageBook,
    pub(crate) log: Logger,
}

impl Guard {
    /// Builds the guard from the configuration and the layers it is given: the clock, the
    /// admission, the listener's TLS, the state store and the audit layer's metrics and sink. It opens
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
        // The limits count on from the quota usage the state store kept.
        let admission = layers.admission.clone();
        admission.seed_usage(state.load_quota_usage().map_err(state_error)?);
        // `cliproxy_quota_remaining` from the first scrape, then after every request.
        for name in config.providers.0.keys() {
            if let Some(status) = admission.quota_status(QuotaScope::Provider, name) {
                audit.metrics().set_quota_remaining(name, status.remaining);
            }
        }
        // `cliproxy_client_budget_remaining_usd` of the configured keys with a budget, as
        // the stored spend leaves it (a key created at run time shows its own when the key
        // table reaches the admission, or after its first request).
        if let Ok(keys) = config.auth.client_keys() {
            for id in keys.identities() {
                if let Some(status) = admission.quota_status(QuotaScope::Budget, &id.name) {
                    audit.metrics().set_client_budget_remaining(&id.name, status.remaining);
                }
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
            admission,
            last_logged: Default::default(),
            suppressed: Default::default(),
            last_purge: Default::default(),
            state_failing: Default::default(),
            shared_down: Default::default(),
            on_unavailable: config.state.redis.on_unavailable,
            instance_id: config.server.instance_id(),
            state,
            tls,
            flush_interval: config.state.flush_interval,
            audit,
            alerts,
            violations,
            auth_failures: ViolationBook::by_id(),
            budgets_filed: Default::default(),
            cooldown_abuse: crate::abuse::CooldownAbuse::new(&server.security.cooldown_abuse)
                .map_err(crate::config::ConfigError::new)?,
            ip,
            headers,
            validator: Validator::new(&server.security.request_validation),
            maintenance: Maintenance::new(server.maintenance_mode, server.message.clone()),
            usage: crate::usage_history::UsageBook::new(&config.usage),
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
        let layers = crate::test_layers::build(config, clock, log)?;
        Self::from_parts(config, &layers, log)
    }

    /// Housekeeping the server runs every `state.flush_interval`: drops idle per-IP buckets
    /// and expired denylist entries.
    pub(crate) fn tick(&self) {
        self.admission.evict_idle();
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
        self.usage.drain(now, &*self.state);
        self.watch_state();
        for notice in self.admission.take_notices() {
            info!(self.log, "admission: {notice}"; "state" => self.state.describe());
        }
    }

    /// Logs the state store turning unwritable (once, with the cause naming the file and
    /// `state.path`) and writable again. Its writer keeps the changes and retries them, the
    /// limits go on counting in memory and `/readyz` names the check meanwhile; this line is
    /// what tells the operator why.
    fn watch_state(&self) {
        use std::sync::atomic::Ordering;
        self.watch_shared();
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

    /// Logs a shared state store (Redis) going unreachable and coming back, once each, and
    /// keeps `cliproxy_state_backend_up`: what an operator needs to know is which limits
    /// are in force meanwhile (`state.redis.on_unavailable`).
    fn watch_shared(&self) {
        use std::sync::atomic::Ordering;
        let Some(health) = self.state.shared_health() else {
            self.audit.metrics().set_state_backend_up(self.state.check().is_ok());
            return;
        };
        self.audit.metrics().set_state_backend_up(health.up);
        if !health.up && !self.shared_down.swap(true, Ordering::Relaxed) {
            let error = health.last_error.unwrap_or_default();
            match self.on_unavailable {
                cliproxy_netguard::OnUnavailable::Deny => error!(self.log,
                    "the shared state store is unreachable: requests that need the limits shared by every instance are refused with 503 until it is back";
                    "state" => self.state.describe(), "error" => error, "on_unavailable" => "deny",
                    "fix" => "bring the Redis server back (it is retried with a backoff), or set state.redis.on_unavailable: local"),
                _ => error!(self.log,
                    "the shared state store is unreachable: this instance serves with its own limits until it is back (each instance admits up to the full limit meanwhile)";
                    "state" => self.state.describe(), "error" => error, "on_unavailable" => "local",
                    "fix" => "bring the Redis server back (it is retried with a backoff); what is used meanwhile is added to the shared counts when it returns"),
            }
        } else if health.up && self.shared_down.swap(false, Ordering::Relaxed) {
            info!(self.log, "the shared state store answers again: the shared limits are in force";
                "state" => self.state.describe(), "outages" => health.outages);
        }
    }

    /// Whether a shared state store is unreachable now (`GET /status`, `/readyz`).
    pub(crate) fn shared_state(&self) -> Option<serde_json::Value> {
        let health = self.state.shared_health()?;
        Some(serde_json::json!({
            "up": health.up,
            "degraded": !health.up,
            "on_unavailable": match self.on_unavailable {
                cliproxy_netguard::OnUnavailable::Deny => "deny",
                _ => "local",
            },
            "last_error": health.last_error,
            "outages": health.outages,
        }))
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
        for usage in self.admission.take_dirty_usage() {
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
        self.usage.drain(self.clock.unix_seconds(), &*self.state);
        // Settlements an admission sends in batches go before the process ends.
        let admission = self.admission.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || admission.close()).await {
            warn!(self.log, "could not write the last settlements of the shared limits at shutdown"; "error" => error);
        }
        let state = self.state.clone();
        if let Ok(Err(error)) = tokio::task::spawn_blocking(move || state.flush()).await {
            warn!(self.log, "could not write the last state changes at shutdown"; "error" => crate::netguard_error(&error));
        }
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

/// The limits of each client key, by name, as an [`Admission`] takes them (at start-up in
/// the binary's composition, and on a reload).
pub fn client_limit_table(keys: &cliproxy_vault::ClientKeys) -> cliproxy_netguard::LimitTable {
    keys.identities()
        .map(|id| (id.name.clone(), Limits::new(id.rate_limit, id.quota).with_budget(id.budget)))
        .collect()
}

impl Guard {
    /// Puts the limits of every client key in force (config and run-time) through the
    /// admission (new keys get theirs, changed limits apply, a changed quota or budget
    /// keeping its count), or says why the admission refused them (the default one never
    /// does). A reload that gets a refusal keeps the running key list, since swapping it in
    /// would leave a key without the limits the file gives it.
    pub(crate) fn apply_client_limits(
        &self,
        limits: &cliproxy_netguard::LimitTable,
    ) -> Result<(), String> {
        self.admission.update_client_limits(limits).map_err(|e| crate::netguard_error(&e))?;
        self.show_budgets(limits.keys().map(String::as_str));
        Ok(())
    }

    /// [`Guard::apply_client_limits`] after the run-time keys changed (the table is already
    /// swapped in): an admission that cannot take the limits keeps the ones it has, which is
    /// logged, since the keys' limits are then not the ones asked for until a restart.
    pub(crate) fn put_client_limits(&self, limits: &cliproxy_netguard::LimitTable) {
        if let Err(why) = self.apply_client_limits(limits) {
            warn!(self.log, "the limits of the client keys could not be applied"; "error" => why);
        }
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
