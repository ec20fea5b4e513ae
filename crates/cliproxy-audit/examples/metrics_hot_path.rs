//! Measures what the request path pays for its metrics: the updates `Audit::emit` makes for
//! one proxied request (`security_event`, then `provider_request`: the status counter, both
//! histograms and the token counters), on one thread and
//! on several at once, and a rate-limit violation from a known and from a surplus address.
//!
//! `cargo run --release -p cliproxy-audit --example metrics_hot_path [ITERATIONS]`

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cliproxy_audit::{EventType, Metrics, MetricsConfig};

fn main() {
    let iterations: u64 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2_000_000);
    let mut config = MetricsConfig::default();
    config.max_ip_labels = NonZeroUsize::new(100).unwrap_or(NonZeroUsize::MIN);
    let providers = ["openai", "claude", "gemini", "demo"].map(str::to_owned);
    let metrics = Arc::new(Metrics::new(&config, providers));

    let per_request = |m: &Metrics, i: u64| {
        let status = if i.is_multiple_of(16) { 429 } else { 200 };
        m.security_event(EventType::ProviderRequest);
        m.provider_request(
            black_box("claude"),
            status,
            Duration::from_micros(1500 + i % 1000),
            Some(Duration::from_micros(1200 + i % 1000)),
            120,
            480,
        );
    };

    // Warm-up: registers the lazily created handles.
    for i in 0..10_000 {
        per_request(&metrics, i);
    }
    let start = Instant::now();
    for i in 0..iterations {
        per_request(&metrics, i);
    }
    report("per request, 1 thread", start.elapsed(), iterations);

    for threads in [4u64, 8] {
        let start = Instant::now();
        std::thread::scope(|s| {
            for t in 0..threads {
                let m = metrics.clone();
                s.spawn(move || {
                    for i in 0..iterations / threads {
                        per_request(&m, i + t);
                    }
                });
            }
        });
        // Wall time over all requests: the throughput cost per request with contention.
        report(
            &format!("per request, {threads} threads (wall / requests)"),
            start.elapsed(),
            iterations,
        );
    }

    let known = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7));
    metrics.rate_limit_violation(known);
    let start = Instant::now();
    for _ in 0..iterations {
        metrics.rate_limit_violation(black_box(known));
    }
    report("rate-limit violation, labelled address", start.elapsed(), iterations);
    for n in 0..200u32 {
        metrics.rate_limit_violation(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n)));
    }
    let start = Instant::now();
    for n in 0..iterations {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + (n as u32)));
        metrics.rate_limit_violation(black_box(ip));
    }
    report("rate-limit violation, address beyond the cap", start.elapsed(), iterations);

    let start = Instant::now();
    let text = metrics.render();
    println!("render: {} bytes in {:?}", text.len(), start.elapsed());
}

fn report(what: &str, elapsed: Duration, n: u64) {
    println!("{what:<48} {:>8.1} ns/op", elapsed.as_nanos() as f64 / n as f64);
}
