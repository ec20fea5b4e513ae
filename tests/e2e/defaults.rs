//! Defaults that serve the real clients (issue 19): Claude Code asks for `max_tokens` 32000 or
//! 64000 on its first request, so neither a gateway with the default config nor the demo may
//! refuse it; a configured cap still refuses, naming the key to raise.

use cliproxy_e2e::*;
use serde_json::{Value, json};

/// What Claude Code sends on its first request, reduced to the fields validation reads.
fn claude_code_request(max_tokens: u64) -> Value {
    json!({"model": "mock-1", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hello"}]})
}

async fn messages(base: &str, key: &str, body: &Value) -> (u16, Value) {
    let response = client()
        .post(format!("{base}/v1/messages"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_default_config_sets_no_max_tokens_cap() {
    let harness = Harness::new();
    harness.config("", "providers:\n  demo: {type: mock, models: [\"mock-*\"]}\n");
    let gateway = harness.start().await;
    for max_tokens in [32_000, 64_000, 128_000] {
        let (status, body) =
            messages(&gateway.url(), CLIENT_KEY, &claude_code_request(max_tokens)).await;
        assert_eq!(status, 200, "max_tokens {max_tokens}: {body}");
    }
}

#[tokio::test]
async fn the_demo_cap_passes_claude_codes_defaults_and_names_its_key() {
    let (_demo, banner) = demo(&["--port", "0"]).await;
    let field = |prefix: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no `{prefix}` in the banner:\n{banner}"))
    };
    let (base, key) = (field("base url:"), field("client key:"));
    for max_tokens in [32_000, 64_000] {
        let (status, body) = messages(&base, &key, &claude_code_request(max_tokens)).await;
        assert_eq!(status, 200, "max_tokens {max_tokens}: {body}");
    }
    let (status, body) = messages(&base, &key, &claude_code_request(1_000_000)).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("server.security.request_validation.max_tokens"), "{body}");
}
