//! The client address behind trusted proxies comes from `X-Forwarded-For` and `Forwarded`,
//! which any client can write: whatever their bytes, the answer must be the peer or an address
//! one of the headers names in canonical form, never a panic; and operator-written denylist entries parse or are
//! refused, never panic.
#![no_main]

use cliproxy_netguard::{FakeClock, IpFilter, SecurityConfig, canonical_ip, parse_network};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    if let Ok(text) = std::str::from_utf8(rest) {
        let _ = parse_network(text);
    }
    let trusted = ["127.0.0.0/8".parse().unwrap(), "10.0.0.0/8".parse().unwrap()];
    let filter = IpFilter::new(&SecurityConfig::default(), &trusted, FakeClock::at_unix(0));
    let mut headers = http::HeaderMap::new();
    let name = if control & 1 == 0 { "x-forwarded-for" } else { "forwarded" };
    for piece in rest.split(|b| *b == b'\n') {
        if let Ok(value) = http::HeaderValue::from_bytes(piece) {
            headers.append(name, value);
        }
    }
    let peer: IpAddr = if control & 2 == 0 {
        "127.0.0.1".parse().unwrap()
    } else {
        "::ffff:10.1.2.3".parse().unwrap()
    };
    let client = filter.client_ip(peer, &headers);
    // Deterministic, and never an IPv4-mapped address (rules compare canonical forms).
    assert_eq!(client, filter.client_ip(peer, &headers));
    assert_eq!(client, canonical_ip(client));
    let _ = filter.check(client);
});
