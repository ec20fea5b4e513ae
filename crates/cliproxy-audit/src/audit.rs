//! [`Audit`]: the one handle the gateway holds. Each [`Event`] goes through it: its metrics
//! are bumped, the alert rules see it, and the sink writes it when its type is selected.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use crate::alerts::{Alerts, Fired};
use crate::config::{AlertMetric, AlertRule, AuditConfig, MetricsConfig};
use crate::error::Result;
use crate::event::{Event, EventType, Plane, What};
use crate::metrics::Metrics;
use crate::notice::SinkFailure;
use crate::sink::{AuditSink, SinkHealth, SinkOptions};

/// A source of milliseconds for the alert windows (monotonic; tests pass a fake one).
pub type MillisClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The audit layer as the gateway uses it.
pub struct Audit {
    sink: Option<Arc<dyn AuditSink>>,
    /// One bit per [`EventType::index`]: the types written ([`AuditConfig::events`]).
    filter: AtomicU8,
    metrics: Arc<Metrics>,
    alerts: Alerts,
    now: MillisClock,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("sink", &self.sink)
            .field("filter", &self.filter.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Audit {
    /// Builds the metrics, the alert rules and, when `audit.enabled`, the file sink (see
    /// [`AuditConfig::build`]). `providers` bounds the `provider` label; `options` carries the
    /// sink's head anchor, checkpoint signer and where its notices go.
    pub fn build(
        audit: &AuditConfig,
        metrics: &MetricsConfig,
        alerts: &[AlertRule],
        providers: impl IntoIterator<Item = String>,
        options: SinkOptions,
    ) -> Result<Self> {
        let metrics = Arc::new(Metrics::new(metrics, providers));
        let sink = audit.build(metrics.clone(), options)?;
        Ok(Self::with_sink(sink, audit, metrics, alerts))
    }

    /// An audit layer around any sink (or none) that writes every event and has no alert
    /// rules: for a service that has no configuration section of this crate.
    pub fn new(sink: Option<Arc<dyn AuditSink>>, metrics: Arc<Metrics>) -> Self {
        Self::with_sink(sink, &AuditConfig::default(), metrics, &[])
    }

    /// An audit layer around a given sink (another destination, or none).
    pub fn with_sink(
        sink: Option<Arc<dyn AuditSink>>,
        audit: &AuditConfig,
        metrics: Arc<Metrics>,
        alerts: &[AlertRule],
    ) -> Self {
        let started = Instant::now();
        let now: MillisClock =
            Arc::new(move || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        // The sink may already have failed a write (its start checkpoint, at open).
        let healthy = sink.as_ref().is_none_or(|sink| sink.health() == SinkHealth::Ok);
        metrics.set_audit_healthy(healthy);
        metrics.alert_rules(alerts.iter().map(|r| r.name.as_str()));
        Self {
            sink,
            filter: AtomicU8::new(mask(&audit.events)),
            metrics,
            alerts: Alerts::new(alerts.to_vec()),
            now,
        }
    }

    /// Replaces the clock of the alert windows (tests drive it by hand).
    #[must_use]
    pub fn with_clock(mut self, now: MillisClock) -> Self {
        self.now = now;
        self
    }

    /// Records one event: metrics first (always), then the alert rules, then the file (when
    /// its type is selected). Returns the alerts that fired, for the caller to act on (block
    /// an address, call a webhook). Never blocks on the disk.
    pub fn emit(&self, event: Event) -> Vec<Fired> {
        let fired = self.count(&event);
        if self.selected(event.event_type())
            && let Some(sink) = &self.sink
        {
            sink.write_owned(event);
        }
        fired
    }

    /// Writes the event's line (when its type is selected) without counting it: for a
    /// summary of events already counted one by one with [`Audit::count`].
    pub fn write(&self, event: &Event) {
        if self.selected(event.event_type())
            && let Some(sink) = &self.sink
        {
            sink.write(event);
        }
    }

    /// Counts the event (metrics, alert rules) without writing a line; returns the alerts
    /// that fired. [`Audit::emit`] is `count` then `write`.
    pub fn count(&self, event: &Event) -> Vec<Fired> {
        let event_type = event.event_type();
        self.metrics.security_event(event_type);
        let mut fired = Vec::new();
        match &event.what {
            What::AuthFailure { plane, .. } => {
                // A refused management key is labelled `management`, whatever the event says.
                let provider = match plane {
                    Plane::Management => Some(crate::metrics::MANAGEMENT),
                    Plane::Client => event.provider.as_deref(),
                };
                self.metrics.auth_failure(provider);
                fired = self.alerts.observe(AlertMetric::AuthFailures, event.ip, (self.now)());
            }
            What::SecurityViolation { rate_limit, rule, .. } => {
                let now = (self.now)();
                if *rate_limit {
                    if let Some(ip) = event.ip {
                        self.metrics.rate_limit_violation(ip);
                    }
                    fired = self.alerts.observe(AlertMetric::RateLimitViolations, event.ip, now);
                }
                // An alert's own event does not count towards the alerts.
                if *rule != ALERT_RULE {
                    fired.extend(self.alerts.observe(AlertMetric::SecurityEvents, event.ip, now));
                }
            }
            What::ProviderRequest {
                status,
                duration,
                upstream,
                input_tokens,
                output_tokens,
                ..
            } => {
                self.metrics.provider_request(
                    event.provider.as_deref().unwrap_or(crate::metrics::NONE),
                    *status,
                    *duration,
                    *upstream,
                    input_tokens.unwrap_or(0),
                    output_tokens.unwrap_or(0),
                );
            }
            _ => {}
        }
        for alert in &fired {
            self.metrics.alert_fired(&alert.rule);
        }
        fired
    }

    /// Whether events of this type are written.
    pub fn selected(&self, event_type: EventType) -> bool {
        self.filter.load(Ordering::Relaxed) & (1 << event_type.index()) != 0
    }

    /// The metrics (gauges are set through it; the listener renders it).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Whether the audit log can be written: `None` when it is off or healthy, else what
    /// fails (for a readiness probe).
    pub fn failing(&self) -> Option<SinkFailure> {
        match self.sink.as_ref().map(|sink| sink.health()) {
            Some(SinkHealth::Failing { error }) => Some(error),
            _ => None,
        }
    }

    /// Whether an audit file is being written.
    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Reopens the audit file (SIGHUP, after logrotate); the chain continues.
    pub fn reopen(&self) {
        if let Some(sink) = &self.sink {
            sink.reopen();
        }
    }

    /// Waits until queued events are written (shutdown, tests).
    pub fn flush(&self) {
        if let Some(sink) = &self.sink {
            sink.flush();
        }
    }

    /// The gateway is stopping: writes what is queued and the shutdown checkpoint, syncs and
    /// anchors the head (the caller then flushes the state store the anchor goes to).
    pub fn shutdown(&self) {
        if let Some(sink) = &self.sink {
            sink.shutdown();
        }
    }

    /// Applies a reloaded `events` selection and alert rules (the file and the metrics
    /// listener need a restart).
    pub fn reload(&self, audit: &AuditConfig, alerts: &[AlertRule]) {
        self.filter.store(mask(&audit.events), Ordering::Relaxed);
        self.alerts.replace(alerts.to_vec());
        self.metrics.alert_rules(alerts.iter().map(|r| r.name.as_str()));
    }
}

/// The `rule` of the `security_violation` event an alert writes when it fires.
pub const ALERT_RULE: &str = "alert";

fn mask(events: &[EventType]) -> u8 {
    events.iter().fold(0, |mask, t| mask | (1 << t.index()))
}
