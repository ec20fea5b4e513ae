//! Dollar budgets of client keys through the real binary: a config key with a budget of
//! $0.01 a day spends it on priced requests to the built-in mock, is then refused with 429
//! `budget_exceeded` and a `Retry-After` to the next UTC midnight, the spend survives a
//! restart (the state store keeps it under a scope of its own), and the metrics show what
//! each key spent and what its budget has left. Another key, without a budget, is never held
//! by it.

use std::time::{SystemTime, UNIX_EPOCH};

use cliproxy_e2e::*;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

const PAYER_KEY: &str = "cpk-e2e-payer-key-5b1e9d0c7a3f2648";

/// The mock's model priced at $100 per 1M input and $200 per 1M output tokens: a request
/// costs exactly `input × 100 + output × 200` micro-dollars.
const INPUT_MICROS_PER_TOKEN: u64 = 100;
const OUTPUT_MICROS_PER_TOKEN: u64 = 200;

/// $0.01 in micro-dollars.
const BUDGET_MICROS: u64 = 10_000;

/// The config: the test key, `payer` with a daily budget of $0.01, the mock provider, its
/// model's price, the metrics listener, and a short state flush interval.
fn write_config(harness: &Harness) {
    let yaml = format!(
        "server:\n  host: 127.0.0.1\n  port: 0\n  shutdown_timeout: 10s\n\
         auth:\n  dir: {dir:?}\n  api_keys:\n    - {{name: e2e, key: \"{CLIENT_KEY}\"}}\n\
         \x20   - {{name: payer, key: \"{PAYER_KEY}\", budget: {{usd: 0.01, period: daily}}}}\n\
         logging: {{level: debug, format: json}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n\
         pricing:\n  models: {{\"mock-1\": {{input: 100, output: 200}}}}\n\
         metrics: {{enabled: true, host: 127.0.0.1, port: 0}}\n\
         state: {{flush_interval: 200ms}}\n",
        dir = harness.auth_dir().display().to_string(),
    );
    // The suite's sweep then checks every gateway's logs, audit and answers for the key too.
    sweep::plant(PAYER_KEY);
    harness.write_config(&yaml);
}

/// A chat completion for the mock with `key`: status, headers, body.
async fn chat(url: &str, key: &str) -> (u16, HeaderMap, Value) {
    let body = json!({"model": "mock-1", "max_tokens": 16,
        "messages": [{"role": "user", "content": "How much does this cost?"}]});
    let response = client()
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.json().await.unwrap_or(Value::Null))
}

/// What a served request cost, from the usage in its answer.
fn cost(body: &Value) -> u64 {
    let tokens = |field: &str| body["usage"][field].as_u64().unwrap();
    tokens("prompt_tokens") * INPUT_MICROS_PER_TOKEN
        + tokens("completion_tokens") * OUTPUT_MICROS_PER_TOKEN
}

/// Waits for the access line of the request with this `x-request-id`: it is written by the
/// finishing stage right after the request's budget was settled, so the next request sees
/// the spend and not an in-flight hold.
async fn wait_settled(gateway: &Gateway, headers: &HeaderMap) {
    let id = headers["x-request-id"].to_str().unwrap().to_owned();
    gateway.wait_for_log(|e| e["msg"] == "request" && e["request_id"] == id.as_str()).await;
}

/// The metrics listener's address, from its log line.
async fn scrape(gateway: &Gateway) -> String {
    let entry = gateway.wait_for_log(|e| e["msg"] == "metrics listening").await;
    let addr = entry["addr"].as_str().unwrap();
    client().get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap()
}

/// The value of the sample `series` (name and labels exactly as rendered), as text.
fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
}

/// Micro-dollars as the metrics render dollars.
fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// Seconds from now to the next 00:00 UTC.
fn seconds_to_midnight() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    86_400 - now % 86_400
}

/// A 429 of the spent budget: `budget_exceeded` in OpenAI's shape, naming the key's setting,
/// with a `Retry-After` to the next midnight (a few seconds of slack for the time between
/// the gateway's clock and ours).
fn assert_budget_refusal(status: u16, headers: &HeaderMap, body: &Value, when: &str) {
    assert_eq!(status, 429, "{when}: {body}");
    assert_eq!(body["error"]["code"], "budget_exceeded", "{when}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("auth.api_keys[payer].budget"), "{when}: {message}");
    assert!(!message.contains(PAYER_KEY), "{when}: the key leaked: {message}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    let expected = seconds_to_midnight();
    // A midnight passed between the answer and this check leaves `expected` near a day.
    assert!(
        retry.abs_diff(expected) <= 5 || expected > 86_390,
        "{when}: Retry-After {retry}, midnight in {expected}"
    );
}

#[tokio::test]
async fn a_config_keys_budget_is_spent_refused_and_remembered_after_a_restart() {
    let harness = Harness::new();
    write_config(&harness);
    let mut gateway = harness.start().await;
    let url = gateway.url();

    // Served while anything is left, each request settled before the next one.
    let mut spent = 0;
    let mut last_cost = 0;
    let refused = loop {
        let (status, headers, body) = chat(&url, PAYER_KEY).await;
        if status != 200 {
            break (status, headers, body);
        }
        assert!(spent < BUDGET_MICROS, "served after ${} of $0.01 was spent", usd(spent));
        last_cost = cost(&body);
        spent += last_cost;
        wait_settled(&gateway, &headers).await;
    };
    let (status, headers, body) = refused;
    assert_budget_refusal(status, &headers, &body, "spent");
    // Refused only once the budget was spent, and never more than one request past it.
    assert!(spent >= BUDGET_MICROS, "refused with ${} of $0.01 spent: {body}", usd(spent));
    assert!(spent - BUDGET_MICROS < last_cost, "over-spent by ${}", usd(spent - BUDGET_MICROS));
    // The key without a budget is served.
    assert_eq!(chat(&url, CLIENT_KEY).await.0, 200);

    let metrics = scrape(&gateway).await;
    let payer_spend = "cliproxy_client_spend_usd_total{client=\"payer\"}";
    let payer_left = "cliproxy_client_budget_remaining_usd{client=\"payer\"}";
    assert_eq!(sample(&metrics, payer_spend), Some(usd(spent).as_str()), "{metrics}");
    assert_eq!(sample(&metrics, payer_left), Some("0.000000"), "{metrics}");
    assert!(!metrics.contains(PAYER_KEY), "the key leaked into the metrics");

    // A graceful stop writes the spend; the next start still refuses the key, shows nothing
    // left from its first scrape, and the store holds the spend under its own scope.
    gateway.terminate();
    assert!(gateway.wait().await.success(), "{}", gateway.logs());
    let gateway = harness.start().await;
    let metrics = scrape(&gateway).await;
    assert_eq!(sample(&metrics, payer_left), Some("0.000000"), "{metrics}");
    let (status, headers, body) = chat(&gateway.url(), PAYER_KEY).await;
    assert_budget_refusal(status, &headers, &body, "after a restart");
    let db = rusqlite::Connection::open_with_flags(
        harness.auth_dir().join(".state.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT tokens FROM quota_usage WHERE scope = 'client_budget' AND name = 'payer'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(u64::try_from(stored).unwrap(), spent);
    assert!(!gateway.logs().contains(PAYER_KEY), "the key leaked into the logs");
}
