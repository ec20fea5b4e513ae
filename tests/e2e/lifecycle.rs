//! The process around the gateway: health endpoints, graceful shutdown on SIGTERM with a
//! stream in flight, and configuration errors that stop it with exit code 78.

use std::sync::Arc;

use cliproxy_e2e::canned::*;
use cliproxy_e2e::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::assert_no_secrets;

const TOKEN: &str = "sk-vault-lifecycle-token-5150";

#[tokio::test]
async fn sigterm_finishes_the_stream_in_flight_then_exits_0() {
    let gate = Arc::new(Notify::new());
    let upstream_gate = Arc::clone(&gate);
    let words = ["one", " two", " three"];
    let mock = MockUpstream::start(move |_| Reply::Sse {
        events: openai_stream("gpt-4o", &words),
        hold_after: 1,
        gate: Some(Arc::clone(&upstream_gate)),
    })
    .await;
    let harness = Harness::new();
    harness.config(
        "",
        &format!(
            "providers:\n  oa: {{type: openai, base_url: \"{}\", models: [\"gpt-*\"]}}\n",
            mock.url()
        ),
    );
    harness.vault_add("oa", "oa-1", TOKEN, None);
    let mut gateway = harness.start().await;
    let client = client();

    let health = client.get(format!("{}/healthz", gateway.url())).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client.get(format!("{}/readyz", gateway.url())).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "ready");

    let mut response = client
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "gpt-4o", "stream": true, "messages": [{"role": "user", "content": "count"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut seen = String::new();
    read_until(&mut response, &mut seen, "\"one\"").await;

    gateway.terminate();
    gateway
        .wait_for_log(|e| e["msg"].as_str().is_some_and(|m| m.starts_with("shutting down")))
        .await;
    // No new connections once shutdown has begun.
    assert!(
        tokio::net::TcpStream::connect(gateway.addr()).await.is_err(),
        "the listener still accepts connections after SIGTERM"
    );

    // The stream in flight still completes.
    gate.notify_one();
    read_to_end(&mut response, &mut seen).await;
    assert!(seen.contains("\" three\"") && seen.contains("data: [DONE]"), "{seen}");
    let status = gateway.wait().await;
    assert_eq!(status.code(), Some(0), "logs:\n{}", gateway.logs());
    let logs = gateway.logs();
    assert!(gateway.log_entries("all connections finished").len() == 1, "{logs}");
    assert_no_secrets(&logs, &[CLIENT_KEY, TOKEN]);
}

#[tokio::test]
async fn configuration_errors_exit_78_naming_the_key() {
    let harness = Harness::new();
    harness.config("max_body_bytez: 10", "providers: {}\n");
    let output = harness.run(&["serve"]).await;
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("server.limits.max_body_bytez"), "{stderr}");

    harness.config(
        "",
        "providers:\n  oa: {type: openai, models: [\"gpt-*\"], base_url: \"ftp://example\"}\n",
    );
    let output = harness.run(&["serve"]).await;
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("providers.oa.base_url"), "{stderr}");
    assert_no_secrets(&stderr, &[CLIENT_KEY]);
}

#[tokio::test]
async fn models_lists_what_the_providers_serve() {
    let harness = Harness::new();
    harness
        .config("", "providers:\n  demo: {type: mock, models: [\"mock-small\", \"mock-large\"]}\n");
    let gateway = harness.start().await;
    let response = client()
        .get(format!("{}/v1/models", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let mut ids: Vec<&str> =
        body["data"].as_array().unwrap().iter().filter_map(|m| m["id"].as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, ["mock-large", "mock-small"]);
}

/// `healthcheck` (for container HEALTHCHECKs) exits 0 against a live gateway and 1, naming
/// the address, when nothing healthy answers.
#[tokio::test]
async fn healthcheck_probes_the_liveness_endpoint() {
    let harness = Harness::new();
    harness.config("", "");
    let mut gateway = harness.start().await;
    let addr = gateway.addr().to_string();
    let output = harness.run(&["healthcheck", "--addr", &addr]).await;
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains(&addr));
    gateway.terminate();
    gateway.wait().await;
    let output = harness.run(&["healthcheck", "--addr", &addr]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unhealthy") && stderr.contains(&addr), "{stderr}");
}
