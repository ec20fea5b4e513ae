//! Requests the client gives up on before the upstream has answered (issue 18, item 15): a
//! client that hangs up an HTTP/1.1 connection, and one that resets its HTTP/2 stream on a
//! connection it keeps. In both cases hyper drops the request's future; the quota the request
//! reserved must be settled then (it was sent upstream, so it is charged its estimate), not
//! left held until a restart, and the request must leave its access log line and its
//! `provider_request` audit line with the outcome `client_gone`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use cliproxy_e2e::canned::openai_chat;
use cliproxy_e2e::faulty::{End, FaultyUpstream, Step, head};
use cliproxy_e2e::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;

const ALICE_KEY: &str = "cpk-e2e-cancel-alice-key-5d0b8e2f9a61c374";

/// The provider's daily quota.
const QUOTA: u64 = 8_000;

/// Each abandoned request's `max_tokens`: two of them hold over 6,000 of the 8,000 tokens,
/// so a leak shows in the quota left while the other key can still be served.
const ABANDONED_MAX_TOKENS: u64 = 3_000;

/// What an abandoned request reserves, and is charged: its `max_tokens` and the estimate of
/// its prompt, a token per four bytes of its body (issue 18, item 2).
fn abandoned_estimate() -> u64 {
    let body = serde_json::to_vec(&chat_body("metered-stall", ABANDONED_MAX_TOKENS)).unwrap();
    ABANDONED_MAX_TOKENS + (body.len() as u64).div_ceil(4)
}

/// A scripted upstream: a request for `metered-stall` is reported on the channel and never
/// answered (the upstream reads until the gateway closes); any other is answered at once with
/// a completion that reports 26 tokens.
async fn upstream() -> (FaultyUpstream, mpsc::UnboundedReceiver<()>) {
    let (arrived, arrivals) = mpsc::unbounded_channel();
    let upstream = FaultyUpstream::start(move |request| {
        if request.contains("metered-stall") {
            let _ = arrived.send(());
            return vec![Step::Stall];
        }
        let body = openai_chat("metered-ok", "served").to_string();
        let mut reply = head(200, "application/json", Some(body.len() as u64));
        reply.extend_from_slice(body.as_bytes());
        vec![Step::Send(reply)]
    })
    .await;
    (upstream, arrivals)
}

/// The config: the keys `e2e` and `alice`, the audit log at `audit`, metrics on a free port,
/// and the provider `metered` (OpenAI at `upstream`) with a daily quota of [`QUOTA`].
fn write_config(harness: &Harness, upstream: &str, audit: &Path) {
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n\
         \x20 limits: {{upstream_first_byte_timeout: 60s}}\n\
         auth:\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n\
         \x20   - {{name: alice, key: \"{ALICE_KEY}\"}}\n  dir: {dir:?}\n\
         logging: {{level: debug, format: json, audit: {{enabled: true, file: {audit:?}}}}}\n\
         metrics: {{enabled: true, host: 127.0.0.1, port: 0}}\n\
         providers:\n  metered: {{type: openai, base_url: \"{upstream}\", models: [\"metered-*\"], \
         quota: {{limit: {QUOTA}, reset: daily}}}}\n",
        dir = harness.auth_dir().display().to_string(),
        audit = audit.display().to_string(),
    );
    harness.write_config(&yaml);
    harness.vault_add("metered", "metered-key", "sk-e2e-cancel-upstream-4a7c19e05b3d", None);
}

/// A chat completion request for `model` with `max_tokens`, by the key `key`.
fn chat(
    client: &reqwest::Client,
    gateway: &Gateway,
    key: &str,
    model: &str,
    max_tokens: u64,
) -> reqwest::RequestBuilder {
    client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(key)
        .json(&chat_body(model, max_tokens))
}

fn chat_body(model: &str, max_tokens: u64) -> Value {
    json!({"model": model, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hi"}]})
}

/// The metrics listener's address, from its log line.
async fn metrics_addr(gateway: &Gateway) -> SocketAddr {
    let entry = gateway.wait_for_log(|e| e["msg"] == "metrics listening").await;
    entry["addr"].as_str().unwrap().parse().unwrap()
}

/// `cliproxy_quota_remaining{provider="metered"}` as the metrics listener shows it now.
async fn quota_remaining(metrics: SocketAddr) -> u64 {
    let text = client().get(format!("http://{metrics}/metrics")).send().await.unwrap();
    let text = text.text().await.unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("cliproxy_quota_remaining{provider=\"metered\"} "))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
        .unwrap_or_else(|| panic!("no quota figure for `metered` in:\n{text}"))
}

/// The audit file's complete lines, parsed.
fn audit_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

/// Waits until `found` finds what it looks for in the audit file's lines. The audit log is
/// written by its own thread, off the request path, and announces no line anywhere a test
/// can wait on, so this polls (backing off to 200 ms) until [`WAIT`].
async fn wait_for_audit<T>(path: &Path, found: impl Fn(&[Value]) -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(found) = found(&audit_lines(path)) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "the audit lines looked for did not appear:\n{:#?}",
            audit_lines(path)
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Checks what an abandoned request left: its access log line and its audit line, both
/// saying `client_gone` (found by the request id of its `auth_success` audit line).
async fn assert_reported_gone(gateway: &Gateway, audit: &Path, expected: usize) {
    // The key `e2e` sent only the abandoned requests: its authentications name them.
    let ids: Vec<String> = wait_for_audit(audit, |lines| {
        let ids: Vec<String> = lines
            .iter()
            .filter(|l| l["event_type"] == "auth_success" && l["user_id"] == "e2e")
            .map(|l| l["request_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        (ids.len() >= expected).then_some(ids)
    })
    .await;
    assert_eq!(ids.len(), expected, "{ids:?}");
    for id in &ids {
        let line =
            gateway.wait_for_log(|e| e["msg"] == "request" && e["request_id"] == id.as_str()).await;
        assert_eq!(line["result"], "client_gone", "{line}");
        assert_eq!(line["status"], 499, "{line}");
        assert_eq!(line["provider"], "metered", "{line}");
        let event = wait_for_audit(audit, |lines| {
            lines
                .iter()
                .find(|l| l["event_type"] == "provider_request" && l["request_id"] == id.as_str())
                .cloned()
        })
        .await;
        assert_eq!(event["details"]["outcome"], "client_gone", "{event}");
        assert_eq!(event["user_id"], "e2e", "{event}");
        assert_eq!(event["result"], "499", "{event}");
    }
}

/// The scenario over HTTP/1.1: two requests whose clients hang up while the upstream
/// is still thinking. Before the fix nothing was settled: the 6,000 tokens stayed held (the
/// metric still said 8,000 left, the quota had 2,000), no line was written, and only a
/// restart gave them back.
#[tokio::test]
async fn a_client_that_hangs_up_before_the_answer_is_charged_once_and_reported() {
    let (upstream, mut arrivals) = upstream().await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    write_config(&harness, &upstream.url(), &audit);
    let gateway = harness.start().await;
    let metrics = metrics_addr(&gateway).await;
    assert_eq!(quota_remaining(metrics).await, QUOTA);

    // Two clients send, and hang up once the upstream has the request (the way an SDK's
    // timeout or a closed browser tab ends it): dropping the task closes the connection.
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let request = chat(&client(), &gateway, CLIENT_KEY, "metered-stall", ABANDONED_MAX_TOKENS);
        tasks.push(tokio::spawn(request.send()));
        tokio::time::timeout(WAIT, arrivals.recv()).await.unwrap().unwrap();
    }
    for task in &tasks {
        task.abort();
    }
    // The gateway dropped both requests: it closed both upstream connections.
    let ended = upstream.wait_ended("metered-stall").await;
    assert_eq!(ended.len(), 2);
    assert!(ended.iter().all(|c| c.end == Some(End::PeerGone)), "{ended:?}");
    assert_reported_gone(&gateway, &audit, 2).await;

    // Each was charged its estimate, once: the quota shows it, and nothing more is held.
    let left = QUOTA - 2 * abandoned_estimate();
    assert_eq!(quota_remaining(metrics).await, left);
    // The other key is served on what is left, and charged its real usage (26 tokens).
    let response = chat(&client(), &gateway, ALICE_KEY, "metered-ok", ABANDONED_MAX_TOKENS)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    gateway
        .wait_for_log(|e| {
            e["msg"] == "request" && e["client"] == "alice" && e["result"] == "complete"
        })
        .await;
    assert_eq!(quota_remaining(metrics).await, left - 26);
}

/// The same over HTTP/2: the client resets its stream (`RST_STREAM`) and keeps the
/// connection, on which the other key is then served.
#[tokio::test]
async fn a_reset_http2_stream_is_charged_once_and_reported() {
    let (upstream, mut arrivals) = upstream().await;
    let harness = Harness::new();
    let audit = harness.auth_dir().with_file_name("audit.log");
    write_config(&harness, &upstream.url(), &audit);
    let gateway = harness.start().await;
    let metrics = metrics_addr(&gateway).await;
    let h2 = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();

    // Dropping an HTTP/2 request before its answer resets its stream only.
    let request = chat(&h2, &gateway, CLIENT_KEY, "metered-stall", ABANDONED_MAX_TOKENS);
    let task = tokio::spawn(request.send());
    tokio::time::timeout(WAIT, arrivals.recv()).await.unwrap().unwrap();
    task.abort();
    let ended = upstream.wait_ended("metered-stall").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].end, Some(End::PeerGone), "{ended:?}");
    assert_reported_gone(&gateway, &audit, 1).await;
    assert_eq!(quota_remaining(metrics).await, QUOTA - abandoned_estimate());

    // The connection is still there, and the other key is served on it.
    let response =
        chat(&h2, &gateway, ALICE_KEY, "metered-ok", ABANDONED_MAX_TOKENS).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    response.text().await.unwrap();
    let served = gateway
        .wait_for_log(|e| {
            e["msg"] == "request" && e["client"] == "alice" && e["result"] == "complete"
        })
        .await;
    assert_eq!(served["status"], 200, "{served}");
    // Same client address and port: the same connection, so only the stream was reset.
    let gone = gateway.log_entries("request").into_iter().find(|e| e["result"] == "client_gone");
    assert_eq!(gone.map(|e| e["peer"].clone()), Some(served["peer"].clone()), "{served}");
    assert_eq!(quota_remaining(metrics).await, QUOTA - abandoned_estimate() - 26);
}
