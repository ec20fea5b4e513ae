//! The mock and the load generator together on loopback: exact counts, and any error reply
//! fails the run.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cliproxy_bench::{MockOptions, MockStats, Mode, Shape, Target, load, mock};
use tokio::net::TcpListener;

const TOKEN: &str = "sk-bench-test-token";

async fn start_mock(
    fail_after: Option<u64>,
) -> (Target, Arc<MockStats>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stats = Arc::new(MockStats::default());
    let options = MockOptions { token: TOKEN.into(), latency: Duration::ZERO, fail_after };
    let task = tokio::spawn(mock::serve(listener, options, Arc::clone(&stats)));
    let target = Target {
        base_url: format!("http://{addr}"),
        token: TOKEN.into(),
        ca_pem: None,
        shape: Shape::Chat,
    };
    (target, stats, task)
}

#[tokio::test]
async fn every_request_is_counted_on_both_sides() {
    let (target, stats, task) = start_mock(None).await;

    // Open loop: 200/s for 250 ms is exactly 50 scheduled requests.
    let mode = Mode::Rate { rate: 200, duration: Duration::from_millis(250) };
    let report = load::run(&target, mode, None).await.unwrap();
    assert_eq!(report.ok, 50);
    assert_eq!(report.latency.unwrap().count, 50);
    // The warm-up opens 16 connections with one request each before the measured run.
    assert_eq!(stats.served(), 16 + 50);
    assert!(report.elapsed_s >= 0.24, "paced by the clock: {}", report.elapsed_s);

    // Closed loop, capped by a request count.
    let mode =
        Mode::Closed { connections: 4, duration: Duration::from_secs(30), max_requests: Some(40) };
    let report = load::run(&target, mode, None).await.unwrap();
    assert_eq!(report.ok, 40);
    assert_eq!(stats.served(), 66 + 4 + 40);
    assert!(report.rps > 0.0);

    // Streams: 3 workers × 2 rounds × 4 events 5 ms apart.
    let ready_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&ready_calls);
    let ready: load::Ready = Arc::new(move || {
        calls.fetch_add(1, Ordering::SeqCst);
    });
    let mode =
        Mode::Stream { streams: 3, rounds: 2, events: 4, interval: Duration::from_millis(5) };
    let report = load::run(&target, mode, Some(ready)).await.unwrap();
    assert_eq!(report.ok, 6);
    assert_eq!(report.events, 24);
    assert_eq!(report.ttfe.unwrap().count, 6);
    assert_eq!(report.gap.unwrap().count, 18);
    assert!(report.gap.unwrap().p50_us >= 3_000.0, "events are paced: {:?}", report.gap);
    assert_eq!(ready_calls.load(Ordering::SeqCst), 1, "READY once, when all streams are open");
    assert_eq!(stats.served(), 110 + 3 + 6);

    // The mock's own statistics endpoint.
    let served = load::get_json(&target, "/stats").await.unwrap();
    assert_eq!(served["served"], 119);
    task.abort();
}

#[tokio::test]
async fn an_error_reply_fails_the_run_with_the_count_and_a_sample() {
    let (target, stats, task) = start_mock(None).await;
    let wrong = Target { token: "sk-not-the-token".into(), ..target.clone() };
    let mode =
        Mode::Closed { connections: 2, duration: Duration::from_secs(30), max_requests: Some(5) };
    let error = format!("{:#}", load::run(&wrong, mode, None).await.unwrap_err());
    assert!(error.contains("warming up the connections: 2 of 2 requests failed"), "{error}");
    assert!(error.contains("401"), "the sample names the status: {error}");
    assert_eq!(stats.served(), 0);

    let mode = Mode::Rate { rate: 100, duration: Duration::from_millis(50) };
    let error = format!("{:#}", load::run(&wrong, mode, None).await.unwrap_err());
    assert!(error.contains("16 of 16 requests failed"), "{error}");

    let mode =
        Mode::Stream { streams: 2, rounds: 1, events: 2, interval: Duration::from_millis(1) };
    let error = format!("{:#}", load::run(&wrong, mode, None).await.unwrap_err());
    assert!(error.contains("2 of 2 requests failed"), "{error}");
    task.abort();
}

#[tokio::test]
async fn errors_in_the_middle_of_a_run_fail_it() {
    // 20 successes, then 500s: 2 warm-up requests and 18 measured ones succeed, 12 fail.
    let (target, stats, task) = start_mock(Some(20)).await;
    let mode =
        Mode::Closed { connections: 2, duration: Duration::from_secs(30), max_requests: Some(30) };
    let error = format!("{:#}", load::run(&target, mode, None).await.unwrap_err());
    assert!(error.contains("12 of 30 requests failed"), "{error}");
    assert!(error.contains("500"), "{error}");
    assert_eq!(stats.served(), 20);

    // Streams too: every stream after the limit is refused.
    let mode =
        Mode::Stream { streams: 1, rounds: 3, events: 2, interval: Duration::from_millis(1) };
    let error = format!("{:#}", load::run(&target, mode, None).await.unwrap_err());
    assert!(error.contains("1 of 1 requests failed"), "the warm-up already fails: {error}");
    task.abort();
}

#[tokio::test]
async fn several_base_urls_share_the_load_round_robin() {
    // Scenario 9's instances: three mocks behind one target, connections spread over them.
    let mut mocks = Vec::new();
    for _ in 0..3 {
        mocks.push(start_mock(None).await);
    }
    let urls: Vec<&str> = mocks.iter().map(|(target, _, _)| target.base_url.as_str()).collect();
    let target = Target { base_url: urls.join(" "), ..mocks[0].0.clone() };

    // Closed loop over 6 connections: 2 warm-up requests and 2 connections per mock, every
    // connection sending to its own mock; 60 measured requests in all.
    let mode =
        Mode::Closed { connections: 6, duration: Duration::from_secs(30), max_requests: Some(60) };
    let report = load::run(&target, mode, None).await.unwrap();
    assert_eq!(report.ok, 60);
    let served: Vec<u64> = mocks.iter().map(|(_, stats, _)| stats.served()).collect();
    assert_eq!(served.iter().sum::<u64>(), 66, "{served:?}");
    assert!(served.iter().all(|&n| n > 2), "each mock beyond its warm-ups: {served:?}");

    // Open loop: request i goes to mock i mod 3, exactly (16 warm-ups, then 30 requests).
    let before = served;
    let mode = Mode::Rate { rate: 200, duration: Duration::from_millis(150) };
    let report = load::run(&target, mode, None).await.unwrap();
    assert_eq!(report.ok, 30);
    let added: Vec<u64> =
        mocks.iter().zip(&before).map(|((_, stats, _), before)| stats.served() - before).collect();
    assert_eq!(added, [6 + 10, 5 + 10, 5 + 10]);
    for (_, _, task) in mocks {
        task.abort();
    }
}

#[tokio::test]
async fn nothing_listening_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let target = Target {
        base_url: format!("http://{addr}"),
        token: TOKEN.into(),
        ca_pem: None,
        shape: Shape::Chat,
    };
    let error = load::once(&target).await.unwrap_err().to_string();
    assert!(error.contains("transport error"), "{error}");
    let mode =
        Mode::Closed { connections: 1, duration: Duration::from_secs(30), max_requests: Some(3) };
    let error = format!("{:#}", load::run(&target, mode, None).await.unwrap_err());
    assert!(error.contains("1 of 1 requests failed"), "{error}");
    assert!(error.contains("transport error"), "{error}");
}

#[tokio::test]
async fn the_4k_shapes_reach_the_mock_and_an_untranslated_reply_fails_the_anthropic_one() {
    let (target, stats, task) = start_mock(None).await;
    let chat = Target { shape: Shape::ChatTools4k, ..target.clone() };
    let mode =
        Mode::Closed { connections: 2, duration: Duration::from_secs(30), max_requests: Some(10) };
    let report = load::run(&chat, mode, None).await.unwrap();
    assert_eq!((report.ok, report.shape), (10, Shape::ChatTools4k));
    let streams =
        Mode::Stream { streams: 2, rounds: 2, events: 3, interval: Duration::from_millis(1) };
    let report = load::run(&chat, streams, None).await.unwrap();
    assert_eq!((report.ok, report.events), (4, 12));
    assert_eq!(stats.served(), 2 + 10 + 2 + 4);

    // The mock speaks OpenAI's format only: an Anthropic client that reaches it without a
    // translating gateway in between gets replies it cannot read, and the run fails.
    let anthropic = Target { shape: Shape::AnthropicTools4k, ..target.clone() };
    let error = format!("{:#}", load::run(&anthropic, mode, None).await.unwrap_err());
    assert!(error.contains("not a valid anthropic_tools_4k reply"), "{error}");
    // A stream run's warm-up is a whole reply, so it stops there (the stream's own checks are
    // the unit tests of `SseCounter`).
    let error = format!("{:#}", load::run(&anthropic, streams, None).await.unwrap_err());
    assert!(error.contains("warming up the connections: 2 of 2 requests failed"), "{error}");
    assert!(error.contains("not a valid anthropic_tools_4k reply"), "{error}");
    task.abort();
}
