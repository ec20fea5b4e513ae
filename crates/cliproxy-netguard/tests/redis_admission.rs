//! `RedisAdmission` against a real `redis-server` on a loopback port: several admissions on
//! one server stand for several gateway instances, threads for their concurrent requests.
//! Minute limits, quotas and budgets hold across them; settlements go in batches; a killed or
//! silent server is lived through (`local`) or refused (`deny`), and the usage counted
//! meanwhile is added to the shared counts when it is back.

#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

#[path = "../../../tests/src/redis_server.rs"]
mod redis_server;

use std::io::Read;
use std::net::TcpListener;
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cliproxy_core::{Budget, Quota, QuotaPeriod, RateLimit, Secret};
use cliproxy_netguard::{
    Admission, Demand, GlobalRateLimitConfig, LimitKind, LimitTable, Limits, LocalAdmission,
    OnUnavailable, PerIpRateLimitConfig, QuotaScope, RedisAdmission, RedisLink, SharedNotice,
    SystemClock, Ticket, TokenPrice, Used, next_reset,
};
use redis_server::RedisServer;

const PREFIX: &str = "t:";

fn link(url: &str, timeout: Duration, policy: OnUnavailable) -> Arc<RedisLink> {
    Arc::new(
        RedisLink::from_values(&Secret::from(url.to_owned()), None, PREFIX, timeout, policy)
            .expect("a valid link"),
    )
}

/// One gateway instance: its own link (its own connections) and its own local limits.
fn instance(
    url: &str,
    policy: OnUnavailable,
    providers: &LimitTable,
    clients: &LimitTable,
) -> RedisAdmission {
    instance_with(url, policy, Duration::from_millis(200), providers, clients)
}

fn instance_with(
    url: &str,
    policy: OnUnavailable,
    timeout: Duration,
    providers: &LimitTable,
    clients: &LimitTable,
) -> RedisAdmission {
    let local =
        LocalAdmission::new(providers.clone(), clients.clone(), 1_000, SystemClock::shared());
    RedisAdmission::new(link(url, timeout, policy), local, providers.clone(), clients.clone())
        .expect("the admission starts")
}

fn rate(requests: Option<u32>, tokens: Option<u64>) -> Limits {
    Limits::new(
        Some(RateLimit::new(requests.and_then(NonZeroU32::new), tokens.and_then(NonZeroU64::new))),
        None,
    )
}

fn daily_quota(tokens: u64) -> Limits {
    Limits::new(None, Some(Quota::new(NonZeroU64::new(tokens).unwrap(), QuotaPeriod::Daily)))
}

fn daily_budget(micro_usd: u64) -> Limits {
    Limits::default()
        .with_budget(Some(Budget::new(QuotaPeriod::Daily, NonZeroU64::new(micro_usd).unwrap())))
}

/// $1 per 1M input tokens, $2 per 1M output tokens.
const PRICE: TokenPrice = TokenPrice::new(1_000_000, 2_000_000);

/// One field of a hash in Redis, as `redis-cli` prints it (0 when absent).
fn hget(server: &RedisServer, key: &str, field: &str) -> u64 {
    server.cli(&["HGET", key, field]).trim().parse().unwrap_or(0)
}

/// The key of today's quota of `name` in `scope`.
fn today(scope: &str, name: &str) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let start = cliproxy_netguard::period_start(QuotaPeriod::Daily, now);
    format!("{PREFIX}quota:{scope}:{name}:daily:{start}")
}

/// `calls` of one command in `INFO commandstats`.
fn calls(server: &RedisServer, command: &str) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// The commands run inside scripts since the last reset: every command but the scripts
/// themselves and what `redis-cli` sent.
fn commands_in_scripts(server: &RedisServer) -> u64 {
    let stats = server.cli(&["INFO", "commandstats"]);
    stats
        .lines()
        .filter_map(|line| line.strip_prefix("cmdstat_"))
        .filter(|line| !["evalsha", "info", "config"].iter().any(|c| line.starts_with(*c)))
        .filter_map(|line| line.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn three_instances_at_three_times_a_minute_limit_admit_the_limit_once() {
    let server = RedisServer::start();
    let clients = LimitTable::from([("c".to_owned(), rate(Some(600), None))]);
    let instances: Vec<Arc<RedisAdmission>> = (0..3)
        .map(|_| {
            Arc::new(instance(&server.url(), OnUnavailable::Local, &LimitTable::new(), &clients))
        })
        .collect();
    // Three times the bucket (600 requests, refilled at 10 a second) is offered, by three
    // threads on each instance, as fast as they go.
    let offered_per_thread = 3 * 600 / 9;
    let started = Instant::now();
    let threads: Vec<_> = instances
        .iter()
        .flat_map(|admission| (0..3).map(move |_| Arc::clone(admission)))
        .map(|admission| {
            std::thread::spawn(move || {
                let mut accepted = 0_u64;
                for _ in 0..offered_per_thread {
                    match admission.reserve("p", "c", Demand::new(10, Some(10))) {
                        Ok(ticket) => {
                            accepted += 1;
                            admission.settle(ticket, Used::new(Some(20), None));
                        }
                        Err(limited) => assert_eq!(limited.kind, LimitKind::ClientRequests),
                    }
                }
                accepted
            })
        })
        .collect();
    let accepted: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let elapsed = started.elapsed();
    // What one local bucket admits in that time: its 600 at once and 10 a second after.
    let bound = 600.0 + elapsed.as_secs_f64() * 10.0;
    eprintln!("offered 1800 in {elapsed:?}: accepted {accepted}, one bucket's bound {bound:.1}");
    assert!(accepted as f64 <= bound * 1.01, "accepted {accepted}, bound {bound:.1}");
    assert!(accepted >= 600, "the burst was not all used: {accepted}");
    for admission in &instances {
        assert_eq!(admission.stats().local_reserves, 0);
    }
}

#[test]
fn a_refusal_reads_as_the_local_one_and_a_changed_limit_starts_fresh_everywhere() {
    let server = RedisServer::start();
    let providers = LimitTable::from([("p".to_owned(), rate(Some(2), Some(1_000)))]);
    let clients = LimitTable::from([("c".to_owned(), rate(Some(1), None))]);
    let one = instance(&server.url(), OnUnavailable::Local, &providers, &clients);
    let two = instance(&server.url(), OnUnavailable::Local, &providers, &clients);
    let local =
        LocalAdmission::new(providers.clone(), clients.clone(), 1_000, SystemClock::shared());

    // The same request on the shared and the local admission: the same standings.
    let shared = one.reserve("p", "c", Demand::new(100, Some(300))).unwrap();
    let alone = local.reserve("p", "c", Demand::new(100, Some(300))).unwrap();
    assert_eq!(shared.headline().map(|a| (a.limit, a.remaining)), Some((1, 0)));
    assert_eq!(shared.headline().map(|a| a.limit), alone.headline().map(|a| a.limit));
    assert_eq!(
        shared.minute(QuotaScope::Provider).reserved_tokens(),
        alone.minute(QuotaScope::Provider).reserved_tokens()
    );
    // The key's one request of the minute is spent on the other instance too.
    let refused = two.reserve("p", "c", Demand::new(100, Some(300))).unwrap_err();
    let local_refused = local.reserve("p", "c", Demand::new(100, Some(300))).unwrap_err();
    assert_eq!(refused.kind, LimitKind::ClientRequests);
    assert_eq!((refused.kind, refused.limit, refused.remaining), (local_refused.kind, 1, 0));
    assert_eq!(refused.retry_after_secs(), local_refused.retry_after_secs());
    assert_eq!(refused.to_string(), local_refused.to_string());
    // The refusal gave back what the provider's buckets took: the provider's second request
    // is there for another key.
    let other = two.reserve("p", "d", Demand::new(0, Some(100))).unwrap();
    let refused = one.reserve("p", "e", Demand::new(0, Some(100))).unwrap_err();
    assert_eq!(refused.kind, LimitKind::ProviderRequests);
    two.cancel(other);
    one.flush().unwrap();
    two.flush().unwrap();
    // A bucket's key goes when the bucket is full again: within a minute (plus a second).
    let pttl: i64 = server.cli(&["PTTL", "t:rl:client:c:1:-"]).trim().parse().unwrap();
    assert!(pttl > 0 && pttl <= 61_000, "PTTL {pttl}");
    // Cancelled and flushed, the provider's request is back.
    let again = one.reserve("p", "e", Demand::new(0, Some(100))).unwrap();
    one.cancel(again);
    one.settle(shared, Used::new(Some(50), None));
    local.cancel(alone);

    // Two requests a minute for `c`: fresh buckets, on both instances at once.
    let table = LimitTable::from([("c".to_owned(), rate(Some(2), None))]);
    one.update_client_limits(&table).unwrap();
    two.update_client_limits(&table).unwrap();
    let first = one.reserve("q", "c", Demand::new(0, None)).unwrap();
    let second = two.reserve("q", "c", Demand::new(0, None)).unwrap();
    assert_eq!(
        one.reserve("q", "c", Demand::new(0, None)).unwrap_err().kind,
        LimitKind::ClientRequests
    );
    one.settle(first, Used::nothing());
    two.settle(second, Used::nothing());
}

#[test]
fn a_quota_and_a_budget_hold_across_three_instances_and_real_usage_frees_the_rest() {
    let server = RedisServer::start();
    let clients = LimitTable::from([
        ("q".to_owned(), daily_quota(10_000)),
        ("b".to_owned(), daily_budget(10_000)),
    ]);
    let instances: Vec<Arc<RedisAdmission>> = (0..3)
        .map(|_| {
            Arc::new(instance(&server.url(), OnUnavailable::Local, &LimitTable::new(), &clients))
        })
        .collect();

    // Holds, all in flight at once from four threads per instance: 1000 tokens each, so
    // exactly ten pass however they interleave.
    let held: Vec<(Arc<RedisAdmission>, Ticket)> = instances
        .iter()
        .flat_map(|admission| (0..4).map(move |_| Arc::clone(admission)))
        .map(|admission| {
            std::thread::spawn(move || {
                let mut tickets = Vec::new();
                for _ in 0..5 {
                    match admission.reserve("p", "q", Demand::new(100, Some(900))) {
                        Ok(ticket) => tickets.push(ticket),
                        Err(limited) => assert_eq!(limited.kind, LimitKind::ClientQuota),
                    }
                }
                tickets.into_iter().map(|t| (Arc::clone(&admission), t)).collect::<Vec<_>>()
            })
        })
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(held.len(), 10);
    let refused = instances[0].reserve("p", "q", Demand::new(100, Some(900))).unwrap_err();
    assert_eq!(
        (refused.kind, refused.limit, refused.remaining),
        (LimitKind::ClientQuota, 10_000, 0)
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert_eq!(refused.resets_at, Some(next_reset(QuotaPeriod::Daily, now)));
    // Each used 500 of its 1000: the other half is free again once the corrections are in.
    for (admission, ticket) in held {
        admission.settle(ticket, Used::new(Some(500), None));
    }
    for admission in &instances {
        admission.flush().unwrap();
    }
    assert_eq!(hget(&server, &today("client", "q"), "used"), 5_000);
    // The period's key outlives the period (by a day), for late settlements and skewed clocks.
    let ttl: u64 = server.cli(&["TTL", &today("client", "q")]).trim().parse().unwrap();
    let left = next_reset(QuotaPeriod::Daily, now) - now;
    assert!(ttl > left && ttl <= left + 86_400 + 1, "TTL {ttl}, the period ends in {left} s");
    // Ten more holds of 1000 would not fit; real usage of 500 each lets ten more through,
    // one instance after the other.
    let mut admitted = 0;
    for round in 0.. {
        let admission = &instances[round % 3];
        match admission.reserve("p", "q", Demand::new(100, Some(900))) {
            Ok(ticket) => {
                admitted += 1;
                admission.settle(ticket, Used::new(Some(500), None));
                admission.flush().unwrap();
            }
            Err(limited) => {
                assert_eq!(limited.kind, LimitKind::ClientQuota);
                break;
            }
        }
    }
    assert_eq!(admitted, 10);
    assert_eq!(hget(&server, &today("client", "q"), "used"), 10_000);
    assert_eq!(instances[1].quota_status(QuotaScope::Client, "q").map(|s| s.used), Some(10_000));

    // The budget: 100 prompt and 900 output tokens hold $0.0019 at worst. In flight at once,
    // six pass ($0.0095 held, $0.0005 left: more than nothing), the seventh does not.
    let priced = Demand::new(100, Some(900)).with_price(Some(PRICE));
    let mut tickets = Vec::new();
    for round in 0..7 {
        let admission = &instances[round % 3];
        match admission.reserve("p", "b", priced) {
            Ok(ticket) => tickets.push((round % 3, ticket)),
            Err(limited) => {
                assert_eq!(
                    (round, limited.kind, limited.limit),
                    (6, LimitKind::ClientBudget, 10_000)
                );
                assert!(limited.to_string().contains("budget of $0.010000"), "{limited}");
            }
        }
    }
    assert_eq!(tickets.len(), 6);
    assert!(tickets.iter().all(|(_, t)| t.quota_held(QuotaScope::Budget) == 1_900));
    // Each really cost $0.0007: $0.0042 spent, $0.0058 free again, which holds four more.
    for (at, ticket) in tickets {
        instances[at].settle(ticket, Used::new(Some(1_000), Some(700)));
        instances[at].flush().unwrap();
    }
    assert_eq!(hget(&server, &today("client_budget", "b"), "used"), 4_200);
    let more: Vec<_> = (0..5)
        .filter_map(|i| instances[i % 3].reserve("p", "b", priced).ok().map(|t| (i % 3, t)))
        .collect();
    assert_eq!(more.len(), 4);
    for (at, ticket) in more {
        instances[at].cancel(ticket);
    }
    for admission in &instances {
        admission.flush().unwrap();
    }
    // An unpriced model is refused before Redis is asked, as locally.
    let calls_before = calls(&server, "evalsha");
    let unpriced = instances[2].reserve("p", "b", Demand::new(1, None)).unwrap_err();
    assert_eq!(unpriced.kind, LimitKind::Unpriced);
    assert_eq!(calls(&server, "evalsha"), calls_before);
}

#[test]
fn settlements_go_in_batches_and_a_flush_leaves_the_counts_exact() {
    let server = RedisServer::start();
    let providers = LimitTable::from([("p".to_owned(), daily_quota(1_000_000_000))]);
    let mut client = rate(Some(100_000), Some(100_000_000));
    client.quota = daily_quota(1_000_000_000).quota;
    let clients = LimitTable::from([("c".to_owned(), client)]);
    let admission = instance(&server.url(), OnUnavailable::Local, &providers, &clients);
    // The scripts are loaded by a first request, before counting.
    let first = admission.reserve("p", "c", Demand::new(1, Some(1))).unwrap();
    admission.settle(first, Used::new(Some(2), None));
    admission.flush().unwrap();
    // One request alone: one round trip, and the commands the script runs inside it.
    server.cli(&["CONFIG", "RESETSTAT"]);
    let ticket = admission.reserve("p", "c", Demand::new(100, Some(400))).unwrap();
    let inside = commands_in_scripts(&server);
    assert_eq!(calls(&server, "evalsha"), 1);
    eprintln!("one request (two minute buckets, two quotas): 1 EVALSHA, {inside} commands in it");
    admission.settle(ticket, Used::new(Some(100), None));
    admission.flush().unwrap();
    let inside = commands_in_scripts(&server) - inside;
    eprintln!("its settlement: 1 EVALSHA, {inside} commands in it");

    server.cli(&["CONFIG", "RESETSTAT"]);
    let batches_before = admission.stats().batches;

    let requests = 400_u64;
    let mut latencies = Vec::new();
    for n in 0..requests {
        let started = Instant::now();
        let ticket = admission.reserve("p", "c", Demand::new(100, Some(400))).unwrap();
        latencies.push(started.elapsed());
        // Real usage below and above what was held, so give-backs and debts alternate.
        admission.settle(ticket, Used::new(Some(100 + (n % 2) * 800), None));
    }
    admission.flush().unwrap();
    latencies.sort();
    eprintln!(
        "reserve on loopback (this build): p50 {:?}, p99 {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );
    let evalsha = calls(&server, "evalsha");
    let batches = evalsha - requests;
    let per_request: Vec<String> =
        ["time", "hget", "hgetall", "hset", "hmget", "pexpire", "hincrby", "expireat", "hdel"]
            .iter()
            .map(|c| format!("{c}={}", calls(&server, c)))
            .collect();
    eprintln!(
        "{requests} requests: {evalsha} EVALSHA ({batches} settlement batches); inside the scripts: {}",
        per_request.join(" ")
    );
    // One round trip per request; the settlements of 400 requests in far fewer calls.
    assert!(
        batches >= 1 && batches <= requests / 10,
        "{batches} batches for {requests} settlements"
    );
    assert_eq!(admission.stats().batches - batches_before, batches);
    // The counts are exact: every token used is counted, nothing is still held.
    let used = 2 + 100 + (0..requests).map(|n| 100 + (n % 2) * 800).sum::<u64>();
    for scope in ["provider", "client"] {
        let name = if scope == "provider" { "p" } else { "c" };
        let key = today(scope, name);
        assert_eq!(hget(&server, &key, "used"), used, "{key}");
        let fields = server.cli(&["HKEYS", &key]);
        assert_eq!(fields.split_whitespace().collect::<Vec<_>>(), ["used"], "{key} still holds");
    }
    assert_eq!(admission.stats().pending, 0);
}

#[test]
fn a_killed_server_is_lived_through_locally_and_the_outage_usage_reconciled() {
    // With the append-only file, a restart brings back what was written before the kill.
    let mut server =
        RedisServer::start_with(&["--save", "", "--appendonly", "yes", "--appendfsync", "always"]);
    let mut client = rate(Some(600), None);
    client.quota = daily_quota(1_000_000).quota;
    let clients = LimitTable::from([("c".to_owned(), client)]);
    let timeout = Duration::from_millis(200);
    let admission =
        instance_with(&server.url(), OnUnavailable::Local, timeout, &LimitTable::new(), &clients);
    for _ in 0..5 {
        let ticket = admission.reserve("p", "c", Demand::new(50, Some(50))).unwrap();
        admission.settle(ticket, Used::new(Some(100), None));
    }
    admission.flush().unwrap();
    assert_eq!(hget(&server, &today("client", "c"), "used"), 500);
    // One request held in Redis when it goes down: its settlement waits for it.
    let in_flight = admission.reserve("p", "c", Demand::new(50, Some(50))).unwrap();

    server.kill();
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let ticket = admission.reserve("p", "c", Demand::new(50, Some(50))).unwrap();
        slowest = slowest.max(started.elapsed());
        admission.settle(ticket, Used::new(Some(100), None));
    }
    admission.settle(in_flight, Used::new(Some(100), None));
    eprintln!("Redis killed: 50 requests admitted locally, the slowest in {slowest:?}");
    assert!(slowest < timeout, "a request waited {slowest:?}");
    let stats = admission.stats();
    assert!(stats.local && stats.local_reserves == 50, "{stats:?}");
    assert!(matches!(admission.take_notices().as_slice(), [SharedNotice::Local(_)]));
    assert!(admission.flush().is_err());
    // The local stand-in started from the shared count as last seen (500), plus what its own
    // requests used.
    assert_eq!(admission.quota_status(QuotaScope::Client, "c").map(|s| s.used), Some(5_500));
    // Its own minute bucket limits it meanwhile: 600 a minute, of which 50 are taken.
    let refused = (0..600).find_map(|_| admission.reserve("p", "c", Demand::new(0, Some(1))).err());
    assert_eq!(refused.map(|l| l.kind), Some(LimitKind::ClientRequests));

    server.restart();
    assert!(hget(&server, &today("client", "c"), "used") >= 500, "the AOF was not reloaded");
    // The settlement thread retries on its beat, and the link probes after its backoff (at
    // most 2 s): no event says when, so a bounded poll on the shared count.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hget(&server, &today("client", "c"), "used") < 5_600 {
        assert!(Instant::now() < deadline, "the outage usage was never reconciled");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(hget(&server, &today("client", "c"), "used"), 5_600);
    assert!(admission.take_notices().contains(&SharedNotice::Reconciled(51)));
    // Shared limits resume: the next request is decided by Redis again.
    let ticket = admission.reserve("p", "c", Demand::new(0, Some(1))).unwrap();
    admission.cancel(ticket);
    assert!(!admission.stats().local);
    assert_eq!(admission.take_notices(), [SharedNotice::Shared]);
}

#[test]
fn a_silent_server_costs_each_request_at_most_the_timeout() {
    // A server that accepts and never answers: every call runs into the timeout, or (once
    // the link is marked down) fails at once.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buffer = [0_u8; 1024];
            let _ = stream.read(&mut buffer);
            held.push(stream);
        }
    });
    let clients = LimitTable::from([("c".to_owned(), rate(Some(600), None))]);
    let timeout = Duration::from_millis(100);
    let local = instance_with(&url, OnUnavailable::Local, timeout, &LimitTable::new(), &clients);
    let deny = instance_with(&url, OnUnavailable::Deny, timeout, &LimitTable::new(), &clients);
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let ticket = local.reserve("p", "c", Demand::new(1, Some(1))).unwrap();
        slowest = slowest.max(started.elapsed());
        local.settle(ticket, Used::nothing());
        let started = Instant::now();
        let refused = deny.reserve("p", "c", Demand::new(1, Some(1))).unwrap_err();
        slowest = slowest.max(started.elapsed());
        assert_eq!(refused.kind, LimitKind::SharedState);
        assert_eq!(refused.retry_after_secs(), 1);
    }
    eprintln!("silent Redis, timeout {timeout:?}: the slowest call took {slowest:?}");
    // The timeout, plus what a loaded debug build takes around it.
    assert!(slowest < timeout + Duration::from_millis(50), "a call waited {slowest:?}");
}

#[test]
fn deny_refuses_with_shared_state_while_redis_is_down_and_admits_when_it_is_back() {
    let mut server = RedisServer::start();
    let clients = LimitTable::from([("c".to_owned(), rate(Some(600), None))]);
    let admission = instance(&server.url(), OnUnavailable::Deny, &LimitTable::new(), &clients);
    let ticket = admission.reserve("p", "c", Demand::new(1, Some(1))).unwrap();
    admission.settle(ticket, Used::nothing());
    server.kill();
    let started = Instant::now();
    let refused = admission.reserve("p", "c", Demand::new(1, Some(1))).unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
    assert_eq!(refused.kind, LimitKind::SharedState);
    assert!(refused.to_string().contains("(Redis) is unreachable"), "{refused}");
    assert_eq!(admission.stats().local_reserves, 0);
    server.restart();
    // The link probes after its backoff (at most 2 s); no event says when it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ticket = loop {
        match admission.reserve("p", "c", Demand::new(1, Some(1))) {
            Ok(ticket) => break ticket,
            Err(refused) => assert_eq!(refused.kind, LimitKind::SharedState),
        }
        assert!(Instant::now() < deadline, "never admitted again");
        std::thread::sleep(Duration::from_millis(20));
    };
    admission.cancel(ticket);
}

/// Offers `offered` requests from 3 threads on each instance, `demand(n)` for the n-th of a
/// thread; returns the accepted ones, the refusals' kinds and the time it took.
fn hammer(
    instances: &[Arc<RedisAdmission>],
    offered: usize,
    demand: fn(usize) -> Demand,
) -> (u64, Vec<LimitKind>, Duration) {
    let started = Instant::now();
    let threads: Vec<_> = instances
        .iter()
        .flat_map(|admission| (0..3).map(move |_| Arc::clone(admission)))
        .map(|admission| {
            let per_thread = offered / (3 * 3);
            std::thread::spawn(move || {
                let (mut accepted, mut refused) = (0, Vec::new());
                for n in 0..per_thread {
                    match admission.reserve("p", "c", demand(n)) {
                        Ok(ticket) => {
                            accepted += 1;
                            admission.settle(ticket, Used::nothing());
                        }
                        Err(limited) => refused.push(limited.kind),
                    }
                }
                (accepted, refused)
            })
        })
        .collect();
    let mut accepted = 0;
    let mut kinds = Vec::new();
    for thread in threads {
        let (n, refused) = thread.join().unwrap();
        accepted += n;
        kinds.extend(refused);
    }
    (accepted, kinds, started.elapsed())
}

#[test]
fn the_per_ip_and_global_buckets_shared_in_the_same_round_trip_hold_across_instances() {
    let server = RedisServer::start();
    let mut per_ip = PerIpRateLimitConfig::default();
    (per_ip.enabled, per_ip.per_ip) = (true, true);
    (per_ip.requests_per_second, per_ip.burst) =
        (NonZeroU32::new(10).unwrap(), NonZeroU32::new(20).unwrap());
    let mut global = GlobalRateLimitConfig::default();
    global.enabled = false;
    let shared = |per_ip: &PerIpRateLimitConfig,
                  global: &GlobalRateLimitConfig|
     -> Vec<Arc<RedisAdmission>> {
        (0..3)
            .map(|_| {
                let admission = instance(
                    &server.url(),
                    OnUnavailable::Local,
                    &LimitTable::new(),
                    &LimitTable::new(),
                );
                Arc::new(admission.with_shared_buckets(per_ip, global))
            })
            .collect()
    };
    let instances = shared(&per_ip, &global);
    // One address, three times its burst from nine threads on three instances.
    let (accepted, refused, elapsed) = hammer(&instances, 60, |_| {
        Demand::new(1, Some(1)).with_client_ip("192.0.2.7".parse().unwrap())
    });
    let bound = 20.0 + elapsed.as_secs_f64() * 10.0;
    eprintln!("one address, 60 offered in {elapsed:?}: accepted {accepted}, bound {bound:.1}");
    assert!(accepted as f64 <= bound * 1.01, "accepted {accepted}, bound {bound:.1}");
    assert!(accepted >= 20, "{accepted}");
    assert!(refused.iter().all(|kind| *kind == LimitKind::PerIp), "{refused:?}");
    // Another address has a bucket of its own, and a demand without an address is charged to
    // none; the addresses of one IPv6 /64 share one.
    let neighbour = Demand::new(1, Some(1)).with_client_ip("192.0.2.8".parse().unwrap());
    let ticket = instances[1].reserve("p", "c", neighbour).unwrap();
    instances[1].cancel(ticket);
    let ticket = instances[2].reserve("p", "c", Demand::new(1, Some(1))).unwrap();
    instances[2].cancel(ticket);
    let same_64 =
        |n: u16| Demand::new(1, Some(1)).with_client_ip(format!("2001:db8::{n}").parse().unwrap());
    let taken: Vec<_> = (1..=20)
        .map(|n| instances[usize::from(n) % 3].reserve("p", "c", same_64(n)).unwrap())
        .collect();
    let refused = instances[0].reserve("p", "c", same_64(99)).unwrap_err();
    assert_eq!((refused.kind, refused.limit, refused.name.clone()), (LimitKind::PerIp, 20, None));
    assert_eq!(refused.retry_after_secs(), 1);
    for ticket in taken {
        instances[0].cancel(ticket);
    }

    // The global bucket of keyed requests: 30 at once and 10 a second, whatever the address.
    per_ip.enabled = false;
    global.enabled = true;
    (global.requests_per_second, global.burst) =
        (NonZeroU32::new(10).unwrap(), NonZeroU32::new(30).unwrap());
    let instances = shared(&per_ip, &global);
    let (accepted, refused, elapsed) = hammer(&instances, 90, |n| {
        Demand::new(1, Some(1)).with_client_ip(std::net::IpAddr::from([198, 51, 100, n as u8]))
    });
    let bound = 30.0 + elapsed.as_secs_f64() * 10.0;
    eprintln!("many addresses, 90 offered in {elapsed:?}: accepted {accepted}, bound {bound:.1}");
    assert!(accepted as f64 <= bound * 1.01, "accepted {accepted}, bound {bound:.1}");
    assert!(accepted >= 30, "{accepted}");
    assert!(refused.iter().all(|kind| *kind == LimitKind::Global), "{refused:?}");
}

#[test]
fn under_load_a_killed_server_loses_no_usage_and_no_call_outlasts_the_timeout() {
    let mut server =
        RedisServer::start_with(&["--save", "", "--appendonly", "yes", "--appendfsync", "always"]);
    let mut client = rate(Some(1_000_000), None);
    client.quota = daily_quota(1_000_000_000).quota;
    let clients = LimitTable::from([("c".to_owned(), client)]);
    let timeout = Duration::from_millis(200);
    let instances: Vec<Arc<RedisAdmission>> = (0..3)
        .map(|_| {
            Arc::new(instance_with(
                &server.url(),
                OnUnavailable::Local,
                timeout,
                &LimitTable::new(),
                &clients,
            ))
        })
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done, finished) = std::sync::mpsc::channel::<Duration>();
    // Two threads per instance, each request settled with 7 tokens; each thread tells the
    // main one how long every call took, and returns the tokens it had charged.
    let threads: Vec<_> = instances
        .iter()
        .flat_map(|admission| (0..2).map(move |_| Arc::clone(admission)))
        .map(|admission| {
            let (stop, done) = (Arc::clone(&stop), done.clone());
            std::thread::spawn(move || {
                let mut charged = 0_u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let started = Instant::now();
                    let ticket = admission.reserve("p", "c", Demand::new(5, Some(5))).unwrap();
                    admission.settle(ticket, Used::new(Some(7), None));
                    charged += 7;
                    if done.send(started.elapsed()).is_err() {
                        break;
                    }
                }
                charged
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut wait_for = |requests: usize| {
        for _ in 0..requests {
            slowest = slowest.max(finished.recv_timeout(Duration::from_secs(10)).unwrap());
        }
    };
    wait_for(300);
    server.kill();
    // Every instance serves on its own limits (the event: a request admitted locally on
    // each), then some more.
    let deadline = Instant::now() + Duration::from_secs(10);
    while instances.iter().any(|admission| admission.stats().local_reserves == 0) {
        assert!(Instant::now() < deadline, "an instance never admitted locally");
        wait_for(1);
    }
    wait_for(300);
    server.restart();
    // Requests go on while the links find the server again (each after its backoff, at most
    // 2 s): the event is a request decided by Redis again on every instance.
    let back: Vec<u64> = instances.iter().map(|a| a.stats().shared_reserves).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    while instances
        .iter()
        .zip(&back)
        .any(|(a, before)| a.stats().local || a.stats().shared_reserves == *before)
    {
        assert!(Instant::now() < deadline, "the shared limits never resumed");
        wait_for(1);
    }
    wait_for(300);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(finished);
    let charged: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    for admission in &instances {
        admission.flush().unwrap();
    }
    let used = hget(&server, &today("client", "c"), "used");
    eprintln!(
        "under load: {charged} tokens charged, {used} counted in Redis; slowest call {slowest:?}"
    );
    // Nothing is lost across the outage. A batch that Redis applied just as it was killed,
    // without its reply, is sent again and counted twice: at most a few batches' worth.
    assert!(used >= charged, "{used} counted of {charged}");
    assert!(used <= charged + charged / 10, "{used} counted of {charged}");
    assert!(slowest < timeout + Duration::from_millis(50), "a call took {slowest:?}");
}
