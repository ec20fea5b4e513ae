//! The per-IP limiter's cost per check and its memory under an address spray.
//!
//! Run with `cargo bench -p cliproxy-netguard --bench limiter`. It prints a table and exits
//! with status 1 when the process grew by more than 64 MB during a spray of 1,000,000
//! distinct addresses, so that a broken memory cap fails loudly.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmark binary")]

use std::hint::black_box;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use cliproxy_netguard::{
    FakeClock, GlobalRateLimiter, IpRateLimiter, PerIpRateLimitConfig, SystemClock,
};

const SPRAY: u32 = 1_000_000;
const HOT_CHECKS: u32 = 2_000_000;
const RSS_GROWTH_LIMIT_KB: u64 = 64 * 1024;

fn main() {
    let rss_before = rss_kb();
    let config = PerIpRateLimitConfig::default();

    // The admitted path: a rate no single key can exhaust.
    let open = IpRateLimiter::new(
        NonZeroU32::MAX,
        NonZeroU32::MAX,
        config.max_tracked,
        SystemClock::shared(),
    );
    let hot: IpAddr = "192.0.2.1".parse().unwrap();
    let hot_admitted = per_check(HOT_CHECKS, |_| black_box(open.check(black_box(hot))).is_ok());

    // The refused path: the default 10/s with a burst of 20 is spent at once.
    let limiter = IpRateLimiter::new(
        config.requests_per_second,
        config.burst,
        config.max_tracked,
        SystemClock::shared(),
    );
    let hot_refused = per_check(HOT_CHECKS, |_| black_box(limiter.check(black_box(hot))).is_ok());

    let global = GlobalRateLimiter::new(
        NonZeroU32::new(1_000).unwrap(),
        NonZeroU32::new(2_000).unwrap(),
        SystemClock::shared(),
    );
    let global_cost = per_check(HOT_CHECKS, |_| black_box(global.check()).is_ok());

    // Half distinct IPv4 addresses, half distinct IPv6 /64s, each seen once.
    let spray_limiter = IpRateLimiter::new(
        config.requests_per_second,
        config.burst,
        config.max_tracked,
        SystemClock::shared(),
    );
    let spray = per_check(SPRAY, |n| black_box(spray_limiter.check(spray_address(n))).is_ok());
    let rss_after_spray = rss_kb();
    let tracked_after_spray = spray_limiter.len();

    // The worst case: a clock that does not move, so no bucket ever refills and every
    // address beyond the cap goes to the overflow bucket.
    let frozen = IpRateLimiter::new(
        config.requests_per_second,
        config.burst,
        config.max_tracked,
        FakeClock::at_unix(0),
    );
    let frozen_spray = per_check(SPRAY, |n| black_box(frozen.check(spray_address(n))).is_ok());
    let rss_after_frozen = rss_kb();
    let (frozen_tracked, frozen_capacity) = (frozen.len(), frozen.capacity());
    drop(frozen);

    // Every bucket is full again after one interval (100 ms at 10/s); the sweep drops them.
    std::thread::sleep(Duration::from_millis(150));
    let evicted = spray_limiter.evict_idle();
    let rss_after_eviction = rss_kb();

    // Growth is measured after the sprays, while both tables are alive and full.
    let growth = rss_after_frozen.saturating_sub(rss_before);
    println!("per-IP limiter (default: 10/s, burst 20, max_tracked {})", config.max_tracked);
    println!("{:<44} {:>12}", "measure", "value");
    println!("{:<44} {:>9.1} ns", "check, hot key, admitted", hot_admitted.0);
    println!("{:<44} {:>9.1} ns", "check, hot key, refused", hot_refused.0);
    println!("{:<44} {:>9.1} ns", "global check (one atomic)", global_cost.0);
    println!("{:<44} {:>9.1} ns", "check, spray of new addresses", spray.0);
    println!("{:<44} {:>12}", "spray: addresses sent", SPRAY);
    println!("{:<44} {:>12}", "spray: admitted", spray.1);
    println!("{:<44} {:>12}", "spray: tracked afterwards (len)", tracked_after_spray);
    println!("{:<44} {:>12}", "limiter capacity", spray_limiter.capacity());
    println!("{:<44} {:>9.1} ns", "check, spray, frozen clock (worst case)", frozen_spray.0);
    println!("{:<44} {:>12}", "frozen spray: admitted", frozen_spray.1);
    println!("{:<44} {:>12}", "frozen spray: tracked afterwards", frozen_tracked);
    println!("{:<44} {:>9} kB", "RSS before", rss_before);
    println!("{:<44} {:>9} kB", "RSS after the spray", rss_after_spray);
    println!("{:<44} {:>9} kB", "RSS after both sprays", rss_after_frozen);
    println!("{:<44} {:>12}", "evicted by evict_idle()", evicted);
    println!("{:<44} {:>12}", "tracked after eviction", spray_limiter.len());
    println!("{:<44} {:>9} kB", "RSS after eviction", rss_after_eviction);
    println!("{:<44} {:>9} kB", "RSS growth during the sprays", growth);

    if growth > RSS_GROWTH_LIMIT_KB
        || tracked_after_spray > spray_limiter.capacity()
        || frozen_tracked > frozen_capacity
    {
        eprintln!(
            "FAIL: the spray grew the process by {growth} kB (limit {RSS_GROWTH_LIMIT_KB} kB) \
             and left {tracked_after_spray} and {frozen_tracked} addresses tracked (capacity \
             {frozen_capacity}); the memory cap is broken"
        );
        std::process::exit(1);
    }
}

/// The `n`th address of the spray: even numbers are IPv4 addresses, odd numbers IPv6
/// addresses in distinct /64s.
fn spray_address(n: u32) -> IpAddr {
    if n.is_multiple_of(2) {
        IpAddr::from((0x0a00_0000 + n / 2).to_be_bytes())
    } else {
        let prefix = 0x2001_0db8_0000_0000_u64 | u64::from(n / 2);
        IpAddr::from((u128::from(prefix) << 64 | 1).to_be_bytes())
    }
}

/// Runs `check` `count` times; returns the mean nanoseconds per call and how many were
/// admitted.
fn per_check(count: u32, mut check: impl FnMut(u32) -> bool) -> (f64, u32) {
    let started = Instant::now();
    let mut admitted = 0;
    for n in 0..count {
        admitted += u32::from(check(n));
    }
    (started.elapsed().as_nanos() as f64 / f64::from(count), admitted)
}

/// The process's resident set in kB, from `/proc/self/status` (0 where that is missing).
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("VmRSS:")?.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}
