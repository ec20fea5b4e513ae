//! Which addresses may talk to the gateway, and who the client is behind a trusted proxy.
//!
//! Order of the checks, as SPEC §2 gives it: the static denylist and the runtime denylist
//! first (a denied range inside an allowed one stays denied), then the allowlist. Every
//! address is compared in canonical form, so an IPv4-mapped IPv6 peer (`::ffff:10.0.0.1`, what
//! a dual-stack listener reports for IPv4 clients) matches IPv4 rules.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderMap;
use ipnetwork::IpNetwork;

use crate::clock::Clock;
use crate::config::{ForwardedHeader, SecurityConfig};
use crate::types::{DenyEntry, canonical_ip, canonical_network};

/// The answer of the IP filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The address may proceed.
    Allow,
    /// The address is refused, and why.
    Deny(DenyReason),
}

/// Why an address was refused (for the log and the audit event; never sent to the client,
/// which learns nothing about the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// In the static denylist.
    Denylisted(IpNetwork),
    /// In the runtime denylist ([`IpFilter::deny`]: a management API or an alert rule).
    RuntimeDenied {
        /// The matching entry's range.
        network: IpNetwork,
        /// The reason given when it was added.
        reason: String,
    },
    /// Not in the allowlist.
    NotAllowlisted,
}

impl DenyReason {
    /// The list that refused the address, in this library's terms (`denylist`,
    /// `runtime denylist`, `allowlist`); a caller names its own setting instead with
    /// [`DenyReason::describe`].
    pub fn rule(&self) -> &'static str {
        match self {
            Self::Denylisted(_) => "denylist",
            Self::RuntimeDenied { .. } => "runtime denylist",
            Self::NotAllowlisted => "allowlist",
        }
    }

    /// The text of the reason with `rule` — where the list is set, such as a config key —
    /// in place of [`DenyReason::rule`]: `in 10.1.0.0/16 of {rule}`, `in 10.1.0.0/16 of the
    /// {rule} (why it was added)`, `not in {rule}`.
    pub fn describe(&self, rule: &str) -> String {
        match self {
            Self::Denylisted(network) => format!("in {network} of {rule}"),
            Self::RuntimeDenied { network, reason } => {
                format!("in {network} of the {rule} ({reason})")
            }
            Self::NotAllowlisted => format!("not in {rule}"),
        }
    }
}

impl std::fmt::Display for DenyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // The runtime list's text already says "the"; the static lists get it here.
            Self::RuntimeDenied { .. } => f.write_str(&self.describe(self.rule())),
            _ => f.write_str(&self.describe(&format!("the {}", self.rule()))),
        }
    }
}

/// The IP filter: static lists from the config, the runtime denylist, and the trusted proxies.
#[derive(Debug)]
pub struct IpFilter {
    denied: Vec<IpNetwork>,
    allow: Option<Vec<IpNetwork>>,
    trusted: Vec<IpNetwork>,
    header: ForwardedHeader,
    /// Read without a lock by every check.
    runtime: ArcSwap<RuntimeList>,
    /// Serialises the read-modify-write of `update` (management API, alert rules, the purge),
    /// so two changes never start from the same list and one is lost. Checks never take it.
    writer: Mutex<()>,
    clock: Arc<dyn Clock>,
}

/// The runtime denylist: single addresses in a map (an alert rule may add many), ranges in a
/// short list. Replaced whole on every change, so readers never wait on a writer.
#[derive(Debug, Default, Clone)]
struct RuntimeList {
    hosts: HashMap<IpAddr, DenyEntry>,
    ranges: Vec<DenyEntry>,
}

impl RuntimeList {
    fn find(&self, ip: IpAddr, now: u64) -> Option<&DenyEntry> {
        if let Some(entry) = self.hosts.get(&ip).filter(|e| e.is_active(now)) {
            return Some(entry);
        }
        self.ranges.iter().find(|e| e.is_active(now) && e.network.contains(ip))
    }

    fn insert(&mut self, entry: DenyEntry) -> bool {
        if is_host(entry.network) {
            self.hosts.insert(entry.network.ip(), entry).is_some()
        } else if let Some(existing) = self.ranges.iter_mut().find(|e| e.network == entry.network) {
            *existing = entry;
            true
        } else {
            self.ranges.push(entry);
            false
        }
    }

    fn remove(&mut self, network: IpNetwork) -> bool {
        if is_host(network) {
            self.hosts.remove(&network.ip()).is_some()
        } else {
            let before = self.ranges.len();
            self.ranges.retain(|e| e.network != network);
            before != self.ranges.len()
        }
    }
}

fn is_host(network: IpNetwork) -> bool {
    match network {
        IpNetwork::V4(n) => n.prefix() == 32,
        IpNetwork::V6(n) => n.prefix() == 128,
    }
}

impl IpFilter {
    /// Builds the filter from a [`SecurityConfig`] (its allow and deny lists) and the trusted
    /// proxies, as [`IpFilter::from_lists`] does.
    pub fn new(security: &SecurityConfig, trusted: &[IpNetwork], clock: Arc<dyn Clock>) -> Self {
        let denied: &[IpNetwork] =
            if security.ip_denylist.enabled { &security.ip_denylist.denied_ips } else { &[] };
        let allowlist = &security.ip_allowlist;
        // An enabled allowlist restricts when it has entries or when `deny_all` says so; an
        // enabled, empty one without `deny_all` admits everyone, as the seed describes.
        let allowed = (allowlist.enabled
            && (allowlist.deny_all || !allowlist.allowed_ips.is_empty()))
        .then_some(allowlist.allowed_ips.as_slice());
        Self::from_lists(denied, allowed, trusted, clock)
    }

    /// Builds the filter from plain lists: `denied` is refused; when `allowed` is `Some`, only
    /// the addresses in it are admitted (`Some(&[])` admits nobody), and `None` admits every
    /// address not denied. `trusted` are the proxies whose forwarding header is believed by
    /// [`IpFilter::client_ip`].
    pub fn from_lists(
        denied: &[IpNetwork],
        allowed: Option<&[IpNetwork]>,
        trusted: &[IpNetwork],
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            denied: denied.iter().copied().map(canonical_network).collect(),
            allow: allowed.map(|list| list.iter().copied().map(canonical_network).collect()),
            trusted: trusted.iter().copied().map(canonical_network).collect(),
            header: ForwardedHeader::default(),
            runtime: ArcSwap::from_pointee(RuntimeList::default()),
            writer: Mutex::new(()),
            clock,
        }
    }

    /// Reads the client from `header` instead of `X-Forwarded-For` (`server.forwarded_header`).
    pub fn with_forwarded_header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Checks one address: denylists first, then the allowlist.
    pub fn check(&self, ip: IpAddr) -> Verdict {
        let ip = canonical_ip(ip);
        if let Some(network) = self.denied.iter().find(|n| n.contains(ip)) {
            return Verdict::Deny(DenyReason::Denylisted(*network));
        }
        let runtime = self.snapshot();
        if let Some(entry) = runtime.find(ip, self.clock.unix_seconds()) {
            return Verdict::Deny(DenyReason::RuntimeDenied {
                network: entry.network,
                reason: entry.reason.clone(),
            });
        }
        match &self.allow {
            Some(allowed) if !allowed.iter().any(|n| n.contains(ip)) => {
                Verdict::Deny(DenyReason::NotAllowlisted)
            }
            _ => Verdict::Allow,
        }
    }

    /// Whether `peer` is one of `server.trusted_proxies`.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        let peer = canonical_ip(peer);
        self.trusted.iter().any(|n| n.contains(peer))
    }

    /// The client's address: the TCP peer, or — only when the peer is a trusted proxy — the
    /// right-most address in the configured header (`X-Forwarded-For` by default, or
    /// `Forwarded`) that is not itself a trusted proxy; the other header is never read. Headers from untrusted peers are ignored: anyone can write one.
    ///
    /// When every listed hop is trusted, the left-most is the client. An entry that is not an
    /// address (garbage, `unknown`, an obfuscated identifier) ends the walk: the hop that
    /// reported it — the last trusted address seen — is the client, so a forged entry can
    /// never be believed beyond a trusted hop.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical_ip(peer);
        if !self.is_trusted_proxy(peer) {
            return peer;
        }
        let hops = forwarded_hops(headers, self.header);
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop {
                Some(ip) => {
                    let ip = canonical_ip(*ip);
                    client = ip;
                    if !self.is_trusted_proxy(ip) {
                        return ip;
                    }
                }
                None => return client,
            }
        }
        client
    }

    /// Adds or replaces a runtime denylist entry; effective for the next check. Returns
    /// whether an entry for the same range was replaced.
    pub fn deny(&self, mut entry: DenyEntry) -> bool {
        entry.network = canonical_network(entry.network);
        self.update(|list| list.insert(entry))
    }

    /// Removes the runtime entry for exactly `network`; returns whether there was one.
    pub fn undeny(&self, network: IpNetwork) -> bool {
        let network = canonical_network(network);
        self.update(|list| list.remove(network))
    }

    /// The runtime entries still in force, ranges and hosts, sorted by range.
    pub fn runtime_denylist(&self) -> Vec<DenyEntry> {
        let now = self.clock.unix_seconds();
        let list = self.snapshot();
        let mut entries: Vec<DenyEntry> = list
            .hosts
            .values()
            .chain(list.ranges.iter())
            .filter(|e| e.is_active(now))
            .cloned()
            .collect();
        entries.sort_by_key(|e| (e.network.ip(), e.network.prefix()));
        entries
    }

    /// Drops expired runtime entries; returns the ranges dropped (for the state store).
    pub fn purge_expired(&self) -> Vec<IpNetwork> {
        let now = self.clock.unix_seconds();
        let mut gone = Vec::new();
        self.update(|list| {
            list.hosts.retain(|_, e| {
                let keep = e.is_active(now);
                if !keep {
                    gone.push(e.network);
                }
                keep
            });
            list.ranges.retain(|e| {
                let keep = e.is_active(now);
                if !keep {
                    gone.push(e.network);
                }
                keep
            });
        });
        gone
    }

    fn snapshot(&self) -> Arc<RuntimeList> {
        self.runtime.load_full()
    }

    fn update<T>(&self, change: impl FnOnce(&mut RuntimeList) -> T) -> T {
        let _writer = match self.writer.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = RuntimeList::clone(&self.runtime.load());
        let result = change(&mut next);
        self.runtime.store(Arc::new(next));
        result
    }
}

/// Parses a denylist entry as written by an operator: an address or a CIDR range.
pub fn parse_network(text: &str) -> Option<IpNetwork> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(IpNetwork::from(ip));
    }
    let network: IpNetwork = text.parse().ok()?;
    // `10.0.0.1/8` is a typo more often than an intent: require the network address.
    (network.network() == network.ip()).then_some(network)
}

/// The hops listed by the configured header, every instance in order. `None` marks an entry
/// that is not an address.
fn forwarded_hops(headers: &HeaderMap, header: ForwardedHeader) -> Vec<Option<IpAddr>> {
    /// More hops than any real chain of proxies has; beyond it the header is hostile.
    const MAX_HOPS: usize = 64;
    let mut hops = Vec::new();
    match header {
        ForwardedHeader::XForwardedFor => {
            for value in headers.get_all("x-forwarded-for") {
                let Ok(text) = value.to_str() else {
                    hops.push(None);
                    continue;
                };
                hops.extend(text.split(',').map(|part| parse_hop(part.trim())));
            }
        }
        ForwardedHeader::Forwarded => {
            for value in headers.get_all(http::header::FORWARDED) {
                let Ok(text) = value.to_str() else {
                    hops.push(None);
                    continue;
                };
                for element in text.split(',') {
                    let node = element.split(';').find_map(|pair| {
                        let (key, value) = pair.trim().split_once('=')?;
                        key.trim().eq_ignore_ascii_case("for").then_some(value.trim())
                    });
                    // An element without `for=` says nothing about the client: it still
                    // counts as a hop we cannot read.
                    hops.push(node.and_then(|n| parse_hop(n.trim_matches('"'))));
                }
            }
        }
    }
    if hops.len() > MAX_HOPS {
        // Only the right-most hops can have been written by our proxies; keep those and mark
        // the cut so the walk stops there.
        let cut = hops.len() - MAX_HOPS;
        hops.drain(..cut);
        hops.insert(0, None);
    }
    hops
}

/// One hop: `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1`, `[2001:db8::1]:4711`. A zone id
/// (`fe80::1%eth0`) is not an address a remote client can have, so it is refused.
fn parse_hop(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, _port) = rest.split_once(']')?;
        return inner.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6);
    }
    let (host, port) = text.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::config::{IpAllowlistConfig, IpDenylistConfig};
    use std::time::Duration;

    fn nets(list: &[&str]) -> Vec<IpNetwork> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn filter(allow: &[&str], deny_all: bool, deny: &[&str], trusted: &[&str]) -> IpFilter {
        let security = SecurityConfig {
            ip_allowlist: IpAllowlistConfig {
                enabled: !allow.is_empty() || deny_all,
                allowed_ips: nets(allow),
                deny_all,
            },
            ip_denylist: IpDenylistConfig { enabled: true, denied_ips: nets(deny) },
            ..Default::default()
        };
        IpFilter::new(&security, &nets(trusted), FakeClock::at_unix(1_000))
    }

    #[test]
    fn plain_lists_filter_as_the_config_section_does() {
        let clock = FakeClock::at_unix(1_000);
        let (allow, deny) = (nets(&["10.0.0.0/8"]), nets(&["10.1.0.0/16"]));
        let plain = IpFilter::from_lists(&deny, Some(&allow), &[], clock.clone());
        let section = filter(&["10.0.0.0/8"], false, &["10.1.0.0/16"], &[]);
        for peer in ["10.2.3.4", "10.1.3.4", "192.0.2.1", "::ffff:10.1.0.1"] {
            assert_eq!(plain.check(ip(peer)), section.check(ip(peer)), "{peer}");
        }
        // No allowlist admits every address not denied; an empty one admits nobody.
        let open = IpFilter::from_lists(&deny, None, &[], clock.clone());
        assert_eq!(open.check(ip("192.0.2.1")), Verdict::Allow);
        assert!(matches!(open.check(ip("10.1.0.1")), Verdict::Deny(DenyReason::Denylisted(_))));
        let closed = IpFilter::from_lists(&[], Some(&[]), &[], clock.clone());
        assert_eq!(closed.check(ip("192.0.2.1")), Verdict::Deny(DenyReason::NotAllowlisted));
        // A disabled denylist section denies nothing, whatever it lists.
        let mut security = SecurityConfig::default();
        security.ip_denylist.denied_ips = deny;
        let disabled = IpFilter::new(&security, &[], clock);
        assert_eq!(disabled.check(ip("10.1.0.1")), Verdict::Allow);
    }

    #[test]
    fn reasons_say_which_list_and_a_caller_can_name_its_own() {
        let f = filter(&["10.0.0.0/8"], false, &["10.1.0.0/16"], &[]);
        let Verdict::Deny(denied) = f.check(ip("10.1.3.4")) else { panic!("admitted") };
        assert_eq!(denied.to_string(), "in 10.1.0.0/16 of the denylist");
        assert_eq!(denied.describe("lists.deny"), "in 10.1.0.0/16 of lists.deny");
        let Verdict::Deny(outside) = f.check(ip("192.0.2.1")) else { panic!("admitted") };
        assert_eq!(outside.to_string(), "not in the allowlist");
    }

    #[test]
    fn denylist_wins_over_allowlist_and_allowlist_restricts() {
        let f = filter(&["10.0.0.0/8"], false, &["10.1.0.0/16"], &[]);
        assert_eq!(f.check(ip("10.2.3.4")), Verdict::Allow);
        assert!(matches!(f.check(ip("10.1.3.4")), Verdict::Deny(DenyReason::Denylisted(_))));
        assert_eq!(f.check(ip("192.0.2.1")), Verdict::Deny(DenyReason::NotAllowlisted));
    }

    #[test]
    fn ipv4_mapped_peers_match_ipv4_rules_and_mapped_rules_match_ipv4_peers() {
        let f = filter(&["127.0.0.1"], true, &["::ffff:192.0.2.0/120"], &[]);
        assert_eq!(f.check(ip("::ffff:127.0.0.1")), Verdict::Allow);
        assert_eq!(f.check(ip("::ffff:127.0.0.2")), Verdict::Deny(DenyReason::NotAllowlisted));
        assert!(matches!(f.check(ip("192.0.2.9")), Verdict::Deny(DenyReason::Denylisted(_))));
    }

    #[test]
    fn deny_all_with_an_empty_allowlist_refuses_everyone_and_ipv6_rules_apply() {
        let f = filter(&[], true, &[], &[]);
        assert_eq!(f.check(ip("::1")), Verdict::Deny(DenyReason::NotAllowlisted));
        let f = filter(&["2001:db8::/32"], true, &[], &[]);
        assert_eq!(f.check(ip("2001:db8::5")), Verdict::Allow);
        assert_eq!(f.check(ip("2001:db9::5")), Verdict::Deny(DenyReason::NotAllowlisted));
        let open = filter(&[], false, &[], &[]);
        assert_eq!(open.check(ip("203.0.113.1")), Verdict::Allow);
    }

    #[test]
    fn runtime_entries_apply_at_once_expire_and_can_be_removed() {
        let clock = FakeClock::at_unix(1_000);
        let f = IpFilter::new(&SecurityConfig::default(), &[], clock.clone());
        let entry = |net: &str, ttl: Option<u64>| DenyEntry {
            network: net.parse().unwrap(),
            reason: "abuse".to_owned(),
            created_at: 1_000,
            expires_at: ttl.map(|t| 1_000 + t),
        };
        assert!(!f.deny(entry("198.51.100.7/32", Some(60))));
        assert!(!f.deny(entry("203.0.113.0/24", None)));
        assert!(matches!(
            f.check(ip("198.51.100.7")),
            Verdict::Deny(DenyReason::RuntimeDenied { .. })
        ));
        assert!(matches!(f.check(ip("::ffff:203.0.113.9")), Verdict::Deny(_)));
        assert_eq!(f.runtime_denylist().len(), 2);
        clock.advance(Duration::from_secs(60));
        assert_eq!(f.check(ip("198.51.100.7")), Verdict::Allow);
        assert_eq!(f.runtime_denylist().len(), 1);
        assert_eq!(f.purge_expired(), nets(&["198.51.100.7/32"]));
        assert!(f.undeny("203.0.113.0/24".parse().unwrap()));
        assert!(!f.undeny("203.0.113.0/24".parse().unwrap()));
        assert_eq!(f.check(ip("203.0.113.9")), Verdict::Allow);
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn forwarded_headers_from_untrusted_peers_are_ignored() {
        let f = filter(&[], false, &[], &["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(f.client_ip(ip("192.0.2.1"), &h), ip("192.0.2.1"));
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let f = filter(&[], false, &[], &["10.0.0.0/8"]);
        // The client forged "6.6.6.6"; the proxy appended the real address 203.0.113.5.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.5, 10.0.0.2")]);
        assert_eq!(f.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.5"));
        let h = headers(&[("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "203.0.113.5")]);
        assert_eq!(f.client_ip(ip("::ffff:10.0.0.1"), &h), ip("203.0.113.5"));
        // Every hop trusted: the left-most is the client.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(f.client_ip(ip("10.0.0.1"), &h), ip("10.9.9.9"));
        // No header: the proxy itself.
        assert_eq!(f.client_ip(ip("10.0.0.1"), &HeaderMap::new()), ip("10.0.0.1"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // Behind an X-Forwarded-For proxy, a client-written Forwarded is ignored, and the
        // other way round.
        let h = headers(&[("x-forwarded-for", "203.0.113.5"), ("forwarded", "for=6.6.6.6")]);
        let xff = filter(&[], false, &[], &["10.0.0.0/8"]);
        assert_eq!(xff.client_ip(ip("10.0.0.1"), &h), ip("203.0.113.5"));
        let fwd = filter(&[], false, &[], &["10.0.0.0/8"])
            .with_forwarded_header(ForwardedHeader::Forwarded);
        assert_eq!(fwd.client_ip(ip("10.0.0.1"), &h), ip("6.6.6.6"));
        let only_xff = headers(&[("x-forwarded-for", "6.6.6.6")]);
        assert_eq!(fwd.client_ip(ip("10.0.0.1"), &only_xff), ip("10.0.0.1"));
    }

    #[test]
    fn garbage_hops_stop_the_walk_at_the_hop_that_reported_them() {
        let f = filter(&[], false, &[], &["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, not-an-ip, 10.0.0.2")]);
        assert_eq!(f.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.2"));
        let h = headers(&[("x-forwarded-for", "fe80::1%eth0")]);
        assert_eq!(f.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
        let long = vec!["6.6.6.6"; 1000].join(",");
        let h = headers(&[("x-forwarded-for", &long)]);
        assert_eq!(f.client_ip(ip("10.0.0.1"), &h), ip("6.6.6.6"));
    }

    #[test]
    fn forwarded_header_forms_are_understood() {
        let f = filter(&[], false, &[], &["10.0.0.0/8"])
            .with_forwarded_header(ForwardedHeader::Forwarded);
        let h = headers(&[(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.3",
        )]);
        assert_eq!(f.client_ip(ip("10.0.0.1"), &h), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=198.51.100.17:8080;by=10.0.0.1")]);
        assert_eq!(f.client_ip(ip("10.0.0.1"), &h), ip("198.51.100.17"));
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(f.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn operator_networks_parse_strictly() {
        assert_eq!(parse_network("192.0.2.7"), Some("192.0.2.7/32".parse().unwrap()));
        assert_eq!(parse_network("2001:db8::/32"), Some("2001:db8::/32".parse().unwrap()));
        assert_eq!(parse_network("10.0.0.1/8"), None);
        assert_eq!(parse_network("10.0.0.0/33"), None);
        assert_eq!(parse_network("example.com"), None);
        assert_eq!(parse_network(""), None);
    }

    #[test]
    fn concurrent_denies_are_all_kept() {
        // Writers run a read-modify-write on the swapped list; without their lock two of them
        // would build on the same old list and one entry would be lost.
        let f = Arc::new(IpFilter::new(&SecurityConfig::default(), &[], FakeClock::at_unix(1_000)));
        let (threads, each) = (4u8, 200u8);
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let f = f.clone();
                std::thread::spawn(move || {
                    for i in 0..each {
                        f.deny(DenyEntry {
                            network: IpNetwork::from(IpAddr::from([10, t, 0, i])),
                            reason: "abuse".to_owned(),
                            created_at: 1_000,
                            expires_at: None,
                        });
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(f.runtime_denylist().len(), usize::from(threads) * usize::from(each));
    }
}
