//! Error answers in the API format of the endpoint that was called: 401, 404, 413 and the
//! upstream timeout (504), for OpenAI, Anthropic and Gemini clients.

use cliproxy_e2e::*;
use serde_json::{Value, json};

use crate::assert_no_secrets;

struct Format {
    name: &'static str,
    path: &'static str,
    key_header: &'static str,
    key_prefix: &'static str,
    body: Value,
}

fn formats(model: &str) -> Vec<Format> {
    vec![
        Format {
            name: "openai",
            path: "/v1/chat/completions",
            key_header: "authorization",
            key_prefix: "Bearer ",
            body: json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]}),
        },
        Format {
            name: "anthropic",
            path: "/v1/messages",
            key_header: "x-api-key",
            key_prefix: "",
            body: json!({"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "Hi"}]}),
        },
        Format {
            name: "gemini",
            path: "/v1beta/models/MODEL:generateContent",
            key_header: "x-goog-api-key",
            key_prefix: "",
            body: json!({"contents": [{"parts": [{"text": "Hi"}]}]}),
        },
    ]
}

/// Checks the error body shape of each API and returns the message.
fn check_error(
    format: &str,
    status: u16,
    body: &Value,
    openai_code: &str,
    anthropic: &str,
    gemini: &str,
) -> String {
    match format {
        "openai" => {
            assert_eq!(body["error"]["code"], openai_code, "{body}");
            assert!(body["error"]["type"].is_string(), "{body}");
            body["error"]["message"].as_str().unwrap().to_owned()
        }
        "anthropic" => {
            assert_eq!(body["type"], "error", "{body}");
            assert_eq!(body["error"]["type"], anthropic, "{body}");
            body["error"]["message"].as_str().unwrap().to_owned()
        }
        _ => {
            assert_eq!(body["error"]["code"], status, "{body}");
            assert_eq!(body["error"]["status"], gemini, "{body}");
            body["error"]["message"].as_str().unwrap().to_owned()
        }
    }
}

#[tokio::test]
async fn errors_are_answered_in_the_format_of_the_endpoint() {
    let stalling = MockUpstream::start(|_| Reply::Stall).await;
    let url = stalling.url();
    let harness = Harness::new();
    harness.config(
        "max_body_bytes: 4096, upstream_first_byte_timeout: 300ms",
        &format!(
            "providers:\n  oa: {{type: openai, base_url: \"{url}\", models: [\"gpt-*\"]}}\n  \
             an: {{type: claude, base_url: \"{url}\", models: [\"claude-*\"]}}\n  \
             gm: {{type: gemini, base_url: \"{url}\", models: [\"gemini-*\"]}}\n"
        ),
    );
    harness.vault_add("oa", "oa-1", "sk-vault-stall-openai-0001", None);
    harness.vault_add("an", "an-1", "sk-vault-stall-claude-0001", None);
    harness.vault_add("gm", "gm-1", "sk-vault-stall-gemini-0001", None);
    let gateway = harness.start().await;
    let client = client();
    let served = ["gpt-4o", "claude-sonnet-4", "gemini-stall"];

    for (format, model) in formats("MODEL").into_iter().zip(served) {
        let path = format.path.replace("MODEL", model);
        let mut body = format.body.clone();
        if body.get("model").is_some() {
            body["model"] = json!(model);
        }
        let url = format!("{}{path}", gateway.url());
        let key = |key: &str| format!("{}{key}", format.key_prefix);

        // 401: no key, then a wrong one.
        let response = client.post(&url).json(&body).send().await.unwrap();
        assert_eq!(response.status(), 401, "{}", format.name);
        assert!(response.headers().contains_key("x-request-id"));
        let message = check_error(
            format.name,
            401,
            &response.json().await.unwrap(),
            "invalid_api_key",
            "authentication_error",
            "UNAUTHENTICATED",
        );
        assert!(!message.is_empty());
        let response = client
            .post(&url)
            .header(format.key_header, key("cpk-wrong-key-000000000000"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{}", format.name);
        let text = response.text().await.unwrap();
        assert_no_secrets(&text, &["cpk-wrong-key"]);
        check_error(
            format.name,
            401,
            &serde_json::from_str(&text).unwrap(),
            "invalid_api_key",
            "authentication_error",
            "UNAUTHENTICATED",
        );

        // 404: a model no provider serves.
        let unknown_path = format.path.replace("MODEL", "no-such-model");
        let mut unknown = format.body.clone();
        if unknown.get("model").is_some() {
            unknown["model"] = json!("no-such-model");
        }
        let response = client
            .post(format!("{}{unknown_path}", gateway.url()))
            .header(format.key_header, key(CLIENT_KEY))
            .json(&unknown)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404, "{}", format.name);
        let message = check_error(
            format.name,
            404,
            &response.json().await.unwrap(),
            "not_found",
            "not_found_error",
            "NOT_FOUND",
        );
        assert!(message.contains("no-such-model"), "{message}");

        // 413: a body over server.limits.max_body_bytes.
        let mut large = body.clone();
        large["padding"] = json!("x".repeat(8192));
        let response = client
            .post(&url)
            .header(format.key_header, key(CLIENT_KEY))
            .json(&large)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{}", format.name);
        let message = check_error(
            format.name,
            413,
            &response.json().await.unwrap(),
            "payload_too_large",
            "request_too_large",
            "INVALID_ARGUMENT",
        );
        assert!(message.contains("server.limits.max_body_bytes"), "{message}");

        // 504: the upstream accepts the request and never answers.
        let response = client
            .post(&url)
            .header(format.key_header, key(CLIENT_KEY))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 504, "{}", format.name);
        let message = check_error(
            format.name,
            504,
            &response.json().await.unwrap(),
            "upstream_timeout",
            "api_error",
            "DEADLINE_EXCEEDED",
        );
        assert!(!message.is_empty());
    }
    assert_no_secrets(&gateway.logs(), &[CLIENT_KEY, "cpk-wrong-key", "sk-vault-stall-"]);
}

#[tokio::test]
async fn without_client_keys_every_request_is_refused_with_a_fix() {
    let harness = Harness::new();
    harness.write_config(&format!(
        "server: {{host: 127.0.0.1, port: 0}}\nauth: {{dir: {:?}}}\nlogging: {{format: json}}\n\
         providers:\n  demo: {{type: mock, models: [\"mock-*\"]}}\n",
        harness.auth_dir().display().to_string()
    ));
    let gateway = harness.start().await;
    let response = client()
        .post(format!("{}/v1/chat/completions", gateway.url()))
        .bearer_auth(CLIENT_KEY)
        .json(&json!({"model": "mock-1", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("auth.api_keys"), "{message}");
}
