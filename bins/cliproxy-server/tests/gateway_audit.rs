//! The audit layer as the gateway composes it: a full disk under the audit log never stops
//! requests but turns `/readyz` to 503 naming it (with the metric and the error log saying
//! so), and the alert rules run on the network guard's clock — 51 rate-limit refusals within
//! a minute from one address put it on the runtime denylist, 50 do not, and refusals spread
//! over more than a minute never add up.

#![allow(clippy::unwrap_used, reason = "a failed expectation fails the test")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

mod common;

use bytes::Bytes;
use cliproxy_gateway::Gateway;
use cliproxy_netguard::FakeClock;
use cliproxy_server::compose;
use cliproxy_server::config::{Config, ConfigSource};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::common::Captured;

const CLIENT_KEY: &str = "client-key-0123456789abcdef";
const MGMT_KEY: &str = "mgmt-key-0123456789abcdef";

fn build(extra: &str, clock: Option<Arc<FakeClock>>) -> (Gateway, Captured, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    // `extra` may bring its own `providers:`; else the mock `demo`.
    let providers =
        if extra.contains("providers:") { "" } else { "providers:\n  demo: {type: mock}\n" };
    let yaml = format!(
        "auth:\n  api_keys: [\"{CLIENT_KEY}\"]\n  dir: {:?}\n\
         management: {{secret_key: \"{MGMT_KEY}\"}}\n{providers}{extra}",
        dir.path().join("auths").display().to_string()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let captured = Captured::default();
    let log = captured.logger();
    let clock = clock.map(|c| c as Arc<dyn cliproxy_netguard::Clock>);
    (compose::gateway_with_clock(&config, &log, clock).unwrap(), captured, dir)
}

async fn call(
    gateway: &Gateway,
    peer: &str,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    // The management API reads `Authorization` first: it gets its own key there.
    let key = if path.starts_with("/v0/management") { MGMT_KEY } else { CLIENT_KEY };
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let peer: SocketAddr = peer.parse().unwrap();
    let response = gateway.handle(request, peer).await;
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn chat(gateway: &Gateway, peer: &str) -> StatusCode {
    let body = json!({"model": "mock-1", "messages": [{"role": "user", "content": "Hi"}]});
    let (status, text) =
        call(gateway, peer, Method::POST, "/v1/chat/completions", &body.to_string()).await;
    assert_ne!(status, StatusCode::UNAUTHORIZED, "{text}");
    status
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
}

#[tokio::test]
async fn a_full_disk_under_the_audit_log_keeps_serving_and_readyz_names_it() {
    // Every write to /dev/full fails with ENOSPC.
    let (gateway, log, _dir) = build("logging: {audit: {enabled: true, file: /dev/full}}\n", None);
    // The sink writes its signed start checkpoint when it opens the file, so a full disk
    // shows from the start.
    let (status, body) = call(&gateway, "127.0.0.1:1", Method::GET, "/readyz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["checks"]["audit"], "failing");
    for _ in 0..20 {
        assert_eq!(chat(&gateway, "127.0.0.1:2").await, StatusCode::OK);
    }
    gateway.flush_audit();
    let (status, body) = call(&gateway, "127.0.0.1:1", Method::GET, "/readyz", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["failing"], "audit");
    // The unauthenticated probe names the check, never the file (the log line below does).
    assert_eq!(body["checks"]["audit"], "failing", "{body}");
    assert!(!body.to_string().contains("/dev/full"), "{body}");
    // Still serving, the metric and the error log say so.
    assert_eq!(chat(&gateway, "127.0.0.1:2").await, StatusCode::OK);
    let metrics = gateway.render_metrics();
    assert_eq!(sample(&metrics, "cliproxy_audit_healthy"), Some(0.0), "{metrics}");
    assert!(sample(&metrics, "cliproxy_audit_write_errors_total").unwrap() >= 1.0);
    let text = log.text();
    // The audit crate logs nothing itself: the gateway logs its notice, naming the setting.
    assert!(
        text.lines().any(|l| l.starts_with(
            "ERRO cannot write the audit log /dev/full \
                                              (logging.audit.file): "
        ) && l.contains("backlog_lines=")),
        "{text}"
    );
    // The status page shows it too, with the setting.
    let (_, status) = call(&gateway, "127.0.0.1:1", Method::GET, "/v0/management/status", "").await;
    let status: Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["layers"]["audit"]["healthy"], false, "{status}");
    let error = status["layers"]["audit"]["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("cannot write the audit log /dev/full (logging.audit.file): "),
        "{status}"
    );
    // So does the readiness detail (the same check `/readyz` answers 503 for).
    assert_eq!(status["readiness"]["audit"], error, "{status}");
}

/// One address refused by the per-IP bucket `count` times (the bucket holds one request and
/// the fake clock does not move, so every request after the first is refused).
async fn refusals(gateway: &Gateway, peer: &str, count: usize) {
    for _ in 0..count {
        assert_eq!(chat(gateway, peer).await, StatusCode::TOO_MANY_REQUESTS);
    }
}

/// The runtime denylist, once every alert fired so far has been carried out (alerts act
/// through a queue, off the request path).
async fn denylist(gateway: &Gateway) -> Vec<Value> {
    gateway.flush_alerts();
    let (status, body) =
        call(gateway, "127.0.0.1:1", Method::GET, "/v0/management/security/ip-denylist", "").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str::<Value>(&body).unwrap()["entries"].as_array().unwrap().clone()
}

#[tokio::test]
async fn fifty_one_rate_limit_refusals_within_a_minute_block_the_address_fifty_do_not() {
    let clock = FakeClock::at_unix(1_800_000_000);
    let (gateway, log, _dir) = build(
        "server: {security: {rate_limiting: {enabled: true, requests_per_second: 1, burst: 1}}}\n\
         alerts: [{name: flood, condition: \"rate_limit_violations > 50\", duration: 1m, action: block_ip, block_for: 10m}]\n",
        Some(clock.clone()),
    );
    // 198.51.100.10: one admitted, then 50 refusals: not blocked.
    assert_eq!(chat(&gateway, "198.51.100.10:1").await, StatusCode::OK);
    refusals(&gateway, "198.51.100.10:1", 50).await;
    assert!(denylist(&gateway).await.is_empty());
    // The 51st within the minute blocks it: the next request is refused as a denied address.
    clock.advance(Duration::from_secs(30));
    assert_eq!(chat(&gateway, "198.51.100.10:1").await, StatusCode::OK);
    refusals(&gateway, "198.51.100.10:1", 1).await;
    let entries = denylist(&gateway).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["ip"], "198.51.100.10/32");
    assert_eq!(entries[0]["reason"], "alert: flood");
    assert_eq!(entries[0]["expires_at"], json!(1_800_000_000 + 30 + 600));
    assert_eq!(chat(&gateway, "198.51.100.10:1").await, StatusCode::FORBIDDEN);
    // Another address is not affected.
    assert_eq!(chat(&gateway, "198.51.100.11:1").await, StatusCode::OK);
    assert!(log.text().contains("alert fired: address blocked"));

    // 198.51.100.12: 50 refusals, a minute and a second later 50 more: never 51 within a minute.
    assert_eq!(chat(&gateway, "198.51.100.12:1").await, StatusCode::OK);
    refusals(&gateway, "198.51.100.12:1", 50).await;
    clock.advance(Duration::from_secs(61));
    assert_eq!(chat(&gateway, "198.51.100.12:1").await, StatusCode::OK);
    refusals(&gateway, "198.51.100.12:1", 50).await;
    assert_eq!(denylist(&gateway).await.len(), 1);
    let metrics = gateway.render_metrics();
    assert_eq!(
        sample(&metrics, "cliproxy_alerts_fired_total{rule=\"flood\"}"),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn loopback_is_never_blocked_by_a_rule() {
    let clock = FakeClock::at_unix(1_800_000_000);
    let (gateway, log, _dir) = build(
        "server: {security: {rate_limiting: {enabled: true, requests_per_second: 1, burst: 1}}}\n\
         alerts: [{name: flood, condition: \"rate_limit_violations > 2\", duration: 1m, action: block_ip}]\n",
        Some(clock.clone()),
    );
    // Loopback: refused by its bucket, the rule fires, but the address is not blocked (a
    // local reverse proxy or the operator would be locked out).
    assert_eq!(chat(&gateway, "127.0.0.1:1").await, StatusCode::OK);
    refusals(&gateway, "127.0.0.1:1", 3).await;
    assert!(denylist(&gateway).await.is_empty());
    assert!(log.text().contains("alert fired but the address is not blocked"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(chat(&gateway, "127.0.0.1:1").await, StatusCode::OK);
    let metrics = gateway.render_metrics();
    assert_eq!(
        sample(&metrics, "cliproxy_rate_limit_violations_total{ip=\"127.0.0.1\"}"),
        Some(3.0)
    );
}

#[tokio::test]
async fn an_exhausted_quota_is_not_held_against_the_address() {
    let clock = FakeClock::at_unix(1_800_000_000);
    // A provider quota of one token: the first request uses it up, the rest are refused
    // with 429 — a budget exhausted, not an abusive address.
    let (gateway, _log, _dir) = build(
        "alerts: [{name: flood, condition: \"rate_limit_violations > 2\", duration: 1m, action: block_ip}]\n\
         providers:\n  demo: {type: mock, quota: {limit: 1, reset: daily}}\n",
        Some(clock.clone()),
    );
    let _ = chat(&gateway, "198.51.100.20:1").await;
    for _ in 0..6 {
        assert_eq!(chat(&gateway, "198.51.100.20:1").await, StatusCode::TOO_MANY_REQUESTS);
    }
    assert!(denylist(&gateway).await.is_empty());
    let metrics = gateway.render_metrics();
    assert_eq!(
        sample(&metrics, "cliproxy_rate_limit_violations_total{ip=\"198.51.100.20\"}"),
        None
    );
    assert!(
        sample(&metrics, "cliproxy_security_events_total{event_type=\"security_violation\"}")
            .unwrap()
            >= 6.0
    );
}

#[tokio::test]
async fn a_flood_from_one_address_writes_one_line_per_second_with_the_repeats() {
    let clock = FakeClock::at_unix(1_800_000_000);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    let (gateway, _log, _dir) = build(
        &format!(
            "server: {{security: {{rate_limiting: {{enabled: true, requests_per_second: 1, burst: 1}}}}}}\n\
             logging: {{audit: {{enabled: true, file: {:?}, events: [security_violation]}}}}\n",
            file.display().to_string()
        ),
        Some(clock.clone()),
    );
    assert_eq!(chat(&gateway, "198.51.100.30:1").await, StatusCode::OK);
    refusals(&gateway, "198.51.100.30:1", 10).await;
    // A second later the bucket holds one request again; the refusal after it is written
    // with the nine left out before.
    clock.advance(Duration::from_secs(1));
    assert_eq!(chat(&gateway, "198.51.100.30:1").await, StatusCode::OK);
    refusals(&gateway, "198.51.100.30:1", 1).await;
    gateway.flush_audit();
    let lines: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let refusals: Vec<&Value> =
        lines.iter().filter(|l| l["result"] == "per_ip_rate_limit").collect();
    assert_eq!(refusals.len(), 2, "{lines:#?}");
    assert_eq!(refusals[0]["details"].get("repeats"), None);
    assert_eq!(refusals[1]["details"]["repeats"], 9);
    // Every refusal is counted all the same.
    let metrics = gateway.render_metrics();
    assert_eq!(
        sample(&metrics, "cliproxy_rate_limit_violations_total{ip=\"198.51.100.30\"}"),
        Some(11.0)
    );
}

#[tokio::test]
async fn a_reload_that_renames_a_limited_key_applies_and_keeps_it_limited() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("config.yaml");
    let write = |name: &str| {
        let yaml = format!(
            "auth:\n  api_keys: [{{name: {name}, key: \"{CLIENT_KEY}\", rate_limit: {{requests_per_minute: 2}}}}]\n  dir: {:?}\n\
             management: {{secret_key: \"{MGMT_KEY}\"}}\nproviders:\n  demo: {{type: mock}}\n",
            dir.path().join("auths").display().to_string()
        );
        std::fs::write(&config_file, yaml).unwrap();
    };
    write("limited");
    let source = ConfigSource::File(config_file.clone());
    let config = Config::load(&source).unwrap();
    let gateway =
        compose::gateway(&config, &slog::Logger::root(slog::Discard, slog::o!())).unwrap();
    gateway.set_config_loader(Box::new(source));
    // Renaming the key: its limits are keyed by name, and the admission takes the new name's
    // limits as the reload applies, so the renamed key is never unlimited.
    write("limited-renamed");
    let (status, body) =
        call(&gateway, "127.0.0.1:1", Method::POST, "/v0/management/config/reload", "").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let report: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["applied"], json!(["auth.api_keys[0].name"]), "{report}");
    assert_eq!(report["restart_required"], json!([]), "{report}");
    // The renamed key, with its limit: two requests a minute.
    for _ in 0..2 {
        assert_eq!(chat(&gateway, "127.0.0.1:2").await, StatusCode::OK);
    }
    assert_eq!(chat(&gateway, "127.0.0.1:2").await, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_ipv6_client_is_blocked_by_its_64_and_ipv6_loopback_never() {
    let clock = FakeClock::at_unix(1_800_000_000);
    let (gateway, _log, _dir) = build(
        "server: {security: {rate_limiting: {enabled: true, requests_per_second: 1, burst: 1}}}\n\
         alerts: [{name: flood, condition: \"rate_limit_violations > 2\", duration: 1m, action: block_ip}]\n",
        Some(clock.clone()),
    );
    // Rotating addresses inside one /64 shares one bucket and one alert window.
    assert_eq!(chat(&gateway, "[2001:db8:1:2::5]:1").await, StatusCode::OK);
    for host in ["6", "7", "8"] {
        let peer = format!("[2001:db8:1:2::{host}]:1");
        assert_eq!(chat(&gateway, &peer).await, StatusCode::TOO_MANY_REQUESTS);
    }
    let entries = denylist(&gateway).await;
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["ip"], "2001:db8:1:2::/64");
    assert_eq!(chat(&gateway, "[2001:db8:1:2::99]:1").await, StatusCode::FORBIDDEN);
    assert_eq!(chat(&gateway, "[2001:db8:1:3::5]:1").await, StatusCode::OK);
    // ::1 is in ::/64: never blocked.
    assert_eq!(chat(&gateway, "[::1]:1").await, StatusCode::OK);
    refusals(&gateway, "[::1]:1", 3).await;
    assert_eq!(denylist(&gateway).await.len(), 1);
}

/// A chat completion for `model` asking for `max_tokens` (written as given, so that it can be
/// 2^64-1), as its own task: the test aborts it to play a client that goes away.
fn spawn_chat(gateway: &Gateway, model: &str, max_tokens: &str) -> tokio::task::JoinHandle<u16> {
    let body = format!(
        r#"{{"model": "{model}", "max_tokens": {max_tokens}, "messages": [{{"role": "user", "content": "Hi"}}]}}"#
    );
    let gateway = gateway.clone();
    tokio::spawn(async move {
        let (status, _) =
            call(&gateway, "198.51.100.40:1", Method::POST, "/v1/chat/completions", &body).await;
        status.as_u16()
    })
}

/// The issue's scenario (issue 18, item 15) on the guard's clock: a provider quota of 8,000
/// tokens a day, and two requests of `max_tokens` 4,000 whose clients go away while the
/// upstream is still thinking (hyper then drops the request's future). Each is charged its
/// estimate, in its own period: the quota is spent today and whole again tomorrow. Before
/// the fix nothing was settled and the 8,000 tokens stayed held, past midnight, until a
/// restart. Then, with validation off, a request for 2^64-1 tokens: it holds and costs at
/// most the whole quota (and one minute of `tokens_per_minute`), not 2^64-1.
#[tokio::test]
async fn abandoned_requests_are_charged_in_their_period_and_hold_nothing_after_it() {
    use cliproxy_e2e::faulty::{FaultyUpstream, Step, head};
    let clock = FakeClock::at_unix(1_800_000_000);
    let (arrived, mut arrivals) = tokio::sync::mpsc::unbounded_channel();
    let upstream = FaultyUpstream::start(move |request| {
        if request.contains("gpt-stall") {
            let _ = arrived.send(());
            return vec![Step::Stall];
        }
        let body = json!({"id": "c1", "object": "chat.completion", "model": "gpt-ok",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}})
        .to_string();
        let mut reply = head(200, "application/json", Some(body.len() as u64));
        reply.extend_from_slice(body.as_bytes());
        vec![Step::Send(reply)]
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [\"{CLIENT_KEY}\"]\n  dir: {:?}\n\
         server: {{security: {{request_validation: {{enabled: false}}}}}}\n\
         providers:\n  openai: {{type: openai, base_url: \"{}\", models: [\"gpt-*\"], \
         quota: {{limit: 8000, reset: daily}}, rate_limit: {{tokens_per_minute: 100000}}}}\n",
        dir.path().join("auths").display().to_string(),
        upstream.url()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let credential = cliproxy_vault::Credential::new_api_key(
        "openai",
        cliproxy_core::Secret::from("sk-test-upstream-0123456789".to_owned()),
    )
    .unwrap();
    config.auth.build().unwrap().put(&credential).unwrap();
    let clock_dyn: Arc<dyn cliproxy_netguard::Clock> = clock.clone();
    let gateway =
        compose::gateway_with_clock(&config, &Captured::default().logger(), Some(clock_dyn))
            .unwrap();
    let remaining = |gateway: &Gateway| {
        sample(&gateway.render_metrics(), "cliproxy_quota_remaining{provider=\"openai\"}")
    };

    // Abandons a request once the upstream has it; the aborted task's future is dropped
    // before its handle returns. A request answered instead (refused) fails the test.
    let mut abandon = async |max_tokens: &str| {
        let mut task = spawn_chat(&gateway, "gpt-stall", max_tokens);
        tokio::select! {
            arrived = arrivals.recv() => arrived.unwrap(),
            answered = &mut task => panic!("answered before the upstream had it: {answered:?}"),
        }
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
    };
    abandon("4000").await;
    abandon("4000").await;
    // Charged 4,000 each (no usage came back), which spends today's quota.
    assert_eq!(remaining(&gateway), Some(0.0));
    assert_eq!(spawn_chat(&gateway, "gpt-ok", "10").await.unwrap(), 429);
    // Tomorrow the quota is whole again: nothing is still held.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(spawn_chat(&gateway, "gpt-ok", "10").await.unwrap(), 200);
    assert_eq!(remaining(&gateway), Some(7990.0));

    // 2^64-1 tokens, accepted with validation off, hold the whole quota and no more (and a
    // whole minute of tokens, admitted once the minute's bucket is full again).
    clock.advance(Duration::from_secs(60));
    abandon("18446744073709551615").await;
    assert_eq!(remaining(&gateway), Some(0.0));
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(spawn_chat(&gateway, "gpt-ok", "10").await.unwrap(), 200);
    assert_eq!(remaining(&gateway), Some(7990.0));
}
