//! The endpoints other than chat completions and messages, proxied to a mock upstream through
//! the real binary: `/v1/responses` (streamed and not), `/v1/embeddings`,
//! `/v1/messages/count_tokens`, the legacy `/v1/completions`, and Gemini's model methods under
//! `/v1/` and `/v1beta/`. The request body reaches the upstream byte for byte, the
//! answer reaches the client byte for byte, and the access log carries the usage the upstream
//! reported.

use cliproxy_e2e::canned::*;
use cliproxy_e2e::*;
use serde_json::{Value, json};

use crate::assert_no_secrets;

const OPENAI_TOKEN: &str = "sk-vault-openai-endpoints-5e2a";
const CLAUDE_TOKEN: &str = "sk-ant-vault-claude-endpoints-7b31";

const WORDS: &[&str] = &["Routed", " through", " the", " gateway"];
/// Each provider's monthly token quota: the usage read from each reply is charged to it.
const QUOTA: u64 = 1_000_000;
const VECTORS: &[&[f64]] = &[&[0.125, -0.5, 0.75], &[-0.25, 0.0625, 1.0]];

/// What the upstream answers on each path. The gateway must pass these through unchanged.
fn reply_for(path: &str, body: &Value) -> Reply {
    match path {
        "/oa/v1/responses" if body["stream"] == true => {
            Reply::sse(openai_responses_stream("gpt-4.1-mini", WORDS))
        }
        "/oa/v1/responses" => Reply::ok(openai_responses("gpt-4.1-mini", &WORDS.concat())),
        "/oa/v1/embeddings" => Reply::ok(openai_embeddings("text-embedding-3-small", VECTORS)),
        "/an/v1/messages/count_tokens" => Reply::ok(anthropic_count_tokens(14)),
        "/oa/v1/completions" => Reply::ok(legacy_completion()),
        _ => Reply::Json { status: 404, headers: Vec::new(), body: "{}".to_owned() },
    }
}

/// OpenAI's answer to a legacy `/v1/completions` request.
fn legacy_completion() -> Value {
    json!({"id": "cmpl-e2e", "object": "text_completion", "created": 1_700_000_000,
           "model": "gpt-3.5-turbo-instruct",
           "choices": [{"text": WORDS.concat(), "index": 0, "logprobs": null, "finish_reason": "stop"}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})
}

struct Case {
    name: &'static str,
    path: &'static str,
    auth: (&'static str, String),
    /// The exact bytes sent: spacing, key order and a non-ASCII character that a gateway
    /// re-serializing the JSON would change.
    body: String,
    upstream_path: &'static str,
    /// The provider the case goes to, whose quota it is charged to.
    provider: &'static str,
    upstream_auth: (&'static str, String),
    /// The exact bytes the upstream answers, and so the client must receive.
    answer: String,
    sse: bool,
    usage: (u64, u64),
}

fn cases() -> Vec<Case> {
    let bearer = ("authorization", format!("Bearer {CLIENT_KEY}"));
    vec![
        Case {
            name: "responses",
            path: "/v1/responses",
            auth: bearer.clone(),
            body: r#"{"model":"gpt-4.1-mini", "input": "Grüß dich",  "max_output_tokens": 64}"#
                .to_owned(),
            provider: "oa",
            upstream_path: "/oa/v1/responses",
            upstream_auth: ("authorization", format!("Bearer {OPENAI_TOKEN}")),
            answer: openai_responses("gpt-4.1-mini", &WORDS.concat()).to_string(),
            sse: false,
            usage: (19, 8),
        },
        Case {
            name: "responses streamed",
            path: "/v1/responses",
            auth: bearer.clone(),
            body: r#"{"stream": true, "model":"gpt-4.1-mini", "input": [{"role": "user", "content": "Grüß dich"}]}"#
                .to_owned(),
            provider: "oa",
            upstream_path: "/oa/v1/responses",
            upstream_auth: ("authorization", format!("Bearer {OPENAI_TOKEN}")),
            answer: openai_responses_stream("gpt-4.1-mini", WORDS).concat(),
            sse: true,
            usage: (19, 8),
        },
        Case {
            name: "embeddings",
            path: "/v1/embeddings",
            auth: bearer,
            body: r#"{"input": ["Grüß dich", "hello"],  "model": "text-embedding-3-small", "encoding_format": "float"}"#
                .to_owned(),
            provider: "oa",
            upstream_path: "/oa/v1/embeddings",
            upstream_auth: ("authorization", format!("Bearer {OPENAI_TOKEN}")),
            answer: openai_embeddings("text-embedding-3-small", VECTORS).to_string(),
            sse: false,
            // Embeddings report prompt tokens only.
            usage: (8, 0),
        },
        Case {
            name: "count_tokens",
            path: "/v1/messages/count_tokens",
            auth: ("x-api-key", CLIENT_KEY.to_owned()),
            body: r#"{"model": "claude-sonnet-4",  "messages": [{"role": "user", "content": "Grüß dich"}]}"#
                .to_owned(),
            provider: "an",
            upstream_path: "/an/v1/messages/count_tokens",
            upstream_auth: ("x-api-key", CLAUDE_TOKEN.to_owned()),
            answer: anthropic_count_tokens(14).to_string(),
            sse: false,
            // A token count consumes nothing (Anthropic does not bill it): its `input_tokens`
            // is the answer, not usage, and must not be charged as if the prompt had run.
            usage: (0, 0),
        },
        Case {
            name: "legacy completions",
            path: "/v1/completions",
            auth: ("authorization", format!("Bearer {CLIENT_KEY}")),
            body: r#"{"model": "gpt-3.5-turbo-instruct", "prompt": "Grüß dich",  "max_tokens": 7}"#
                .to_owned(),
            provider: "oa",
            upstream_path: "/oa/v1/completions",
            upstream_auth: ("authorization", format!("Bearer {OPENAI_TOKEN}")),
            answer: legacy_completion().to_string(),
            sse: false,
            usage: (5, 4),
        },
    ]
}

#[tokio::test]
async fn responses_embeddings_and_count_tokens_are_proxied_intact_with_usage() {
    let mock = MockUpstream::start(|request| {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        reply_for(&request.path_and_query, &body)
    })
    .await;
    let harness = Harness::new();
    let url = mock.url();
    harness.config(
        "",
        &format!(
            "metrics: {{enabled: true, host: 127.0.0.1, port: 0}}\n\
             providers:\n  oa: {{type: openai, base_url: \"{url}/oa\", models: [\"gpt-*\", \"text-embedding-*\"], \
             quota: {{limit: {QUOTA}, reset: monthly}}}}\n  \
             an: {{type: claude, base_url: \"{url}/an\", models: [\"claude-*\"], \
             quota: {{limit: {QUOTA}, reset: monthly}}}}\n"
        ),
    );
    harness.vault_add("oa", "oa-1", OPENAI_TOKEN, None);
    harness.vault_add("an", "an-1", CLAUDE_TOKEN, None);
    let gateway = harness.start().await;
    let metrics = cliproxy_e2e::disk::metrics_addr(&gateway).await;
    let client = client();
    let mut charged = std::collections::HashMap::from([("oa", 0), ("an", 0)]);

    for (index, case) in cases().iter().enumerate() {
        let mut response = client
            .post(format!("{}{}", gateway.url(), case.path))
            .header(case.auth.0, &case.auth.1)
            .header("content-type", "application/json")
            .body(case.body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{}", case.name);
        let content_type = if case.sse { "text/event-stream" } else { "application/json" };
        assert_eq!(response.headers()["content-type"], content_type, "{}", case.name);
        let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let mut answer = String::new();
        read_to_end(&mut response, &mut answer).await;
        assert_eq!(answer, case.answer, "{}: the answer changed on the way", case.name);
        if case.sse {
            // The stream as the client's SDK reads it: every event numbered in order, and
            // the deltas spell the text that `response.completed` holds.
            let events: Vec<Value> = answer
                .split("\n\n")
                .filter_map(|event| event.lines().find_map(|l| l.strip_prefix("data: ")))
                .map(|data| serde_json::from_str(data).unwrap())
                .collect();
            for (sequence, event) in events.iter().enumerate() {
                assert_eq!(event["sequence_number"], json!(sequence), "{event}");
            }
            let deltas: String = events
                .iter()
                .filter(|e| e["type"] == "response.output_text.delta")
                .map(|e| e["delta"].as_str().unwrap())
                .collect();
            let completed = events.last().unwrap();
            assert_eq!(completed["type"], "response.completed");
            assert_eq!(completed["response"]["output"][0]["content"][0]["text"], deltas.as_str());
            assert_eq!(deltas, WORDS.concat());
        }

        let requests = mock.requests();
        assert_eq!(requests.len(), index + 1, "{}: one upstream call", case.name);
        let seen = &requests[index];
        assert_eq!(
            (seen.method.as_str(), seen.path_and_query.as_str()),
            ("POST", case.upstream_path)
        );
        assert_eq!(seen.header(case.upstream_auth.0), case.upstream_auth.1, "{}", case.name);
        assert_eq!(
            String::from_utf8_lossy(&seen.body),
            case.body,
            "{}: the request body changed on the way",
            case.name
        );
        assert!(!seen.contains(CLIENT_KEY), "{}: the client key went upstream", case.name);

        let id = request_id.clone();
        let log = gateway
            .wait_for_log(move |e| e["msg"] == "request" && e["request_id"] == id.as_str())
            .await;
        assert_eq!((log["status"].as_u64(), log["result"].as_str()), (Some(200), Some("complete")));
        assert_eq!(
            (log["input_tokens"].as_u64(), log["output_tokens"].as_u64()),
            (Some(case.usage.0), Some(case.usage.1)),
            "{}: {log}",
            case.name
        );
        // The same usage is what the provider's quota is charged (settled before the access
        // line is written).
        *charged.get_mut(case.provider).unwrap() += case.usage.0 + case.usage.1;
        let series = format!("cliproxy_quota_remaining{{provider=\"{}\"}}", case.provider);
        let remaining = cliproxy_e2e::disk::metric(metrics, &series).await;
        assert_eq!(
            remaining,
            Some((QUOTA - charged[case.provider]) as f64),
            "{}: the quota charged is not the usage reported",
            case.name
        );
    }
    assert_no_secrets(&gateway.logs(), &[CLIENT_KEY, OPENAI_TOKEN, CLAUDE_TOKEN]);
}

const GEMINI_TOKEN: &str = "AIza-vault-gemini-endpoints-91c4";

/// What a Gemini upstream answers for each of its model methods.
fn gemini_reply_for(path: &str) -> Reply {
    let method = path.split('?').next().unwrap_or("").rsplit(':').next().unwrap_or("");
    match method {
        "generateContent" => Reply::ok(gemini_generate(&WORDS.concat())),
        "countTokens" => Reply::ok(json!({"totalTokens": 31})),
        "embedContent" => Reply::ok(json!({"embedding": {"values": VECTORS[0]}})),
        "batchEmbedContents" => {
            Reply::ok(json!({"embeddings": [{"values": VECTORS[0]}, {"values": VECTORS[1]}]}))
        }
        _ => Reply::Json { status: 404, headers: Vec::new(), body: "{}".to_owned() },
    }
}

/// The google-genai SDK calls `/v1/` by default, older clients `/v1beta/`: each Gemini model
/// method is forwarded to a `gemini` provider under the prefix the client used, the body and
/// the answer intact, the client key swapped for the vault's.
#[tokio::test]
async fn gemini_methods_are_forwarded_under_v1_and_v1beta() {
    let mock = MockUpstream::start(|request| gemini_reply_for(&request.path_and_query)).await;
    let harness = Harness::new();
    let url = mock.url();
    harness.config(
        "",
        &format!(
            "providers:\n  gm: {{type: gemini, base_url: \"{url}/gm\", models: [\"gemini-*\", \"text-embedding-004\"]}}\n"
        ),
    );
    harness.vault_add("gm", "gm-1", GEMINI_TOKEN, None);
    let gateway = harness.start().await;
    let client = client();
    let contents = r#"{"contents": [{"role": "user", "parts": [{"text": "Grüß dich"}]}]}"#;
    let one = r#"{"content": {"parts": [{"text": "Grüß dich"}]}}"#;
    let two = r#"{"requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}}]}"#;
    let methods = [
        ("gemini-2.5-flash:generateContent", contents),
        ("gemini-2.5-flash:countTokens", contents),
        ("text-embedding-004:embedContent", one),
        ("text-embedding-004:batchEmbedContents", two),
    ];
    let mut sent = 0;
    for prefix in ["/v1", "/v1beta"] {
        for (model_method, body) in methods {
            let path = format!("{prefix}/models/{model_method}");
            let response = client
                .post(format!("{}{path}", gateway.url()))
                .header("x-goog-api-key", CLIENT_KEY)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200, "{path}");
            let answer = response.text().await.unwrap();
            let method = model_method.rsplit(':').next().unwrap();
            let Reply::Json { body: expected, .. } = gemini_reply_for(&path) else {
                unreachable!("every method answers JSON")
            };
            assert_eq!(answer, expected, "{path}: the answer changed on the way ({method})");
            sent += 1;
            let requests = mock.requests();
            assert_eq!(requests.len(), sent, "{path}: one upstream call");
            let seen = &requests[sent - 1];
            assert_eq!(
                (seen.method.as_str(), seen.path_and_query.as_str()),
                ("POST", format!("/gm{path}").as_str())
            );
            assert_eq!(seen.header("x-goog-api-key"), GEMINI_TOKEN, "{path}");
            assert_eq!(String::from_utf8_lossy(&seen.body), body, "{path}: the body changed");
            assert!(!seen.contains(CLIENT_KEY), "{path}: the client key went upstream");
        }
    }
    // A method the gateway does not serve is a 404 in Gemini's format and never goes upstream.
    let response = client
        .post(format!("{}/v1/models/gemini-2.5-flash:predictLongRunning", gateway.url()))
        .header("x-goog-api-key", CLIENT_KEY)
        .body(contents)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["status"], "NOT_FOUND", "{error}");
    assert_eq!(mock.requests().len(), sent);
    assert_no_secrets(&gateway.logs(), &[CLIENT_KEY, GEMINI_TOKEN]);
}

/// A wrong key is final: the 401 says `x-should-retry: false` (read here from the raw bytes on
/// the wire), in the error format of the API the path belongs to.
#[tokio::test]
async fn a_wrong_key_is_answered_once_with_should_retry_false() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let harness = Harness::new();
    harness.config("", "providers:\n  demo: {type: mock}\n");
    let gateway = harness.start().await;
    for (path, key_header, shape) in [
        ("/v1/messages", "x-api-key", "\"type\":\"authentication_error\""),
        ("/v1/chat/completions", "authorization: Bearer", "\"code\":\"invalid_api_key\""),
        ("/v1/models/mock-1:generateContent", "x-goog-api-key", "\"status\":\"UNAUTHENTICATED\""),
    ] {
        let body =
            r#"{"model":"mock-1","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
        let separator = if key_header.contains(' ') { " " } else { ": " };
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: gateway\r\n{key_header}{separator}cpk-not-the-right-key-000000000\r\n\
             content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let mut stream = tokio::net::TcpStream::connect(gateway.addr()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        // `connection: close`: the answer ends when the gateway closes the connection.
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await.unwrap().unwrap();
        let answer = String::from_utf8_lossy(&answer).to_lowercase();
        assert!(answer.starts_with("http/1.1 401"), "{path}: {answer}");
        assert!(answer.contains("\r\nx-should-retry: false\r\n"), "{path}: {answer}");
        assert!(answer.contains(&shape.to_lowercase()), "{path}: {answer}");
    }
}
