//! The Prometheus scrape as a monitoring system sees it: every SPEC §6 metric with its help
//! text and type, histogram buckets, bounded labels and exact counts, checked by a small
//! parser of the text format here and by `promtool check metrics` when it is installed.
//! Also: the Prometheus alert file keeps the seed rules' thresholds.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    reason = "tests: a failed step should stop the test with its message"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cliproxy_audit::{
    AlertMetric, AlertRule, Audit, AuditConfig, Condition, Event, EventType, Metrics,
    MetricsConfig, Plane, What,
};

/// The metrics SPEC §6 asks for (and the ones this crate adds), with their types.
const EXPECTED: [(&str, &str); 16] = [
    ("cliproxy_auth_failures_total", "counter"),
    ("cliproxy_rate_limit_violations_total", "counter"),
    ("cliproxy_security_events_total", "counter"),
    ("cliproxy_blocked_ips", "gauge"),
    ("cliproxy_requests_total", "counter"),
    ("cliproxy_request_duration_seconds", "histogram"),
    ("cliproxy_upstream_duration_seconds", "histogram"),
    ("cliproxy_tokens_total", "counter"),
    ("cliproxy_quota_remaining", "gauge"),
    ("cliproxy_active_connections", "gauge"),
    ("cliproxy_alerts_fired_total", "counter"),
    ("cliproxy_audit_write_errors_total", "counter"),
    ("cliproxy_audit_events_dropped_total", "counter"),
    ("cliproxy_audit_gaps_total", "counter"),
    ("cliproxy_audit_healthy", "gauge"),
    ("cliproxy_state_backend_up", "gauge"),
];

const BUCKETS: [&str; 21] = [
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "120", "300", "+Inf",
];

fn config(max_ip_labels: usize) -> MetricsConfig {
    let mut c = MetricsConfig::default();
    c.max_ip_labels = NonZeroUsize::new(max_ip_labels).unwrap();
    c
}

fn providers() -> Vec<String> {
    vec!["openai".to_owned(), "claude".to_owned()]
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0xc633_6400 + n)) // 198.51.100.0 + n
}

/// A parsed text exposition.
#[derive(Debug, Default)]
struct Scrape {
    help: BTreeMap<String, String>,
    types: BTreeMap<String, String>,
    /// (sample name, labels) → value.
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Scrape {
    /// Parses the Prometheus text format (version 0.0.4) as far as this exporter writes it:
    /// `# HELP`, `# TYPE`, and `name{label="value",...} value` lines with escaped values.
    fn parse(text: &str) -> Self {
        let mut s = Self::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP without text");
                assert!(
                    s.help.insert(name.to_owned(), help.to_owned()).is_none(),
                    "two HELP for {name}"
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, t) = rest.split_once(' ').expect("TYPE without type");
                assert!(
                    s.types.insert(name.to_owned(), t.to_owned()).is_none(),
                    "two TYPE for {name}"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "line {n}: unknown comment {line:?}");
            let (name, labels, value) =
                parse_sample(line).unwrap_or_else(|e| panic!("line {n}: {e}: {line:?}"));
            let key = (name, labels);
            assert!(!s.samples.contains_key(&key), "line {n}: duplicate series {key:?}");
            s.samples.insert(key, value);
        }
        s
    }

    /// The value of one series (labels given as pairs).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.samples.get(&(name.to_owned(), labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }

    /// Every series of a sample name.
    fn series<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a BTreeMap<String, String>, f64)> + 'a {
        self.samples.iter().filter(move |((n, _), _)| n == name).map(|((_, l), v)| (l, *v))
    }

    /// The values one label takes over a sample name's series.
    fn label_values(&self, name: &str, label: &str) -> BTreeSet<String> {
        self.series(name).filter_map(|(l, _)| l.get(label).cloned()).collect()
    }
}

fn parse_sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices().peekable();
        let mut end = None;
        loop {
            // A label name up to `=`, or the closing brace.
            let mut key = String::new();
            for (i, c) in chars.by_ref() {
                match c {
                    '}' if key.is_empty() => {
                        end = Some(i);
                        break;
                    }
                    '=' => break,
                    c if c.is_ascii_alphanumeric() || c == '_' => key.push(c),
                    c => return Err(format!("bad character {c:?} in a label name")),
                }
            }
            if end.is_some() {
                break;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} has no quoted value"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some(c) => value.push(c),
                    None => return Err("unterminated label value".to_owned()),
                }
            }
            if labels.insert(key.clone(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            match chars.next() {
                Some((_, ',')) => {}
                Some((i, '}')) => {
                    end = Some(i);
                    break;
                }
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
        let end = end.ok_or("no closing brace")?;
        rest = &inner[end + 1..];
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|e| format!("value {v:?}: {e}"))?,
    };
    Ok((name.to_owned(), labels, value))
}

/// Checks the text with `promtool check metrics` when promtool is on PATH; without it, fails
/// when `CLIPROXY_REQUIRE_PROMTOOL=1` (CI) and says so otherwise (`0` or unset); any other
/// value of the variable fails the test.
fn promtool_check(text: &str) {
    // One rule for CLIPROXY_REQUIRE_PROMTOOL (tests/e2e/audit.rs has the same): "1" requires
    // promtool, "0" or unset does not, and any other value is a mistake that fails the test.
    let required = match std::env::var_os("CLIPROXY_REQUIRE_PROMTOOL") {
        Some(value) if value == "1" => true,
        Some(value) if value == "0" => false,
        None => false,
        Some(other) => panic!(
            "CLIPROXY_REQUIRE_PROMTOOL is {other:?}: it must be 1 (promtool required) or 0 or \
             unset (not required)"
        ),
    };
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !required,
                "CLIPROXY_REQUIRE_PROMTOOL=1 but promtool is not on PATH: run .ci/metrics-tools.sh \
                 (it installs it and prints the directory to add to PATH)"
            );
            eprintln!("promtool not on PATH: `promtool check metrics` skipped");
            return;
        }
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Records every kind of metric through the public API, with the awkward cases.
fn record_everything(m: &Metrics) {
    // Auth failures: a configured provider, none, the management plane, unknown names.
    for _ in 0..3 {
        m.auth_failure(Some("openai"));
    }
    m.auth_failure(None);
    m.auth_failure(None);
    m.auth_failure(Some("management"));
    for name in ["bogus", "sk-live-0123456789abcdef", "../../etc"] {
        m.auth_failure(Some(name));
    }

    // 1,000 distinct addresses, the first one three times, the second once more as an
    // IPv4-mapped IPv6 address.
    for n in 0..1000 {
        m.rate_limit_violation(ip(n));
    }
    m.rate_limit_violation(ip(0));
    m.rate_limit_violation(ip(0));
    let IpAddr::V4(v4) = ip(1) else { unreachable!() };
    m.rate_limit_violation(IpAddr::V6(v4.to_ipv6_mapped()));
    // A late address that is one of the known ten is still counted under its own label.
    m.rate_limit_violation(ip(9));

    for (i, t) in EventType::ALL.iter().enumerate() {
        for _ in 0..=i {
            m.security_event(*t);
        }
    }

    // Requests: good statuses, weird ones, an unknown provider.
    for _ in 0..5 {
        m.request("openai", 200, Duration::from_millis(2));
    }
    m.request("openai", 503, Duration::from_millis(40));
    m.request("openai", 42, Duration::from_secs(3));
    m.request("openai", 600, Duration::from_secs(400));
    m.request("openai", 0, Duration::ZERO);
    m.request("nobody", 200, Duration::from_micros(50));
    m.request("none", 404, Duration::from_micros(300));
    m.upstream("openai", Duration::from_millis(30));
    m.upstream("claude", Duration::from_secs(90));

    m.tokens("openai", 10, 20);
    m.tokens("openai", 1, 0);
    m.tokens("claude", 0, 5);
    m.tokens("mystery", 7, 7);

    m.set_blocked_ips(7);
    m.set_quota_remaining("openai", 1234);
    m.set_quota_remaining("bogus", 99);
    for _ in 0..3 {
        m.connection_opened();
    }
    m.connection_closed();
    m.alert_rules(["Rate limit violations", "High auth failure rate"]);
    m.alert_fired("Rate limit violations");
    m.alert_fired("Rate limit violations");
    m.audit_write_failed();
    m.audit_events_dropped(5);
    m.audit_events_dropped(2);
    m.audit_gap();
    m.set_audit_healthy(true);
}

#[test]
fn a_scrape_has_every_metric_with_help_type_buckets_bounded_labels_and_exact_counts() {
    let m = Metrics::new(&config(10), providers());
    record_everything(&m);
    let text = m.render();
    let s = Scrape::parse(&text);

    for (name, t) in EXPECTED {
        assert_eq!(s.types.get(name).map(String::as_str), Some(t), "# TYPE of {name}");
        assert!(s.help.get(name).is_some_and(|h| h.len() > 10), "# HELP of {name}");
    }
    assert_eq!(s.types.len(), EXPECTED.len(), "unexpected metrics: {:?}", s.types.keys());

    // ip: ten addresses plus `other`, which counts the 990 others exactly.
    let ips = s.label_values("cliproxy_rate_limit_violations_total", "ip");
    assert_eq!(ips.len(), 11, "{ips:?}");
    assert!(ips.contains("other"));
    let rl = "cliproxy_rate_limit_violations_total";
    assert_eq!(s.value(rl, &[("ip", "other")]), 990.0);
    assert_eq!(s.value(rl, &[("ip", "198.51.100.0")]), 3.0);
    assert_eq!(s.value(rl, &[("ip", "198.51.100.1")]), 2.0, "IPv4-mapped counted as IPv4");
    assert_eq!(s.value(rl, &[("ip", "198.51.100.9")]), 2.0);
    assert_eq!(s.series(rl).map(|(_, v)| v).sum::<f64>(), 1004.0);

    // provider: configured names, none, management, other; secrets never become labels.
    let af = "cliproxy_auth_failures_total";
    assert_eq!(s.value(af, &[("provider", "openai")]), 3.0);
    assert_eq!(s.value(af, &[("provider", "claude")]), 0.0);
    assert_eq!(s.value(af, &[("provider", "none")]), 2.0);
    assert_eq!(s.value(af, &[("provider", "management")]), 1.0);
    assert_eq!(s.value(af, &[("provider", "other")]), 3.0);
    assert!(!text.contains("sk-live") && !text.contains("bogus") && !text.contains("etc"));
    let allowed: BTreeSet<String> =
        ["openai", "claude", "none", "management", "other"].map(str::to_owned).into();
    for name in s.samples.keys().map(|(n, _)| n.clone()).collect::<BTreeSet<_>>() {
        assert!(s.label_values(&name, "provider").is_subset(&allowed), "{name}");
    }

    for (i, t) in EventType::ALL.iter().enumerate() {
        let v = s.value("cliproxy_security_events_total", &[("event_type", t.as_str())]);
        assert_eq!(v, (i + 1) as f64, "{t}");
    }

    // status: 100..=599 or `other`.
    let rq = "cliproxy_requests_total";
    assert_eq!(s.value(rq, &[("provider", "openai"), ("status", "200")]), 5.0);
    assert_eq!(s.value(rq, &[("provider", "openai"), ("status", "503")]), 1.0);
    assert_eq!(s.value(rq, &[("provider", "openai"), ("status", "other")]), 3.0);
    assert_eq!(s.value(rq, &[("provider", "other"), ("status", "200")]), 1.0);
    assert_eq!(s.value(rq, &[("provider", "none"), ("status", "404")]), 1.0);
    assert_eq!(s.value(rq, &[("provider", "claude"), ("status", "200")]), 0.0);
    assert_eq!(
        s.label_values(rq, "status"),
        ["200", "404", "503", "other"].map(str::to_owned).into()
    );

    // Histograms: every bucket, cumulative, with sum and count.
    let h = "cliproxy_request_duration_seconds";
    for provider in ["openai", "claude", "none", "other"] {
        for le in BUCKETS {
            assert!(
                s.get(&format!("{h}_bucket"), &[("provider", provider), ("le", le)]).is_some(),
                "{h} {provider} le={le}"
            );
        }
    }
    let bucket =
        |p: &str, le: &str| s.value(&format!("{h}_bucket"), &[("provider", p), ("le", le)]);
    assert_eq!(bucket("openai", "0.001"), 1.0, "the zero duration");
    assert_eq!(bucket("openai", "0.0025"), 6.0);
    assert_eq!(bucket("openai", "0.05"), 7.0);
    assert_eq!(bucket("openai", "5"), 8.0);
    assert_eq!(bucket("openai", "300"), 8.0);
    assert_eq!(bucket("openai", "+Inf"), 9.0, "400 s is above the last bound");
    assert_eq!(bucket("other", "0.0001"), 1.0);
    assert_eq!(s.value(&format!("{h}_count"), &[("provider", "openai")]), 9.0);
    let sum = s.value(&format!("{h}_sum"), &[("provider", "openai")]);
    assert!((sum - (0.010 + 0.040 + 3.0 + 400.0)).abs() < 1e-9, "{sum}");
    let u = "cliproxy_upstream_duration_seconds";
    assert_eq!(s.value(&format!("{u}_bucket"), &[("provider", "claude"), ("le", "60")]), 0.0);
    assert_eq!(s.value(&format!("{u}_bucket"), &[("provider", "claude"), ("le", "120")]), 1.0);
    assert_eq!(s.value(&format!("{u}_count"), &[("provider", "openai")]), 1.0);

    let tk = "cliproxy_tokens_total";
    assert_eq!(s.value(tk, &[("provider", "openai"), ("kind", "input")]), 11.0);
    assert_eq!(s.value(tk, &[("provider", "openai"), ("kind", "output")]), 20.0);
    assert_eq!(s.value(tk, &[("provider", "claude"), ("kind", "output")]), 5.0);
    assert_eq!(s.value(tk, &[("provider", "other"), ("kind", "input")]), 7.0);

    assert_eq!(s.value("cliproxy_blocked_ips", &[]), 7.0);
    assert_eq!(s.value("cliproxy_quota_remaining", &[("provider", "openai")]), 1234.0);
    assert_eq!(
        s.series("cliproxy_quota_remaining").count(),
        1,
        "only configured providers that were given a quota"
    );
    assert_eq!(s.value("cliproxy_active_connections", &[]), 2.0);
    let fired = "cliproxy_alerts_fired_total";
    assert_eq!(s.value(fired, &[("rule", "Rate limit violations")]), 2.0);
    assert_eq!(s.value(fired, &[("rule", "High auth failure rate")]), 0.0);
    assert_eq!(s.value("cliproxy_audit_write_errors_total", &[]), 1.0);
    assert_eq!(s.value("cliproxy_audit_events_dropped_total", &[]), 7.0);
    assert_eq!(s.value("cliproxy_audit_gaps_total", &[]), 1.0);
    assert_eq!(s.value("cliproxy_audit_healthy", &[]), 1.0);

    promtool_check(&text);
}

#[test]
fn the_first_scrape_shows_every_metric_at_zero() {
    let m = Metrics::new(&config(100), providers());
    m.alert_rules(["Rate limit violations"]);
    let text = m.render();
    let s = Scrape::parse(&text);
    // All but the quota gauge, which only has series for providers with a quota.
    assert!(!s.types.contains_key("cliproxy_quota_remaining"), "{text}");
    for (name, t) in EXPECTED.into_iter().filter(|(n, _)| *n != "cliproxy_quota_remaining") {
        assert_eq!(s.types.get(name).map(String::as_str), Some(t), "{name} missing:\n{text}");
        assert!(s.help.contains_key(name), "{name}");
    }
    assert!(s.samples.values().all(|v| *v == 0.0), "{text}");
    assert_eq!(
        s.value("cliproxy_requests_total", &[("provider", "openai"), ("status", "200")]),
        0.0
    );
    assert_eq!(
        s.value(
            "cliproxy_request_duration_seconds_bucket",
            &[("provider", "claude"), ("le", "+Inf")]
        ),
        0.0
    );
    promtool_check(&text);
}

#[test]
fn two_metrics_in_one_process_keep_separate_figures() {
    let a = Metrics::new(&config(10), providers());
    let b = Metrics::new(&config(10), vec!["gemini".to_owned()]);
    a.auth_failure(Some("openai"));
    a.request("openai", 200, Duration::from_millis(1));
    b.auth_failure(Some("gemini"));
    b.auth_failure(Some("gemini"));
    b.connection_opened();
    let (sa, sb) = (Scrape::parse(&a.render()), Scrape::parse(&b.render()));
    assert_eq!(sa.value("cliproxy_auth_failures_total", &[("provider", "openai")]), 1.0);
    assert_eq!(sa.get("cliproxy_auth_failures_total", &[("provider", "gemini")]), None);
    assert_eq!(sa.value("cliproxy_active_connections", &[]), 0.0);
    assert_eq!(sb.value("cliproxy_auth_failures_total", &[("provider", "gemini")]), 2.0);
    assert_eq!(sb.get("cliproxy_auth_failures_total", &[("provider", "openai")]), None);
    assert_eq!(sb.value("cliproxy_active_connections", &[]), 1.0);
    assert_eq!(
        sb.value("cliproxy_requests_total", &[("provider", "gemini"), ("status", "200")]),
        0.0
    );
}

#[test]
fn many_histogram_samples_without_a_scrape_are_all_counted() {
    // The exporter buffers samples until they are drained; `Metrics` drains every few
    // thousand so that the buffer stays small, and nothing is lost on the way.
    let m = Metrics::new(&config(10), providers());
    for _ in 0..10_001 {
        m.request("claude", 200, Duration::from_millis(3));
    }
    let s = Scrape::parse(&m.render());
    let count = s.value("cliproxy_request_duration_seconds_count", &[("provider", "claude")]);
    assert_eq!(count, 10_001.0);
    let le = s.value(
        "cliproxy_request_duration_seconds_bucket",
        &[("provider", "claude"), ("le", "0.005")],
    );
    assert_eq!(le, 10_001.0);
}

#[test]
fn rule_names_are_bounded_to_64_and_the_rest_count_under_other() {
    let m = Metrics::new(&config(10), providers());
    let names: Vec<String> = (0..70).map(|i| format!("rule {i}")).collect();
    m.alert_rules(names.iter().map(String::as_str));
    for name in &names {
        m.alert_fired(name);
    }
    m.alert_fired("rule 0");
    let s = Scrape::parse(&m.render());
    let fired = "cliproxy_alerts_fired_total";
    assert_eq!(s.label_values(fired, "rule").len(), 65);
    assert_eq!(s.value(fired, &[("rule", "rule 0")]), 2.0);
    assert_eq!(s.value(fired, &[("rule", "rule 63")]), 1.0);
    assert_eq!(s.get(fired, &[("rule", "rule 64")]), None);
    assert_eq!(s.value(fired, &[("rule", "other")]), 6.0);
}

#[test]
fn a_provider_without_a_quota_has_no_quota_series_rather_than_zero() {
    // A 0 would read as an exhausted quota (and fire an `== 0` alert) for a provider that
    // has no quota at all.
    let m = Metrics::new(&config(10), providers());
    let s = Scrape::parse(&m.render());
    assert_eq!(s.series("cliproxy_quota_remaining").count(), 0);
    m.set_quota_remaining("claude", 0);
    m.set_quota_remaining("bogus", 5);
    let text = m.render();
    let s = Scrape::parse(&text);
    assert_eq!(s.value("cliproxy_quota_remaining", &[("provider", "claude")]), 0.0);
    assert_eq!(s.get("cliproxy_quota_remaining", &[("provider", "openai")]), None);
    assert_eq!(s.series("cliproxy_quota_remaining").count(), 1, "{text}");
    assert!(s.help["cliproxy_quota_remaining"].contains("only providers with a quota"));
    m.set_quota_remaining("claude", 77);
    let s = Scrape::parse(&m.render());
    assert_eq!(s.value("cliproxy_quota_remaining", &[("provider", "claude")]), 77.0);
    promtool_check(&text);
}

#[test]
fn the_requests_help_text_counts_answers_that_never_reached_a_provider() {
    let m = Metrics::new(&config(10), providers());
    m.request("none", 401, Duration::from_micros(80));
    let s = Scrape::parse(&m.render());
    let help = &s.help["cliproxy_requests_total"];
    assert!(help.starts_with("Requests answered, by the provider they were routed to"), "{help}");
    assert!(help.contains("none when refused or answered before routing"), "{help}");
    assert!(!help.contains("Proxied"), "{help}");
    assert_eq!(s.value("cliproxy_requests_total", &[("provider", "none"), ("status", "401")]), 1.0);
}

#[test]
fn ipv6_rate_limit_violations_are_labelled_by_their_64() {
    // One /64 rotating through 1,000 of its addresses takes one label slot, not all ten.
    let m = Metrics::new(&config(10), providers());
    let v6 = |net: u16, host: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, net, 0, 0, 0, host));
    for host in 0..1000 {
        m.rate_limit_violation(v6(2, host));
    }
    for net in 100..108 {
        m.rate_limit_violation(v6(net, 1));
    }
    m.rate_limit_violation(ip(1));
    // An eleventh client: no slot left.
    m.rate_limit_violation(v6(200, 1));
    // Known clients keep counting under their own label.
    m.rate_limit_violation(v6(2, 0xffff));
    let IpAddr::V4(v4) = ip(1) else { unreachable!() };
    m.rate_limit_violation(IpAddr::V6(v4.to_ipv6_mapped()));
    let text = m.render();
    let s = Scrape::parse(&text);
    let rl = "cliproxy_rate_limit_violations_total";
    assert_eq!(s.label_values(rl, "ip").len(), 11, "{text}");
    assert_eq!(s.value(rl, &[("ip", "2001:db8:1:2::/64")]), 1001.0);
    assert_eq!(s.value(rl, &[("ip", "2001:db8:1:64::/64")]), 1.0);
    assert_eq!(s.value(rl, &[("ip", "198.51.100.1")]), 2.0, "IPv4 (and mapped) by address");
    assert_eq!(s.value(rl, &[("ip", "other")]), 1.0);
    assert!(s.help[rl].contains("IPv6 /64"), "{}", s.help[rl]);
    promtool_check(&text);
}

fn rule(json: serde_json::Value) -> AlertRule {
    serde_json::from_value(json).unwrap()
}

#[test]
fn audit_events_bump_their_metrics_and_fire_alerts() {
    let metrics = Arc::new(Metrics::new(&config(10), providers()));
    let rules = [
        rule(serde_json::json!({"name": "Rate limit violations",
            "condition": "rate_limit_violations > 2", "duration": "1m", "action": "block_ip"})),
        rule(serde_json::json!({"name": "High auth failure rate",
            "condition": "auth_failures > 100", "duration": "5m", "action": "notify_admin"})),
    ];
    let now = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clock = now.clone();
    let audit = Audit::with_sink(None, &AuditConfig::default(), metrics.clone(), &rules)
        .with_clock(Arc::new(move || clock.load(std::sync::atomic::Ordering::Relaxed)));

    audit.emit(Event::new(What::AuthFailure {
        plane: Plane::Management,
        reason: "invalid_key",
        repeats: 0,
    }));
    audit.emit(
        Event::new(What::AuthFailure { plane: Plane::Client, reason: "invalid_key", repeats: 0 })
            .provider("claude"),
    );
    let mut fired = Vec::new();
    for i in 0..3 {
        now.store(i * 1000, std::sync::atomic::Ordering::Relaxed);
        let violation = What::SecurityViolation {
            rule: "per_ip_rate",
            rate_limit: true,
            detail: "per-address rate limit".to_owned(),
            repeats: 0,
        };
        fired.extend(audit.emit(Event::new(violation).ip(ip(5))));
    }
    assert_eq!(fired.len(), 1, "{fired:?}");
    assert_eq!(fired[0].ip, Some(ip(5)));

    let s = Scrape::parse(&metrics.render());
    let af = "cliproxy_auth_failures_total";
    assert_eq!(s.value(af, &[("provider", "management")]), 1.0);
    assert_eq!(s.value(af, &[("provider", "claude")]), 1.0);
    assert_eq!(s.value("cliproxy_rate_limit_violations_total", &[("ip", "198.51.100.5")]), 3.0);
    let ev = "cliproxy_security_events_total";
    assert_eq!(s.value(ev, &[("event_type", "security_violation")]), 3.0);
    assert_eq!(s.value(ev, &[("event_type", "auth_failure")]), 2.0);
    let fired = "cliproxy_alerts_fired_total";
    assert_eq!(s.value(fired, &[("rule", "Rate limit violations")]), 1.0);
    assert_eq!(s.value(fired, &[("rule", "High auth failure rate")]), 0.0);
    assert_eq!(s.value("cliproxy_audit_healthy", &[]), 1.0);
}

#[test]
fn the_prometheus_alert_file_keeps_the_seed_thresholds() {
    // deploy/prometheus/alerts.yml restates the seed rules (`auth_failures > 100` over 5m,
    // `rate_limit_violations > 50` over 1m) for an external Prometheus; if either side
    // changes, this test asks for the other to follow.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    for expr in [
        "sumwithout(provider)(increase(cliproxy_auth_failures_total[5m]))>100",
        r#"sumby(ip)(increase(cliproxy_rate_limit_violations_total{ip!="other"}[1m]))>50"#,
        "cliproxy_audit_healthy==0",
    ] {
        assert!(compact.contains(expr), "{path} lacks `{expr}` (whitespace aside)");
    }
    // The same thresholds, read as the gateway's own rules, are what the seed documents.
    for (condition, window, metric, threshold) in [
        ("auth_failures > 100", "5m", AlertMetric::AuthFailures, 100),
        ("rate_limit_violations > 50", "1m", AlertMetric::RateLimitViolations, 50),
    ] {
        assert!(
            text.contains(condition) && text.contains(window),
            "{path}: the seed rule `{condition}` over {window}"
        );
        let c: Condition = condition.parse().unwrap();
        assert_eq!((c.metric, c.threshold), (metric, threshold));
    }
}
