//! The rate limiters and quotas, driven by a fake clock: bursts, refills to the nanosecond,
//! `Retry-After`, address grouping, the memory cap, token reservations and quota periods.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::net::IpAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cliproxy_core::{Quota, QuotaPeriod, RateLimit};
use cliproxy_netguard::{
    FakeClock, GlobalRateLimitConfig, GlobalRateLimiter, IpRateLimiter, LimitKind, Limited,
    MinuteLimiter, PerIpRateLimitConfig, QuotaScope, QuotaUsage, Quotas, next_reset, period_start,
};

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn per_ip(rps: u32, burst: u32, max_tracked: usize, clock: &Arc<FakeClock>) -> IpRateLimiter {
    IpRateLimiter::new(nz(rps), nz(burst), NonZeroUsize::new(max_tracked).unwrap(), clock.clone())
}

// ---- per-IP and global token buckets ----

#[test]
fn per_ip_burst_then_refusal_then_refill_after_exactly_one_interval() {
    let clock = FakeClock::at_unix(1_700_000_000);
    let limiter = per_ip(10, 5, 1_000, &clock);
    let peer = ip("192.0.2.1");
    for left in (0..5).rev() {
        let admitted = limiter.check(peer).unwrap();
        assert_eq!((admitted.limit, admitted.remaining), (5, left));
    }
    let refused = limiter.check(peer).unwrap_err();
    assert_eq!(refused.kind, LimitKind::PerIp);
    assert_eq!((refused.limit, refused.remaining), (5, 0));
    assert_eq!(refused.retry_after, Duration::from_millis(100));
    assert_eq!(refused.reset_after, Duration::from_millis(500));
    assert_eq!((refused.retry_after_secs(), refused.reset_after_secs()), (1, 1));

    // One nanosecond short of the interval is still too early, and says how long is left.
    clock.advance(Duration::from_millis(100) - Duration::from_nanos(1));
    assert_eq!(limiter.check(peer).unwrap_err().retry_after, Duration::from_nanos(1));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(limiter.check(peer).unwrap().remaining, 0);
    assert!(limiter.check(peer).is_err());

    // After a whole burst's time, the full burst is back.
    clock.advance(Duration::from_millis(500));
    assert_eq!(limiter.check(peer).unwrap().remaining, 4);
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    let clock = FakeClock::at_unix(0);
    let limiter = per_ip(1, 1, 100, &clock);
    let peer = ip("198.51.100.7");
    limiter.check(peer).unwrap();
    clock.advance(Duration::from_millis(300));
    let refused = limiter.check(peer).unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_millis(700));
    assert_eq!(refused.retry_after_secs(), 1);

    // A rate below one per second gives a Retry-After of several seconds.
    let slow = MinuteLimiter::new(
        QuotaScope::Client,
        [("team".to_owned(), RateLimit::new(Some(nz(4)), None))],
        0,
        clock.clone(),
    );
    for _ in 0..4 {
        slow.reserve("team", None).unwrap().settle(0);
    }
    assert_eq!(slow.reserve("team", None).unwrap_err().retry_after_secs(), 15);
}

#[test]
fn ipv6_addresses_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() {
    let clock = FakeClock::at_unix(0);
    let limiter = per_ip(1, 2, 1_000, &clock);
    limiter.check(ip("2001:db8:aa:1::1")).unwrap();
    limiter.check(ip("2001:db8:aa:1:dead:beef:0:2")).unwrap();
    // A third address in the same /64 finds the bucket empty.
    assert!(limiter.check(ip("2001:db8:aa:1:ffff::3")).is_err());
    // The neighbouring /64 has its own bucket.
    assert_eq!(limiter.check(ip("2001:db8:aa:2::1")).unwrap().remaining, 1);

    limiter.check(ip("203.0.113.9")).unwrap();
    limiter.check(ip("::ffff:203.0.113.9")).unwrap();
    assert!(limiter.check(ip("203.0.113.9")).is_err());
    assert!(limiter.check(ip("::ffff:203.0.113.9")).is_err());
    assert_eq!(limiter.len(), 3);
}

#[test]
fn the_cap_holds_under_a_spray_and_new_addresses_share_one_strict_overflow_bucket() {
    let clock = FakeClock::at_unix(0);
    // 64 shards of one bucket each, so the arithmetic below is exact.
    let limiter = per_ip(1, 1, 64, &clock);
    assert_eq!(limiter.capacity(), 64);
    let victim = ip("192.0.2.200");
    limiter.check(victim).unwrap();

    let mut admitted = 0;
    for n in 0..20_000_u32 {
        let spray = IpAddr::from((0x0a00_0000 + n).to_be_bytes());
        admitted += usize::from(limiter.check(spray).is_ok());
    }
    assert_eq!(limiter.len(), 64);
    // Time has not moved: each of the 63 free slots admitted one new address, and the
    // overflow bucket admitted one more (its burst).
    assert_eq!(admitted, 63 + 1);
    // The tracked victim kept its own bucket: refused for its own use, with its own timing.
    let refused = limiter.check(victim).unwrap_err();
    assert_eq!((refused.kind, refused.retry_after), (LimitKind::PerIp, Duration::from_secs(1)));

    // A second spray of IPv6 /64s changes nothing about the cap.
    for n in 0..20_000_u64 {
        let spray = IpAddr::from((u128::from(n + 1) << 64 | 1).to_be_bytes());
        let _ = limiter.check(spray);
    }
    assert_eq!(limiter.len(), 64);
}

#[test]
fn idle_buckets_are_evicted_by_the_sweep_and_when_room_is_needed() {
    let clock = FakeClock::at_unix(0);
    // Addresses are spread over 64 shards by a randomly seeded hash: room for all 500 in
    // any one shard, so none of them lands in the overflow bucket whatever the seed.
    let limiter = per_ip(10, 2, 64 * 500, &clock);
    for n in 0..500_u32 {
        limiter.check(IpAddr::from((0xc000_0000 + n).to_be_bytes())).unwrap();
    }
    assert_eq!(limiter.len(), 500);
    // One request was taken from each: full again after one interval (100 ms), not before.
    clock.advance(Duration::from_millis(99));
    assert_eq!(limiter.evict_idle(), 0);
    clock.advance(Duration::from_millis(1));
    assert_eq!(limiter.evict_idle(), 500);
    assert!(limiter.is_empty());

    // With the table full and every bucket refilled, new addresses take the old ones' place
    // instead of the overflow bucket. 2,000 addresses leave a shard empty with odds below
    // 1 in 10^12, whatever the hash seed.
    let small = per_ip(10, 1, 64, &clock);
    for n in 0..2_000_u32 {
        let _ = small.check(IpAddr::from((0x0b00_0000 + n).to_be_bytes()));
    }
    assert_eq!(small.len(), 64);
    clock.advance(Duration::from_secs(1));
    let mut admitted = 0;
    for n in 0..2_000_u32 {
        admitted += usize::from(small.check(IpAddr::from((0x0c00_0000 + n).to_be_bytes())).is_ok());
    }
    assert_eq!(admitted, 64 + 1);
    assert_eq!(small.len(), 64);
}

#[test]
fn global_limiter_burst_refusal_and_refill() {
    let clock = FakeClock::at_unix(0);
    let global = GlobalRateLimiter::new(nz(4), nz(2), clock.clone());
    assert_eq!(global.check().unwrap().remaining, 1);
    assert_eq!(global.check().unwrap().remaining, 0);
    let refused = global.check().unwrap_err();
    assert_eq!(refused.kind, LimitKind::Global);
    assert_eq!(refused.retry_after, Duration::from_millis(250));
    clock.advance(Duration::from_millis(250));
    assert!(global.check().is_ok());
    assert!(global.check().is_err());
}

#[test]
fn limiters_are_built_only_when_the_config_turns_them_on() {
    let clock = FakeClock::at_unix(0);
    let mut config = PerIpRateLimitConfig::default();
    assert!(IpRateLimiter::from_config(&config, clock.clone()).is_none());
    config.enabled = true;
    let limiter = IpRateLimiter::from_config(&config, clock.clone()).unwrap();
    assert_eq!(limiter.check(ip("192.0.2.1")).unwrap().limit, 20);
    config.per_ip = false;
    assert!(IpRateLimiter::from_config(&config, clock.clone()).is_none());

    let mut global = GlobalRateLimitConfig::default();
    assert!(GlobalRateLimiter::from_config(&global, clock.clone()).is_none());
    global.enabled = true;
    assert_eq!(GlobalRateLimiter::from_config(&global, clock).unwrap().check().unwrap().limit, 200);
}

#[test]
fn concurrent_checks_admit_exactly_the_burst() {
    let clock = FakeClock::at_unix(0);
    let limiter = Arc::new(per_ip(1, 50, 1_000, &clock));
    let global = Arc::new(GlobalRateLimiter::new(nz(1), nz(70), clock.clone()));
    let per_ip_admitted = Arc::new(AtomicUsize::new(0));
    let global_admitted = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (limiter, global) = (limiter.clone(), global.clone());
            let (per_ip_admitted, global_admitted) =
                (per_ip_admitted.clone(), global_admitted.clone());
            std::thread::spawn(move || {
                for _ in 0..200 {
                    if limiter.check(ip("2001:db8::1")).is_ok() {
                        per_ip_admitted.fetch_add(1, Ordering::SeqCst);
                    }
                    if global.check().is_ok() {
                        global_admitted.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(per_ip_admitted.load(Ordering::SeqCst), 50);
    assert_eq!(global_admitted.load(Ordering::SeqCst), 70);
}

// ---- requests and tokens per minute ----

fn minute(
    scope: QuotaScope,
    rpm: Option<u32>,
    tpm: Option<u64>,
    clock: &Arc<FakeClock>,
) -> MinuteLimiter {
    let limit = RateLimit::new(rpm.map(nz), tpm.map(|n| NonZeroU64::new(n).unwrap()));
    MinuteLimiter::new(scope, [("team".to_owned(), limit)], 500, clock.clone())
}

#[test]
fn requests_per_minute_refill_at_n_per_sixty_seconds() {
    let clock = FakeClock::at_unix(0);
    let limiter = minute(QuotaScope::Provider, Some(3), None, &clock);
    for left in [2, 1, 0] {
        let reservation = limiter.reserve("team", Some(10)).unwrap();
        assert_eq!(reservation.requests().unwrap().remaining, left);
        assert_eq!(reservation.reserved_tokens(), 0);
        reservation.settle(10);
    }
    let refused = limiter.reserve("team", Some(10)).unwrap_err();
    assert_eq!(refused.kind, LimitKind::ProviderRequests);
    assert_eq!(refused.retry_after, Duration::from_secs(20));
    assert_eq!(refused.name.as_deref(), Some("team"));
    clock.advance(Duration::from_secs(20));
    limiter.reserve("team", Some(10)).unwrap().settle(10);
}

#[test]
fn tokens_per_minute_reserve_then_settle_refunds_the_unused_part() {
    let clock = FakeClock::at_unix(0);
    // 6000 tokens per minute: one token every 10 ms.
    let limiter = minute(QuotaScope::Client, None, Some(6_000), &clock);
    let first = limiter.reserve("team", Some(4_000)).unwrap();
    assert_eq!(first.tokens().unwrap().remaining, 2_000);
    let refused = limiter.reserve("team", Some(4_000)).unwrap_err();
    assert_eq!(refused.kind, LimitKind::ClientTokens);
    assert_eq!((refused.limit, refused.remaining), (6_000, 2_000));
    assert_eq!(refused.retry_after, Duration::from_secs(20));
    assert_eq!(refused.name.as_deref(), Some("team"));

    // The reply used 1000 of the 4000 reserved: 3000 come back at once.
    first.settle(1_000);
    let second = limiter.reserve("team", Some(4_000)).unwrap();
    assert_eq!(second.tokens().unwrap().remaining, 1_000);
    // No max_tokens: the default estimate (500) is reserved.
    let third = limiter.reserve("team", None).unwrap();
    assert_eq!((third.reserved_tokens(), third.tokens().unwrap().remaining), (500, 500));
}

#[test]
fn usage_above_the_reservation_is_debt_the_next_requests_wait_for() {
    let clock = FakeClock::at_unix(0);
    let limiter = minute(QuotaScope::Client, None, Some(6_000), &clock);
    limiter.reserve("team", Some(1_000)).unwrap().settle(9_000);
    // The bucket owes 9000 tokens (90 s) against a capacity of 60 s; 100 more need 1 s.
    let refused = limiter.reserve("team", Some(100)).unwrap_err();
    assert_eq!((refused.remaining, refused.retry_after), (0, Duration::from_secs(31)));
    assert_eq!(refused.reset_after, Duration::from_secs(90));
    clock.advance(Duration::from_secs(31) - Duration::from_millis(1));
    assert!(limiter.reserve("team", Some(100)).is_err());
    clock.advance(Duration::from_millis(1));
    limiter.reserve("team", Some(100)).unwrap().settle(100);
}

#[test]
fn a_dropped_reservation_stays_spent_and_a_cancelled_one_comes_back() {
    let clock = FakeClock::at_unix(0);
    let limiter = minute(QuotaScope::Client, Some(2), Some(1_000), &clock);
    drop(limiter.reserve("team", Some(600)).unwrap());
    let refused = limiter.reserve("team", Some(600)).unwrap_err();
    assert_eq!((refused.kind, refused.remaining), (LimitKind::ClientTokens, 400));

    // The refusal above took nothing: one request and 400 tokens are still there.
    let reservation = limiter.reserve("team", Some(400)).unwrap();
    assert_eq!(reservation.requests().unwrap().remaining, 0);
    assert_eq!(reservation.tokens().unwrap().remaining, 0);
    reservation.cancel();
    let again = limiter.reserve("team", Some(400)).unwrap();
    assert_eq!(again.requests().unwrap().remaining, 0);
    assert_eq!(again.tokens().unwrap().remaining, 0);
}

#[test]
fn a_request_larger_than_a_minute_reserves_one_minute_and_unknown_names_are_free() {
    let clock = FakeClock::at_unix(0);
    let limiter = minute(QuotaScope::Provider, None, Some(1_000), &clock);
    let big = limiter.reserve("team", Some(50_000)).unwrap();
    assert_eq!(big.reserved_tokens(), 1_000);
    big.settle(1_000);
    assert!(limiter.reserve("team", Some(1)).is_err());
    assert!(!limiter.is_limited("other"));
    let free = limiter.reserve("other", Some(1_000_000)).unwrap();
    assert_eq!((free.reserved_tokens(), free.tokens()), (0, None));
    free.settle(5);
}

// ---- quota periods ----

const SUN_2024_03_10_NOON: u64 = 1_710_072_000;
const MON_2024_03_11: u64 = 1_710_115_200;

#[test]
fn period_boundaries_for_days_iso_weeks_and_months() {
    assert_eq!(period_start(QuotaPeriod::Daily, SUN_2024_03_10_NOON), MON_2024_03_11 - 86_400);
    assert_eq!(next_reset(QuotaPeriod::Daily, SUN_2024_03_10_NOON), MON_2024_03_11);
    // A Sunday belongs to the week that began on the Monday before.
    assert_eq!(period_start(QuotaPeriod::Weekly, SUN_2024_03_10_NOON), 1_709_510_400);
    assert_eq!(next_reset(QuotaPeriod::Weekly, MON_2024_03_11 - 1), MON_2024_03_11);
    assert_eq!(period_start(QuotaPeriod::Weekly, MON_2024_03_11), MON_2024_03_11);
    // An ISO week across the new year: Monday 2024-12-30 to Monday 2025-01-06.
    assert_eq!(period_start(QuotaPeriod::Weekly, 1_735_689_599), 1_735_516_800);
    assert_eq!(next_reset(QuotaPeriod::Weekly, 1_735_689_599), 1_736_121_600);
    // December to January.
    assert_eq!(period_start(QuotaPeriod::Monthly, 1_735_689_599), 1_733_011_200);
    assert_eq!(next_reset(QuotaPeriod::Monthly, 1_735_689_599), 1_735_689_600);
    assert_eq!(period_start(QuotaPeriod::Monthly, 1_735_689_600), 1_735_689_600);
    // February of a leap year has 29 days, of 2023 28, and 2100 is not a leap year.
    assert_eq!(period_start(QuotaPeriod::Monthly, 1_707_984_000), 1_706_745_600);
    assert_eq!(next_reset(QuotaPeriod::Monthly, 1_707_984_000), 1_709_251_200);
    assert_eq!(next_reset(QuotaPeriod::Monthly, 1_709_251_199), 1_709_251_200);
    assert_eq!(next_reset(QuotaPeriod::Monthly, 1_676_419_200), 1_677_628_800);
    assert_eq!(next_reset(QuotaPeriod::Monthly, 4_106_764_800), 4_107_542_400);
    assert_eq!(period_start(QuotaPeriod::Monthly, 4_106_764_800), 4_105_123_200);
}

fn quota(limit: u64, reset: QuotaPeriod) -> Quota {
    Quota::new(NonZeroU64::new(limit).unwrap(), reset)
}

#[test]
fn an_exhausted_quota_is_refused_until_exactly_the_period_boundary() {
    for (period, now, boundary) in [
        (QuotaPeriod::Daily, SUN_2024_03_10_NOON, MON_2024_03_11),
        (QuotaPeriod::Weekly, SUN_2024_03_10_NOON, MON_2024_03_11),
        (QuotaPeriod::Monthly, 1_735_600_000, 1_735_689_600),
        (QuotaPeriod::Monthly, 1_707_984_000, 1_709_251_200),
    ] {
        let clock = FakeClock::at_unix(now);
        let quotas = Quotas::new([], [("team".to_owned(), quota(1_000, period))], clock.clone());
        let status = quotas.check(QuotaScope::Client, "team").unwrap().unwrap();
        assert_eq!((status.remaining, status.resets_at), (1_000, boundary));
        quotas.record(QuotaScope::Client, "team", 600);
        assert_eq!(quotas.check(QuotaScope::Client, "team").unwrap().unwrap().remaining, 400);
        // The request that crosses the limit is counted in full.
        quotas.record(QuotaScope::Client, "team", 600);
        let refused: Limited = quotas.check(QuotaScope::Client, "team").unwrap_err();
        assert_eq!(refused.kind, LimitKind::ClientQuota);
        assert_eq!(
            (refused.limit, refused.remaining, refused.resets_at),
            (1_000, 0, Some(boundary))
        );
        assert_eq!(refused.retry_after, Duration::from_secs(boundary - now));
        assert_eq!(refused.name.as_deref(), Some("team"));
        let message = refused.to_string();
        assert!(message.starts_with("client key \"team\" used its quota of 1000"), "{message}");
        assert!(message.contains(&cliproxy_netguard::format_utc(boundary)), "{message}");

        clock.set_unix(boundary - 1);
        assert!(quotas.check(QuotaScope::Client, "team").is_err());
        clock.set_unix(boundary);
        let status = quotas.check(QuotaScope::Client, "team").unwrap().unwrap();
        assert_eq!((status.used, status.period_start), (0, boundary));
    }
}

#[test]
fn seeding_applies_the_current_period_and_ignores_older_ones() {
    let clock = FakeClock::at_unix(SUN_2024_03_10_NOON);
    let quotas = Quotas::new(
        [("claude".to_owned(), quota(10_000, QuotaPeriod::Monthly))],
        [("team".to_owned(), quota(1_000, QuotaPeriod::Daily))],
        clock.clone(),
    );
    let usage = |scope, name: &str, period, period_start, tokens| QuotaUsage {
        scope,
        name: name.to_owned(),
        period,
        period_start,
        tokens,
    };
    let march = period_start(QuotaPeriod::Monthly, SUN_2024_03_10_NOON);
    let february = period_start(QuotaPeriod::Monthly, march - 1);
    let applied = quotas.seed([
        usage(QuotaScope::Provider, "claude", QuotaPeriod::Monthly, march, 7_000),
        usage(QuotaScope::Client, "team", QuotaPeriod::Daily, MON_2024_03_11 - 2 * 86_400, 999),
        usage(QuotaScope::Provider, "claude", QuotaPeriod::Monthly, february, 9_999),
        // A quota whose period kind changed in the config, and a name no longer configured.
        usage(QuotaScope::Client, "team", QuotaPeriod::Monthly, march, 999),
        usage(QuotaScope::Client, "gone", QuotaPeriod::Daily, MON_2024_03_11 - 86_400, 5),
    ]);
    assert_eq!(applied, 1);
    assert_eq!(quotas.status(QuotaScope::Provider, "claude").unwrap().used, 7_000);
    assert_eq!(quotas.status(QuotaScope::Client, "team").unwrap().used, 0);
    // Seeded counts are already stored.
    assert!(quotas.take_dirty().is_empty());
    assert!(quotas.check(QuotaScope::Client, "nobody").unwrap().is_none());
}

#[test]
fn take_dirty_returns_absolute_counts_changed_since_the_last_call() {
    let clock = FakeClock::at_unix(SUN_2024_03_10_NOON);
    let quotas = Quotas::new(
        [("claude".to_owned(), quota(10_000, QuotaPeriod::Monthly))],
        [("team".to_owned(), quota(1_000, QuotaPeriod::Daily))],
        clock.clone(),
    );
    quotas.record(QuotaScope::Client, "team", 10);
    quotas.record(QuotaScope::Client, "team", 15);
    quotas.record(QuotaScope::Provider, "claude", 25);
    let batch = quotas.take_dirty();
    assert_eq!(batch.len(), 2);
    assert_eq!(
        (batch[0].scope, batch[0].name.as_str(), batch[0].tokens),
        (QuotaScope::Provider, "claude", 25)
    );
    assert_eq!(
        (batch[1].scope, batch[1].period, batch[1].tokens),
        (QuotaScope::Client, QuotaPeriod::Daily, 25)
    );
    assert_eq!(batch[1].period_start, MON_2024_03_11 - 86_400);
    assert!(quotas.take_dirty().is_empty());

    quotas.record(QuotaScope::Client, "team", 5);
    assert_eq!(quotas.take_dirty()[0].tokens, 30);
    // A failed write is retried by marking the batch dirty again.
    quotas.mark_dirty(&batch);
    assert_eq!(quotas.take_dirty().len(), 2);

    // The next day's usage is a new period's count from zero.
    clock.set_unix(MON_2024_03_11 + 60);
    quotas.record(QuotaScope::Client, "team", 7);
    let batch = quotas.take_dirty();
    assert_eq!((batch[0].period_start, batch[0].tokens), (MON_2024_03_11, 7));
}

#[test]
fn refusal_messages_name_the_limit_and_where_the_caller_says_it_is_set() {
    let clock = FakeClock::at_unix(0);
    let limiter = minute(QuotaScope::Provider, None, Some(100), &clock);
    limiter.reserve("team", Some(100)).unwrap().settle(100);
    let refused = limiter.reserve("team", Some(10)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "provider \"team\" reached its limit of 100 tokens per minute; retry after 6 s"
    );
    assert_eq!(
        refused.message("limits.team.tpm"),
        "provider \"team\" reached its limit of 100 tokens per minute (limits.team.tpm); \
         retry after 6 s"
    );
    let per_ip = per_ip(1, 1, 10, &clock);
    per_ip.check(ip("192.0.2.1")).unwrap();
    let message = per_ip.check(ip("192.0.2.1")).unwrap_err().to_string();
    assert_eq!(message, "too many requests from this address; retry after 1 s");
}
