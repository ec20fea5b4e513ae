//! IP and CIDR lists: `server.security.ip_denylist.denied_ips`, `ip_allowlist.allowed_ips`,
//! `server.trusted_proxies` (config strings, via serde) and the runtime denylist API's `ip`
//! (`parse_network`): addresses, ranges, IPv4-mapped forms, zone ids, garbage. Whatever the
//! text, nothing panics, and whatever parses behaves like the range it names:
//!
//! - a parsed range contains its own network and broadcast addresses, prints to a text that
//!   parses back to the same range, and its canonical form is idempotent;
//! - denied at run time, its network address (and, for IPv4, the IPv4-mapped form of it) is
//!   refused; removed again (also by its IPv4-mapped spelling), it is allowed;
//! - in the config's denylist, its network address is refused; in the allowlist, admitted.
#![no_main]

use std::net::IpAddr;

use cliproxy_netguard::{
    DenyEntry, FakeClock, IpFilter, SecurityConfig, Verdict, canonical_ip, canonical_network,
    parse_network,
};
use libfuzzer_sys::fuzz_target;

fn mapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    }
}

fn filter(security: &SecurityConfig) -> IpFilter {
    IpFilter::new(security, &[], FakeClock::at_unix(1_000))
}

fn config(list: &str, text: &str) -> Option<SecurityConfig> {
    let section = if list == "denied_ips" { "ip_denylist" } else { "ip_allowlist" };
    let value = serde_json::json!({ section: { "enabled": true, list: [text] } });
    serde_json::from_value(value).ok()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for line in text.lines().take(8) {
        if let Ok(ip) = line.parse::<IpAddr>() {
            let canonical = canonical_ip(ip);
            assert_eq!(canonical_ip(canonical), canonical);
            assert_eq!(canonical_ip(mapped(canonical)), canonical);
        }
        if let Some(network) = parse_network(line) {
            let base = network.network();
            assert_eq!(network.ip(), base, "{line:?}: parsed with host bits set");
            assert!(network.contains(base) && network.contains(network.broadcast()), "{line:?}");
            assert_eq!(parse_network(&network.to_string()), Some(network), "{line:?}: round trip");
            let canonical = canonical_network(network);
            assert_eq!(canonical_network(canonical), canonical, "{line:?}");
            assert!(canonical.contains(canonical_ip(base)), "{line:?}: {canonical}");

            // The runtime denylist, as the management API feeds it.
            let runtime = filter(&SecurityConfig::default());
            let entry = DenyEntry {
                network,
                reason: "fuzz".to_owned(),
                created_at: 1_000,
                expires_at: None,
            };
            assert!(!runtime.deny(entry.clone()));
            assert!(matches!(runtime.check(base), Verdict::Deny(_)), "{line:?}");
            assert!(matches!(runtime.check(mapped(base)), Verdict::Deny(_)), "{line:?}");
            assert!(runtime.undeny(network), "{line:?}: not removed");
            assert!(matches!(runtime.check(base), Verdict::Allow), "{line:?}");
            if let IpAddr::V4(v4) = base {
                let spelled = format!("{}/{}", v4.to_ipv6_mapped(), network.prefix() + 96);
                let as_mapped = parse_network(&spelled).expect("the mapped spelling parses");
                runtime.deny(entry);
                assert!(runtime.undeny(as_mapped), "{line:?}: not removed as {spelled}");
                assert!(runtime.runtime_denylist().is_empty());
            }
        }
        // The config lists, which take any range (host bits included) through serde.
        if let Some(security) = config("denied_ips", line) {
            let network = security.ip_denylist.denied_ips[0];
            let denied = filter(&security);
            assert!(matches!(denied.check(network.network()), Verdict::Deny(_)), "{line:?}");
            // IPv4-mapped peers match IPv4 rules (and IPv6 rules in the mapped range, which
            // become IPv4 rules); an IPv6 range wider than that is an IPv6 rule.
            if canonical_network(network).is_ipv4() {
                assert!(matches!(denied.check(mapped(network.ip())), Verdict::Deny(_)), "{line:?}");
            }
        }
        if let Some(security) = config("allowed_ips", line) {
            let network = security.ip_allowlist.allowed_ips[0];
            let allowed = filter(&security);
            assert!(matches!(allowed.check(network.network()), Verdict::Allow), "{line:?}");
            if canonical_network(network).is_ipv4() {
                assert!(matches!(allowed.check(mapped(network.ip())), Verdict::Allow), "{line:?}");
            }
        }
    }
});
