//! Alert rules: sliding-window counts of a metric, per client for `block_ip`.
//!
//! A rule fires when more than `threshold` events of its metric fall within the last
//! `duration`. `block_ip` rules keep one window per client (events without an address are not
//! theirs to count); `notify_admin` rules keep one window for all addresses. A client is an
//! IPv4 address (IPv4-mapped IPv6 included) or an IPv6 /64, as for the rate limiter, so that
//! rotating through the addresses of one /64 does not escape the rule. A window holds the times
//! of its events, at most `threshold + 1` of them.
//!
//! Cooldown: once a rule fired for a key, it does not fire again for that key until `duration`
//! has passed since the firing; the key's events in the meantime are counted as suppressed and
//! reported with its next firing ([`Fired::suppressed`]). A flood therefore fires once per
//! `duration`, not once per `threshold + 1` events. When a key's window is dropped (its last
//! event left the window, or it was evicted), a suppressed count not yet reported goes with it.
//!
//! Memory is bounded: a rule keeps at most [`MAX_KEYS`] windows (fewer for very high
//! thresholds, see [`TIMESTAMP_BUDGET`]); when full, the window seen least recently is dropped,
//! and windows whose last event has left the window are dropped on the way.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::config::{AlertAction, AlertMetric, AlertRule};

/// Most windows (addresses) one `block_ip` rule keeps.
pub(crate) const MAX_KEYS: usize = 10_000;

/// Most event times one rule keeps over all its windows (8 bytes each): a rule with a very
/// high threshold keeps fewer addresses rather than more memory.
pub(crate) const TIMESTAMP_BUDGET: u64 = 1 << 21;

/// A rule that fired, for the caller to act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// The rule's name.
    pub rule: String,
    /// What to do.
    pub action: AlertAction,
    /// The offending client, as a network address with [`Fired::prefix_len`]: an IPv4
    /// address (IPv4-mapped IPv6 addresses are given as IPv4), or for IPv6 the /64 network
    /// address (the address with its last 64 bits zeroed; the window counted every address of
    /// that /64). Always set for `block_ip`, which should block `ip/prefix_len`; for
    /// `notify_admin`, the client of the event that tipped the count over, when it had an
    /// address.
    pub ip: Option<IpAddr>,
    /// The prefix length of `ip`: 32 for IPv4, 64 for IPv6; 0 when `ip` is `None`.
    pub prefix_len: u8,
    /// Events counted within the window when it fired (at most `threshold + 1`).
    pub count: u64,
    /// Events of this key that came during the cooldown after the rule's previous firing for
    /// it (`duration` from that firing) and so did not fire it again.
    pub suppressed: u64,
    /// The rule's window.
    pub window: Duration,
    /// `block_ip`: how long to block.
    pub block_for: Duration,
    /// `notify_admin`: the webhook URL and its timeout.
    pub webhook: Option<(String, Duration)>,
}

/// The alert rules and their windows. Thread-safe: one short critical section per
/// [`Alerts::observe`].
pub struct Alerts {
    rules: Mutex<Vec<RuleState>>,
}

impl std::fmt::Debug for Alerts {
    // The rules and how many windows each holds, not the windows (up to 10,000 addresses).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_map().entries(rules.iter().map(|r| (&r.rule.name, r.windows.len()))).finish()
    }
}

impl Alerts {
    /// The rules, with empty windows.
    pub fn new(rules: Vec<AlertRule>) -> Self {
        Self { rules: Mutex::new(rules.into_iter().map(RuleState::new).collect()) }
    }

    /// Swaps in reloaded rules. A rule with the same name, condition and action as an old one
    /// keeps its windows (a reload does not forgive a flood in progress); the windows of the
    /// other old rules are dropped.
    pub fn replace(&self, rules: Vec<AlertRule>) {
        let mut state = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        let mut old: Vec<Option<RuleState>> =
            std::mem::take(&mut *state).into_iter().map(Some).collect();
        *state = rules
            .into_iter()
            .map(|rule| {
                let same = old.iter_mut().find(|o| {
                    o.as_ref().is_some_and(|o| {
                        o.rule.name == rule.name
                            && o.rule.condition == rule.condition
                            && o.rule.action == rule.action
                    })
                });
                match same.and_then(Option::take) {
                    Some(mut kept) => {
                        kept.window_ms = window_ms(rule.duration);
                        kept.rule = rule;
                        kept
                    }
                    None => RuleState::new(rule),
                }
            })
            .collect();
    }

    /// Counts one event of `metric` from `ip` at `now_millis` (a monotonic clock) and returns
    /// the rules that fired on it.
    pub fn observe(&self, metric: AlertMetric, ip: Option<IpAddr>, now_millis: u64) -> Vec<Fired> {
        let client = ip.map(client_network);
        let mut fired = Vec::new();
        let mut rules = self.rules.lock().unwrap_or_else(PoisonError::into_inner);
        for state in rules.iter_mut().filter(|s| s.rule.condition.metric == metric) {
            let key = match (state.rule.action, client) {
                (AlertAction::BlockIp, None) => continue,
                (AlertAction::BlockIp, Some((network, _))) => Some(network),
                _ => None,
            };
            if let Some((count, suppressed)) = state.record(key, now_millis) {
                let rule = &state.rule;
                fired.push(Fired {
                    rule: rule.name.clone(),
                    action: rule.action,
                    ip: client.map(|(network, _)| network),
                    prefix_len: client.map_or(0, |(_, len)| len),
                    count,
                    suppressed,
                    window: rule.duration,
                    block_for: rule.block_for,
                    webhook: rule.webhook.clone().map(|url| (url, rule.webhook_timeout)),
                });
            }
        }
        fired
    }
}

/// The client an address counts as: an IPv4 address (IPv4-mapped IPv6 included) with prefix
/// length 32, or an IPv6 address's /64 network address with prefix length 64 (the block a
/// host is normally given; the rate limiter keys IPv6 clients the same way).
pub(crate) fn client_network(ip: IpAddr) -> (IpAddr, u8) {
    match ip.to_canonical() {
        IpAddr::V4(v4) => (IpAddr::V4(v4), 32),
        IpAddr::V6(v6) => (IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))), 64),
    }
}

/// One rule and its windows, keyed by client (see [`client_network`]; `None`: the one window
/// of a `notify_admin` rule).
#[derive(Debug)]
struct RuleState {
    rule: AlertRule,
    window_ms: u64,
    max_keys: usize,
    windows: HashMap<Option<IpAddr>, Window>,
    /// The keys by when they were last seen (a sequence number), oldest first.
    recency: BTreeMap<u64, Option<IpAddr>>,
    next_seq: u64,
}

#[derive(Debug)]
struct Window {
    /// Times of the events within the window, oldest first; never more than threshold + 1.
    times: VecDeque<u64>,
    /// The key's entry in `recency`.
    seq: u64,
    /// When the rule last fired for this key.
    fired_at: Option<u64>,
    /// Events since then that came within the cooldown.
    suppressed: u64,
}

impl RuleState {
    fn new(rule: AlertRule) -> Self {
        let max_keys = match rule.action {
            AlertAction::BlockIp => {
                let per_key = rule.condition.threshold.saturating_add(1);
                usize::try_from(TIMESTAMP_BUDGET / per_key).unwrap_or(MAX_KEYS).clamp(1, MAX_KEYS)
            }
            _ => 1,
        };
        Self {
            window_ms: window_ms(rule.duration),
            rule,
            max_keys,
            windows: HashMap::new(),
            recency: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Records an event for `key`; returns the count and the suppressed events when it fires
    /// the rule.
    fn record(&mut self, key: Option<IpAddr>, now: u64) -> Option<(u64, u64)> {
        self.drop_expired(now);
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Some(w) = self.windows.get_mut(&key) {
            self.recency.remove(&w.seq);
            w.seq = seq;
        } else {
            if self.windows.len() >= self.max_keys
                && let Some((_, oldest)) = self.recency.pop_first()
            {
                self.windows.remove(&oldest);
            }
            self.windows
                .insert(key, Window { times: VecDeque::new(), seq, fired_at: None, suppressed: 0 });
        }
        self.recency.insert(seq, key);

        let window_ms = self.window_ms;
        let threshold = self.rule.condition.threshold;
        let w = self.windows.get_mut(&key)?;
        while w.times.front().is_some_and(|&t| now.saturating_sub(t) >= window_ms) {
            w.times.pop_front();
        }
        w.times.push_back(now);
        // Past the threshold only the newest threshold + 1 matter (the count is over either
        // way); the window is not cleared when the rule fires, the cooldown holds it back.
        if w.times.len() as u64 > threshold.saturating_add(1) {
            w.times.pop_front();
        }
        if w.fired_at.is_some_and(|at| now.saturating_sub(at) < window_ms) {
            w.suppressed = w.suppressed.saturating_add(1);
            return None;
        }
        let count = w.times.len() as u64;
        if count > threshold {
            w.fired_at = Some(now);
            return Some((count, std::mem::take(&mut w.suppressed)));
        }
        None
    }

    /// Drops the least recently seen windows whose newest event is out of the window.
    fn drop_expired(&mut self, now: u64) {
        while let Some((&seq, key)) = self.recency.first_key_value() {
            let expired = self
                .windows
                .get(key)
                .and_then(|w| w.times.back())
                .is_none_or(|&last| now.saturating_sub(last) >= self.window_ms);
            if !expired {
                break;
            }
            if let Some(key) = self.recency.remove(&seq) {
                self.windows.remove(&key);
            }
        }
    }
}

fn window_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::config::Condition;

    fn rule(
        name: &str,
        metric: AlertMetric,
        threshold: u64,
        secs: u64,
        action: AlertAction,
    ) -> AlertRule {
        serde_json::from_value(serde_json::json!({
            "name": name,
            "condition": format!("{} > {threshold}", metric.as_str()),
            "duration": format!("{secs}s"),
            "action": match action { AlertAction::BlockIp => "block_ip", _ => "notify_admin" },
        }))
        .unwrap()
    }

    fn block50() -> AlertRule {
        rule(
            "Rate limit violations",
            AlertMetric::RateLimitViolations,
            50,
            60,
            AlertAction::BlockIp,
        )
    }

    fn ip(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
    }

    /// Feeds `n` events from `ip` at `start + i * step` ms; returns what fired.
    fn feed(
        a: &Alerts,
        metric: AlertMetric,
        ip: Option<IpAddr>,
        n: u64,
        start: u64,
        step: u64,
    ) -> Vec<Fired> {
        (0..n).flat_map(|i| a.observe(metric, ip, start + i * step)).collect()
    }

    fn keys(a: &Alerts) -> Vec<usize> {
        a.rules.lock().unwrap().iter().map(|r| r.windows.len()).collect()
    }

    #[test]
    fn fifty_one_violations_within_a_minute_from_one_ip_block_it_fifty_do_not() {
        let a = Alerts::new(vec![block50()]);
        let m = AlertMetric::RateLimitViolations;
        assert!(feed(&a, m, Some(ip(1)), 50, 0, 1000).is_empty(), "50 within 50 s must not fire");
        let fired = a.observe(m, Some(ip(1)), 59_000);
        assert_eq!(
            fired,
            vec![Fired {
                rule: "Rate limit violations".to_owned(),
                action: AlertAction::BlockIp,
                ip: Some(ip(1)),
                prefix_len: 32,
                count: 51,
                suppressed: 0,
                window: Duration::from_secs(60),
                block_for: Duration::from_secs(3600),
                webhook: None,
            }]
        );
    }

    #[test]
    fn fifty_one_spread_over_more_than_a_minute_do_not_fire() {
        let a = Alerts::new(vec![block50()]);
        // 51 events 1.2 s apart: the first and the last are exactly 60 s apart, so the first
        // has left the window when the last arrives.
        let fired = feed(&a, AlertMetric::RateLimitViolations, Some(ip(1)), 51, 0, 1200);
        assert!(fired.is_empty(), "{fired:?}");
        // One more within the minute of the other 50 fires.
        assert_eq!(a.observe(AlertMetric::RateLimitViolations, Some(ip(1)), 60_500).len(), 1);
    }

    #[test]
    fn block_ip_counts_per_address_and_ignores_events_without_one() {
        let a = Alerts::new(vec![block50()]);
        let m = AlertMetric::RateLimitViolations;
        assert!(feed(&a, m, Some(ip(1)), 26, 0, 10).is_empty());
        assert!(
            feed(&a, m, Some(ip(2)), 25, 0, 10).is_empty(),
            "51 from two addresses must not fire"
        );
        assert!(feed(&a, m, None, 100, 0, 10).is_empty(), "no address: not counted by block_ip");
        // Other metrics are not counted either.
        assert!(feed(&a, AlertMetric::AuthFailures, Some(ip(1)), 100, 0, 10).is_empty());
        // An IPv4-mapped IPv6 address is the same client as its IPv4 form.
        let mapped = IpAddr::V6(Ipv4Addr::from(0x0a00_0001).to_ipv6_mapped());
        let fired = feed(&a, m, Some(mapped), 25, 500, 1);
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].ip, fired[0].prefix_len), (Some(ip(1)), 32));
    }

    #[test]
    fn notify_admin_counts_across_addresses_and_reports_the_last_one() {
        let mut r = rule(
            "High auth failure rate",
            AlertMetric::AuthFailures,
            100,
            300,
            AlertAction::NotifyAdmin,
        );
        r.webhook = Some("https://hooks.example/alert".to_owned());
        let a = Alerts::new(vec![r]);
        let m = AlertMetric::AuthFailures;
        for i in 0..100 {
            let from = if i % 2 == 0 { Some(ip(i)) } else { None };
            assert!(a.observe(m, from, u64::from(i) * 100).is_empty());
        }
        let v6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 5, 1, 2, 3, 4));
        let fired = a.observe(m, Some(v6), 10_001);
        assert_eq!(fired.len(), 1);
        // An IPv6 client is reported as its /64.
        let net = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 5, 0, 0, 0, 0));
        assert_eq!((fired[0].ip, fired[0].prefix_len, fired[0].count), (Some(net), 64, 101));
        assert_eq!(fired[0].action, AlertAction::NotifyAdmin);
        assert_eq!(
            fired[0].webhook,
            Some(("https://hooks.example/alert".to_owned(), Duration::from_secs(5)))
        );
    }

    #[test]
    fn a_flood_fires_once_per_duration_and_reports_the_suppressed_events() {
        let a = Alerts::new(vec![block50()]);
        let m = AlertMetric::RateLimitViolations;
        // 600 violations 10 ms apart: the 51st (at 500 ms) fires; the 549 after it are within
        // a minute of that and fire nothing (before the cooldown: 11 firings).
        let fired = feed(&a, m, Some(ip(1)), 600, 0, 10);
        assert_eq!(fired.len(), 1, "{fired:?}");
        assert_eq!((fired[0].count, fired[0].suppressed), (51, 0));
        {
            let rules = a.rules.lock().unwrap();
            assert!(rules[0].windows.values().all(|w| w.times.len() <= 51), "bounded");
        }
        // Another address is not held back by the first one's cooldown.
        assert_eq!(feed(&a, m, Some(ip(2)), 51, 1000, 1).len(), 1);
        // Up to a minute after the firing: still suppressed.
        assert!(a.observe(m, Some(ip(1)), 60_499).is_empty());
        // A minute after it: fires again (more than 50 within the last minute), reporting the
        // 550 events of the cooldown.
        let fired = a.observe(m, Some(ip(1)), 60_500);
        assert_eq!(fired.len(), 1);
        assert_eq!((fired[0].ip, fired[0].count, fired[0].suppressed), (Some(ip(1)), 51, 550));
        // And the next cooldown starts from there.
        assert!(feed(&a, m, Some(ip(1)), 100, 60_501, 1).is_empty());
        let fired = a.observe(m, Some(ip(1)), 120_500);
        assert_eq!((fired.len(), fired[0].suppressed), (1, 100));
    }

    #[test]
    fn after_the_cooldown_a_quiet_key_needs_more_than_the_threshold_again() {
        let a = Alerts::new(vec![block50()]);
        let m = AlertMetric::RateLimitViolations;
        assert_eq!(feed(&a, m, Some(ip(1)), 51, 0, 1).len(), 1);
        assert!(feed(&a, m, Some(ip(1)), 3, 100, 1).is_empty(), "cooldown");
        // Two minutes later the old events have left the window: 50 do not fire, 51 do, and
        // the three suppressed events went with the expired window.
        assert!(feed(&a, m, Some(ip(1)), 50, 120_000, 1).is_empty());
        let fired = a.observe(m, Some(ip(1)), 120_050);
        assert_eq!((fired.len(), fired[0].count, fired[0].suppressed), (1, 51, 0));
    }

    #[test]
    fn six_hundred_bad_keys_notify_once_per_window_not_two_hundred_times() {
        let mut r = rule("auth", AlertMetric::AuthFailures, 2, 60, AlertAction::NotifyAdmin);
        r.webhook = Some("https://hooks.example/alert".to_owned());
        let a = Alerts::new(vec![r]);
        let fired = feed(&a, AlertMetric::AuthFailures, Some(ip(7)), 600, 0, 50);
        assert_eq!(fired.len(), 1, "one webhook call for the first minute, not 200");
        assert_eq!((fired[0].count, fired[0].suppressed), (3, 0));
        // 30 s of flood after the firing at 100 ms: 597 events, then the next one a minute
        // after the firing fires with all of them.
        let fired = a.observe(AlertMetric::AuthFailures, None, 60_100);
        assert_eq!((fired.len(), fired[0].suppressed, fired[0].ip), (1, 597, None));
        assert_eq!(fired[0].prefix_len, 0);
    }

    #[test]
    fn a_threshold_of_zero_fires_on_the_first_event_then_once_per_duration() {
        let a = Alerts::new(vec![rule(
            "any",
            AlertMetric::SecurityEvents,
            0,
            60,
            AlertAction::NotifyAdmin,
        )]);
        assert_eq!(feed(&a, AlertMetric::SecurityEvents, None, 3, 0, 1).len(), 1);
        let fired = a.observe(AlertMetric::SecurityEvents, None, 60_000);
        assert_eq!((fired.len(), fired[0].count, fired[0].suppressed), (1, 1, 2));
    }

    #[test]
    fn ipv6_clients_count_per_64_and_are_reported_as_the_64() {
        let a = Alerts::new(vec![block50()]);
        let m = AlertMetric::RateLimitViolations;
        let v6 = |net: u16, host: u16| {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 7, net, 0x1234, 0, host, 1))
        };
        // 51 addresses of one /64, one event each: the /64 is one client.
        let fired: Vec<Fired> = (0..51).flat_map(|i| a.observe(m, Some(v6(9, i)), 10)).collect();
        assert_eq!(fired.len(), 1, "rotating inside one /64 must not escape block_ip");
        let net: IpAddr = "2001:db8:7:9::".parse().unwrap();
        assert_eq!((fired[0].ip, fired[0].prefix_len), (Some(net), 64));
        // 51 addresses in 51 different /64s: 51 clients, none over the threshold.
        let fired: Vec<Fired> = (100..151).flat_map(|i| a.observe(m, Some(v6(i, 1)), 20)).collect();
        assert!(fired.is_empty(), "{fired:?}");
        assert_eq!(keys(&a), vec![52]);
        // IPv4 and IPv4-mapped IPv6 are keyed by the address.
        assert_eq!(client_network(ip(3)), (ip(3), 32));
        let mapped = IpAddr::V6(Ipv4Addr::from(0x0a00_0003).to_ipv6_mapped());
        assert_eq!(client_network(mapped), (ip(3), 32));
        assert_eq!(client_network(v6(1, 2)), ("2001:db8:7:1::".parse().unwrap(), 64));
    }

    #[test]
    fn a_spray_of_a_million_addresses_keeps_memory_at_the_cap() {
        let a = Alerts::new(vec![
            block50(),
            rule("auth", AlertMetric::RateLimitViolations, 1000, 60, AlertAction::NotifyAdmin),
        ]);
        let m = AlertMetric::RateLimitViolations;
        let mut fired = 0;
        for n in 0..1_000_000u32 {
            // All within one minute: nothing expires, so only the cap bounds the windows.
            fired += a.observe(m, Some(ip(n)), u64::from(n / 20)).len();
        }
        assert_eq!(keys(&a), vec![MAX_KEYS, 1]);
        // The notify_admin rule fired once (the spray lasts 50 s, within its cooldown); no
        // address reached 51.
        assert_eq!(fired, 1);
        {
            let rules = a.rules.lock().unwrap();
            assert_eq!(rules[0].recency.len(), MAX_KEYS);
            assert!(rules.iter().all(|r| {
                r.windows.values().all(|w| w.times.len() as u64 <= r.rule.condition.threshold + 1)
            }));
            // The least recently seen were evicted: the newest address is still there.
            assert!(rules[0].windows.contains_key(&Some(ip(999_999))));
            assert!(!rules[0].windows.contains_key(&Some(ip(0))));
        }
        // Once the minute is over, the windows are dropped as events come.
        a.observe(m, Some(ip(1)), 10_000_000);
        assert_eq!(keys(&a), vec![1, 1]);
    }

    #[test]
    fn a_very_high_threshold_keeps_fewer_addresses() {
        let a = Alerts::new(vec![rule(
            "big",
            AlertMetric::AuthFailures,
            999_999,
            60,
            AlertAction::BlockIp,
        )]);
        let cap = a.rules.lock().unwrap()[0].max_keys;
        assert_eq!(cap, usize::try_from(TIMESTAMP_BUDGET / 1_000_000).unwrap());
        for n in 0..100 {
            a.observe(AlertMetric::AuthFailures, Some(ip(n)), 0);
        }
        assert_eq!(keys(&a), vec![cap]);
    }

    #[test]
    fn replace_keeps_windows_of_unchanged_rules_and_drops_the_others() {
        let auth = rule("auth", AlertMetric::AuthFailures, 10, 60, AlertAction::NotifyAdmin);
        let a = Alerts::new(vec![block50(), auth.clone()]);
        assert!(feed(&a, AlertMetric::RateLimitViolations, Some(ip(1)), 50, 0, 1).is_empty());
        assert!(feed(&a, AlertMetric::AuthFailures, None, 10, 0, 1).is_empty());

        // The block rule is unchanged apart from its block time; the auth rule's threshold
        // changed; a new rule appears.
        let mut block = block50();
        block.block_for = Duration::from_secs(60);
        let mut auth11 = auth;
        auth11.condition = Condition { metric: AlertMetric::AuthFailures, threshold: 11 };
        let new = rule("new", AlertMetric::SecurityEvents, 5, 60, AlertAction::NotifyAdmin);
        a.replace(vec![new, auth11, block]);

        let fired = a.observe(AlertMetric::RateLimitViolations, Some(ip(1)), 100);
        assert_eq!(fired.len(), 1, "the kept window had 50 events");
        assert_eq!(fired[0].block_for, Duration::from_secs(60), "the new settings apply");
        assert!(
            feed(&a, AlertMetric::AuthFailures, None, 11, 100, 1).is_empty(),
            "the changed rule starts from an empty window"
        );
        assert_eq!(a.observe(AlertMetric::AuthFailures, None, 200).len(), 1);

        // A rule that disappears takes its windows with it.
        a.replace(vec![]);
        assert!(keys(&a).is_empty());
        assert!(feed(&a, AlertMetric::RateLimitViolations, Some(ip(1)), 100, 300, 1).is_empty());
    }
}
