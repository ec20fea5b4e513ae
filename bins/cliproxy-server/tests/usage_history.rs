//! The usage history through the whole gateway (issue 22, SPEC §10): requests of two client
//! keys to a mock upstream over real TCP, in OpenAI and Anthropic formats, with cached
//! tokens, a priced model, an unpriced one and an upstream error, then `GET
//! /v0/management/usage` shows each key's and each model's requests, errors, tokens by kind,
//! cost and unpriced requests; a hostile query is a 400 that says what is wrong.

#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

mod common;

use bytes::Bytes;
use cliproxy_core::Secret;
use cliproxy_e2e::{MockUpstream, Reply};
use cliproxy_gateway::Gateway;
use cliproxy_server::compose;
use cliproxy_server::config::Config;
use cliproxy_vault::Credential;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

use crate::common::Captured;

const ALICE: &str = "client-key-alice-0123456789abcdef";
const BOB: &str = "client-key-bob-0123456789abcdef00";
const MANAGEMENT: &str = "management-key-usage-0123456789";

async fn call(gateway: &Gateway, request: Request<Full<Bytes>>) -> (StatusCode, Value) {
    let response = gateway.handle(request, "127.0.0.1:40000".parse().unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!(String::from_utf8_lossy(&bytes).to_string()));
    (parts.status, value)
}

async fn chat(gateway: &Gateway, key: &str, model: &str, text: &str) -> StatusCode {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    call(gateway, request).await.0
}

async fn message(gateway: &Gateway, key: &str, model: &str) -> StatusCode {
    let body = json!({"model": model, "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}]});
    let request = Request::post("/v1/messages")
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", key)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    call(gateway, request).await.0
}

async fn usage(gateway: &Gateway, query: &str) -> (StatusCode, Value) {
    let request = Request::get(format!("/v0/management/usage{query}"))
        .header("x-management-key", MANAGEMENT)
        .body(Full::new(Bytes::new()))
        .unwrap();
    call(gateway, request).await
}

/// The upstream: OpenAI replies report 1000 prompt tokens (400 of them cached) and 500
/// completion tokens, or a 400 when the prompt says `fail`; Anthropic replies report 100
/// uncached prompt tokens, 900 read from the cache and 50 output tokens.
async fn upstream() -> MockUpstream {
    MockUpstream::start(|request| {
        let body = serde_json::from_slice::<Value>(&request.body).unwrap();
        if request.path_and_query.starts_with("/v1/messages") {
            return Reply::ok(json!({"id": "msg_1", "type": "message", "role": "assistant",
                "model": body["model"], "content": [{"type": "text", "text": "Hello"}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": {"input_tokens": 100, "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 900, "output_tokens": 50}}));
        }
        if body.to_string().contains("fail") {
            return Reply::Json {
                status: 400,
                headers: Vec::new(),
                body: json!({"error": {"message": "bad request", "type": "invalid_request_error"}})
                    .to_string(),
            };
        }
        Reply::ok(json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello"}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500,
                "prompt_tokens_details": {"cached_tokens": 400}}}))
    })
    .await
}

fn entry<'a>(report: &'a Value, group: &str) -> &'a Value {
    report["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["group"] == group)
        .unwrap_or_else(|| panic!("no {group} in {report}"))
}

fn figures(entry: &Value) -> Value {
    json!([
        entry["requests"],
        entry["errors"],
        entry["input_tokens"],
        entry["output_tokens"],
        entry["cache_read_tokens"],
        entry["cache_write_tokens"],
        entry["cost_usd"],
        entry["unpriced_requests"]
    ])
}

#[tokio::test]
async fn usage_shows_each_key_and_model_with_tokens_cost_and_unpriced_requests() {
    let upstream = upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [{{name: alice, key: \"{ALICE}\"}}, {{name: bob, key: \"{BOB}\"}}]\n  dir: {:?}\n\
         management: {{secret_key: \"{MANAGEMENT}\"}}\n\
         pricing:\n  models:\n    gpt-4o: {{input: 2, output: 10, cache_read: 1}}\n\
         providers:\n  oa: {{type: openai, base_url: \"{url}\", models: [gpt-4o, llama-3]}}\n  \
         an: {{type: claude, base_url: \"{url}\", models: [claude-sonnet-4-5]}}\n",
        dir.path().join("auths").display().to_string(),
        url = upstream.url()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let store = config.auth.build().unwrap();
    for provider in ["oa", "an"] {
        let token = Secret::from(format!("sk-usage-{provider}-0123456789"));
        store.put(&Credential::new_api_key(provider, token).unwrap()).unwrap();
    }
    let captured = Captured::default();
    let gateway = compose::gateway_with_clock(&config, &captured.logger(), None).unwrap();

    assert_eq!(chat(&gateway, ALICE, "gpt-4o", "Hi").await, StatusCode::OK);
    assert_eq!(chat(&gateway, ALICE, "gpt-4o", "Hi again").await, StatusCode::OK);
    assert_eq!(chat(&gateway, ALICE, "gpt-4o", "fail").await, StatusCode::BAD_REQUEST);
    assert_eq!(chat(&gateway, BOB, "llama-3", "Hi").await, StatusCode::OK);
    assert_eq!(message(&gateway, BOB, "claude-sonnet-4-5").await, StatusCode::OK);
    // A request refused before routing (no key) is not history.
    assert_eq!(chat(&gateway, "wrong-key-0123456789abcdef", "gpt-4o", "Hi").await, 401);

    // A complete body reports from a task of its own (`body.rs`), which runs once this test
    // yields; nothing signals it, so `/usage` is read after each yield until the five
    // requests are there, within a deadline.
    let deadline = std::time::Instant::now() + cliproxy_e2e::WAIT;
    let by_key = loop {
        tokio::task::yield_now().await;
        let (status, report) = usage(&gateway, "").await;
        assert_eq!(status, StatusCode::OK, "{report}");
        if report["totals"]["requests"] == 5 {
            break report;
        }
        assert!(std::time::Instant::now() < deadline, "{report}");
    };
    assert_eq!(by_key["by"], "key");
    // alice: gpt-4o at $2/$10 and $1 per 1M cached: 600 × 2 + 400 × 1 + 500 × 10 = 6600
    // micro-dollars per reply, twice; the upstream's 400 is an error that cost nothing.
    assert_eq!(figures(entry(&by_key, "alice")), json!([3, 1, 2000, 1000, 800, 0, "0.013200", 0]));
    // bob: llama-3 is unpriced (its tokens count, its cost is unknown); claude-sonnet-4-5 at
    // the built-in $3/$15 and $0.30 per 1M cached: 100 × 3 + 900 × 0.3 + 50 × 15 = 1320.
    assert_eq!(figures(entry(&by_key, "bob")), json!([2, 0, 2000, 550, 1300, 0, "0.001320", 1]));
    assert_eq!(figures(&by_key["totals"]), json!([5, 1, 4000, 1550, 2100, 0, "0.014520", 1]));

    let (_, by_model) = usage(&gateway, "?by=model&bucket=day&from=2h").await;
    assert_eq!(by_model["bucket"], "day");
    assert_eq!(
        figures(entry(&by_model, "claude-sonnet-4-5")),
        json!([1, 0, 1000, 50, 900, 0, "0.001320", 0])
    );
    assert_eq!(
        figures(entry(&by_model, "llama-3")),
        json!([1, 0, 1000, 500, 400, 0, "0.000000", 1])
    );
    let (_, by_provider) = usage(&gateway, "?by=provider").await;
    assert_eq!(entry(&by_provider, "oa")["requests"], 4);
    assert_eq!(entry(&by_provider, "an")["requests"], 1);

    // Keys are named, never shown: not in the answers, not in the log.
    let log = captured.text();
    for secret in [ALICE, BOB, MANAGEMENT] {
        for text in [by_key.to_string(), by_model.to_string(), by_provider.to_string(), log.clone()]
        {
            assert!(!text.contains(secret), "a key leaked into: {text}");
        }
    }
    assert!(log.contains("client=alice"), "the log names the key: {log}");

    // Hostile queries: a clear 400, in the management API's JSON error form.
    for (query, expected) in [
        ("?from=last-week", "`from` is `last-week`"),
        ("?from=1h&to=3h", "must be before `to`"),
        ("?from=91d", "before the history kept"),
        ("?by=key&by=model", "`by` is given more than once"),
        ("?user=alice", "unknown parameter `user`"),
    ] {
        let (status, answer) = usage(&gateway, query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {answer}");
        assert!(answer.to_string().contains(expected), "{query}: {answer}");
    }
}

/// `cliproxy-server usage` against a config whose state store does not exist yet: `--help`
/// describes it, a bad `--since` or `--by` is a usage error (exit 2) that says what to write,
/// and an empty history prints an empty report (or a table saying so), not an error.
#[test]
fn the_usage_command_explains_itself_and_refuses_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("auth: {{dir: {:?}}}\n", dir.path().join("auths").display().to_string()),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cliproxy-server"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("CLIPROXY_SANDBOX__REQUIRE_NON_ROOT", "false")
            .output()
            .unwrap()
    };
    let help = run(&["usage", "--help"]);
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(help.status.success(), "{text}");
    for flag in ["--by", "--since", "--bucket", "--json", "UNPRICED"] {
        assert!(text.contains(flag), "{flag} in {text}");
    }
    for (args, expected) in [
        (&["usage", "--since", "yesterday"][..], "--since is `yesterday`"),
        (&["usage", "--since", "7d&by=model"][..], "--since is `7d&by=model`"),
        (&["usage", "--since", "4000d"][..], "goes back more than 3650d"),
        (&["usage", "--by", "user"][..], "invalid value 'user'"),
    ] {
        let output = run(args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let output = run(&["usage", "--json", "--by", "model", "--bucket", "day"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((&report["by"], &report["bucket"]), (&json!("model"), &json!("day")));
    assert_eq!(report["totals"]["requests"], 0);
    assert!(!dir.path().join("auths/.state.db").exists(), "a read creates no store");
    let output = run(&["usage"]);
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(table.contains("(no requests in this range)") && table.contains("TOTAL"), "{table}");

    // A retention shorter than the default day narrows the default range; asking past it is
    // refused; a retention out of bounds is a configuration error naming its key.
    let auth = format!("auth: {{dir: {:?}}}\n", dir.path().join("auths").display().to_string());
    std::fs::write(&config, format!("{auth}usage: {{retention: 2h}}\n")).unwrap();
    let output = run(&["usage", "--json"]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let from = report["from"].as_str().unwrap().to_owned();
    let output = run(&["usage", "--since", "24h"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("before the history kept (usage.retention is 2h"), "{stderr}");
    assert!(stderr.contains(&from), "the oldest hour kept is the default start: {stderr}");
    std::fs::write(&config, format!("{auth}usage: {{retention: 30s}}\n")).unwrap();
    let output = run(&["usage"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(78), "{stderr}");
    assert!(stderr.contains("`usage.retention` is 30s; it must be at least 1h"), "{stderr}");
}

/// Issue 22: an OpenAI chat client served by an Anthropic provider gets its whole reply
/// translated, and OpenAI's format has no field for cache writes; the usage is read from the
/// provider's own reply before translation, so the history keeps the cache writes and prices
/// them at Anthropic's cache-write price, not as plain input.
#[tokio::test]
async fn a_translated_reply_keeps_the_providers_cache_writes() {
    let upstream = MockUpstream::start(|request| {
        let body = serde_json::from_slice::<Value>(&request.body).unwrap();
        assert!(request.path_and_query.starts_with("/v1/messages"), "{}", request.path_and_query);
        Reply::ok(json!({"id": "msg_2", "type": "message", "role": "assistant",
            "model": body["model"], "content": [{"type": "text", "text": "Hello"}],
            "stop_reason": "end_turn", "stop_sequence": null,
            "usage": {"input_tokens": 100, "cache_creation_input_tokens": 1000,
                "cache_read_input_tokens": 0, "output_tokens": 50}}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [{{name: alice, key: \"{ALICE}\"}}]\n  dir: {:?}\n\
         management: {{secret_key: \"{MANAGEMENT}\"}}\n\
         providers:\n  an: {{type: claude, base_url: \"{}\", models: [claude-sonnet-4-5]}}\n",
        dir.path().join("auths").display().to_string(),
        upstream.url()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let token = Secret::from("sk-usage-an-translated-0123456789".to_owned());
    config.auth.build().unwrap().put(&Credential::new_api_key("an", token).unwrap()).unwrap();
    let gateway =
        compose::gateway_with_clock(&config, &Captured::default().logger(), None).unwrap();

    assert_eq!(chat(&gateway, ALICE, "claude-sonnet-4-5", "Hi").await, StatusCode::OK);
    // As above: the body's report runs in a task of its own, with no signal to wait on.
    let deadline = std::time::Instant::now() + cliproxy_e2e::WAIT;
    let report = loop {
        tokio::task::yield_now().await;
        let (_, report) = usage(&gateway, "?by=model").await;
        if report["totals"]["requests"] == 1 {
            break report;
        }
        assert!(std::time::Instant::now() < deadline, "{report}");
    };
    // 100 × $3 + 1000 × $3.75 (cache write) + 50 × $15 per 1M = 300 + 3750 + 750 micro-dollars;
    // read from the client's reply it would be 1100 × $3 + 750 = 4050.
    assert_eq!(
        figures(entry(&report, "claude-sonnet-4-5")),
        json!([1, 0, 1100, 50, 0, 1000, "0.004800", 0])
    );
}
