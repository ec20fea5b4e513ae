//! The configuration sections this crate owns: the audit log ([`AuditConfig`], cliproxy's
//! `logging.audit`), the metrics listener ([`MetricsConfig`]) and the alert rules
//! ([`AlertRule`]). Each deserialises from its section (unknown keys refused) and can be made
//! from plain values too.

use std::net::{IpAddr, Ipv4Addr};
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::event::EventType;

/// The tamper-evident audit log (cliproxy's `logging.audit:`); [`AuditConfig::build`] makes
/// the file sink from it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct AuditConfig {
    /// Whether events are written. Off by default only because no safe file location can be
    /// guessed for an embedded library; `cliproxy-server check` fails while it is off.
    pub enabled: bool,
    /// The file events are appended to (created 0600; its directory is created 0700).
    pub file: PathBuf,
    /// Only `json` is written.
    pub format: AuditFormat,
    /// The event types that are written (all of them by default). Metrics count every event
    /// whatever this says.
    pub events: Vec<EventType>,
    /// What to do when the file is behind the head anchored in the state store at start (its
    /// last lines cut off, or the whole file deleted): refuse to start (the default), or write
    /// a `security_violation` line and go on.
    pub on_gap: OnGap,
    /// Signed checkpoints: how often the sink writes one (and it always writes one at start,
    /// at a reopen and at a clean shutdown).
    pub checkpoint: CheckpointConfig,
}

impl AuditConfig {
    /// An enabled audit log appended to `file`, every event type written, a gap refused, and
    /// checkpoints (when the sink has a key) every 1000 lines and 5 minutes.
    pub fn new(file: impl Into<PathBuf>) -> Self {
        Self { enabled: true, file: file.into(), ..Self::default() }
    }

    /// The same, with `on_gap` set.
    #[must_use]
    pub fn with_on_gap(mut self, on_gap: OnGap) -> Self {
        self.on_gap = on_gap;
        self
    }

    /// The same, writing only these event types.
    #[must_use]
    pub fn with_events(mut self, events: impl IntoIterator<Item = EventType>) -> Self {
        self.events = events.into_iter().collect();
        self
    }

    /// The same, with a signed checkpoint after `every_lines` lines and at least every
    /// `every` (raised to 1 s when shorter: a checkpoint each tick would say nothing more).
    #[must_use]
    pub fn with_checkpoints(mut self, every_lines: NonZeroU64, every: Duration) -> Self {
        self.checkpoint =
            CheckpointConfig { every_lines, every: every.max(Duration::from_secs(1)) };
        self
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            file: PathBuf::from("./logs/audit.log"),
            format: AuditFormat::Json,
            events: EventType::ALL.to_vec(),
            on_gap: OnGap::Refuse,
            checkpoint: CheckpointConfig::default(),
        }
    }
}

/// What the file sink does when the file is behind its anchored head at open (`on_gap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum OnGap {
    /// Refuse to start, naming what the anchor holds and what the file holds.
    #[default]
    Refuse,
    /// Start, continuing the chain the file holds (or a new one), with a `security_violation`
    /// line (`result: "audit_log_gap"`) as its first new line and `cliproxy_audit_gaps_total`
    /// counted.
    Continue,
}

/// How often a signed checkpoint line is written (`checkpoint:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct CheckpointConfig {
    /// A checkpoint after this many lines since the last one.
    pub every_lines: NonZeroU64,
    /// A checkpoint at least this often while the gateway runs (even when idle, so that an
    /// offline check can tell a quiet log from a cut one). At least 1s.
    #[serde(deserialize_with = "checkpoint_every")]
    pub every: Duration,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            every_lines: NonZeroU64::new(1000).unwrap_or(NonZeroU64::MIN),
            every: Duration::from_secs(300),
        }
    }
}

/// A checkpoint interval: at least a second.
fn checkpoint_every<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let d = cliproxy_core::duration::deserialize(deserializer)?;
    if d < Duration::from_secs(1) {
        return Err(serde::de::Error::custom(
            "a checkpoint interval must be at least 1s (a checkpoint line each time)",
        ));
    }
    Ok(d)
}

/// The line format (`format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum AuditFormat {
    /// One JSON object per line, hash-chained.
    Json,
}

/// `metrics:` — the Prometheus endpoint, on its own listener.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Whether the listener runs (metrics are counted either way; `/v0/management/status`
    /// shows a summary).
    pub enabled: bool,
    /// Address of the listener; loopback by default.
    pub host: IpAddr,
    /// Port of the listener; 0 picks a free one (logged).
    pub port: u16,
    /// Path the text format is served on.
    pub path: String,
    /// Most distinct values of the `ip` label; further addresses are counted under
    /// `ip="other"`.
    pub max_ip_labels: NonZeroUsize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 9090,
            path: "/metrics".to_owned(),
            max_ip_labels: NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN),
        }
    }
}

/// One entry of `alerts:`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AlertRule {
    /// A name for people (logged and audited when the rule fires).
    pub name: String,
    /// `METRIC > N`: fires when more than N events of the metric happen within `duration`.
    pub condition: Condition,
    /// The sliding window the condition is counted over (at least 1ms).
    #[serde(deserialize_with = "window")]
    pub duration: Duration,
    /// What to do when it fires.
    pub action: AlertAction,
    /// `block_ip` only: how long the offending address stays on the runtime denylist.
    #[serde(default = "default_block_for", with = "cliproxy_core::duration")]
    pub block_for: Duration,
    /// `notify_admin` only: a URL the alert is POSTed to as JSON (optional).
    #[serde(default)]
    pub webhook: Option<String>,
    /// How long the webhook POST may take.
    #[serde(default = "default_webhook_timeout", with = "cliproxy_core::duration")]
    pub webhook_timeout: Duration,
}

/// An alert window: a duration of at least a millisecond (a shorter one would count nothing).
fn window<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let d = cliproxy_core::duration::deserialize(deserializer)?;
    if d < Duration::from_millis(1) {
        return Err(serde::de::Error::custom(
            "an alert window of 0 counts nothing; write how long events are counted, like 1m",
        ));
    }
    Ok(d)
}

fn default_block_for() -> Duration {
    Duration::from_secs(3600)
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

/// What an alert does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlertAction {
    /// A `security_violation` audit event, a warning in the log, and the webhook when set.
    /// Counted over all addresses.
    NotifyAdmin,
    /// Puts the offending address on the runtime denylist for `block_for`. Counted per
    /// address.
    BlockIp,
}

/// The metrics an alert condition can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AlertMetric {
    /// `auth_failures` (`cliproxy_auth_failures_total`).
    AuthFailures,
    /// `rate_limit_violations` (`cliproxy_rate_limit_violations_total`).
    RateLimitViolations,
    /// `security_events` (`cliproxy_security_events_total{event_type="security_violation"}`):
    /// every refusal by the network guard.
    SecurityEvents,
}

impl AlertMetric {
    /// The names accepted in a condition, with and without the `cliproxy_` prefix and
    /// `_total` suffix.
    pub const NAMES: [&'static str; 3] =
        ["auth_failures", "rate_limit_violations", "security_events"];

    /// The short name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AuthFailures => "auth_failures",
            Self::RateLimitViolations => "rate_limit_violations",
            Self::SecurityEvents => "security_events",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        let name = name.strip_prefix("cliproxy_").unwrap_or(name);
        let name = name.strip_suffix("_total").unwrap_or(name);
        match name {
            "auth_failures" => Some(Self::AuthFailures),
            "rate_limit_violations" => Some(Self::RateLimitViolations),
            "security_events" => Some(Self::SecurityEvents),
            _ => None,
        }
    }
}

/// A parsed `condition`: `METRIC > N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Condition {
    /// What is counted.
    pub metric: AlertMetric,
    /// The rule fires when the count within the window exceeds this.
    pub threshold: u64,
}

impl Condition {
    /// The highest threshold accepted: a window keeps up to threshold + 1 event times.
    pub const MAX_THRESHOLD: u64 = 1_000_000;
}

impl std::str::FromStr for Condition {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || {
            format!(
                "condition {s:?} is not `METRIC > N` (METRIC one of {}; N a whole number)",
                AlertMetric::NAMES.join(", ")
            )
        };
        let (metric, threshold) = s.split_once('>').ok_or_else(shape)?;
        let metric = metric.trim();
        let metric = AlertMetric::parse(metric).ok_or_else(|| {
            format!(
                "condition {s:?}: unknown metric {metric:?} (known: {})",
                AlertMetric::NAMES.join(", ")
            )
        })?;
        let threshold = threshold.trim().parse::<u64>().map_err(|_| shape())?;
        if threshold > Self::MAX_THRESHOLD {
            return Err(format!(
                "condition {s:?}: the threshold is at most {} (each window keeps that many event times)",
                Self::MAX_THRESHOLD
            ));
        }
        Ok(Self { metric, threshold })
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_parse_with_or_without_prefix_and_suffix() {
        for text in ["rate_limit_violations > 50", "cliproxy_rate_limit_violations_total>50"] {
            let c: Condition = text
                .parse()
                .unwrap_or(Condition { metric: AlertMetric::AuthFailures, threshold: 0 });
            assert_eq!(c, Condition { metric: AlertMetric::RateLimitViolations, threshold: 50 });
        }
        let unknown = "cpu > 5".parse::<Condition>().err().unwrap_or_default();
        assert!(unknown.contains("unknown metric \"cpu\""), "{unknown}");
        let shape = "auth_failures >= 5".parse::<Condition>().err().unwrap_or_default();
        assert!(shape.contains("not `METRIC > N`"), "{shape}");
        assert!("auth_failures < 5".parse::<Condition>().is_err());
        assert!("auth_failures > -1".parse::<Condition>().is_err());
        assert!("auth_failures > 1000000".parse::<Condition>().is_ok());
        let high = "auth_failures > 1000001".parse::<Condition>().err().unwrap_or_default();
        assert!(high.contains("threshold is at most 1000000"), "{high}");
    }

    #[test]
    fn a_zero_window_is_refused() {
        for zero in [serde_json::json!("0s"), serde_json::json!(0), serde_json::json!("500us")] {
            let err = serde_json::from_value::<AlertRule>(serde_json::json!({
                "name": "n",
                "condition": "auth_failures > 1",
                "duration": zero,
                "action": "notify_admin",
            }))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
            assert!(err.contains("an alert window of 0 counts nothing"), "{zero}: {err}");
        }
    }

    #[test]
    fn a_seed_rule_loads_with_defaults() {
        let rule: AlertRule = serde_json::from_value(serde_json::json!({
            "name": "Rate limit violations",
            "condition": "rate_limit_violations > 50",
            "duration": "1m",
            "action": "block_ip",
        }))
        .map_err(|e| e.to_string())
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(rule.duration, Duration::from_secs(60));
        assert_eq!(rule.action, AlertAction::BlockIp);
        assert_eq!(rule.block_for, Duration::from_secs(3600));
        assert_eq!(rule.webhook, None);
    }
}
