//! The translation stage through the whole gateway (issue 21, SPEC §9), against a recording
//! mock upstream over real TCP: a client of one format reaches a provider of another — the
//! upstream gets its own format at its own endpoint with the vault's credential, the client
//! gets its own format back (whole, streamed event by event, and errors with their status);
//! aliases reach the provider under its own model name, with nothing else of the body
//! changed when no translation happens; a field the provider cannot take is refused before
//! anything goes upstream, naming the field and the provider.

#![allow(clippy::unwrap_used, clippy::panic, reason = "a failed expectation fails the test")]

use bytes::Bytes;
use cliproxy_core::Secret;
use cliproxy_e2e::{MockUpstream, Recorded, Reply};
use cliproxy_gateway::Gateway;
use cliproxy_server::compose;
use cliproxy_server::config::Config;
use cliproxy_vault::Credential;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};

const KEY: &str = "client-key-translation-0123456789abcdef";
const TOKEN: &str = "sk-vault-translation-credential-7777";

/// A gateway whose providers (`providers:` YAML under the section) each get the vault
/// credential [`TOKEN`].
fn gateway(providers: &str) -> (Gateway, tempfile::TempDir) {
    gateway_with(providers, "")
}

/// [`gateway`] with more configuration (`extra`, top-level YAML; `{dir}` stands for the
/// test's directory).
fn gateway_with(providers: &str, extra: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let extra = extra.replace("{dir}", &dir.path().display().to_string());
    let yaml = format!(
        "auth:\n  api_keys: [{{name: tester, key: \"{KEY}\"}}]\n  dir: {:?}\n{extra}providers:\n{providers}",
        dir.path().join("auths").display().to_string()
    );
    let config = Config::from_yaml(&yaml).unwrap();
    let store = config.auth.build().unwrap();
    for name in config.providers.0.keys() {
        let credential = Credential::new_api_key(name, Secret::from(TOKEN.to_owned())).unwrap();
        store.put(&credential).unwrap();
    }
    let log = slog::Logger::root(slog::Discard, slog::o!());
    (compose::gateway_with_clock(&config, &log, None).unwrap(), dir)
}

/// Sends `body` to `path` with the client key where the path's API carries it.
async fn send(gateway: &Gateway, path: &str, body: &Value) -> (StatusCode, HeaderMap, String) {
    let mut request = Request::post(path).header("content-type", "application/json");
    request = if path.starts_with("/v1beta") {
        request.header("x-goog-api-key", KEY)
    } else if path.starts_with("/v1/messages") {
        request.header("x-api-key", KEY).header("anthropic-version", "2023-06-01")
    } else {
        request.header("authorization", format!("Bearer {KEY}"))
    };
    let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let response = gateway.handle(request, "127.0.0.1:40000".parse().unwrap()).await;
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
}

fn body_of(request: &Recorded) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

/// The `event:` names of an SSE body, in order.
fn event_names(sse: &str) -> Vec<String> {
    sse.lines().filter_map(|l| l.strip_prefix("event: ")).map(str::to_owned).collect()
}

/// The parsed `data:` payloads of an SSE body, `[DONE]` left out.
fn data_of(sse: &str) -> Vec<Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

fn chat_chunk(delta: Value, finish: Option<&str>) -> String {
    format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    )
}

#[tokio::test]
async fn an_anthropic_client_reaches_an_openai_provider_whole_and_streamed() {
    let upstream = MockUpstream::start(|request| {
        if body_of(request)["stream"] == true {
            Reply::sse(vec![
                chat_chunk(json!({"role": "assistant", "content": "Hel"}), None),
                chat_chunk(json!({"content": "lo"}), None),
                chat_chunk(
                    json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]}),
                    None,
                ),
                chat_chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":\"Paris\"}"}}]}),
                    None,
                ),
                chat_chunk(json!({}), Some("tool_calls")),
                format!(
                    "data: {}\n\n",
                    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                        "model": "gpt-4o", "choices": [],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
                ),
                "data: [DONE]\n\n".to_owned(),
            ])
        } else {
            Reply::ok(json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                "model": "gpt-4o",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                    "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}}))
        }
    })
    .await;
    let (gateway, _dir) = gateway(&format!(
        "  oa: {{type: openai, base_url: \"{}\", models: [gpt-4o]}}\n",
        upstream.url()
    ));
    let ask = |stream: bool| {
        json!({"model": "gpt-4o", "max_tokens": 100, "system": "Be brief.", "stream": stream,
            "tools": [{"name": "get_weather", "description": "Weather of a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                    "required": ["city"]}}],
            "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    };

    let (status, headers, body) = send(&gateway, "/v1/messages", &ask(false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["content"][0], json!({"type": "text", "text": "Hello"}));
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(reply["usage"]["input_tokens"], 11);
    assert_eq!(reply["usage"]["output_tokens"], 2);
    // The upstream got its own format at its own endpoint, with the vault's credential.
    let sent = upstream.requests();
    assert_eq!(sent[0].path_and_query, "/v1/chat/completions");
    assert_eq!(sent[0].header("authorization"), format!("Bearer {TOKEN}"));
    assert!(!sent[0].contains(KEY), "the client's key never goes upstream");
    assert!(sent[0].header("anthropic-version").is_empty(), "no Anthropic header to OpenAI");
    let upstream_body = body_of(&sent[0]);
    assert_eq!(upstream_body["messages"][0], json!({"role": "system", "content": "Be brief."}));
    assert_eq!(upstream_body["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(
        upstream_body["max_tokens"].as_u64().or(upstream_body["max_completion_tokens"].as_u64()),
        Some(100)
    );

    let (status, headers, body) = send(&gateway, "/v1/messages", &ask(true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    let names = event_names(&body);
    assert_eq!(names.first().map(String::as_str), Some("message_start"), "{body}");
    assert_eq!(names.last().map(String::as_str), Some("message_stop"), "{body}");
    let events = data_of(&body);
    let text: String = events
        .iter()
        .filter(|e| e["delta"]["type"] == "text_delta")
        .map(|e| e["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(text, "Hello");
    let tool = events
        .iter()
        .find(|e| e["type"] == "content_block_start" && e["content_block"]["type"] == "tool_use")
        .unwrap_or_else(|| panic!("no tool_use block: {body}"));
    assert_eq!(tool["content_block"]["name"], "get_weather");
    assert_eq!(tool["content_block"]["id"], "call_1");
    let arguments: String = events
        .iter()
        .filter(|e| e["delta"]["type"] == "input_json_delta")
        .map(|e| e["delta"]["partial_json"].as_str().unwrap())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&arguments).unwrap(), json!({"city": "Paris"}));
    let end = events.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(end["delta"]["stop_reason"], "tool_use");
    assert_eq!(end["usage"]["output_tokens"], 7);
    // The translated stream asked the OpenAI upstream for its usage.
    let sent = upstream.requests();
    assert_eq!(body_of(&sent[1])["stream_options"]["include_usage"], true);
}

#[tokio::test]
async fn an_openai_client_reaches_an_anthropic_provider_through_an_alias() {
    let upstream = MockUpstream::start(|_| {
        Reply::ok(json!({"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Bonjour"}],
            "stop_reason": "max_tokens", "stop_sequence": null,
            "usage": {"input_tokens": 5, "output_tokens": 3, "cache_read_input_tokens": 4,
                "cache_creation_input_tokens": 0}}))
    })
    .await;
    let (gateway, _dir) = gateway(&format!(
        "  an: {{type: claude, base_url: \"{}\", models: [{{name: sonnet, upstream: claude-sonnet-4-5}}]}}\n",
        upstream.url()
    ));
    let (status, _, body) = send(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "sonnet", "max_tokens": 3,
            "messages": [{"role": "system", "content": "French only."}, {"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["choices"][0]["message"]["content"], "Bonjour");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    // OpenAI counts the cached prompt in prompt_tokens; Anthropic does not.
    assert_eq!(reply["usage"]["prompt_tokens"], 9);
    assert_eq!(reply["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
    let sent = upstream.requests();
    assert_eq!(sent[0].path_and_query, "/v1/messages");
    assert_eq!(sent[0].header("x-api-key"), TOKEN);
    assert_eq!(sent[0].header("anthropic-version"), "2023-06-01");
    let upstream_body = body_of(&sent[0]);
    assert_eq!(upstream_body["model"], "claude-sonnet-4-5", "the alias's upstream name");
    assert_eq!(upstream_body["system"], "French only.");
    assert_eq!(upstream_body["max_tokens"], 3);
}

#[tokio::test]
async fn a_gemini_client_streams_from_an_openai_provider() {
    let upstream = MockUpstream::start(|_| {
        Reply::sse(vec![
            chat_chunk(json!({"role": "assistant", "content": "Hi"}), None),
            chat_chunk(json!({"content": " there"}), Some("stop")),
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                    "model": "gpt-4o", "choices": [],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}})
            ),
            "data: [DONE]\n\n".to_owned(),
        ])
    })
    .await;
    let (gateway, _dir) = gateway(&format!(
        "  oa: {{type: openai, base_url: \"{}\", models: [gpt-4o]}}\n",
        upstream.url()
    ));
    let (status, _, body) = send(
        &gateway,
        "/v1beta/models/gpt-4o:streamGenerateContent?alt=sse",
        &json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let chunks = data_of(&body);
    let text: String = chunks
        .iter()
        .flat_map(|c| {
            c["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default()
        })
        .filter_map(|p| p["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Hi there");
    let last = chunks.last().unwrap();
    assert_eq!(last["usageMetadata"]["promptTokenCount"], 3);
    assert!(chunks.iter().any(|c| c["candidates"][0]["finishReason"] == "STOP"), "{body}");
    let sent = upstream.requests();
    assert_eq!(sent[0].path_and_query, "/v1/chat/completions");
    let upstream_body = body_of(&sent[0]);
    assert_eq!(upstream_body["model"], "gpt-4o", "the model from the Gemini path");
    assert_eq!(upstream_body["stream"], true, "the stream from the Gemini method");
}

#[tokio::test]
async fn upstream_errors_come_back_in_the_client_format_with_their_status() {
    let upstream = MockUpstream::start(|_| Reply::Json {
        status: 400,
        headers: Vec::new(),
        body: json!({"error": {"message": "This model's maximum context length is 128000 tokens",
            "type": "invalid_request_error", "param": "messages", "code": "context_length_exceeded"}})
        .to_string(),
    })
    .await;
    let (gateway, _dir) = gateway(&format!(
        "  oa: {{type: openai, base_url: \"{}\", models: [gpt-4o]}}\n",
        upstream.url()
    ));
    let (status, _, body) = send(
        &gateway,
        "/v1/messages",
        &json!({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["type"], "error");
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert!(
        error["error"]["message"].as_str().unwrap().contains("maximum context length"),
        "{body}"
    );
}

#[tokio::test]
async fn a_field_without_counterpart_is_refused_naming_it_and_nothing_goes_upstream() {
    let upstream = MockUpstream::start(|_| Reply::ok(json!({}))).await;
    let (gateway, _dir) = gateway(&format!(
        "  an: {{type: claude, base_url: \"{}\", models: ['claude-*']}}\n",
        upstream.url()
    ));
    let (status, _, body) = send(
        &gateway,
        "/v1/chat/completions",
        &json!({"model": "claude-x", "seed": 7, "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let message = error["error"]["message"].as_str().unwrap();
    assert!(message.contains("seed"), "names the field: {message}");
    assert!(message.contains("`an`"), "names the provider: {message}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn an_alias_without_translation_changes_only_the_model() {
    let upstream = MockUpstream::start(|_| {
        Reply::ok(json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}))
    })
    .await;
    let (gateway, _dir) = gateway(&format!(
        "  oa: {{type: openai, base_url: \"{}\", models: [{{name: fast, upstream: gpt-4o-mini}}]}}\n",
        upstream.url()
    ));
    let asked = json!({"model": "fast", "logit_bias": {"50256": -100}, "x_vendor": [1, {"a": null}],
        "messages": [{"role": "user", "content": "x"}]});
    let (status, _, body) = send(&gateway, "/v1/chat/completions", &asked).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent = body_of(&upstream.requests()[0]);
    let mut expected = asked.clone();
    expected["model"] = json!("gpt-4o-mini");
    assert_eq!(sent, expected);
}

#[tokio::test]
async fn a_translated_gemini_stream_needs_server_sent_events() {
    let upstream = MockUpstream::start(|_| Reply::ok(json!({}))).await;
    let (gateway, _dir) = gateway(&format!(
        "  oa: {{type: openai, base_url: \"{}\", models: [gpt-4o]}}\n",
        upstream.url()
    ));
    let (status, _, body) = send(
        &gateway,
        "/v1beta/models/gpt-4o:streamGenerateContent",
        &json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(error["error"]["status"], "INVALID_ARGUMENT", "in Gemini's shape: {body}");
    assert!(error["error"]["message"].as_str().unwrap().contains("alt=sse"), "{body}");
    assert!(upstream.requests().is_empty());
}

#[tokio::test]
async fn listings_show_aliases_beside_the_names_served_as_they_are() {
    let upstream = MockUpstream::start(|_| Reply::ok(json!({}))).await;
    let (gateway, _dir) = gateway(&format!(
        "  an: {{type: claude, base_url: \"{}\", models: [{{name: sonnet, upstream: claude-sonnet-4-5}}, claude-opus-4-1]}}\n",
        upstream.url()
    ));
    let request = Request::get("/v1/models")
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = gateway.handle(request, "127.0.0.1:40000".parse().unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let listing: Value = serde_json::from_slice(&body).unwrap();
    let ids: Vec<&str> =
        listing["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["claude-opus-4-1", "sonnet"]);
}

#[tokio::test]
async fn embeddings_cross_between_openai_and_gemini() {
    let upstream = MockUpstream::start(|request| {
        if request.path_and_query.contains(":batchEmbedContents") {
            Reply::ok(json!({"embeddings": [{"values": [0.5, -0.25]}, {"values": [1.0, 2.0]}]}))
        } else {
            Reply::ok(json!({"object": "list", "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.75, 0.125]}],
                "usage": {"prompt_tokens": 2, "total_tokens": 2}}))
        }
    })
    .await;
    let (gateway, _dir) = gateway(&format!(
        "  ge: {{type: gemini, base_url: \"{url}\", models: [gemini-embedding-001]}}\n  oa: {{type: openai, base_url: \"{url}\", models: [text-embedding-3-small]}}\n",
        url = upstream.url()
    ));
    // The OpenAI SDK asks for base64 unless told otherwise.
    let (status, _, body) = send(
        &gateway,
        "/v1/embeddings",
        &json!({"model": "gemini-embedding-001", "input": ["a", "b"], "encoding_format": "float"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["data"][0]["embedding"], json!([0.5, -0.25]));
    assert_eq!(reply["data"][1]["index"], 1);
    let sent = upstream.requests();
    assert_eq!(sent[0].path_and_query, "/v1beta/models/gemini-embedding-001:batchEmbedContents");
    assert_eq!(sent[0].header("x-goog-api-key"), TOKEN);
    assert_eq!(body_of(&sent[0])["requests"][1]["content"]["parts"][0]["text"], "b");

    let (status, _, body) = send(
        &gateway,
        "/v1beta/models/text-embedding-3-small:embedContent",
        &json!({"content": {"parts": [{"text": "hello"}]}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply, json!({"embedding": {"values": [0.75, 0.125]}}));
    let sent = upstream.requests();
    assert_eq!(sent[1].path_and_query, "/v1/embeddings");
    assert_eq!(
        body_of(&sent[1]),
        json!({"model": "text-embedding-3-small", "input": ["hello"], "encoding_format": "float"})
    );
}

#[tokio::test]
async fn token_counts_cross_between_anthropic_and_gemini() {
    let upstream = MockUpstream::start(|request| {
        if request.path_and_query.ends_with(":countTokens") {
            Reply::ok(json!({"totalTokens": 31}))
        } else {
            Reply::ok(json!({"input_tokens": 12}))
        }
    })
    .await;
    let (gateway, _dir) = gateway(&format!(
        "  ge: {{type: gemini, base_url: \"{url}\", models: [gemini-2.5-pro]}}\n  an: {{type: claude, base_url: \"{url}\", models: [claude-sonnet-4-5]}}\n",
        url = upstream.url()
    ));
    let (status, _, body) = send(
        &gateway,
        "/v1/messages/count_tokens",
        &json!({"model": "gemini-2.5-pro", "messages": [{"role": "user", "content": "Hi"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"input_tokens": 31}));
    let sent = upstream.requests();
    assert_eq!(sent[0].path_and_query, "/v1beta/models/gemini-2.5-pro:countTokens");
    assert_eq!(
        body_of(&sent[0])["generateContentRequest"]["contents"][0]["parts"][0]["text"],
        "Hi"
    );

    let (status, _, body) = send(
        &gateway,
        "/v1beta/models/claude-sonnet-4-5:countTokens",
        &json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"totalTokens": 12}));
    let sent = upstream.requests();
    assert_eq!(sent[1].path_and_query, "/v1/messages/count_tokens");
    let counted = body_of(&sent[1]);
    assert_eq!(counted["model"], "claude-sonnet-4-5");
    assert!(counted.get("max_tokens").is_none(), "Anthropic's count refuses max_tokens: {counted}");
}

#[tokio::test]
async fn a_translated_stream_is_audited_with_both_formats_and_the_provider_usage() {
    let upstream = MockUpstream::start(|_| {
        Reply::sse(vec![
            chat_chunk(json!({"role": "assistant", "content": "Hi"}), Some("stop")),
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                    "model": "gpt-4o", "choices": [],
                    "usage": {"prompt_tokens": 23, "completion_tokens": 4, "total_tokens": 27}})
            ),
            "data: [DONE]\n\n".to_owned(),
        ])
    })
    .await;
    let (gateway, dir) = gateway_with(
        &format!("  oa: {{type: openai, base_url: \"{}\", models: [gpt-4o]}}\n", upstream.url()),
        "logging: {audit: {enabled: true, file: \"{dir}/audit.log\"}}\n",
    );
    let (status, _, body) = send(
        &gateway,
        "/v1/messages",
        &json!({"model": "gpt-4o", "max_tokens": 10, "stream": true,
            "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A complete body reports from a task of its own (`body.rs`), which runs once this test
    // yields; the file sink gives no signal of its own, so the log is read after each yield
    // and flush, within a deadline.
    let deadline = std::time::Instant::now() + cliproxy_e2e::WAIT;
    let event: Value = loop {
        tokio::task::yield_now().await;
        gateway.flush_audit();
        let audit = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        if let Some(event) = audit
            .lines()
            .map(|line| serde_json::from_str::<Value>(line).unwrap())
            .find(|line| line["event_type"] == "provider_request")
        {
            break event;
        }
        assert!(std::time::Instant::now() < deadline, "no provider_request event: {audit}");
    };
    let details = &event["details"];
    assert_eq!(details["client_format"], "anthropic", "{event}");
    assert_eq!(details["provider_format"], "openai-chat", "{event}");
    // The usage the tap read from the provider's own events.
    assert_eq!(details["input_tokens"], 23, "{event}");
    assert_eq!(details["output_tokens"], 4, "{event}");
}
