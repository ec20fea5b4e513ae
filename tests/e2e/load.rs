//! Connection load against the real binary: 10,000 idle connections held open, then a flood
//! beyond `server.limits.max_connections`. The gateway refuses the excess cleanly (closes
//! them), keeps serving the connections it admitted, and its memory stays bounded; the
//! figures are printed for the test report.

use std::net::SocketAddr;

use cliproxy_e2e::{CLIENT_KEY, Harness, WAIT, report};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const IDLE: usize = 10_000;

/// The two heavy tests of this file (10,000 connections, the address spray) take turns: run
/// together, on a small CI machine, each starves the other's gateway past [`WAIT`].
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
        &format!("max_connections: {MAX_CONNECTIONS}, header_read_timeout: 60s"),
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
    report::cases("load", test, IDLE + FLOOD);
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
async fn tracked(gateway: &cliproxy_e2e::Gateway) -> (u64, u64) {
    let (status, body) =
        cliproxy_e2e::manage_with(gateway, SPRAY_MGMT_KEY, reqwest::Method::GET, "/status", None)
            .await;
    assert_eq!(status, 200, "{body}");
    let limiter = &body["layers"]["netguard"]["per_ip_rate_limit"];
    (limiter["tracked"].as_u64().unwrap(), limiter["capacity"].as_u64().unwrap())
}

const SPRAY_MGMT_KEY: &str = "cpm-e2e-spray-management-key-5f20b7";

/// Item 5b of the load catalogue: a spray of distinct client addresses, each named by a
/// trusted proxy (loopback) in `X-Forwarded-For`, through the per-IP limiter of the real
/// binary. The limiter tracks at most `max_tracked` addresses (a fiftieth of the spray, so the
/// cap is reached), memory grows by no more than the tracked buckets allow, and once the
/// spray stops the idle buckets are evicted (observed in `/v0/management/status`) and memory
/// does not keep growing. `cargo xtask limiter-load` runs it with 1,000,000 addresses on a
/// release build.
#[tokio::test]
async fn a_spray_of_client_addresses_through_a_trusted_proxy() {
    let _turn = HEAVY.lock().await;
    const CONNECTIONS: usize = 8;
    const PIPELINE: usize = 64;
    let addresses = limiter_addresses();
    let max_tracked = (addresses / 50).max(64);
    let harness = Harness::new();
    // One request per second per address: a bucket stays non-full (and so kept) for a
    // second after its request; eviction runs every `state.flush_interval`.
    harness.write_config(&format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n  \
           limits: {{max_connections: 64}}\n  \
           trusted_proxies: [127.0.0.0/8]\n  forwarded_header: x-forwarded-for\n  \
           security:\n    rate_limiting: {{enabled: true, per_ip: true, requests_per_second: 1, \
             burst: 1, max_tracked: {max_tracked}}}\n\
         auth:\n  api_keys: [{{name: e2e, key: \"{CLIENT_KEY}\"}}]\n  dir: {dir:?}\n\
         logging: {{level: info, format: json}}\n\
         state: {{flush_interval: 200ms}}\n\
         management: {{secret_key: \"{SPRAY_MGMT_KEY}\"}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        dir = harness.auth_dir().display().to_string(),
    ));
    let gateway = harness.start().await;
    let addr = gateway.addr();
    let pid = gateway.pid();
    let (_, capacity) = tracked(&gateway).await;
    assert!(capacity <= max_tracked as u64, "capacity {capacity} above max_tracked {max_tracked}");
    let baseline_rss = rss_kib(pid);

    let started = std::time::Instant::now();
    let per_connection = addresses.div_ceil(CONNECTIONS);
    let (progress, mut batches) = tokio::sync::mpsc::unbounded_channel::<()>();
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let mut buf = Vec::new();
                let (mut ok, mut limited) = (0usize, 0usize);
                let range = (c * per_connection)..((c + 1) * per_connection).min(addresses);
                let indexes: Vec<usize> = range.collect();
                for batch in indexes.chunks(PIPELINE) {
                    let mut requests = String::new();
                    for n in batch {
                        requests.push_str(&format!(
                            "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
                             X-Forwarded-For: {}\r\n\r\n",
                            spray_address(*n)
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
    // Sampled every 16 batches while the spray runs: the tracked count and the RSS at their
    // highest. The channel closes when every worker is done.
    let (mut peak_tracked, mut peak_rss) = (0, baseline_rss);
    let mut done = 0usize;
    while batches.recv().await.is_some() {
        done += 1;
        if done.is_multiple_of(16) {
            let (count, _) = tracked(&gateway).await;
            peak_tracked = peak_tracked.max(count);
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
    let (count, _) = tracked(&gateway).await;
    peak_tracked = peak_tracked.max(count);
    peak_rss = peak_rss.max(rss_kib(pid));
    assert_eq!(ok + limited, addresses);
    assert!(peak_tracked <= capacity, "{peak_tracked} addresses tracked, capacity {capacity}");

    // Idle eviction: every bucket is full again a second after its request and dropped at
    // the next tick (every 200 ms); polled with a deadline, there is no event for it.
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (count, _) = tracked(&gateway).await;
        if count == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{count} addresses still tracked");
        tokio::task::yield_now().await;
    }
    let after_rss = rss_kib(pid);
    let logs = gateway.drain_logs();
    assert!(!logs.contains("panicked"), "{logs}");

    let rate = addresses as f64 / elapsed.as_secs_f64();
    println!(
        "FIGURES addresses={addresses} max_tracked={max_tracked} capacity={capacity} peak_tracked={peak_tracked} \
         ok={ok} limited={limited} rss_baseline_kib={baseline_rss} rss_peak_kib={peak_rss} \
         rss_after_eviction_kib={after_rss} requests_per_s={rate:.0}"
    );
    report::cases("load", "a_spray_of_client_addresses_through_a_trusted_proxy", addresses);
    report::figure("load", "client addresses sprayed", addresses as u64, "addresses");
    report::figure("load", "per-IP limiter max_tracked", max_tracked as u64, "addresses");
    report::figure("load", "per-IP limiter peak tracked", peak_tracked, "addresses");
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
    // A bucket is a 16-byte entry in a hash table at most half empty after growth (32 bytes
    // with its control byte and slack, 64 allowed); the rest of the growth is the eight
    // connections, their buffers and the allocator's arenas, for which 24 MiB are allowed.
    let bound_kib = (max_tracked as u64 * 64).div_ceil(1024) + 24 * 1024;
    assert!(
        peak_rss - baseline_rss <= bound_kib,
        "RSS grew by {} KiB, bound {bound_kib} KiB",
        peak_rss - baseline_rss
    );
    // After eviction the buckets are gone; the allocator may keep the pages it had, so RSS
    // is only required not to grow further and to stay within the same bound.
    assert!(after_rss <= peak_rss + 1024, "RSS kept growing after the spray: {after_rss} KiB");
    assert!(
        after_rss.saturating_sub(baseline_rss) <= bound_kib,
        "RSS after eviction: {after_rss} KiB"
    );
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
    report::cases(
        "load",
        "silent_connections_are_closed_at_the_header_read_timeout_and_free_their_slots",
        SLOTS,
    );
}
