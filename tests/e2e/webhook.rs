//! The `notify_admin` alert webhook (`docs/security/operations.md`, "Alert rules in the
//! gateway"): a wrong client key fires the rule, and a second mock acting as the receiver gets
//! the documented JSON with no secret in it. A webhook that is down — a refused port, or one
//! that accepts and never answers — never holds up the client's request: the client's answer
//! arrives while the stalled webhook call is still open.

use cliproxy_e2e::*;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::assert_no_secrets;

const WRONG_KEY: &str = "cpk-e2e-wrong-key-for-the-alert-71a4c0";
/// The webhook URL's path is a bearer secret (Slack-style): it must never be logged.
const WEBHOOK_SECRET: &str = "whk-e2e-path-secret-9f3b5d27";

/// A receiver that reports each request it gets on a channel as soon as it has it, and
/// answers with `reply` (a [`Reply::Stall`] never answers).
async fn receiver(
    reply: impl Fn() -> Reply + Send + Sync + 'static,
) -> (MockUpstream, mpsc::UnboundedReceiver<Recorded>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mock = MockUpstream::start(move |request| {
        let _ = tx.send(request.clone());
        reply()
    })
    .await;
    (mock, rx)
}

/// A gateway with one `notify_admin` rule on auth failures whose webhook is `webhook`; the
/// rule fires on the first failure.
async fn gateway(harness: &Harness, webhook: &str) -> Gateway {
    harness.config(
        "",
        &format!(
            "providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n\
             alerts:\n  - {{name: \"client key spray\", condition: \"auth_failures > 0\", \
             duration: 1m, action: notify_admin, webhook: \"{webhook}\", webhook_timeout: 1h}}\n"
        ),
    );
    harness.start().await
}

/// A chat completion with `key`, answered within [`WAIT`] or the test fails.
async fn chat(gateway: &Gateway, key: &str) -> u16 {
    let send = client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(key)
        .json(&json!({"model": "mock-gpt", "messages": [{"role": "user", "content": "Hi"}]}))
        .send();
    let response = tokio::time::timeout(WAIT, send)
        .await
        .unwrap_or_else(|_| {
            panic!("no answer to the client within {WAIT:?}: held up by the webhook")
        })
        .unwrap();
    let status = response.status().as_u16();
    // The whole answer, not just its head.
    response.bytes().await.unwrap();
    status
}

async fn next_webhook_call(calls: &mut mpsc::UnboundedReceiver<Recorded>) -> Recorded {
    tokio::time::timeout(WAIT, calls.recv())
        .await
        .expect("the webhook was not called")
        .expect("the receiver stopped")
}

#[tokio::test]
async fn an_alert_is_posted_to_the_webhook_without_secrets() {
    let (hook, mut calls) = receiver(|| Reply::ok(json!({"ok": true}))).await;
    let harness = Harness::new();
    let gateway = gateway(&harness, &format!("{}/services/T0/{WEBHOOK_SECRET}", hook.url())).await;

    assert_eq!(chat(&gateway, WRONG_KEY).await, 401);
    let call = next_webhook_call(&mut calls).await;
    assert_eq!(call.method, "POST");
    assert_eq!(call.path_and_query, format!("/services/T0/{WEBHOOK_SECRET}"));
    assert_eq!(call.header("content-type"), "application/json");
    let body: Value = serde_json::from_slice(&call.body).unwrap();
    let at = body["at"].as_str().unwrap_or_else(|| panic!("no `at`: {body}"));
    // RFC 3339 in UTC to the second, e.g. `2026-12-07T09:41:07Z`.
    let shape: String = at.chars().map(|c| if c.is_ascii_digit() { '0' } else { c }).collect();
    assert_eq!(shape, "0000-00-00T00:00:00Z", "`at` is not RFC 3339: {body}");
    // Exactly the documented fields: `{"alert", "action", "count", "window_s", "ip", "at"}`,
    // and `suppressed` (0: the rule had not fired before).
    assert_eq!(
        body,
        json!({"alert": "client key spray", "action": "notify_admin", "count": 1,
               "window_s": 60, "suppressed": 0, "ip": "127.0.0.1", "at": at}),
    );
    // Neither key, nor the webhook's own secret, nor any credential header goes out.
    assert!(call.header("authorization").is_empty(), "{call:?}");
    for secret in [WRONG_KEY, CLIENT_KEY] {
        assert!(!call.contains(secret), "a client key went to the webhook: {call:?}");
    }
    assert!(!String::from_utf8_lossy(&call.body).contains(WEBHOOK_SECRET), "{body}");

    let fired = gateway.wait_for_log(|e| e["msg"] == "alert fired").await;
    assert_eq!(fired["rule"], "client key spray", "{fired}");
    assert_no_secrets(&gateway.logs(), &[WRONG_KEY, CLIENT_KEY, WEBHOOK_SECRET]);
}

#[tokio::test]
async fn a_stalled_webhook_never_holds_up_the_request() {
    // The receiver accepts the webhook call and never answers; the rule's timeout is an hour,
    // so the call stays open for the whole test.
    let (hook, mut calls) = receiver(|| Reply::Stall).await;
    let harness = Harness::new();
    let gateway = gateway(&harness, &format!("{}/services/T0/{WEBHOOK_SECRET}", hook.url())).await;

    // The refused request fires the alert; its answer arrives (within WAIT, which is far
    // shorter than the webhook's hour) ...
    assert_eq!(chat(&gateway, WRONG_KEY).await, 401);
    // ... and the webhook call was made and is still open: the receiver has it, has not
    // answered, and the gateway has not given up on it.
    let call = next_webhook_call(&mut calls).await;
    assert_eq!(call.method, "POST");
    // With the call open, the gateway goes on answering: another refusal and a success.
    assert_eq!(chat(&gateway, WRONG_KEY).await, 401);
    assert_eq!(chat(&gateway, CLIENT_KEY).await, 200);
    assert!(gateway.log_entries("alert webhook timed out").is_empty(), "{}", gateway.logs());
    assert_no_secrets(&gateway.logs(), &[WRONG_KEY, CLIENT_KEY, WEBHOOK_SECRET]);
}

#[tokio::test]
async fn a_refused_webhook_never_holds_up_the_request_and_is_logged() {
    let refused = refused_url().await;
    let harness = Harness::new();
    let gateway = gateway(&harness, &format!("{refused}/services/T0/{WEBHOOK_SECRET}")).await;

    assert_eq!(chat(&gateway, WRONG_KEY).await, 401);
    let failed = gateway.wait_for_log(|e| e["msg"] == "alert webhook could not be reached").await;
    assert_eq!(failed["host"], "127.0.0.1", "{failed}");
    assert_eq!(chat(&gateway, CLIENT_KEY).await, 200);
    assert_no_secrets(&gateway.logs(), &[WRONG_KEY, CLIENT_KEY, WEBHOOK_SECRET]);
}
