//! Connection load against the real binary: 10,000 idle connections held open, then a flood
//! beyond `server.limits.max_connections`. The gateway refuses the excess cleanly (closes
//! them), keeps serving the connections it admitted, and its memory stays bounded; the
//! figures are printed for the test report.

use std::net::SocketAddr;

use cliproxy_e2e::{CLIENT_KEY, Gateway, Harness, WAIT, report};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE: usize = 10_000;

/// The heavy tests of this file (10,000 connections, the two address sprays) take turns: run
/// together, on a small CI machine, each starves the other's gateway past [`WAIT`], and each
/// would add to the memory the others measure.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const MAX_CONNECTIONS: usize = 10_500;
const FLOOD: usize = 1_000;

/// The gateway's resident memory in KiB, from `/proc/PID/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Opens `n` connections, 250 at a time.
async fn open(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut streams = Vec::with_capacity(n);
    while streams.len() < n {
        let batch = (n - streams.len()).min(250);
        let connects = (0..batch).map(|_| TcpStream::connect(addr));
        for stream in join_all(connects).await {
            streams.push(stream.unwrap());
        }
    }
    streams
}

/// Runs every future as its own task and collects the outputs in order.
async fn join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

const CHAT: &[u8] = br#"{"model":"mock-1","messages":[{"role":"user","content":"hi"}]}"#;

/// Sends a chat completion on `stream` (keeping it open) and returns the status, or `None`
/// when the gateway closed the connection instead of answering.
async fn chat_on(stream: &mut TcpStream, close: bool) -> Option<u16> {
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
        CHAT.len(),
        if close { "Connection: close\r\n" } else { "" }
    );
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(CHAT);
    if stream.write_all(&bytes).await.is_err() {
        return None;
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(n)) => n,
            Ok(Err(_)) => 0,
            Err(_) => panic!("no answer and no close within {WAIT:?}"),
        };
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.strip_prefix("HTTP/1.1 ").and_then(|rest| rest.get(..3)).and_then(|s| s.parse().ok())
}

#[tokio::test]
async fn ten_thousand_idle_connections_and_a_flood_beyond_the_limit() {
    let _turn = HEAVY.lock().await;
    let harness = Harness::new();
    harness.config(
        // One address opens them all: the per-IP cap is off for this test.
        &format!(
            "max_connections: {MAX_CONNECTIONS}, max_connections_per_ip: 0, header_read_timeout: 60s"
        ),
        "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n",
    );
    let gateway = harness.start().await;
    let addr = gateway.addr();
    let pid = gateway.pid();
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(chat_on(&mut first, true).await, Some(200));
    drop(first);
    let idle_rss = rss_kib(pid);

    // Each of the 10,000 is served once (so each was admitted), then held open, idle.
    let idle = open(addr, IDLE).await;
    let idle = join_all(
        idle.into_iter()
            .map(|mut stream| async move { (chat_on(&mut stream, false).await, stream) }),
    )
    .await;
    let (statuses, mut idle): (Vec<Option<u16>>, Vec<TcpStream>) = idle.into_iter().unzip();
    let answered = statuses.iter().filter(|s| **s == Some(200)).count();
    assert_eq!(answered, IDLE, "of {IDLE} connections under the limit, {answered} were served");
    let held_rss = rss_kib(pid);

    // The flood: each connection asks for a completion and stays open (holding its slot);
    // the slots left are served, the rest are closed without an answer.
    let flood = open(addr, FLOOD).await;
    let outcomes = join_all(
        flood
            .into_iter()
            .map(|mut stream| async move { (chat_on(&mut stream, false).await, stream) }),
    )
    .await;
    let (outcomes, _held): (Vec<Option<u16>>, Vec<TcpStream>) = outcomes.into_iter().unzip();
    let served = outcomes.iter().filter(|o| **o == Some(200)).count();
    let refused = outcomes.iter().filter(|o| o.is_none()).count();
    let free = MAX_CONNECTIONS - IDLE;
    assert_eq!(served + refused, FLOOD, "{outcomes:?}");
    assert!(served <= free && served + 5 >= free, "served {served} of {free} free slots");
    let flood_rss = rss_kib(pid);

    // Admitted connections are still served after the flood.
    for i in [0, IDLE / 3, IDLE - 1] {
        assert_eq!(chat_on(&mut idle[i], false).await, Some(200), "idle connection {i}");
    }
    drop(idle);
    let mut after = TcpStream::connect(addr).await.unwrap();
    assert_eq!(chat_on(&mut after, true).await, Some(200));
    let logs = gateway.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    println!(
        "FIGURES idle_rss_kib={idle_rss} rss_with_{IDLE}_idle_kib={held_rss} rss_after_flood_kib={flood_rss} \
         flood={FLOOD} served={served} refused={refused}"
    );
    // Bounded: a held keep-alive connection keeps its task and hyper's buffers (measured:
    // about 23 KiB each in a debug build); the refused ones cost nothing that stays.
    let per_connection = (held_rss.saturating_sub(idle_rss)) / IDLE as u64;
    assert!(per_connection <= 32, "{per_connection} KiB per idle connection");
    assert!(flood_rss <= held_rss + 32 * FLOOD as u64, "flood grew RSS to {flood_rss} KiB");
    let test = "ten_thousand_idle_connections_and_a_flood_beyond_the_limit";
    // Two scenarios (connections held idle, a flood past the limit), each repeated over
    // thousands of connections.
    report::cases("load", test, 2);
    report::iterations("load", test, IDLE + FLOOD);
    report::figure("load", "idle connections held (debug build)", IDLE as u64, "connections");
    report::figure("load", "RSS idle, one request served", idle_rss, "KiB");
    report::figure("load", "RSS with the connections held", held_rss, "KiB");
    report::figure("load", "RSS per held connection", per_connection, "KiB");
    report::figure("load", "flood connections past max_connections", FLOOD as u64, "connections");
    report::figure("load", "flood connections served (free slots)", served as u64, "connections");
    report::figure("load", "flood connections refused at accept", refused as u64, "connections");
    report::figure("load", "RSS after the flood", flood_rss, "KiB");
}

/// The addresses sent by [`a_spray_of_client_addresses_through_a_trusted_proxy`]:
/// `CLIPROXY_LIMITER_ADDRESSES`, or a count a debug build gets through well within a minute.
fn limiter_addresses() -> usize {
    std::env::var("CLIPROXY_LIMITER_ADDRESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1_000)
        .unwrap_or(40_000)
}

/// The `n`th client address: even ones IPv4 (in 10/8), odd ones IPv6, each in a /64 of its
/// own (the limiter keys IPv6 by /64, so every one of them is a new key).
fn spray_address(n: usize) -> String {
    let m = n / 2;
    if n.is_multiple_of(2) {
        format!("10.{}.{}.{}", (m >> 16) & 0xff, (m >> 8) & 0xff, m & 0xff)
    } else {
        format!("2001:db8:{:x}:{:x}::1", (m >> 16) & 0xffff, m & 0xffff)
    }
}

/// Reads pipelined HTTP/1.1 answers off `stream` until `count` are complete; returns their
/// status codes. Every answer of the gateway has a `content-length`.
async fn read_answers(stream: &mut TcpStream, buf: &mut Vec<u8>, count: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(count);
    let mut chunk = [0u8; 16 * 1024];
    while statuses.len() < count {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or_else(|| panic!("an answer without content-length: {head}"));
            if buf.len() >= end + 4 + length {
                statuses.push(head[9..12].parse().unwrap());
                buf.drain(..end + 4 + length);
                continue;
            }
        }
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("no answer within WAIT")
            .unwrap();
        assert!(n > 0, "the gateway closed a keep-alive connection");
        buf.extend_from_slice(&chunk[..n]);
    }
    statuses
}

/// `layers.netguard.per_ip_rate_limit` of `/v0/management/status`: (tracked, capacity).
async fn tracked(gateway: &Gateway) -> (u64, u64) {
    let (status, body) =
        cliproxy_e2e::manage_with(gateway, SPRAY_MGMT_KEY, reqwest::Method::GET, "/status", None)
            .await;
    assert_eq!(status, 200, "{body}");
    let limiter = &body["layers"]["netguard"]["per_ip_rate_limit"];
    (limiter["tracked"].as_u64().unwrap(), limiter["capacity"].as_u64().unwrap())
}

const SPRAY_MGMT_KEY: &str = "cpm-e2e-spray-management-key-5f20b7";

/// The per-IP limiter splits `max_tracked` over at most 64 shards
/// (`MAX_SHARDS` in crates/cliproxy-netguard/src/ratelimit.rs) and tracks what the shards
/// hold together. The spray tests write a `max_tracked` that is a multiple of 64, which is
/// split without remainder: the limiter then tracks exactly `max_tracked` addresses at most,
/// and the tests can take the cap from the config they wrote.
const LIMITER_SHARDS: usize = 64;

/// Keep-alive connections of a spray, and requests pipelined on each at a time.
const SPRAY_CONNECTIONS: usize = 8;
const PIPELINE: usize = 64;

/// Starts a gateway whose per-IP limiter admits one request per second per address after a
/// burst of `burst` and tracks at most `max_tracked` addresses, named by a trusted proxy
/// (loopback) in `X-Forwarded-For`. A bucket is full again (and so evictable) one second
/// after its request; idle eviction runs every 200 ms (`state.flush_interval`).
async fn spray_gateway(harness: &Harness, max_tracked: usize, burst: u32) -> Gateway {
    assert!(max_tracked.is_multiple_of(LIMITER_SHARDS) && max_tracked >= LIMITER_SHARDS);
    harness.write_config(&format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  \
           limits: {{max_connections: 64}}\n  \
           trusted_proxies: [127.0.0.0/8]\n  forwarded_header: x-forwarded-for\n  \
           security:\n    rate_limiting: {{enabled: true, per_ip: true, requests_per_second: 1, \
             burst: {burst}, max_tracked: {max_tracked}}}\n\
         auth:\n  api_keys: [{{name: e2e, key: \"{CLIENT_KEY}\"}}]\n  dir: {dir:?}\n\
         logging: {{level: info, format: json}}\n\
         state: {{flush_interval: 200ms}}\n\
         management: {{secret_key: \"{SPRAY_MGMT_KEY}\"}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
    ));
    let gateway = harness.start().await;
    // The gateway's own account of its cap must agree with the config (a consistency check;
    // the bounds below are taken from the config, not from this answer).
    let (tracked, capacity) = tracked(&gateway).await;
    assert_eq!((tracked, capacity), (0, max_tracked as u64), "the limiter before the spray");
    gateway
}

/// What a spray saw: answers 200 and 429 (any other status fails the test), the most
/// addresses tracked and the highest RSS among the samples, and the time from before the
/// first request was sent to after the last answer was read.
struct Spray {
    ok: usize,
    limited: usize,
    peak_tracked: u64,
    peak_rss: u64,
    elapsed: std::time::Duration,
}

/// Sends one `GET /v1/models` from each client address `address(n)`, `n` in `range`, over
/// [`SPRAY_CONNECTIONS`] keep-alive connections, [`PIPELINE`] requests at a time. The tracked
/// count and the RSS are sampled every 16 batches and once at the end.
async fn spray(
    gateway: &Gateway,
    range: std::ops::Range<usize>,
    address: fn(usize) -> String,
) -> Spray {
    let addr = gateway.addr();
    let pid = gateway.pid();
    let started = std::time::Instant::now();
    let per_connection = range.len().div_ceil(SPRAY_CONNECTIONS);
    let (progress, mut batches) = tokio::sync::mpsc::unbounded_channel::<()>();
    let workers: Vec<_> = (0..SPRAY_CONNECTIONS)
        .map(|c| {
            let progress = progress.clone();
            let start = range.start + c * per_connection;
            let mine = start.min(range.end)..(start + per_connection).min(range.end);
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let mut buf = Vec::new();
                let (mut ok, mut limited) = (0usize, 0usize);
                let indexes: Vec<usize> = mine.collect();
                for batch in indexes.chunks(PIPELINE) {
                    let mut requests = String::new();
                    for n in batch {
                        requests.push_str(&format!(
                            "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
                             X-Forwarded-For: {}\r\n\r\n",
                            address(*n)
                        ));
                    }
                    stream.write_all(requests.as_bytes()).await.unwrap();
                    for status in read_answers(&mut stream, &mut buf, batch.len()).await {
                        match status {
                            200 => ok += 1,
                            429 => limited += 1,
                            other => panic!("status {other} for a sprayed address"),
                        }
                    }
                    let _ = progress.send(());
                }
                (ok, limited)
            })
        })
        .collect();
    drop(progress);
    // The channel closes when every worker is done.
    let (mut peak_tracked, mut peak_rss) = (0, 0);
    let mut done = 0usize;
    while batches.recv().await.is_some() {
        done += 1;
        if done.is_multiple_of(16) {
            peak_tracked = peak_tracked.max(tracked(gateway).await.0);
            peak_rss = peak_rss.max(rss_kib(pid));
            // Keeps the test process from holding a log line per request.
            let logs = gateway.drain_logs();
            assert!(!logs.contains("panicked"), "{logs}");
        }
    }
    let (mut ok, mut limited) = (0, 0);
    for worker in workers {
        let (o, l) = worker.await.unwrap();
        ok += o;
        limited += l;
    }
    let elapsed = started.elapsed();
    peak_tracked = peak_tracked.max(tracked(gateway).await.0);
    peak_rss = peak_rss.max(rss_kib(pid));
    assert_eq!(ok + limited, range.len(), "answers to the spray");
    Spray { ok, limited, peak_tracked, peak_rss, elapsed }
}

/// Waits until the limiter tracks no address. Every bucket is full again a second after its
/// request and is dropped at the next eviction tick (every 200 ms); there is no event for
/// that, so `/v0/management/status` is polled, with [`WAIT`] as the deadline.
async fn wait_until_nothing_is_tracked(gateway: &Gateway) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (count, _) = tracked(gateway).await;
        if count == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{count} addresses still tracked");
        tokio::task::yield_now().await;
    }
}

/// Item 5b of the load catalogue: a spray of distinct client addresses, each named by a
/// trusted proxy (loopback) in `X-Forwarded-For`, through the per-IP limiter of the real
/// binary. The limiter tracks at most `max_tracked` addresses (about a fiftieth of the
/// spray, so the cap is reached), the numbers of 200 and 429 answers stay within what one
/// request per second per tracked address and one overflow bucket allow, and once the spray
/// stops every idle bucket is evicted (observed in `/v0/management/status`). Memory is
/// bounded by [`the_per_ip_limiters_memory_is_what_its_tracked_addresses_cost`]. `cargo
/// xtask limiter-load` runs this test with 1,000,000 addresses on a release build.
#[tokio::test]
async fn a_spray_of_client_addresses_through_a_trusted_proxy() {
    let _turn = HEAVY.lock().await;
    let addresses = limiter_addresses();
    let max_tracked = (addresses / 50 / LIMITER_SHARDS).max(1) * LIMITER_SHARDS;
    let harness = Harness::new();
    let gateway = spray_gateway(&harness, max_tracked, 1).await;
    let baseline_rss = rss_kib(gateway.pid());
    let sprayed = spray(&gateway, 0..addresses, spray_address).await;
    let Spray { ok, limited, peak_tracked, peak_rss, elapsed } = sprayed;
    assert!(
        peak_tracked <= max_tracked as u64,
        "{peak_tracked} addresses tracked, max_tracked {max_tracked}"
    );

    // Every address is sent once, so each 200 is either a new bucket (which starts full) or
    // the overflow bucket shared by the addresses no shard has room for.
    // - At least `max_tracked`: each of the 64 shards receives about 1/64 of the spray
    //   (hundreds of addresses at the default count, against at most `max_tracked / 64` it
    //   can hold), and the first `max_tracked / 64` of them always find room.
    // - At most `(max_tracked + 1) × (1 + ⌈T⌉)` in a spray of T seconds: a bucket can only be
    //   dropped to make room once it is full again, one second after its request, so the
    //   buckets created within any one second all live together and number at most
    //   `max_tracked`; the overflow bucket admits its burst of one and then one a second.
    // The test's clock starts before the first request and stops after the last answer, so
    // every decision of the gateway falls within T. At 40,000 addresses, the upper bound
    // refuses requests as long as the spray takes under 50 s (a debug build takes about 4 s
    // on two idle cores), so a limiter that never refuses fails it.
    let seconds = elapsed.as_secs_f64().ceil() as usize;
    let most_admitted = (max_tracked + 1) * (1 + seconds);
    assert!(ok >= max_tracked, "{ok} requests answered 200, fewer than max_tracked {max_tracked}");
    assert!(
        ok <= most_admitted,
        "{ok} requests answered 200 in {elapsed:?}; the limiter allows at most {most_admitted}"
    );
    assert_eq!(limited, addresses - ok, "every other request is answered 429");

    wait_until_nothing_is_tracked(&gateway).await;
    let after_rss = rss_kib(gateway.pid());
    let logs = gateway.drain_logs();
    assert!(!logs.contains("panicked"), "{logs}");

    let rate = addresses as f64 / elapsed.as_secs_f64();
    println!(
        "FIGURES addresses={addresses} max_tracked={max_tracked} peak_tracked={peak_tracked} \
         ok={ok} most_admitted={most_admitted} limited={limited} rss_baseline_kib={baseline_rss} \
         rss_peak_kib={peak_rss} rss_after_eviction_kib={after_rss} requests_per_s={rate:.0}"
    );
    let test = "a_spray_of_client_addresses_through_a_trusted_proxy";
    report::cases("load", test, 1);
    report::iterations("load", test, addresses);
    report::figure("load", "client addresses sprayed", addresses as u64, "addresses");
    report::figure("load", "per-IP limiter max_tracked", max_tracked as u64, "addresses");
    report::figure("load", "per-IP limiter peak tracked", peak_tracked, "addresses");
    report::figure("load", "sprayed requests admitted (200)", ok as u64, "requests");
    report::figure(
        "load",
        "sprayed requests the limiter could admit at most",
        most_admitted as u64,
        "requests",
    );
    report::figure(
        "load",
        "sprayed requests refused by the overflow bucket",
        limited as u64,
        "requests",
    );
    report::figure("load", "RSS before the spray", baseline_rss, "KiB");
    report::figure("load", "RSS at the spray's peak", peak_rss, "KiB");
    report::figure("load", "RSS after idle eviction", after_rss, "KiB");
    report::figure("load", "spray requests per second", rate.round(), "requests/s");
}

/// The per-IP limiter's memory under a spray is what its tracked addresses cost. A gateway
/// tracking at most 8,192 addresses, with a burst so large that every request is admitted,
/// is first driven with the spray's traffic from one address (the same connections,
/// pipelining, 200 answers and logging, one bucket), so that what those cost is paid before
/// the baseline; then 32,768 distinct addresses are sprayed, and the growth of RSS over the
/// baseline is held to what a full table may cost plus a stated margin.
#[tokio::test]
async fn the_per_ip_limiters_memory_is_what_its_tracked_addresses_cost() {
    const MAX_TRACKED: usize = 8_192;
    const ADDRESSES: usize = 32_768;
    const WARM_UP: usize = 8_192;
    const BURST: u32 = 1_000_000;
    let _turn = HEAVY.lock().await;
    let harness = Harness::new();
    let gateway = spray_gateway(&harness, MAX_TRACKED, BURST).await;
    let pid = gateway.pid();
    let warm = spray(&gateway, 0..WARM_UP, |_| "192.0.2.1".to_owned()).await;
    // One address, within its burst: every request admitted, one bucket (which stays, a
    // second for each request it took).
    assert_eq!((warm.ok, warm.limited), (WARM_UP, 0), "the warm-up's 200s and 429s");
    assert_eq!(tracked(&gateway).await.0, 1, "addresses tracked after the warm-up");
    let warm_rss = rss_kib(pid);
    let sprayed = spray(&gateway, 0..ADDRESSES, spray_address).await;
    let after_rss = rss_kib(pid);
    let growth = sprayed.peak_rss.max(after_rss).saturating_sub(warm_rss);
    println!(
        "FIGURES max_tracked={MAX_TRACKED} warm_ok={} warm_limited={} peak_tracked={} ok={} \
         limited={} rss_warm_kib={warm_rss} rss_peak_kib={} rss_after_kib={after_rss} \
         growth_kib={growth}",
        warm.ok, warm.limited, sprayed.peak_tracked, sprayed.ok, sprayed.limited, sprayed.peak_rss
    );
    assert!(sprayed.peak_tracked <= MAX_TRACKED as u64, "{} tracked", sprayed.peak_tracked);
    // A tracked address is a 16-byte entry (an 8-byte key and an 8-byte arrival time) in its
    // shard's hash table, which is at most 7/8 full and, after growing, at least 7/16 full,
    // with a control byte per slot: at most 17 × 16/7 ≈ 39 bytes an entry. The smaller tables
    // a shard outgrew are freed but may stay with the allocator, at most as much again; 80
    // bytes an entry (640 KiB here) bound the tables. 1.5 MiB are allowed for the rest: the
    // allocator's own pages, spread over the runtime's threads (measured: the whole growth,
    // tables included, is 480 to 680 KiB). A debug build sprays more than 8,192 addresses a
    // second, which fills the table; entries ten times as large (160 bytes: 2.5 MiB of
    // tables) then break the bound, and so does a heap block kept per admitted address, a
    // leak which grows with the whole spray.
    let bound_kib = (MAX_TRACKED as u64 * 80).div_ceil(1024) + 1536;
    assert!(growth <= bound_kib, "RSS grew by {growth} KiB, bound {bound_kib} KiB");
    let test = "the_per_ip_limiters_memory_is_what_its_tracked_addresses_cost";
    report::cases("load", test, 1);
    report::iterations("load", test, WARM_UP + ADDRESSES);
    report::figure(
        "load",
        "memory spray: per-IP limiter max_tracked",
        MAX_TRACKED as u64,
        "addresses",
    );
    report::figure("load", "memory spray: peak tracked", sprayed.peak_tracked, "addresses");
    report::figure("load", "memory spray: RSS growth over the warmed-up baseline", growth, "KiB");
    report::figure("load", "memory spray: RSS growth allowed", bound_kib, "KiB");
}

/// Connections that never send a byte are closed at `server.limits.header_read_timeout`
/// and give their slot back, so that `max_connections` silent clients cannot lock everyone
/// out. (Regression: hyper's protocol detection read had no timeout, and such connections
/// were held for ever.)
#[tokio::test]
async fn silent_connections_are_closed_at_the_header_read_timeout_and_free_their_slots() {
    const SLOTS: usize = 8;
    let harness = Harness::new();
    harness.config(
        &format!("max_connections: {SLOTS}, header_read_timeout: 1s"),
        "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n",
    );
    let gateway = harness.start().await;
    let addr = gateway.addr();
    let mut silent = open(addr, SLOTS).await;
    // Every slot is taken: one more connection is closed without an answer.
    let mut extra = TcpStream::connect(addr).await.unwrap();
    assert_eq!(chat_on(&mut extra, true).await, None, "a connection beyond the limit was served");
    // Each silent connection is closed by the gateway (end of stream or reset), well within
    // WAIT; the read returns then, and no byte was ever sent.
    for (i, stream) in silent.iter_mut().enumerate() {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
        match read {
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(n)) => panic!("silent connection {i} got {n} bytes"),
            Err(_) => panic!("silent connection {i} still open after {WAIT:?}"),
        }
    }
    // The slots are free again.
    let mut after = TcpStream::connect(addr).await.unwrap();
    assert_eq!(chat_on(&mut after, true).await, Some(200));
    let test = "silent_connections_are_closed_at_the_header_read_timeout_and_free_their_slots";
    report::cases("load", test, 1);
    report::iterations("load", test, SLOTS);
}

/// Connects to `addr` from the loopback address `local` (127.0.0.2 is a second client).
async fn connect_from(local: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local.parse().unwrap(), 0)).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Reads until the gateway closes `stream` and returns what came, or panics after [`WAIT`].
async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
            Err(_) => panic!("the connection is still open after {WAIT:?}"),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// One address cannot hold every connection: beyond `server.limits.max_connections_per_ip`
/// its next connection is closed at accept, while another address is still served; a slot
/// is given back when one of its connections ends.
#[tokio::test]
async fn one_address_cannot_hold_every_connection() {
    const PER_IP: usize = 3;
    let harness = Harness::new();
    harness.config(
        &format!("max_connections: 16, max_connections_per_ip: {PER_IP}, header_read_timeout: 60s"),
        "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n",
    );
    let gateway = harness.start().await;
    let addr = gateway.addr();
    // Each held connection is served once, so each was admitted, and stays open.
    let mut held = Vec::with_capacity(PER_IP);
    for _ in 0..PER_IP {
        let mut stream = connect_from("127.0.0.1", addr).await;
        assert_eq!(chat_on(&mut stream, false).await, Some(200));
        held.push(stream);
    }
    let mut extra = connect_from("127.0.0.1", addr).await;
    assert_eq!(
        chat_on(&mut extra, true).await,
        None,
        "a connection beyond the per-IP cap was served"
    );
    let mut other = connect_from("127.0.0.2", addr).await;
    assert_eq!(chat_on(&mut other, true).await, Some(200), "another address was refused");

    // The gateway ends one held connection (`Connection: close`); its slot comes back.
    let mut closing = held.remove(0);
    assert_eq!(chat_on(&mut closing, true).await, Some(200));
    read_until_closed(&mut closing).await;
    // The slot is given back when the connection's task ends, a moment after the socket is
    // closed; no event outside the process marks that moment, so this polls (bounded by
    // WAIT). Each refused attempt is closed at accept.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut again = connect_from("127.0.0.1", addr).await;
        if chat_on(&mut again, true).await == Some(200) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was not given back within {WAIT:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The connections still held are served as before.
    for stream in &mut held {
        assert_eq!(chat_on(stream, false).await, Some(200));
    }
    report::cases("load", "one_address_cannot_hold_every_connection", 1);
}

/// A client that sends a request head announcing a body and then holds the body back gets
/// 408 in the endpoint's error format at `server.limits.body_read_timeout`, and the
/// connection is closed (today it held its slot for 40 s and more).
#[tokio::test]
async fn a_body_that_never_comes_gets_408_at_the_body_read_timeout() {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
    // A loaded test machine may answer late; it may never answer early.
    const MARGIN: std::time::Duration = std::time::Duration::from_secs(5);
    let harness = Harness::new();
    harness.config(
        "body_read_timeout: 1s, header_read_timeout: 60s",
        "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n",
    );
    let gateway = harness.start().await;
    let addr = gateway.addr();
    for (path, extra, expect) in [
        ("/v1/chat/completions", "", "\"code\":\"request_timeout\""),
        ("/v1/messages", "anthropic-version: 2023-06-01\r\n", "\"type\":\"error\""),
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
             x-api-key: {CLIENT_KEY}\r\n{extra}Content-Type: application/json\r\n\
             Content-Length: 100\r\n\r\n"
        );
        // The clock starts before the head is sent, so the answer cannot come before TIMEOUT.
        let started = std::time::Instant::now();
        stream.write_all(head.as_bytes()).await.unwrap();
        let answer = read_until_closed(&mut stream).await;
        let elapsed = started.elapsed();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{path}: {answer}");
        assert!(answer.contains(expect), "{path}: not in the endpoint's format: {answer}");
        assert!(answer.contains("server.limits.body_read_timeout"), "{path}: {answer}");
        // The client is told the connection ends (RFC 9110, 408), and then it does.
        assert!(
            answer.to_ascii_lowercase().contains("\r\nconnection: close\r\n"),
            "{path}: {answer}"
        );
        assert!(elapsed >= TIMEOUT, "{path}: cut after {elapsed:?}, before {TIMEOUT:?}");
        assert!(elapsed <= TIMEOUT + MARGIN, "{path}: cut after {elapsed:?}");
        report::figure(
            "load",
            &format!("body read timeout 1s: cut after ({path})"),
            elapsed.as_millis() as u64,
            "ms",
        );
    }
    // The slot is usable again at once by a client that sends its body.
    let mut after = TcpStream::connect(addr).await.unwrap();
    assert_eq!(chat_on(&mut after, true).await, Some(200));
    report::cases("load", "a_body_that_never_comes_gets_408_at_the_body_read_timeout", 2);
}

/// A trusted proxy carries every client behind it on one address: it is exempt from
/// `server.limits.max_connections_per_ip` (the global cap still holds), while any other
/// address is capped.
#[tokio::test]
async fn a_trusted_proxy_is_exempt_from_the_per_ip_cap() {
    let harness = Harness::new();
    harness.write_config(&format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  \
           limits: {{max_connections: 16, max_connections_per_ip: 1, header_read_timeout: 60s}}\n  \
           trusted_proxies: [127.0.0.2/32]\n  forwarded_header: x-forwarded-for\n\
         auth:\n  api_keys: [{{name: e2e, key: \"{CLIENT_KEY}\"}}]\n  dir: {dir:?}\n\
         logging: {{level: debug, format: json}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
    ));
    let gateway = harness.start().await;
    let addr = gateway.addr();
    let mut proxied = Vec::new();
    for _ in 0..4 {
        let mut stream = connect_from("127.0.0.2", addr).await;
        assert_eq!(chat_on(&mut stream, false).await, Some(200), "the trusted proxy was capped");
        proxied.push(stream);
    }
    let mut direct = connect_from("127.0.0.1", addr).await;
    assert_eq!(chat_on(&mut direct, false).await, Some(200));
    let mut second = connect_from("127.0.0.1", addr).await;
    assert_eq!(chat_on(&mut second, true).await, None, "an untrusted address was not capped");
    report::cases("load", "a_trusted_proxy_is_exempt_from_the_per_ip_cap", 1);
}
