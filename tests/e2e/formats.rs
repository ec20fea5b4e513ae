//! The three API formats, streamed and not, through the real binary to a mock upstream: the
//! reply arrives unchanged, events arrive as they are sent, the upstream sees the vault
//! credential and never the client key, and usage is read from every format.

use std::sync::Arc;

use cliproxy_e2e::canned::*;
use cliproxy_e2e::*;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::assert_no_secrets;

const OPENAI_TOKEN: &str = "sk-vault-openai-e2e-71c0ffee";
const CLAUDE_TOKEN: &str = "sk-ant-vault-claude-e2e-9a8b";
const GEMINI_TOKEN: &str = "AIza-vault-gemini-e2e-44d1";

const WORDS: &[&str] = &["Hello", " from", " the", " mock", " upstream"];

/// An upstream serving all three APIs under path prefixes `/oa`, `/an`, `/gm`.
async fn upstream(gate: Option<Arc<Notify>>) -> MockUpstream {
    MockUpstream::start(move |request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let stream = body["stream"] == true;
        let path = request.path_and_query.as_str();
        let (events, reply) = if path.starts_with("/oa/v1/chat/completions") {
            (
                // Usage comes only if the request asked for it, as from the real API.
                openai_stream_for(request, "gpt-4o-mini", WORDS),
                openai_chat("gpt-4o-mini", "Hello from the mock upstream"),
            )
        } else if path.starts_with("/an/v1/messages") {
            (
                anthropic_stream("claude-sonnet-4", WORDS),
                anthropic_message("claude-sonnet-4", "Hello from the mock upstream"),
            )
        } else if path.starts_with("/gm/v1beta/models/gemini-2.0-flash:streamGenerateContent") {
            return Reply::Sse { events: gemini_stream(WORDS), hold_after: 1, gate: gate.clone() };
        } else if path.starts_with("/gm/v1beta/models/gemini-2.0-flash:generateContent") {
            return Reply::ok(gemini_generate("Hello from the mock upstream"));
        } else {
            return Reply::Json { status: 404, headers: Vec::new(), body: "{}".to_owned() };
        };
        if stream {
            Reply::Sse { events, hold_after: 1, gate: gate.clone() }
        } else {
            Reply::ok(reply)
        }
    })
    .await
}

async fn gateway(mock: &MockUpstream, harness: &Harness) -> Gateway {
    let url = mock.url();
    harness.config(
        "",
        &format!(
            "providers:\n  oa: {{type: openai, base_url: \"{url}/oa\", models: [\"gpt-*\"]}}\n  \
             an: {{type: claude, base_url: \"{url}/an\", models: [\"claude-*\"]}}\n  \
             gm: {{type: gemini, base_url: \"{url}/gm\", models: [\"gemini-*\"]}}\n"
        ),
    );
    harness.vault_add("oa", "oa-1", OPENAI_TOKEN, None);
    harness.vault_add("an", "an-1", CLAUDE_TOKEN, None);
    harness.vault_add("gm", "gm-1", GEMINI_TOKEN, None);
    harness.start().await
}

struct Case {
    name: &'static str,
    path: &'static str,
    auth: (&'static str, String),
    body: Value,
    upstream_path: &'static str,
    upstream_auth: (&'static str, String),
    usage: (u64, u64),
}

impl Case {
    async fn send(&self, client: &reqwest::Client, gateway: &Gateway) -> reqwest::Response {
        client
            .post(format!("{}{}", gateway.url(), self.path))
            .header(self.auth.0, &self.auth.1)
            .json(&self.body)
            .send()
            .await
            .unwrap()
    }

    /// The access log line carries the usage the upstream reported.
    fn assert_usage(&self, log: &Value) {
        assert_eq!(
            (log["input_tokens"].as_u64(), log["output_tokens"].as_u64()),
            (Some(self.usage.0), Some(self.usage.1)),
            "{}: {log}",
            self.name
        );
    }
}

fn cases(stream: bool) -> Vec<Case> {
    vec![
        Case {
            name: "openai",
            path: "/v1/chat/completions",
            auth: ("authorization", format!("Bearer {CLIENT_KEY}")),
            // A streamed chat completion reports usage only when asked to (and the upstream
            // answers as the real API does), so the streamed case asks.
            body: if stream {
                json!({"model": "gpt-4o-mini", "stream": true, "stream_options": {"include_usage": true},
                       "messages": [{"role": "user", "content": "Hi"}]})
            } else {
                json!({"model": "gpt-4o-mini", "stream": false,
                       "messages": [{"role": "user", "content": "Hi"}]})
            },
            upstream_path: "/oa/v1/chat/completions",
            upstream_auth: ("authorization", format!("Bearer {OPENAI_TOKEN}")),
            usage: (17, 9),
        },
        Case {
            name: "anthropic",
            path: "/v1/messages",
            auth: ("x-api-key", CLIENT_KEY.to_owned()),
            body: json!({"model": "claude-sonnet-4", "max_tokens": 64, "stream": stream,
                         "messages": [{"role": "user", "content": "Hi"}]}),
            upstream_path: "/an/v1/messages",
            upstream_auth: ("x-api-key", CLAUDE_TOKEN.to_owned()),
            usage: (21, 11),
        },
        Case {
            name: "gemini",
            path: if stream {
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
            } else {
                "/v1beta/models/gemini-2.0-flash:generateContent"
            },
            auth: ("x-goog-api-key", CLIENT_KEY.to_owned()),
            body: json!({"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}),
            upstream_path: if stream {
                "/gm/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
            } else {
                "/gm/v1beta/models/gemini-2.0-flash:generateContent"
            },
            upstream_auth: ("x-goog-api-key", GEMINI_TOKEN.to_owned()),
            usage: (13, 7),
        },
    ]
}

/// Waits for the access-log line of the request with id `request_id`.
async fn access_log(gateway: &Gateway, request_id: &str) -> Value {
    let id = request_id.to_owned();
    gateway
        .wait_for_log(move |entry| entry["msg"] == "request" && entry["request_id"] == id.as_str())
        .await
}

fn check_upstream_request(mock: &MockUpstream, case: &Case, index: usize) {
    let requests = mock.requests();
    let seen = &requests[index];
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path_and_query, case.upstream_path, "{}", case.name);
    assert_eq!(seen.header(case.upstream_auth.0), case.upstream_auth.1, "{}", case.name);
    assert_eq!(serde_json::from_slice::<Value>(&seen.body).unwrap(), case.body, "{}", case.name);
    for request in &requests {
        assert!(!request.contains(CLIENT_KEY), "the client key went upstream: {request:?}");
    }
}

#[tokio::test]
async fn non_streamed_replies_in_all_three_formats() {
    let mock = upstream(None).await;
    let harness = Harness::new();
    let gateway = gateway(&mock, &harness).await;
    let client = client();
    let expected = [
        openai_chat("gpt-4o-mini", "Hello from the mock upstream"),
        anthropic_message("claude-sonnet-4", "Hello from the mock upstream"),
        gemini_generate("Hello from the mock upstream"),
    ];
    for (index, (case, expected)) in cases(false).iter().zip(expected).enumerate() {
        let response = case.send(&client, &gateway).await;
        assert_eq!(response.status(), 200, "{}", case.name);
        let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        assert!(request_id.starts_with("req_"), "{request_id}");
        assert_eq!(response.json::<Value>().await.unwrap(), expected, "{}", case.name);
        check_upstream_request(&mock, case, index);
        let log = access_log(&gateway, &request_id).await;
        assert_eq!(log["status"], 200);
        assert_eq!(log["client"], "e2e");
        // The access line tells an operator whether the answer was a stream.
        assert_eq!(log["stream"], false, "{log}");
        case.assert_usage(&log);
    }
    assert_no_secrets(&gateway.logs(), &[CLIENT_KEY, OPENAI_TOKEN, CLAUDE_TOKEN, GEMINI_TOKEN]);
}

/// Each stream: the first event reaches the client while the upstream still holds the rest;
/// then the rest arrives complete and in order.
#[tokio::test]
async fn streamed_replies_arrive_event_by_event_in_all_three_formats() {
    let gate = Arc::new(Notify::new());
    let mock = upstream(Some(Arc::clone(&gate))).await;
    let harness = Harness::new();
    let gateway = gateway(&mock, &harness).await;
    let client = client();
    let last_event = ["data: [DONE]", "event: message_stop", "\"finishReason\":\"STOP\""];
    for (index, (case, last)) in cases(true).iter().zip(last_event).enumerate() {
        let mut response = case.send(&client, &gateway).await;
        assert_eq!(response.status(), 200, "{}", case.name);
        assert_eq!(response.headers()["content-type"], "text/event-stream", "{}", case.name);
        let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let mut seen = String::new();
        // The upstream sent only its first event and waits on the gate.
        read_until(&mut response, &mut seen, "\n\n").await;
        assert!(
            !seen.contains(WORDS[1]),
            "{}: more than the first event arrived: {seen}",
            case.name
        );
        gate.notify_one();
        read_to_end(&mut response, &mut seen).await;
        let mut position = 0;
        for word in WORDS {
            let found = seen[position..].find(&format!("\"{word}\"")).unwrap_or_else(|| {
                panic!("{}: {word:?} missing or out of order in:\n{seen}", case.name)
            });
            position += found;
        }
        assert!(seen.contains(last), "{}: stream incomplete:\n{seen}", case.name);
        check_upstream_request(&mock, case, index);
        let log = access_log(&gateway, &request_id).await;
        assert_eq!(log["result"], "complete", "{log}");
        assert_eq!(log["stream"], true, "{log}");
        case.assert_usage(&log);
    }
    assert_no_secrets(&gateway.logs(), &[CLIENT_KEY, OPENAI_TOKEN, CLAUDE_TOKEN, GEMINI_TOKEN]);
}

/// The same gateway over HTTP/2 (prior knowledge, as gRPC-style clients and some SDKs use).
#[tokio::test]
async fn http2_clients_are_served() {
    let mock = upstream(None).await;
    let harness = Harness::new();
    let gateway = gateway(&mock, &harness).await;
    let client = reqwest::Client::builder().no_proxy().http2_prior_knowledge().build().unwrap();
    let case = &cases(false)[0];
    let response = case.send(&client, &gateway).await;
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Hello from the mock upstream");
}
