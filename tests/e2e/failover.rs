//! Failover to the next credential: on an upstream 429 (the first credential is cooled down
//! for its `Retry-After`) and on a refused connection.

use cliproxy_e2e::canned::*;
use cliproxy_e2e::*;
use serde_json::{Value, json};

use crate::assert_no_secrets;

const TOKEN_A: &str = "sk-vault-first-credential-aaaa";
const TOKEN_B: &str = "sk-vault-second-credential-bbbb";
const TOKEN_C: &str = "sk-vault-refused-credential-cccc";
const TOKEN_D: &str = "sk-vault-working-credential-dddd";

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]})
}

#[tokio::test]
async fn fails_over_on_429_and_on_a_refused_connection() {
    // The upstream rate-limits the first credential and serves the others.
    let mock = MockUpstream::start(|request| {
        if request.header("authorization") == format!("Bearer {TOKEN_A}") {
            Reply::Json {
                status: 429,
                headers: vec![("retry-after", "120".to_owned())],
                body: json!({"error": {"message": "slow down", "type": "rate_limit_error"}})
                    .to_string(),
            }
        } else {
            let body: Value = serde_json::from_slice(&request.body).unwrap_or_default();
            Reply::ok(openai_chat(body["model"].as_str().unwrap_or(""), "served"))
        }
    })
    .await;
    let refused = refused_url().await;
    let harness = Harness::new();
    let url = mock.url();
    harness.config(
        "",
        &format!(
            "providers:\n  limited: {{type: openai, base_url: \"{url}\", models: [\"limited-*\"]}}\n  \
             flaky: {{type: openai, base_url: \"{url}\", models: [\"flaky-*\"]}}\n"
        ),
    );
    // Credentials are tried in id order, round-robin: `-a` first.
    harness.vault_add("limited", "limited-a", TOKEN_A, None);
    harness.vault_add("limited", "limited-b", TOKEN_B, None);
    harness.vault_add("flaky", "flaky-a", TOKEN_C, Some(&refused));
    harness.vault_add("flaky", "flaky-b", TOKEN_D, None);
    let gateway = harness.start().await;
    let client = client();
    let send = |model: &'static str| {
        client
            .post(format!("{}/v1/chat/completions", gateway.url()))
            .bearer_auth(CLIENT_KEY)
            .json(&chat(model))
            .send()
    };

    // 429 on the first credential, the second serves the request.
    let response = send("limited-1").await.unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(
        response.json::<Value>().await.unwrap()["choices"][0]["message"]["content"],
        "served"
    );
    let tokens: Vec<String> =
        mock.requests().iter().map(|r| r.header("authorization").to_owned()).collect();
    assert_eq!(tokens, [format!("Bearer {TOKEN_A}"), format!("Bearer {TOKEN_B}")]);
    let log = gateway
        .wait_for_log(|e| e["msg"] == "request" && e["request_id"] == request_id.as_str())
        .await;
    assert_eq!(
        (log["attempts"].as_u64(), log["credential"].as_str()),
        (Some(2), Some("limited-b")),
        "{log}"
    );

    // The first credential is cooling down for its Retry-After: the next requests go
    // straight to the second one.
    for _ in 0..2 {
        assert_eq!(send("limited-2").await.unwrap().status(), 200);
    }
    let tokens: Vec<String> =
        mock.requests().iter().skip(2).map(|r| r.header("authorization").to_owned()).collect();
    assert_eq!(tokens, [format!("Bearer {TOKEN_B}"), format!("Bearer {TOKEN_B}")]);

    // Connection refused on the first credential's base URL: the second serves it.
    let before = mock.requests().len();
    let response = send("flaky-1").await.unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
    let requests = mock.requests();
    assert_eq!(requests.len(), before + 1);
    assert_eq!(requests[before].header("authorization"), format!("Bearer {TOKEN_D}"));
    let log = gateway
        .wait_for_log(|e| e["msg"] == "request" && e["request_id"] == request_id.as_str())
        .await;
    assert_eq!(
        (log["attempts"].as_u64(), log["credential"].as_str()),
        (Some(2), Some("flaky-b")),
        "{log}"
    );

    assert_no_secrets(&gateway.logs(), &[CLIENT_KEY, TOKEN_A, TOKEN_B, TOKEN_C, TOKEN_D]);
}
