//! The cost of a request through the whole gateway (issue 22, SPEC §10), against a mock
//! upstream over real TCP that reports a known usage: the `provider_request` audit event and
//! the access line carry the cost under the price table — a built-in price, a configured one
//! over a built-in, a configured glob, an alias priced under its upstream name — and an
//! unpriced model shows as unpriced, never as free. A bad price in the file is refused at
//! load, naming its key.

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

const KEY: &str = "client-key-pricing-0123456789abcdef";
const TOKEN: &str = "sk-vault-pricing-credential-4242";

/// Sends a chat completion for `model` and returns the request id of the answer.
async fn chat(gateway: &Gateway, model: &str) -> String {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]});
    let request = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = gateway.handle(request, "127.0.0.1:40000".parse().unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(parts.status, StatusCode::OK, "{model}: {}", String::from_utf8_lossy(&bytes));
    parts.headers[cliproxy_gateway::REQUEST_ID_HEADER].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn the_audit_event_and_the_access_line_carry_the_cost_of_the_reported_usage() {
    // Every answer reports 1000 prompt and 500 completion tokens.
    let upstream = MockUpstream::start(|request| {
        let model = serde_json::from_slice::<Value>(&request.body).unwrap()["model"].clone();
        Reply::ok(json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": model, "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "Hello"}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}}))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "auth:\n  api_keys: [{{name: tester, key: \"{KEY}\"}}]\n  dir: {:?}\n\
         logging: {{audit: {{enabled: true, file: {:?}}}}}\n\
         pricing:\n  models:\n    gpt-4o: {{input: 5, output: '20.00'}}\n    'my-*': {{input: 0.1, output: 0.2}}\n\
         providers:\n  oa: {{type: openai, base_url: \"{}\", models: [gpt-4o, gpt-4o-mini, {{name: fast, upstream: gpt-4o-mini}}, 'my-*', 'llama-*']}}\n",
        dir.path().join("auths").display().to_string(),
        dir.path().join("audit.log").display().to_string(),
        upstream.url()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let store = config.auth.build().unwrap();
    store.put(&Credential::new_api_key("oa", Secret::from(TOKEN.to_owned())).unwrap()).unwrap();
    let captured = Captured::default();
    let gateway = compose::gateway_with_clock(&config, &captured.logger(), None).unwrap();

    // Model, what it costs for 1000 input and 500 output tokens (None: unpriced).
    let cases = [
        // Built in: $0.15 and $0.60 per 1M: 150 + 300 micro-dollars.
        ("gpt-4o-mini", Some("0.000450")),
        // The alias is billed by the provider as gpt-4o-mini.
        ("fast", Some("0.000450")),
        // Configured over the built-in $2.50/$10: $5 and $20 per 1M.
        ("gpt-4o", Some("0.015000")),
        // A configured glob: $0.1 and $0.2 per 1M: 100 + 100 micro-dollars.
        ("my-model", Some("0.000200")),
        // No price anywhere.
        ("llama-3", None),
    ];
    let mut ids = Vec::new();
    for (model, _) in &cases {
        ids.push(chat(&gateway, model).await);
    }
    // A complete body reports from a task of its own (`body.rs`), which runs once this test
    // yields; the file sink gives no signal of its own, so the log is read after each yield
    // and flush, within a deadline.
    let deadline = std::time::Instant::now() + cliproxy_e2e::WAIT;
    let events: Vec<Value> = loop {
        tokio::task::yield_now().await;
        gateway.flush_audit();
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap_or_default();
        let events: Vec<Value> = audit
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .filter(|line| line["event_type"] == "provider_request")
            .collect();
        if events.len() == cases.len() {
            break events;
        }
        assert!(std::time::Instant::now() < deadline, "provider_request events: {audit}");
    };
    let log = captured.text();
    for ((model, cost), id) in cases.iter().zip(&ids) {
        let event = events.iter().find(|e| e["request_id"] == id.as_str()).unwrap();
        let details = &event["details"];
        assert_eq!(
            (&details["input_tokens"], &details["output_tokens"]),
            (&json!(1000), &json!(500))
        );
        let line = log.lines().find(|l| l.contains(&format!("request_id={id}"))).unwrap();
        match cost {
            Some(cost) => {
                assert_eq!(details["cost_usd"], *cost, "{model}: {event}");
                assert!(details.get("priced").is_none(), "{model}: {event}");
                assert!(line.contains(&format!("cost_usd={cost}")), "{model}: {line}");
                assert!(line.contains("priced=true"), "{model}: {line}");
            }
            None => {
                assert!(details.get("cost_usd").is_none(), "{model}: {event}");
                assert_eq!(details["priced"], false, "{model}: {event}");
                // Absent, as every other field without a value (`error=`): not zero.
                assert!(line.contains(" cost_usd= "), "{model}: {line}");
                assert!(line.contains("priced=false"), "{model}: {line}");
            }
        }
    }
}

#[test]
fn a_bad_price_is_refused_at_load_naming_its_key() {
    for (pricing, expected) in [
        (
            "{models: {gpt-4o: {input: -2.5, output: 10}}}",
            "`pricing.models.\"gpt-4o\".input`: is negative",
        ),
        (
            "{models: {gpt-4.1: {input: 2, output: '8.1234567'}}}",
            "`pricing.models.\"gpt-4.1\".output`: has more than 6 decimals",
        ),
        (
            "{models: {m: {input: 20000, output: 1}}}",
            "`pricing.models.\"m\".input`: is above $10000",
        ),
        ("{models: {m: {input: 1, output: 1, cache: 1}}}", "`pricing.models.m.cache`: unknown key"),
        ("{model: {}}", "`pricing.model`: unknown key"),
    ] {
        let error = Config::from_yaml(&format!("pricing: {pricing}\n")).unwrap_err().to_string();
        assert!(error.contains(expected), "{pricing}: {error}");
    }
}
