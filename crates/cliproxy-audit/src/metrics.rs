//! Prometheus metrics with help texts, useful histogram buckets and bounded labels.
//!
//! Every metric lives on a [`PrometheusRecorder`] owned by one [`Metrics`], never on the
//! process-global recorder: two gateways in one process (the tests start many) keep their own
//! figures, and nothing outside this crate can add series to the scrape.
//!
//! The request path only touches handles that were registered before: one per provider for the
//! histograms and token counters, and one per (provider, status) registered on first use and
//! kept in a `OnceLock` slot, so that an update is a few atomic operations and no lock, no map
//! lookup by key and no allocation.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder};
use metrics::{SharedString, Unit};
use metrics_exporter_prometheus::PrometheusRecorder;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::alerts::client_network;
use crate::config::MetricsConfig;
use crate::event::EventType;

/// `cliproxy_auth_failures_total{provider}`.
const AUTH_FAILURES: &str = "cliproxy_auth_failures_total";
/// `cliproxy_rate_limit_violations_total{ip}`.
const RATE_LIMIT_VIOLATIONS: &str = "cliproxy_rate_limit_violations_total";
/// `cliproxy_security_events_total{event_type}`.
const SECURITY_EVENTS: &str = "cliproxy_security_events_total";
/// `cliproxy_blocked_ips`.
const BLOCKED_IPS: &str = "cliproxy_blocked_ips";
/// `cliproxy_requests_total{provider,status}`.
const REQUESTS: &str = "cliproxy_requests_total";
/// `cliproxy_request_duration_seconds{provider}`.
const REQUEST_DURATION: &str = "cliproxy_request_duration_seconds";
/// `cliproxy_upstream_duration_seconds{provider}`.
const UPSTREAM_DURATION: &str = "cliproxy_upstream_duration_seconds";
/// `cliproxy_tokens_total{provider,kind}`.
const TOKENS: &str = "cliproxy_tokens_total";
/// `cliproxy_quota_remaining{provider}`.
const QUOTA_REMAINING: &str = "cliproxy_quota_remaining";
/// `cliproxy_active_connections`.
const ACTIVE_CONNECTIONS: &str = "cliproxy_active_connections";
/// `cliproxy_alerts_fired_total{rule}`.
const ALERTS_FIRED: &str = "cliproxy_alerts_fired_total";
/// `cliproxy_audit_write_errors_total`.
const AUDIT_WRITE_ERRORS: &str = "cliproxy_audit_write_errors_total";
/// `cliproxy_audit_events_dropped_total`.
const AUDIT_EVENTS_DROPPED: &str = "cliproxy_audit_events_dropped_total";
/// `cliproxy_audit_gaps_total`.
const AUDIT_GAPS: &str = "cliproxy_audit_gaps_total";
/// `cliproxy_audit_healthy`.
const AUDIT_HEALTHY: &str = "cliproxy_audit_healthy";
/// `cliproxy_state_backend_up`.
const STATE_BACKEND_UP: &str = "cliproxy_state_backend_up";
/// `cliproxy_client_spend_usd_total{client}`.
const CLIENT_SPEND: &str = "cliproxy_client_spend_usd_total";
/// `cliproxy_client_budget_remaining_usd{client}`.
const CLIENT_BUDGET_REMAINING: &str = "cliproxy_client_budget_remaining_usd";

/// Most distinct `client` label values of the spend and budget metrics: client keys are few
/// and named, yet keys created at run time must not grow the scrape without bound; the
/// spend of later keys counts under `client="other"` (their remaining budget is not shown).
const MAX_CLIENT_LABELS: usize = 256;

/// Histogram bucket bounds in seconds: from 100 µs (a request refused by the guard or answered
/// by the mock) to 5 minutes (a long streamed completion).
pub(crate) const BUCKETS: [f64; 20] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The label value for a request or failure with no provider (an unknown model, a refused
/// key before any routing).
pub(crate) const NONE: &str = "none";
/// The label value for the management plane.
pub(crate) const MANAGEMENT: &str = "management";
/// The label value every unknown name, surplus address or invalid status is folded into.
pub(crate) const OTHER: &str = "other";

/// Most distinct `rule` label values (further rule names count under `rule="other"`).
const MAX_RULE_LABELS: usize = 64;

/// Histogram samples are buffered lock-free by the exporter until they are drained into the
/// buckets; draining every this many samples bounds that buffer when nobody scrapes.
const UPKEEP_EVERY: u64 = 4096;

/// The valid HTTP statuses (`100..=599`) each get a slot; one more slot holds `other`.
const STATUS_SLOTS: usize = 501;

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Every metric of SPEC §6, on a recorder of its own (not the global one, so that several
/// gateways in one process keep their own figures).
///
/// Label values are bounded: `provider` is one of the names given to [`Metrics::new`] or
/// `none`, `management`, `other`; `status` is a code from 100 to 599 or `other`; `ip` keeps
/// the first `max_ip_labels` clients seen (an IPv4 address, IPv4-mapped IPv6 shown as IPv4,
/// or an IPv6 /64 shown as `2001:db8:1:2::/64`) and counts the rest under `other`; `rule`
/// keeps at most 64 names.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// The configured providers, `none` and `management`, by index (see `provider_index`).
    providers: Vec<ProviderMetrics>,
    /// Provider label value → index into `providers`.
    provider_index: HashMap<String, usize, BuildHasherDefault<Fnv>>,
    /// Every other name.
    other: ProviderMetrics,
    /// Indexed by [`EventType::index`].
    security_events: [Counter; EventType::ALL.len()],
    ips: BoundedLabels<IpAddr>,
    rules: BoundedLabels<String>,
    blocked_ips: Gauge,
    active_connections: Gauge,
    audit_healthy: Gauge,
    state_backend_up: Gauge,
    audit_write_errors: Counter,
    audit_events_dropped: Counter,
    audit_gaps: Counter,
    /// Spend and budget left per client key, in micro-dollars (rendered as dollars).
    money: ClientMoney,
    /// Histogram samples recorded since start (for the periodic upkeep).
    samples: AtomicU64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("providers", &self.providers.iter().map(|p| &p.name).collect::<Vec<_>>())
            .field("max_ip_labels", &self.ips.cap)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric with its help text. `providers` are the configured provider
    /// names: only they (and `none`, `management`, `other`) appear as `provider` values.
    /// Counters and gauges start at zero and are in the first scrape, except
    /// `cliproxy_quota_remaining`, whose series for a provider appears with its first
    /// [`Metrics::set_quota_remaining`] (a provider without a quota has none, rather than a
    /// 0 that reads as an exhausted quota).
    pub fn new(config: &MetricsConfig, providers: impl IntoIterator<Item = String>) -> Self {
        // The bucket list is a non-empty constant, so the error (empty buckets) cannot happen;
        // should it ever, the histograms are rendered as summaries rather than lost.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        describe(&recorder);

        let mut names: Vec<String> = Vec::new();
        for name in providers {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let configured = names.len();
        for special in [NONE, MANAGEMENT] {
            if !names.iter().any(|n| n == special) {
                names.push(special.to_owned());
            }
        }
        let providers: Vec<ProviderMetrics> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                ProviderMetrics::new(
                    &recorder,
                    name,
                    i < configured,
                    i < configured || name == NONE,
                )
            })
            .collect();
        let provider_index = names.into_iter().enumerate().map(|(i, n)| (n, i)).collect();

        let security_events = EventType::ALL.map(|t| {
            counter(
                &recorder,
                SECURITY_EVENTS,
                vec![Label::from_static_parts("event_type", t.as_str())],
            )
        });
        let ips = BoundedLabels::new(
            config.max_ip_labels.get(),
            Some(counter(
                &recorder,
                RATE_LIMIT_VIOLATIONS,
                vec![Label::from_static_parts("ip", OTHER)],
            )),
        );
        // `rule="other"` is registered only when a 65th rule name shows up.
        let rules = BoundedLabels::new(MAX_RULE_LABELS, None);

        Self {
            handle,
            providers,
            provider_index,
            other: ProviderMetrics::new(&recorder, OTHER, false, false),
            security_events,
            ips,
            rules,
            blocked_ips: gauge(&recorder, BLOCKED_IPS, Vec::new()),
            active_connections: gauge(&recorder, ACTIVE_CONNECTIONS, Vec::new()),
            audit_healthy: gauge(&recorder, AUDIT_HEALTHY, Vec::new()),
            state_backend_up: gauge(&recorder, STATE_BACKEND_UP, Vec::new()),
            audit_write_errors: counter(&recorder, AUDIT_WRITE_ERRORS, Vec::new()),
            audit_events_dropped: counter(&recorder, AUDIT_EVENTS_DROPPED, Vec::new()),
            audit_gaps: counter(&recorder, AUDIT_GAPS, Vec::new()),
            money: ClientMoney::default(),
            samples: AtomicU64::new(0),
            recorder,
        }
    }

    /// A refused key; `provider` is the provider the request was for, when it was known,
    /// or `management` for the management plane.
    pub fn auth_failure(&self, provider: Option<&str>) {
        self.provider(provider.unwrap_or(NONE)).auth_failures.increment(1);
    }

    /// A request refused by a rate limit, from `ip`: counted per client, an IPv4 address or an
    /// IPv6 /64 (as the rate limiter and the alert rules key them), so that one /64 takes one
    /// label slot however many of its addresses it uses.
    pub fn rate_limit_violation(&self, ip: IpAddr) {
        let (network, prefix_len) = client_network(ip);
        self.ips.increment(network, || {
            let label = match network {
                IpAddr::V4(v4) => v4.to_string(),
                IpAddr::V6(v6) => format!("{v6}/{prefix_len}"),
            };
            counter(&self.recorder, RATE_LIMIT_VIOLATIONS, vec![Label::new("ip", label)])
        });
    }

    /// One audit event of this type (counted whether or not it is written).
    pub fn security_event(&self, event_type: EventType) {
        if let Some(c) = self.security_events.get(event_type.index()) {
            c.increment(1);
        }
    }

    /// Everything one proxied request records, with one provider lookup: what
    /// [`Metrics::request`], [`Metrics::upstream`] (when `upstream` is set) and
    /// [`Metrics::tokens`] do.
    pub fn provider_request(
        &self,
        provider: &str,
        status: u16,
        duration: Duration,
        upstream: Option<Duration>,
        input_tokens: u64,
        output_tokens: u64,
    ) {
        let p = self.provider(provider);
        self.request_of(p, status, duration);
        if let Some(upstream) = upstream {
            self.histogram(&p.upstream_duration, UPSTREAM_DURATION, p, upstream);
        }
        self.tokens_of(p, input_tokens, output_tokens);
    }

    /// One request answered: the provider it was routed to (`none` when it was refused or
    /// answered before routing), its status and how long it took from arrival to the end of
    /// the reply.
    pub fn request(&self, provider: &str, status: u16, duration: Duration) {
        self.request_of(self.provider(provider), status, duration);
    }

    /// Time spent waiting for and streaming from the provider.
    pub fn upstream(&self, provider: &str, duration: Duration) {
        let p = self.provider(provider);
        self.histogram(&p.upstream_duration, UPSTREAM_DURATION, p, duration);
    }

    /// Tokens of one reply (prompt and completion).
    pub fn tokens(&self, provider: &str, input: u64, output: u64) {
        self.tokens_of(self.provider(provider), input, output);
    }

    fn request_of(&self, p: &ProviderMetrics, status: u16, duration: Duration) {
        let slot = match status {
            100..=599 => usize::from(status - 100),
            _ => STATUS_SLOTS - 1,
        };
        if let Some(cell) = p.requests.get(slot) {
            cell.get_or_init(|| {
                let status = if slot == STATUS_SLOTS - 1 {
                    SharedString::const_str(OTHER)
                } else {
                    SharedString::from(status.to_string())
                };
                counter(
                    &self.recorder,
                    REQUESTS,
                    vec![Label::new("provider", p.name.clone()), Label::new("status", status)],
                )
            })
            .increment(1);
        }
        self.histogram(&p.request_duration, REQUEST_DURATION, p, duration);
    }

    fn tokens_of(&self, p: &ProviderMetrics, input: u64, output: u64) {
        for (cell, kind, n) in
            [(&p.input_tokens, "input", input), (&p.output_tokens, "output", output)]
        {
            if n > 0 {
                cell.get_or_init(|| tokens_counter(&self.recorder, &p.name, kind)).increment(n);
            }
        }
    }

    /// Whether the state store answers now (`cliproxy_state_backend_up`): for a shared
    /// store, whether the limits shared by every instance are in force.
    pub fn set_state_backend_up(&self, up: bool) {
        self.state_backend_up.set(if up { 1.0 } else { 0.0 });
    }

    /// Entries on the runtime denylist now.
    pub fn set_blocked_ips(&self, count: usize) {
        self.blocked_ips.set(count as f64);
    }

    /// Tokens left in a configured provider's quota period (ignored for other names: a
    /// quota only exists for configured providers). The provider's series is registered by
    /// its first call: only providers with a quota have one.
    pub fn set_quota_remaining(&self, provider: &str, remaining: u64) {
        let p = self.provider(provider);
        if let Some(cell) = &p.quota {
            cell.get_or_init(|| {
                gauge(&self.recorder, QUOTA_REMAINING, vec![Label::new("provider", p.name.clone())])
            })
            .set(remaining as f64);
        }
    }

    /// A client connection was accepted.
    pub fn connection_opened(&self) {
        self.active_connections.increment(1.0);
    }

    /// A client connection ended.
    pub fn connection_closed(&self) {
        self.active_connections.decrement(1.0);
    }

    /// An alert rule fired.
    pub fn alert_fired(&self, rule: &str) {
        self.rules.increment_by(rule, 1, |other| {
            counter(
                &self.recorder,
                ALERTS_FIRED,
                vec![Label::new("rule", if other { OTHER.to_owned() } else { rule.to_owned() })],
            )
        });
    }

    /// Registers the configured rule names at zero, so that a dashboard sees them before
    /// they ever fire (called at start and on reload; names beyond 64 are not registered).
    pub fn alert_rules<'a>(&self, rules: impl IntoIterator<Item = &'a str>) {
        for rule in rules {
            self.rules.increment_by(rule, 0, |other| {
                counter(
                    &self.recorder,
                    ALERTS_FIRED,
                    vec![Label::new(
                        "rule",
                        if other { OTHER.to_owned() } else { rule.to_owned() },
                    )],
                )
            });
        }
    }

    /// A line could not be written to the audit log.
    pub fn audit_write_failed(&self) {
        self.audit_write_errors.increment(1);
    }

    /// Events lost (the audit queue was full, or the file failed).
    pub fn audit_events_dropped(&self, count: u64) {
        self.audit_events_dropped.increment(count);
    }

    /// The audit file was found behind the head anchored in the state store at start (lines
    /// cut off its end, or the file deleted), and the gateway went on (`logging.audit.on_gap:
    /// continue`).
    pub fn audit_gap(&self) {
        self.audit_gaps.increment(1);
    }

    /// Whether the audit log is being written (1) or failing (0).
    pub fn set_audit_healthy(&self, healthy: bool) {
        self.audit_healthy.set(if healthy { 1.0 } else { 0.0 });
    }

    /// What a client key's request cost, in micro-dollars: added to
    /// `cliproxy_client_spend_usd_total{client}`.
    pub fn client_spend(&self, client: &str, micro_usd: u64) {
        self.money.with(client, true, |money| {
            money.spent.fetch_add(micro_usd, Ordering::Relaxed);
        });
    }

    /// What is left of a client key's budget in its current period, in micro-dollars:
    /// `cliproxy_client_budget_remaining_usd{client}` (only keys with a budget have one).
    pub fn set_client_budget_remaining(&self, client: &str, micro_usd: u64) {
        self.money.with(client, false, |money| {
            money.remaining.store(micro_usd, Ordering::Relaxed);
        });
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        let mut text = self.handle.render();
        self.money.render(&mut text);
        text
    }

    /// The entry for a provider label value; unknown names share `other`.
    fn provider(&self, name: &str) -> &ProviderMetrics {
        self.provider_index.get(name).and_then(|&i| self.providers.get(i)).unwrap_or(&self.other)
    }

    fn histogram(
        &self,
        cell: &OnceLock<Histogram>,
        name: &'static str,
        p: &ProviderMetrics,
        duration: Duration,
    ) {
        cell.get_or_init(|| {
            self.recorder.register_histogram(
                &Key::from_parts(name, vec![Label::new("provider", p.name.clone())]),
                &METADATA,
            )
        })
        .record(duration.as_secs_f64());
        // Samples wait in a lock-free buffer until drained into the buckets; drain now and
        // then so that the buffer stays small when nobody scrapes.
        if self.samples.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
            self.handle.run_upkeep();
        }
    }
}

/// The handles of one `provider` label value.
struct ProviderMetrics {
    name: String,
    auth_failures: Counter,
    /// One slot per status 100..=599, then `other`; registered on first use.
    requests: Box<[OnceLock<Counter>]>,
    request_duration: OnceLock<Histogram>,
    upstream_duration: OnceLock<Histogram>,
    input_tokens: OnceLock<Counter>,
    output_tokens: OnceLock<Counter>,
    /// Only for configured providers; registered by the first `set_quota_remaining`.
    quota: Option<OnceLock<Gauge>>,
}

impl ProviderMetrics {
    /// `configured`: a provider of the config (it may have a quota gauge, registered when
    /// first set). `requests`: one that
    /// serves requests (configured, or `none`), whose request metrics are registered now so
    /// that they are in the first scrape; `management` and `other` get them on first use.
    fn new(recorder: &PrometheusRecorder, name: &str, configured: bool, requests: bool) -> Self {
        let label = || vec![Label::new("provider", name.to_owned())];
        let slots: Box<[OnceLock<Counter>]> = (0..STATUS_SLOTS).map(|_| OnceLock::new()).collect();
        let p = Self {
            name: name.to_owned(),
            auth_failures: counter(recorder, AUTH_FAILURES, label()),
            requests: slots,
            request_duration: OnceLock::new(),
            upstream_duration: OnceLock::new(),
            input_tokens: OnceLock::new(),
            output_tokens: OnceLock::new(),
            quota: configured.then(OnceLock::new),
        };
        if requests {
            if let Some(ok) = p.requests.get(200 - 100) {
                let labels = vec![
                    Label::new("provider", name.to_owned()),
                    Label::from_static_parts("status", "200"),
                ];
                let _ = ok.set(counter(recorder, REQUESTS, labels));
            }
            for (cell, metric) in
                [(&p.request_duration, REQUEST_DURATION), (&p.upstream_duration, UPSTREAM_DURATION)]
            {
                let _ = cell
                    .set(recorder.register_histogram(&Key::from_parts(metric, label()), &METADATA));
            }
            let _ = p.input_tokens.set(tokens_counter(recorder, name, "input"));
            let _ = p.output_tokens.set(tokens_counter(recorder, name, "output"));
        }
        p
    }
}

/// FNV-1a, for the provider map: it is built once from the configuration and only read, so
/// a keyed hash (SipHash, which defends a map against chosen keys being inserted) buys nothing
/// there and costs some 30 ns per lookup on the request path.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A label whose values are kept up to a cap; later values share one `other` series.
/// Values seen first keep their series for the life of the process (a counter that vanished
/// and came back would read as a reset).
struct BoundedLabels<K> {
    cap: usize,
    known: RwLock<HashMap<K, Counter>>,
    /// Registered up front for `ip` (so that it is in the first scrape), lazily for `rule`.
    other: OnceLock<Counter>,
}

impl<K: std::hash::Hash + Eq> BoundedLabels<K> {
    fn new(cap: usize, other: Option<Counter>) -> Self {
        let cell = OnceLock::new();
        if let Some(other) = other {
            let _ = cell.set(other);
        }
        Self { cap, known: RwLock::new(HashMap::new()), other: cell }
    }

    /// Adds one to `key`'s counter, registering it with `register` when there is room,
    /// else to `other`.
    fn increment(&self, key: K, register: impl FnOnce() -> Counter) {
        {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = known.get(&key) {
                c.increment(1);
                return;
            }
            if known.len() >= self.cap {
                drop(known);
                if let Some(other) = self.other.get() {
                    other.increment(1);
                }
                return;
            }
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = known.get(&key) {
            c.increment(1);
        } else if known.len() < self.cap {
            let c = register();
            c.increment(1);
            known.insert(key, c);
        } else if let Some(other) = self.other.get() {
            other.increment(1);
        }
    }
}

impl BoundedLabels<String> {
    /// Like `increment` for string keys (no allocation when the key is known); `register`
    /// is told whether it registers the `other` series.
    fn increment_by(&self, key: &str, n: u64, register: impl Fn(bool) -> Counter) {
        {
            let known = self.known.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(c) = known.get(key) {
                c.increment(n);
                return;
            }
        }
        let mut known = self.known.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = known.get(key) {
            c.increment(n);
        } else if known.len() < self.cap {
            let c = register(false);
            c.increment(n);
            known.insert(key.to_owned(), c);
        } else if n > 0 {
            self.other.get_or_init(|| register(true)).increment(n);
        }
    }
}

fn counter(recorder: &PrometheusRecorder, name: &'static str, labels: Vec<Label>) -> Counter {
    recorder.register_counter(&Key::from_parts(name, labels), &METADATA)
}

fn gauge(recorder: &PrometheusRecorder, name: &'static str, labels: Vec<Label>) -> Gauge {
    recorder.register_gauge(&Key::from_parts(name, labels), &METADATA)
}

fn tokens_counter(recorder: &PrometheusRecorder, provider: &str, kind: &'static str) -> Counter {
    counter(
        recorder,
        TOKENS,
        vec![Label::new("provider", provider.to_owned()), Label::from_static_parts("kind", kind)],
    )
}

/// The help texts (SPEC §6). A `# HELP` line is only rendered for a metric that has a series,
/// which is why every metric is registered at construction (but `cliproxy_quota_remaining`,
/// which has no series until a provider has a quota).
fn describe(recorder: &PrometheusRecorder) {
    let counters: [(&'static str, &'static str); 9] = [
        (
            AUTH_FAILURES,
            "Client or management keys refused, by provider the request was for (none: not known yet; management: the management API).",
        ),
        (
            RATE_LIMIT_VIOLATIONS,
            "Requests refused by a rate limit, by client: an IPv4 address or an IPv6 /64 (the first max_ip_labels clients; the rest under ip=\"other\").",
        ),
        (
            SECURITY_EVENTS,
            "Audit events, by event type (counted whether or not the type is written to the audit log).",
        ),
        (
            REQUESTS,
            "Requests answered, by the provider they were routed to (none when refused or answered before routing) and the HTTP status sent to the client (other: a status outside 100-599).",
        ),
        (
            TOKENS,
            "Tokens reported by providers, by provider and kind (input: prompt, output: completion).",
        ),
        (ALERTS_FIRED, "Alert rules that fired, by rule name."),
        (AUDIT_WRITE_ERRORS, "Audit log lines that could not be written."),
        (
            AUDIT_EVENTS_DROPPED,
            "Audit events lost before they were written (queue full or file failing).",
        ),
        (
            AUDIT_GAPS,
            "Starts at which the audit log was behind the head anchored in the state store (a cut or deleted log).",
        ),
    ];
    for (name, help) in counters {
        recorder.describe_counter(
            KeyName::from_const_str(name),
            None,
            SharedString::const_str(help),
        );
    }
    let gauges: [(&'static str, &'static str); 5] = [
        (BLOCKED_IPS, "Entries on the runtime IP denylist."),
        (
            QUOTA_REMAINING,
            "Tokens left in the provider's current quota period; only providers with a quota have a series.",
        ),
        (ACTIVE_CONNECTIONS, "Client connections open now."),
        (AUDIT_HEALTHY, "1 while the audit log is being written, 0 while writing fails."),
        (
            STATE_BACKEND_UP,
            "1 while the state store answers (for Redis: shared limits in force), 0 while it does not.",
        ),
    ];
    for (name, help) in gauges {
        recorder.describe_gauge(KeyName::from_const_str(name), None, SharedString::const_str(help));
    }
    let histograms: [(&'static str, &'static str); 2] = [
        (REQUEST_DURATION, "Time from a request's arrival to the end of its reply, by provider."),
        (UPSTREAM_DURATION, "Time spent waiting for and streaming from the provider, by provider."),
    ];
    for (name, help) in histograms {
        recorder.describe_histogram(
            KeyName::from_const_str(name),
            Some(Unit::Seconds),
            SharedString::const_str(help),
        );
    }
}

/// Dollars per client key. The exporter's counters count whole numbers, and dollars are
/// fractions: these two metrics are kept here as exact micro-dollars and rendered by hand
/// as decimal dollars (a counter and a gauge in the text format), never through an `f64`
/// sum that would drift.
#[derive(Default)]
struct ClientMoney {
    by_client: RwLock<std::collections::BTreeMap<String, Money>>,
    /// The spend of keys past [`MAX_CLIENT_LABELS`].
    other: Money,
}

#[derive(Debug)]
struct Money {
    spent: AtomicU64,
    /// Micro-dollars left, or [`NO_BUDGET`].
    remaining: AtomicU64,
}

/// `remaining` of a key without a budget (it has no gauge series).
const NO_BUDGET: u64 = u64::MAX;

impl Default for Money {
    fn default() -> Self {
        Self { spent: AtomicU64::new(0), remaining: AtomicU64::new(NO_BUDGET) }
    }
}

impl ClientMoney {
    /// Runs `update` on `client`'s figures, adding the key while there is room; past the
    /// cap, spend goes to `other` (`to_other`) and a remaining budget is dropped.
    fn with(&self, client: &str, to_other: bool, update: impl FnOnce(&Money)) {
        {
            let known = self.by_client.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(money) = known.get(client) {
                update(money);
                return;
            }
        }
        let mut known = self.by_client.write().unwrap_or_else(PoisonError::into_inner);
        if known.len() < MAX_CLIENT_LABELS || known.contains_key(client) {
            update(known.entry(client.to_owned()).or_default());
        } else if to_other {
            update(&self.other);
        }
    }

    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let known = self.by_client.read().unwrap_or_else(PoisonError::into_inner);
        if known.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP {CLIENT_SPEND} Dollars spent by each client key on priced requests (the first {MAX_CLIENT_LABELS} keys; the rest under client=\"other\")."
        );
        let _ = writeln!(out, "# TYPE {CLIENT_SPEND} counter");
        for (client, money) in known.iter() {
            let spent = money.spent.load(Ordering::Relaxed);
            let _ = writeln!(out, "{CLIENT_SPEND}{{client=\"{}\"}} {}", escape(client), usd(spent));
        }
        let other = self.other.spent.load(Ordering::Relaxed);
        if other > 0 {
            let _ = writeln!(out, "{CLIENT_SPEND}{{client=\"{OTHER}\"}} {}", usd(other));
        }
        let budgets: Vec<(&String, u64)> = known
            .iter()
            .map(|(client, money)| (client, money.remaining.load(Ordering::Relaxed)))
            .filter(|(_, remaining)| *remaining != NO_BUDGET)
            .collect();
        if budgets.is_empty() {
            return;
        }
        let _ = writeln!(
            out,
            "# HELP {CLIENT_BUDGET_REMAINING} Dollars left of each client key's budget in its current period (keys with a budget)."
        );
        let _ = writeln!(out, "# TYPE {CLIENT_BUDGET_REMAINING} gauge");
        for (client, remaining) in budgets {
            let _ = writeln!(
                out,
                "{CLIENT_BUDGET_REMAINING}{{client=\"{}\"}} {}",
                escape(client),
                usd(remaining)
            );
        }
    }
}

/// Micro-dollars as decimal dollars, exactly: `1234` is `0.001234`.
fn usd(micro_usd: u64) -> String {
    format!("{}.{:06}", micro_usd / 1_000_000, micro_usd % 1_000_000)
}

/// A label value in the text format: backslash, double quote and line feed escaped.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod money_tests {
    use super::*;

    #[test]
    fn client_money_is_exact_bounded_and_escaped() {
        let metrics = Metrics::new(&MetricsConfig::default(), ["p".to_owned()]);
        assert!(!metrics.render().contains(CLIENT_SPEND), "no series before any spend");
        metrics.client_spend("alice", 1_234);
        metrics.client_spend("alice", 1_000_000);
        metrics.set_client_budget_remaining("alice", 8_766);
        metrics.client_spend("bob \"x\"", 1);
        let text = metrics.render();
        assert!(
            text.contains("cliproxy_client_spend_usd_total{client=\"alice\"} 1.001234\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE cliproxy_client_spend_usd_total counter"), "{text}");
        assert!(
            text.contains("cliproxy_client_budget_remaining_usd{client=\"alice\"} 0.008766\n"),
            "{text}"
        );
        assert!(text.contains("client=\"bob \\\"x\\\"\"} 0.000001"), "{text}");
        // A key without a budget has no gauge series.
        assert!(!text.contains("cliproxy_client_budget_remaining_usd{client=\"bob"), "{text}");
        for n in 0..MAX_CLIENT_LABELS {
            metrics.client_spend(&format!("k{n}"), 1);
        }
        let text = metrics.render();
        assert!(
            text.contains("cliproxy_client_spend_usd_total{client=\"other\"} 0.000002\n"),
            "{text}"
        );
        assert_eq!(text.matches("cliproxy_client_spend_usd_total{").count(), MAX_CLIENT_LABELS + 1);
    }
}
